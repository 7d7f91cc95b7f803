"""Checkpoints during training: the `Checkpoint` callback for `fit` and `load_checkpoint`.

A checkpoint is an ordinary model file (`convnet_io.save`) of a `Model` in the middle of
training: params, state, optimizer config and state, epochs completed, history, the
model's RNG state, its precision policy and its loss scaler (scale and good steps, for
mixed precision), and, with early stopping, the params and state of the best epoch so far
when that is an earlier one (`model.best_weights`), so `fit(..., resume_from=path)`
continues exactly where it stopped and ends with the weights an uninterrupted run ends with.
"""

from __future__ import annotations

import math
import os
import string
import warnings
from typing import Any

from convnet_core.callbacks import LOG_KEYS

from .atomic import resolve_target
from .format import read_model, save

__all__ = ["Checkpoint", "load_checkpoint"]


class Checkpoint:
    """A `fit` callback that saves the model every `every` epochs.

    Args:
        path: where to save. May hold `str.format` fields filled from the epoch and this
            epoch's logs, e.g. "ckpt-{epoch:03d}-{val_loss:.3f}.h5" (the fields are
            "epoch" and the log entries: loss, acc, val_loss, val_acc, lr); without fields
            the file is replaced each time (atomically).
        monitor: the metric in the epoch logs that decides what is best ("val_loss").
        mode: "min" when smaller is better, "max" when larger is.
        save_best_only: save only when `monitor` improved on the best value so far.
        every: save every this many epochs (counting completed epochs).

    The template is checked when the callback is made (its syntax) and when training
    starts (its fields, their formats, and the folder, which must exist), and so is the
    monitor (a name the epoch logs have; with `save_best_only`, one this run fills), so
    a mistake fails before the first epoch rather than after it. After training, `best` holds the
    best monitored value seen and `last_saved` the path of the last file written (None
    when nothing was saved).

    With `fit(early_stopping=True)` (`EarlyStopping(restore_best=True)`), each file also
    holds the best epoch's params and state when that epoch came before the file's (the
    file's own weights are the best one's otherwise), so a resumed run can put them back;
    such a file is up to twice the size of one without them.
    """

    def __init__(
        self,
        path: str | bytes | os.PathLike,
        monitor: str = "val_loss",
        mode: str = "min",
        save_best_only: bool = False,
        every: int = 1,
    ):
        if mode not in ("min", "max"):
            raise ValueError(f"Checkpoint mode must be 'min' or 'max', not {mode!r}")
        if int(every) < 1:
            raise ValueError(f"Checkpoint every must be a positive number of epochs, not {every}")
        self.path = os.fsdecode(path)
        self._fields = _template_fields(self.path)
        self.monitor = monitor
        self.mode = mode
        self.save_best_only = bool(save_best_only)
        self.every = int(every)
        self.best: float | None = None
        self.last_saved: str | None = None
        self._warned = False

    def _improved(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.best is None:
            return True
        return value < self.best if self.mode == "min" else value > self.best

    def on_train_begin(self, model: Any) -> None:
        """Check the path (fields, folder) and the monitor; on a resumed run, take the best
        value recorded in the existing checkpoint."""
        self._check_path(model)
        self._check_monitor(model)
        if self.best is not None or not self.save_best_only or not getattr(model, "epoch", 0):
            return
        if "{" in self.path or not os.path.exists(self.path):
            return
        try:
            saved = read_model(self.path)
        except (ValueError, OSError):
            return
        record = saved.metadata.get("checkpoint") or {}
        if record.get("monitor") == self.monitor and record.get("mode") == self.mode:
            self.best = record.get("best")

    def _check_path(self, model: Any) -> None:
        """Raise now what saving after the first epoch would raise: a field the logs lack,
        a format that does not fit its value, a missing folder, a directory or device at
        the path; and a field this run leaves empty, which would write "nan" into every
        name."""
        available = {"epoch", *_log_names(model)}
        unknown = sorted(self._fields - available)
        if unknown:
            raise ValueError(
                f"Checkpoint path {self.path!r}: no field {', '.join(map(repr, unknown))} in "
                f"the epoch logs; the fields are {', '.join(sorted(available))}"
            )
        empty = sorted(self._fields & _unfilled(model))
        if empty:
            raise ValueError(
                f"Checkpoint path {self.path!r}: this run gives {', '.join(map(repr, empty))} "
                f"no value{_why_unfilled(model, empty)}"
            )
        try:
            sample = self._path(1, {key: 0.5 for key in available - {"epoch"}})
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as error:
            raise ValueError(
                f"Checkpoint path {self.path!r} cannot be filled in: {error} (epoch is an "
                "int, the log entries are floats)"
            ) from None
        folder = os.path.dirname(self.path)
        if not self._fields:
            resolve_target(sample)  # the folder, and what is at the path now
        elif "{" not in folder and not os.path.isdir(folder or os.curdir):
            raise FileNotFoundError(
                f"Checkpoint path {self.path!r}: the folder {folder} does not exist"
            )

    def _check_monitor(self, model: Any) -> None:
        """Raise for a monitor the epoch logs do not have, and, with save_best_only, for one
        this run leaves empty (nothing would ever be saved)."""
        names = _log_names(model)
        if self.monitor not in names:
            raise ValueError(
                f"Checkpoint monitor {self.monitor!r} is not in the epoch logs; they have "
                f"{', '.join(sorted(names))}"
            )
        if self.save_best_only and self.monitor in _unfilled(model):
            raise ValueError(
                f"Checkpoint(save_best_only=True) monitors {self.monitor!r}, which this run "
                f"gives no value{_why_unfilled(model, [self.monitor])}, so nothing would be "
                "saved"
            )

    def _warn_no_value(self, logs: dict) -> None:
        if self._warned:
            return
        present = ", ".join(key for key, value in logs.items() if value is not None)
        warnings.warn(
            f"Checkpoint: {self.monitor!r} has no value in the epoch logs (those with one: "
            f"{present or 'none'}); nothing is saved. Pass validation data to fit or "
            "monitor another metric.",
            RuntimeWarning,
            stacklevel=3,
        )
        self._warned = True

    def _path(self, epoch: int, logs: dict) -> str:
        """The path for this epoch: `path` with its format fields filled (None -> nan)."""
        if "{" not in self.path:
            return self.path
        return self.path.format(**{**_nan_for_none(logs), "epoch": epoch})

    def on_epoch_end(self, model: Any, epoch: int, logs: dict | None = None) -> None:
        """Save after epoch `epoch` (1-based count of completed epochs) when due."""
        logs = dict(logs or {})
        if epoch % self.every:
            return
        value = logs.get(self.monitor)
        if value is not None:
            value = float(value)
        if self.save_best_only:
            if value is None:
                self._warn_no_value(logs)
                return
            if not self._improved(value):
                return
        if value is not None and self._improved(value):
            self.best = value
        path = self._path(epoch, logs)
        record = {"monitor": self.monitor, "mode": self.mode, "best": self.best, "epoch": epoch}
        self.last_saved = save(
            path, model, metadata={"checkpoint": record}, best_weights=_earlier_best(model)
        )


def _earlier_best(model: Any) -> tuple[int, Any, Any] | None:
    """`model.best_weights` as save's (epoch, params, state) when they are of an earlier
    epoch than the model's; None when there are none or they are the model's own."""
    best = getattr(model, "best_weights", None)
    if best is None or best.epoch == getattr(model, "epoch", None):
        return None
    return (best.epoch, best.params, best.state)


def _log_names(model: Any) -> set[str]:
    """The names an epoch's logs can hold: fit's entries and any history a model keeps."""
    return {*LOG_KEYS, *(getattr(model, "history", None) or {})}


def _unfilled(model: Any) -> set[str]:
    """fit's log entries that the running fit gives no value (empty when not under fit)."""
    logged = getattr(model, "logged_metrics", None)
    return set() if logged is None else set(LOG_KEYS) - set(logged)


def _why_unfilled(model: Any, names: list[str]) -> str:
    """Why this run leaves `names` empty, as a clause for an error message."""
    reason = f" (it logs {', '.join(model.logged_metrics)})"
    if any(name.startswith("val_") for name in names):
        reason += "; validation metrics need fit's val_data or val_split"
    return reason


def _template_fields(path: str) -> set[str]:
    """The names of the format fields in `path` ("{val_loss:.3f}" -> "val_loss"); raises
    ValueError for a malformed template or a field without a name."""
    if "{" not in path:
        return set()
    try:
        parsed = list(string.Formatter().parse(path))
    except ValueError as error:
        raise ValueError(f"Checkpoint path {path!r} is not a valid template: {error}") from None
    fields = set()
    for _, field, _, _ in parsed:
        if field is None:
            continue
        name = field.split(".", 1)[0].split("[", 1)[0]
        if not name or name.isdigit():
            raise ValueError(
                f"Checkpoint path {path!r}: every field needs a name, such as {{epoch}} or "
                "{val_loss:.3f}"
            )
        fields.add(name)
    return fields


def _nan_for_none(logs: dict) -> dict:
    return {key: float("nan") if value is None else value for key, value in logs.items()}


def load_checkpoint(path: str | bytes | os.PathLike, *, input_shape=None) -> dict[str, Any]:
    """Everything `fit(..., resume_from=path)` needs, as a dict of host parts.

    `input_shape` is the per-sample input shape of the model that resumes from the
    checkpoint, when it is built (None: take the checkpoint's); a checkpoint saved for
    another input shape raises ValueError naming it and both shapes, since its weights
    would otherwise replace the model's shape without a word.

    Keys: "network" (the layer spec), "input_shape", "params", "state", "optimizer"
    (config dict or None), "opt_state", "epoch" (completed epochs), "history" (dict of
    lists), "rng_state" (dict or None), "precision" (the policy's config dict, or None in
    files saved before it was stored: float32), "loss_scaler" (the loss scaler's config
    dict, or None: none yet), "best_weights" ((epoch, params, state) of the best epoch
    that early stopping had seen, when it came before the checkpoint's; else None) and
    "metadata" (the whole metadata dict).
    Raises ModelFormatError for a bad file.
    """
    saved = read_model(path)
    _check_input_shape(path, saved.input_shape, input_shape)
    metadata = saved.metadata
    return {
        "network": saved.layer,
        "input_shape": saved.input_shape,
        "params": saved.params,
        "state": saved.state,
        "optimizer": saved.optimizer,
        "opt_state": saved.optimizer_state,
        "epoch": int(metadata.get("epoch", 0) or 0),
        "history": {key: list(values) for key, values in (metadata.get("history") or {}).items()},
        "rng_state": metadata.get("rng_state"),
        "precision": metadata.get("precision"),
        "loss_scaler": metadata.get("loss_scaler"),
        "best_weights": saved.best_weights,
        "metadata": metadata,
    }


def _check_input_shape(path, saved, wanted) -> None:
    """Raise ValueError when the checkpoint at `path`, saved for input shape `saved`, does
    not fit a model built for `wanted` (either one None: nothing to compare)."""
    if saved is None or wanted is None or tuple(saved) == tuple(wanted):
        return
    raise ValueError(
        f"{os.fsdecode(path)}: the checkpoint was saved for input shape {tuple(saved)}, "
        f"but the model resuming from it is built for {tuple(wanted)}"
    )
