"""convnet-core: a convolutional-network framework written by hand on NumPy (and CuPy).

The functional core: layers are immutable specs; `init`, `apply` and `grad` work on
explicit parameter pytrees with an array module `xp` (numpy or cupy).

    import numpy as np, convnet_core as cn
    from convnet_core import layers as L
    net = L.Sequential((L.Flatten(), L.Dense(10)))
    params, state = cn.init(net, (1, 28, 28), rng=0)
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)  # (N, C, H, W)
    logits, state, cache = cn.apply(net, params, state, x, training=True)  # (4, 10)
"""

from . import backend, callbacks, layers, losses, optim, presets, schedules, tree
from .api import apply, grad, init
from .gradcheck import check_grad
from .layers.base import register_layer
from .model import Model

__version__ = "0.1.0"

__all__ = [
    "Model",
    "__version__",
    "apply",
    "backend",
    "callbacks",
    "check_grad",
    "grad",
    "init",
    "layers",
    "losses",
    "optim",
    "presets",
    "register_layer",
    "schedules",
    "tree",
]
