"""dasv.io: everything that touches files, nothing that learns."""
