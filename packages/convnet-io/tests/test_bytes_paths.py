"""Every function that takes a path takes bytes as well (as `open` and `os` do)."""

import os

import convnet_io
import numpy
import pytest
from convnet_core import Model
from convnet_core import layers as L
from convnet_core.backend import to_host
from convnet_io import ModelFormatError
from convnet_io import format as fmt


def small_model():
    model = Model([L.Flatten(), L.Dense(3)], seed=0).build((1, 4, 4))
    model.compile()
    return model


@pytest.mark.parametrize("suffix", [".h5", ".npz", ""])
def test_save_and_load_take_bytes_paths(tmp_path, suffix):
    model = small_model()
    path = os.fsencode(tmp_path / f"mödel{suffix}")
    model.save(path)
    loaded = Model.load(path)
    assert numpy.array_equal(to_host(loaded.params[1]["W"]), to_host(model.params[1]["W"]))
    assert convnet_io.load(path, parts=True).input_shape == (1, 4, 4)
    assert fmt.resolve_path(path) == os.fsdecode(path)
    assert sorted(os.listdir(tmp_path)) == [f"mödel{suffix}"]


def test_errors_name_a_bytes_path_as_text(tmp_path):
    path = tmp_path / "bad.npz"
    numpy.savez(path, x=numpy.zeros(3))
    with pytest.raises(ModelFormatError) as info:
        convnet_io.load(os.fsencode(path), parts=True)
    assert info.value.path == str(path)
    assert str(info.value).startswith(f"{path}: not a convnet model file")


def test_checkpoint_takes_a_bytes_path(tmp_path):
    checkpoint = convnet_io.Checkpoint(os.fsencode(tmp_path / "ckpt-{epoch}.h5"))
    assert checkpoint.path == str(tmp_path / "ckpt-{epoch}.h5")


def test_a_path_of_another_type_is_a_type_error(tmp_path):
    with pytest.raises(TypeError, match="expected str, bytes or os.PathLike object, not int"):
        small_model().save(3)
