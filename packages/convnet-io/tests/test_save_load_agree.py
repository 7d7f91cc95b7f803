"""What `save` writes, `load` takes as it is, and what `load` refuses, `save` refuses
first: float16 weights, big-endian arrays."""

import json

import convnet_io
import numpy
import pytest
from convnet_core import backend, init, tree
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


def big_endian(a):
    return a.astype(a.dtype.newbyteorder(">"))


def check_works(model, params):
    """`model` holds `params` (values) in native float32, predicts and trains (on the
    device it was loaded to)."""
    host_params = backend.to_host(model.params)
    for got, want in zip(tree.leaves(host_params), tree.leaves(params), strict=True):
        assert got.dtype == numpy.float32 and got.dtype.isnative
        numpy.testing.assert_array_equal(got, want)
    x = numpy.random.default_rng(0).normal(size=(4, *SHAPE)).astype(numpy.float32)
    assert model.predict(x).shape == (4, 3)
    model.compile(optimizer="sgd", lr=0.01)
    model.fit((x, numpy.array([0, 1, 2, 0])), epochs=1, batch_size=4, verbose=False)
    assert model.epoch == 1


@pytest.mark.parametrize("suffix", [".h5", ".npz"])
def test_big_endian_arrays_given_to_save_are_stored_and_loaded_native(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    params, state = (tree.map(big_endian, t) for t in parts())
    convnet_io.save(path, layer=NET, params=params, state=state, input_shape=SHAPE)
    _, arrays = fmt.read_raw(path)
    assert {value.dtype.str for value in arrays.values()} == {"<f4"}
    check_works(convnet_io.load(path), params)


@pytest.mark.parametrize("which", ["every array", "one array"])
@pytest.mark.parametrize("suffix", [".h5", ".npz"])
def test_a_file_of_big_endian_arrays_loads_native(tmp_path, suffix, which):
    """As written on a big-endian machine (the checksum covers the arrays as stored)."""
    path = tmp_path / f"model{suffix}"
    params, state = parts()
    convnet_io.save(path, layer=NET, params=params, state=state, input_shape=SHAPE)
    attributes, arrays = fmt.read_raw(path)
    swapped = {
        key: big_endian(value) if which == "every array" or key == "params/3/W" else value
        for key, value in arrays.items()
    }
    fmt.write_raw(path, attributes, swapped, container="npz" if suffix == ".npz" else None)
    assert fmt.read_raw(path)[1]["params/3/W"].dtype.str == ">f4"
    check_works(convnet_io.load(path), params)


@pytest.mark.parametrize(
    ("alpha", "problem"),
    [
        (None, "must be a number, got None"),
        (1e300, "must be at most 3.403e+38 in magnitude (the largest float32), got 1e+300"),
    ],
)
def test_a_file_whose_activation_slope_is_null_or_huge_is_refused(tmp_path, alpha, problem):
    """Such a model loaded and predicted NaN."""
    net = L.Sequential((L.Flatten(), L.Dense(3), L.Activation("leaky_relu", alpha=0.2)))
    params, state = init(net, SHAPE, rng=0)
    path = tmp_path / "model.h5"
    convnet_io.save(path, layer=net, params=params, state=state, input_shape=SHAPE)
    attributes, arrays = fmt.read_raw(path)
    architecture = json.loads(attributes[""]["architecture"])
    architecture["config"]["layers"][2]["config"]["alpha"] = alpha
    attributes[""]["architecture"] = json.dumps(architecture)
    fmt.write_raw(path, attributes, arrays)
    with pytest.raises(ModelFormatError) as info:
        convnet_io.load(path)
    config = {"name": "leaky_relu", "alpha": alpha}
    assert str(info.value) == (
        f"{path}: bad architecture: cannot build Activation from {config}: Activation alpha "
        f"{problem}"
    )
