"""Schedules against their formulas, and the plateau state machine on scripted metrics."""

import json
import math

import pytest
from convnet_core import schedules


def test_step_decay_formula():
    schedule = schedules.step_decay(step_size=3, gamma=0.5)
    for step in range(12):
        assert schedule(step) == 0.5 ** (step // 3)
    with pytest.raises(ValueError, match="step_size"):
        schedules.step_decay(0)


def test_cosine_formula_without_warmup():
    total = 10
    schedule = schedules.cosine(total)
    for t in range(total):
        assert schedule(t) == pytest.approx(0.5 * (1 + math.cos(math.pi * t / total)))
    assert schedule(0) == 1.0
    assert schedule(total) == 0.0 and schedule(total + 5) == 0.0


def test_cosine_formula_with_warmup_and_floor():
    schedule = schedules.cosine(total_steps=20, warmup_steps=4, min_factor=0.1)
    assert [schedule(t) for t in range(4)] == [0.25, 0.5, 0.75, 1.0]
    for t in range(4, 20):
        progress = (t - 4) / 16
        want = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
        assert schedule(t) == pytest.approx(want)
    assert schedule(4) == pytest.approx(1.0)
    assert schedule(25) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="warmup_steps"):
        schedules.cosine(10, warmup_steps=10)


def run_plateau(plateau, metrics, lr):
    state = plateau.init()
    lrs = []
    for metric in metrics:
        lr, state = plateau.update(state, metric, lr)
        lrs.append(lr)
        json.dumps(state)  # the state stays JSON-able
    return lrs, state


def test_plateau_on_a_scripted_loss_sequence():
    plateau = schedules.reduce_on_plateau(factor=0.5, patience=2, min_lr=0.1, min_delta=0.01)
    # improves, improves, stalls twice (-> halve), a tiny gain below min_delta counts as a
    # stall, then stalls again (-> halve), then floors at min_lr.
    metrics = [1.0, 0.9, 0.95, 0.9, 0.895, 0.899, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]
    lrs, state = run_plateau(plateau, metrics, 1.0)
    assert lrs == [1.0, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125, 0.125, 0.1, 0.1, 0.1]
    assert state["best"] == 0.5


def test_plateau_in_max_mode_for_accuracy():
    plateau = schedules.reduce_on_plateau(factor=0.1, patience=1, min_lr=0.0, mode="max")
    lrs, _ = run_plateau(plateau, [0.5, 0.6, 0.6, 0.7, 0.65], 1.0)
    assert lrs == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01])


def test_plateau_rejects_bad_settings():
    with pytest.raises(ValueError, match="factor"):
        schedules.reduce_on_plateau(factor=1.5)
    with pytest.raises(ValueError, match="mode"):
        schedules.reduce_on_plateau(mode="up")


def test_an_improvement_must_beat_the_best_by_more_than_min_delta():
    assert not schedules.is_improvement(0.5005, 0.5, "max", 1e-3)
    assert schedules.is_improvement(0.502, 0.5, "max", 1e-3)
    assert not schedules.is_improvement(0.4995, 0.5, "min", 1e-3)
    assert schedules.is_improvement(0.498, 0.5, "min", 1e-3)
    assert schedules.is_improvement(7.0, None, "min", 1e-3)  # the first value is the best


def test_plateau_rejects_a_negative_patience():
    with pytest.raises(ValueError) as error:
        schedules.reduce_on_plateau(patience=-1)
    assert str(error.value) == "reduce_on_plateau: patience must be a whole number >= 0, got -1"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_metric_is_never_the_best(bad):
    plateau = schedules.reduce_on_plateau(factor=0.5, patience=2, min_lr=0.0, min_delta=0.0)
    # the first metric is not finite: it is a stall, not the best, so 0.5 and 0.4 improve
    lrs, state = run_plateau(plateau, [bad, 0.5, 0.4], 1.0)
    assert lrs == [1.0, 1.0, 1.0]
    assert state == {"best": 0.4, "wait": 0}
    # later, it counts as a stalled epoch like any other
    lrs, state = run_plateau(plateau, [0.5, bad, bad, 0.4], 1.0)
    assert lrs == [1.0, 1.0, 0.5, 0.5]
    assert state == {"best": 0.4, "wait": 0}


def test_is_improvement_refuses_non_finite_values_and_replaces_a_non_finite_best():
    for mode in ("min", "max"):
        for bad in (math.nan, math.inf, -math.inf):
            assert not schedules.is_improvement(bad, None, mode, 0.0)
            assert not schedules.is_improvement(bad, 0.5, mode, 0.0)
            assert schedules.is_improvement(0.5, bad, mode, 0.0)  # a best stored by older code


def test_early_stopping_replays_a_nan_first_epoch_as_a_stall():
    # EarlyStopping rebuilds its counters from the history with is_improvement
    from types import SimpleNamespace

    from convnet_core.callbacks import EarlyStopping

    stopping = EarlyStopping("val_loss", patience=3, min_delta=0.0)
    resumed = SimpleNamespace(resuming=True, history={"val_loss": [math.nan, 0.5, 0.4, 0.45]})
    stopping.on_train_begin(resumed)
    assert (stopping.best, stopping.best_epoch, stopping.wait) == (0.4, 3, 1)


def test_plateau_counts_a_nan_epoch_as_a_stall_as_early_stopping_does():
    from types import SimpleNamespace

    from convnet_core.callbacks import ReduceLROnPlateau

    plateau = ReduceLROnPlateau("val_loss", factor=0.5, patience=2, min_lr=0.0, min_delta=0.0)
    model = SimpleNamespace(lr=1.0, resuming=False, history={})
    plateau.on_train_begin(model)
    rates = []
    for value in (0.5, math.nan, math.inf, 0.6):
        plateau.on_epoch_end(model, len(rates) + 1, {"val_loss": value})
        rates.append(model.lr)
    assert rates == [1.0, 1.0, 0.5, 0.5]  # two stalled epochs, then halved; the count restarts
    # a resumed run replays the same history to the same state
    replayed = ReduceLROnPlateau("val_loss", factor=0.5, patience=2, min_lr=0.0, min_delta=0.0)
    replayed.on_train_begin(
        SimpleNamespace(resuming=True, history={"val_loss": [0.5, math.nan, math.inf, 0.6]})
    )
    assert replayed.state == plateau.state


def test_early_stopping_patience_is_a_whole_number():
    from convnet_core.callbacks import EarlyStopping

    with pytest.raises(
        ValueError, match=r"EarlyStopping: patience must be a whole number >= 0, got 2.5"
    ):
        EarlyStopping(patience=2.5)


# (make a schedule or a factor, the error's words)
BAD_EDGES = [
    (
        lambda: schedules.cosine(10, warmup_steps=3)(-5),
        "cosine: step must be a whole number >= 0, got -5",
    ),
    (lambda: schedules.step_decay(3)(-1), "step_decay: step must be a whole number >= 0, got -1"),
    (lambda: schedules.cosine(10)(2.5), "cosine: step must be a whole number >= 0, got 2.5"),
    (lambda: schedules.cosine(10, min_factor=2), "cosine min_factor must be in [0, 1], got 2.0"),
    (
        lambda: schedules.cosine(10, min_factor=-0.1),
        "cosine min_factor must be in [0, 1], got -0.1",
    ),
    (lambda: schedules.cosine(10.7), "cosine: total_steps must be a whole number >= 1, got 10.7"),
    (lambda: schedules.cosine(0), "cosine: total_steps must be a whole number >= 1, got 0"),
    (
        lambda: schedules.cosine(10, warmup_steps=2.5),
        "cosine: warmup_steps must be a whole number >= 0, got 2.5",
    ),
    (
        lambda: schedules.cosine(10, warmup_steps=-1),
        "cosine: warmup_steps must be a whole number >= 0, got -1",
    ),
    (
        lambda: schedules.step_decay(2.5),
        "step_decay: step_size must be a whole number >= 1, got 2.5",
    ),
    (
        lambda: schedules.step_decay(True),
        "step_decay: step_size must be a whole number >= 1, got True",
    ),
    (
        lambda: schedules.step_decay("3"),
        "step_decay: step_size must be a whole number >= 1, got '3'",
    ),
    (
        lambda: schedules.step_decay(math.nan),
        "step_decay: step_size must be a whole number >= 1, got nan",
    ),
    (
        lambda: schedules.reduce_on_plateau(patience=1.5),
        "reduce_on_plateau: patience must be a whole number >= 0, got 1.5",
    ),
]


@pytest.mark.parametrize(("make", "words"), BAD_EDGES)
def test_edge_values_are_refused_by_schedule_and_argument(make, words):
    with pytest.raises(ValueError) as error:
        make()
    assert str(error.value) == words


def test_whole_numbers_of_any_kind_are_counts_and_steps():
    import numpy

    schedule = schedules.cosine(numpy.int64(10), warmup_steps=2.0, min_factor=1)
    assert (schedule.total_steps, schedule.warmup_steps) == (10, 2)
    assert type(schedule.total_steps) is int and type(schedule.warmup_steps) is int
    assert schedule(numpy.asarray(5)) == schedule(5.0) == 1.0  # min_factor 1: constant
    decay = schedules.step_decay(1e1, gamma=0.5)
    assert decay.step_size == 10
    assert decay(numpy.int32(25)) == 0.25
    assert schedules.cosine(10)(0) == 1.0 and schedules.step_decay(3)(0) == 1.0


def test_plateau_never_raises_a_rate_already_below_min_lr():
    plateau = schedules.reduce_on_plateau(factor=0.5, patience=1, min_lr=1e-6)
    lrs, _ = run_plateau(plateau, [1.0, 2.0, 2.0, 2.0], 1e-7)
    assert lrs == [1e-7, 1e-7, 1e-7, 1e-7]
    # a rate above min_lr is still floored at it, and stays there
    lrs, _ = run_plateau(plateau, [1.0, 2.0, 2.0, 2.0], 1.5e-6)
    assert lrs == [1.5e-6, 1e-6, 1e-6, 1e-6]


def test_reduce_lr_on_plateau_callback_never_raises_the_rate():
    from types import SimpleNamespace

    from convnet_core.callbacks import ReduceLROnPlateau

    callback = ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_lr=1e-6)
    model = SimpleNamespace(lr=1e-7, history={}, resuming=False)
    callback.on_train_begin(model)
    for epoch, loss in enumerate([1.0, 2.0, 2.0]):
        callback.on_epoch_end(model, epoch, {"loss": loss})
        assert model.lr == 1e-7
