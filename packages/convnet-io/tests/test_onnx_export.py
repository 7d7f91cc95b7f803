"""ONNX export: onnxruntime runs the exported graph and gives convnet's outputs.

The parity tests need onnx and onnxruntime (installed by the parity nox session).
"""

import sys

import convnet_io
import numpy
import pytest
from convnet_core import apply, init
from convnet_core import layers as L
from convnet_io_helpers import SHAPE, our_net, randomize


def run_onnx(path, x):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["output"], {"input": x})[0]


NETS = [
    ("every-layer", our_net(), SHAPE),
    (
        "global-pool",
        L.Sequential(
            (
                L.Conv2D(5, (3, 3), stride=2, padding="same"),  # odd padding: bottom/right
                L.BatchNorm2D(eps=1e-3),
                L.Activation("sigmoid"),
                L.Residual(L.Sequential((L.Conv2D(5, (2, 2), padding="same"),))),
                L.GlobalAvgPool2D(),
                L.Dense(4),
                L.Activation("relu"),
            )
        ),
        (3, 9, 8),
    ),
]


@pytest.mark.parity
@pytest.mark.parametrize(("name", "net", "shape"), NETS, ids=[n for n, _, _ in NETS])
def test_onnxruntime_gives_our_outputs(tmp_path, name, net, shape):
    import onnx

    params, state = randomize(*init(net, shape, rng=0), seed=4)
    path = convnet_io.export_onnx((net, params, state, shape), tmp_path / "model.onnx")
    onnx.checker.check_model(onnx.load(path))
    for batch in (1, 5):  # the batch dimension is free
        x = numpy.random.default_rng(batch).normal(size=(batch, *shape)).astype("float32")
        want, _, _ = apply(net, params, state, x)
        numpy.testing.assert_allclose(run_onnx(path, x), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parity
def test_export_a_loaded_model(tmp_path):
    model = convnet_io.load(__import__("pathlib").Path(__file__).parent / "golden" / "model_v1.h5")
    path = convnet_io.export_onnx(model, tmp_path / "golden.onnx")
    x = numpy.random.default_rng(0).normal(size=(3, 1, 8, 8)).astype("float32")
    numpy.testing.assert_allclose(run_onnx(path, x), model.predict(x), rtol=1e-4, atol=1e-6)


def test_export_without_onnx_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` fail
    net = L.Sequential((L.Dense(2),))
    params, state = init(net, (3,), rng=0)
    with pytest.raises(ImportError, match=r"pip install convnet-io\[onnx\]"):
        convnet_io.export_onnx((net, params, state, (3,)), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
