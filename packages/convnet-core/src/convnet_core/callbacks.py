"""Callbacks for `Model.fit`, and the per-epoch progress display.

A callback is any object with some of these methods (all optional):

    on_train_begin(model)              model.logged_metrics: the log entries this fit
                                       fills, e.g. ("loss", "acc", "lr")
    on_epoch_end(model, epoch, logs)   epoch: 1-based count of completed epochs;
                                       logs: {"loss", "acc", "val_loss", "val_acc", "lr"}
    on_train_end(model)

Setting `model.stop_training = True` in `on_epoch_end` ends training after that epoch.
`fit(early_stopping=True, lr_schedule="plateau")` uses `EarlyStopping` and
`ReduceLROnPlateau` from this module. When fit resumes from a checkpoint
(`model.resuming` is true), both rebuild their counters from `model.history` in
`on_train_begin`, so a resumed run makes the same decisions as an uninterrupted one;
otherwise they start afresh, like new callbacks. `EarlyStopping(restore_best=True)` also
records the best epoch's weights on the model (`model.best_weights`, a `BestWeights`),
where `convnet_io.Checkpoint` finds them, so that a resumed run can put back a best epoch
from before the resume.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from typing import Any, NamedTuple

from .checks import count
from .schedules import ReduceOnPlateau, is_improvement

__all__ = [
    "LOG_KEYS",
    "BestWeights",
    "EarlyStopping",
    "EpochProgress",
    "LearningRateScheduler",
    "ReduceLROnPlateau",
    "monitor_mode",
]

#: The entries of the epoch logs fit passes to `on_epoch_end`, in order. Those this run
#: cannot fill are None (validation metrics without validation data, accuracy for a loss
#: that is not a classification); `model.logged_metrics` names the others during fit.
LOG_KEYS = ("loss", "acc", "val_loss", "val_acc", "lr")


class BestWeights(NamedTuple):
    """The weights of a training run's best epoch so far: `model.best_weights`.

    `epoch` is the 1-based count of completed epochs when they were the model's weights;
    `params` and `state` are the model's trees of that moment (references, not copies).
    """

    epoch: int
    params: Any
    state: Any


def monitor_mode(monitor: str, mode: str = "auto") -> str:
    """ "max" for accuracy-like metrics, "min" otherwise, unless `mode` says which."""
    if mode != "auto":
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        return mode
    return "max" if "acc" in monitor else "min"


def _monitored(logs: dict[str, Any], monitor: str) -> float | None:
    """The monitored metric of an epoch's logs; None when it is NaN or infinite (which
    counts as no improvement). A metric the logs lack is an error, not a stall: a
    misspelled `monitor` must not quietly stop training."""
    value = logs.get(monitor)
    if value is None:
        logged = ", ".join(key for key, v in logs.items() if v is not None)
        raise ValueError(
            f"monitor={monitor!r} is not among the metrics of this training run ({logged})"
            + ("; validation metrics need val_data or val_split" if "val" in monitor else "")
        )
    if not math.isfinite(value):
        return None
    return float(value)


def _replayed(model, monitor: str) -> list:
    """The monitored metric's past values when resuming a run, else nothing."""
    if not getattr(model, "resuming", False):
        return []
    return list(model.history.get(monitor, []))


class EarlyStopping:
    """Stop when `monitor` has not improved by more than `min_delta` for `patience` epochs.

    With `restore_best`, the parameters and state of the best epoch are put back at the
    end of training. They are kept by reference, no copy, and recorded on the model as
    `model.best_weights` (a `BestWeights`), which `convnet_io.Checkpoint` saves. On a
    resumed run the counters are rebuilt from the history, and the best epoch's weights
    are taken from the model when the checkpoint held them (`model.best_weights` of that
    epoch) or when the best epoch is the checkpoint's own. When neither holds (a
    checkpoint written before checkpoints held them) and no later epoch is better, the
    model keeps the last epoch's weights and `on_train_end` says so with a RuntimeWarning.
    """

    def __init__(
        self, monitor="val_loss", patience=5, min_delta=1e-4, mode="auto", restore_best=True
    ):
        self.monitor = monitor
        self.patience = count(patience, "EarlyStopping: patience", minimum=0)
        self.min_delta = float(min_delta)
        self.mode = monitor_mode(monitor, mode)
        self.restore_best = restore_best
        self.best: float | None = None
        self.wait = 0
        self.best_epoch: int | None = None
        self.stopped_epoch: int | None = None
        self._best_weights: tuple[Any, Any] | None = None

    def _observe(self, value: float | None) -> bool:
        """Count one epoch; True when it is a new best."""
        if value is not None and is_improvement(value, self.best, self.mode, self.min_delta):
            self.best, self.wait = value, 0
            return True
        self.wait += 1
        return False

    def on_train_begin(self, model) -> None:
        """Reset, then replay the monitored metric of `model.history` (on a resumed run),
        taking the best epoch's weights where the model has them (see the class)."""
        self.best, self.wait, self.best_epoch, self._best_weights = None, 0, None, None
        self.stopped_epoch = None
        replayed = _replayed(model, self.monitor)
        for index, value in enumerate(replayed):
            if self._observe(None if value is None else float(value)):
                self.best_epoch = index + 1
        if self.restore_best:
            self._take_replayed_best(model, len(replayed))

    def _take_replayed_best(self, model, last_epoch: int) -> None:
        """Keep the weights of the replayed best epoch when the model holds them: its
        current weights when that epoch is the last one replayed, else its recorded
        `best_weights` when they are of that epoch. `model.best_weights` becomes what is
        kept (None when nothing is)."""
        recorded = getattr(model, "best_weights", None)
        if self.best_epoch is None:
            best = None
        elif self.best_epoch == last_epoch:
            best = BestWeights(last_epoch, model.params, model.state)
        elif recorded is not None and recorded.epoch == self.best_epoch:
            best = recorded
        else:
            best = None
        self._best_weights = None if best is None else (best.params, best.state)
        model.best_weights = best

    def on_epoch_end(self, model, epoch: int, logs: dict[str, Any]) -> None:
        """Track the monitored metric; stop (EarlyStopping) or lower the rate (plateau)."""
        if self._observe(_monitored(logs, self.monitor)):
            self.best_epoch = epoch
            self._best_weights = (model.params, model.state)
            if self.restore_best:
                model.best_weights = BestWeights(epoch, model.params, model.state)
        elif self.wait >= self.patience:
            self.stopped_epoch = epoch
            model.stop_training = True

    def on_train_end(self, model) -> None:
        """Put back the parameters and state of the best epoch (restore_best); warn when
        that epoch came before a resume from a checkpoint that did not hold them."""
        if not self.restore_best:
            return
        if self._best_weights is not None:
            model.params, model.state = self._best_weights
        elif self.best_epoch is not None:
            warnings.warn(
                f"EarlyStopping: the best epoch by {self.monitor} is epoch {self.best_epoch}, "
                "from before the resume, and the checkpoint resumed from holds no weights "
                f"of it, so the model keeps those of epoch {getattr(model, 'epoch', '?')} "
                "(checkpoints written by convnet_io.Checkpoint with early stopping hold them)",
                RuntimeWarning,
                stacklevel=5,  # the caller of Model.fit
            )


class ReduceLROnPlateau:
    """Multiply the learning rate by `factor` when `monitor` stalls for `patience` epochs.

    A callback around the pure `schedules.ReduceOnPlateau` state machine.
    """

    def __init__(
        self, monitor="val_loss", factor=0.5, patience=3, min_lr=1e-6, min_delta=1e-4, mode="auto"
    ):
        self.monitor = monitor
        self.schedule = ReduceOnPlateau(
            factor, patience, min_lr, min_delta, monitor_mode(monitor, mode)
        )
        self.state = self.schedule.init()

    def on_train_begin(self, model) -> None:
        """Reset, then replay the monitored metric of `model.history`."""
        self.state = self.schedule.init()
        for value in _replayed(model, self.monitor):
            if value is not None:  # NaN or infinite: a stalled epoch, as it was then
                _, self.state = self.schedule.update(self.state, float(value), 1.0)

    def on_epoch_end(self, model, epoch: int, logs: dict[str, Any]) -> None:
        """Track the monitored metric; a NaN or infinite one counts as a stalled epoch, as
        for EarlyStopping."""
        value = _monitored(logs, self.monitor)
        lr = model.lr
        new_lr, self.state = self.schedule.update(
            self.state, math.nan if value is None else value, lr
        )
        if new_lr != lr:
            model.lr = new_lr


class LearningRateScheduler:
    """Set the learning rate at the start of each epoch from `fn(epoch_index, lr) -> lr`.

    `epoch_index` counts from 0. `fit(lr_schedule=...)` builds one for "cosine" and for a
    callable; one passed in `fit(callbacks=[...])` works the same way.
    """

    def __init__(self, fn):
        self.fn = fn

    def on_epoch_begin(self, model, epoch_index: int) -> None:
        """Set this epoch's learning rate from `fn`."""
        model.lr = float(self.fn(epoch_index, model.lr))


def _format_metrics(values: dict[str, Any]) -> str:
    parts = []
    for key, value in values.items():
        if value is None:
            continue
        if key == "lr":
            parts.append(f"lr {value:.2e}")
        elif key == "samples/s":
            parts.append(f"{value:,.0f} samples/s")
        else:
            parts.append(f"{key} {value:.4f}")
    return "  ".join(parts)


def _live_display() -> bool:
    """True where a redrawn progress display can be seen: a terminal, or a Jupyter kernel
    (whose stderr is no terminal, but where tqdm draws a widget). A log file or a pipe
    would keep every redraw, so it gets the epoch lines alone."""
    return sys.stderr.isatty() or "ipykernel" in sys.modules


class EpochProgress:
    """The progress display of one epoch: a tqdm bar when tqdm is installed, else a plain line,
    both only where they can be seen redrawn (`_live_display`).

    `advance()` is called once per batch and costs nothing but a clock read; `due()` says
    when the numbers should be refreshed (every `interval` seconds), which is when fit reads
    its on-device metric sums back to the host. `close(summary)` prints the epoch's line.
    """

    def __init__(
        self,
        epoch: int,
        epochs: int,
        total_batches: int | None,
        verbose: bool,
        interval: float = 0.5,
    ):
        self.verbose = bool(verbose)
        self.interval = interval
        self.label = f"epoch {epoch}/{epochs}"
        self.total = total_batches
        self.batches = 0
        self.start = time.perf_counter()
        self._last_refresh = self.start
        self._bar = None
        self._plain = False
        if not (self.verbose and _live_display()):
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            self._plain = True
        else:
            self._bar = tqdm(
                total=total_batches,
                desc=self.label,
                unit="batch",
                leave=False,
                dynamic_ncols=True,
                mininterval=interval,
            )

    def advance(self) -> None:
        """Count one batch (no host sync)."""
        self.batches += 1
        if self._bar is not None:
            self._bar.update(1)

    def due(self) -> bool:
        """True when a refresh of the shown metrics is due (never when silent)."""
        if not (self._bar is not None or self._plain):
            return False
        now = time.perf_counter()
        if now - self._last_refresh < self.interval:
            return False
        self._last_refresh = now
        return True

    def elapsed(self) -> float:
        """Seconds since the epoch started."""
        return time.perf_counter() - self.start

    def show(self, metrics: dict[str, Any]) -> None:
        """Show `metrics` (host floats) on the bar or the plain line."""
        text = _format_metrics(metrics)
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)
        elif self._plain:
            of = f"/{self.total}" if self.total else ""
            sys.stderr.write(f"\r{self.label} batch {self.batches}{of}  {text}")
            sys.stderr.flush()

    def close(self, summary: dict[str, Any] | None) -> None:
        """Close the bar; print `summary` as the epoch's line when given."""
        if self._bar is not None:
            self._bar.close()
        elif self._plain:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
        if self.verbose and summary is not None:
            print(f"{self.label}: {_format_metrics(summary)}  ({self.elapsed():.1f} s)", flush=True)
