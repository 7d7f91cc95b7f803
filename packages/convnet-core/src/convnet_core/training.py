"""The training loop behind `Model.fit`, and the data helpers it shares with predict/evaluate.

One step is exactly the custom loop of the design notes:

    logits, state, cache = net.apply(params, state, x, training=True, rng=rng, xp=xp)
    loss, dlogits = loss_fn(logits, y, xp=xp)
    grads, _ = net.grad(params, cache, dlogits, xp=xp, input_grad=False)
    params, opt_state = opt.update(params, grads, opt_state)

Around it, fit only batches the data, sums the loss and the correct predictions on the
host (each batch's values wait on the device and are read back together when the progress
display refreshes, every 50 batches and at the end of the epoch, never once per batch on a
GPU; see `RunningTotals`), checks that the loss stays finite (and, once per epoch, the
parameters and the optimizer state: `NonFiniteLossError`), and calls the callbacks.
Shapes are checked at every step, on the host: the loss's gradient against the
predictions (`losses.value_and_grad`), each layer's gradients (`layers.base.grad_from_tape`)
and the gradients against the parameters (`Optimizer.update`).

Randomness: every epoch draws its shuffling order and its dropout masks from generators
seeded with (seed, epoch index), so a run is fully described by its seed, the data and the
number of completed epochs; that is what `Model.get_rng_state` saves and what makes a
resumed run end with the same parameters as an uninterrupted one.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy

from . import backend, checks, precision
from . import tree as T
from .callbacks import (
    LOG_KEYS,
    EarlyStopping,
    EpochProgress,
    LearningRateScheduler,
    ReduceLROnPlateau,
    _format_metrics,
    _monitored,
)
from .layers.base import ShapeError
from .losses import value_and_grad
from .schedules import Cosine

__all__ = [
    "NonFiniteLossError",
    "adapt_layout",
    "epoch_seed",
    "fit",
    "infer_input_shape",
]

SHUFFLE_STREAM, DROPOUT_STREAM, LOOP_STREAM = 0, 1, 2
# On a GPU, read the loss back (to check it is finite) at most every this many batches.
GPU_CHECK_EVERY = 50


class NonFiniteLossError(FloatingPointError):
    """The loss, the parameters or the optimizer state became NaN or infinite.

    fit then leaves on the model the last parameters, state and optimizer state known to
    be all finite: those of the last step whose loss was read back finite (when all of
    them are finite, which is checked as the error is raised), else those the epoch
    started from (checked at the end of the epoch before).
    """


# ---------------------------------------------------------------------------------------
# Randomness


def epoch_seed(seed: int, epoch_index: int, stream: int) -> int:
    """A 64-bit seed for one epoch and one stream (shuffling, dropout), from the run's seed."""
    sequence = numpy.random.SeedSequence([int(seed), int(epoch_index), int(stream)])  # host
    return int(sequence.generate_state(1, numpy.uint64)[0])  # host


def fresh_seed() -> int:
    """A new random seed from the operating system's entropy."""
    return int(numpy.random.SeedSequence().generate_state(1, numpy.uint32)[0])  # host


# ---------------------------------------------------------------------------------------
# Input layout


def infer_input_shape(network: Any, batch_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The per-sample input shape of a batch shaped `batch_shape` (N, ...), for `network`.

    Tried in order, the first the network accepts wins:
    (N, H, W, C) with C in (1, 3) and the second axis not in (1, 3) -> (C, H, W) (channels
    last, as ConvNet-NumPy stored images); the shape as given without N; (N, H, W) ->
    (1, H, W) (one channel). Raises ShapeError when none fits.
    """
    sample = tuple(int(d) for d in batch_shape[1:])
    candidates = []
    if len(sample) == 3 and sample[2] in (1, 3) and sample[0] not in (1, 3):
        candidates.append((sample[2], sample[0], sample[1]))
    candidates.append(sample)
    if len(sample) == 2:
        candidates.append((1, *sample))
    errors = []
    for shape in candidates:
        try:
            network.output_shape(shape)
        except (ShapeError, ValueError, TypeError) as error:
            errors.append(f"{shape}: {error}")
            continue
        return shape
    raise ShapeError(
        f"the model cannot take inputs shaped {tuple(batch_shape)}; tried per-sample shapes "
        + "; ".join(errors)
    )


def adapt_layout(x: Any, input_shape: tuple[int, ...], xp: Any) -> Any:
    """`x` (N, ...) rearranged to (N, *input_shape) when that is unambiguous.

    Accepted besides (N, *input_shape): for image inputs (C, H, W), (N, H, W) when C = 1
    (a channel axis is added, no copy) and (N, H, W, C) with C in (1, 3) (channels last,
    transposed to NCHW). Anything else raises ShapeError naming both shapes.
    """
    got = tuple(x.shape[1:])
    if got == tuple(input_shape):
        return x
    if len(input_shape) == 3:
        c, h, w = input_shape
        if got == (h, w) and c == 1:
            return x[:, None]  # (N, H, W) -> (N, 1, H, W), a view
        if got == (h, w, c) and c in (1, 3):
            return xp.ascontiguousarray(x.transpose(0, 3, 1, 2))  # NHWC -> NCHW
    raise ShapeError(
        f"Model expects inputs of shape (N, {', '.join(map(str, input_shape))}) but got "
        f"{tuple(x.shape)}"
        + (
            "; (N, H, W) and channels-last (N, H, W, C) images are also accepted"
            if len(input_shape) == 3
            else ""
        )
    )


# ---------------------------------------------------------------------------------------
# Data


def _accepts(method: Any, name: str) -> bool:
    try:
        parameters = inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )


class TrainingData:
    """Either (X, y) arrays or an object with `batches(batch_size, shuffle=...)`.

    `batches` yields host or device (x, y) pairs for one epoch; the seed for the shuffle is
    passed to a dataset's `batches` only when its signature takes `seed` (likewise `xp`).
    Errors start with `what`, the argument as the caller knows it ("fit: the training
    data", "fit: val_data", "evaluate: the data"). Arrays must hold finite real numbers;
    `check_values=False` skips that pass for parts of data already checked whole.
    """

    def __init__(self, data: Any, what: str = "fit: the training data", check_values=True):
        self.what = what
        if hasattr(data, "batches"):
            self.arrays = None
            self.dataset = data
        elif isinstance(data, (tuple, list)) and len(data) == 2:
            x, y = (_as_array(part, what, name) for part, name in zip(data, "Xy", strict=True))
            if len(x) != len(y):
                raise ValueError(f"{what}: X has {len(x)} samples but y has {len(y)}")
            if len(x) == 0:
                raise ValueError(f"{what} is empty")
            if check_values:
                _check_finite_values(x, f"{what}: X")
                _check_finite_values(y, f"{what}: y")
            self.arrays = (x, y)
            self.dataset = None
        else:
            raise TypeError(
                "data must be (X, y) arrays or an object with a batches(batch_size, shuffle=...) "
                f"method, not {type(data).__name__}"
            )

    def __len__(self) -> int:
        if self.arrays is not None:
            return len(self.arrays[0])
        return len(self.dataset)  # TypeError when the dataset has no length

    def num_batches(self, batch_size: int) -> int | None:
        """Batches per epoch, or None when the dataset has no length."""
        try:
            return math.ceil(len(self) / batch_size)
        except TypeError:
            return None

    def batches(self, batch_size: int, *, shuffle: bool, seed: int, xp: Any) -> Iterator:
        """One epoch of (x, y) batches, shuffled from `seed` when `shuffle`."""
        if self.arrays is not None:
            yield from array_batches(*self.arrays, batch_size, shuffle=shuffle, seed=seed)
            return
        method = self.dataset.batches
        kwargs: dict[str, Any] = {"shuffle": shuffle}
        if _accepts(method, "seed"):
            kwargs["seed"] = seed
        if _accepts(method, "xp"):
            kwargs["xp"] = xp
        yield from method(batch_size, **kwargs)

    def peek(self, batch_size: int) -> tuple[tuple[int, ...], Any]:
        """The shape of the inputs and a sample of labels (for building and label checks)."""
        if self.arrays is not None:
            x, y = self.arrays
            return tuple(x.shape), y
        batches = iter(self.dataset.batches(batch_size, shuffle=False))
        try:
            x, y = next(batches)
        except StopIteration:
            raise ValueError(f"{self.what}: the dataset yielded no batch") from None
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()  # stops a dataset's prefetching threads
        # A dataset that keeps all its labels (convnet_data.Dataset does) has them all checked.
        all_labels = getattr(self.dataset, "labels", None)
        return tuple(x.shape), (y if all_labels is None else all_labels)


def _as_array(values: Any, what: str, name: str) -> Any:
    """`values` as an array: NumPy or CuPy arrays as they are, lists and scalars converted."""
    if hasattr(values, "shape") and hasattr(values, "dtype"):
        return values
    array = numpy.asarray(values)  # host: a list or tuple the caller passed
    if array.ndim == 0:
        raise ValueError(f"{what}: {name} must be an array of samples, got {values!r}")
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{what}: {name} must hold numbers, got {array.dtype} values")
    return array


def _check_finite_values(values: Any, what: str) -> None:
    """ValueError unless `values` holds real numbers, none of them NaN or infinite (which
    would otherwise show up as a diverged loss, blamed on the learning rate). One pass over
    the data, once per fit."""
    kind = values.dtype.kind
    if kind not in "biuf":
        raise ValueError(f"{what} must hold real numbers, got {values.dtype} values")
    if kind != "f":
        return  # booleans and integers are always finite
    xp = backend.get_array_module(values)
    bad = int(values.size - xp.count_nonzero(xp.isfinite(values)))  # one read-back
    if bad:
        first = numpy.argwhere(~numpy.isfinite(backend.to_host(values)))[0]  # host, rare
        raise ValueError(
            f"{what} holds {bad} NaN or infinite values (the first in sample {int(first[0])})"
        )


def array_batches(x: Any, y: Any, batch_size: int, *, shuffle: bool, seed: int) -> Iterator:
    """(x[idx], y[idx]) batches in an order drawn from `seed` (or in order if not shuffling)."""
    n = len(x)
    order = numpy.random.default_rng(seed).permutation(n) if shuffle else None  # host
    for start in range(0, n, batch_size):
        if order is None:
            yield x[start : start + batch_size], y[start : start + batch_size]
        else:
            index = order[start : start + batch_size]
            if backend.is_cupy(backend.get_array_module(x)):
                index = backend.get_array_module(x).asarray(index)
            yield x[index], y[index]


def split_validation(data: TrainingData, fraction: float) -> tuple[TrainingData, tuple]:
    """Hold out the last `fraction` of (X, y) arrays for validation (Keras' val_split)."""
    if data.arrays is None:
        raise ValueError("fit: val_split needs (X, y) arrays; pass val_data for a dataset")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fit: val_split must be in (0, 1), got {fraction}")
    x, y = data.arrays
    cut = len(x) - int(round(len(x) * fraction))
    if cut <= 0 or cut >= len(x):
        raise ValueError(f"fit: val_split={fraction} leaves no training or no validation data")
    # the halves of data whose values were checked whole
    return TrainingData((x[:cut], y[:cut]), check_values=False), (x[cut:], y[cut:])


# ---------------------------------------------------------------------------------------
# The loop


class RunningTotals:
    """Sums over an epoch's batches of the loss (weighted by batch size) and of the correct
    predictions, kept on the host.

    Each batch's 0-d device values wait in a list until `settle` reads them all back, one
    transfer per kind: a GPU step then queues no work for the bookkeeping and never waits
    for the GPU, and the host does the adding.
    """

    def __init__(self, xp: Any) -> None:
        self.xp = xp
        self.loss_sum = 0.0
        self.correct = 0
        self.seen = 0  # samples added
        self.settled = 0  # samples whose values were read back and added in
        self._pending: list[tuple[int, int, Any, Any]] = []  # (batch, n, loss, correct)

    def add(self, batch: int, n: int, loss: Any, correct: Any | None) -> None:
        """Batch number `batch` (1-based) of `n` samples: its mean loss and its number of
        correct predictions (0-d device arrays; `correct` None when not counted)."""
        self._pending.append((batch, n, loss, correct))
        self.seen += n

    def __len__(self) -> int:
        """The number of batches not settled yet."""
        return len(self._pending)

    def settle(self) -> int | None:
        """Read the pending values back and add them in; returns the 1-based number of the
        first batch whose loss is not finite, or None."""
        pending, self._pending = self._pending, []
        if not pending:
            return None
        losses = self._to_host([loss for _, _, loss, _ in pending])
        counts = [correct for _, _, _, correct in pending]
        counts = self._to_host(counts) if counts[0] is not None else [0] * len(pending)
        first_bad = None
        for (batch, n, _, _), loss, correct in zip(pending, losses, counts, strict=True):
            self.loss_sum += loss * n
            self.correct += int(correct)
            self.settled += n
            if first_bad is None and not math.isfinite(loss):
                first_bad = batch
        return first_bad

    def _to_host(self, values: list) -> list:
        """0-d device arrays as Python numbers, in one transfer."""
        if len(values) == 1:
            return [values[0].item()]
        return backend.to_host(self.xp.stack(values)).tolist()

    def metrics(self, track_accuracy: bool) -> dict[str, float | None]:
        """{"loss": mean loss, "acc": accuracy (None when not tracked)} over settled batches."""
        return {
            "loss": self.loss_sum / self.settled,
            "acc": self.correct / self.settled if track_accuracy else None,
        }


def _diverged(
    what: str, when: str, lr: float, kept: str, where: str | None = None
) -> NonFiniteLossError:
    """The error fit raises: `what` ("the loss") became NaN or infinite `when` ("at epoch
    1, batch 3"), first in the leaf `where` ("v/0/W") when known; `kept` says what the
    model was put back to."""
    first = f"first in '{where}', " if where else ""
    return NonFiniteLossError(
        f"{what} became NaN or infinite {when} ({first}learning rate {lr:.3g}); {kept}. "
        "Try a lower learning rate (compile(lr=...)) or gradient clipping (clip_norm=...)."
    )


def _all_finite(tree: Any, xp: Any) -> bool:
    """Whether every leaf of `tree` is free of NaN and infinity (one read-back)."""
    flags = [xp.isfinite(leaf).all() for leaf in T.leaves(tree)]
    return bool(xp.stack(flags).all()) if flags else True


def _first_non_finite(tree: Any, xp: Any) -> str | None:
    """The path ("v/0/W") of the first leaf of `tree` holding NaN or infinity, or None.
    One read-back per leaf: only for the message of an error."""
    for path, leaf in T.flatten(tree).items():
        if not bool(xp.isfinite(leaf).all()):
            return path
    return None


class TrainingPoint(NamedTuple):
    """Where training stands between two steps: what fit puts back on the model when an
    epoch stops early (a loss that is not finite, or Ctrl-C)."""

    params: Any
    state: Any
    opt_state: Any
    loss_scaler: Any  # mixed precision's DynamicLossScaler, else None

    @classmethod
    def of(cls, model, params, state, opt_state) -> TrainingPoint:
        """The point of these trees, with the model's loss scaler as it is now."""
        return cls(params, state, opt_state, model.loss_scaler)

    def put_back(self, model) -> None:
        """Make this point the model's: its trees and its loss scaler."""
        model.params, model.state, model.opt_state = self.params, self.state, self.opt_state
        model.loss_scaler = self.loss_scaler


def _restore(model, xp, last_verified, epoch_start, epoch: int) -> str:
    """Put the last all-finite TrainingPoint back on the model: `last_verified` when its
    trees are (read back here, as fit stops), else `epoch_start` (checked at the end of the
    epoch before). Returns what was kept, for the error."""
    if last_verified is epoch_start or _all_finite(last_verified[:3], xp):
        last_verified.put_back(model)
        return "the model keeps its last good parameters"
    epoch_start.put_back(model)
    return f"the model goes back to where epoch {epoch} started"


def run_epoch(
    model,
    data: TrainingData,
    *,
    epoch_index: int,
    epochs: int,
    batch_size: int,
    shuffle: bool,
    labels,
    verbose: bool,
) -> dict[str, Any]:
    """Train one epoch; returns {"loss", "acc"} and leaves the new pytrees on `model`."""
    xp = model.xp
    trunk, n_trunk = model._trunk()
    loss_fn = model._loss_fn
    opt = model.optimizer
    seed = model.seed
    dropout_rng = xp.random.default_rng(epoch_seed(seed, epoch_index, DROPOUT_STREAM))
    check_every = GPU_CHECK_EVERY if backend.is_cupy(xp) else 1
    mixed = model.precision.mixed
    progress = EpochProgress(epoch_index + 1, epochs, data.num_batches(batch_size), verbose)

    params, state, opt_state = model.params, model.state, model.opt_state
    tail_params, tail_state = params[n_trunk:], state[n_trunk:]  # the fused softmax: ({},)
    tail_grads = tuple({} for _ in tail_params)
    epoch_start = TrainingPoint.of(model, params, state, opt_state)
    last_good = epoch_start  # the last step a finite loss vouched for
    candidate = last_good
    totals = RunningTotals(xp)
    try:
        batches = data.batches(
            batch_size, shuffle=shuffle, seed=epoch_seed(seed, epoch_index, SHUFFLE_STREAM), xp=xp
        )
        for batch, (xb, yb) in enumerate(batches, start=1):
            x = model._prepare_input(xb)
            y = labels.prepare(yb)
            n = x.shape[0]
            candidate = TrainingPoint.of(model, params, state, opt_state)
            if mixed:
                params, state, opt_state, loss, out = _mixed_step(
                    model, trunk, n_trunk, params, state, opt_state, x, y, dropout_rng
                )
            else:
                out, trunk_state, cache = trunk.apply(
                    params[:n_trunk], state[:n_trunk], x, training=True, rng=dropout_rng, xp=xp
                )
                loss, dout = value_and_grad(loss_fn, out, y, xp=xp, name=model.loss_name)
                grads, _ = trunk.grad(params[:n_trunk], cache, dout, xp=xp, input_grad=False)
                del cache
                # checked already: the state by fit, each layer's gradients by trunk.grad
                params, opt_state = opt.update(params, grads + tail_grads, opt_state, check=False)
                state = trunk_state + tail_state
            totals.add(batch, n, loss, labels.correct(out, y) if labels.track_accuracy else None)
            progress.advance()
            refresh = progress.due()
            if refresh or len(totals) >= check_every:
                bad = totals.settle()
                if bad is not None:
                    raise _loss_diverged(model, xp, epoch_index + 1, bad, last_good, epoch_start)
                last_good = candidate
            if refresh:
                progress.show(_progress_metrics(totals, labels, opt_state, progress.elapsed()))
        bad = totals.settle()
        if bad is not None:
            raise _loss_diverged(model, xp, epoch_index + 1, bad, last_good, epoch_start)
        if totals.seen == 0:
            raise ValueError("fit: the training data yielded no batch")
        # The losses vouch for the parameters each step started from; the last step's
        # result has no loss after it, and the optimizer state (Adam's v = g² can overflow
        # while the loss and the parameters stay finite) none at all: both are checked
        # directly, once per epoch, in one read-back.
        if not _all_finite((params, state, opt_state), xp):
            raise _epoch_diverged(
                model, xp, epoch_index + 1, batch, (params, state, opt_state), candidate,
                epoch_start,
            )  # fmt: skip
    except KeyboardInterrupt:
        # Stopped by the user: keep the training done so far (the last verified step).
        last_good.put_back(model)
        raise
    finally:
        progress.close(None)
    model.params, model.state, model.opt_state = params, state, opt_state
    result = totals.metrics(labels.track_accuracy)
    result["_seconds"] = progress.elapsed()
    result["_samples"] = totals.seen
    return result


def _loss_diverged(model, xp, epoch, batch, last_good, epoch_start) -> NonFiniteLossError:
    """The loss of batch `batch` was not finite: restore and describe (see `_restore`)."""
    kept = _restore(model, xp, last_good, epoch_start, epoch)
    return _diverged("the loss", f"at epoch {epoch}, batch {batch}", _lr(last_good), kept)


def _epoch_diverged(model, xp, epoch, batch, last, candidate, epoch_start):
    """The epoch ended with `last` (params, state, opt_state) not all finite: restore and
    describe, naming the first leaf that is not (see `_restore`)."""
    kept = _restore(model, xp, candidate, epoch_start, epoch)
    what, where = _first_non_finite_part(last, xp)
    # the losses vouched for the parameters up to the last step; the layer state and the
    # optimizer state may have gone at any step (the loss does not read them)
    when = (
        f"at epoch {epoch}, batch {batch}" if what == "the parameters" else f"during epoch {epoch}"
    )
    return _diverged(what, when, _lr(last), kept, where)


def _first_non_finite_part(point, xp) -> tuple[str, str]:
    """("the optimizer state", "v/0/W"): the first part of a (params, state, opt_state)
    triple holding NaN or infinity, and the path of its first such leaf."""
    names = ("the parameters", "the layer state", "the optimizer state")
    for what, tree in zip(names, point, strict=True):
        where = _first_non_finite(tree, xp)
        if where is not None:
            return what, where
    raise AssertionError("every leaf is finite")  # pragma: no cover - called on a failure


def _lr(point) -> float:
    """The learning rate in the optimizer state of a (params, state, opt_state) triple."""
    return float(point[2]["lr"])


def _mixed_step(model, trunk, n_trunk, params, state, opt_state, x, y, rng):
    """One mixed-precision step (see convnet_core.precision): float16 forward and backward,
    float32 update, skipped when the scaled gradients overflowed. The loss scaler lives on
    the model between steps and epochs."""
    scaler = model.loss_scaler
    if scaler is None:
        scaler = precision.DynamicLossScaler()
    loss, out, trunk_state, grads, finite = precision.scaled_forward_backward(
        trunk,
        params[:n_trunk],
        state[:n_trunk],
        x,
        y,
        scaler,
        loss_fn=model._loss_fn,
        rng=rng,
        xp=model.xp,
        policy=model.precision,
    )
    # the tail (the fused softmax) has no parameters: empty gradients for it
    grads = grads + tuple({} for _ in params[n_trunk:])
    # checked already: the state by fit, each layer's gradients by the backward pass
    params, opt_state = model.optimizer.update_if(finite, params, grads, opt_state, check=False)
    state = precision.select_if_finite(finite, trunk_state + state[n_trunk:], state)
    model.loss_scaler = scaler.update(finite)
    return params, state, opt_state, loss, out


def _progress_metrics(totals, labels, opt_state, elapsed) -> dict[str, Any]:
    return {
        **totals.metrics(labels.track_accuracy),
        "lr": float(opt_state["lr"]),
        "samples/s": totals.seen / max(elapsed, 1e-9),
    }


class Labels:
    """How fit reads labels: integer classes (N,) or one-hot/soft rows (N, classes).

    `prepare` moves a batch of labels to the device (one-hot encoding integer labels for
    losses that compare whole rows, such as mse); `correct` counts right answers on the
    device.
    """

    def __init__(self, model, y_sample: Any, num_classes: int | None, out_shape, where="fit"):
        self.xp = model.xp
        self.num_classes = num_classes
        self.where = where
        y_sample = numpy.asarray(backend.to_host(y_sample))  # host: a few labels, for checks
        self.integer = y_sample.ndim == 1 and (
            y_sample.dtype.kind in "iu" or numpy.all(numpy.mod(y_sample, 1) == 0)  # host
        )
        classes = out_shape[0] if len(out_shape) == 1 else None
        if num_classes is not None and classes is not None and classes != num_classes:
            raise ValueError(
                f"{where}: num_classes={num_classes} but the model's output has {classes} units"
            )
        self.classes = classes
        self.cross_entropy = model._is_cross_entropy()
        if self.cross_entropy and y_sample.ndim == 1 and not self.integer:
            raise ValueError(
                f"{where}: cross-entropy takes integer class labels (N,) or rows of class "
                f"probabilities (N, classes), not fractional values such as "
                f"{y_sample[numpy.mod(y_sample, 1) != 0][0]}"
            )
        # Losses that compare whole rows get integer labels as one-hot rows.
        self.one_hot_targets = bool(
            self.integer and model.loss_name in ("mse", "huber") and classes and classes > 1
        )
        self.track_accuracy = bool(
            classes and classes > 1 and (self.cross_entropy or self.integer or y_sample.ndim == 2)
        )
        classifying = num_classes is not None or self.cross_entropy or self.one_hot_targets
        limit = num_classes if num_classes is not None else classes
        # the labels index classes: each must be one, or it would pick another row's value
        self.class_limit = limit if classifying and limit and self.integer else None
        self.check(y_sample, "labels")

    def check(self, y: Any, what: str) -> None:
        """ValueError unless every label in `y` (host) is a class in [0, classes), when the
        labels are classes. NaN fails too."""
        if self.class_limit is None or y.size == 0:
            return
        low, top = y.min(), y.max()
        if not (low >= 0 and top < self.class_limit):
            raise ValueError(
                f"{self.where}: {what} must be classes in [0, {self.class_limit}) for a model "
                f"with {self.classes} outputs, but they run from {low} to {top}"
            )

    def prepare(self, y: Any) -> Any:
        """A batch of labels on the device, in the form the loss takes.

        Labels still on the host are checked first (cheap: a batch's minimum and maximum),
        so that a dataset whose labels could not all be checked up front cannot slip a wrong
        class in; labels already on a GPU are not read back for it.
        """
        xp = self.xp
        if isinstance(y, numpy.ndarray):
            self.check(y, "labels")
        y = xp.asarray(y)
        if y.ndim != 1:
            return y  # one-hot or soft rows, or regression targets (N, outputs)
        if self.classes == 1:
            return y[:, None]  # (N,) targets for a single output (N, 1)
        if self.integer:
            y = y.astype("int64", copy=False)
            if self.one_hot_targets:
                from .losses import one_hot

                return one_hot(y, self.classes, xp=xp)
        return y

    def correct(self, out: Any, y: Any) -> Any:
        """Number of rows whose arg-max matches the label (0-d, on the device)."""
        predicted = out.argmax(axis=1)
        truth = y.argmax(axis=1) if y.ndim == 2 else y
        return (predicted == truth).sum()


def evaluate_batches(model, batches, labels: Labels) -> tuple[float, float | None]:
    """Mean loss and accuracy of `model` over (x, y) batches, without training."""
    xp = model.xp
    trunk, n_trunk = model._trunk()
    totals = RunningTotals(xp)
    for batch, (xb, yb) in enumerate(batches, start=1):
        x = model._prepare_input(xb)
        y = labels.prepare(yb)
        out, _, _ = trunk.apply(
            model.params[:n_trunk], model.state[:n_trunk], x, training=False, rng=None, xp=xp
        )
        loss, _ = value_and_grad(model._loss_fn, out, y, xp=xp, name=model.loss_name)
        correct = labels.correct(out, y) if labels.track_accuracy else None
        totals.add(batch, x.shape[0], loss, correct)
    if totals.seen == 0:
        raise ValueError("evaluate: no data")
    totals.settle()  # a non-finite loss makes the mean loss NaN or inf, as it should
    metrics = totals.metrics(labels.track_accuracy)
    return metrics["loss"], metrics["acc"]


def _schedule_callbacks(
    model,
    *,
    lr_schedule,
    lr_patience,
    lr_factor,
    lr_min,
    min_delta,
    early_stopping,
    patience,
    restore_best,
    monitor,
    first_epoch,
    last_epoch,
):
    """The built-in callbacks that fit's keyword arguments ask for."""
    begin: list[Any] = []
    end: list[Any] = []
    if lr_schedule == "plateau":
        end.append(ReduceLROnPlateau(monitor, lr_factor, lr_patience, lr_min, min_delta))
    elif lr_schedule == "cosine":
        base = model.optimizer.lr
        if lr_min > base:
            raise ValueError(
                f"fit: lr_schedule='cosine' decays from the optimizer's lr={base:g} to "
                f"lr_min={lr_min:g}, which is higher; pass lr_min <= lr"
            )
        cosine = Cosine(max(last_epoch - first_epoch, 1), 0, lr_min / base if base else 0.0)
        begin.append(LearningRateScheduler(lambda e, _lr: base * cosine(e - first_epoch)))
    elif callable(lr_schedule):
        begin.append(LearningRateScheduler(lr_schedule))
    elif lr_schedule is not None:
        raise ValueError(
            f"fit: lr_schedule must be None, 'plateau', 'cosine' or a callable (epoch, lr) -> "
            f"lr, not {lr_schedule!r}"
        )
    if early_stopping:
        end.append(EarlyStopping(monitor, patience, min_delta, restore_best=restore_best))
    return begin, end


def fit(
    model,
    data,
    epochs=1,
    batch_size=64,
    num_classes=None,
    val_data=None,
    early_stopping=False,
    patience=5,
    min_delta=1e-4,
    lr_schedule=None,
    lr_patience=3,
    lr_factor=0.5,
    lr_min=1e-6,
    *,  # the arguments above in ConvNet-NumPy's order; those below by name only
    val_split=0.0,
    restore_best=True,
    shuffle=True,
    seed=None,
    verbose=True,
    callbacks=(),
    monitor=None,
    resume_from=None,
) -> dict[str, list]:
    """Train `model`; see `Model.fit` for the arguments. Returns `model.history`."""
    _check_not_keras_style(epochs)
    if resume_from is not None:
        model._restore_checkpoint(resume_from)
    if model.optimizer is None or model._loss_fn is None:
        raise ValueError("fit: call model.compile(loss=..., optimizer=...) before fit")
    if model.precision.mixed and not backend.is_cupy(model.xp):
        _warn_mixed_on_numpy(model)
    batch_size = checks.count(batch_size, "fit: batch_size")
    epochs = checks.count(epochs, "fit: epochs", minimum=0)
    callbacks = () if callbacks is None else callbacks
    train = TrainingData(data)
    if val_split:
        if val_data is not None:
            raise ValueError("fit: pass either val_data or val_split, not both")
        train, val_data = split_validation(train, val_split)
    if seed is not None:
        model.seed = int(seed)
    model._ensure_seed()
    x_shape, y_sample = train.peek(batch_size)
    if model.params is None:
        model.build(infer_input_shape(model.network, x_shape))
    model._ensure_opt_state()
    model.optimizer.check_state(model.params, model.opt_state, "fit")  # once: steps skip it
    _check_a_last_batch_of_one(model, train, batch_size)

    out_shape = model.network.output_shape(model.input_shape)
    labels = Labels(model, y_sample, num_classes, out_shape)
    val = None
    if val_data is not None:
        val = TrainingData(val_data, "fit: val_data", check_values=not val_split)
        labels.check(numpy.asarray(backend.to_host(val.peek(batch_size)[1])), "val_data labels")

    first_epoch = 0 if resume_from is not None else model.epoch
    last_epoch = int(epochs) if resume_from is not None else model.epoch + int(epochs)
    if resume_from is not None and last_epoch <= model.epoch:
        warnings.warn(
            f"fit(epochs={last_epoch}, resume_from=...): the checkpoint has trained "
            f"{model.epoch} epochs, and with resume_from `epochs` counts them all, so there "
            f"is nothing left to train; pass epochs={model.epoch + 1} or more to train on",
            UserWarning,
            stacklevel=3,
        )
    if monitor is None:
        monitor = _default_monitor(val is not None, labels.track_accuracy)
    elif early_stopping or lr_schedule == "plateau":
        _check_monitor(monitor, val is not None, labels.track_accuracy)
    begin_cbs, end_cbs = _schedule_callbacks(
        model,
        lr_schedule=lr_schedule,
        lr_patience=lr_patience,
        lr_factor=lr_factor,
        lr_min=lr_min,
        min_delta=min_delta,
        early_stopping=early_stopping,
        patience=patience,
        restore_best=restore_best,
        monitor=monitor,
        first_epoch=first_epoch,
        last_epoch=last_epoch,
    )
    all_callbacks = [*begin_cbs, *end_cbs, *callbacks]
    model.stop_training = False
    model.resuming = resume_from is not None
    keeps_best = any(isinstance(cb, EarlyStopping) and cb.restore_best for cb in all_callbacks)
    if not (model.resuming and keeps_best):
        # a new run has no best epoch yet; a resumed one has the checkpoint's, which only
        # an EarlyStopping that restores the best will use (else checkpoints would carry
        # them on for nothing)
        model.best_weights = None
    model.logged_metrics = _logged_metrics(val is not None, labels.track_accuracy)
    for key in LOG_KEYS:
        model.history.setdefault(key, [])
    try:
        # where callbacks replay the history and check their settings against the logs
        _call(all_callbacks, "on_train_begin", model)
    finally:
        model.resuming = False
    for epoch_index in range(model.epoch, last_epoch):
        _call([*begin_cbs, *callbacks], "on_epoch_begin", model, epoch_index)
        lr = model.lr
        result = run_epoch(
            model,
            train,
            epoch_index=epoch_index,
            epochs=last_epoch,
            batch_size=batch_size,
            shuffle=shuffle,
            labels=labels,
            verbose=verbose,
        )
        logs = {
            "loss": result["loss"],
            "acc": result["acc"],
            "val_loss": None,
            "val_acc": None,
            "lr": lr,
        }
        if val is not None:
            logs["val_loss"], logs["val_acc"] = evaluate_batches(
                model,
                val.batches(max(batch_size, 256), shuffle=False, seed=0, xp=model.xp),
                labels,
            )
        for key, value in logs.items():
            model.history[key].append(value)
        model.epoch = epoch_index + 1
        if verbose:
            rate = result["_samples"] / max(result["_seconds"], 1e-9)
            shown = {k: v for k, v in logs.items()}
            shown["samples/s"] = rate
            print(
                f"epoch {model.epoch}/{last_epoch}: {_format_metrics(shown)}  "
                f"({result['_seconds']:.1f} s)",
                flush=True,
            )
        _call(end_cbs, "on_epoch_end", model, model.epoch, logs)
        _call(list(callbacks), "on_epoch_end", model, model.epoch, logs)
        if model.stop_training:
            if verbose:
                print(f"stopping early after epoch {model.epoch}", flush=True)
            break
    _call(all_callbacks, "on_train_end", model)
    model.logged_metrics = None
    return model.history


def _warn_mixed_on_numpy(model) -> None:
    """Say, once per model, that mixed precision on NumPy is slow and meant for GPUs."""
    if model._warned_mixed_on_numpy:
        return
    model._warned_mixed_on_numpy = True
    warnings.warn(
        "fit: mixed precision on NumPy is slow: NumPy has no fast float16 matrix product, "
        "so a step takes tens of times as long as in float32 (about 37x for the README "
        "model). It is meant for GPUs (CuPy); on a CPU use it only to check the "
        "arithmetic, and compile(precision='float32') to train",
        precision.MixedPrecisionOnNumPyWarning,
        stacklevel=4,  # the caller of Model.fit
    )


def _logged_metrics(has_validation: bool, has_accuracy: bool) -> tuple[str, ...]:
    """The entries of the epoch logs that fit gives a value (the others are None)."""
    logged = ["loss", "acc"] if has_accuracy else ["loss"]
    if has_validation:
        logged += ["val_loss", "val_acc"] if has_accuracy else ["val_loss"]
    return (*logged, "lr")


def _check_monitor(monitor: str, has_validation: bool, has_accuracy: bool) -> None:
    """ValueError, before any training, when `monitor` names a metric fit will not log."""
    logged = _logged_metrics(has_validation, has_accuracy)
    _monitored({key: 0.0 if key in logged else None for key in LOG_KEYS}, monitor)


def _check_a_last_batch_of_one(model, train: TrainingData, batch_size: int) -> None:
    """When each epoch ends with a batch of one sample, train the network on one sample
    now (nothing kept), so that a layer that cannot (a BatchNorm2D seeing 1x1 maps has one
    value per channel) fails before the first epoch rather than at its end."""
    try:
        last = len(train) % batch_size
    except TypeError:  # a dataset without a length
        return
    if last != 1:
        return
    x = model.xp.zeros((1, *model.input_shape), dtype=model.dtype)  # (1, *input_shape)
    trunk, n_trunk = model._trunk()
    try:
        trunk.apply(model.params[:n_trunk], model.state[:n_trunk], x, training=True,
                    rng=model.xp.random.default_rng(0), xp=model.xp)  # fmt: skip
    except ShapeError as error:
        raise ValueError(
            f"fit: with {len(train)} samples and batch_size={batch_size}, every epoch ends "
            f"with a batch of 1 sample, which this network cannot train on ({error}); "
            "choose a batch_size that leaves more than 1 sample in the last batch"
        ) from None


def _check_not_keras_style(epochs: Any) -> None:
    """Refuse `fit(x, y)`: the data is one argument, and the second is `epochs`."""
    if getattr(epochs, "ndim", 0):
        raise TypeError(
            "fit takes the data as one argument, fit((x, y), epochs=...), and its second "
            f"argument is epochs; it was given an array of shape {tuple(epochs.shape)}"
        )


def _default_monitor(has_validation: bool, has_accuracy: bool) -> str:
    """ConvNet-NumPy's choice: validation accuracy, else training accuracy (losses when no
    accuracy is defined)."""
    name = "acc" if has_accuracy else "loss"
    return f"val_{name}" if has_validation else name


def _call(callbacks, method: str, *args) -> None:
    for callback in callbacks:
        fn = getattr(callback, method, None)
        if fn is not None:
            fn(*args)
