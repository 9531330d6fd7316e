"""dasv: Double Multi-Head Attention speaker verification toolkit."""

__version__ = "0.1.0"
