"""dasv.eval: embedding extraction, scoring and metrics."""
