"""From a model file or a network to the app's predict function, and the reference model."""

from __future__ import annotations

import pathlib

import convnet_core as cn
import convnet_io
import numpy
import pytest
from convnet_core import layers as L
from convnet_gui import predictor

REFERENCE_MODEL = pathlib.Path(__file__).parent / "data" / "reference_mnist.h5"


def small_network(final_softmax: bool):
    layers = [L.Flatten(), L.Dense(10)]
    if final_softmax:
        layers.append(L.Activation("softmax"))
    return L.Sequential(layers)


def test_softmax_known_values():
    p = predictor.softmax(numpy.array([[0.0, numpy.log(3.0)], [1000.0, 1000.0]]))
    numpy.testing.assert_allclose(p, [[0.25, 0.75], [0.5, 0.5]])


def test_ends_with_softmax_looks_inside_sequential():
    assert predictor.ends_with_softmax(small_network(True))
    assert not predictor.ends_with_softmax(small_network(False))
    assert predictor.ends_with_softmax(
        L.Sequential([L.Dense(3), L.Sequential([L.Activation("softmax")])])
    )
    assert not predictor.ends_with_softmax(L.Activation("relu"))


@pytest.mark.parametrize("final_softmax", [False, True])
def test_predictor_from_parts_gives_probabilities_of_the_network(final_softmax):
    net = small_network(final_softmax)
    params, state = cn.init(net, (1, 28, 28), rng=1)
    x = numpy.random.default_rng(2).random((1, 1, 28, 28), dtype=numpy.float32)
    probabilities = predictor.predictor_from_parts(net, params, state)(x)
    W, b = params[1]["W"], params[1]["b"]  # (784, 10), (10,)
    logits = x.reshape(1, 784).astype(numpy.float64) @ W + b
    expected = numpy.exp(logits - logits.max()) / numpy.exp(logits - logits.max()).sum()
    assert probabilities.shape == (10,)
    numpy.testing.assert_allclose(probabilities, expected[0], rtol=1e-5)


def test_load_predictor_reads_a_saved_model(tmp_path):
    net = small_network(False)
    params, state = cn.init(net, (1, 28, 28), rng=3)
    path = convnet_io.save(
        tmp_path / "m.h5", layer=net, params=params, state=state, input_shape=(1, 28, 28)
    )
    x = numpy.random.default_rng(4).random((1, 1, 28, 28), dtype=numpy.float32)
    loaded = predictor.load_predictor(path)(x)
    numpy.testing.assert_allclose(
        loaded, predictor.predictor_from_parts(net, params, state)(x), rtol=1e-6
    )


@pytest.mark.parametrize(
    ("saved_as", "loaded_as"),
    [
        ("mnist.h5", "mnist.h5"),  # the way apps/train_mnist.py saves: Model.save
        ("v.hdf5.npz", "v.hdf5"),  # without h5py, save("v.hdf5") writes v.hdf5.npz
    ],
)
def test_load_predictor_reads_a_model_saved_by_model_save(tmp_path, saved_as, loaded_as):
    """load_predictor finds the file as convnet_io.load does; the network ends in logits."""
    model = cn.Model([L.Flatten(), L.Dense(10)], seed=1)
    model.build((1, 28, 28))
    model.save(tmp_path / saved_as)
    x = numpy.random.default_rng(6).random((1, 1, 28, 28), dtype=numpy.float32)
    logits = numpy.asarray(model.predict(x), dtype=numpy.float64)  # (1, 10)
    probabilities = predictor.load_predictor(tmp_path / loaded_as)(x)
    numpy.testing.assert_allclose(probabilities, predictor.softmax(logits)[0], rtol=1e-5)


def test_missing_model_says_how_to_train_one(tmp_path):
    with pytest.raises(predictor.MissingModelError) as error:
        predictor.load_predictor(tmp_path / "none.h5")
    assert str(error.value) == (
        f"No model at {tmp_path / 'none.h5'} \N{EM DASH} train one first with: "
        f"uv run apps/train_mnist.py --out {tmp_path / 'none.h5'}"
    )
    assert predictor.missing_model_message("models/mnist.h5") == (
        "No model at models/mnist.h5 \N{EM DASH} train one first with: uv run apps/train_mnist.py"
    )


def test_a_damaged_model_file_raises_the_io_error(tmp_path):
    path = tmp_path / "bad.h5"
    path.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="bad.h5"):
        predictor.load_predictor(path)


def test_reference_model_reads_mnist_digits_drawn_large(mnist_test, mnist_round_trip):
    """At least 97% of 500 MNIST test digits, drawn large and preprocessed, read correctly."""
    images, labels = mnist_test
    _, drawn_inputs, _ = mnist_round_trip  # (500, 28, 28)
    predict = predictor.load_predictor(REFERENCE_MODEL)
    drawn = [int(predict(x[None, None]).argmax()) for x in drawn_inputs]
    original = [
        int(predict(d[None, None].astype(numpy.float32) / 255).argmax()) for d in images[:500]
    ]
    drawn_accuracy = numpy.mean(numpy.array(drawn) == labels[:500])
    original_accuracy = numpy.mean(numpy.array(original) == labels[:500])
    assert original_accuracy >= 0.97, original_accuracy
    assert drawn_accuracy >= 0.97, (drawn_accuracy, original_accuracy)
    assert original_accuracy - drawn_accuracy <= 0.015  # the round trip costs little


def test_the_reference_model_gives_the_same_probabilities_on_the_test_device(xp):
    """With CONVNET_TEST_DEVICE=cuda this runs the network with CuPy and compares to NumPy."""
    device = "cpu" if xp is numpy else "cuda"
    x = numpy.random.default_rng(5).random((1, 1, 28, 28), dtype=numpy.float32)
    on_device = predictor.load_predictor(REFERENCE_MODEL, device=device)(x)
    on_host = predictor.load_predictor(REFERENCE_MODEL, device="cpu")(x)
    assert isinstance(on_device, numpy.ndarray) and on_device.shape == (10,)
    assert on_device.sum() == pytest.approx(1.0)
    numpy.testing.assert_allclose(on_device, on_host, rtol=1e-4, atol=1e-6)


def refusal(predict, x) -> str:
    with pytest.raises(ValueError) as error:
        predict(x)
    return str(error.value)


def test_predict_refuses_anything_but_one_drawing_in_0_1():
    net = small_network(False)
    params, state = cn.init(net, (1, 28, 28), rng=1)
    predict = predictor.predictor_from_parts(net, params, state)
    assert refusal(predict, None) == (
        "no drawing: predict got None, which to_mnist returns for a blank drawing "
        "(nothing drawn, or only a dot or a speck); draw a digit first"
    )
    pixels = numpy.zeros((1, 1, 28, 28), numpy.uint8)
    pixels[0, 0, 5:20, 14] = 255
    assert refusal(predict, pixels) == (
        "predict takes floats in [0, 1], as to_mnist gives them, got dtype uint8; "
        "divide 8-bit pixels by 255"
    )
    batch = numpy.random.default_rng(0).random((2, 1, 28, 28), dtype=numpy.float32)
    assert refusal(predict, batch) == (
        "predict takes one drawing of shape (1, 1, 28, 28), as to_mnist gives it, got "
        "shape (2, 1, 28, 28); call it once per drawing"
    )
    assert "got shape (28, 28);" in refusal(predict, batch[0, 0])
    assert refusal(predict, 255 * batch[:1]).startswith(
        "predict takes floats in [0, 1], as to_mnist gives them, got values from 0"
    )
    nan = batch[:1].copy()
    nan[0, 0, 3, 3] = numpy.nan
    assert "got values from nan to nan" in refusal(predict, nan)
    # float64 is accepted and gives what float32 gives
    numpy.testing.assert_allclose(
        predict(batch[:1].astype(numpy.float64)), predict(batch[:1]), rtol=1e-5
    )


def test_a_blank_drawing_through_load_predictor_says_no_drawing():
    from convnet_gui.preprocess import to_mnist
    from PIL import Image

    predict = predictor.load_predictor(REFERENCE_MODEL)
    with pytest.raises(ValueError, match=r"^no drawing: "):
        predict(to_mnist(Image.new("L", (280, 280), 255)))


@pytest.mark.parametrize(
    ("layers", "built_for", "message"),
    [
        (
            [L.Flatten(), L.Dense(3)],
            (1, 28, 28),
            "the network gives outputs of shape (3,) for one drawing, but the app needs (10,): "
            "one score per digit 0-9",
        ),
        (
            [L.Flatten(), L.Dense(10)],
            (3, 32, 32),
            "the network was built for inputs of shape (3, 32, 32), but the app gives it one "
            "28x28 grey drawing, shape (1, 28, 28)",
        ),
    ],
    ids=["three-outputs", "built-for-cifar"],
)
def test_load_predictor_refuses_a_model_of_other_shapes(tmp_path, layers, built_for, message):
    model = cn.Model(layers, seed=0)
    model.build(built_for)
    model.save(tmp_path / "other.h5")
    with pytest.raises(ValueError) as error:
        predictor.load_predictor(tmp_path / "other.h5")
    assert str(error.value) == message


def test_predictor_from_parts_refuses_a_network_that_cannot_read_a_drawing():
    net = L.Sequential([L.Conv2D(4, 3), L.Flatten(), L.Dense(10)])  # needs (C, H, W): fine
    params, state = cn.init(net, (1, 28, 28), rng=0)
    predictor.predictor_from_parts(net, params, state)
    three = L.Sequential([L.Flatten(), L.Dense(3)])
    params, state = cn.init(three, (1, 28, 28), rng=0)
    with pytest.raises(ValueError, match=r"outputs of shape \(3,\) for one drawing"):
        predictor.predictor_from_parts(three, params, state)
    wrong_input = L.Sequential([L.Dense(10)])  # Dense takes (N, F), not (N, 1, 28, 28)
    with pytest.raises(ValueError, match=r"^the network cannot read one 28x28 grey drawing"):
        predictor.predictor_from_parts(wrong_input, {}, {})
