"""`dasv demo`: the bundled speech prepared as a working directory (layout), and the chain run on it (run)."""
