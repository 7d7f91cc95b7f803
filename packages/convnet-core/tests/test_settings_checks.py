"""Settings that are NaN, infinite or out of range are refused where they are given, with
the setting's name, instead of showing up later as a diverged loss."""

import math

import numpy
import pytest
from convnet_core import Model, checks, optim, schedules
from convnet_core.layers import Activation, BatchNorm2D, Dense

NAN, INF = math.nan, math.inf


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: optim.sgd(NAN), "lr"),
        (lambda: optim.sgd(INF), "lr"),
        (lambda: optim.sgd(0.1, momentum=NAN), "momentum"),
        (lambda: optim.sgd(0.1, weight_decay=NAN), "weight_decay"),
        (lambda: optim.sgd(0.1, clip_norm=NAN), "clip_norm"),
        (lambda: optim.sgd(0.1, clip_norm=INF), "clip_norm"),
        (lambda: optim.adam(eps=NAN), "eps"),
        (lambda: optim.adam(beta2=NAN), "beta2"),
        (lambda: optim.adamw(weight_decay=-INF), "weight_decay"),
        (lambda: optim.rmsprop(decay=1.5), "decay"),
        (lambda: optim.rmsprop(decay=-0.1), "decay"),
        (lambda: optim.rmsprop(eps=INF), "eps"),
        (lambda: BatchNorm2D(eps=NAN), "eps"),
        (lambda: BatchNorm2D(momentum=NAN), "momentum"),
        (lambda: Activation("leaky_relu", alpha=NAN), "alpha"),
        (lambda: Activation("leaky_relu", alpha="x"), "alpha"),
        (lambda: schedules.ReduceOnPlateau(min_lr=NAN), "min_lr"),
        (lambda: schedules.ReduceOnPlateau(min_delta=INF), "min_delta"),
        (lambda: schedules.ReduceOnPlateau(factor=NAN), "factor"),
        (lambda: schedules.step_decay(2, gamma=NAN), "gamma"),
        (lambda: schedules.cosine(10, min_factor=NAN), "min_factor"),
    ],
)
def test_a_nan_or_out_of_range_setting_is_refused_by_name(make, name):
    with pytest.raises(ValueError, match=rf"\b{name} must be"):
        make()


def test_good_settings_pass_unchanged():
    assert optim.rmsprop(decay=0.0, eps=0.0).decay == 0.0
    assert optim.sgd(0.0, momentum=0.9, clip_norm=1e-3).clip_norm == 1e-3
    assert Activation("leaky_relu", alpha=-0.5).alpha == -0.5  # any finite slope
    assert BatchNorm2D(momentum=1.0).momentum == 1.0


def test_the_learning_rate_of_a_model_refuses_nan_and_infinity():
    model = Model([Dense(2)], seed=0).compile(optimizer="sgd", lr=0.1)
    model.build((3,))
    for bad in (NAN, INF, -1.0):
        with pytest.raises(ValueError, match="learning rate must be >= 0"):
            model.lr = bad
    model.lr = 0.5
    assert model.lr == 0.5
    with pytest.raises(ValueError, match="lr must be >= 0, got nan"):
        Model([Dense(2)]).compile(optimizer="adam", lr=NAN)


@pytest.mark.parametrize(
    ("value", "want"),
    [(0.5, None), (NAN, "x must be in [0, 1), got nan"), (1.0, "x must be in [0, 1), got 1.0")],
)
def test_real_names_the_range(value, want):
    if want is None:
        assert checks.real(value, "x", low=0, high=1, high_open=True) == value
    else:
        with pytest.raises(ValueError) as error:
            checks.real(value, "x", low=0, high=1, high_open=True)
        assert str(error.value) == want


@pytest.mark.parametrize("bad", [2.5, True, "8", None, 0, -3, numpy.float64(4.0)])
def test_count_takes_whole_numbers_only(bad):
    with pytest.raises(ValueError, match="batch_size must be"):
        checks.count(bad, "batch_size")
    assert checks.count(numpy.int64(8), "batch_size") == 8
