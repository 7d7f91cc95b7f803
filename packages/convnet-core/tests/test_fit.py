"""Model.fit: learning a separable problem, reproducibility, resume, callbacks, early
stopping, learning-rate schedules, divergence, data sources and output."""

import functools
import io
import math
import sys
import types
import warnings

import numpy
import pytest
from convnet_core import Model, optim
from convnet_core import tree as T
from convnet_core.callbacks import EarlyStopping, ReduceLROnPlateau
from convnet_core.layers import Activation, BatchNorm2D, Conv2D, Dense, Dropout, Flatten
from convnet_core.precision import DynamicLossScaler
from convnet_core.training import NonFiniteLossError, RunningTotals


def host_leaves(tree):
    from convnet_core import backend

    return [numpy.array(leaf) for leaf in T.leaves(backend.to_host(tree))]


def blobs(n=200, seed=0):
    """Two well separated Gaussian blobs in 4-d: labels 0/1."""
    rng = numpy.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    centers = numpy.array([[-3.0, 0.0, 3.0, 0.0], [3.0, 0.0, -3.0, 0.0]])
    x = (centers[y] + rng.normal(size=(n, 4))).astype(numpy.float32)
    return x, y


def mlp(xp, dropout=0.0, **kw):
    layers = [Dense(16), Activation("relu")]
    if dropout:
        layers.append(Dropout(dropout))
    layers += [Dense(2)]
    return Model(layers, device=xp, **kw)


def test_learns_a_separable_problem_to_full_accuracy(xp):
    x, y = blobs()
    model = mlp(xp, seed=0).compile(optimizer="adam", lr=0.05)
    history = model.fit((x, y), epochs=5, batch_size=32, verbose=False)
    assert history["acc"][-1] == 1.0
    assert history["loss"][-1] < history["loss"][0]
    assert (model.predict(x).argmax(axis=1) == y).all()
    assert model.evaluate(x, y)[1] == 1.0
    assert model.epoch == 5 and len(history["lr"]) == 5
    assert history["val_loss"] == [None] * 5


def test_small_convnet_with_batchnorm_and_dropout_trains(xp):
    rng = numpy.random.default_rng(0)
    y = rng.integers(0, 2, 64)
    x = rng.normal(size=(64, 1, 6, 6)).astype(numpy.float32) * 0.1
    x[y == 1, :, :3] += 1.0  # class 1 is bright on top
    model = Model(
        [Conv2D(4, (3, 3)), BatchNorm2D(), Activation("relu"), Dropout(0.1), Flatten(), Dense(2)],
        device=xp,
        seed=0,
    )
    model.compile(optimizer="adam", lr=0.02)
    before = host_leaves(model.build((1, 6, 6)).state)
    history = model.fit((x, y), epochs=6, batch_size=16, verbose=False)
    assert history["acc"][-1] == 1.0
    after = host_leaves(model.state)
    assert not numpy.allclose(before[0], after[0])  # running mean moved


def fit_run(xp, seed, epochs=3, **kw):
    x, y = blobs(96, seed=1)
    model = mlp(xp, dropout=0.3).compile(optimizer="sgd", lr=0.1, momentum=0.9)
    history = model.fit((x, y), epochs=epochs, batch_size=16, seed=seed, verbose=False, **kw)
    return model, history


def test_same_seed_gives_bit_identical_results():
    a, history_a = fit_run(numpy, seed=7)
    b, history_b = fit_run(numpy, seed=7)
    assert history_a == history_b
    for p, q in zip(host_leaves(a.params), host_leaves(b.params), strict=True):
        numpy.testing.assert_array_equal(p, q)
    c, history_c = fit_run(numpy, seed=8)
    assert history_c["loss"] != history_a["loss"]


def test_two_fits_continue_like_one(xp):
    x, y = blobs(96, seed=1)
    once = mlp(xp, dropout=0.3, seed=3).compile(optimizer="adam", lr=0.01)
    once.fit((x, y), epochs=4, batch_size=16, verbose=False)
    twice = mlp(xp, dropout=0.3, seed=3).compile(optimizer="adam", lr=0.01)
    twice.fit((x, y), epochs=2, batch_size=16, verbose=False)
    twice.fit((x, y), epochs=2, batch_size=16, verbose=False)
    assert once.history == twice.history and twice.epoch == 4
    for p, q in zip(host_leaves(once.params), host_leaves(twice.params), strict=True):
        numpy.testing.assert_array_equal(p, q)


class Snapshot:
    """A stand-in for convnet_io.Checkpoint: keeps the parts a checkpoint file holds."""

    def __init__(self, at_epoch):
        self.at_epoch = at_epoch
        self.saved = None

    def on_epoch_end(self, model, epoch, logs):
        if epoch == self.at_epoch:
            from convnet_core import backend

            self.saved = {
                "network": model.network,
                "input_shape": model.input_shape,
                "params": backend.to_host(model.params),
                "state": backend.to_host(model.state),
                "optimizer": optim.to_config(model.optimizer),
                "opt_state": backend.to_host(model.opt_state),
                "epoch": model.epoch,
                "history": {k: list(v) for k, v in model.history.items()},
                "rng_state": model.get_rng_state(),
                "precision": model.precision.to_config(),
                "loss_scaler": None if model.loss_scaler is None else model.loss_scaler.to_config(),
                "metadata": {"loss_name": model.loss_name},
                "best_weights": _earlier_best(model),
            }


def _earlier_best(model):
    """What convnet_io.Checkpoint stores of `model.best_weights`: (epoch, host params,
    host state) when they are of an earlier epoch than the model's, else None."""
    from convnet_core import backend

    best = model.best_weights
    if best is None or best.epoch == model.epoch:
        return None
    return (best.epoch, backend.to_host(best.params), backend.to_host(best.state))


@pytest.mark.parametrize("restore_best", [False, True])
def test_resume_ends_like_an_uninterrupted_run(xp, monkeypatch, restore_best):
    x, y = blobs(96, seed=1)
    val = blobs(40, seed=2)
    settings = dict(
        batch_size=16,
        val_data=val,
        lr_schedule="plateau",
        lr_patience=1,
        early_stopping=True,
        patience=50,
        restore_best=restore_best,
        verbose=False,
    )
    snapshot = Snapshot(at_epoch=2)
    full = mlp(xp, dropout=0.3).compile(optimizer="adam", lr=0.05)
    full.fit((x, y), epochs=5, seed=11, callbacks=[snapshot], **settings)
    assert len(set(full.history["lr"])) > 1  # the plateau schedule acted
    if restore_best:  # the best epoch came before the checkpoint, and was put back
        assert full.history["val_acc"] == [1.0] * 5 and full.best_weights.epoch == 1
        assert snapshot.saved["best_weights"][0] == 1
        assert full.params is full.best_weights.params and full.state is full.best_weights.state
    else:
        assert full.best_weights is None and snapshot.saved["best_weights"] is None

    fake_checkpoint_io(monkeypatch, snapshot.saved)
    resumed = mlp(xp, dropout=0.3).compile(optimizer="adam", lr=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resumed.fit((x, y), epochs=5, resume_from="ckpt.h5", **settings)
    assert resumed.epoch == 5
    assert resumed.history == full.history
    for p, q in zip(host_leaves(resumed.params), host_leaves(full.params), strict=True):
        numpy.testing.assert_array_equal(p, q)
    for p, q in zip(host_leaves(resumed.state), host_leaves(full.state), strict=True):
        numpy.testing.assert_array_equal(p, q)
    if restore_best:
        assert resumed.best_weights.epoch == 1 and resumed.params is resumed.best_weights.params

    fresh = Model(device=xp)  # no layers, not compiled: everything comes from the file
    fresh.fit((x, y), epochs=5, resume_from="ckpt.h5", **settings)
    for p, q in zip(host_leaves(fresh.params), host_leaves(full.params), strict=True):
        numpy.testing.assert_array_equal(p, q)

    other = Model([Dense(3), Dense(2)], device=xp).compile()
    with pytest.raises(ValueError, match="architecture differs"):
        other.fit((x, y), epochs=5, resume_from="ckpt.h5", verbose=False)


def test_resume_from_a_checkpoint_without_best_weights(xp, monkeypatch):
    # checkpoints written before they held the best epoch's weights
    x, y = blobs(96, seed=1)
    settings = dict(batch_size=16, val_data=blobs(40, seed=2), early_stopping=True, patience=50)
    snapshots = [Snapshot(at_epoch=1), Snapshot(at_epoch=2)]
    full = mlp(xp, dropout=0.3).compile(optimizer="adam", lr=0.05)
    full.fit((x, y), epochs=4, seed=11, callbacks=snapshots, verbose=False, **settings)
    last = mlp(xp, dropout=0.3).compile(optimizer="adam", lr=0.05)
    last.fit((x, y), epochs=4, seed=11, verbose=False, restore_best=False, **settings)
    assert full.best_weights.epoch == 1  # val_acc is 1.0 from the first epoch on
    fake_io = types.ModuleType("convnet_io")
    fake_io.load_checkpoint = lambda path, *, input_shape=None: {
        key: value for key, value in snapshots[int(path)].saved.items() if key != "best_weights"
    }
    monkeypatch.setitem(sys.modules, "convnet_io", fake_io)

    # the best epoch is the checkpoint's own: its weights are the checkpoint's
    resumed = mlp(xp, dropout=0.3).compile(optimizer="adam", lr=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resumed.fit((x, y), epochs=4, resume_from="0", verbose=False, **settings)
    for p, q in zip(host_leaves(resumed.params), host_leaves(full.params), strict=True):
        numpy.testing.assert_array_equal(p, q)
    assert resumed.best_weights.epoch == 1

    # the best epoch came before the checkpoint's: the last epoch's weights, with a warning
    resumed = mlp(xp, dropout=0.3).compile(optimizer="adam", lr=0.05)
    with pytest.warns(RuntimeWarning) as caught:
        resumed.fit((x, y), epochs=4, resume_from="1", verbose=False, **settings)
    assert [str(w.message) for w in caught] == [
        "EarlyStopping: the best epoch by val_acc is epoch 1, from before the resume, and "
        "the checkpoint resumed from holds no weights of it, so the model keeps those of "
        "epoch 4 (checkpoints written by convnet_io.Checkpoint with early stopping hold them)"
    ]
    assert caught[0].filename == __file__  # pointing at the fit call
    assert resumed.best_weights is None
    for p, q in zip(host_leaves(resumed.params), host_leaves(last.params), strict=True):
        numpy.testing.assert_array_equal(p, q)


def test_a_new_fit_forgets_the_best_weights_of_the_last(xp):
    x, y = blobs(64, seed=1)
    model = mlp(xp, seed=0).compile(optimizer="adam", lr=0.05)
    model.fit((x, y), epochs=2, val_data=(x, y), early_stopping=True, verbose=False)
    assert model.best_weights is not None and model.params is model.best_weights.params
    model.fit((x, y), epochs=1, verbose=False)
    assert model.best_weights is None
    model.fit((x, y), epochs=2, val_data=(x, y), early_stopping=True, verbose=False)
    assert model.best_weights.epoch in (4, 5)  # this fit's epochs only
    model.fit(
        (x, y), epochs=1, val_data=(x, y), early_stopping=True, restore_best=False, verbose=False
    )
    assert model.best_weights is None


def test_a_resume_without_early_stopping_drops_the_checkpoints_best_weights(xp, monkeypatch):
    # only an EarlyStopping that restores the best uses them; kept, every new checkpoint
    # would carry them on
    x, y = blobs(64, seed=1)
    snapshot = Snapshot(at_epoch=3)
    first = mlp(xp, seed=0).compile(optimizer="adam", lr=0.05)
    first.fit((x, y), epochs=3, val_data=(x[:8], y[:8]), early_stopping=True,
              callbacks=[snapshot], verbose=False)  # fmt: skip
    assert snapshot.saved["best_weights"] is not None  # an earlier epoch was the best
    fake_checkpoint_io(monkeypatch, snapshot.saved)
    for settings in ({}, {"early_stopping": True, "restore_best": False}):
        resumed = mlp(xp).compile(optimizer="adam", lr=0.05)
        resumed.fit((x, y), epochs=4, val_data=(x[:8], y[:8]), resume_from="ckpt.h5",
                    verbose=False, **settings)  # fmt: skip
        assert resumed.best_weights is None, settings


def test_resume_warns_when_the_compiled_optimizer_differs_from_the_checkpoints(xp, monkeypatch):
    x, y = blobs(32, seed=1)
    snapshot = Snapshot(at_epoch=1)
    mlp(xp, seed=0).compile(optimizer="adam", lr=0.001).fit(
        (x, y), epochs=1, callbacks=[snapshot], verbose=False
    )
    fake_checkpoint_io(monkeypatch, snapshot.saved)

    resumed = mlp(xp).compile(optimizer="sgd", lr=0.5)
    with pytest.warns(UserWarning) as caught:
        resumed.fit((x, y), epochs=2, resume_from="ckpt.h5", verbose=False)
    assert [str(w.message) for w in caught] == [
        "fit(resume_from='ckpt.h5'): the model was compiled with SGD(weight_decay=0.0, "
        "clip_norm=None, lr=0.5, momentum=0.0, nesterov=False) but the checkpoint was "
        "saved with Adam(weight_decay=0.0, clip_norm=None, lr=0.001, beta1=0.9, "
        "beta2=0.999, eps=1e-08); training resumes with the checkpoint's optimizer and "
        "its state"
    ]
    assert caught[0].filename == __file__  # pointing at the fit call
    assert resumed.optimizer == optim.adam(lr=0.001) and resumed.epoch == 2

    # the same optimizer, or none compiled: nothing to say
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = mlp(xp).compile(optimizer="adam", lr=0.001)
        same.fit((x, y), epochs=2, resume_from="ckpt.h5", verbose=False)
        Model(device=xp).fit((x, y), epochs=2, resume_from="ckpt.h5", verbose=False)


def test_resume_warns_when_the_checkpoint_has_trained_all_the_epochs_asked_for(xp, monkeypatch):
    x, y = blobs(32, seed=1)
    snapshot = Snapshot(at_epoch=2)
    mlp(xp, seed=0).compile().fit((x, y), epochs=2, callbacks=[snapshot], verbose=False)
    fake_checkpoint_io(monkeypatch, snapshot.saved)

    resumed = mlp(xp).compile()
    with pytest.warns(UserWarning) as caught:
        resumed.fit((x, y), epochs=1, resume_from="ckpt.h5", verbose=False)
    assert [str(w.message) for w in caught] == [
        "fit(epochs=1, resume_from=...): the checkpoint has trained 2 epochs, and with "
        "resume_from `epochs` counts them all, so there is nothing left to train; pass "
        "epochs=3 or more to train on"
    ]
    assert caught[0].filename == __file__
    assert resumed.epoch == 2 and len(resumed.history["loss"]) == 2


def test_convnet_numpys_positional_fit_arguments_keep_their_meaning(xp):
    # fit(data, epochs, batch_size, num_classes, val_data, early_stopping, patience,
    #     min_delta, lr_schedule, lr_patience, lr_factor, lr_min), as in ConvNet-NumPy
    x, y = blobs(64, seed=1)
    val = blobs(32, seed=2)
    by_position = mlp(xp, seed=0).compile(optimizer="sgd", lr=0.5)
    by_position.fit((x, y), 4, 16, 2, val, True, 1, 0.5, "plateau", 1, 0.25, 1e-3, verbose=False)
    by_name = mlp(xp, seed=0).compile(optimizer="sgd", lr=0.5)
    by_name.fit(
        (x, y), epochs=4, batch_size=16, num_classes=2, val_data=val, early_stopping=True,
        patience=1, min_delta=0.5, lr_schedule="plateau", lr_patience=1, lr_factor=0.25,
        lr_min=1e-3, verbose=False,
    )  # fmt: skip
    assert by_position.history == by_name.history
    assert by_position.epoch < 4  # early stopping acted: patience 1, min_delta 0.5
    for a, b in zip(host_leaves(by_position.params), host_leaves(by_name.params), strict=True):
        numpy.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError, match="positional"):
        by_name.fit((x, y), 1, 16, 2, val, False, 5, 1e-4, None, 3, 0.5, 1e-6, 0.2)


def test_a_keras_style_fit_x_y_is_refused_with_the_call_to_make(xp):
    x, y = blobs(16)
    with pytest.raises(
        TypeError,
        match=r"fit takes the data as one argument, fit\(\(x, y\), epochs=\.\.\.\), and its "
        r"second argument is epochs; it was given an array of shape \(16,\)",
    ):
        mlp(xp, seed=0).compile().fit(x, y)


def overflowing_mixed_run(xp, **kw):
    """A mixed-precision model whose first steps overflow float16 at the default loss scale
    2**16 (inputs around 50, SGD at 1e-4): the scale has come down a long way after an
    epoch, and a run that forgot it would skip those steps again."""
    model = Model([Dense(8), Activation("relu"), Dense(2)], device=xp, seed=0, **kw)
    x, y = blobs(64, seed=3)
    return model.compile(optimizer="sgd", lr=1e-4, precision="mixed"), (x * 50, y)


def scaler_state(model):
    return float(model.loss_scaler.scale), int(model.loss_scaler.good_steps)


def fake_checkpoint_io(monkeypatch, saved):
    """Make `fit(resume_from=...)` read `saved`, through a convnet_io that holds only
    load_checkpoint."""
    fake_io = types.ModuleType("convnet_io")
    fake_io.load_checkpoint = lambda path, *, input_shape=None: saved
    monkeypatch.setitem(sys.modules, "convnet_io", fake_io)


@pytest.mark.filterwarnings("ignore::convnet_core.precision.MixedPrecisionOnNumPyWarning")
def test_a_resumed_mixed_precision_run_continues_with_its_loss_scale(xp, monkeypatch):
    snapshot = Snapshot(at_epoch=2)
    full, data = overflowing_mixed_run(xp)
    full.fit(data, epochs=4, batch_size=16, callbacks=[snapshot], verbose=False)
    saved_scaler = snapshot.saved["loss_scaler"]
    assert saved_scaler["scale"] < 2.0**16  # steps overflowed and the scale came down
    assert snapshot.saved["precision"] == {"compute_dtype": "float16", "param_dtype": "float32"}

    fake_checkpoint_io(monkeypatch, snapshot.saved)
    for resumed in (overflowing_mixed_run(xp)[0], Model(device=xp)):  # compiled, or bare
        resumed.fit(data, epochs=4, batch_size=16, resume_from="ckpt.h5", verbose=False)
        assert resumed.precision == full.precision and resumed.epoch == 4
        assert scaler_state(resumed) == scaler_state(full)
        assert resumed.history == full.history
        for p, q in zip(host_leaves(resumed.params), host_leaves(full.params), strict=True):
            numpy.testing.assert_array_equal(p, q)

    # without the scaler (a checkpoint from before it was saved) the scale starts at 2**16
    # again: the steps it skips make another run
    fake_checkpoint_io(monkeypatch, {**snapshot.saved, "loss_scaler": None})
    restarted = overflowing_mixed_run(xp)[0]
    restarted.fit(data, epochs=4, batch_size=16, resume_from="ckpt.h5", verbose=False)
    assert restarted.precision == full.precision
    assert not all(
        numpy.array_equal(p, q)
        for p, q in zip(host_leaves(restarted.params), host_leaves(full.params), strict=True)
    )


@pytest.mark.filterwarnings("ignore::convnet_core.precision.MixedPrecisionOnNumPyWarning")
def test_resume_takes_the_checkpoints_precision_and_says_so_when_compiled_otherwise(
    xp, monkeypatch
):
    from convnet_core import precision

    snapshot = Snapshot(at_epoch=1)
    model, data = overflowing_mixed_run(xp)
    model.fit(data, epochs=1, batch_size=16, callbacks=[snapshot], verbose=False)
    fake_checkpoint_io(monkeypatch, snapshot.saved)

    resumed = overflowing_mixed_run(xp)[0].compile(optimizer="sgd", lr=1e-4)  # float32
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed.fit(data, epochs=2, batch_size=16, resume_from="ckpt.h5", verbose=False)
    messages = [
        str(w.message) for w in caught if w.category is not precision.MixedPrecisionOnNumPyWarning
    ]
    assert messages == [
        "fit(resume_from='ckpt.h5'): the model was compiled with precision 'float32' but the "
        "checkpoint was saved with 'mixed'; training resumes with the checkpoint's precision "
        "and its loss scaler"
    ]
    assert resumed.precision == precision.MIXED and resumed.epoch == 2

    # the checkpoint of a float32 run (or one from before precision was saved) resumed by
    # a model compiled for mixed precision
    float32_snapshot = Snapshot(at_epoch=1)
    mlp(xp, seed=0).compile(optimizer="sgd").fit(
        blobs(32), epochs=1, callbacks=[float32_snapshot], verbose=False
    )
    fake_checkpoint_io(monkeypatch, float32_snapshot.saved)
    mixed = mlp(xp).compile(optimizer="sgd", precision="mixed")
    with pytest.warns(UserWarning, match="compiled with precision 'mixed' but the checkpoint"):
        mixed.fit(blobs(32), epochs=2, resume_from="ckpt.h5", verbose=False)
    assert mixed.precision == precision.FLOAT32 and mixed.loss_scaler is None
    old = {key: value for key, value in float32_snapshot.saved.items() if key != "precision"}
    fake_checkpoint_io(monkeypatch, old)
    mixed = mlp(xp).compile(optimizer="sgd", precision="mixed")
    mixed.fit(blobs(32), epochs=2, resume_from="ckpt.h5", verbose=False)
    assert mixed.precision == precision.MIXED  # nothing saved: the compiled one
    # a new scaler, one step (one batch) from the default 2**16: kept or halved
    assert scaler_state(mixed) in {(2.0**16, 1), (2.0**15, 0)}


class FakeModel:
    def __init__(self):
        self.history = {}
        self.params = self.state = None
        self.stop_training = False
        self.resuming = False
        self.lr = 1.0


def test_early_stopping_on_a_scripted_sequence_restores_the_best():
    model = FakeModel()
    stopper = EarlyStopping("val_loss", patience=2, min_delta=0.01)
    stopper.on_train_begin(model)
    losses = [1.0, 0.8, 0.795, 0.9, 0.5]  # 0.795 is not better by min_delta
    for epoch, value in enumerate(losses, start=1):
        model.params = f"params after epoch {epoch}"
        stopper.on_epoch_end(model, epoch, {"val_loss": value})
        if model.stop_training:
            break
    assert epoch == 4 and stopper.stopped_epoch == 4 and stopper.best_epoch == 2
    stopper.on_train_end(model)
    assert model.params == "params after epoch 2"


def test_early_stopping_rebuilds_its_counters_from_history():
    model = FakeModel()
    model.history = {"val_acc": [0.5, 0.7, 0.69]}
    stopper = EarlyStopping("val_acc", patience=2)
    stopper.on_train_begin(model)  # a new fit: the old history is not replayed
    assert stopper.best is None and stopper.wait == 0
    model.resuming = True
    stopper.on_train_begin(model)
    assert stopper.mode == "max" and stopper.best == 0.7 and stopper.wait == 1
    stopper.on_epoch_end(model, 4, {"val_acc": 0.7})
    assert model.stop_training


def test_plateau_callback_on_a_scripted_sequence():
    model = FakeModel()
    plateau = ReduceLROnPlateau("loss", factor=0.5, patience=2, min_lr=0.2)
    plateau.on_train_begin(model)
    lrs = []
    for epoch, value in enumerate([1.0, 1.0, 1.0, 0.5, 0.6, 0.7, 0.8, 0.9], start=1):
        plateau.on_epoch_end(model, epoch, {"loss": value})
        lrs.append(model.lr)
    assert lrs == [1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.2]


def test_a_nan_epoch_is_no_improvement_and_not_the_best():
    model = FakeModel()
    stopper = EarlyStopping("loss", patience=2, min_delta=0.0)
    stopper.on_train_begin(model)
    for epoch, value in enumerate([math.nan, 1.0, 0.9, 0.8], start=1):
        stopper.on_epoch_end(model, epoch, {"loss": value})
    assert not model.stop_training and stopper.best == 0.8 and stopper.best_epoch == 4


def test_fit_early_stopping_stops_and_keeps_the_best(xp):
    x, y = blobs(64)
    model = mlp(xp, seed=0).compile(optimizer="sgd", lr=0.0)  # nothing can improve
    history = model.fit((x, y), epochs=20, early_stopping=True, patience=3, verbose=False)
    assert len(history["loss"]) == 4 and model.epoch == 4


def test_fit_plateau_halves_the_rate_while_stuck(xp):
    x, y = blobs(64)
    model = mlp(xp, seed=0).compile(optimizer="sgd", lr=1e-3)
    history = model.fit(
        (x, y),
        epochs=5,
        lr_schedule="plateau",
        lr_patience=1,
        lr_factor=0.5,
        monitor="val_loss",
        val_data=(x[:8], y[:8]),
        verbose=False,
        callbacks=[FreezeWeights()],
    )
    assert history["lr"] == pytest.approx([1e-3, 1e-3, 5e-4, 2.5e-4, 1.25e-4])


class FreezeWeights:
    """Puts the initial weights back after every epoch, so the metrics never improve."""

    def on_train_begin(self, model):
        self.params = model.params

    def on_epoch_end(self, model, epoch, logs):
        model.params = self.params


def test_cosine_schedule_follows_the_formula(xp):
    x, y = blobs(32)
    model = mlp(xp, seed=0).compile(optimizer="sgd", lr=0.1)
    history = model.fit((x, y), epochs=4, lr_schedule="cosine", lr_min=0.0, verbose=False)
    want = [0.1 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)]
    assert history["lr"] == pytest.approx(want)
    custom = mlp(xp, seed=0).compile(optimizer="sgd", lr=0.1)
    history = custom.fit((x, y), epochs=3, lr_schedule=lambda e, lr: 0.1 / (e + 1), verbose=False)
    assert history["lr"] == pytest.approx([0.1, 0.05, 0.1 / 3])


def test_divergence_stops_with_a_clear_error_and_keeps_good_params(xp):
    x, y = blobs(128)
    model = mlp(xp, seed=0).compile(optimizer="sgd", lr=1e30)
    model.build((4,))
    with (
        numpy.errstate(over="ignore", invalid="ignore"),
        pytest.raises(NonFiniteLossError, match=r"epoch 1, batch \d+.*lower learning rate"),
    ):
        model.fit((x, y), epochs=2, batch_size=8, verbose=False)
    assert all(numpy.isfinite(leaf).all() for leaf in host_leaves(model.params))
    assert model.epoch == 0


def test_reported_loss_and_accuracy_are_the_means_over_every_sample(xp):
    # lr=0 keeps the weights, so the epoch's figures are those of the untrained model on
    # all 100 samples; batches of 32 leave a last batch of 4, which must weigh 4/100
    x, y = blobs(100, seed=3)
    model = mlp(xp, seed=0).compile(optimizer="sgd", lr=0.0)
    history = model.fit((x, y), epochs=1, batch_size=32, verbose=False)
    probabilities = numpy.asarray(model.predict(x), dtype=numpy.float64)  # (100, 2)
    want_loss = -numpy.log(probabilities[numpy.arange(100), y]).mean()
    want_acc = (probabilities.argmax(axis=1) == y).mean()
    assert 0.2 < want_acc < 0.8  # an untrained model: neither all right nor all wrong
    assert history["loss"][0] == pytest.approx(want_loss, rel=1e-5)
    assert history["acc"][0] == want_acc
    assert model.evaluate(x, y) == (pytest.approx(want_loss, rel=1e-5), want_acc)


def test_running_totals_read_back_together_and_name_the_first_bad_batch(xp):
    totals = RunningTotals(xp)
    for batch, (n, loss, correct) in enumerate([(8, 0.5, 6), (8, 1.5, 2), (4, 2.0, 4)], 1):
        totals.add(batch, n, xp.asarray(loss, dtype="float32"), xp.asarray(correct))
    assert (len(totals), totals.seen, totals.settled) == (3, 20, 0)
    assert totals.settle() is None and len(totals) == 0 and totals.settled == 20
    assert totals.metrics(track_accuracy=True) == {"loss": 24.0 / 20, "acc": 12 / 20}
    totals.add(4, 4, xp.asarray(1.0), None)
    totals.add(5, 4, xp.asarray(numpy.nan), None)
    totals.add(6, 4, xp.asarray(numpy.inf), None)
    assert totals.settle() == 5
    assert totals.metrics(track_accuracy=False)["acc"] is None


class Recorder:
    def __init__(self, stop_at=None):
        self.calls = []
        self.stop_at = stop_at

    def on_train_begin(self, model):
        self.calls.append(("begin", model.epoch))

    def on_epoch_end(self, model, epoch, logs):
        self.calls.append(("epoch", epoch, sorted(logs)))
        if epoch == self.stop_at:
            model.stop_training = True

    def on_train_end(self, model):
        self.calls.append(("end", model.epoch))


def test_callback_protocol(xp):
    x, y = blobs(32)
    recorder = Recorder(stop_at=2)
    model = mlp(xp, seed=0).compile()
    model.fit((x, y), epochs=5, callbacks=[recorder, object()], verbose=False)
    keys = ["acc", "loss", "lr", "val_acc", "val_loss"]
    assert recorder.calls == [("begin", 0), ("epoch", 1, keys), ("epoch", 2, keys), ("end", 2)]


class ArrayDataset:
    """A dataset with ConvNet-NumPy's batches(batch_size, shuffle=...) interface."""

    def __init__(self, x, y, takes_seed):
        self.x, self.y = x, y
        self.seeds = []
        if takes_seed:
            self.batches = self._batches_with_seed
        else:
            self.batches = self._batches

    def __len__(self):
        return len(self.x)

    def _batches(self, batch_size, shuffle=True):
        for start in range(0, len(self.x), batch_size):
            yield self.x[start : start + batch_size], self.y[start : start + batch_size]

    def _batches_with_seed(self, batch_size, shuffle=True, seed=None):
        self.seeds.append(seed)
        order = numpy.random.default_rng(seed).permutation(len(self.x))
        for start in range(0, len(self.x), batch_size):
            index = order[start : start + batch_size]
            yield self.x[index], self.y[index]


def test_datasets_with_and_without_a_seed_argument(xp):
    x, y = blobs(64)
    seeded = ArrayDataset(x, y, takes_seed=True)
    mlp(xp, seed=0).compile(lr=0.05).fit(seeded, epochs=2, batch_size=16, verbose=False)
    assert len(seeded.seeds) == 3  # a look at the first batch, then one call per epoch
    assert None not in seeded.seeds[1:]
    assert seeded.seeds[1] != seeded.seeds[2]  # a new order each epoch
    plain = ArrayDataset(x, y, takes_seed=False)
    history = mlp(xp, seed=0).compile(lr=0.05).fit(plain, epochs=3, verbose=False, val_data=plain)
    assert history["acc"][-1] == 1.0 and history["val_acc"][-1] == 1.0


def test_one_hot_labels_train_like_integer_labels(xp):
    x, y = blobs(64)
    ints = mlp(xp, seed=0).compile().fit((x, y), epochs=2, seed=1, verbose=False)
    hot = (
        mlp(xp, seed=0)
        .compile()
        .fit((x, numpy.eye(2)[y]), epochs=2, seed=1, num_classes=2, verbose=False)
    )
    assert hot["acc"] == ints["acc"]
    assert hot["loss"] == pytest.approx(ints["loss"], rel=1e-6)


def test_val_split_and_bad_arguments(xp):
    x, y = blobs(50)
    model = mlp(xp, seed=0).compile()
    history = model.fit((x, y), epochs=1, val_split=0.2, verbose=False)
    assert history["val_loss"][0] is not None
    with pytest.raises(ValueError, match="num_classes=3"):
        model.fit((x, y), epochs=1, num_classes=3, verbose=False)
    with pytest.raises(ValueError, match="compile"):
        mlp(xp).fit((x, y), epochs=1, verbose=False)
    with pytest.raises(ValueError, match="X has 50 samples but y has 10"):
        model.fit((x, y[:10]), epochs=1, verbose=False)
    with pytest.raises(ValueError, match="lr_schedule"):
        model.fit((x, y), epochs=1, lr_schedule="linear", verbose=False)


def test_mse_regression_has_no_accuracy(xp):
    rng = numpy.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype(numpy.float32)
    target = x @ numpy.array([1.0, -2.0, 0.5], numpy.float32)
    model = Model([Dense(1)], device=xp, seed=0).compile(loss="mse", optimizer="sgd", lr=0.1)
    history = model.fit((x, target), epochs=20, batch_size=16, verbose=False)  # (N,) targets
    assert history["acc"] == [None] * 20
    assert history["loss"][-1] < 1e-3


def test_mse_with_integer_labels_trains_on_one_hot_rows(xp):
    x, y = blobs(64)
    model = mlp(xp, seed=0).compile(loss="mse", optimizer="adam", lr=0.05)
    history = model.fit((x, y), epochs=5, batch_size=16, verbose=False)
    assert history["acc"][-1] == 1.0
    outputs = model.predict(x)  # mse: the raw outputs, not probabilities
    loss, _ = model.evaluate(x, y)
    assert loss == pytest.approx(((outputs - numpy.eye(2)[y]) ** 2).mean(), rel=1e-5)


def test_verbose_prints_one_line_per_epoch_and_silent_prints_nothing(xp, capsys):
    x, y = blobs(32)
    mlp(xp, seed=0).compile().fit((x, y), epochs=2, verbose=False)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    mlp(xp, seed=0).compile().fit((x, y), epochs=2, verbose=True)
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]
    assert "loss" in lines[0] and "acc" in lines[0] and "samples/s" in lines[0]


@pytest.mark.filterwarnings("ignore::convnet_core.precision.MixedPrecisionOnNumPyWarning")
def test_mixed_precision_fit_keeps_float32_weights(xp):
    x, y = blobs(64)
    model = mlp(xp, seed=0).compile(optimizer="adam", lr=0.05, precision="mixed")
    history = model.fit((x, y), epochs=4, batch_size=16, verbose=False)
    assert history["acc"][-1] == 1.0
    assert {leaf.dtype for leaf in host_leaves(model.params)} == {numpy.dtype("float32")}
    assert float(model.loss_scaler.scale) > 0


MIXED_ON_NUMPY = (
    "fit: mixed precision on NumPy is slow: NumPy has no fast float16 matrix product, so a "
    "step takes tens of times as long as in float32 (about 37x for the README model). It is "
    "meant for GPUs (CuPy); on a CPU use it only to check the arithmetic, and "
    "compile(precision='float32') to train"
)


def slow_precision_warnings(caught):
    from convnet_core.precision import MixedPrecisionOnNumPyWarning

    return [w for w in caught if issubclass(w.category, MixedPrecisionOnNumPyWarning)]


def test_mixed_precision_on_numpy_warns_once_per_model(xp):
    x, y = blobs(32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # so that only the model's own "once" counts
        model = mlp(xp, seed=0).compile(optimizer="sgd", precision="mixed")
        model.fit((x, y), epochs=1, batch_size=16, verbose=False)
        model.fit((x, y), epochs=1, batch_size=16, verbose=False)
        model.compile(optimizer="adam", precision="mixed")  # compiled again: still once
        model.fit((x, y), epochs=1, batch_size=16, verbose=False)
        mlp(xp, seed=0).compile(precision="float32").fit((x, y), verbose=False)
        found = slow_precision_warnings(caught)
        if xp is not numpy:  # CuPy (or its stand-in): where mixed precision belongs
            assert found == []
            return
        assert [str(w.message) for w in found] == [MIXED_ON_NUMPY]
        assert found[0].filename == __file__  # points at the call of fit
        mlp(xp, seed=1).compile(precision="mixed").fit((x, y), verbose=False)  # a new model
        assert len(slow_precision_warnings(caught)) == 2


class ParamsLog:
    """Keeps the params after each epoch; from epoch `zero_from` on, zeroes them."""

    def __init__(self, zero_from):
        self.zero_from = zero_from
        self.params = {}

    def on_epoch_end(self, model, epoch, logs):
        self.params[epoch] = model.params
        if epoch >= self.zero_from:
            model.params = T.map(lambda p: p * 0, model.params)


def test_fit_restores_the_best_epoch_after_early_stopping(xp):
    x, y = blobs(64)
    log = ParamsLog(zero_from=2)  # from epoch 3 on the model cannot learn anything
    model = mlp(xp, seed=0).compile(optimizer="adam", lr=0.05)
    history = model.fit(
        (x, y),
        epochs=10,
        val_data=(x, y),
        early_stopping=True,
        patience=2,
        monitor="val_loss",
        callbacks=[log],
        verbose=False,
    )
    assert model.epoch == 4  # epochs 3 and 4 did not improve on the best
    best = int(numpy.argmin(history["val_loss"])) + 1
    assert best <= 2
    for p, q in zip(host_leaves(model.params), host_leaves(log.params[best]), strict=True):
        numpy.testing.assert_array_equal(p, q)


class TTY(io.StringIO):
    def isatty(self):
        return True


def test_plain_progress_line_without_tqdm(xp, monkeypatch, capsys):
    from convnet_core import callbacks, training

    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    terminal = TTY()
    monkeypatch.setattr(callbacks.sys, "stderr", terminal)
    monkeypatch.setattr(
        training, "EpochProgress", functools.partial(callbacks.EpochProgress, interval=0.0)
    )
    x, y = blobs(64)
    mlp(xp, seed=0).compile().fit((x, y), epochs=1, batch_size=16, verbose=True)
    shown = terminal.getvalue()
    assert "\repoch 1/1 batch 2/4  loss " in shown and "samples/s" in shown
    assert capsys.readouterr().out.startswith("epoch 1/1: loss ")


class RecordingTqdm:
    """A stand-in for tqdm.auto.tqdm that records each bar made and each batch counted."""

    made: list = []

    def __init__(self, total=None, **options):
        self.updates = 0
        RecordingTqdm.made.append(self)

    def update(self, n=1):
        self.updates += n

    def set_postfix_str(self, text, refresh=True):
        pass

    def close(self):
        pass


@pytest.mark.parametrize(
    ("terminal", "jupyter", "bar_shown"),
    [(True, False, True), (False, False, False), (False, True, True)],
    ids=["terminal", "log file", "jupyter kernel"],
)
def test_the_progress_bar_is_drawn_only_where_it_can_be_seen(
    xp, monkeypatch, capsys, terminal, jupyter, bar_shown
):
    from convnet_core import callbacks

    RecordingTqdm.made = []
    monkeypatch.setitem(sys.modules, "tqdm.auto", types.SimpleNamespace(tqdm=RecordingTqdm))
    monkeypatch.setattr(callbacks.sys, "stderr", TTY() if terminal else io.StringIO())
    if jupyter:
        monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    else:
        monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    x, y = blobs(64)
    mlp(xp, seed=0).compile().fit((x, y), epochs=2, batch_size=16, verbose=True)
    assert [bar.updates for bar in RecordingTqdm.made] == ([4, 4] if bar_shown else [])
    epoch_lines = capsys.readouterr().out.splitlines()
    assert [line[:11] for line in epoch_lines] == ["epoch 1/2: ", "epoch 2/2: "]


class _LabelledBatches:
    """A minimal dataset object: batches() plus the `labels` attribute datasets keep."""

    def __init__(self, x, y):
        self.x, self.labels = x, y

    def batches(self, batch_size, shuffle=True):
        for start in range(0, len(self.x), batch_size):
            yield self.x[start : start + batch_size], self.labels[start : start + batch_size]


@pytest.mark.parametrize("source", ["arrays", "dataset"])
def test_labels_beyond_the_output_units_are_named_before_training(xp, source):
    x, y = blobs(n=300)
    y = y.copy()
    y[-1] = 7  # far in the data: a check of the first batches only would miss it
    data = (x, y) if source == "arrays" else _LabelledBatches(x, y)
    model = mlp(xp, seed=0).compile(optimizer="adam", lr=0.01)
    with pytest.raises(ValueError, match=r"labels must be classes in \[0, 2\).*from 0 to 7"):
        model.fit(data, epochs=1, batch_size=32, verbose=False)
    assert model.epoch == 0


def test_a_learning_rate_scheduler_passed_as_a_callback_sets_the_rate(xp):
    from convnet_core.callbacks import LearningRateScheduler

    x, y = blobs(32)
    model = mlp(xp, seed=0).compile(optimizer="sgd", lr=0.1)
    scheduler = LearningRateScheduler(lambda epoch, lr: 0.01 * (epoch + 1))
    history = model.fit((x, y), epochs=3, callbacks=[scheduler], verbose=False)
    assert history["lr"] == pytest.approx([0.01, 0.02, 0.03])


class StopsAtBatch:
    """Batches of 8 in order; at batch `bad` (1-based) its inputs become NaN, or it raises
    KeyboardInterrupt, as a user's Ctrl-C would."""

    def __init__(self, x, y, bad, interrupt=False):
        self.x, self.y, self.bad, self.interrupt = x, y, bad, interrupt

    def batches(self, batch_size, shuffle=False):
        for number, start in enumerate(range(0, len(self.x), batch_size), start=1):
            x = self.x[start : start + batch_size]
            if number == self.bad:
                if self.interrupt:
                    raise KeyboardInterrupt
                x = numpy.full_like(x, numpy.nan)
            yield x, self.y[start : start + batch_size]


@pytest.mark.parametrize("interrupt", [False, True])
def test_a_stopped_epoch_keeps_the_last_verified_step_not_the_epoch_start(
    xp, interrupt, monkeypatch
):
    # batch 3 goes wrong: batch 2's finite loss vouches for the weights after step 1, which
    # must be what the model keeps (the weights after step 2 have no loss to vouch for them).
    # A GPU reads losses back every GPU_CHECK_EVERY batches; here every batch, as a CPU does.
    from convnet_core import training

    monkeypatch.setattr(training, "GPU_CHECK_EVERY", 1)
    x, y = blobs(64)
    model = mlp(xp, seed=0).compile(optimizer="sgd", lr=0.5)
    expect = pytest.raises(KeyboardInterrupt if interrupt else NonFiniteLossError)
    with numpy.errstate(invalid="ignore"), expect:
        model.fit(StopsAtBatch(x, y, 3, interrupt), epochs=1, batch_size=8, verbose=False)
    one_step = mlp(xp, seed=0).compile(optimizer="sgd", lr=0.5)
    one_step.fit((x[:8], y[:8]), epochs=1, batch_size=8, shuffle=False, verbose=False)
    for kept, want in zip(host_leaves(model.params), host_leaves(one_step.params), strict=True):
        numpy.testing.assert_array_equal(kept, want)


@pytest.mark.filterwarnings("ignore::convnet_core.precision.MixedPrecisionOnNumPyWarning")
@pytest.mark.parametrize("interrupt", [False, True])
def test_a_stopped_mixed_epoch_keeps_the_loss_scale_of_the_step_it_keeps(
    xp, interrupt, monkeypatch
):
    # As above, the model goes back to the weights after step 1; its loss scaler must be
    # the one after step 1 too (good_steps 1), not the one after batch 3's skipped step
    # (scale halved) or after step 2 (good_steps 2), or a rerun would not match.
    from convnet_core import training

    monkeypatch.setattr(training, "GPU_CHECK_EVERY", 1)
    x, y = blobs(64)

    def mixed_model():
        model = mlp(xp, seed=0).compile(optimizer="sgd", lr=0.5, precision="mixed")
        model.loss_scaler = DynamicLossScaler(scale=256.0)  # 2^16 would overflow step 1
        return model

    model = mixed_model()
    expect = pytest.raises(KeyboardInterrupt if interrupt else NonFiniteLossError)
    with numpy.errstate(invalid="ignore"), expect:
        model.fit(StopsAtBatch(x, y, 3, interrupt), epochs=1, batch_size=8, verbose=False)
    one_step = mixed_model()
    one_step.fit((x[:8], y[:8]), epochs=1, batch_size=8, shuffle=False, verbose=False)
    assert model.loss_scaler.to_config() == one_step.loss_scaler.to_config()
    assert (
        model.loss_scaler.to_config()["scale"],
        model.loss_scaler.to_config()["good_steps"],
    ) == (256.0, 1)
    for kept, want in zip(host_leaves(model.params), host_leaves(one_step.params), strict=True):
        numpy.testing.assert_array_equal(kept, want)


def test_a_label_equal_to_the_number_of_classes_is_refused(xp):
    x, y = blobs(16)
    y[3] = 2  # the model has 2 outputs: classes 0 and 1
    with pytest.raises(ValueError, match=r"labels must be classes in \[0, 2\).*from 0 to 2"):
        mlp(xp, seed=0).compile().fit((x, y), epochs=1, verbose=False)


def test_shuffling_and_dropout_draw_from_different_streams():
    from convnet_core.training import DROPOUT_STREAM, SHUFFLE_STREAM, epoch_seed

    shuffle, dropout = epoch_seed(7, 2, SHUFFLE_STREAM), epoch_seed(7, 2, DROPOUT_STREAM)
    assert shuffle != dropout
    assert shuffle == epoch_seed(7, 2, SHUFFLE_STREAM) != epoch_seed(7, 3, SHUFFLE_STREAM)


def test_cosine_schedule_ends_at_lr_min(xp):
    x, y = blobs(32)
    model = mlp(xp, seed=0).compile(optimizer="sgd", lr=0.1)
    history = model.fit((x, y), epochs=3, lr_schedule="cosine", lr_min=0.01, verbose=False)
    want = [0.01 + 0.09 * 0.5 * (1 + math.cos(math.pi * e / 3)) for e in range(3)]
    assert history["lr"] == pytest.approx(want)


def test_fit_checks_the_optimizer_state_once_before_training(xp):
    # the steps skip the optimizer's own checks (fit made sure of the state, the layers of
    # each gradient), so a foreign state must be caught here
    x, y = blobs(32)
    model = mlp(xp, seed=0).compile(optimizer="adam", lr=0.1)
    model.build((x.shape[1],))
    model.opt_state = optim.sgd(momentum=0.9).init(model.params)
    with pytest.raises(ValueError) as error:
        model.fit((x, y), epochs=1, verbose=False)
    assert str(error.value).startswith("adam.fit: the optimizer state has no slot 'm': ")
    assert model.epoch == 0


def test_cosine_schedule_refuses_an_lr_min_above_the_rate(xp):
    x, y = blobs(32)
    model = mlp(xp, seed=0).compile(optimizer="sgd", lr=1e-7)
    with pytest.raises(ValueError) as error:
        model.fit((x, y), epochs=2, lr_schedule="cosine", verbose=False)  # lr_min 1e-6
    assert str(error.value) == (
        "fit: lr_schedule='cosine' decays from the optimizer's lr=1e-07 to lr_min=1e-06, "
        "which is higher; pass lr_min <= lr"
    )
    assert model.epoch == 0


class HalvesAtEpochEnd:
    def on_epoch_end(self, model, epoch, logs):
        model.lr = model.lr / 2


def test_history_records_the_rate_each_epoch_ran_at(xp):
    x, y = blobs(32)
    model = mlp(xp, seed=0).compile(optimizer="sgd", lr=0.1)
    history = model.fit((x, y), epochs=3, callbacks=[HalvesAtEpochEnd()], verbose=False)
    assert history["lr"] == pytest.approx([0.1, 0.05, 0.025])
    assert model.lr == pytest.approx(0.0125)


def test_huber_with_integer_labels_trains_on_one_hot_rows(xp):
    from convnet_core import losses

    x, y = blobs(64)
    model = mlp(xp, seed=0).compile(loss="huber", optimizer="adam", lr=0.05)
    model.fit((x, y), epochs=2, batch_size=16, verbose=False)
    loss, _ = model.evaluate(x, y)
    outputs = model.predict(x).astype(numpy.float64)  # huber: the raw outputs
    want, _ = losses.huber(outputs, numpy.eye(2)[y], xp=numpy)
    assert loss == pytest.approx(float(want), rel=1e-5)


def test_val_split_trains_on_the_rest_only(xp):
    x, y = blobs(40)
    split = mlp(xp, seed=0).compile(optimizer="sgd", lr=0.1)
    history = split.fit((x, y), epochs=2, val_split=0.25, seed=3, verbose=False)
    apart = mlp(xp, seed=0).compile(optimizer="sgd", lr=0.1)
    apart_history = apart.fit(
        (x[:30], y[:30]), epochs=2, val_data=(x[30:], y[30:]), seed=3, verbose=False
    )
    assert history["loss"] == pytest.approx(apart_history["loss"], rel=1e-6)
    assert history["val_loss"] == pytest.approx(apart_history["val_loss"], rel=1e-6)
    for a, b in zip(host_leaves(split.params), host_leaves(apart.params), strict=True):
        numpy.testing.assert_allclose(a, b, rtol=1e-6)
