"""The pytree helpers: map, leaves, flatten with "0/W" paths, unflatten, structure, size,
and the words of slot_mismatch."""

from __future__ import annotations

import numpy
import pytest
from convnet_core import tree


def sample():
    return ({"W": numpy.ones((2, 3)), "b": numpy.zeros(3)}, {}, [numpy.arange(4.0), 5.0])


def test_flatten_paths_and_order():
    flat = tree.flatten(sample())
    assert list(flat) == ["0/W", "0/b", "2/0", "2/1"]
    assert flat["2/1"] == 5.0
    assert tree.flatten({"body": ({"W": 1},), "shortcut": {}}) == {"body/0/W": 1}


def test_unflatten_inverts_flatten_and_keeps_container_types():
    original = sample()
    rebuilt = tree.unflatten(original, {k: v * 2 for k, v in tree.flatten(original).items()})
    assert isinstance(rebuilt, tuple) and isinstance(rebuilt[2], list) and rebuilt[1] == {}
    numpy.testing.assert_array_equal(rebuilt[0]["W"], 2 * numpy.ones((2, 3)))
    assert rebuilt[2][1] == 10.0


def test_unflatten_names_a_missing_path():
    with pytest.raises(KeyError, match="0/b"):
        tree.unflatten(sample(), {"0/W": 1, "2/0": 2, "2/1": 3})


def test_map_over_several_trees():
    a, b = sample(), sample()
    summed = tree.map(lambda x, y: x + y, a, b)
    numpy.testing.assert_array_equal(summed[2][0], 2 * numpy.arange(4.0))
    with pytest.raises(ValueError):  # different lengths
        tree.map(lambda x, y: x + y, (1, 2), (1,))


def test_leaves_structure_and_size():
    assert len(tree.leaves(sample())) == 4
    assert tree.structure(sample()) == ({"W": None, "b": None}, {}, [None, None])
    assert tree.size(sample()) == 6 + 3 + 4 + 1


SLOT_MISMATCHES = [
    # (params, slot values, the words), slot "m"
    ({"W": numpy.zeros((2, 3))}, {"W": numpy.zeros((2, 3))}, None),
    (
        {"W": numpy.zeros((2, 3))},
        {"W": numpy.zeros((3, 2))},
        "the value in slot 'm' of parameter 'W' has shape (3, 2) but the parameter has "
        "shape (2, 3)",
    ),
    (
        {"W": numpy.zeros(2, "float32")},
        {"W": numpy.zeros(2, "float64")},
        "the value in slot 'm' of parameter 'W' has dtype float64 but the parameter has "
        "dtype float32",
    ),
    (
        ({"W": numpy.zeros(2)},),
        ({"W": numpy.zeros(2)}, {"W": numpy.zeros(2)}),
        "the values in slot 'm' are a tuple of 2 but the parameters a tuple of 1",
    ),
    (
        {"W": numpy.zeros(2), "b": numpy.zeros(2)},
        {"W": numpy.zeros(2)},
        "no value in slot 'm' for parameter 'b'",
    ),
    (
        [{"W": numpy.zeros(2)}],
        [{"W": numpy.zeros(2), "c": numpy.zeros(1)}],
        "a value in slot 'm' for '0/c', which is not a parameter",
    ),
    (
        [{"W": numpy.zeros(2)}],
        [None],
        "the values in slot 'm' at '0' are None but the parameters are a dict",
    ),
]


@pytest.mark.parametrize(("params", "values", "words"), SLOT_MISMATCHES)
def test_slot_mismatch_names_the_slot_and_the_parameter(params, values, words):
    assert tree.slot_mismatch(params, values, "m") == words


def test_grad_mismatch_compares_dtypes_when_asked():
    params = {"W": numpy.zeros(2, "float32"), "s": numpy.float32(1.0)}
    grads = {"W": numpy.zeros(2, "float64"), "s": 0.5}  # a Python number has no dtype
    assert tree.grad_mismatch(params, grads) is None  # shapes only (a layer's dparams)
    assert tree.grad_mismatch(params, grads, dtypes=True) == (
        "the gradient of parameter 'W' has dtype float64 but the parameter has dtype float32"
    )
    grads["W"] = numpy.zeros(2, "float32")
    assert tree.grad_mismatch(params, grads, dtypes=True) is None


MAP_DIFFERENCES = [
    # (tree 1, tree 2, the words after "tree.map: tree 2 differs from tree 1 ")
    ({"W": 1.0}, {"W": 1.0, "b": 5.0}, "at the root: tree 2 has the key 'b', which tree 1 lacks"),
    ({"W": 1.0, "b": 5.0}, {"W": 1.0}, "at the root: tree 2 has no key 'b'"),
    (
        ({"W": 1.0}, {}),
        ({"W": 1.0}, {"s": 2.0}),
        "at '1': tree 2 has the key 's', which tree 1 lacks",
    ),
    ((1.0, 2.0), [1.0, 2.0], "at the root: tree 2 has a list of 2, tree 1 a tuple of 2"),
    ((1.0, 2.0), (1.0,), "at the root: tree 2 has a tuple of 1, tree 1 a tuple of 2"),
    ({"W": 1.0}, {"W": {"x": 1.0}}, "at 'W': tree 2 has a dict, tree 1 a leaf"),
    ({"W": {"x": 1.0}}, {"W": 1.0}, "at 'W': tree 2 has a leaf, tree 1 a dict"),
    ([{"W": [1.0]}], [{"W": (1.0,)}], "at '0/W': tree 2 has a tuple of 1, tree 1 a list of 1"),
    ({"W": 1.0}, None, "at the root: tree 2 has a leaf, tree 1 a dict"),
]


@pytest.mark.parametrize("first, second, words", MAP_DIFFERENCES)
def test_map_refuses_a_tree_of_another_structure(first, second, words):
    for fn in (lambda a, b: a - b, lambda a, b, c: a - b + c):
        trees = (first, second) if fn.__code__.co_argcount == 2 else (first, first, second)
        number = len(trees)
        want = f"tree.map: tree {number} differs from tree 1 " + words.replace(
            "tree 2", f"tree {number}"
        )
        with pytest.raises(ValueError) as error:
            tree.map(fn, *trees)
        assert str(error.value) == want


def test_map_takes_dicts_with_keys_in_another_order():
    got = tree.map(lambda a, b: a - b, {"W": 3.0, "b": 5.0}, {"b": 1.0, "W": 1.0})
    assert got == {"W": 2.0, "b": 4.0} and list(got) == ["W", "b"]


def test_map_passes_errors_of_fn_through():
    def fails(a, b):
        raise ValueError("from fn")

    with pytest.raises(ValueError, match="^from fn$"):
        tree.map(fails, {"W": 1.0}, {"W": 2.0})
