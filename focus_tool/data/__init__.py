"""Synthetic data: the world the embedded model is trained on and the synthetic benchmark."""
