"""convnet_io."""

__version__ = "0.1.0"
