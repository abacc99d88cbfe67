"""The host side: synthetic data, training, packing and evaluation (PyTorch)."""
