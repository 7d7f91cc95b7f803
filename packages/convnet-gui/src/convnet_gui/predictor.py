"""From a trained network to the function the app calls: x (1, 1, 28, 28) -> probabilities (10,).

The app never sees a model, only a `predict_fn`; tests pass their own. This module builds
one from a model file (through convnet_io) or from a network and its pytrees (through the
functional core), on the CPU or the GPU. It does not import tkinter.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy
from convnet_core import apply, backend
from convnet_core.layers import Activation, Sequential

__all__ = [
    "DEFAULT_MODEL",
    "MissingModelError",
    "PredictFn",
    "ends_with_softmax",
    "load_predictor",
    "missing_model_message",
    "predictor_from_parts",
    "softmax",
]

#: Where apps/train_mnist.py saves its model by default.
DEFAULT_MODEL = os.path.join("models", "mnist.h5")

PredictFn = Callable[[numpy.ndarray], numpy.ndarray]


class MissingModelError(FileNotFoundError):
    """No model file at the given path; the message says how to train one."""


def softmax(logits: numpy.ndarray) -> numpy.ndarray:
    """p_i = exp(z_i - max z) / sum_j exp(z_j - max z), over the last axis (any shape)."""
    shifted = numpy.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def ends_with_softmax(network: Any) -> bool:
    """True when the network's last layer (looking inside Sequential) is a softmax."""
    last = network
    while isinstance(last, Sequential) and last.layers:
        last = last.layers[-1]
    return isinstance(last, Activation) and last.name == "softmax"


def predictor_from_parts(network: Any, params: Any, state: Any, *, xp: Any = numpy) -> PredictFn:
    """A predict function running `network` in inference mode with the array module `xp`.

    predict(x): x float32 (1, 1, 28, 28) on the host -> probabilities float64 (10,) on the
    host. The network's output is passed through a softmax unless its last layer is one.
    """
    probabilities_out = ends_with_softmax(network)

    def predict(x: numpy.ndarray) -> numpy.ndarray:
        y, _, _ = apply(network, params, state, xp.asarray(x), training=False, xp=xp)  # (1, 10)
        out = numpy.asarray(backend.to_host(y), dtype=numpy.float64)[0]  # (10,)
        return out if probabilities_out else softmax(out)

    return predict


def missing_model_message(path: str | os.PathLike) -> str:
    """What to tell a user who has no model at `path`: where it was looked for, how to train it."""
    path = os.fspath(path)
    command = "uv run apps/train_mnist.py"
    if os.path.normpath(path) != os.path.normpath(DEFAULT_MODEL):
        command += f" --out {path}"
    return f"No model at {path} \N{EM DASH} train one first with: {command}"


def load_predictor(path: str | os.PathLike = DEFAULT_MODEL, device: str = "cpu") -> PredictFn:
    """Load a model file with `convnet_io.load` and return its predict function on `device`.

    The file's parts (network spec, params, state) are read as NumPy arrays and moved to
    the array module of `device` as `convnet_core.backend.array_module` picks it: "cpu",
    "cuda" (RuntimeError without a usable GPU) or "auto" (the GPU when one is usable).

    The file is found as `convnet_io.load` finds it: `path`, or `path + ".npz"` when only
    that exists (a model saved without h5py). Raises MissingModelError (with the command
    that trains one) when there is neither; errors of convnet_io (a damaged or foreign
    file) pass through unchanged.
    """
    import convnet_io
    from convnet_io.format import resolve_path

    if not os.path.exists(resolve_path(path)):
        raise MissingModelError(missing_model_message(path))

    saved = convnet_io.load(path, parts=True)  # the network spec and host NumPy pytrees
    xp = backend.array_module(device)
    params = backend.to_device(saved.params, xp)
    state = backend.to_device(saved.state, xp)
    return predictor_from_parts(saved.layer, params, state, xp=xp)
