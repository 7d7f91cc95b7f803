"""convnet_gui."""

__version__ = "0.1.0"
