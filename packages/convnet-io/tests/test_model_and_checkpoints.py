"""Whole models: Model.save/Model.load, the Checkpoint callback, and resuming fit."""

import json
import os
import warnings

import convnet_io
import numpy
import pytest
from convnet_core import Model, optim, tree
from convnet_core import layers as L
from convnet_core.backend import to_host
from convnet_io_helpers import assert_same_tree


def data(seed=0, n=48):
    rng = numpy.random.default_rng(seed)
    x = rng.normal(size=(n, 1, 8, 8)).astype("float32")
    y = (x[:, 0, :4].mean(axis=(1, 2)) > 0).astype("int64") + 2 * (x[:, 0, 4:].mean((1, 2)) > 0)
    return x, y


def new_model(seed=7):
    model = Model(
        [
            L.Conv2D(4, (3, 3)),
            L.BatchNorm2D(),
            L.Activation("relu"),
            L.MaxPool2D((2, 2)),
            L.Dropout(0.2),
            L.Flatten(),
            L.Dense(4),
        ],
        seed=seed,
        device="cpu",
    )
    return model.compile(loss="categorical_crossentropy", optimizer="adam", lr=0.01)


@pytest.mark.parametrize("suffix", [".h5", ".npz"])
def test_model_save_load_restores_the_whole_training_state(tmp_path, suffix):
    x, y = data()
    model = new_model()
    model.fit((x, y), epochs=2, batch_size=16, verbose=False)
    path = tmp_path / f"model{suffix}"
    model.save(path, metadata={"note": "two epochs"})

    loaded = Model.load(path, device="cpu")  # where `model` is, to compare bit for bit
    assert isinstance(loaded, Model) and loaded.xp is numpy
    assert loaded.network == model.network and loaded.input_shape == model.input_shape
    assert_same_tree(loaded.params, model.params)
    assert_same_tree(loaded.state, model.state)
    assert_same_tree(loaded.opt_state, model.opt_state, exact_kinds=False)
    assert optim.to_config(loaded.optimizer) == optim.to_config(model.optimizer)
    assert loaded.epoch == 2 and loaded.history == model.history
    assert loaded.get_rng_state() == model.get_rng_state()
    assert loaded.loss_name == model.loss_name
    assert numpy.array_equal(loaded.predict(x), model.predict(x))
    # both continue identically: nothing that training depends on was lost
    model.fit((x, y), epochs=1, batch_size=16, verbose=False)
    loaded.fit((x, y), epochs=1, batch_size=16, verbose=False)
    assert_same_tree(loaded.params, model.params)
    parts = convnet_io.load(path, parts=True)
    assert parts.metadata["note"] == "two epochs" and parts.metadata["epoch"] == 2


def test_a_float64_model_loads_as_float64(tmp_path):
    x, y = data()
    model = Model([L.Flatten(), L.Dense(4)], seed=1, device="cpu", dtype="float64")
    model.compile(loss="categorical_crossentropy", optimizer="sgd", lr=0.1)
    model.fit((x, y), epochs=1, batch_size=16, verbose=False)
    model.save(tmp_path / "m.h5")
    loaded = Model.load(tmp_path / "m.h5", device="cpu")
    assert loaded.dtype == numpy.float64  # was float32: float64 weights fed float32 inputs
    assert loaded.predict(x).dtype == numpy.float64
    numpy.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    with pytest.raises(ValueError, match="this model's dtype is float64"):
        loaded.compile(precision="mixed")


def test_load_puts_the_model_on_the_device_asked_for(tmp_path):
    x, y = data()
    model = new_model()
    model.fit((x, y), epochs=1, batch_size=16, verbose=False)
    path = tmp_path / "model.h5"
    model.save(path)

    on_cpu = convnet_io.load(path, device="cpu")

    assert on_cpu.xp is numpy
    assert all(type(leaf) is numpy.ndarray for leaf in tree.leaves(on_cpu.params))
    numpy.testing.assert_array_equal(on_cpu.predict(x), model.predict(x))
    with pytest.raises(ValueError, match="parts=True gives host NumPy arrays"):
        convnet_io.load(path, parts=True, device="cpu")


def test_interrupted_and_resumed_run_ends_with_the_same_params(tmp_path):
    x, y = data()
    straight = new_model()
    straight.fit((x, y), epochs=4, batch_size=16, verbose=False)

    path = tmp_path / "ckpt.h5"
    first = new_model()
    first.fit(
        (x, y), epochs=2, batch_size=16, verbose=False, callbacks=[convnet_io.Checkpoint(path)]
    )
    del first  # the "crash"
    resumed = Model(device="cpu")  # a fresh process knows nothing but the file
    resumed.compile(loss="categorical_crossentropy", optimizer="adam", lr=0.01)
    resumed.fit((x, y), epochs=4, batch_size=16, verbose=False, resume_from=path)

    assert resumed.epoch == 4
    assert_same_tree(resumed.params, straight.params)
    assert_same_tree(resumed.state, straight.state)
    assert resumed.history["loss"] == straight.history["loss"]


def overflowing_mixed_model(xp):
    """Dense(8) -> relu -> Dense(2) in mixed precision on inputs around 50 with SGD at
    1e-4: its first steps overflow float16 at the default loss scale 2**16, so the scale
    it has after two epochs decides which later steps are skipped."""
    model = Model([L.Dense(8), L.Activation("relu"), L.Dense(2)], seed=0, device=xp)
    return model.compile(loss="categorical_crossentropy", optimizer="sgd", lr=1e-4,
                         precision="mixed")  # fmt: skip


def mixed_data():
    rng = numpy.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32") * 50
    return x, (x.sum(axis=1) > 0).astype("int64")


def host_scaler(model):
    return float(model.loss_scaler.scale), int(model.loss_scaler.good_steps)


MIXED = {"compute_dtype": "float16", "param_dtype": "float32"}


@pytest.mark.filterwarnings("ignore::convnet_core.precision.MixedPrecisionOnNumPyWarning")
def test_a_resumed_mixed_precision_run_ends_with_the_same_params(tmp_path, xp):
    x, y = mixed_data()
    straight = overflowing_mixed_model(xp)
    straight.fit((x, y), epochs=2, batch_size=16, verbose=False)
    at_two = host_scaler(straight)
    straight.fit((x, y), epochs=2, batch_size=16, verbose=False)

    path = tmp_path / "ckpt.h5"
    first = overflowing_mixed_model(xp)
    first.fit((x, y), epochs=2, batch_size=16, verbose=False,
              callbacks=[convnet_io.Checkpoint(path)])  # fmt: skip
    saved = convnet_io.load_checkpoint(path)
    assert saved["precision"] == MIXED
    assert (saved["loss_scaler"]["scale"], saved["loss_scaler"]["good_steps"]) == at_two
    assert at_two[0] < 2.0**16  # the scale came down: forgetting it would change the run
    del first  # the "crash"
    resumed = Model(device=xp)  # a fresh process knows nothing but the file
    resumed.compile(loss="categorical_crossentropy", optimizer="sgd", lr=1e-4,
                    precision="mixed")  # fmt: skip
    resumed.fit((x, y), epochs=4, batch_size=16, verbose=False, resume_from=path)

    assert resumed.epoch == 4 and host_scaler(resumed) == host_scaler(straight)
    assert resumed.history["loss"] == straight.history["loss"]
    assert_same_tree(to_host(resumed.params), to_host(straight.params))


@pytest.mark.filterwarnings("ignore::convnet_core.precision.MixedPrecisionOnNumPyWarning")
@pytest.mark.parametrize("suffix", [".h5", ".npz"])
def test_model_load_keeps_mixed_precision_and_its_loss_scaler(tmp_path, xp, suffix):
    from convnet_core import precision

    x, y = mixed_data()
    model = overflowing_mixed_model(xp)
    model.fit((x, y), epochs=2, batch_size=16, verbose=False)
    model.save(tmp_path / f"m{suffix}")
    loaded = Model.load(tmp_path / f"m{suffix}", device=xp)
    assert loaded.precision == precision.MIXED  # was float32: a later fit left mixed
    assert loaded.loss_scaler.to_config() == model.loss_scaler.to_config()
    assert convnet_io.load(tmp_path / f"m{suffix}", parts=True).metadata["precision"] == MIXED
    model.fit((x, y), epochs=1, batch_size=16, verbose=False)
    loaded.fit((x, y), epochs=1, batch_size=16, verbose=False)
    assert host_scaler(loaded) == host_scaler(model)
    assert_same_tree(to_host(loaded.params), to_host(model.params))


def drop_metadata(path, *names):
    """Rewrite the model file at `path` without the metadata entries `names`, as files
    written before those entries existed."""
    from convnet_io import format as fmt

    attributes, arrays = fmt.read_raw(path)
    metadata = json.loads(attributes[""]["metadata"])
    for name in names:
        del metadata[name]
    attributes[""]["metadata"] = json.dumps(metadata)
    fmt.write_raw(path, attributes, arrays)


@pytest.mark.filterwarnings("ignore::convnet_core.precision.MixedPrecisionOnNumPyWarning")
def test_files_without_precision_load_as_float32_and_resume_as_compiled(tmp_path):
    from convnet_core import precision

    x, y = mixed_data()
    path = tmp_path / "ckpt.h5"
    overflowing_mixed_model("cpu").fit(
        (x, y), epochs=1, batch_size=16, verbose=False, callbacks=[convnet_io.Checkpoint(path)]
    )
    drop_metadata(path, "precision", "loss_scaler")
    old = Model.load(path, device="cpu")
    assert old.precision == precision.FLOAT32 and old.loss_scaler is None
    checkpoint = convnet_io.load_checkpoint(path)
    assert checkpoint["precision"] is None and checkpoint["loss_scaler"] is None
    resumed = overflowing_mixed_model("cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.simplefilter("ignore", precision.MixedPrecisionOnNumPyWarning)
        resumed.fit((x, y), epochs=2, batch_size=16, verbose=False, resume_from=path)
    assert resumed.precision == precision.MIXED and resumed.epoch == 2


def test_load_checkpoint_keys(tmp_path):
    x, y = data()
    model = new_model()
    path = tmp_path / "ckpt.npz"
    model.fit(
        (x, y), epochs=1, batch_size=16, verbose=False, callbacks=[convnet_io.Checkpoint(path)]
    )
    checkpoint = convnet_io.load_checkpoint(path)
    assert set(checkpoint) == {
        "network",
        "input_shape",
        "params",
        "state",
        "optimizer",
        "opt_state",
        "epoch",
        "history",
        "rng_state",
        "precision",
        "loss_scaler",
        "best_weights",
        "metadata",
    }
    assert checkpoint["network"] == model.network
    assert checkpoint["input_shape"] == (1, 8, 8)
    assert checkpoint["optimizer"] == optim.to_config(model.optimizer)
    assert checkpoint["epoch"] == 1 and checkpoint["rng_state"] == {"seed": 7}
    assert checkpoint["precision"] == {"compute_dtype": "float32", "param_dtype": "float32"}
    assert checkpoint["loss_scaler"] is None  # float32: no loss scaling
    assert checkpoint["best_weights"] is None  # no early stopping
    assert checkpoint["history"]["loss"] == model.history["loss"]
    assert_same_tree(checkpoint["params"], model.params)
    assert_same_tree(checkpoint["opt_state"], model.opt_state, exact_kinds=False)
    assert checkpoint["metadata"]["checkpoint"]["monitor"] == "val_loss"


def test_save_best_only_keeps_the_best_epoch(tmp_path):
    x, y = data(0, 64)
    xv, yv = data(1, 32)
    model = new_model()
    path = tmp_path / "best.h5"
    checkpoint = convnet_io.Checkpoint(path, monitor="val_acc", mode="max", save_best_only=True)
    # a learning rate so high that validation accuracy goes up and down
    model.compile(loss="categorical_crossentropy", optimizer="sgd", lr=0.5)
    model.fit(
        (x, y), epochs=6, batch_size=16, verbose=False, val_data=(xv, yv), callbacks=[checkpoint]
    )
    val_acc = model.history["val_acc"]
    best_epoch = int(numpy.argmax(val_acc)) + 1  # the first epoch reaching the maximum
    saved = convnet_io.load_checkpoint(path)
    assert saved["epoch"] == best_epoch
    assert checkpoint.best == max(val_acc)
    assert saved["metadata"]["checkpoint"]["best"] == max(val_acc)


def checkpoint_record(path):
    return convnet_io.load_checkpoint(path)["metadata"]["checkpoint"]


def test_a_resumed_run_keeps_the_best_value_its_checkpoint_recorded(tmp_path):
    x, y = data()
    model = new_model()
    model.fit((x, y), epochs=1, batch_size=16, verbose=False)
    path = tmp_path / "best.npz"
    first = convnet_io.Checkpoint(path, save_best_only=True)
    first.on_train_begin(model)
    first.on_epoch_end(model, 1, {"loss": 1.0, "val_loss": 0.25})
    assert checkpoint_record(path) == {
        "monitor": "val_loss",
        "mode": "min",
        "best": 0.25,
        "epoch": 1,
    }

    # a new process resumes from the file: a new callback, the model loaded from it
    resumed = Model.load(path, device="cpu")
    assert resumed.epoch == 1
    again = convnet_io.Checkpoint(path, save_best_only=True)
    again.on_train_begin(resumed)
    assert again.best == 0.25
    again.on_epoch_end(resumed, 2, {"loss": 0.9, "val_loss": 0.5})  # worse than epoch 1
    assert again.last_saved is None and checkpoint_record(path)["epoch"] == 1
    again.on_epoch_end(resumed, 3, {"loss": 0.8, "val_loss": 0.125})
    assert checkpoint_record(path) == {
        "monitor": "val_loss",
        "mode": "min",
        "best": 0.125,
        "epoch": 3,
    }

    # a record of another metric or mode says nothing about this one
    other = convnet_io.Checkpoint(path, monitor="val_loss", mode="max", save_best_only=True)
    other.on_train_begin(resumed)
    assert other.best is None


@pytest.mark.parametrize("mode", ["min", "max"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_value_that_is_not_finite_is_never_the_best(tmp_path, mode, bad):
    x, y = data()
    model = new_model()
    model.fit((x, y), epochs=1, batch_size=16, verbose=False)
    path = tmp_path / "best.npz"
    callback = convnet_io.Checkpoint(path, mode=mode, save_best_only=True)
    callback.on_train_begin(model)
    callback.on_epoch_end(model, 1, {"val_loss": bad})
    assert callback.best is None and not path.exists()
    callback.on_epoch_end(model, 2, {"val_loss": 0.5})
    assert callback.best == 0.5 and checkpoint_record(path)["epoch"] == 2
    callback.on_epoch_end(model, 3, {"val_loss": bad})
    assert callback.best == 0.5 and checkpoint_record(path)["epoch"] == 2
    # saving every epoch, a value that is not finite is saved but not taken as the best
    every = convnet_io.Checkpoint(tmp_path / "every.npz", mode=mode)
    every.on_train_begin(model)
    every.on_epoch_end(model, 1, {"val_loss": bad})
    assert every.best is None and checkpoint_record(every.last_saved)["best"] is None


def test_every_and_path_template(tmp_path):
    x, y = data()
    model = new_model()
    template = str(tmp_path / "ckpt-{epoch:02d}-{loss:.2f}-{val_loss:.2f}.h5")
    callback = convnet_io.Checkpoint(template, every=2)
    model.fit(
        (x, y), epochs=5, batch_size=16, val_data=data(1, 16), verbose=False, callbacks=[callback]
    )
    names = sorted(os.listdir(tmp_path))
    assert [n[:7] for n in names] == ["ckpt-02", "ckpt-04"]
    for epoch, name in zip((2, 4), names, strict=True):
        loss, val_loss = (model.history[key][epoch - 1] for key in ("loss", "val_loss"))
        assert name == f"ckpt-{epoch:02d}-{loss:.2f}-{val_loss:.2f}.h5"
    assert callback.last_saved == str(tmp_path / names[-1])
    assert convnet_io.load_checkpoint(callback.last_saved)["epoch"] == 4


def test_checkpoint_arguments_are_checked():
    with pytest.raises(ValueError, match="mode"):
        convnet_io.Checkpoint("x.h5", mode="best")
    with pytest.raises(ValueError, match="every"):
        convnet_io.Checkpoint("x.h5", every=0)


def test_a_monitor_without_values_warns_once_outside_fit(tmp_path):
    model = new_model()
    model.build((1, 8, 8))
    callback = convnet_io.Checkpoint(tmp_path / "c.h5", save_best_only=True)
    logs = {"loss": 0.5, "acc": 0.5, "val_loss": None, "val_acc": None, "lr": 0.01}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        callback.on_epoch_end(model, 1, logs)
        callback.on_epoch_end(model, 2, logs)
    assert len(caught) == 1
    assert str(caught[0].message).startswith("Checkpoint: 'val_loss' has no value in the epoch")
    assert not (tmp_path / "c.h5").exists()


@pytest.mark.parametrize(
    ("checkpoint", "message"),
    [
        (
            {"monitor": "val_los"},
            "Checkpoint monitor 'val_los' is not in the epoch logs; they have acc, loss, lr, "
            "val_acc, val_loss",
        ),
        (
            {"save_best_only": True},  # monitors val_loss, and fit gets no validation data
            "Checkpoint(save_best_only=True) monitors 'val_loss', which this run gives no "
            "value (it logs loss, acc, lr); validation metrics need fit's val_data or "
            "val_split, so nothing would be saved",
        ),
        (
            {"path": "c-{val_loss:.3f}.h5"},
            "Checkpoint path '{folder}/c-{{val_loss:.3f}}.h5': this run gives 'val_loss' no "
            "value (it logs loss, acc, lr); validation metrics need fit's val_data or val_split",
        ),
    ],
)
def test_a_monitor_or_field_this_fit_leaves_empty_stops_it_before_the_first_epoch(
    tmp_path, checkpoint, message
):
    x, y = data()
    model = new_model()
    options = {"path": "c.h5", **checkpoint}
    callback = convnet_io.Checkpoint(os.path.join(tmp_path, options.pop("path")), **options)
    with pytest.raises(ValueError) as info:
        model.fit((x, y), epochs=2, batch_size=16, verbose=False, callbacks=[callback])
    assert str(info.value) == message.format(folder=tmp_path)
    assert model.epoch == 0 and os.listdir(tmp_path) == []


def test_a_checkpoint_without_best_saves_every_epoch_without_validation_data(tmp_path):
    x, y = data()
    model = new_model()
    callback = convnet_io.Checkpoint(tmp_path / "c-{epoch}-{loss:.2f}.h5")  # monitor val_loss
    model.fit((x, y), epochs=2, batch_size=16, verbose=False, callbacks=[callback])
    assert sorted(path.name[:4] for path in tmp_path.iterdir()) == ["c-1-", "c-2-"]
    assert callback.best is None and model.logged_metrics is None  # reset after fit


@pytest.mark.parametrize(
    ("template", "error", "fragments"),
    [
        ("missing/{epoch}.h5", FileNotFoundError, ["missing/{epoch}.h5", "does not exist"]),
        ("missing/ckpt.h5", FileNotFoundError, ["missing/ckpt.h5", "does not exist"]),
        ("ck-{val_los:.3f}.h5", ValueError, ["'val_los'", "val_loss", "epoch", "lr"]),
        ("ck-{loss:03d}.h5", ValueError, ["ck-{loss:03d}.h5", "cannot be filled in"]),
        ("adir", IsADirectoryError, ["adir", "a directory"]),
    ],
)
def test_checkpoint_path_problems_stop_fit_before_the_first_epoch(
    tmp_path, template, error, fragments
):
    (tmp_path / "adir").mkdir()
    x, y = data()
    model = new_model()
    callback = convnet_io.Checkpoint(os.path.join(tmp_path, template))
    with pytest.raises(error) as info:
        model.fit((x, y), epochs=2, batch_size=16, verbose=False, callbacks=[callback])
    assert model.epoch == 0  # no epoch was spent before the error
    for fragment in fragments:
        assert fragment in str(info.value)
    assert sorted(os.listdir(tmp_path)) == ["adir"]


@pytest.mark.parametrize("template", ["ck-{epoch.h5", "ck-{epoch}}.h5", "ck-{}.h5", "ck-{0}.h5"])
def test_malformed_checkpoint_templates_are_refused_when_made(template):
    with pytest.raises(ValueError, match=r"Checkpoint path .*ck-"):
        convnet_io.Checkpoint(template)
