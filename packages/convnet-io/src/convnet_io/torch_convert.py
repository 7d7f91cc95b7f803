"""PyTorch state dicts <-> convnet parameters, for the layers the two share.

The names are those of the equivalent `torch.nn.Sequential`, one module per convnet layer
at the same index (activations, pooling, Flatten and Dropout are modules without
parameters, so the indices line up):

    convnet                         torch                     tensors
    Conv2D  W (out, in, kh, kw), b  nn.Conv2d                 "i.weight" = W, "i.bias" = b
    Dense   W (in, out), b          nn.Linear                 "i.weight" = Wᵀ (out, in), "i.bias"
    BatchNorm2D gamma, beta;        nn.BatchNorm2d            "i.weight", "i.bias",
      running_mean, running_var                               "i.running_mean", "i.running_var",
                                                              "i.num_batches_tracked"

A nested Sequential adds its own indices ("3.0.weight"); a Residual has "body" and
"shortcut" children ("4.body.0.weight"), as a torch module with those two attributes would.
BatchNorm's `momentum` means the opposite in the two: torch's momentum is 1 - ours (ours
keeps `momentum` of the old running value); the running statistics themselves are the same.
PyTorch is imported only by `to_torch_state_dict`.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy

__all__ = ["from_torch_state_dict", "to_torch_state_dict"]


def _parts(model_or_parts: Any) -> tuple[Any, Any, Any, Any]:
    """(layer, params, state, input_shape) from a Model, a SavedModel or a tuple."""
    if isinstance(model_or_parts, tuple):
        layer, params, state, *rest = model_or_parts
        return layer, params, state, (rest[0] if rest else None)
    layer = getattr(model_or_parts, "layer", None) or getattr(model_or_parts, "network", None)
    if layer is None:
        raise TypeError(
            "expected a Model, a SavedModel or a (layer, params, state) tuple, not "
            f"{type(model_or_parts).__name__}"
        )
    return layer, model_or_parts.params, model_or_parts.state, model_or_parts.input_shape


def _host(array: Any) -> numpy.ndarray:
    if hasattr(array, "detach"):  # a torch tensor
        array = array.detach().cpu().numpy()
    elif hasattr(array, "__cuda_array_interface__"):  # a cupy array
        array = array.get()
    return numpy.asarray(array)


def _named(layer: Any, prefix: str = "", path: tuple = ()):
    """Yield (torch name prefix, path into the params tree, leaf layer) for every leaf."""
    from convnet_core.layers import Residual, Sequential

    if isinstance(layer, Sequential):
        for index, child in enumerate(layer.layers):
            yield from _named(child, f"{prefix}{index}.", (*path, index))
    elif isinstance(layer, Residual):
        yield from _named(layer.body, prefix + "body.", (*path, "body"))
        if layer.shortcut is not None:
            yield from _named(layer.shortcut, prefix + "shortcut.", (*path, "shortcut"))
    else:
        yield prefix, path, layer


def _select(tree: Any, path: tuple) -> Any:
    """The sub-tree of `tree` at `path` (a sequence of indices and keys)."""
    for key in path:
        tree = tree[key]
    return tree


def to_torch_state_dict(model_or_parts: Any) -> OrderedDict:
    """A PyTorch state dict (torch tensors on the CPU) of a convnet model.

    `model_or_parts` is a `convnet_core.Model`, a `SavedModel`, or a (layer, params, state)
    tuple. Load it with `torch_sequential.load_state_dict(sd)` into the matching
    `nn.Sequential` (see the module docstring for names and layouts). Raises ValueError for
    a layer with parameters that PyTorch has no counterpart for here.
    """
    import torch
    from convnet_core import layers as L

    layer, params, state, _ = _parts(model_or_parts)
    result: OrderedDict = OrderedDict()

    def put(name: str, array: Any) -> None:
        result[name] = torch.from_numpy(numpy.ascontiguousarray(_host(array)))

    for prefix, path, leaf in _named(layer):
        p, s = _select(params, path), _select(state, path)
        if isinstance(leaf, L.Conv2D):
            put(prefix + "weight", p["W"])  # (out, in, kh, kw) in both
            if leaf.use_bias:
                put(prefix + "bias", p["b"])
        elif isinstance(leaf, L.Dense):
            put(prefix + "weight", _host(p["W"]).T)  # torch Linear: (out, in)
            if leaf.use_bias:
                put(prefix + "bias", p["b"])
        elif isinstance(leaf, L.BatchNorm2D):
            put(prefix + "weight", p["gamma"])
            put(prefix + "bias", p["beta"])
            put(prefix + "running_mean", s["running_mean"])
            put(prefix + "running_var", s["running_var"])
            result[prefix + "num_batches_tracked"] = torch.tensor(0, dtype=torch.int64)
        elif p or s:
            raise ValueError(
                f"to_torch_state_dict: no PyTorch counterpart for {type(leaf).__name__} "
                f"(at {prefix[:-1] or 'the root'}) with parameters or state"
            )
    return result


def from_torch_state_dict(
    state_dict: Any, model_or_layer: Any, input_shape=None, *, dtype: Any = "float32"
) -> tuple[Any, Any]:
    """(params, state) for the convnet `model_or_layer` from a PyTorch state dict.

    `model_or_layer` is a layer spec (usually a Sequential) or a Model (its network and
    input shape are used). Values may be torch tensors or arrays; they become host NumPy
    arrays of `dtype`. With an input shape the result is checked against the
    architecture. Raises ValueError naming missing, unexpected or mis-shaped entries.
    """
    from convnet_core import layers as L

    from .format import _check_parts, treedef

    if hasattr(model_or_layer, "network"):
        layer = model_or_layer.network
        input_shape = input_shape if input_shape is not None else model_or_layer.input_shape
    else:
        layer = model_or_layer
    dtype = numpy.dtype(dtype)
    remaining = dict(state_dict.items())

    def take(name: str, transpose: bool = False) -> numpy.ndarray:
        if name not in remaining:
            raise ValueError(f"from_torch_state_dict: {name!r} is missing from the state dict")
        array = _host(remaining.pop(name))
        return numpy.ascontiguousarray(array.T if transpose else array).astype(dtype)

    def convert(leaf: Any, prefix: str) -> tuple[dict, dict]:
        if isinstance(leaf, L.Conv2D):
            p = {"W": take(prefix + "weight")}
            if leaf.use_bias:
                p["b"] = take(prefix + "bias")
            return p, {}
        if isinstance(leaf, L.Dense):
            p = {"W": take(prefix + "weight", transpose=True)}
            if leaf.use_bias:
                p["b"] = take(prefix + "bias")
            return p, {}
        if isinstance(leaf, L.BatchNorm2D):
            remaining.pop(prefix + "num_batches_tracked", None)
            p = {"gamma": take(prefix + "weight"), "beta": take(prefix + "bias")}
            s = {
                "running_mean": take(prefix + "running_mean"),
                "running_var": take(prefix + "running_var"),
            }
            return p, s
        return {}, {}

    def build(node: Any, prefix: str) -> tuple[Any, Any]:
        if isinstance(node, L.Sequential):
            pairs = [build(child, f"{prefix}{i}.") for i, child in enumerate(node.layers)]
            return tuple(p for p, _ in pairs), tuple(s for _, s in pairs)
        if isinstance(node, L.Residual):
            body = build(node.body, prefix + "body.")
            short = (
                ({}, {}) if node.shortcut is None else build(node.shortcut, prefix + "shortcut.")
            )
            return {"body": body[0], "shortcut": short[0]}, {"body": body[1], "shortcut": short[1]}
        return convert(node, prefix)

    params, state = build(layer, "")
    if remaining:
        raise ValueError(
            f"from_torch_state_dict: entries with no place in the network: {sorted(remaining)}"
        )
    if input_shape is not None:
        problem = _check_parts(
            layer, tuple(input_shape), treedef.encode(params), treedef.encode(state)
        )
        if problem:
            raise ValueError(f"from_torch_state_dict: {problem}")
    return params, state
