"""The built-in layers, all immutable attrs specs in NCHW layout.

See `convnet_core.layers.base` for the protocol every layer follows.
"""

from .activation import ACTIVATIONS, Activation
from .base import (
    Layer,
    ShapeError,
    layer_from_config,
    layer_to_config,
    register_layer,
    registered_layers,
)
from .combinators import Residual, Sequential
from .dense import Dense
from .reshape import Flatten

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "Dense",
    "Flatten",
    "Layer",
    "Residual",
    "Sequential",
    "ShapeError",
    "layer_from_config",
    "layer_to_config",
    "register_layer",
    "registered_layers",
]
