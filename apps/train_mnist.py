"""Train a convnet on MNIST: `uv run apps/train_mnist.py` (the README's first command).

With no arguments it trains the default preset on the MNIST files bundled in data/mnist/
(no download), prints the test accuracy, the confusion matrix and the slowest-learned
digits, and saves the model to models/mnist.h5 with its history and training curves
beside it. `--help` lists every option.
"""

from __future__ import annotations

import pathlib
import sys
import time

_APPS = str(pathlib.Path(__file__).resolve().parent)
if _APPS not in sys.path:  # `python apps/train_mnist.py` adds it; -P or PYTHONSAFEPATH do not
    sys.path.insert(0, _APPS)

import click  # noqa: E402
from _common import (  # noqa: E402
    AppError,
    FileUse,
    FiniteFloatRange,
    InterruptWatch,
    blas_description,
    check_distinct_files,
    check_writable,
    companion_path,
    confusion_matrix,
    describe_os_error,
    format_confusion,
    import_pyplot,
    jsonable,
    load_mnist_data,
    lowest_accuracy,
    model_loss,
    one_line,
    per_class_accuracy,
    plural,
    run_command,
    save_figure,
    set_blas_threads,
    to_inputs,
    write_json,
)

PROG = "train_mnist.py"
STARTED = time.perf_counter()


# ---------------------------------------------------------------------------------------
# Presets: an architecture and the training settings that suit it. Every setting can be
# overridden on the command line.
#
# Why these settings (test accuracy on the 10,000 MNIST test digits, seed 0, one BLAS
# thread, on a 2-core machine shared with other work; wall times of the whole command,
# with the 1-minute load average when it started):
# - readme is the old project's model exactly (convnet_core.presets.readme_layers: 'same'
#   padding, 52k weights). Its earlier 'valid'-padded variant (27k weights) without
#   augmentation, 12 epochs, cosine, reached 98.88%: it fits the training set (99.95%) and
#   stops improving on the test set, so the preset augments instead (random shifts and
#   rotations). The 'same' padding made an epoch about 8.5 s instead of 7 s, and faster
#   kernels (whole-channel shifts in im2col/col2im, two-step max pooling) brought it back
#   to 7 s; the settings fit: 99.28% after 15 epochs in 107 s (load 0.4; 99.22% in 131 s
#   with the older kernels); 98.64% after 3 epochs in 24 s (98.60% in 30 s before).
#   (The 'valid' variant, older kernels: 99.16% in 89 s, 98.57% in 20 s.)
# - best: two BatchNorm conv blocks (16, 32 filters) stopped at 99.28% after 15 epochs; a
#   third block (64 filters at 7x7) costs little more and reached 99.46% after 15 epochs
#   and 99.50% after 20 (12.5 min; 99.55% with --seed 1); with the faster kernels, whose
#   sums round differently, 99.45% after 20 in 9.3 min (load 0.4); with BatchNorm's
#   backward in its mean form (float16-safe), 99.57% after 20 in 8.7 min.
# - One BLAS thread: the matrices are small, the second core prepares the (augmented)
#   batches, and on a loaded machine two OpenBLAS threads made an epoch over 20x slower.

# Settings both presets share; each preset overrides or adds its own.
_COMMON_SETTINGS = {
    "optimizer": "adam",
    "weight_decay": 0.0,
    "clip_norm": None,
    "val_split": 0.0,
    "early_stopping": False,
    "patience": 5,
    "lr_schedule": "cosine",
    "augment": True,
    "threads": 1,
    "augment_strength": {"max_shift": 2, "max_degrees": 10.0},
}

# "network" names the function of convnet_core.presets that makes the layers; the import
# waits for build_model, because NumPy must start after --threads is applied.
PRESETS = {
    "readme": {
        **_COMMON_SETTINGS,
        "network": "readme_layers",
        "about": "the old project's README model (Conv8-Conv16-Dense64, 52k weights)",
        "epochs": 15,
        "batch_size": 64,
        "lr": 2e-3,
    },
    "best": {
        **_COMMON_SETTINGS,
        "network": "best_layers",
        "about": "16-32-64 conv blocks with BatchNorm, a 128-unit head with dropout (99k weights)",
        "epochs": 20,
        "batch_size": 128,
        "lr": 3e-3,
    },
}
DEFAULT_ARCH = "readme"
SLOWEST_SHOWN = 3
#: The settings that make the optimizer. A resumed run continues the checkpoint's
#: optimizer and its state, so these come from the checkpoint rather than the preset.
OPTIMIZER_SETTINGS = ("optimizer", "lr", "weight_decay", "clip_norm")


def preset_help() -> str:
    lines = []
    for name, preset in PRESETS.items():
        settings = (
            f"{preset['epochs']} epochs, {preset['optimizer']} lr {preset['lr']:g}, "
            f"batch {preset['batch_size']}, {preset['lr_schedule']} schedule, "
            f"augment {'on' if preset['augment'] else 'off'}"
        )
        default = " (the default)" if name == DEFAULT_ARCH else ""
        lines.append(f"'{name}'{default}: {preset['about']}; {settings}.")
    return " ".join(lines)


# ---------------------------------------------------------------------------------------
# The command


@click.command(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=(
        "Slowest-learned digits: the digits with the lowest test accuracy after the first "
        "epoch, shown with their final accuracy (they are the ones the network took "
        "longest to learn). Files written beside --out (default models/mnist.h5): "
        "NAME.ckpt.h5 (checkpoint after every epoch, for --resume), NAME.history.json "
        "(per-epoch metrics, test results, settings) and NAME.curves.png (loss, accuracy and "
        "learning rate per epoch; needs matplotlib). Ctrl-C stops without touching --out: "
        "once an epoch of the run has finished, the model as it stood is saved to "
        "NAME.interrupted.h5 and the checkpoint, which loses at most the epoch in progress, "
        "continues the run with --resume."
    ),
)
@click.option(
    "--arch",
    type=click.Choice(sorted(PRESETS)),
    default=DEFAULT_ARCH,
    show_default=True,
    help="Network and training preset. " + preset_help(),
)
@click.option("--epochs", type=click.IntRange(min=1), help="Epochs to train in all [preset].")
@click.option("--batch-size", type=click.IntRange(min=1), help="Samples per step [preset].")
@click.option(
    "--optimizer",
    type=click.Choice(["adam", "adamw", "sgd", "rmsprop"]),
    help="Optimizer [preset: adam]. sgd uses momentum 0.9.",
)
@click.option("--lr", type=FiniteFloatRange(min=0, min_open=True), help="Learning rate [preset].")
@click.option(
    "--weight-decay",
    type=FiniteFloatRange(min=0),
    help="L2 weight decay (decoupled for adamw) [preset: 0].",
)
@click.option(
    "--clip-norm",
    type=FiniteFloatRange(min=0, min_open=True),
    help="Clip the gradients to this global norm [preset: no clipping].",
)
@click.option(
    "--val-split",
    type=FiniteFloatRange(min=0, max=1, max_open=True),
    help="Fraction of the training set held out for validation [preset: 0]. Needed by "
    "early stopping; the plateau schedule watches the validation loss when there is one.",
)
@click.option(
    "--early-stopping/--no-early-stopping",
    default=None,
    help="Stop when the validation loss has not improved for --patience epochs, keeping the "
    "best weights (needs --val-split) [preset: off].",
)
@click.option(
    "--patience",
    type=click.IntRange(min=1),
    help="Epochs without improvement before early stopping [preset: 5].",
)
@click.option(
    "--lr-schedule",
    type=click.Choice(["plateau", "cosine", "none"]),
    help="Learning-rate schedule: plateau halves it when the loss stalls for 3 epochs (the "
    "validation loss when there is a validation split), cosine "
    "lowers it at the start of each epoch along a half cosine towards 1e-6 (the last epoch "
    "of the presets' 15 or 20 runs at about 1% of it), none keeps it fixed [preset: cosine].",
)
@click.option(
    "--augment/--no-augment",
    default=None,
    help="Random shifts (up to 2 pixels) and rotations (up to 10 degrees) of the training "
    "digits, drawn afresh every epoch [preset: on].",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every random draw.")
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="Where to compute: cuda needs CuPy and a GPU; auto uses one when usable.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="BLAS threads for the CPU [preset: 1]. The matrices of these small networks are too "
    "small to gain from more, the second core prepares the batches, and on a busy machine "
    "extra BLAS threads can be many times slower.",
)
@click.option(
    "--data",
    "data_dir",
    type=click.Path(file_okay=False, path_type=pathlib.Path),
    help="Folder with the four MNIST IDX .gz files (default: the bundled data/mnist).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=pathlib.Path),
    default=pathlib.Path("models/mnist.h5"),
    show_default=True,
    help="Where to save the trained model (written atomically).",
)
@click.option(
    "--resume",
    type=click.Path(dir_okay=False, path_type=pathlib.Path),
    help="Continue from a checkpoint (NAME.ckpt.h5) up to --epochs epochs in all (so "
    "--epochs must be more than the checkpoint's). --arch must name its network; its "
    "optimizer continues with its state, so --optimizer, --lr, --weight-decay and "
    "--clip-norm, when given, must be its values.",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=pathlib.Path),
    help="Where to save the training curves PNG (default: NAME.curves.png beside --out).",
)
@click.option("--quiet", is_flag=True, help="Print only the final results.")
@click.option(
    "--limit-train",
    type=click.IntRange(min=1),
    help="Train on the first N training digits only (quick runs and tests).",
)
@click.option(
    "--limit-test",
    type=click.IntRange(min=1),
    help="Test on the first N test digits only (quick runs and tests).",
)
def main(**options) -> int:
    """Train a convnet on MNIST and save it, its history and its training curves."""
    settings = resolve_settings(options, given_options(click.get_current_context()))
    set_blas_threads(settings["threads"])  # before NumPy is imported
    from convnet_core import backend

    backend.tune_allocator()  # big temporaries reused, not page-faulted in afresh (glibc)
    return train(settings)


def given_options(ctx: click.Context) -> frozenset[str]:
    """The names of the options the user gave, as opposed to those left to their defaults."""
    return frozenset(
        name
        for name in ctx.params
        if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT
    )


def resolve_settings(options: dict, given: frozenset[str] = frozenset()) -> dict:
    """The command-line options with every unset one filled in from the --arch preset.

    `given` names the options given on the command line (`given_options`); it is kept as
    settings["given"], for what a resumed checkpoint may not contradict.
    """
    settings = dict(options)
    settings["given"] = given
    preset = PRESETS[options["arch"]]
    for key, value in preset.items():
        if key in settings and settings[key] is None:
            settings[key] = value
    if settings["early_stopping"] and settings["val_split"] == 0:
        raise click.BadParameter(
            "early stopping watches the validation loss: give --val-split too (e.g. 0.1)",
            param_hint="--early-stopping",
        )
    if settings["resume"] is not None and not settings["resume"].is_file():
        raise AppError(f"checkpoint {settings['resume']} does not exist")
    out = settings["out"]
    settings["checkpoint"] = companion_path(out, ".ckpt" + (out.suffix or ".h5"))
    settings["interrupted"] = companion_path(out, ".interrupted" + (out.suffix or ".h5"))
    settings["history_path"] = companion_path(out, ".history.json")
    if settings["plot"] is None:
        settings["plot"] = companion_path(out, ".curves.png")
    return settings


def say(settings: dict, *lines: str) -> None:
    if not settings["quiet"]:
        for line in lines:
            click.echo(line)


# ---------------------------------------------------------------------------------------
# Training


class EpochOneReport:
    """Callback: per-class test accuracy after the first epoch (for the slowest-learned)."""

    def __init__(self, test_x, test_y, batch_size: int):
        self.test_x = test_x
        self.test_y = test_y
        self.batch_size = batch_size
        self.accuracy = None

    def on_epoch_end(self, model, epoch, logs):
        if epoch == 1 and self.accuracy is None:
            predicted = model.predict(self.test_x, batch_size=self.batch_size).argmax(axis=1)
            self.accuracy = per_class_accuracy(confusion_matrix(self.test_y, predicted))


class AugmentedTraining:
    """The training Dataset seen through augmentation: what `Model.fit` iterates over."""

    def __init__(self, dataset, augment):
        self.dataset = dataset
        self.augment = augment

    def __len__(self):
        return len(self.dataset)

    def batches(self, batch_size, shuffle=True, **kwargs):
        kwargs.setdefault("augment", self.augment)
        return self.dataset.batches(batch_size, shuffle=shuffle, **kwargs)


def build_model(settings: dict, xp, optimizer=None):
    """The compiled Model of the chosen preset, on the array module `xp`.

    It is compiled with `optimizer` when given (an `optim.Optimizer`: a resumed
    checkpoint's), else with the optimizer the settings describe.
    """
    import convnet_core as cn

    layers = getattr(cn.presets, PRESETS[settings["arch"]]["network"])()
    model = cn.Model(layers, seed=settings["seed"], device=xp)
    model.build((1, 28, 28))
    if optimizer is not None:
        model.compile(loss="categorical_crossentropy", optimizer=optimizer)
        return model
    options = {"lr": settings["lr"], "weight_decay": settings["weight_decay"]}
    options["clip_norm"] = settings["clip_norm"]
    if settings["optimizer"] == "sgd":
        options["momentum"] = 0.9
    model.compile(loss="categorical_crossentropy", optimizer=settings["optimizer"], **options)
    return model


def optimizer_settings(optimizer) -> dict:
    """The settings (`OPTIMIZER_SETTINGS`) that an `optim.Optimizer` amounts to."""
    return {
        "optimizer": optimizer.name,
        "lr": optimizer.lr,
        "weight_decay": optimizer.weight_decay,
        "clip_norm": optimizer.clip_norm,
    }


def augmentation(arch: str):
    """The preset's random shifts and rotations (convnet_data.augment.random_affine)."""
    from convnet_data import augment

    return augment.random_affine(**PRESETS[arch]["augment_strength"])


def train(settings: dict) -> int:
    """Build, train, test and save; returns the exit code."""
    check_files(settings)
    for key in ("out", "checkpoint", "history_path", "plot"):  # before the training, not after
        check_writable(settings[key])

    import convnet_core as cn
    import numpy  # after set_blas_threads
    from convnet_io import Checkpoint

    resumed = None if settings["resume"] is None else check_resume(settings)
    start_epoch = 0 if resumed is None else resumed["epoch"]

    xp = cn.backend.array_module(settings["device"])
    say(settings, f"device: {cn.backend.device_name(xp)}; {blas_description()}")

    started = time.perf_counter()
    train_set, test_set = load_mnist_data(
        settings["data_dir"], settings["limit_train"], settings["limit_test"]
    )
    test_x = to_inputs(test_set.images)
    test_y = numpy.asarray(test_set.labels)
    say(
        settings,
        f"data: {len(train_set.labels)} training and {len(test_y)} test digits "
        f"({time.perf_counter() - started:.1f} s to load)",
    )

    val_data = None
    if settings["val_split"] > 0:
        train_set, val_set = train_set.split(settings["val_split"], seed=settings["seed"])
        val_data = (to_inputs(val_set.images), numpy.asarray(val_set.labels))
    if settings["augment"]:
        data = AugmentedTraining(train_set, augmentation(settings["arch"]))
    else:  # whole arrays: no per-batch conversion work
        data = (to_inputs(train_set.images), numpy.asarray(train_set.labels))

    saved_optimizer = None if resumed is None else resumed["optimizer"]
    model = build_model(
        settings, xp, None if saved_optimizer is None else cn.optim.from_config(saved_optimizer)
    )
    settings.update(optimizer_settings(model.optimizer))  # what the banner and history show
    epoch_one = EpochOneReport(test_x, test_y, batch_size=512)
    checkpoint = Checkpoint(str(settings["checkpoint"]))
    interrupts = InterruptWatch()  # no Ctrl-C lost in h5py's clean-up
    fit_options = {
        "epochs": settings["epochs"],
        "batch_size": settings["batch_size"],
        "val_data": val_data,
        "early_stopping": settings["early_stopping"],
        "patience": settings["patience"],
        "lr_schedule": None if settings["lr_schedule"] == "none" else settings["lr_schedule"],
        "monitor": "val_loss" if val_data is not None else "loss",
        "seed": settings["seed"],
        "verbose": not settings["quiet"],
        "callbacks": (checkpoint, epoch_one, interrupts),  # the watch last: after the save
    }
    if settings["resume"] is not None:
        fit_options["resume_from"] = str(settings["resume"])

    try:  # a Ctrl-C from the first line about the training on says what was kept
        announce(settings, model)
        fit_started = time.perf_counter()
        with interrupts:
            model.fit(data, **fit_options)
    except KeyboardInterrupt:
        return save_interrupted(model, settings, model.epoch - start_epoch, checkpoint)
    train_seconds = time.perf_counter() - fit_started

    results = test_model(model, test_x, test_y)
    report(settings, results, epoch_one.accuracy, train_seconds)
    model.save(str(settings["out"]))
    write_history(settings, model, results, epoch_one.accuracy, train_seconds, xp)
    say(settings, f"saved the model to {settings['out']}")
    say(settings, f"history: {settings['history_path']}")
    plot_curves(settings, model.history)
    click.echo(f"done in {time.perf_counter() - STARTED:.0f} s of wall time")
    return 0


def check_files(settings: dict) -> None:
    """A usage error when two of the files the run writes are one file, or when a file
    other than a model is the --resume checkpoint (`check_distinct_files`); the model, its
    checkpoint and the model saved on Ctrl-C may replace the checkpoint they continue."""
    writes = [
        FileUse(settings["out"], "the --out model", "--out", model=True),
        FileUse(settings["checkpoint"], "the checkpoint written beside --out", "--out", model=True),
        FileUse(
            settings["interrupted"], "the model saved beside --out on Ctrl-C", "--out", model=True
        ),
        FileUse(settings["history_path"], "the history written beside --out", "--out"),
        FileUse(settings["plot"], "the training-curves PNG", "--plot"),
    ]
    reads = []
    if settings["resume"] is not None:
        reads.append(FileUse(settings["resume"], "the --resume checkpoint", "--resume", model=True))
    check_distinct_files(writes, reads)


def announce(settings: dict, model) -> None:
    """The model summary and the training settings (unless --quiet)."""
    if not settings["quiet"]:
        model.summary()
    say(
        settings,
        f"training '{settings['arch']}': {plural(settings['epochs'], 'epoch')}, batch "
        f"{settings['batch_size']}, {settings['optimizer']} lr {settings['lr']:g}, "
        f"schedule {settings['lr_schedule']}, augment {'on' if settings['augment'] else 'off'}",
    )
    if settings["resume"] is not None:
        say(settings, f"resuming from {settings['resume']}")


def check_resume(settings: dict) -> dict:
    """The --resume checkpoint (`load_checkpoint`'s dict), checked against the command line
    before any work: its network must be the --arch preset's, --epochs (the total, not a
    count of more epochs) more than it has done, and an optimizer option given on the
    command line the same as its optimizer's, which the run continues."""
    from convnet_io import load_checkpoint

    checkpoint = load_checkpoint(str(settings["resume"]))
    check_architecture(settings, checkpoint["network"])
    done = checkpoint["epoch"]
    if settings["epochs"] <= done:
        raise click.BadParameter(
            f"{settings['epochs']} is the total and {settings['resume']} has already "
            f"trained {plural(done, 'epoch')}: give more than {done} to train it further",
            param_hint="--epochs",
        )
    if checkpoint["optimizer"] is not None:
        check_optimizer_options(settings, checkpoint["optimizer"])
    return checkpoint


def preset_of(network) -> str | None:
    """The --arch preset whose layers make `network` (a layer spec), or None."""
    import convnet_core as cn
    from convnet_core.layers import Sequential, layer_to_config

    if not isinstance(network, Sequential):  # a Model holds its layers as one Sequential
        network = Sequential((network,))
    config = layer_to_config(network)
    for name, preset in PRESETS.items():
        layers = getattr(cn.presets, preset["network"])()
        if layer_to_config(Sequential(tuple(layers))) == config:
            return name
    return None


def check_architecture(settings: dict, network) -> None:
    """A usage error naming the --arch that matches the checkpoint's network, unless it is
    the one asked for; AppError when no preset does."""
    match = preset_of(network)
    if match == settings["arch"]:
        return
    if match is None:
        raise AppError(
            f"{settings['resume']}: its network is none of the presets "
            f"({', '.join(PRESETS)}), so it is not a checkpoint of train_mnist.py"
        )
    raise click.BadParameter(
        f"'{settings['arch']}' does not match the checkpoint {settings['resume']}, which "
        f"holds the '{match}' network: give --arch {match} to resume it",
        param_hint="--arch",
    )


def check_optimizer_options(settings: dict, saved_config: dict) -> None:
    """A usage error for an optimizer option given on the command line that differs from
    the checkpoint's optimizer (config as `optim.to_config` writes it): resuming continues
    that optimizer and its state, so the option would be silently ignored."""
    from convnet_core import optim

    saved = optimizer_settings(optim.from_config(saved_config))
    for name in OPTIMIZER_SETTINGS:
        if name in settings["given"] and settings[name] != saved[name]:
            option = "--" + name.replace("_", "-")
            raise click.BadParameter(
                f"{show_setting(settings[name])} was given, but the checkpoint "
                f"{settings['resume']} has {name.replace('_', ' ')} "
                f"{show_setting(saved[name])}; resuming continues the checkpoint's optimizer: "
                f"leave {option} out, or train afresh without --resume",
                param_hint=option,
            )


def show_setting(value) -> str:
    """A setting as the messages write it: 0.002, adam, none."""
    if value is None:
        return "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def save_interrupted(model, settings: dict, finished: int, checkpoint) -> int:
    """Ctrl-C during training: exit 130, saying what was kept and how to continue.

    --out is left as it was: it holds only finished runs (with their history and curves
    beside them), perhaps a good model of another architecture. When `finished` (epochs of
    this run) is at least one, the model as it stood goes to NAME.interrupted.h5. The hint
    names the checkpoint only when this run wrote it, else the one it resumed from.
    """
    click.echo("", err=True)
    if finished < 1:
        parts = ["interrupted before an epoch of this run finished: nothing was saved"]
    else:
        parts = [f"interrupted after {plural(model.epoch, 'complete epoch')}"]
        try:
            model.save(str(settings["interrupted"]))
            parts.append(f"saved the model as it stood to {settings['interrupted']}")
        except KeyboardInterrupt:
            parts.append("interrupted again: the model was not saved")
        except Exception as error:  # NaN weights, a full disk: say so and go on
            reason = describe_os_error(error) if isinstance(error, OSError) else one_line(error)
            parts.append(f"could not save {settings['interrupted']}: {reason}")
    parts.append(f"{settings['out']} is left as it was")
    resume = checkpoint.last_saved or settings["resume"]
    if resume is not None:
        parts.append(f"continue with --resume {resume} --epochs {settings['epochs']}")
    click.echo(f"{PROG}: " + "; ".join(parts), err=True)
    return 130


def test_model(model, test_x, test_y) -> dict:
    """Loss, accuracy and confusion matrix on the test set."""
    import numpy

    probabilities = numpy.asarray(model.predict(test_x, batch_size=512))
    predicted = probabilities.argmax(axis=1)
    matrix = confusion_matrix(test_y, predicted)
    return {
        "accuracy": float((predicted == test_y).mean()),
        "loss": model_loss(model, probabilities, test_y),
        "confusion_matrix": matrix,
        "per_class_accuracy": per_class_accuracy(matrix),
    }


def slowest_learned(after_epoch_one, final) -> list[int]:
    """The digits with the lowest accuracy after epoch 1 (or at the end, when unknown),
    among those the test set has."""
    basis = final if after_epoch_one is None else after_epoch_one
    return lowest_accuracy(basis, SLOWEST_SHOWN)


def report(settings, results, after_epoch_one, train_seconds) -> None:
    """Print the test accuracy, the confusion matrix and the slowest-learned digits."""
    click.echo(
        f"test accuracy: {100 * results['accuracy']:.2f}%  test loss: {results['loss']:.4f}  "
        f"(trained in {train_seconds:.0f} s)"
    )
    say(settings, "confusion matrix (rows: true digit, columns: predicted):")
    say(settings, format_confusion(results["confusion_matrix"]))
    final = results["per_class_accuracy"]
    digits = slowest_learned(after_epoch_one, final)
    if after_epoch_one is None:
        shown = ", ".join(f"{d} ({100 * final[d]:.1f}%)" for d in digits)
        say(settings, f"lowest test accuracy: {shown}")
    else:
        shown = ", ".join(
            f"{d} ({100 * after_epoch_one[d]:.1f}% after epoch 1 -> {100 * final[d]:.1f}%)"
            for d in digits
        )
        say(settings, f"slowest-learned digits: {shown}")


def write_history(settings, model, results, after_epoch_one, train_seconds, xp) -> None:
    """The per-epoch history, the test results and the settings, as JSON beside the model."""
    import convnet_core as cn

    keep = ("arch", "epochs", "batch_size", "optimizer", "lr", "weight_decay", "clip_norm")
    keep += ("val_split", "early_stopping", "patience", "lr_schedule", "augment", "seed")
    keep += ("device", "threads", "limit_train", "limit_test")
    record = {
        "history": jsonable(model.history),
        "epochs_completed": int(model.epoch),
        "test": {
            "accuracy": results["accuracy"],
            "loss": results["loss"],
            "confusion_matrix": jsonable(results["confusion_matrix"]),
            "per_class_accuracy": jsonable(results["per_class_accuracy"]),
            "per_class_accuracy_after_epoch_1": jsonable(after_epoch_one),
        },
        "train_seconds": train_seconds,
        "device": cn.backend.device_name(xp),
        "settings": {key: jsonable(settings[key]) for key in keep},
    }
    write_json(settings["history_path"], record)


def plot_curves(settings, history) -> None:
    """Loss, accuracy and learning rate per epoch as a PNG (a note when matplotlib is missing)."""
    plt = import_pyplot()
    if plt is None:
        say(settings, "matplotlib is not installed: no training curves (pip install matplotlib)")
        return
    figure, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for axis, (key, title) in zip(
        axes, (("loss", "loss"), ("acc", "accuracy"), ("lr", "learning rate")), strict=True
    ):
        for name, style in ((key, "-o"), (f"val_{key}", "--s")):
            values = history.get(name) or []
            if values and all(v is not None for v in values):
                epochs = range(1, len(values) + 1)
                label = "validation" if name.startswith("val_") else "training"
                axis.plot(epochs, [float(v) for v in values], style, label=label, markersize=3)
        axis.set_title(title)
        axis.set_xlabel("epoch")
        if key == "lr":
            axis.set_yscale("log")
        elif axis.lines:
            axis.legend()
    figure.tight_layout()
    save_figure(figure, settings["plot"])
    say(settings, f"training curves: {settings['plot']}")


if __name__ == "__main__":
    sys.exit(run_command(main, PROG))
