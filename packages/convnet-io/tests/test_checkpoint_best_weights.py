"""Checkpoints of runs with early stopping hold the best epoch's weights, so that a
resumed run puts back the same best epoch as an uninterrupted one."""

import json
import warnings

import convnet_io
import numpy
import pytest
from convnet_core import Model
from convnet_core import layers as L
from convnet_core.backend import to_host
from convnet_io import ModelFormatError
from convnet_io import format as fmt
from convnet_io_helpers import assert_same_tree

#: Early stopping on val_acc with patience 2 and a plateau schedule: the run stops at
#: epoch best + 2, so a crash after epoch best + 1 resumes after the best epoch.
SETTINGS = dict(
    batch_size=16,
    early_stopping=True,
    patience=2,
    lr_schedule="plateau",
    lr_patience=1,
    verbose=False,
)


def data():
    rng = numpy.random.default_rng(0)
    x = rng.random((128, 1, 10, 10), dtype=numpy.float32)
    y = (x.mean(axis=(1, 2, 3)) * 50).astype("int64") % 4
    return x, y, (x[:32], y[:32])


def new_model(xp):
    model = Model(
        [
            L.Conv2D(4, (3, 3)),
            L.BatchNorm2D(),
            L.Activation("relu"),
            L.MaxPool2D((2, 2)),
            L.Flatten(),
            L.Dropout(0.3),
            L.Dense(4),
        ],
        seed=3,
        device=xp,
    )
    return model.compile(loss="categorical_crossentropy", optimizer="adam", lr=5e-2)


class Crash(Exception):
    pass


class CrashAfter:
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, model, epoch, logs):
        if epoch == self.epoch:
            raise Crash()


def crashed_run(xp, path, crash_after):
    """A run with a Checkpoint at `path` that dies after epoch `crash_after`."""
    x, y, val = data()
    with pytest.raises(Crash):
        new_model(xp).fit(
            (x, y),
            epochs=6,
            val_data=val,
            callbacks=[convnet_io.Checkpoint(path), CrashAfter(crash_after)],
            **SETTINGS,
        )


def same(a, b):
    assert_same_tree(to_host(a), to_host(b), exact_kinds=False)


@pytest.fixture(scope="module")
def uninterrupted(xp):
    """The run as it ends without a crash, and the same run without restore_best."""
    x, y, val = data()
    full = new_model(xp)
    full.fit((x, y), epochs=6, val_data=val, **SETTINGS)
    last = new_model(xp)
    last.fit((x, y), epochs=6, val_data=val, restore_best=False, **SETTINGS)
    assert full.epoch < 6 and full.best_weights.epoch == full.epoch - 2  # stopped early
    return full, last


@pytest.mark.parametrize("suffix", [".h5", ".npz"])
def test_a_resumed_run_restores_the_best_epoch_from_before_the_resume(
    tmp_path, xp, uninterrupted, suffix
):
    full, last = uninterrupted
    best = full.best_weights.epoch
    path = tmp_path / f"ckpt{suffix}"
    crashed_run(xp, path, crash_after=best + 1)
    x, y, val = data()
    resumed = new_model(xp)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resumed.fit((x, y), epochs=6, val_data=val, resume_from=path, **SETTINGS)

    same(resumed.params, full.params)
    same(resumed.state, full.state)
    same(resumed.opt_state, full.opt_state)
    assert resumed.history == full.history and resumed.epoch == full.epoch
    with pytest.raises(AssertionError):
        same(resumed.params, last.params)  # what restoring the best epoch changed
    assert resumed.best_weights.epoch == best
    assert resumed.params is resumed.best_weights.params  # put back, on the model's device
    assert type(resumed.params[0]["W"]) is type(resumed.xp.asarray(0.0))


def test_a_checkpoint_holds_the_best_epoch_only_when_it_is_an_earlier_one(
    tmp_path, xp, uninterrupted
):
    full, _ = uninterrupted
    best = full.best_weights.epoch
    template = str(tmp_path / "ckpt-{epoch}.h5")
    crashed_run(xp, template, crash_after=best + 1)

    own = convnet_io.load_checkpoint(template.format(epoch=best))
    assert own["best_weights"] is None and "best_epoch" not in own["metadata"]
    attributes, arrays = fmt.read_raw(template.format(epoch=best))
    assert not [key for key in arrays if key.startswith("best/")]
    assert attributes[""]["format_version"] == 1  # what a convnet-io of version 1 reads

    later = convnet_io.load_checkpoint(template.format(epoch=best + 1))
    assert fmt.read_raw(template.format(epoch=best + 1))[0][""]["format_version"] == 2
    epoch, params, state = later["best_weights"]
    assert epoch == best == later["metadata"]["best_epoch"]
    assert_same_tree(params, own["params"])  # the weights of that epoch, bit for bit
    assert_same_tree(state, own["state"])
    parts = convnet_io.load(template.format(epoch=best + 1), parts=True)
    assert parts.best_weights[0] == best
    assert_same_tree(parts.best_weights[1], own["params"])


def test_model_save_does_not_store_the_best_weights(tmp_path, uninterrupted):
    model, _ = uninterrupted
    assert model.best_weights.epoch < model.epoch
    model.save(tmp_path / "final.h5")
    _, arrays = fmt.read_raw(tmp_path / "final.h5")
    assert not [key for key in arrays if key.startswith("best/")]
    assert convnet_io.load(tmp_path / "final.h5", parts=True).best_weights is None


def drop_best_weights(path):
    """Rewrite a checkpoint as checkpoints were written before they held the best epoch."""
    attributes, arrays = fmt.read_raw(path)
    metadata = json.loads(attributes[""]["metadata"])
    del metadata["best_epoch"]
    attributes[""]["metadata"] = json.dumps(metadata)
    attributes[""]["format_version"] = 1
    for group in ("best/params", "best/state"):
        del attributes[group]
    arrays = {key: value for key, value in arrays.items() if not key.startswith("best/")}
    fmt.write_raw(path, attributes, arrays)


def test_an_older_checkpoint_resumes_with_the_last_weights_and_a_warning(
    tmp_path, xp, uninterrupted
):
    full, last = uninterrupted
    best = full.best_weights.epoch
    path = tmp_path / "ckpt.h5"
    crashed_run(xp, path, crash_after=best + 1)
    drop_best_weights(path)
    assert convnet_io.load_checkpoint(path)["best_weights"] is None
    x, y, val = data()
    resumed = new_model(xp)
    with pytest.warns(RuntimeWarning) as caught:
        resumed.fit((x, y), epochs=6, val_data=val, resume_from=path, **SETTINGS)
    assert [str(w.message) for w in caught] == [
        f"EarlyStopping: the best epoch by val_acc is epoch {best}, from before the resume, "
        "and the checkpoint resumed from holds no weights of it, so the model keeps those of "
        f"epoch {full.epoch} (checkpoints written by convnet_io.Checkpoint with early "
        "stopping hold them)"
    ]
    assert caught[0].filename == __file__
    same(resumed.params, last.params)
    assert resumed.history == full.history


# ---------------------------------------------------------------------------------------
# The format: the groups best/params, best/state and metadata "best_epoch"

NET = L.Sequential((L.Conv2D(2, (3, 3)), L.BatchNorm2D(), L.Flatten(), L.Dense(3)))
SHAPE = (1, 4, 4)


def net_parts(seed):
    from convnet_core import init
    from convnet_io_helpers import randomize

    return randomize(*init(NET, SHAPE, rng=0), seed=seed)


@pytest.fixture(params=[".h5", ".npz"])
def best_file(request, tmp_path):
    params, state = net_parts(1)
    path = tmp_path / f"model{request.param}"
    save_net(path, params, state, best_weights=(2, *net_parts(2)))
    return path


def save_net(path, params, state, *, best_weights, metadata=None):
    """Save NET's `params` and `state` at epoch 3 (unless `metadata` says otherwise) with
    `best_weights`."""
    return convnet_io.save(
        path,
        layer=NET,
        params=params,
        state=state,
        input_shape=SHAPE,
        metadata=metadata or {"epoch": 3},
        best_weights=best_weights,
    )


def test_best_weights_round_trip(best_file):
    saved = convnet_io.load(best_file, parts=True)
    epoch, params, state = saved.best_weights
    assert epoch == 2 == saved.metadata["best_epoch"]
    assert_same_tree(params, net_parts(2)[0])
    assert_same_tree(state, net_parts(2)[1])
    assert_same_tree(saved.params, net_parts(1)[0])


def rewrite(path, change):
    attributes, arrays = fmt.read_raw(path)
    metadata = json.loads(attributes[""]["metadata"])
    change(attributes, arrays, metadata)
    attributes[""]["metadata"] = json.dumps(metadata)
    fmt.write_raw(path, attributes, arrays, container="npz" if str(path).endswith("npz") else None)


def expect_error(path, message):
    with pytest.raises(ModelFormatError) as info:
        convnet_io.load(path, parts=True)
    assert str(info.value) == f"{path}: {message}"


def test_best_epoch_without_the_groups(best_file):
    def change(attributes, arrays, metadata):
        for group in ("best/params", "best/state"):
            del attributes[group]
        for key in [key for key in arrays if key.startswith("best/")]:
            del arrays[key]

    rewrite(best_file, change)
    expect_error(
        best_file,
        "metadata 'best_epoch' is 2, but the file holds no weights of it (the groups "
        "best/params and best/state)",
    )


def test_the_groups_without_best_epoch(best_file):
    rewrite(best_file, lambda attributes, arrays, metadata: metadata.pop("best_epoch"))
    expect_error(
        best_file,
        "the file holds the groups best/params and best/state but no metadata 'best_epoch' "
        "(the epoch they are of)",
    )


def test_one_group_without_the_other(best_file):
    def change(attributes, arrays, metadata):
        del attributes["best/state"]
        for key in [key for key in arrays if key.startswith("best/state/")]:
            del arrays[key]

    rewrite(best_file, change)
    expect_error(best_file, "the group 'best/state' is missing")


def test_a_best_epoch_after_the_last(best_file):
    rewrite(best_file, lambda attributes, arrays, metadata: metadata.update(best_epoch=4))
    expect_error(
        best_file, "metadata 'best_epoch' is 4, after the 3 epochs completed (metadata 'epoch')"
    )
    rewrite(best_file, lambda attributes, arrays, metadata: metadata.update(best_epoch=0))
    with pytest.raises(ModelFormatError, match="metadata 'best_epoch' must be null or a positive"):
        convnet_io.load(best_file, parts=True)


def test_best_params_that_do_not_fit_the_architecture(best_file):
    def change(attributes, arrays, metadata):
        arrays["best/params/3/b"] = arrays["best/params/3/b"][:2]

    rewrite(best_file, change)
    expect_error(best_file, "best/params/3/b has shape (2,) but the architecture needs (3,)")


def test_best_state_with_a_negative_variance(best_file):
    def change(attributes, arrays, metadata):
        arrays["best/state/1/running_var"] = -arrays["best/state/1/running_var"]

    rewrite(best_file, change)
    expect_error(
        best_file, "best/state/1/running_var holds 2 negative values, but it is a variance (>= 0)"
    )


def test_best_params_in_another_dtype_are_refused_before_writing(tmp_path):
    params, state = net_parts(1)
    wide = net_parts(2)[0]
    wide = tuple({key: value.astype("float64") for key, value in p.items()} for p in wide)
    with pytest.raises(ValueError) as info:
        save_net(tmp_path / "m.h5", params, state, best_weights=(2, wide, None))
    assert str(info.value).endswith(": best/params are float64, but the params are float32")
    assert not (tmp_path / "m.h5").exists()


def test_best_epoch_is_given_once(tmp_path):
    params, state = net_parts(1)
    with pytest.raises(ValueError, match="metadata 'best_epoch' is stored from best_weights="):
        save_net(
            tmp_path / "m.h5",
            params,
            state,
            best_weights=(2, params, state),
            metadata={"epoch": 3, "best_epoch": 2},
        )
