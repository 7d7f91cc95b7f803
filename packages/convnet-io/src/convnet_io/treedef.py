"""Pytrees <-> (a JSON description of their structure, a flat dict of arrays).

A pytree (nested dicts, tuples and lists of arrays) is stored as two things:

- its *structure*, a JSON value that records every container exactly (dict keys in order,
  tuple versus list, empty children) and every non-array leaf:
      {"dict": [[key, child], ...]}   {"tuple": [child, ...]}   {"list": [child, ...]}
      "array" (an ndarray leaf)        "scalar" (a 0-d NumPy scalar such as numpy.float32)
      {"value": v} (a Python int, float, bool or str)   null (None)
- its *arrays*, a dict from a path ("0/W") to each array leaf, in leaf order.

Path components are dict keys escaped so that any string is a valid HDF5/NPZ name
(`escape`), or sequence indices. The structure alone says where every array goes, so
loading never has to guess from names.
"""

from __future__ import annotations

import string
from typing import Any

import numpy

__all__ = ["ARRAY_KINDS", "decode", "encode", "escape", "leaf_paths"]

#: dtype kinds an array leaf may have: bool, signed, unsigned, float, complex.
ARRAY_KINDS = "biufc"
_SAFE = set(string.ascii_letters + string.digits + "_-")
#: The path of an array that is the whole tree (no container around it).
ROOT_LEAF = "%"


def escape(key: str) -> str:
    """A dict key as a path component: letters, digits, "_" and "-" kept, the rest %XX.

    The empty key becomes "%" (never produced otherwise), so distinct keys stay distinct
    and no component is "." or starts with one.
    """
    if key == "":
        return "%"
    return "".join(c if c in _SAFE else "".join(f"%{b:02X}" for b in c.encode()) for c in key)


def _is_array(value: Any) -> bool:
    return isinstance(value, numpy.ndarray) or hasattr(value, "__cuda_array_interface__")


def _host(value: Any) -> numpy.ndarray:
    """A NumPy copy of an array leaf (CuPy arrays are copied from the device)."""
    if hasattr(value, "__cuda_array_interface__"):
        value = value.get()
    return numpy.asarray(value)


def _join(prefix: str, component: str) -> str:
    return component if not prefix else f"{prefix}/{component}"


def encode(tree: Any) -> tuple[Any, dict[str, numpy.ndarray]]:
    """(structure, arrays) of `tree`; arrays are host NumPy arrays keyed by path.

    Raises ValueError for leaves that cannot be stored (objects, strings in arrays) and
    for dict keys that are not strings.
    """
    arrays: dict[str, numpy.ndarray] = {}

    def visit(node: Any, path: str) -> Any:
        if isinstance(node, dict):
            items = []
            for key, child in node.items():
                if not isinstance(key, str):
                    raise ValueError(f"pytree dict keys must be strings, got {key!r} at {path!r}")
                items.append([key, visit(child, _join(path, escape(key)))])
            return {"dict": items}
        if isinstance(node, (tuple, list)):
            children = [visit(child, _join(path, str(i))) for i, child in enumerate(node)]
            return {"tuple" if isinstance(node, tuple) else "list": children}
        if node is None:
            return None
        if isinstance(node, (bool, int, float, str)):
            return {"value": node}
        if _is_array(node) or isinstance(node, numpy.generic):
            array = _host(node)
            if array.dtype.kind not in ARRAY_KINDS:
                raise ValueError(f"cannot store an array of dtype {array.dtype} at {path!r}")
            arrays[path or ROOT_LEAF] = array
            return "scalar" if isinstance(node, numpy.generic) else "array"
        raise ValueError(f"cannot store a {type(node).__name__} leaf at {path!r}")

    structure = visit(tree, "")
    return structure, arrays


def leaf_paths(structure: Any) -> list[str]:
    """The paths of the array leaves of `structure`, in leaf order.

    Raises ValueError when `structure` is not a valid structure description.
    """
    paths: list[str] = []
    _walk(structure, "", paths.append)
    return paths


def _walk(node: Any, path: str, on_leaf) -> None:
    if node in ("array", "scalar"):
        on_leaf(path or ROOT_LEAF)
    elif node is None:
        pass
    elif isinstance(node, dict) and len(node) == 1:
        ((kind, body),) = node.items()
        if kind == "dict" and isinstance(body, list):
            for item in body:
                if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
                    raise ValueError(f"bad dict entry {item!r} at {path!r}")
                _walk(item[1], _join(path, escape(item[0])), on_leaf)
        elif kind in ("tuple", "list") and isinstance(body, list):
            for i, child in enumerate(body):
                _walk(child, _join(path, str(i)), on_leaf)
        elif kind == "value" and isinstance(body, (bool, int, float, str)):
            pass
        else:
            raise ValueError(f"bad structure node {node!r} at {path!r}")
    else:
        raise ValueError(f"bad structure node {node!r} at {path!r}")


def decode(structure: Any, arrays: dict[str, numpy.ndarray]) -> Any:
    """Rebuild the pytree from `structure` and `arrays` (as made by `encode`).

    Raises ValueError for a malformed structure and KeyError for a missing array.
    """

    def build(node: Any, path: str) -> Any:
        if node == "array":
            return arrays[path or ROOT_LEAF]
        if node == "scalar":
            return arrays[path or ROOT_LEAF][()]
        if node is None:
            return None
        if not (isinstance(node, dict) and len(node) == 1):
            raise ValueError(f"bad structure node {node!r} at {path!r}")
        ((kind, body),) = node.items()
        if kind == "dict":
            return {key: build(child, _join(path, escape(key))) for key, child in body}
        if kind == "tuple":
            return tuple(build(child, _join(path, str(i))) for i, child in enumerate(body))
        if kind == "list":
            return [build(child, _join(path, str(i))) for i, child in enumerate(body)]
        if kind == "value":
            return body
        raise ValueError(f"bad structure node {node!r} at {path!r}")

    leaf_paths(structure)  # validates the whole description first
    return build(structure, "")
