"""Typer command-line interface: thin modules that parse, call the engine and print."""
