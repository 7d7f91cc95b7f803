"""Learning-rate schedules, usable in a custom loop and by `Model.fit`.

Two kinds:

- Step-indexed factors: `step_decay` and `cosine` are frozen objects called with a step
  (or epoch) number; they return the factor by which the base learning rate is scaled.

      schedule = schedules.cosine(total_steps=1000, warmup_steps=100)
      opt_state = optim.set_lr(opt_state, base_lr * schedule(step))

- A metric-driven state machine: `reduce_on_plateau` watches a metric and lowers the rate
  when it stops improving. Its state is a small JSON-able dict, so it is pure too:

      plateau = schedules.reduce_on_plateau(factor=0.5, patience=3)
      plateau_state = plateau.init()
      lr, plateau_state = plateau.update(plateau_state, val_loss, lr)

Counts (step_size, total_steps, warmup_steps, patience) and the step a factor is asked for
are whole numbers: an int, a NumPy integer, or a float with no fractional part (1e3, as a
config or a division may give). 2.5 is refused rather than truncated, and so is a
negative step; errors name the schedule and the argument.
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import Any

import attrs
import numpy

from .checks import in_range

__all__ = ["Cosine", "ReduceOnPlateau", "StepDecay", "cosine", "reduce_on_plateau", "step_decay"]


def _whole_number(value: Any, name: str, *, minimum: int) -> int:
    """`value` as an int when it is a whole number >= `minimum`: an int, a NumPy integer
    (or 0-d integer array), or a float with no fractional part. Anything else (2.5, NaN, a
    bool, a string) or a smaller number is a ValueError naming `name`."""
    number = None
    if not isinstance(value, (bool, numpy.bool_)):
        try:
            number = operator.index(value)
        except TypeError:
            if isinstance(value, numbers.Real) and float(value).is_integer():
                number = int(value)
    if number is None or number < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return number


def _count(name: str, minimum: int) -> Any:
    """An attrs converter: `_whole_number(value, name, minimum=minimum)`."""
    return lambda value: _whole_number(value, name, minimum=minimum)


@attrs.frozen
class StepDecay:
    """factor(step) = gamma ** floor(step / step_size): multiply by gamma every step_size steps."""

    step_size: int = attrs.field(converter=_count("step_decay: step_size", 1))
    gamma: float = attrs.field(
        default=0.1, converter=float, validator=in_range("step_decay", low=0)
    )

    def __call__(self, step: int) -> float:
        """The factor at `step` (0-based, a whole number): gamma ** (step // step_size)."""
        t = _whole_number(step, "step_decay: step", minimum=0)
        return self.gamma ** (t // self.step_size)


@attrs.frozen
class Cosine:
    """Linear warm-up then a half cosine from 1 down to min_factor.

    factor(t) = (t + 1) / warmup_steps                              for t < warmup_steps
    factor(t) = m + (1 - m)·(1 + cos(π·(t - w)/(T - w)))/2          for w <= t < T
    factor(t) = m                                                   for t >= T
    with T = total_steps, w = warmup_steps, m = min_factor in [0, 1] (the factor only
    falls).
    """

    total_steps: int = attrs.field(converter=_count("cosine: total_steps", 1))
    warmup_steps: int = attrs.field(default=0, converter=_count("cosine: warmup_steps", 0))
    min_factor: float = attrs.field(
        default=0.0, converter=float, validator=in_range("cosine", low=0, high=1)
    )

    def __attrs_post_init__(self):
        if not self.warmup_steps < self.total_steps:
            raise ValueError(
                f"cosine: warmup_steps must be in [0, total_steps={self.total_steps}), "
                f"got {self.warmup_steps}"
            )

    def __call__(self, step: int) -> float:
        """The factor at `step` (0-based, a whole number): (step + 1) / w during warm-up,
        then the half cosine, then min_factor from total_steps on."""
        t = _whole_number(step, "cosine: step", minimum=0)
        if t < self.warmup_steps:
            return (t + 1) / self.warmup_steps
        if t >= self.total_steps:
            return self.min_factor
        progress = (t - self.warmup_steps) / (self.total_steps - self.warmup_steps)
        return self.min_factor + (1.0 - self.min_factor) * 0.5 * (
            1.0 + math.cos(math.pi * progress)
        )


def step_decay(step_size: int, gamma: float = 0.1) -> StepDecay:
    """Multiply the learning rate by `gamma` every `step_size` steps (see `StepDecay`)."""
    return StepDecay(step_size, gamma)


def cosine(total_steps: int, warmup_steps: int = 0, min_factor: float = 0.0) -> Cosine:
    """Cosine decay over `total_steps` after a linear warm-up (see `Cosine`)."""
    return Cosine(total_steps, warmup_steps, min_factor)


def is_improvement(value: float, best: float | None, mode: str, min_delta: float) -> bool:
    """True when `value` beats `best` by more than min_delta ("min": lower, "max": higher).

    A NaN or infinite `value` is never an improvement (a diverged loss must not become the
    best, which nothing finite could then beat); the first finite value is, when there is
    no finite `best` yet (None, or a non-finite best kept by older code).
    """
    if not math.isfinite(value):
        return False
    if best is None or not math.isfinite(best):
        return True
    if mode == "min":
        return value < best - min_delta
    return value > best + min_delta


def _check_mode(_instance, _attribute, value):
    if value not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {value!r}")


_PLATEAU = "reduce_on_plateau"


@attrs.frozen
class ReduceOnPlateau:
    """Lower the learning rate when a metric stops improving.

    After each observation: if the metric beats the best by more than min_delta, it becomes
    the best and the wait resets; otherwise the wait grows, and when it reaches `patience`
    the rate becomes max(lr · factor, min_lr), never more than it was, and the wait
    resets. A NaN or infinite metric is never an improvement (`is_improvement`): it counts
    as a stalled epoch and never becomes the best. `mode` is "min" for losses and "max"
    for accuracies. State: {"best": a finite float or None, "wait": int}.
    """

    factor: float = attrs.field(
        default=0.5,
        converter=float,
        validator=in_range(_PLATEAU, low=0, high=1, low_open=True, high_open=True),
    )
    patience: int = attrs.field(default=3, converter=_count(f"{_PLATEAU}: patience", 0))
    min_lr: float = attrs.field(default=1e-6, converter=float, validator=in_range(_PLATEAU, low=0))
    min_delta: float = attrs.field(
        default=1e-4, converter=float, validator=in_range(_PLATEAU, low=0)
    )
    mode: str = attrs.field(default="min", validator=_check_mode)

    def init(self) -> dict[str, Any]:
        """The starting state: no best value yet, no epochs waited."""
        return {"best": None, "wait": 0}

    def update(self, state: dict[str, Any], metric: float, lr: float) -> tuple[float, dict]:
        """Observe `metric`; returns (new learning rate, new state)."""
        metric = float(metric)
        if is_improvement(metric, state["best"], self.mode, self.min_delta):
            return lr, {"best": metric, "wait": 0}
        wait = state["wait"] + 1
        if wait >= self.patience:
            return self._reduced(lr), {"best": state["best"], "wait": 0}
        return lr, {"best": state["best"], "wait": wait}

    def _reduced(self, lr: float) -> float:
        """max(lr · factor, min_lr), but never above `lr`: a rate already below min_lr
        (set by hand or by another schedule) is kept, not raised to min_lr."""
        return min(lr, max(lr * self.factor, self.min_lr))


def reduce_on_plateau(
    factor: float = 0.5,
    patience: int = 3,
    min_lr: float = 1e-6,
    min_delta: float = 1e-4,
    mode: str = "min",
) -> ReduceOnPlateau:
    """A plateau detector for a custom loop or fit (see `ReduceOnPlateau`)."""
    return ReduceOnPlateau(factor, patience, min_lr, min_delta, mode)
