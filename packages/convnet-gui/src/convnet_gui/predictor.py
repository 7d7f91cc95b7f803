"""From a trained network to the function the app calls: x (1, 1, 28, 28) -> probabilities (10,).

x is one drawing as `convnet_gui.preprocess.to_mnist` returns it (float in [0, 1]); anything
else, None for a blank drawing included, raises a ValueError that says what was wrong.

The app never sees a model, only a `predict_fn`; tests pass their own. This module builds
one from a model file (through convnet_io) or from a network and its pytrees (through the
functional core), on the CPU or the GPU. It does not import tkinter.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy
from convnet_core import apply, backend, tree
from convnet_core.layers import Activation, Sequential, ShapeError

__all__ = [
    "DEFAULT_MODEL",
    "MissingModelError",
    "INPUT_SHAPE",
    "NUM_CLASSES",
    "PredictFn",
    "check_input",
    "check_network",
    "ends_with_softmax",
    "load_predictor",
    "missing_model_message",
    "predictor_from_parts",
    "softmax",
]

#: Where apps/train_mnist.py saves its model by default.
DEFAULT_MODEL = os.path.join("models", "mnist.h5")

#: The one input shape a predict function takes: one drawing, as `to_mnist` returns it.
INPUT_SHAPE = (1, 1, 28, 28)

#: The outputs a network must give for one drawing: one score per digit 0-9.
NUM_CLASSES = 10

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


def check_input(x: Any) -> Any:
    """Refuse, with a ValueError that says why, anything but one drawing as `to_mnist` gives it.

    Accepted: a float array of shape (1, 1, 28, 28) with every value in [0, 1] (NumPy or the
    device's array module); it is returned unchanged. Refused: None (what `to_mnist` returns
    for a blank drawing), integer or boolean arrays (8-bit pixels 0..255 would give a
    confident nonsense answer), values outside [0, 1] (NaN included), and any other shape,
    batches included: a predict function reads one drawing and returns (10,).
    """
    if x is None:
        raise ValueError(
            "no drawing: predict got None, which to_mnist returns for a blank drawing "
            "(nothing drawn, or only a dot or a speck); draw a digit first"
        )
    if not hasattr(x, "dtype"):
        x = numpy.asarray(x)
    if x.dtype.kind != "f":
        raise ValueError(
            f"predict takes floats in [0, 1], as to_mnist gives them, got dtype {x.dtype}; "
            "divide 8-bit pixels by 255"
        )
    if tuple(x.shape) != INPUT_SHAPE:
        raise ValueError(
            f"predict takes one drawing of shape {INPUT_SHAPE}, as to_mnist gives it, got "
            f"shape {tuple(x.shape)}; call it once per drawing"
        )
    low, high = float(x.min()), float(x.max())
    if not (low >= 0.0 and high <= 1.0):
        raise ValueError(
            f"predict takes floats in [0, 1], as to_mnist gives them, got values from "
            f"{low:g} to {high:g}"
        )
    return x


def check_network(network: Any, input_shape: tuple[int, ...] | None = None) -> None:
    """Refuse, with a ValueError that says why, a network that does not read one drawing
    into ten digit scores.

    `input_shape` is the per-sample shape the network was built for (a model file states
    it; None when unknown): it must be INPUT_SHAPE[1:] = (1, 28, 28). The network's own
    `output_shape` for (1, 28, 28) must be (NUM_CLASSES,) = (10,). Both are shape
    arithmetic on the layer spec, no array is made, so a wrong model is refused when it is
    loaded rather than failing on every stroke.
    """
    sample = INPUT_SHAPE[1:]  # (1, 28, 28)
    if input_shape is not None and tuple(input_shape) != sample:
        raise ValueError(
            f"the network was built for inputs of shape {tuple(input_shape)}, but the app "
            f"gives it one 28x28 grey drawing, shape {sample}"
        )
    try:
        output_shape = tuple(network.output_shape(sample))
    except ShapeError as error:
        raise ValueError(
            f"the network cannot read one 28x28 grey drawing, shape {sample}: {error}"
        ) from None
    if output_shape != (NUM_CLASSES,):
        raise ValueError(
            f"the network gives outputs of shape {output_shape} for one drawing, but the app "
            f"needs ({NUM_CLASSES},): one score per digit 0-9"
        )


def params_dtype(params: Any) -> Any:
    """The dtype of the first floating array in `params` (what the network computes in), or
    None when it has none."""
    for leaf in tree.leaves(params):
        if leaf.dtype.kind == "f":
            return leaf.dtype
    return None


def predictor_from_parts(network: Any, params: Any, state: Any, *, xp: Any = numpy) -> PredictFn:
    """A predict function running `network` in inference mode with the array module `xp`.

    predict(x): x float (1, 1, 28, 28) in [0, 1] on the host, one drawing as `to_mnist` gives
    it -> probabilities float64 (10,) on the host. Anything else (None for a blank drawing,
    integers, a batch) raises ValueError (`check_input`). The network's output is passed
    through a softmax unless its last layer is one. A network that cannot read (1, 28, 28)
    into (10,) outputs is refused here, with a ValueError (`check_network`).
    """
    check_network(network)
    probabilities_out = ends_with_softmax(network)
    dtype = params_dtype(params)  # a float64 drawing runs through float32 weights as float32

    def predict(x: numpy.ndarray) -> numpy.ndarray:
        x = check_input(x)  # (1, 1, 28, 28)
        x = xp.asarray(x, dtype=dtype or x.dtype)
        y, _, _ = apply(network, params, state, x, training=False, xp=xp)  # (1, 10)
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
    file) pass through unchanged. A model built for other inputs than (1, 28, 28), or
    giving other than 10 outputs, raises ValueError (`check_network`).
    """
    import convnet_io
    from convnet_io.format import resolve_path

    if not os.path.exists(resolve_path(path)):
        raise MissingModelError(missing_model_message(path))

    saved = convnet_io.load(path, parts=True)  # the network spec and host NumPy pytrees
    check_network(saved.layer, saved.input_shape)
    xp = backend.array_module(device)
    params = backend.to_device(saved.params, xp)
    state = backend.to_device(saved.state, xp)
    return predictor_from_parts(saved.layer, params, state, xp=xp)
