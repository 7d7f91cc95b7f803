"""A checkpoint saved for one input shape does not silently reshape a model built for
another: load_checkpoint, given the model's shape, names the checkpoint and both shapes."""

import convnet_io
import pytest
from convnet_core import Model
from convnet_core import layers as L


def checkpoint(tmp_path):
    model = Model([L.Flatten(), L.Dense(3)], seed=0)
    model.build((1, 4, 4))
    path = tmp_path / "ckpt.h5"
    model.save(path)
    return path


def test_a_checkpoint_of_another_input_shape_is_refused_naming_both(tmp_path):
    path = checkpoint(tmp_path)
    with pytest.raises(ValueError) as info:
        convnet_io.load_checkpoint(path, input_shape=(1, 8, 8))
    assert str(info.value) == (
        f"{path}: the checkpoint was saved for input shape (1, 4, 4), but the model "
        "resuming from it is built for (1, 8, 8)"
    )


@pytest.mark.parametrize("shape", [None, (1, 4, 4), [1, 4, 4]])
def test_the_same_shape_or_none_loads(tmp_path, shape):
    path = checkpoint(tmp_path)
    assert convnet_io.load_checkpoint(path, input_shape=shape)["input_shape"] == (1, 4, 4)


def test_fit_resuming_a_built_model_from_another_shape_names_the_checkpoint(tmp_path):
    """The model is built for 8x8 inputs and the checkpoint holds a 4x4 run: the error
    names the checkpoint, not the 8x8 batches, and the model keeps its own shape."""
    import numpy as np

    path = checkpoint(tmp_path)
    model = Model([L.Flatten(), L.Dense(3)], seed=0)
    model.compile(loss="categorical_crossentropy", optimizer="adam", lr=1e-2)
    model.build((1, 8, 8))
    x, y = np.ones((8, 1, 8, 8), np.float32), np.arange(8) % 3
    with pytest.raises(ValueError, match=r"ckpt\.h5: the checkpoint was saved for input shape"):
        model.fit((x, y), epochs=2, verbose=False, resume_from=path)
    assert model.input_shape == (1, 8, 8)
