"""Small pytree helpers.

A pytree here is a nest of dicts, tuples and lists whose leaves are arrays (or scalars).
Parameters, state, gradients and optimizer state are all pytrees, so one set of helpers
maps, flattens and rebuilds them all.

    >>> params = ({"W": 1.0, "b": 2.0}, {}, {"W": 3.0})
    >>> flatten(params)
    {'0/W': 1.0, '0/b': 2.0, '2/W': 3.0}
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

SEPARATOR = "/"


def is_node(value: Any) -> bool:
    """True for the containers a pytree is built from (dict, tuple, list)."""
    return isinstance(value, (dict, tuple, list))


class _StructureDiffers(Exception):
    """Raised inside `map` where a tree of `rest` differs; `map` then says where and how."""


def map(fn: Callable[..., Any], tree: Any, *rest: Any) -> Any:
    """Apply `fn` to every leaf of `tree` (and the matching leaves of `rest`).

    The result has the structure of `tree`; every tree in `rest` must have that structure:
    the same dict keys, a tuple where it has a tuple and a list where it has a list, as
    long, and a leaf where it has a leaf. Anything else is a ValueError naming the path of
    the first difference and what differs. The check compares keys, types and lengths of
    the containers only, node by node as the trees are mapped.
    """
    try:
        return _map(fn, tree, rest)
    except _StructureDiffers:
        raise ValueError(_structure_difference(tree, rest)) from None


def _map(fn: Callable[..., Any], tree: Any, rest: tuple | list) -> Any:
    """`map`, raising _StructureDiffers at a node where a tree of `rest` differs."""
    if isinstance(tree, dict):
        for other in rest:
            if not isinstance(other, dict) or other.keys() != tree.keys():
                raise _StructureDiffers
        return {key: _map(fn, child, [other[key] for other in rest]) for key, child in tree.items()}
    if isinstance(tree, (tuple, list)):
        kind = _container(tree)
        for other in rest:
            if _container(other) is not kind or len(other) != len(tree):
                raise _StructureDiffers
        children = zip(tree, *rest)  # noqa: B905 (lengths just compared)
        return type(tree)([_map(fn, items[0], items[1:]) for items in children])
    for other in rest:
        if is_node(other):
            raise _StructureDiffers
    return fn(tree, *rest)


def _structure_difference(tree: Any, rest: tuple) -> str:
    """The first difference between `tree` and the trees of `rest`, in words: "tree.map:
    tree 2 differs from tree 1 at '0/W': tree 2 has the key 'b', which tree 1 lacks"."""
    for number, other in enumerate(rest, start=2):
        found = _node_difference(tree, other, (), number)
        if found is not None:
            return f"tree.map: tree {number} differs from tree 1 {found}"
    return "tree.map: the trees differ"  # not reached: _map found a difference


def _node_difference(node: Any, other: Any, path: tuple, number: int) -> str | None:
    """Where and how `other` (of tree `number`) first differs from `node` (of tree 1)."""
    where = f"at '{_path(path)}'" if path else "at the root"
    if not is_node(node) and not is_node(other):
        return None
    if _container(node) != _container(other):
        return f"{where}: tree {number} has {_outline(other)}, tree 1 {_outline(node)}"
    if isinstance(node, dict):
        missing = [key for key in node if key not in other]
        if missing:
            return f"{where}: tree {number} has no key {missing[0]!r}"
        extra = [key for key in other if key not in node]
        if extra:
            return f"{where}: tree {number} has the key {extra[0]!r}, which tree 1 lacks"
        children = [(key, node[key], other[key]) for key in node]
    else:
        if len(other) != len(node):
            return f"{where}: tree {number} has {_outline(other)}, tree 1 {_outline(node)}"
        children = list(zip(range(len(node)), node, other, strict=True))
    for key, child, other_child in children:
        found = _node_difference(child, other_child, (*path, key), number)
        if found is not None:
            return found
    return None


def _container(value: Any) -> type | None:
    """dict, tuple or list for a node (by the kind of container it is), None for a leaf."""
    for kind in (dict, tuple, list):
        if isinstance(value, kind):
            return kind
    return None


def _outline(value: Any) -> str:
    """A node or leaf in a few words: "a dict", "a tuple of 3", "a leaf"."""
    if isinstance(value, dict):
        return "a dict"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return "a leaf"


def leaves(tree: Any) -> list[Any]:
    """The leaves of `tree` in a fixed order (dict insertion order, sequence order)."""
    return [leaf for _, leaf in _walk(tree, ())]


def _walk(tree: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(tree, dict):
        for key, child in tree.items():
            yield from _walk(child, (*path, str(key)))
    elif isinstance(tree, (tuple, list)):
        for index, child in enumerate(tree):
            yield from _walk(child, (*path, str(index)))
    else:
        yield path, tree


def flatten(tree: Any) -> dict[str, Any]:
    """A flat dict from "0/W"-style paths to leaves. Empty containers vanish."""
    return {SEPARATOR.join(path): leaf for path, leaf in _walk(tree, ())}


def structure(tree: Any) -> Any:
    """The shape of `tree` with every leaf replaced by None (for comparing and rebuilding)."""
    return map(lambda _: None, tree)


def unflatten(template: Any, flat: dict[str, Any]) -> Any:
    """Rebuild a tree shaped like `template` from `flat` (as made by `flatten`).

    Raises KeyError naming the first path missing from `flat`.
    """

    def build(node: Any, path: tuple[str, ...]) -> Any:
        if isinstance(node, dict):
            return {key: build(child, (*path, str(key))) for key, child in node.items()}
        if isinstance(node, (tuple, list)):
            return type(node)(build(child, (*path, str(i))) for i, child in enumerate(node))
        key = SEPARATOR.join(path)
        if key not in flat:
            raise KeyError(f"no value for {key!r}")
        return flat[key]

    return build(template, ())


def size(tree: Any) -> int:
    """Total number of scalars held in the leaves of `tree`."""
    total = 0
    for leaf in leaves(tree):
        total += int(getattr(leaf, "size", 1))
    return total


def grad_mismatch(params: Any, grads: Any, *, dtypes: bool = False) -> str | None:
    """How `grads` fails to be shaped like `params`, in words; None when it is shaped so.

    Gradients must have the parameters' structure (the same dict keys, as many entries in
    each tuple or list) and, leaf by leaf, the same shape, and with `dtypes` the same
    dtype (a Python number has none and passes). The words name the path of the first
    difference ("1/W") and what differs, both shapes or dtypes for a leaf, e.g. "the
    gradient of parameter '1/s' has shape (16,) but the parameter has shape (1,)". Shapes
    and dtypes are read on the host (no device value is read).
    """
    if _matches(params, grads, dtypes):
        return None
    return _mismatch(params, grads, (), ("gradient", "gradients"), dtypes=dtypes)


def slot_mismatch(params: Any, values: Any, slot: str) -> str | None:
    """How an optimizer's state slot `slot` (one value per parameter, e.g. Adam's "m")
    fails to match `params`, in words; None when it matches.

    The slot must have the parameters' structure and, leaf by leaf, their shape and dtype:
    e.g. "the value in slot 'm' of parameter '0/W' has shape (5, 4) but the parameter has
    shape (3, 4)". Shapes and dtypes are read on the host (no device value is read).
    """
    if _matches(params, values, dtypes=True):
        return None
    nouns = (f"value in slot {slot!r}", f"values in slot {slot!r}")
    return _mismatch(params, values, (), nouns, dtypes=True)


def _matches(param: Any, other: Any, dtypes: bool) -> bool:
    """Whether `other` has the parameters' structure and, leaf by leaf, their shapes (and
    dtypes): the quick yes or no that runs at every training step. `_mismatch` then says
    what differs, building the words and paths only for a difference."""
    if isinstance(param, dict):
        if not isinstance(other, dict) or other.keys() != param.keys():
            return False
        for key, value in param.items():
            if not _matches(value, other[key], dtypes):
                return False
        return True
    if isinstance(param, (tuple, list)):
        if not isinstance(other, (tuple, list)) or len(other) != len(param):
            return False
        for value, other_value in zip(param, other):  # noqa: B905 (lengths just compared)
            if not _matches(value, other_value, dtypes):
                return False
        return True
    if other is None or isinstance(other, (dict, tuple, list)):
        return False
    if getattr(param, "shape", ()) != getattr(other, "shape", ()):
        return False
    if dtypes:
        want, got = getattr(param, "dtype", None), getattr(other, "dtype", None)
        return got == want or want is None or got is None  # a Python number has none
    return True


def _mismatch(
    param: Any, other: Any, path: tuple[str, ...], nouns: tuple[str, str], dtypes: bool
) -> str | None:
    """The first difference between `other` and the parameters, in words built from
    `nouns` (what `other` holds: singular, plural); dtypes compared when `dtypes`."""
    # the words are only put together for a difference: this runs at every training step
    one, many = nouns
    if isinstance(param, dict):
        if not isinstance(other, dict):
            return f"the {many}{_at(path)} are {_kind(other)} but the parameters are a dict"
        if other.keys() != param.keys():
            missing = [key for key in param if key not in other]
            if missing:
                return f"no {one} for parameter '{_path(path, missing[0])}'"
            extra = next(key for key in other if key not in param)
            return f"a {one} for '{_path(path, extra)}', which is not a parameter"
        children = [(key, param[key], other[key]) for key in param]
    elif isinstance(param, (tuple, list)):
        if not isinstance(other, (tuple, list)):
            return f"the {many}{_at(path)} are {_kind(other)} but the parameters are a sequence"
        if len(other) != len(param):
            return f"the {many}{_at(path)} are {_kind(other)} but the parameters {_kind(param)}"
        children = list(zip(range(len(param)), param, other, strict=True))
    else:
        return _leaf_mismatch(param, other, path, one, dtypes)
    for key, p, o in children:
        found = _mismatch(p, o, (*path, key), nouns, dtypes)
        if found is not None:
            return found
    return None


def _leaf_mismatch(param: Any, other: Any, path: tuple, one: str, dtypes: bool) -> str | None:
    if other is None or is_node(other):
        return f"the {one}{_of(path)} is {_kind(other)}, not an array"
    want, got = _shape(param), _shape(other)
    if got != want:
        return f"the {one}{_of(path)} has shape {got} but the parameter has shape {want}"
    if dtypes:
        want, got = getattr(param, "dtype", None), getattr(other, "dtype", None)
        if got != want and want is not None and got is not None:  # a Python number has none
            return f"the {one}{_of(path)} has dtype {got} but the parameter has dtype {want}"
    return None


def _path(path: tuple, key: Any = None) -> str:
    keys = path if key is None else (*path, key)
    return SEPARATOR.join(str(k) for k in keys)


def _at(path: tuple) -> str:
    return f" at '{_path(path)}'" if path else ""


def _of(path: tuple) -> str:
    return f" of parameter '{_path(path)}'" if path else ""


def _shape(leaf: Any) -> tuple[int, ...]:
    """A leaf's shape: an array's, () for a Python number."""
    return tuple(getattr(leaf, "shape", ()))


def _kind(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, dict):
        return "a dict"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return f"an array of shape {_shape(value)}"
