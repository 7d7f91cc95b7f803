"""Checks of settings (learning rates, rates, epsilons, counts) shared by the optimizers,
layers, schedules and `fit`.

A plain `if value < 0: raise` lets NaN through, since every comparison with NaN is false,
and NaN or infinity in a setting only shows later as a diverged loss. These checks ask the
opposite question, "is it a finite number in range?", so NaN and infinity fail with the
setting's name.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = ["FLOAT32_MAX", "count", "in_range", "pair", "real"]


def real(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """`value` as a float, when it is a finite real number within the bounds given.

    The bounds are closed unless `low_open`/`high_open`; ValueError names `name`, the
    range and the value.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r}")
    number = float(value)
    inside = math.isfinite(number)
    if low is not None:
        inside = inside and (number > low if low_open else number >= low)
    if high is not None:
        inside = inside and (number < high if high_open else number <= high)
    if not inside:
        raise ValueError(f"{name} must be {_describe(low, high, low_open, high_open)}, got {value}")
    return number


def _describe(low, high, low_open, high_open) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return "finite"


#: The largest finite float32. Layers, optimizers and schedules apply their settings to
#: float32 arrays (by default), where a setting of a larger magnitude becomes infinity.
FLOAT32_MAX = 3.4028234663852886e38


def in_range(owner: str, *, optional: bool = False, **bounds: Any) -> Any:
    """An attrs validator running `real` on a field, named "<owner> <field>", which also
    refuses a magnitude beyond float32's (`FLOAT32_MAX`).

    None is refused, but in a field made with `optional=True` (an optimizer's clip_norm).
    """

    def validate(_instance, attribute, value):
        name = f"{owner} {attribute.name}"
        if value is None and optional:
            return
        number = real(value, name, **bounds)
        if abs(number) > FLOAT32_MAX:
            raise ValueError(
                f"{name} must be at most {FLOAT32_MAX:.4g} in magnitude (the largest "
                f"float32), got {value}"
            )

    return validate


def count(value: Any, name: str, *, minimum: int = 1) -> int:
    """`value` as an int, when it is a whole number (not a bool, not 2.5) >= `minimum`."""
    if not _is_whole(value):
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def pair(value: Any, name: str) -> tuple[int, int]:
    """`value` as a pair of ints (rows, columns): a whole number n gives (n, n), a pair of
    whole numbers (a tuple, or a list as JSON gives one back) is kept.

    ValueError naming `name` for anything else (2.5, 2.0, True, '3', a triple); NumPy
    integers are whole numbers. The range is the caller's to check.
    """
    items = value if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2 or not all(_is_whole(item) for item in items):
        raise ValueError(f"{name} must be a whole number or a pair of them, got {value!r}")
    return int(items[0]), int(items[1])


def _is_whole(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
