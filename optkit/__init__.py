"""optkit: take a PyTorch vision model from training checkpoint to a fast, small, verified artifact."""

__version__ = "0.1.0"
