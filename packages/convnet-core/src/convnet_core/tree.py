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


def map(fn: Callable[..., Any], tree: Any, *rest: Any) -> Any:
    """Apply `fn` to every leaf of `tree` (and the matching leaves of `rest`).

    The result has the structure of `tree`; every tree in `rest` must have that structure.
    """
    if isinstance(tree, dict):
        return {key: map(fn, tree[key], *(other[key] for other in rest)) for key in tree}
    if isinstance(tree, (tuple, list)):
        children = [map(fn, *items) for items in zip(tree, *rest, strict=True)]
        return type(tree)(children)
    return fn(tree, *rest)


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
