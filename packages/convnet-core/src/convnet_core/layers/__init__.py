"""The built-in layers, all immutable attrs specs in NCHW layout.

See `convnet_core.layers.base` for the protocol every layer follows.
"""

from .activation import ACTIVATIONS, Activation
from .base import (
    Layer,
    ShapeError,
    UnknownLayerError,
    layer_from_config,
    layer_to_config,
    register_layer,
    registered_layers,
)
from .combinators import Residual, Sequential
from .conv import Conv2D
from .dense import Dense
from .dropout import Dropout
from .norm import BatchNorm2D
from .pooling import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from .reshape import Flatten

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "AvgPool2D",
    "BatchNorm2D",
    "Conv2D",
    "Dense",
    "Dropout",
    "Flatten",
    "GlobalAvgPool2D",
    "Layer",
    "MaxPool2D",
    "Residual",
    "Sequential",
    "ShapeError",
    "UnknownLayerError",
    "layer_from_config",
    "layer_to_config",
    "register_layer",
    "registered_layers",
]
