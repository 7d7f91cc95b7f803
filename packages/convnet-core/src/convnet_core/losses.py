"""Loss functions. Each returns `(value, grad)`: the mean loss over the batch (a 0-d array of
`xp`, so nothing is copied to the host) and its gradient with respect to the prediction,
shaped like the predictions. `value_and_grad` calls any loss (a user's too) and checks
what it returned (a pair, a 0-d value, a gradient of the predictions' shape and dtype), as
`fit`, `evaluate`, mixed precision and the custom-loop `Model.loss` do.
"""

from __future__ import annotations

from typing import Any

import numpy

from . import cuda_kernels
from .backend import is_cupy

__all__ = [
    "LOSSES",
    "check_class_labels",
    "cross_entropy_grad_of_probabilities",
    "cross_entropy_of_probabilities",
    "huber",
    "log_softmax",
    "mse",
    "one_hot",
    "softmax_cross_entropy",
    "softmax_cross_entropy_unfused",
    "value_and_grad",
]

_XENT = "softmax_cross_entropy"  # the loss named in its errors


def one_hot(labels: Any, num_classes: int, *, xp: Any, dtype: Any = "float32") -> Any:
    """Integer labels (N,) -> one-hot rows (N, num_classes) of `dtype`.

    The labels must be an integer array of classes in [0, num_classes): with NumPy a float
    dtype or a label outside the range is a ValueError naming the label (never a row
    wrapped around to the last class). With CuPy the dtype is checked but the values are
    not, since reading them would make the host wait for the GPU: a label outside the
    range gives a row of NaN (of zeros for an integer `dtype`), so a loss computed from
    it is NaN.
    """
    labels = xp.asarray(labels)
    check_class_labels(labels, num_classes, xp=xp, name="one_hot")
    return _one_hot(labels, num_classes, xp, dtype)


def _one_hot(labels: Any, num_classes: int, xp: Any, dtype: Any) -> Any:
    """`one_hot` of checked labels (N,) -> (N, num_classes)."""
    if not is_cupy(xp):
        out = xp.zeros((labels.shape[0], num_classes), dtype=dtype)
        out[xp.arange(labels.shape[0]), labels] = 1
        return out
    # compared, not scattered: CuPy's indexing would wrap a label outside [0, k) around
    rows = (labels[:, None] == xp.arange(num_classes)).astype(dtype)  # (N, k)
    if xp.dtype(dtype).kind != "f":
        return rows  # no NaN to mark a wrong label with: its row is all zeros
    inside = (labels >= 0) & (labels < num_classes)  # (N,), decided on the device
    return xp.where(inside[:, None], rows, xp.asarray(float("nan"), dtype=dtype))


def check_class_labels(labels: Any, num_classes: int, *, xp: Any, name: str) -> None:
    """ValueError naming `name` unless `labels` (N,) are integer classes in [0, num_classes).

    The dtype is checked everywhere (host work). The values are checked with NumPy only,
    by their minimum and maximum (the offending label is looked for only when one is out
    of range); CuPy labels are not read, so that a training step never waits for the GPU.
    """
    if labels.dtype.kind not in "iu":
        raise ValueError(
            f"{name}: class labels must be integers, got dtype {labels.dtype.name}; "
            f"whole-number floats can be passed as labels.astype(int)"
        )
    if is_cupy(xp) or labels.size == 0:
        return
    if labels.min() >= 0 and labels.max() < num_classes:
        return
    outside = (labels < 0) | (labels >= num_classes)
    index = int(outside.argmax())
    raise ValueError(
        f"{name}: label {labels[index]} at index {index} is not a class: the {num_classes} "
        f"classes are 0 to {num_classes - 1}"
    )


def log_softmax(logits: Any, *, xp: Any) -> Any:
    """log softmax over the last axis, stable for any logits: z - max - log Σ exp(z - max).

    logits (..., classes), e.g. (N, classes) -> log-probabilities of the same shape, each
    row's exponentials summing to 1.
    """
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=-1, keepdims=True))


def _targets_as_one_hot(labels: Any, logits: Any, xp: Any) -> Any:
    """softmax_cross_entropy's targets (N, classes): one-hot rows of integer labels (N,),
    checked as `check_class_labels` does, or the (N, classes) rows given."""
    return _targets_of(xp.asarray(labels), logits, xp)


def _targets_of(labels: Any, logits: Any, xp: Any) -> Any:
    """`_targets_as_one_hot` of labels that are already an array of `xp`."""
    n, classes = logits.shape
    if labels.ndim == 2:
        if labels.shape != logits.shape:
            raise ValueError(
                f"{_XENT}: one-hot labels of shape {tuple(labels.shape)} do not match "
                f"logits {(n, classes)}"
            )
        return labels.astype(logits.dtype, copy=False)
    if labels.shape != (n,):
        raise ValueError(
            f"{_XENT}: labels must be (N,) integers or (N, classes) one-hot; got "
            f"{tuple(labels.shape)} for logits {(n, classes)}"
        )
    check_class_labels(labels, classes, xp=xp, name=_XENT)
    return _one_hot(labels, classes, xp, logits.dtype)


def softmax_cross_entropy(logits: Any, labels: Any, *, xp: Any) -> tuple[Any, Any]:
    """Cross-entropy of softmax(logits) against labels, averaged over the batch.

    Args:
        logits: (N, classes) raw scores (no softmax applied).
        labels: (N,) integer classes or (N, classes) one-hot (or soft) targets.

    Returns:
        (loss, dlogits) with loss = -1/N Σₙ Σₖ tₙₖ log softmax(zₙ)ₖ and its gradient
        dlogitsₙ = (softmax(zₙ) Σₖ tₙₖ - tₙ) / N, shaped (N, classes): (softmax(z) - t) / N
        for integer labels and rows that sum to 1, the gradient of the same loss for soft
        rows that do not (as PyTorch's cross_entropy with probability targets). A class
        masked by a -inf logit adds nothing where its target is 0 (the loss stays finite,
        as PyTorch's), and makes the loss +inf where it is the target.

    Integer labels must be classes in [0, classes). With NumPy, labels of a float dtype
    or outside that range are a ValueError naming the loss, the label and the number of
    classes. On CuPy, integer labels and float32/float64 logits take one fused kernel
    (`cuda_kernels.fused_softmax_cross_entropy`), other inputs
    `softmax_cross_entropy_unfused` as on NumPy; there only the labels' dtype is checked,
    their values are not read (that would make the host wait for the GPU), and a label
    outside [0, classes) makes the loss NaN on either path. `fit` checks the labels it
    is given on the host before they reach the GPU.
    """
    if logits.ndim != 2:
        raise ValueError(f"softmax_cross_entropy expects logits (N, classes), got {logits.shape}")
    labels = xp.asarray(labels)
    if is_cupy(xp) and _fused_on_gpu(logits, labels):  # one kernel instead of about sixteen
        return cuda_kernels.fused_softmax_cross_entropy(logits, labels)
    return softmax_cross_entropy_unfused(logits, labels, xp=xp)


def softmax_cross_entropy_unfused(logits: Any, labels: Any, *, xp: Any) -> tuple[Any, Any]:
    """`softmax_cross_entropy` in array operations on any `xp`: one-hot targets (N,
    classes), log-softmax, then the loss and gradient (scaled by each given row's sum,
    which one-hot rows of integer labels do not need). The reference of the fused kernel."""
    labels = xp.asarray(labels)
    targets = _targets_of(labels, logits, xp)  # (N, classes)
    log_probs = log_softmax(logits, xp=xp)  # (N, classes)
    n = logits.shape[0]
    # tₙₖ log pₙₖ where tₙₖ ≠ 0, else 0: a class masked by a -inf logit has log p = -inf,
    # and 0 · -inf would be NaN. One-hot rows of labels pick log p at the label; a NaN
    # row (a label outside the classes, on CuPy) stays NaN.
    picked = targets * xp.where(targets != 0, log_probs, 0)  # (N, classes)
    loss = -picked.sum() / logits.dtype.type(n)
    probs = xp.exp(log_probs)  # (N, classes)
    if labels.ndim == 2:  # rows given, whose sums need not be 1 (one-hot rows of labels are)
        probs = probs * targets.sum(axis=1, keepdims=True)  # softmax(z) Σₖ tₙₖ
    dlogits = (probs - targets) / logits.dtype.type(n)
    return loss, dlogits


def _fused_on_gpu(logits: Any, labels: Any) -> bool:
    """Whether cuda_kernels.fused_softmax_cross_entropy takes these: integer labels (N,)
    and float32/float64 logits, unless cuda_kernels.SOFTMAX_XENT_ON_GPU says "arrays"."""
    return (
        cuda_kernels.SOFTMAX_XENT_ON_GPU == "kernel"
        and labels.shape == logits.shape[:1]
        and labels.dtype.kind in "iu"
        and logits.dtype.name in cuda_kernels.SOFTMAX_XENT_TYPES
    )


def cross_entropy_of_probabilities(probs: Any, labels: Any, *, xp: Any) -> tuple[Any, Any]:
    """`softmax_cross_entropy` of predictions that are probabilities already (the output
    of a softmax layer), not logits: -1/N Σₙ Σₖ tₙₖ log pₙₖ.

    probs: (N, classes); labels: (N,) integer classes or (N, classes) one-hot (or soft)
    targets, checked as `softmax_cross_entropy` checks them. A probability that underflowed
    to 0 counts as the dtype's smallest normal number, so the loss stays finite (-log of
    it, about 87 in float32). Returns (loss, dprobs), dprobs (N, classes) as
    `cross_entropy_grad_of_probabilities` gives it.
    """
    if probs.ndim != 2:
        raise ValueError(
            f"cross_entropy_of_probabilities expects probabilities (N, classes), got {probs.shape}"
        )
    targets = _targets_of(xp.asarray(labels), probs, xp)  # (N, classes)
    n = probs.dtype.type(probs.shape[0])
    loss = -(targets * xp.log(_at_least_tiny(probs, xp))).sum() / n
    return loss, cross_entropy_grad_of_probabilities(targets, probs, xp=xp)


def cross_entropy_grad_of_probabilities(targets: Any, probs: Any, *, xp: Any) -> Any:
    """d/dp of -1/N Σ t log p: -t / (p N), with p at least the dtype's smallest normal
    number; targets and probs (N, classes), the result too."""
    n = probs.dtype.type(probs.shape[0])
    return -targets / (_at_least_tiny(probs, xp) * n)


def _at_least_tiny(probs: Any, xp: Any) -> Any:
    """max(p, the smallest normal number of p's dtype), so that log p and 1/p are finite."""
    return xp.maximum(probs, numpy.finfo(probs.dtype).tiny)  # host


def mse(predictions: Any, targets: Any, *, xp: Any) -> tuple[Any, Any]:
    """Mean squared error over every element: mean((p - t)²); grad 2 (p - t) / size.

    predictions (N, ...) and targets of the same shape (converted to the predictions'
    dtype). Returns (loss, dpredictions): a 0-d array and an array shaped like
    `predictions`.
    """
    targets = xp.asarray(targets, dtype=predictions.dtype)
    if targets.shape != predictions.shape:
        raise ValueError(
            f"mse: targets {targets.shape} do not match predictions {predictions.shape}"
        )
    diff = predictions - targets
    return (diff * diff).mean(), diff * predictions.dtype.type(2.0 / diff.size)


def huber(predictions: Any, targets: Any, *, xp: Any, delta: float = 1.0) -> tuple[Any, Any]:
    """Huber loss, the mean over every element of ½d² for |d| ≤ δ, δ(|d| - ½δ) beyond.

    Quadratic near zero, linear for outliers; the gradient is d clipped to [-δ, δ] / size.

    predictions (N, ...) and targets of the same shape, d = predictions - targets. Returns
    (loss, dpredictions): a 0-d array and an array shaped like `predictions`, both in the
    predictions' dtype.
    """
    targets = xp.asarray(targets, dtype=predictions.dtype)
    if targets.shape != predictions.shape:
        raise ValueError(
            f"huber: targets {targets.shape} do not match predictions {predictions.shape}"
        )
    diff = predictions - targets
    abs_diff = xp.abs(diff)
    small = abs_diff <= delta
    per_element = xp.where(small, 0.5 * diff * diff, delta * (abs_diff - 0.5 * delta))
    grad = xp.clip(diff, -delta, delta) / predictions.dtype.type(diff.size)
    return per_element.mean().astype(predictions.dtype), grad.astype(predictions.dtype)


def value_and_grad(
    loss_fn: Any, predictions: Any, targets: Any, *, xp: Any, name: str | None = None
) -> tuple[Any, Any]:
    """`loss_fn(predictions, targets, xp=xp)`, with what it returned checked.

    A loss returns a pair (value, dLoss/dpredictions): the batch's mean loss as a 0-d array
    and the gradient shaped like `predictions` (N, *output_shape), in its dtype. Anything
    else (the value alone, a per-sample value, a gradient of another shape, which the
    backward pass would broadcast into wrong numbers, or of another dtype) is a ValueError
    naming the loss (`name`, else the function's name) and what it returned. A value given
    as a Python float or a NumPy scalar (as ConvNet-NumPy's losses returned it) is taken as
    a 0-d array of `xp`. The checks compare types, shapes and dtypes on the host; no value
    is read.
    """
    result = loss_fn(predictions, targets, xp=xp)
    name = name or getattr(loss_fn, "__name__", repr(loss_fn))
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise ValueError(
            f"loss {name!r} returned {_described(result)} instead of a pair (value, grad): "
            "the batch's mean loss as a 0-d array and dLoss/dpredictions shaped like the "
            "predictions"
        )
    value, grad = result
    _check_loss_grad(grad, predictions, name)
    return _loss_value(value, predictions, name, xp), grad


def _loss_value(value: Any, predictions: Any, name: str, xp: Any) -> Any:
    """A loss's value as a 0-d array: as returned, or converted from a number on the host
    (a Python float; a NumPy scalar on CuPy, where it could not be stacked with others)."""
    if type(value) is float or (is_cupy(xp) and isinstance(value, numpy.generic)):
        return xp.asarray(value)
    if getattr(value, "shape", None) != ():
        raise ValueError(
            f"loss {name!r} returned a value {_described_as_part(value)} for predictions of "
            f"shape {tuple(predictions.shape)}; the value must be the batch's mean loss, "
            "a 0-d array (return per-sample losses' .mean())"
        )
    return value


def _check_loss_grad(grad: Any, predictions: Any, name: str) -> None:
    """ValueError naming the loss `name` unless `grad` has the predictions' shape and dtype."""
    want = tuple(predictions.shape)
    if not hasattr(grad, "shape") or not hasattr(grad, "dtype"):
        raise ValueError(
            f"loss {name!r} returned a gradient that is a {type(grad).__name__}, not an "
            f"array, for predictions of shape {want}; the gradient of a loss must have the "
            "predictions' shape"
        )
    if tuple(grad.shape) != want:
        raise ValueError(
            f"loss {name!r} returned a gradient of shape {tuple(grad.shape)} for predictions "
            f"of shape {want}; the gradient of a loss must have the predictions' shape"
        )
    if grad.dtype != predictions.dtype:
        raise ValueError(
            f"loss {name!r} returned a gradient of dtype {grad.dtype} for predictions of "
            f"dtype {predictions.dtype}; the gradient of a loss must have the predictions' "
            "dtype"
        )


def _described(obj: Any) -> str:
    """What a loss returned, for its error: "a 0-d array of dtype float32", "a tuple of 3
    items", "a NoneType"."""
    if isinstance(obj, numpy.generic):
        return f"a NumPy {obj.dtype} scalar"
    if hasattr(obj, "shape") and hasattr(obj, "dtype"):
        if obj.shape == ():
            return f"a 0-d array of dtype {obj.dtype}"
        return f"an array of shape {tuple(obj.shape)} and dtype {obj.dtype}"
    if isinstance(obj, (tuple, list)):
        return f"a {type(obj).__name__} of {len(obj)} items"
    return f"a {type(obj).__name__}"


def _described_as_part(obj: Any) -> str:
    """A returned value, after "returned a value": "of shape (20,)", "of type NoneType"."""
    if hasattr(obj, "shape"):
        return f"of shape {tuple(obj.shape)}"
    return f"of type {type(obj).__name__}"


LOSSES = {
    "categorical_crossentropy": softmax_cross_entropy,
    "cce": softmax_cross_entropy,
    "softmax_cross_entropy": softmax_cross_entropy,
    "mse": mse,
    "huber": huber,
}
