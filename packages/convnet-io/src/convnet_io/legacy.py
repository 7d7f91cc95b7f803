"""Reading models saved by ConvNet-NumPy (the old `nn` package), converted to convnet.

`Model.save("weights.hdf5")` of the old package wrote two files:

- `weights.json`: a list of `{"class": ..., "config": {...}}`, one per layer, for Conv2D
  (filters, kernel_size, stride, padding, use_bias), Activation (func), MaxPool2D
  (pool_size, stride, which may be null), Dense (units, use_bias), Dropout (rate),
  BatchNorm2D (momentum, eps) and Flatten; a key left out (or null) takes the default of
  the convnet layer, whose arguments are the old ones (Conv2D's padding: "same");
- `weights.hdf5` (or `weights.hdf5.npz` without h5py): one array per parameter, named
  `<layer index>_<class>_<param>`, e.g. `0_Conv2D_W`, `7_Dense_b`, `1_BatchNorm2D_gamma`.

The old package worked in NHWC. Converting to convnet's NCHW means:

- Conv2D W (kh, kw, in, out) -> (out, in, kh, kw);
- the Dense right after Flatten: the old Flatten read (H, W, C), ours reads (C, H, W), so
  its rows are permuted: W.reshape(H, W, C, units).transpose(2, 0, 1, 3).reshape(-1, units),
  with H, W, C found by walking the architecture from `input_shape` (MNIST's by default);
- float64 weights become float32 (a value beyond float32's range is refused, naming its array);
- BatchNorm running statistics were usually not saved; used when present (both of them),
  else they start at mean 0, variance 1 (what the old package used after loading too),
  with a warning.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from typing import Any

import numpy

from . import storage
from .errors import ModelFormatError

__all__ = ["DEFAULT_INPUT_SHAPE", "OLD_LAYERS", "is_legacy", "read", "sibling_json"]

DEFAULT_INPUT_SHAPE = (1, 28, 28)
KEY = re.compile(r"^(\d+)_([A-Za-z][A-Za-z0-9]*)_([A-Za-z]\w*)$")
#: The layer classes of ConvNet-NumPy and the parameter arrays each one saved.
OLD_LAYERS = {
    "Conv2D": ("W", "b"),
    "Activation": (),
    "MaxPool2D": (),
    "Dense": ("W", "b"),
    "Dropout": (),
    "BatchNorm2D": ("gamma", "beta", "running_mean", "running_var"),
    "Flatten": (),
}


def sibling_json(path: str) -> str:
    """weights.hdf5 -> weights.json; weights.hdf5.npz -> weights.json."""
    stem = path[: -len(".npz")] if path.lower().endswith(".npz") else path
    return os.path.splitext(stem)[0] + ".json"


def is_legacy(path: str, reader: Any) -> bool:
    """True for a file without convnet attributes whose arrays are all named like the old
    ones, or some of them with a sibling .json architecture file (weights.hdf5 ->
    weights.json). Another program's model.h5 beside a model.json is not taken for one."""
    named_like_old = [bool(KEY.match(key)) for key in reader.array_paths()]
    if named_like_old and all(named_like_old):
        return True
    return any(named_like_old) and os.path.exists(sibling_json(path))


def _old_layers(path: str, json_path: str) -> list[dict[str, Any]]:
    if not os.path.exists(json_path):
        raise ModelFormatError(
            path,
            f"looks like a ConvNet-NumPy weights file, but its architecture file "
            f"{json_path} is missing",
        )
    try:
        storage.check_regular_file(json_path)  # a FIFO there would block the read
        with open(json_path, encoding="utf-8") as f:
            layers = json.load(f)
    except ModelFormatError as error:
        raise ModelFormatError(
            json_path, f"cannot read the architecture: {error.problem}"
        ) from None
    except (OSError, ValueError) as error:
        raise ModelFormatError(json_path, f"cannot read the architecture: {error}") from None
    except RecursionError:
        problem = "cannot read the architecture: its JSON is nested too deeply"
        raise ModelFormatError(json_path, problem) from None
    if isinstance(layers, dict) and isinstance(layers.get("layers"), list):
        layers = layers["layers"]
    if not isinstance(layers, list) or not all(
        isinstance(entry, dict) and isinstance(entry.get("class"), str) for entry in layers
    ):
        raise ModelFormatError(
            json_path, 'the architecture must be a list of {"class": ..., "config": {...}}'
        )
    return layers


#: For each old layer class, its config keys and the argument of the convnet layer each
#: one sets. A key that is absent or null takes that layer's own default.
OLD_CONFIG = {
    "Conv2D": {
        "filters": "filters",
        "kernel_size": "kernel_size",
        "stride": "stride",
        "padding": "padding",
        "use_bias": "use_bias",
    },
    "Activation": {"func": "name", "name": "name", "alpha": "alpha"},
    "MaxPool2D": {"pool_size": "pool_size", "stride": "stride"},
    "Dense": {"units": "units", "use_bias": "use_bias"},
    "Dropout": {"rate": "rate"},
    "BatchNorm2D": {"momentum": "momentum", "eps": "eps"},
    "Flatten": {},
}


def _layer_arguments(name: str, config: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of the convnet layer for an old layer's config: those its
    keys set (the first of two old names for one argument wins), none for the others."""
    arguments: dict[str, Any] = {}
    for key, argument in OLD_CONFIG[name].items():
        if config.get(key) is not None and argument not in arguments:
            value = config[key]
            arguments[argument] = bool(value) if argument == "use_bias" else value
    return arguments


def _convert_layer(json_path: str, index: int, entry: dict[str, Any]) -> Any:
    """The convnet layer for one old layer entry; the arguments its config leaves out take
    the convnet layer's defaults (the same as the old package's: the same arguments)."""
    import attrs
    from convnet_core import layers as L

    name = entry["class"]
    config = entry.get("config") or {}
    if not isinstance(config, dict):
        raise ModelFormatError(json_path, f"layer {index} ({name}): config is not an object")
    if name not in OLD_CONFIG:
        known = ", ".join(sorted(OLD_CONFIG))
        raise ModelFormatError(
            json_path, f"layer {index}: unknown ConvNet-NumPy layer class {name!r}; known: {known}"
        )
    layer_class = getattr(L, name)
    arguments = _layer_arguments(name, config)
    for field in attrs.fields(layer_class):
        if field.default is attrs.NOTHING and field.name not in arguments:
            key = next(key for key, arg in OLD_CONFIG[name].items() if arg == field.name)
            raise ModelFormatError(
                json_path,
                f"layer {index} ({name}): config {config!r} has no {key!r}, which {name} "
                "needs (it has no default)",
            )
    try:
        return layer_class(**arguments)
    except (TypeError, ValueError) as error:
        raise ModelFormatError(
            json_path, f"layer {index} ({name}): bad config {config!r}: {error}"
        ) from None


def _old_arrays(path: str, reader: Any, classes: list[str]) -> dict[tuple[int, str], Any]:
    """{(layer index, param name): array}, checked against the layer list."""
    found: dict[tuple[int, str], Any] = {}
    for key in reader.array_paths():
        match = KEY.match(key)
        if match is None:
            raise ModelFormatError(path, f"unexpected array {key!r} (not <index>_<Class>_<param>)")
        index, name, param = int(match[1]), match[2], match[3]
        if index >= len(classes):
            raise ModelFormatError(
                path,
                f"array {key!r} is for layer {index}, but the architecture has "
                f"{len(classes)} layers",
            )
        if classes[index] != name:
            raise ModelFormatError(
                path, f"array {key!r} is for a {name}, but layer {index} is a {classes[index]}"
            )
        if param not in OLD_LAYERS[name]:
            raise ModelFormatError(path, f"array {key!r}: a {name} has no parameter {param!r}")
        array = reader.read(key)
        if array.dtype.kind != "f":
            raise ModelFormatError(path, f"array {key!r} has dtype {array.dtype}, not a float")
        found[(index, param)] = array
    return found


def _input_channels(classes: list[str], arrays) -> tuple[str, int] | None:
    """(array name, channel count) from the first layer whose weights count the input's
    channels: a Conv2D (old W (kh, kw, C, out)) or a BatchNorm2D (gamma (C,)) before any
    Dense or Flatten. None when there is none: an MLP's weights see only H * W * C."""
    for index, name in enumerate(classes):
        if name in ("Dense", "Flatten"):
            return None
        param, ndim, axis = {"Conv2D": ("W", 4, 2), "BatchNorm2D": ("gamma", 1, 0)}.get(
            name, (None, 0, 0)
        )
        if param is not None:
            array = arrays.get((index, param))
            if array is None or array.ndim != ndim:
                return None  # the conversion names what is wrong with it
            return f"{index}_{name}_{param}", int(array.shape[axis])
    return None


def _check_channels_first(path: str, input_shape: tuple[int, ...], channels) -> None:
    """Refuse an `input_shape` given in the old package's channels-last order (H, W, C),
    which would otherwise load with permuted Dense rows or fail on a misleading shape.

    `channels` is what `_input_channels` found. Its count settles which axis holds the
    channels: only a shape whose last axis, not its first, has that count is refused.
    Without it (an MLP), a shape that looks like (H, W, C) is refused, such as (28, 28, 1);
    but not one of a single pixel (C, 1, 1), which flattens the same in both orders."""
    if len(input_shape) != 3:
        return
    first, height, last = input_shape
    suggested = (last, first, height)
    if channels is not None:
        key, count = channels
        if count == last != first:
            raise ModelFormatError(
                path,
                f"input_shape={input_shape} is channels-last (H, W, C): {key!r} takes "
                f"{count} input channels, its last axis; convnet wants (C, H, W): pass "
                f"input_shape={suggested}",
            )
        return  # any other mismatch: the shape error of that array says what to pass
    if last in (1, 3, 4) and first >= 4 * last and height * last > 1:
        raise ModelFormatError(
            path,
            f"input_shape={input_shape} looks channels-last (H, W, C); convnet wants "
            f"(C, H, W): pass input_shape={suggested}",
        )


def _input_shape_hint(input_shape, given: bool, problem: str) -> str:
    """The end of a shape error that comes from the input shape: what to pass to load."""
    if given:
        return f"; {problem} from input_shape={input_shape}: pass the (C, H, W) it was trained on"
    return (
        f"; {problem} from MNIST's default input shape {input_shape}: pass "
        "input_shape=(C, H, W) to load"
    )


def _take(path, arrays, index, name, param, shape, hint=None) -> numpy.ndarray:
    """The old array for (layer, param) as float32 of `shape` (a flat vector may be (1,1,1,C)).

    `hint(array)` may add a sentence to the shape error, or return "" to add none."""
    key = f"{index}_{name}_{param}"
    if (index, param) not in arrays:
        raise ModelFormatError(path, f"the array {key!r} is missing")
    array = arrays.pop((index, param))
    if len(shape) == 1 and array.size == shape[0]:
        array = array.reshape(shape)
    if array.shape != tuple(shape):
        raise ModelFormatError(
            path,
            f"array {key!r} has shape {array.shape} but the architecture needs {tuple(shape)}"
            + (hint(array) if hint else ""),
        )
    return _to_float32(path, key, array)


def _to_float32(path: str, key: str, array: numpy.ndarray) -> numpy.ndarray:
    """`array` as float32; a finite value beyond float32's range is refused, naming the
    old array, rather than becoming infinity (NaN and inf stay, for the shared check)."""
    with numpy.errstate(over="ignore"):
        converted = array.astype(numpy.float32)
    overflowed = numpy.isinf(converted) & numpy.isfinite(array)  # host
    if overflowed.any():
        largest = float(numpy.abs(array[overflowed]).max())  # host
        count = int(overflowed.sum())  # host
        values = "1 value that overflows" if count == 1 else f"{count} values that overflow"
        raise ModelFormatError(
            path,
            f"array {key!r} holds {values} float32 (the largest magnitude is {largest:.2g}; "
            f"float32 holds up to {float(numpy.finfo(numpy.float32).max):.2g})",
        )
    return converted


def read(path: str, reader: Any, *, input_shape=None):
    """The converted `SavedModel` of the ConvNet-NumPy file `path` (see the module doc)."""
    from convnet_core import layers as L

    from .format import SavedModel, _check_parts, treedef

    json_path = sibling_json(path)
    entries = _old_layers(path, json_path)
    layers = [_convert_layer(json_path, i, entry) for i, entry in enumerate(entries)]
    classes = [entry["class"] for entry in entries]
    arrays = _old_arrays(path, reader, classes)
    given = input_shape is not None
    input_shape = tuple(int(d) for d in (input_shape or DEFAULT_INPUT_SHAPE))
    if given:
        _check_channels_first(path, input_shape, _input_channels(classes, arrays))
    shape = input_shape
    network = L.Sequential(layers)

    # Shape-error hints for the arrays whose shape follows from the input shape; they read
    # `shape`, the input shape of the layer being converted, when the error is raised.
    def channels_hint(array) -> str:
        if array.ndim != 4 or array.shape[2] == shape[0]:
            return ""
        problem = f"the weights take {array.shape[2]} input channels, not the {shape[0]}"
        return _input_shape_hint(input_shape, given, problem)

    def features_hint(array) -> str:
        if array.ndim != 2 or array.shape[0] == shape[0]:
            return ""
        problem = f"the weights take {array.shape[0]} features after Flatten, not the {shape[0]}"
        return _input_shape_hint(input_shape, given, problem)

    params, state, missing_stats = [], [], []
    channels_from_input = True  # the channels of `shape` are still those of the input
    flattened_from = None  # (C, H, W) of the input of the last Flatten, until a Dense uses it
    for index, (name, layer) in enumerate(zip(classes, layers, strict=True)):
        try:
            out_shape = tuple(layer.output_shape(shape))
        except ValueError as error:
            raise ModelFormatError(
                json_path,
                f"layer {index} ({name}) does not accept the input shape {shape}: "
                f"{error} (pass input_shape=(C, H, W) to load)",
            ) from None
        p: dict[str, Any] = {}
        s: dict[str, Any] = {}
        if name == "Conv2D":
            kh, kw = layer.kernel_size
            hint = channels_hint if channels_from_input else None
            w = _take(path, arrays, index, name, "W", (kh, kw, shape[0], layer.filters), hint)
            p["W"] = numpy.ascontiguousarray(w.transpose(3, 2, 0, 1))  # (out, in, kh, kw)
            if layer.use_bias:
                p["b"] = _take(path, arrays, index, name, "b", (layer.filters,))
        elif name == "Dense":
            hint = features_hint if flattened_from is not None else None
            w = _take(path, arrays, index, name, "W", (shape[0], layer.units), hint)
            if flattened_from is not None and len(flattened_from) == 3:
                c, h, wd = flattened_from
                # old rows in (H, W, C) order -> ours in (C, H, W) order
                w = w.reshape(h, wd, c, layer.units).transpose(2, 0, 1, 3).reshape(-1, layer.units)
                w = numpy.ascontiguousarray(w)
            flattened_from = None
            p["W"] = w
            if layer.use_bias:
                p["b"] = _take(path, arrays, index, name, "b", (layer.units,))
        elif name == "BatchNorm2D":
            channels = (shape[0],)
            p["gamma"] = _take(path, arrays, index, name, "gamma", channels)
            p["beta"] = _take(path, arrays, index, name, "beta", channels)
            has_mean = (index, "running_mean") in arrays
            has_var = (index, "running_var") in arrays
            if has_mean != has_var:
                missing = "running_var" if has_mean else "running_mean"
                present = "running_mean" if has_mean else "running_var"
                raise ModelFormatError(
                    path, f"'{index}_{name}_{missing}' is missing ({present} is present)"
                )
            if has_mean:
                s["running_mean"] = _take(path, arrays, index, name, "running_mean", channels)
                s["running_var"] = _take(path, arrays, index, name, "running_var", channels)
            else:
                missing_stats.append(index)
                s["running_mean"] = numpy.zeros(channels, numpy.float32)
                s["running_var"] = numpy.ones(channels, numpy.float32)
        elif name == "Flatten":
            flattened_from = shape
        elif name == "MaxPool2D":
            flattened_from = None
        if name in ("Conv2D", "Dense", "Flatten"):
            channels_from_input = False
        params.append(p)
        state.append(s)
        shape = out_shape
    if arrays:
        extra = [f"{i}_{classes[i]}_{param}" for i, param in arrays]
        raise ModelFormatError(path, f"arrays the architecture has no place for: {extra}")
    if missing_stats:
        warnings.warn(
            f"{path}: ConvNet-NumPy did not save BatchNorm running statistics; the "
            f"BatchNorm2D layers {missing_stats} start from mean 0 and variance 1. "
            "Predictions match the old model's after loading; retrain or re-estimate the "
            "statistics for the best accuracy.",
            UserWarning,
            stacklevel=4,
        )
    params_tree, state_tree = tuple(params), tuple(state)
    problem = _check_parts(
        network, input_shape, treedef.encode(params_tree), treedef.encode(state_tree)
    )
    if problem:
        raise ModelFormatError(path, problem)
    return SavedModel(
        layer=network,
        params=params_tree,
        state=state_tree,
        input_shape=input_shape,
        metadata={"converted_from": "ConvNet-NumPy", "architecture_file": json_path},
        source="convnet-numpy",
    )
