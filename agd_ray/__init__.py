"""agd-ray: scaling studies of Automatic Gradient Descent (arXiv:2304.05187) on Ray."""

__version__ = "0.1.0"
