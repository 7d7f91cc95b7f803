"""The committed files of each format version still load and predict their pinned outputs.

The files come from golden/make_golden.py; they are never regenerated for a version that
already exists, so a change that breaks reading old files fails here.
"""

import pathlib

import convnet_io
import numpy
import pytest
from convnet_core import Model, apply, optim, precision
from convnet_core import layers as L
from convnet_io_helpers import assert_same_tree

GOLDEN = pathlib.Path(__file__).parent / "golden"


@pytest.fixture(scope="module")
def pinned():
    with numpy.load(GOLDEN / "model_v1_io.npz", allow_pickle=False) as z:
        return z["inputs"], z["outputs"]


@pytest.mark.parametrize("name", ["model_v1.h5", "model_v1.npz"])
def test_golden_file_loads_and_predicts_the_pinned_outputs(name, pinned):
    inputs, outputs = pinned
    saved = convnet_io.load(GOLDEN / name, parts=True)
    assert saved.input_shape == (1, 8, 8)
    assert isinstance(saved.layer, L.Sequential) and len(saved.layer.layers) == 12
    assert saved.layer.layers[3] == L.Residual(
        L.Sequential((L.Conv2D(4, (3, 3)), L.Activation("leaky_relu", 0.1)))
    )
    assert optim.from_config(saved.optimizer) == optim.adam(lr=1e-3)
    assert saved.metadata["epoch"] == 3 and saved.metadata["history"]["loss"] == [1.1, 0.7, 0.5]
    got, _, _ = apply(saved.layer, saved.params, saved.state, inputs)
    numpy.testing.assert_allclose(got, outputs, rtol=1e-5, atol=1e-6)
    model = Model.load(GOLDEN / name)
    numpy.testing.assert_allclose(model.predict(inputs), outputs, rtol=1e-5, atol=1e-6)
    # written before files held the precision policy and the loss scaler: float32, none
    assert "precision" not in saved.metadata and "loss_scaler" not in saved.metadata
    assert model.precision == precision.FLOAT32 and model.loss_scaler is None


def test_both_containers_hold_the_same_numbers():
    h5 = convnet_io.load(GOLDEN / "model_v1.h5", parts=True)
    npz = convnet_io.load(GOLDEN / "model_v1.npz", parts=True)
    assert h5.layer == npz.layer and h5.metadata == npz.metadata
    assert_same_tree(h5.params, npz.params)
    assert_same_tree(h5.state, npz.state)
    assert_same_tree(h5.optimizer_state, npz.optimizer_state)


@pytest.mark.parametrize("name", ["model_v2.h5", "model_v2.npz"])
def test_golden_v2_checkpoint_loads_with_its_best_epoch(name):
    with numpy.load(GOLDEN / "model_v2_io.npz", allow_pickle=False) as z:
        inputs, outputs, best_outputs = z["inputs"], z["outputs"], z["best_outputs"]
    attributes, _ = convnet_io.format.read_raw(GOLDEN / name)
    assert attributes[""]["format_version"] == 2
    saved = convnet_io.load(GOLDEN / name, parts=True)
    assert saved.metadata["epoch"] == 4 and saved.metadata["best_epoch"] == 2
    got, _, _ = apply(saved.layer, saved.params, saved.state, inputs)
    numpy.testing.assert_allclose(got, outputs, rtol=1e-5, atol=1e-6)
    epoch, best_params, best_state = saved.best_weights
    assert epoch == 2
    got, _, _ = apply(saved.layer, best_params, best_state, inputs)
    numpy.testing.assert_allclose(got, best_outputs, rtol=1e-5, atol=1e-6)
    checkpoint = convnet_io.load_checkpoint(GOLDEN / name)
    assert checkpoint["best_weights"][0] == 2 and checkpoint["epoch"] == 4


def test_a_reader_of_version_1_says_a_v2_file_is_newer(monkeypatch):
    # as the convnet-io before best/ groups existed reads a checkpoint that has them
    from convnet_io import format as fmt
    from convnet_io.errors import ModelFormatError

    monkeypatch.setattr(fmt, "FORMAT_VERSION", 1)
    with pytest.raises(
        ModelFormatError, match=r"format_version 2 is newer .* \(up to 1\); upgrade"
    ):
        convnet_io.load(GOLDEN / "model_v2.h5", parts=True)
    convnet_io.load(GOLDEN / "model_v1.h5", parts=True)  # still read
