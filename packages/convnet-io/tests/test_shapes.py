"""The data-less init gives what the real one gives, in a few bytes per array."""

import numpy
import pytest
from convnet_core import init
from convnet_core import layers as L
from convnet_io import shapes, treedef
from convnet_io_helpers import NETS


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    ("net", "shape"), [(n, s) for _, n, s in NETS], ids=[n for n, _, _ in NETS]
)
def test_every_layer_gets_the_real_structure_shapes_and_dtypes(net, shape, dtype):
    for real, abstract in zip(
        init(net, shape, rng=0, dtype=dtype), shapes.init_shapes(net, shape, dtype), strict=True
    ):
        real_structure, real_leaves = treedef.encode(real)
        structure, leaves = treedef.encode(abstract)
        assert structure == real_structure and list(leaves) == list(real_leaves)
        for key, leaf in leaves.items():
            assert (leaf.shape, leaf.dtype) == (real_leaves[key].shape, real_leaves[key].dtype)
            assert all(stride == 0 for stride in leaf.strides)  # one element, broadcast


def test_sizes_no_machine_holds_cost_nothing_or_are_refused():
    params, _ = shapes.init_shapes(L.Dense(10**12), (1000,), "float32")
    assert params["W"].shape == (1000, 10**12) and params["W"].strides == (0, 0)
    with pytest.raises(shapes.ImpossibleShape, match="cannot exist"):
        shapes.init_shapes(L.Dense(10**18), (10**6,), "float32")
    with pytest.raises(L.ShapeError):
        shapes.init_shapes(L.Sequential((L.Conv2D(2, (3, 3)),)), (4,), "float32")


def test_a_layer_that_writes_into_its_arrays_needs_data():
    class Writes:
        def init(self, input_shape, rng, *, xp, dtype):
            w = xp.zeros(input_shape, dtype)
            w[0] = numpy.float32(1)
            return {"w": w}, {}

    with pytest.raises(shapes.NeedsData, match="read-only"):
        shapes.init_shapes(Writes(), (3,), "float32")
