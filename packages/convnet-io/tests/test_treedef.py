"""Pytree structure descriptions: any tree of dicts, tuples, lists and arrays comes back."""

import json

import numpy
import pytest
from convnet_io import treedef
from convnet_io_helpers import assert_same_tree
from hypothesis import given, settings
from hypothesis import strategies as st

keys = st.text(max_size=6)
arrays = st.builds(
    lambda shape, dtype, seed: numpy.random.default_rng(seed).normal(size=shape).astype(dtype),
    st.lists(st.integers(0, 3), max_size=3).map(tuple),
    st.sampled_from(["float32", "float64", "int32", "bool"]),
    st.integers(0, 2**32 - 1),
)
leaves = st.one_of(
    arrays,
    st.none(),
    st.integers(-5, 5),
    st.floats(allow_nan=False),
    arrays.map(lambda a: a.reshape(-1)[:1].reshape(()) if a.size else a),
)
trees = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.dictionaries(keys, children, max_size=4),
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(trees)
def test_encode_decode_round_trip(tree):
    structure, flat = treedef.encode(tree)
    structure = json.loads(json.dumps(structure))  # what the file stores
    assert treedef.leaf_paths(structure) == list(flat)
    assert_same_tree(treedef.decode(structure, flat), tree)


@given(st.lists(keys, min_size=2, max_size=8, unique=True))
def test_escaped_keys_stay_distinct_and_safe(names):
    escaped = [treedef.escape(name) for name in names]
    assert len(set(escaped)) == len(escaped)
    for component in escaped:
        assert component and "/" not in component and not component.startswith(".")


def test_numpy_scalars_and_arrays_are_told_apart():
    tree = {"a": numpy.float32(1.5), "b": numpy.array(1.5, "float32")}
    structure, flat = treedef.encode(tree)
    assert structure == {"dict": [["a", "scalar"], ["b", "array"]]}
    back = treedef.decode(structure, flat)
    assert isinstance(back["a"], numpy.float32) and isinstance(back["b"], numpy.ndarray)


@pytest.mark.parametrize(
    "bad", [{1: numpy.zeros(1)}, {"x": object()}, numpy.array(["text"]), {"o": numpy.array([{}])}]
)
def test_unstorable_trees_are_refused(bad):
    with pytest.raises(ValueError):
        treedef.encode(bad)


@pytest.mark.parametrize(
    "structure", [{"dict": [["a"]]}, {"set": []}, "arrays", {"tuple": "x"}, {"value": [1]}, 3]
)
def test_malformed_structures_are_refused(structure):
    with pytest.raises(ValueError):
        treedef.leaf_paths(structure)


@pytest.mark.parametrize("suffix", [".h5", ".npz"])
@settings(max_examples=25, deadline=None)
@given(tree=trees)
def test_any_tree_survives_a_file(suffix, tree):
    import os
    import tempfile

    import convnet_io
    from convnet_core import layers as L

    params = ({"W": numpy.ones((2, 2), "float32"), "b": numpy.zeros(2, "float32")},)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m" + suffix)
        convnet_io.save(
            path,
            layer=L.Sequential((L.Dense(2),)),
            params=params,
            input_shape=(2,),
            optimizer_state=tree,
        )
        saved = convnet_io.load(path, parts=True)
    if tree is None:
        assert saved.optimizer_state is None
    else:
        assert_same_tree(saved.optimizer_state, tree)
