"""Gradient checks in float64: every layer and combinator, parameters and input.

Each case builds a layer, initialises it in float64, and compares its `grad` with central
finite differences through `convnet_core.check_grad`, on awkward shapes: batch 1, odd
spatial sizes, stride 2, "valid"/integer/pair padding, non-square kernels, several
channels, overlapping and gapped pooling windows, BatchNorm in training mode.
"""

from __future__ import annotations

import attrs
import convnet_core as cn
import numpy
import pytest
from convnet_core import layers as L

TOLERANCE = 1e-6


def away_from_zero(x, margin=0.05):
    """Push values out of (-margin, margin) so no finite difference crosses a kink at 0."""
    return numpy.where(x >= 0, x + margin, x - margin)


def run_check(layer, input_shape, xp, *, batch=2, seed=0, prepare=None, **kwargs):
    rng = numpy.random.default_rng(seed)
    params, state = cn.init(layer, input_shape, rng=rng, xp=xp, dtype="float64")
    if prepare is not None:
        params = prepare(params, rng, xp)
    x = xp.asarray(rng.standard_normal((batch, *input_shape)))
    report = cn.check_grad(layer, params, state, x, xp=xp, rng=seed, **kwargs)
    assert report.ok and report.max_error < TOLERANCE, str(report)
    return report


CONV_CASES = [
    # (layer, per-sample input shape, batch)
    (L.Conv2D(4, (3, 3)), (3, 6, 6), 2),
    (L.Conv2D(2, (3, 3), padding="valid"), (3, 7, 5), 2),
    (L.Conv2D(3, (2, 3), padding=2), (2, 5, 7), 1),
    (L.Conv2D(3, (3, 2), stride=2, padding="same"), (2, 7, 6), 2),
    (L.Conv2D(2, (3, 3), stride=2, padding=1), (3, 7, 7), 1),
    (L.Conv2D(2, (3, 3), stride=2, padding="valid"), (1, 8, 9), 2),
    (L.Conv2D(3, (1, 1), padding="valid"), (4, 3, 5), 2),
    (L.Conv2D(2, (3, 5), stride=(2, 1), padding=(1, 2)), (2, 6, 7), 2),
    (L.Conv2D(2, (2, 2), padding="same", use_bias=False), (2, 5, 5), 2),
    (L.Conv2D(5, (5, 5), padding="valid"), (1, 5, 5), 3),
]


@pytest.mark.parametrize(("layer", "shape", "batch"), CONV_CASES, ids=repr)
def test_conv2d(layer, shape, batch, xp):
    report = run_check(layer, shape, xp, batch=batch)
    expected = {"W", "b", "input"} if layer.use_bias else {"W", "input"}
    assert set(report.errors) == expected


POOL_CASES = [
    (L.MaxPool2D(), (2, 4, 6), 2),
    (L.MaxPool2D(), (3, 5, 7), 1),  # odd sizes: the last row/column is dropped
    (L.MaxPool2D((3, 3), stride=2), (2, 7, 7), 2),  # overlapping windows
    (L.MaxPool2D((2, 3), stride=(1, 2)), (2, 5, 7), 2),
    (L.MaxPool2D((2, 2), stride=3), (1, 8, 7), 2),  # gaps between windows
    (L.MaxPool2D((3, 2)), (2, 7, 5), 2),  # non-square tiles, cropped edges
    (L.AvgPool2D(), (2, 4, 6), 2),
    (L.AvgPool2D(), (3, 5, 7), 1),
    (L.AvgPool2D((3, 3), stride=2), (2, 7, 7), 2),
    (L.AvgPool2D((2, 3), stride=(1, 2)), (2, 5, 7), 2),
    (L.AvgPool2D((2, 2), stride=3), (1, 8, 7), 2),
    (L.GlobalAvgPool2D(), (3, 5, 4), 2),
    (L.GlobalAvgPool2D(), (2, 1, 1), 1),
]


@pytest.mark.parametrize(("layer", "shape", "batch"), POOL_CASES, ids=repr)
def test_pooling(layer, shape, batch, xp):
    report = run_check(layer, shape, xp, batch=batch)
    assert set(report.errors) == {"input"}


def random_affine(params, rng, xp):
    """BatchNorm params away from the identity, so a wrong gamma/beta term would show."""
    channels = params["gamma"].shape[0]
    return {
        "gamma": xp.asarray(rng.uniform(0.5, 2.0, channels)),
        "beta": xp.asarray(rng.standard_normal(channels)),
    }


@pytest.mark.parametrize(
    ("shape", "batch"), [((3, 4, 5), 2), ((2, 3, 3), 1), ((4, 1, 1), 5)], ids=str
)
def test_batchnorm_training_mode(shape, batch, xp):
    report = run_check(L.BatchNorm2D(), shape, xp, batch=batch, prepare=random_affine)
    assert set(report.errors) == {"gamma", "beta", "input"}


@pytest.mark.parametrize("rate", [0.0, 0.3, 0.75])
def test_dropout_with_a_fixed_mask(rate, xp):
    report = run_check(L.Dropout(rate), (3, 4, 5), xp)
    assert set(report.errors) == {"input"}


@pytest.mark.parametrize(
    ("layer", "shape", "batch"),
    [(L.Dense(3), (5,), 2), (L.Dense(4, use_bias=False), (3,), 1), (L.Dense(1), (7,), 3)],
    ids=repr,
)
def test_dense(layer, shape, batch, xp):
    run_check(layer, shape, xp, batch=batch)


@pytest.mark.parametrize("name", sorted(L.ACTIVATIONS))
def test_every_activation(name, xp):
    layer = L.Activation(name, alpha=0.1)
    rng = numpy.random.default_rng(1)
    x = xp.asarray(away_from_zero(rng.standard_normal((3, 5))))
    report = cn.check_grad(layer, {}, {}, x, xp=xp)
    assert report.ok and report.max_error < TOLERANCE, str(report)


def test_activation_on_images(xp):
    rng = numpy.random.default_rng(2)
    x = xp.asarray(away_from_zero(rng.standard_normal((2, 3, 4, 5))))
    report = cn.check_grad(L.Activation("gelu"), {}, {}, x, xp=xp)
    assert report.ok, str(report)


def test_flatten(xp):
    run_check(L.Flatten(), (3, 2, 4), xp)


def small_convnet():
    return L.Sequential(
        [
            L.Conv2D(3, (3, 3), padding=1),
            L.BatchNorm2D(),
            L.Activation("relu"),
            L.MaxPool2D((2, 2)),
            L.Conv2D(2, (2, 3), stride=2, padding="valid"),
            L.Activation("tanh"),
            L.Flatten(),
            L.Dropout(0.2),
            L.Dense(3),
            L.Activation("softmax"),
        ]
    )


def test_sequential_convnet(xp):
    report = run_check(small_convnet(), (2, 9, 9), xp, batch=2)
    assert {"0/W", "0/b", "1/gamma", "1/beta", "4/W", "4/b", "8/W", "8/b", "input"} == set(
        report.errors
    )


def test_residual_identity_shortcut(xp):
    body = L.Sequential([L.Conv2D(2, (3, 3)), L.Activation("tanh"), L.Conv2D(2, (3, 3))])
    report = run_check(L.Residual(body), (2, 5, 5), xp)
    assert {"body/0/W", "body/0/b", "body/2/W", "body/2/b", "input"} == set(report.errors)


def test_residual_projection_shortcut_with_stride(xp):
    body = L.Sequential([L.Conv2D(4, (3, 3), stride=2), L.BatchNorm2D()])
    shortcut = L.Conv2D(4, (1, 1), stride=2, padding="valid", use_bias=False)
    report = run_check(L.Residual(body, shortcut), (2, 5, 5), xp)
    assert {"body/0/W", "body/0/b", "body/1/gamma", "body/1/beta", "shortcut/W", "input"} == set(
        report.errors
    )


def test_nested_residuals_in_a_sequential(xp):
    block = L.Residual(L.Sequential([L.Conv2D(2, (3, 3)), L.Activation("gelu")]))
    net = L.Sequential([block, L.Residual(block), L.GlobalAvgPool2D(), L.Dense(2)])
    run_check(net, (2, 4, 5), xp, batch=1)


# ---------------------------------------------------------------------------------------
# the checker itself


@attrs.frozen
class WrongGradient:
    """y = x * w, with a backward pass that forgets a factor 2 on dw (a planted bug)."""

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def init(self, input_shape, rng, *, xp, dtype):
        return {"w": xp.asarray(rng.standard_normal(input_shape).astype(dtype))}, {}

    def apply(self, params, state, x, *, training, rng, xp):
        return x * params["w"], state, (x if training else None)

    def grad(self, params, cache, dy, *, xp, input_grad=True):
        return {"w": 2 * (dy * cache).sum(axis=0)}, (dy * params["w"] if input_grad else None)


def test_check_grad_catches_a_wrong_parameter_gradient(xp):
    params, state = cn.init(WrongGradient(), (4,), rng=0, xp=xp, dtype="float64")
    x = xp.asarray(numpy.random.default_rng(0).standard_normal((3, 4)))
    report = cn.check_grad(WrongGradient(), params, state, x, xp=xp)
    assert not report.ok
    assert report.errors["w"] == pytest.approx(1 / 3, rel=1e-6)  # |2g - g| / (|2g| + |g|)
    assert report.errors["input"] < TOLERANCE
    text = str(report)
    assert "FAILED" in text and "too large" in text and "w" in text and "input" in text


def test_check_grad_samples_elements_and_reports_counts(xp):
    layer = L.Dense(6)
    params, state = cn.init(layer, (10,), rng=0, xp=xp, dtype="float64")
    x = xp.asarray(numpy.random.default_rng(0).standard_normal((2, 10)))
    report = cn.check_grad(layer, params, state, x, xp=xp, max_elements=5)
    assert report.ok, str(report)
    assert {leaf.path: leaf.checked for leaf in report.leaves} == {"W": 5, "b": 5, "input": 5}


def test_check_grad_works_from_float32_params(xp):
    layer = L.Conv2D(2, (3, 3))
    params, state = cn.init(layer, (1, 4, 4), rng=0, xp=xp)  # float32
    x = xp.asarray(numpy.random.default_rng(0).standard_normal((1, 1, 4, 4)), dtype="float32")
    report = cn.check_grad(layer, params, state, x, xp=xp)
    assert report.ok and report.max_error < TOLERANCE, str(report)
