"""avlips: build AVLips-style lip-sync deepfake datasets and evaluate the LipFD detector on them."""

__version__ = "0.1.0"
