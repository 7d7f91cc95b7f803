"""The convnet model file, format versions 1 and 2: `save`, `load` and the `SavedModel`
parts. Version 2 is version 1 with the optional best/ groups below; a file without them is
written as version 1, so a convnet-io that reads only version 1 still reads it.

One file holds everything needed to rebuild a model bit for bit:

    root attributes  format = "convnet", format_version (1, or 2 with best/), writer
                     ("convnet-io 0.1.0"),
                     architecture (JSON of `layer_to_config`), input_shape (JSON list or
                     null), metadata (JSON: epoch, history, loss_name, rng_state,
                     precision, loss_scaler, ...), checksum ("sha256:..." over every
                     attribute and array)
    params/          attribute tree (JSON structure, see `convnet_io.treedef`); the arrays
    state/           the same for the layer state (BatchNorm running statistics, ...)
    optimizer/       optional: attribute config (JSON of `optim.to_config`), and
    optimizer/state/ the optimizer state tree and arrays
    best/params/     optional, both or neither (checkpoints of a run with early stopping):
    best/state/      the params and state of an earlier epoch, metadata "best_epoch", the
                     best one so far that `EarlyStopping(restore_best=True)` puts back

The container is HDF5 when h5py is installed and the path does not end in ".npz";
otherwise an NPZ with the same layout (`convnet_io.storage`). Loading checks, in order:
the container, the format and its version, the checksum, the architecture (every class
registered), that the arrays agree with the architecture in structure, shape and dtype
(found without allocating what the architecture describes, `convnet_io.shapes`) and are
finite, that float params are float32 or wider (what a Model takes), that BatchNorm
variances are not negative, the metadata entries the format defines (`METADATA_FIELDS`),
and the optimizer's config and state. Anything wrong raises
`ModelFormatError`; nothing in the file is ever executed (JSON and raw arrays only, no
pickles). `save` runs the same checks before writing, so it never writes a file that
`load` would refuse.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from typing import Any

import attrs
import numpy

from . import __version__, shapes, storage, treedef
from .atomic import atomic_path, resolve_target
from .errors import ModelFormatError

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "METADATA_FIELDS",
    "MODEL_METADATA",
    "SavedModel",
    "load",
    "read_raw",
    "resolve_path",
    "save",
    "write_raw",
]

FORMAT_NAME = "convnet"
FORMAT_VERSION = 2  # the newest version this convnet-io reads and writes
GROUPS = ("params", "state", "optimizer/state", "best/params", "best/state")
#: The metadata entries the format defines, and the form each one must have (any other
#: entry is the caller's own and stored as it is).
METADATA_FIELDS = {
    "epoch": "a non-negative int (the epochs completed)",
    "history": "an object mapping each metric name to a list of numbers or null",
    "loss_name": "null or a non-empty string (a loss of convnet_core.losses, or the name of "
    "a custom loss function)",
    "rng_state": 'null or {"seed": a non-negative int or null}',
    "precision": 'null or {"compute_dtype": a floating dtype name, "param_dtype": a '
    "floating dtype name, float32 or wider, the params' dtype when the two differ} "
    "(convnet_core.precision.Policy; null or absent: float32)",
    "loss_scaler": "null or the state and settings of a "
    'convnet_core.precision.DynamicLossScaler: {"scale": a finite number in [min_scale, '
    'max_scale], "good_steps": an int >= 0, "growth_factor", "backoff_factor", '
    '"growth_interval", "min_scale", "max_scale"} (null or absent: a new scaler)',
    "checkpoint": 'null or {"monitor": a string, "mode": "min" or "max", "best": a number '
    'or null, "epoch": a non-negative int} (written by Checkpoint)',
    "best_epoch": 'null or a positive int, at most "epoch": the epoch whose params and state '
    "the groups best/params and best/state hold, which the file has exactly when this is "
    "not null (written by Checkpoint: the best epoch of fit's EarlyStopping, restore_best=True, "
    "when it came before the checkpoint's)",
}
#: The entries `save(path, model)` takes from the model; `metadata=` may not set them.
MODEL_METADATA = ("epoch", "history", "loss_name", "rng_state", "precision", "loss_scaler")


@attrs.frozen
class SavedModel:
    """Everything a model file holds, as plain parts (host NumPy arrays).

    Attributes:
        layer: the network spec (usually a `Sequential`).
        params, state: pytrees shaped as `layer.init` makes them.
        input_shape: per-sample input shape (no batch axis), or None when not saved.
        optimizer: the optimizer config dict (`optim.to_config`) or None.
        optimizer_state: the optimizer state pytree or None.
        metadata: dict: epoch, history, loss_name, rng_state, precision, loss_scaler and
            anything the caller added.
        source: "convnet", or "convnet-numpy" for a converted file of the old project.
        best_weights: (epoch, params, state) of an earlier epoch, the best one that early
            stopping had seen when a `Checkpoint` saved the file; None when the file holds
            none (any file but such checkpoints).
    """

    layer: Any
    params: Any
    state: Any
    input_shape: tuple[int, ...] | None = None
    optimizer: dict | None = None
    optimizer_state: Any = None
    metadata: dict = attrs.field(factory=dict)
    source: str = FORMAT_NAME
    best_weights: tuple[int, Any, Any] | None = None

    def to_model(self, device=None):
        """A `convnet_core.Model` holding these parts (optimizer restored when saved), on
        `device` as `Model(device=...)` takes it (None: "auto")."""
        return _to_model(self, device)


# ---------------------------------------------------------------------------------------
# JSON helpers


def _json_default(value: Any) -> Any:
    if isinstance(value, numpy.generic):
        return value.item()
    if isinstance(value, numpy.ndarray) or hasattr(value, "__cuda_array_interface__"):
        return treedef._host(value).tolist()
    raise TypeError(f"cannot store a {type(value).__name__} in the file's JSON")


def _dumps(value: Any) -> str:
    return json.dumps(value, default=_json_default, sort_keys=False)


def _native(array: numpy.ndarray) -> numpy.ndarray:
    """`array` in this machine's byte order: a file written on a big-endian machine, or
    big-endian arrays given to `save`, hold ">f4"s, which layers and optimizers would take
    for another dtype than float32. The same array when it is already native."""
    return array.astype(array.dtype.newbyteorder("="), copy=False)


# ---------------------------------------------------------------------------------------
# Checksum


def checksum(attributes: dict[str, dict[str, Any]], arrays: dict[str, numpy.ndarray]) -> str:
    """SHA-256 over every attribute (but the root "checksum") and every array.

    Attributes enter as JSON [group, name, value]; arrays as JSON [path, dtype, shape]
    followed by their bytes in C order. Any flipped byte of content changes it.
    """
    digest = hashlib.sha256()
    for group in sorted(attributes):
        for name in sorted(attributes[group]):
            if group == "" and name == "checksum":
                continue
            digest.update(json.dumps([group, name, attributes[group][name]]).encode())
    for path in sorted(arrays):
        array = numpy.ascontiguousarray(arrays[path])
        digest.update(json.dumps([path, array.dtype.str, list(array.shape)]).encode())
        digest.update(array.reshape(-1).view(numpy.uint8).data)
    return "sha256:" + digest.hexdigest()


# ---------------------------------------------------------------------------------------
# Raw layout (attributes + arrays), for tools and tests


def _container_for(path: str) -> str:
    if path.lower().endswith(".npz"):
        return "npz"
    return "hdf5" if storage.H5PY_AVAILABLE else "npz"


def write_raw(
    path: str | bytes | os.PathLike,
    attributes: dict[str, dict[str, Any]],
    arrays: dict[str, numpy.ndarray],
    *,
    container: str | None = None,
) -> str:
    """Write a layout atomically, with its checksum recomputed. Returns the path written.

    `container` is "hdf5" or "npz" (default: from the path and whether h5py is present).
    Without h5py a non-.npz path gets ".npz" appended (as ConvNet-NumPy did), with a warning.
    """
    path = os.fsdecode(path)
    resolve_target(path)  # a folder, device, FIFO, ... at the path: refused before anything
    container = container or _container_for(path)
    if container == "npz" and not path.lower().endswith(".npz") and not storage.H5PY_AVAILABLE:
        warnings.warn(
            f"{storage.H5PY_MISSING}: saving {path} as {path}.npz (pip install h5py for HDF5)",
            RuntimeWarning,
            stacklevel=3,
        )
        path = path + ".npz"
    attributes = {group: dict(values) for group, values in attributes.items()}
    attributes.setdefault("", {})["checksum"] = checksum(attributes, arrays)
    writer = storage.write_hdf5 if container == "hdf5" else storage.write_npz
    with atomic_path(path) as temporary:
        writer(temporary, attributes, arrays)
    return path


def resolve_path(path: str | bytes | os.PathLike) -> str:
    """The file that `load` and `read_raw` read for `path`: `path` itself, or `path + ".npz"`
    when only that exists (what `save`, like ConvNet-NumPy, writes when h5py is missing).

    Programs that check for the file before loading it use this, so that they find the
    same file `load` does. When neither exists, `path` is returned (as a str).
    """
    path = os.fsdecode(path)
    if not os.path.exists(path) and os.path.exists(path + ".npz"):
        return path + ".npz"
    return path


def read_raw(path: str | bytes | os.PathLike) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """(attributes, arrays) of any HDF5/NPZ file, unchecked. ModelFormatError when unreadable."""
    path = resolve_path(path)
    kind = _sniff(path)
    try:
        with storage.open_reader(path, kind) as reader:
            return reader.attributes(), {key: reader.read(key) for key in reader.array_paths()}
    except (ModelFormatError, ImportError):
        raise
    except Exception as error:
        raise ModelFormatError(path, _describe(error)) from error


def _sniff(path: str) -> str:
    kind = storage.container_of(path)  # FileNotFoundError for a missing file
    if kind is None:
        with open(path, "rb") as f:
            head = f.read(8)
        raise ModelFormatError(
            path, f"not a model file: neither HDF5 nor NPZ (it starts with {head!r})"
        )
    return kind


def _describe(error: BaseException) -> str:
    """The problem, for an error a reader or a check did not raise on purpose: damage the
    container's library found, or content nested deeper than Python can follow."""
    text = f"{type(error).__name__}: {str(error) or 'no details'}"
    if isinstance(error, RecursionError):
        return f"its content is nested too deeply to read ({text})"
    return f"the file is corrupted or truncated ({text})"


# ---------------------------------------------------------------------------------------
# Saving


def _model_parts(model: Any) -> dict[str, Any]:
    if getattr(model, "params", None) is None:
        raise ValueError(
            "the model has no parameters yet: build it (model.build(input_shape)) or fit it "
            "before saving"
        )
    metadata: dict[str, Any] = {
        "epoch": int(getattr(model, "epoch", 0) or 0),
        "history": dict(getattr(model, "history", None) or {}),
        "loss_name": getattr(model, "loss_name", None),
    }
    if hasattr(model, "get_rng_state"):
        metadata["rng_state"] = model.get_rng_state()
    policy = getattr(model, "precision", None)
    if policy is not None:
        metadata["precision"] = policy.to_config()
        scaler = getattr(model, "loss_scaler", None)
        metadata["loss_scaler"] = None if scaler is None else scaler.to_config()  # a sync
    return {
        "layer": model.network,
        "params": model.params,
        "state": model.state,
        "input_shape": getattr(model, "input_shape", None),
        "optimizer": getattr(model, "optimizer", None),
        "optimizer_state": getattr(model, "opt_state", None),
        "metadata": metadata,
    }


def _optimizer_config(optimizer: Any) -> dict | None:
    if optimizer is None or isinstance(optimizer, dict):
        return optimizer
    from convnet_core import optim

    return optim.to_config(optimizer)


def save(
    path: str | bytes | os.PathLike,
    model: Any = None,
    *,
    layer: Any = None,
    params: Any = None,
    state: Any = None,
    optimizer: Any = None,
    optimizer_state: Any = None,
    metadata: dict | None = None,
    input_shape: tuple[int, ...] | None = None,
    best_weights: tuple[int, Any, Any] | None = None,
) -> str:
    """Save a model, or its parts, to one file, atomically. Returns the path written.

    Either `save(path, model)` with a `convnet_core.Model` (its network, params, state,
    optimizer and its state, epoch, history, loss, RNG state, precision policy and loss
    scaler), or the functional form `save(path, layer=..., params=..., state=...,
    input_shape=...)`, where `input_shape` (per sample) is required: it is what the arrays
    are checked against, and what `load` needs to make a Model. Keywords given with a
    model override what the model holds. `metadata` entries are added to the model's; they
    may not set the entries taken from the model (`MODEL_METADATA`: epoch, history,
    loss_name, rng_state, precision, loss_scaler), and the entries the format defines
    (`METADATA_FIELDS`) must have their documented form. `best_weights`, (epoch, params,
    state) of an earlier epoch (what `Checkpoint` passes from `model.best_weights`), are
    stored in the groups best/params and best/state, and their epoch as metadata
    "best_epoch"; `save(path, model)` alone does not store the model's `best_weights`.

    The file is HDF5 unless the path ends in ".npz" or h5py is missing (then NPZ). Arrays
    on the GPU are copied to the host. A symbolic link at the path is followed (the file
    it points to is replaced; the link stays); a directory, device, FIFO or socket there
    is refused. Raises ValueError before writing anything when the parts disagree with
    the architecture, hold NaN/inf, are float params narrower than float32 (which a Model
    refuses), or the metadata or optimizer state is not what `load` accepts, so no file is
    written that `load` would refuse.
    """
    if model is not None and metadata:
        taken = [key for key in MODEL_METADATA if key in metadata]
        if taken:
            raise ValueError(
                f"not saving {os.fsdecode(path)}: metadata {', '.join(map(repr, taken))} "
                f"{'is' if len(taken) == 1 else 'are'} stored from the model itself "
                f"({', '.join(MODEL_METADATA)}); set it on the model (e.g. model.epoch) "
                "or give your entry another name"
            )
    parts: dict[str, Any] = _model_parts(model) if model is not None else {"metadata": {}}
    given = {
        "layer": layer,
        "params": params,
        "state": state,
        "optimizer": optimizer,
        "optimizer_state": optimizer_state,
        "input_shape": input_shape,
    }
    parts.update({key: value for key, value in given.items() if value is not None})
    parts["metadata"] = {**parts.get("metadata", {}), **(metadata or {})}
    if best_weights is not None:
        if "best_epoch" in (metadata or {}):
            raise ValueError(
                f"not saving {os.fsdecode(path)}: metadata 'best_epoch' is stored from "
                "best_weights=(epoch, params, state); give one of the two"
            )
        epoch, best_params, best_state = best_weights
        if best_state is None:
            best_state = _empty_state_like(best_params)
        parts["metadata"]["best_epoch"] = epoch
        parts["best"] = (best_params, best_state)
    if parts.get("layer") is None:
        raise ValueError("save needs a model, or layer= and params=")
    if parts.get("params") is None:
        raise ValueError("save needs params= (the layer's parameters) or a built model")
    if parts.get("input_shape") is None:
        raise ValueError(
            "save needs input_shape= (the shape of one sample, e.g. (1, 28, 28)): the "
            "arrays are checked against the architecture for it, and load needs it to "
            "make a Model"
        )
    if parts.get("state") is None:
        parts["state"] = _empty_state_like(parts["params"])
    attributes, arrays = _layout(parts, os.fsdecode(path))
    return write_raw(path, attributes, arrays)


def _empty_state_like(params: Any) -> Any:
    """A state of empty dicts shaped like `params` (for layers that keep no state)."""
    if isinstance(params, dict):
        return {}
    if isinstance(params, (tuple, list)):
        return type(params)(_empty_state_like(child) for child in params)
    return {}


def _layout(parts: dict[str, Any], path: str):
    from convnet_core.layers import layer_to_config

    layer = parts["layer"]
    shape = parts.get("input_shape")
    shape = None if shape is None else [int(d) for d in shape]
    attributes: dict[str, dict[str, Any]] = {
        "": {
            "format": FORMAT_NAME,
            # 2 only for what version 1 cannot hold, so older readers read the rest
            "format_version": 2 if parts.get("best") is not None else 1,
            "writer": f"convnet-io {__version__}",
            "architecture": _dumps(layer_to_config(layer)),
            "input_shape": _dumps(shape),
            "metadata": _dumps(parts["metadata"]),
        }
    }
    arrays: dict[str, numpy.ndarray] = {}
    trees = {"params": parts["params"], "state": parts["state"]}
    config = _optimizer_config(parts.get("optimizer"))
    if config is not None or parts.get("optimizer_state") is not None:
        attributes["optimizer"] = {"config": _dumps(config)}
        if parts.get("optimizer_state") is not None:
            trees["optimizer/state"] = parts["optimizer_state"]
    if parts.get("best") is not None:
        trees["best/params"], trees["best/state"] = parts["best"]
    encoded = {}
    for group, tree in trees.items():
        structure, leaves = treedef.encode(tree)
        leaves = {key: _native(value) for key, value in leaves.items()}
        encoded[group] = (structure, leaves)
        attributes[group] = {"tree": _dumps(structure)}
        arrays.update({f"{group}/{key}": value for key, value in leaves.items()})
    metadata = json.loads(attributes[""]["metadata"])  # as load reads it
    problem = _check_metadata(metadata)
    problem = problem or _check_parts(layer, shape, encoded["params"], encoded["state"])
    problem = problem or _check_precision(metadata, encoded["params"])
    problem = problem or _check_best(layer, shape, metadata, encoded)
    if not problem and config is not None:
        problem = _check_optimizer(
            config, treedef.decode(*encoded["params"]), encoded.get("optimizer/state")
        )
    if problem:
        raise ValueError(f"not saving {path}: {problem}")
    return attributes, arrays


# ---------------------------------------------------------------------------------------
# Checks shared by save and load


def _as_arrays(structure: Any) -> Any:
    """A structure with 0-d NumPy scalars counted as arrays (arithmetic turns one into the
    other), for comparing a file's structure with a freshly made one."""
    if structure == "scalar":
        return "array"
    if isinstance(structure, dict) and "dict" in structure:
        return {"dict": [[key, _as_arrays(child)] for key, child in structure["dict"]]}
    if isinstance(structure, dict) and ("tuple" in structure or "list" in structure):
        ((kind, children),) = structure.items()
        return {kind: [_as_arrays(child) for child in children]}
    return structure


def _first_float_dtype(leaves: dict[str, Any]) -> numpy.dtype:
    for value in leaves.values():
        if value.dtype.kind == "f":
            return value.dtype
    return numpy.dtype("float32")


#: State arrays that hold variances (BatchNorm2D's running statistics): never negative.
VARIANCE_NAMES = ("running_var",)


def _has_custom_layer(value: Any) -> bool:
    """True when the layer tree `value` holds a layer class defined outside convnet_core."""
    if attrs.has(type(value)):
        if not type(value).__module__.startswith("convnet_core."):
            return True
        return any(_has_custom_layer(getattr(value, f.name)) for f in attrs.fields(type(value)))
    if isinstance(value, (tuple, list)):
        return any(_has_custom_layer(child) for child in value)
    return False


def _reference_parts(layer, input_shape: tuple[int, ...], dtype) -> tuple[Any, Any]:
    """(params, state) with the structure, shapes and dtypes `layer.init` gives, made
    without allocating the arrays (an architecture read from a file can claim any size).

    Only an architecture with a custom layer whose init cannot work on data-less arrays
    gets a real init; the built-in layers never do. Raises ValueError when the
    architecture refuses the input shape, shapes.NeedsData when an architecture of
    built-in layers only cannot be initialised without data.
    """
    try:
        return shapes.init_shapes(layer, input_shape, dtype)
    except shapes.NeedsData:
        if not _has_custom_layer(layer):
            raise
        import convnet_core

        return convnet_core.init(layer, input_shape, rng=0, dtype=dtype)


def _check_parts(
    layer, input_shape, params_encoded, state_encoded, info=None, *, prefix=""
) -> str | None:
    """None when params/state agree with the architecture, are finite and hold no negative
    variance, else the problem.

    `params_encoded` and `state_encoded` are (structure, {path: array-or-(shape, dtype)}).
    Without an input shape (a file that did not store one, loaded as parts) only the values
    are checked: the shapes cannot be inferred. `prefix` comes before the group names in
    the messages ("best/" for the best epoch's params and state).
    """
    names = {"params": f"{prefix}params", "state": f"{prefix}state"}
    for group, (_, leaves) in (("params", params_encoded), ("state", state_encoded)):
        for key, value in leaves.items():
            if isinstance(value, numpy.ndarray) and value.dtype.kind in "fc":
                if not numpy.isfinite(value).all():  # host
                    bad = int(value.size - numpy.isfinite(value).sum())  # host
                    return f"{names[group]}/{key} holds {bad} NaN or infinite values"
            if (
                group == "state"
                and key.rsplit("/", 1)[-1] in VARIANCE_NAMES
                and isinstance(value, numpy.ndarray)
                and value.dtype.kind == "f"
                and (value < 0).any()  # host
            ):
                bad = int((value < 0).sum())  # host
                return (
                    f"{names['state']}/{key} holds {bad} negative values, but it is a "
                    "variance (>= 0)"
                )
    problem = _narrow_weights(params_encoded[1], names["params"])
    if problem or input_shape is None:
        return problem
    dtype = _first_float_dtype(params_encoded[1])
    try:
        ref_params, ref_state = _reference_parts(layer, tuple(input_shape), dtype)
    except ValueError as error:
        return f"the architecture does not accept the input shape {tuple(input_shape)}: {error}"
    except shapes.NeedsData as error:
        return f"bad architecture: it cannot be initialised ({error})"
    for group, reference, (structure, leaves) in (
        ("params", ref_params, params_encoded),
        ("state", ref_state, state_encoded),
    ):
        ref_structure, ref_leaves = treedef.encode(reference)
        if _as_arrays(ref_structure) != _as_arrays(structure) or list(ref_leaves) != list(leaves):
            return (
                f"{names[group]}: the architecture has {len(ref_leaves)} arrays "
                f"({', '.join(ref_leaves) or 'none'}) but the file has {len(leaves)} "
                f"({', '.join(leaves) or 'none'})"
            )
        for key, ref in ref_leaves.items():
            value = leaves[key]
            shape, dtype_ = (value.shape, value.dtype) if hasattr(value, "dtype") else value
            where = f"{names[group]}/{key}"
            if tuple(shape) != ref.shape:
                return f"{where} has shape {tuple(shape)} but the architecture needs {ref.shape}"
            if numpy.dtype(dtype_) != ref.dtype:
                return f"{where} has dtype {dtype_} but the architecture needs {ref.dtype}"
    return None


def _narrow_weights(leaves: dict[str, Any], group: str) -> str | None:
    """The problem with the first float parameter narrower than 32 bits (the weights a
    `convnet_core.Model` refuses), or None. `leaves`: {path: array or (shape, dtype)}."""
    for key, value in leaves.items():
        dtype = numpy.dtype(value.dtype if hasattr(value, "dtype") else value[1])
        if dtype.kind == "f" and dtype.itemsize < 4:
            return (
                f"{group}/{key} is {dtype}, too narrow for a model's weights (float32 or "
                "wider): float16 weights lose most updates. For float16 compute keep float32 "
                "params and use mixed precision (compile(precision='mixed'))"
            )
    return None


def _check_best(layer, input_shape, metadata: dict, encoded: dict) -> str | None:
    """None when the best epoch's groups (best/params, best/state: in `encoded`, as
    (structure, leaves) by group) and metadata "best_epoch" are both there or both absent,
    the epoch is not after the epochs completed, and the params and state agree with the
    architecture as the model's own do, in the same dtype; else the problem."""
    best_epoch = metadata.get("best_epoch")
    if "best/params" not in encoded:
        if best_epoch is None:
            return None
        return (
            f"metadata 'best_epoch' is {best_epoch}, but the file holds no weights of it "
            "(the groups best/params and best/state)"
        )
    if best_epoch is None:
        return (
            "the file holds the groups best/params and best/state but no metadata "
            "'best_epoch' (the epoch they are of)"
        )
    epoch = metadata.get("epoch", 0)
    if best_epoch > epoch:
        return (
            f"metadata 'best_epoch' is {best_epoch}, after the {epoch} epochs completed "
            "(metadata 'epoch')"
        )
    best_params = encoded["best/params"]
    dtype, best_dtype = _first_float_dtype(encoded["params"][1]), _first_float_dtype(best_params[1])
    if best_dtype != dtype:
        return f"best/params are {best_dtype}, but the params are {dtype}"
    return _check_parts(layer, input_shape, best_params, encoded["best/state"], prefix="best/")


#: Optimizer state slots that hold running means of squared gradients: never negative.
SQUARE_SLOTS = {"adam": ("v",), "adamw": ("v",), "rmsprop": ("v",)}


def _check_optimizer(config: dict, params: Any, encoded_state) -> str | None:
    """None when the optimizer config is buildable with finite numbers and its state fits
    it and the params, else the problem.

    The state must have the structure, shapes and dtypes `optimizer.init(params)` gives
    (so its moments are real floats like the params, never complex), be finite, and hold
    a learning rate "lr" >= 0, a step count "step" >= 0 and no negative squared-gradient
    average.
    """
    from convnet_core import optim

    try:
        optimizer = optim.from_config(config)
    except (TypeError, ValueError) as error:
        return f"bad optimizer config {_short(config)}: {error}"
    for field, value in attrs.asdict(optimizer).items():
        if isinstance(value, float) and not numpy.isfinite(value):  # host
            return f"bad optimizer config {_short(config)}: {field} is {value}, not a finite number"
    if encoded_state is None:
        return None
    structure, leaves = encoded_state
    for key, value in leaves.items():
        if value.dtype.kind in "fc" and not numpy.isfinite(value).all():  # host
            return f"optimizer/state/{key} holds NaN or infinite values"
    try:
        ref_structure, ref_leaves = treedef.encode(optimizer.init(params))
    except ValueError as error:
        return f"the optimizer state does not fit the parameters: {error}"
    if _as_arrays(ref_structure) != _as_arrays(structure):
        return (
            f"the optimizer state does not fit the optimizer {config.get('name')!r}: it has "
            f"arrays {', '.join(leaves) or 'none'}, expected {', '.join(ref_leaves) or 'none'}"
        )
    for key, ref in ref_leaves.items():
        if leaves[key].shape != ref.shape:
            return f"optimizer/state/{key} has shape {leaves[key].shape}, expected {ref.shape}"
        if leaves[key].dtype != ref.dtype:
            return f"optimizer/state/{key} has dtype {leaves[key].dtype}, expected {ref.dtype}"
    for key, least in (("lr", "a learning rate"), ("step", "a step count")):
        if key in leaves and (leaves[key] < 0).any():  # host
            return f"optimizer/state/{key} is {leaves[key]}, but it is {least} (>= 0)"
    for slot in SQUARE_SLOTS.get(optimizer.name, ()):
        for key, value in leaves.items():
            if key.startswith(slot + "/") and (value < 0).any():  # host
                bad = int((value < 0).sum())  # host
                return (
                    f"optimizer/state/{key} holds {bad} negative values, but it is an "
                    "average of squared gradients (>= 0)"
                )
    return None


def _short(value: Any, limit: int = 120) -> str:
    """repr(value), cut to `limit` characters (a history can hold thousands of numbers)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _config_problem(from_config: Any, value: Any) -> str | None:
    """Why `from_config(value)` refuses `value` (None when it takes it or value is null)."""
    if value is None:
        return None
    try:
        from_config(value)
    except (TypeError, ValueError) as error:
        return str(error)
    return None


def _metadata_problem(name: str, value: Any) -> bool | str:
    """False when the metadata entry `name` (one of METADATA_FIELDS) has its documented
    form; else True, or what is wrong with it when there is more to say than the form."""
    if name in ("precision", "loss_scaler"):
        from convnet_core import precision

        kind = precision.Policy if name == "precision" else precision.DynamicLossScaler
        return _config_problem(kind.from_config, value) or False
    if name == "epoch":
        return not (_is_int(value) and value >= 0)
    if name == "history":
        return not (
            isinstance(value, dict)
            and all(
                isinstance(values, list) and all(v is None or _is_number(v) for v in values)
                for values in value.values()
            )
        )
    if name == "loss_name":
        return not (value is None or (isinstance(value, str) and value != ""))
    if name == "rng_state":
        return value is not None and not (
            isinstance(value, dict)
            and set(value) == {"seed"}
            and (value["seed"] is None or (_is_int(value["seed"]) and value["seed"] >= 0))
        )
    if name == "best_epoch":
        return value is not None and not (_is_int(value) and value >= 1)
    if name == "checkpoint":
        return value is not None and not (
            isinstance(value, dict)
            and set(value) == {"monitor", "mode", "best", "epoch"}
            and isinstance(value["monitor"], str)
            and value["mode"] in ("min", "max")
            and (value["best"] is None or _is_number(value["best"]))
            and _is_int(value["epoch"])
            and value["epoch"] >= 0
        )
    return False


def _check_metadata(metadata: Any) -> str | None:
    """None when `metadata` (as JSON gives it back) is an object whose entries defined by
    the format (METADATA_FIELDS) have their documented form, else the problem."""
    if not isinstance(metadata, dict):
        return "metadata is not a JSON object"
    for name, form in METADATA_FIELDS.items():
        problem = _metadata_problem(name, metadata[name]) if name in metadata else False
        if problem:
            detail = f" ({problem})" if isinstance(problem, str) else ""
            return f"metadata {name!r} must be {form}, not {_short(metadata[name])}{detail}"
    return None


def _check_precision(metadata: dict, params_encoded) -> str | None:
    """None unless the metadata's mixed-precision policy keeps its master weights in
    another dtype than the params have (its form is checked by `_check_metadata`)."""
    if metadata.get("precision") is None:
        return None
    from convnet_core import precision

    policy = precision.Policy.from_config(metadata["precision"])
    dtype = _first_float_dtype(params_encoded[1])
    if policy.mixed and numpy.dtype(policy.param_dtype) != dtype:  # host
        return (
            f"metadata 'precision' keeps the master weights in {policy.param_dtype}, but the "
            f"params are {dtype}"
        )
    return None


# ---------------------------------------------------------------------------------------
# Loading


def _json_attribute(path: str, attributes: dict[str, Any], group: str, name: str) -> Any:
    where = f"{group}/{name}" if group else name
    if name not in attributes:
        raise ModelFormatError(path, f"the attribute {where!r} is missing")
    value = attributes[name]
    if not isinstance(value, str):
        raise ModelFormatError(path, f"the attribute {where!r} is not a JSON string")
    try:
        return json.loads(value)
    except json.JSONDecodeError as error:
        problem = f"the attribute {where!r} is not valid JSON: {error}"
        raise ModelFormatError(path, problem) from None
    except RecursionError:
        problem = f"the attribute {where!r} is JSON nested too deeply to read"
        raise ModelFormatError(path, problem) from None


def _input_shape(path: str, value: Any) -> tuple[int, ...] | None:
    if value is None:
        return None
    if not (
        isinstance(value, list)
        and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in value)
    ):
        raise ModelFormatError(path, f"input_shape {value!r} is not a list of positive ints")
    return tuple(value)


def _layer(path: str, architecture: Any) -> Any:
    from convnet_core.layers import UnknownLayerError, layer_from_config

    try:
        return layer_from_config(architecture)
    except UnknownLayerError as error:  # the file is fine: its class must be imported first
        raise ModelFormatError(path, str(error)) from None
    except ValueError as error:
        raise ModelFormatError(path, f"bad architecture: {error}") from None
    except Exception as error:  # the file is intact (checked): its content is wrong
        problem = f"bad architecture ({type(error).__name__}: {error})"
        raise ModelFormatError(path, problem) from error


def load(path: str | bytes | os.PathLike, *, parts: bool = False, input_shape=None, device=None):
    """Load a model file written by `save` (or by ConvNet-NumPy, converted).

    Returns a `convnet_core.Model` on `device` ("auto" when None, "cpu", "cuda" or an
    array module, as `Model(device=...)` takes it), or with `parts=True` a `SavedModel` of
    host NumPy arrays. `input_shape` (per sample, channels first) is needed only for files
    that did not store one: ConvNet-NumPy files default to MNIST's (1, 28, 28).

    Raises ModelFormatError (a ValueError) naming the file and the problem for anything
    wrong with the file, FileNotFoundError when there is no file.
    """
    if parts and device is not None:
        raise ValueError("load: device is for a Model; parts=True gives host NumPy arrays")
    saved = read_model(path, input_shape=input_shape)
    if parts:
        return saved
    if saved.input_shape is None:
        raise ModelFormatError(
            path,
            "the file holds no input shape, which a Model needs: load(path, "
            "input_shape=(C, H, W)), or load(path, parts=True) for the parts",
        )
    return saved.to_model(device)


def read_model(path: str | bytes | os.PathLike, *, input_shape=None) -> SavedModel:
    """The `SavedModel` in `path` (see `load`)."""
    path = resolve_path(path)
    kind = _sniff(path)
    try:
        with storage.open_reader(path, kind) as reader:
            attributes = reader.attributes()
            if attributes.get("", {}).get("format") != FORMAT_NAME:
                from . import legacy

                if legacy.is_legacy(path, reader):
                    return legacy.read(path, reader, input_shape=input_shape)
                raise ModelFormatError(path, _not_convnet(reader, attributes.get("", {})))
            return _read_v1(path, reader, attributes, input_shape)
    except (ModelFormatError, ImportError):
        raise
    except Exception as error:
        raise ModelFormatError(path, _describe(error)) from error


def _some(names: list[str], shown: int = 3) -> str:
    """'a', 'b', 'c' and 2 more; or none."""
    if not names:
        return "none"
    text = ", ".join(map(repr, names[:shown]))
    return text + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _not_convnet(reader: storage.Reader, root: dict[str, Any]) -> str:
    """Why a file whose root has no format attribute "convnet" is not one, and what it
    holds instead."""
    if "format" not in root:
        why = "no 'format' attribute at the root"
    else:
        value = root["format"]
        shown = value if isinstance(value, storage.ForeignAttribute) else repr(value)
        why = f"its root attribute 'format' is {shown}, not {FORMAT_NAME!r}"
    return (
        f"not a convnet model file ({why}; root attributes: {_some(sorted(root))}; "
        f"arrays: {_some(reader.array_paths())})"
    )


def _foreign_attribute(attributes: dict[str, dict[str, Any]]) -> str | None:
    """The problem with the first attribute that convnet never writes, or None."""
    for group, values in attributes.items():
        for name, value in values.items():
            if isinstance(value, storage.ForeignAttribute):
                where = f"{group}/{name}" if group else name
                return (
                    f"the attribute {where!r} holds {value}; a convnet model file holds only "
                    "str and int attributes"
                )
    return None


def _read_v1(path: str, reader: storage.Reader, attributes, input_shape) -> SavedModel:
    root = attributes[""]
    problem = _foreign_attribute(attributes)
    if problem:
        raise ModelFormatError(path, problem)
    version = root.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise ModelFormatError(path, f"bad format_version {version!r}")
    if version > FORMAT_VERSION:
        raise ModelFormatError(
            path,
            f"format_version {version} is newer than this convnet-io {__version__} reads "
            f"(up to {FORMAT_VERSION}); upgrade convnet-io",
        )
    if "checksum" not in root:
        raise ModelFormatError(path, "the checksum attribute is missing")

    # Read every array (sizes bounded by the file), then prove nothing changed.
    arrays = {key: reader.read(key) for key in reader.array_paths()}
    if checksum(attributes, arrays) != root["checksum"]:
        raise ModelFormatError(path, "checksum mismatch: the file is corrupted")
    arrays = {key: _native(value) for key, value in arrays.items()}  # the sum is as stored

    layer = _layer(path, _json_attribute(path, root, "", "architecture"))
    stored_shape = _input_shape(path, _json_attribute(path, root, "", "input_shape"))
    if input_shape is not None and stored_shape is not None:
        if tuple(input_shape) != stored_shape:
            raise ModelFormatError(
                path, f"saved for input shape {stored_shape}, not {tuple(input_shape)}"
            )
    shape = stored_shape if stored_shape is not None else input_shape
    metadata = _json_attribute(path, root, "", "metadata")
    problem = _check_metadata(metadata)
    if problem:
        raise ModelFormatError(path, problem)

    groups = ["params", "state"]
    optimizer_config = None
    if "optimizer" in attributes:
        optimizer_config = _json_attribute(path, attributes["optimizer"], "optimizer", "config")
        if optimizer_config is not None and not isinstance(optimizer_config, dict):
            raise ModelFormatError(path, "the optimizer config is not a JSON object")
        if "optimizer/state" in attributes:
            groups.append("optimizer/state")
    if "best/params" in attributes or "best/state" in attributes:
        groups += ["best/params", "best/state"]

    trees: dict[str, tuple[Any, dict[str, numpy.ndarray]]] = {}
    described: set[str] = set()
    for group in groups:
        if group not in attributes:
            raise ModelFormatError(path, f"the group {group!r} is missing")
        structure = _json_attribute(path, attributes[group], group, "tree")
        try:
            paths = treedef.leaf_paths(structure)
        except ValueError as error:
            raise ModelFormatError(path, f"{group}: bad tree structure: {error}") from None
        missing = [p for p in paths if f"{group}/{p}" not in arrays]
        if missing:
            raise ModelFormatError(path, f"{group}: arrays missing from the file: {missing}")
        trees[group] = (structure, {p: arrays[f"{group}/{p}"] for p in paths})
        described.update(f"{group}/{p}" for p in paths)
    extra = sorted(set(arrays) - described)
    if extra:
        raise ModelFormatError(path, f"arrays the file does not describe: {extra}")

    problem = _check_parts(layer, shape, trees["params"], trees["state"])
    problem = problem or _check_precision(metadata, trees["params"])
    problem = problem or _check_best(layer, shape, metadata, trees)
    if problem:
        raise ModelFormatError(path, problem)

    rebuilt = {group: treedef.decode(*trees[group]) for group in trees}
    if optimizer_config is not None:
        problem = _check_optimizer(
            optimizer_config, rebuilt["params"], trees.get("optimizer/state")
        )
        if problem:
            raise ModelFormatError(path, problem)
    return SavedModel(
        layer=layer,
        params=rebuilt["params"],
        state=rebuilt["state"],
        input_shape=shape,
        optimizer=optimizer_config,
        optimizer_state=rebuilt.get("optimizer/state"),
        metadata=metadata,
        source=FORMAT_NAME,
        best_weights=(
            None
            if "best/params" not in rebuilt
            else (metadata["best_epoch"], rebuilt["best/params"], rebuilt["best/state"])
        ),
    )


# ---------------------------------------------------------------------------------------
# Parts -> Model


def _to_model(saved: SavedModel, device=None):
    try:
        from convnet_core import Model
    except ImportError as error:  # pragma: no cover - depends on the core version
        raise ImportError(
            "loading as a Model needs convnet_core.Model; use load(path, parts=True)"
        ) from error
    from convnet_core.layers import Sequential

    if saved.input_shape is None:
        raise ValueError(
            "this file was saved without an input shape, which a Model needs: "
            "load(path, input_shape=(C, H, W)), or load(path, parts=True) for the parts"
        )
    network, params, state = saved.layer, saved.params, saved.state
    opt_state = saved.optimizer_state
    if not isinstance(network, Sequential):  # a Model always holds a Sequential
        network, params, state, opt_state = Sequential((network,)), (params,), (state,), None
    optimizer = None
    if saved.optimizer is not None:
        from convnet_core import optim

        optimizer = optim.from_config(saved.optimizer)
    metadata = saved.metadata
    model = Model.from_parts(
        network,
        params,
        state,
        saved.input_shape,
        optimizer=optimizer,
        opt_state=opt_state if optimizer is not None else None,
        loss_name=metadata.get("loss_name"),
        history=metadata.get("history"),
        epoch=int(metadata.get("epoch", 0) or 0),
        device=device,
        precision=metadata.get("precision"),
        loss_scaler=metadata.get("loss_scaler"),
    )
    rng_state = metadata.get("rng_state")
    if rng_state is not None and hasattr(model, "set_rng_state"):
        model.set_rng_state(rng_state)
    return model
