"""What `save` writes, `load` takes as it is, and what `load` refuses, `save` refuses
first: float16 weights, big-endian arrays."""

import convnet_io
import numpy
import pytest
from convnet_core import init, tree
from convnet_core import layers as L
from convnet_io import ModelFormatError
from convnet_io import format as fmt

NET = L.Sequential((L.Conv2D(2, (3, 3)), L.BatchNorm2D(), L.Flatten(), L.Dense(3)))
SHAPE = (1, 4, 4)
NARROW = (
    "params/0/W is float16, too narrow for a model's weights (float32 or wider): float16 "
    "weights lose most updates. For float16 compute keep float32 params and use mixed "
    "precision (compile(precision='mixed'))"
)


def parts(dtype=numpy.float32):
    params, state = init(NET, SHAPE, rng=0)
    return tuple(tree.map(lambda a: a.astype(dtype), t) for t in (params, state))


@pytest.mark.parametrize("suffix", [".h5", ".npz"])
def test_float16_weights_are_refused_by_save_before_writing(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    params, state = parts(numpy.float16)
    with pytest.raises(ValueError) as info:
        convnet_io.save(path, layer=NET, params=params, state=state, input_shape=SHAPE)
    assert str(info.value) == f"not saving {path}: {NARROW}"
    assert not path.exists()


@pytest.mark.parametrize("suffix", [".h5", ".npz"])
def test_a_file_of_float16_weights_is_refused_naming_it(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    params, state = parts()
    convnet_io.save(path, layer=NET, params=params, state=state, input_shape=SHAPE)
    attributes, arrays = fmt.read_raw(path)
    narrowed = {key: value.astype(numpy.float16) for key, value in arrays.items()}
    fmt.write_raw(path, attributes, narrowed, container="npz" if suffix == ".npz" else None)
    for load in (convnet_io.load, lambda p: convnet_io.load(p, parts=True)):
        with pytest.raises(ModelFormatError) as info:
            load(path)
        assert str(info.value) == f"{path}: {NARROW}"
