"""`python -m dasv_cli` runs the same app as the `dasv` script."""

from dasv_cli.cli.app import main

if __name__ == "__main__":
    main()
