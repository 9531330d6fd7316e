"""dasv.model: the Double MHA speaker network in pure torch (no files, no CLI, no data loading)."""
