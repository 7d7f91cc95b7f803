"""Mixed precision: float16 compute, float32 master weights, dynamic loss scaling.

A mixed-precision training step keeps the parameters ("master weights") and the optimizer
state in float32 and runs the network in float16:

1. cast the float32 params to float16 (`Policy.cast_to_compute`) and the batch too;
2. forward in float16; cast the logits to float32 and compute the loss in float32;
3. multiply the loss gradient by the loss scale S (`DynamicLossScaler.scale_loss_grad`)
   so that small gradients do not flush to zero in float16, and back-propagate in float16;
4. cast the gradients to float32 and divide by S (`DynamicLossScaler.unscale_and_check`),
   which also says whether every gradient is finite;
5. if they are, the optimizer updates the float32 params; if not (the scale was too big
   and something overflowed), the step is skipped and S is halved. After
   `growth_interval` good steps in a row S doubles (`DynamicLossScaler.update`).

`mixed_precision_step` does all five for a custom loop; `Model.compile(precision="mixed")`
uses it inside `fit`.

What stays in float32 inside a float16 network, and why:

- BatchNorm2D statistics: a mean or variance over N*H*W values accumulated in float16
  loses digits (and can overflow), so they are accumulated in float32
  (`accumulation_dtype`) and the running statistics are stored in float32.
- softmax / log-softmax and the loss: exp() overflows float16 above 11.1 and the loss is
  a sum over the batch, so the logits are cast to float32 before the loss.
- the optimizer: updates like lr·m/√v are far below float16's resolution of a weight
  (1/1024 relative), so master weights, moments and the update stay float32.

On a GPU float16 matrix products run on tensor cores and every activation moves half the
bytes. NumPy has no fast float16 matmul (it converts element by element), so on a CPU
mixed precision is slower than float32 (about 37x for a step of the README model): use it
for speed only with CuPy; on NumPy it is for testing that the arithmetic is right
(docs/gpu.md has the figures), and `Model.fit` says so once per model with a
`MixedPrecisionOnNumPyWarning`.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import numpy

from . import api, cuda_kernels, losses
from . import tree as _tree
from .backend import get_array_module, is_cupy

__all__ = [
    "FLOAT32",
    "MIXED",
    "POLICIES",
    "DynamicLossScaler",
    "MixedPrecisionOnNumPyWarning",
    "Policy",
    "accumulation_dtype",
    "all_finite",
    "cast_floating",
    "get_policy",
    "mixed_precision_step",
    "scaled_forward_backward",
    "select_if_finite",
]


class MixedPrecisionOnNumPyWarning(UserWarning):
    """`fit` was asked for mixed precision on NumPy, where it is slow (see the module
    docstring): given once per Model. Filter it by this class where that is intended."""


def accumulation_dtype(dtype: Any) -> numpy.dtype:
    """The dtype to accumulate sums and means of `dtype` values in: float32 for float16,
    otherwise `dtype` itself (so float32 and float64 code is unchanged)."""
    dtype = numpy.dtype(dtype)  # host
    return numpy.dtype("float32") if dtype == numpy.float16 else dtype  # host


def cast_floating(tree: Any, dtype: Any) -> Any:
    """Every floating-point leaf of `tree` cast to `dtype` (no copy where it already is);
    integer, boolean and non-array leaves unchanged."""
    dtype = numpy.dtype(dtype)  # host

    def cast(leaf: Any) -> Any:
        leaf_dtype = getattr(leaf, "dtype", None)
        if leaf_dtype is None or leaf_dtype.kind != "f" or leaf_dtype == dtype:
            return leaf
        return leaf.astype(dtype)

    return _tree.map(cast, tree)


def _cast_like(tree: Any, template: Any) -> Any:
    """`tree` with each array leaf cast to the dtype of the matching leaf of `template`."""

    def cast(leaf: Any, like: Any) -> Any:
        like_dtype = getattr(like, "dtype", None)
        if like_dtype is None or getattr(leaf, "dtype", like_dtype) == like_dtype:
            return leaf
        return leaf.astype(like_dtype)

    return _tree.map(cast, tree, template)


def _dtype_name(value: Any) -> Any:
    """`value` as a dtype name ("float16" for numpy.float16), or as it is when it names no
    dtype (the validator then says what is wrong with it)."""
    if value is None or isinstance(value, bool):
        return value  # numpy.dtype(None) would be float64
    try:
        return numpy.dtype(value).name  # host
    except (TypeError, ValueError):
        return value


def _check_policy_dtype(instance: Any, attribute: Any, value: Any) -> None:
    """ValueError unless `value` names a floating dtype (float32 or wider for the params)."""
    kind = None
    if isinstance(value, str):
        try:
            kind = numpy.dtype(value).kind  # host
        except TypeError:
            pass
    if kind != "f":
        raise ValueError(
            f"Policy {attribute.name} must be a floating dtype such as 'float16' or "
            f"'float32', not {value!r}"
        )
    if attribute.name == "param_dtype" and numpy.dtype(value).itemsize < 4:  # host
        raise ValueError(
            f"Policy param_dtype must be float32 or wider, not {value}: weights kept in "
            "float16 lose most updates (float16 is for the compute dtype)"
        )


@attrs.frozen
class Policy:
    """Which dtype the network computes in and which the parameters are kept in.

    `Policy("float32", "float32")` is ordinary training; `Policy("float16", "float32")` is
    mixed precision (float16 activations and matmuls, float32 master weights). Both are
    floating dtypes, stored by name (numpy.float16 becomes "float16"); the parameters'
    dtype is float32 or wider.
    """

    compute_dtype: str = attrs.field(
        default="float32", converter=_dtype_name, validator=_check_policy_dtype
    )
    param_dtype: str = attrs.field(
        default="float32", converter=_dtype_name, validator=_check_policy_dtype
    )

    @property
    def mixed(self) -> bool:
        """True when the network computes in a narrower dtype than the parameters."""
        return self.compute_dtype != self.param_dtype

    def cast_to_compute(self, tree: Any) -> Any:
        """Params (or a batch) -> compute dtype, for the forward and backward pass."""
        return cast_floating(tree, self.compute_dtype)

    def cast_to_param(self, tree: Any) -> Any:
        """Gradients (or anything computed) -> the parameters' dtype, for the optimizer."""
        return cast_floating(tree, self.param_dtype)

    def to_config(self) -> dict[str, str]:
        """{"compute_dtype": "float16", "param_dtype": "float32"}: JSON-able, for saving."""
        return attrs.asdict(self)

    @classmethod
    def from_config(cls, config: Any) -> Policy:
        """The policy that `to_config` gave (ValueError for unknown entries or bad dtypes;
        a missing entry takes its default, float32)."""
        return cls(**_known_settings(cls, config, "a precision policy"))


FLOAT32 = Policy("float32", "float32")
MIXED = Policy("float16", "float32")
POLICIES = {"float32": FLOAT32, "mixed": MIXED, "mixed_float16": MIXED}


def get_policy(policy: str | Policy | None) -> Policy:
    """A `Policy` from a name ("float32", "mixed", "mixed_float16"), a Policy, or None
    (float32)."""
    if policy is None:
        return FLOAT32
    if isinstance(policy, Policy):
        return policy
    if not isinstance(policy, str) or policy not in POLICIES:
        raise ValueError(f"unknown precision {policy!r}; valid: {', '.join(sorted(POLICIES))}")
    return POLICIES[policy]


def all_finite(tree: Any) -> Any:
    """True when no leaf of `tree` holds inf or NaN: a 0-d boolean array on the leaves'
    device (no host copy)."""
    leaves = _tree.leaves(tree)
    if not leaves:
        return numpy.bool_(True)  # host: nothing to check
    xp = get_array_module(leaves[0])
    finite = xp.isfinite(leaves[0]).all()
    for leaf in leaves[1:]:
        finite = finite & xp.isfinite(leaf).all()
    return finite


def select_if_finite(finite: Any, new: Any, old: Any) -> Any:
    """`new` where `finite` is true, else `old`, leaf by leaf (the skipped step).

    With a host boolean (NumPy) this is a plain branch; with a 0-d device array (CuPy) it
    is `where(finite, new, old)` on the device, so deciding costs no host sync.
    """
    if isinstance(finite, (bool, numpy.bool_)) or get_array_module(finite) is numpy:  # host
        return new if bool(finite) else old
    xp = get_array_module(finite)
    return _tree.map(lambda n, o: xp.where(finite, n, o), new, old)


def _known_settings(cls: type, config: Any, what: str) -> dict[str, Any]:
    """`config` when it is a dict of `cls`'s fields (for `from_config`), else ValueError."""
    names = [field.name for field in attrs.fields(cls)]
    if not isinstance(config, dict):
        raise ValueError(f"{what} config is a dict of {', '.join(names)}, not {config!r}")
    unknown = sorted(set(config) - set(names), key=str)
    if unknown:
        raise ValueError(
            f"{what} config has no entry {', '.join(map(repr, unknown))}; its entries are "
            f"{', '.join(names)}"
        )
    return config


def _is_host_number(value: Any) -> bool:
    """True for Python and NumPy scalars (and anything else that is no array)."""
    return not hasattr(value, "shape") or isinstance(value, numpy.generic)


def _is_real(value: Any) -> bool:
    """True for an int or float (Python or NumPy), not a bool."""
    return isinstance(value, (int, float, numpy.integer, numpy.floating)) and not isinstance(
        value, (bool, numpy.bool_)
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, numpy.integer)) and not isinstance(value, bool)


@attrs.frozen
class DynamicLossScaler:
    """Dynamic loss scaling as a small pure state machine (each method returns new values).

    State: `scale` S and `good_steps`, the finite steps since S last changed.

        finite step:   good_steps += 1; when it reaches growth_interval,
                       S <- min(S * growth_factor, max_scale) and good_steps <- 0
        inf/NaN step:  the update is skipped, S <- max(S * backoff_factor, min_scale),
                       good_steps <- 0

    `scale` and `good_steps` are Python numbers while `update` is given host booleans, and
    0-d device arrays once it is given a device array (so a GPU loop never syncs).
    Defaults follow torch.cuda.amp.GradScaler (S = 2¹⁶, doubled every 2000 good steps).

    The settings are checked when a scaler is made: growth_factor > 1, 0 < backoff_factor
    < 1, growth_interval an int >= 1, 0 < min_scale <= max_scale, all finite; and, while
    they are host numbers, min_scale <= scale <= max_scale and good_steps an int >= 0
    (a scale of NaN, 0 or inf would skip every step for ever). `to_config` and
    `from_config` save and restore the whole scaler, state and settings (`Model.save` and
    checkpoints store it, so a resumed run goes on with the scale it had).
    """

    scale: Any = 2.0**16
    good_steps: Any = 0
    growth_factor: float = 2.0
    backoff_factor: float = 0.5
    growth_interval: int = 2000
    min_scale: float = 1.0
    max_scale: float = 2.0**24

    def __attrs_post_init__(self):
        for name in ("growth_factor", "backoff_factor", "min_scale", "max_scale"):
            value = getattr(self, name)
            if not (_is_real(value) and math.isfinite(value)):
                raise ValueError(f"DynamicLossScaler {name} must be a finite number, not {value!r}")
        if not (self.growth_factor > 1.0 and 0.0 < self.backoff_factor < 1.0):
            raise ValueError(
                "DynamicLossScaler needs growth_factor > 1 and 0 < backoff_factor < 1, got "
                f"{self.growth_factor} and {self.backoff_factor}"
            )
        if not (_is_int(self.growth_interval) and self.growth_interval >= 1):
            raise ValueError(
                f"DynamicLossScaler growth_interval must be an int >= 1, got "
                f"{self.growth_interval!r}"
            )
        if not 0.0 < self.min_scale <= self.max_scale:
            raise ValueError(
                "DynamicLossScaler needs 0 < min_scale <= max_scale, got min_scale "
                f"{self.min_scale} and max_scale {self.max_scale}"
            )
        # device arrays come from `update`, which keeps them in range; reading them here
        # would make the host wait for the GPU at every step
        if _is_host_number(self.scale) and not (
            _is_real(self.scale) and self.min_scale <= self.scale <= self.max_scale
        ):
            raise ValueError(
                f"DynamicLossScaler scale must be a finite number in [min_scale, max_scale] "
                f"= [{self.min_scale:g}, {self.max_scale:g}], not {self.scale!r}"
            )
        if _is_host_number(self.good_steps) and not (
            _is_int(self.good_steps) and self.good_steps >= 0
        ):
            raise ValueError(
                f"DynamicLossScaler good_steps must be an int >= 0, not {self.good_steps!r}"
            )

    def to_config(self) -> dict[str, Any]:
        """The state and the settings as Python numbers, JSON-able, for saving:
        {"scale": 1024.0, "good_steps": 17, "growth_factor": 2.0, ...}. On a GPU this
        reads `scale` and `good_steps` back (a host sync: for saving, not inside a step)."""
        config = attrs.asdict(self)
        config["scale"] = float(self.scale)
        config["good_steps"] = int(self.good_steps)
        return config

    @classmethod
    def from_config(cls, config: Any) -> DynamicLossScaler:
        """The scaler that `to_config` gave (ValueError for unknown entries or bad values,
        so a restored scaler is one that can take steps; a missing entry takes its
        default)."""
        return cls(**_known_settings(cls, config, "a loss scaler"))

    def scale_loss_grad(self, dloss: Any) -> Any:
        """dLoss/dprediction times S, in the dtype of `dloss`: what back-propagation starts
        from (scaling the gradient is scaling the loss)."""
        xp = get_array_module(dloss)
        return dloss * xp.asarray(self.scale, dtype=dloss.dtype)

    def unscale_and_check(self, grads: Any) -> tuple[Any, Any]:
        """(grads / S in float32, finite): the true gradients for the optimizer, and a 0-d
        boolean that is false when any of them overflowed to inf or NaN.

        On a GPU each leaf is one kernel (`cuda_kernels.unscale_and_check`) that also
        flags an inf or NaN, so the check costs no pass of its own.
        """
        leaves = _tree.leaves(grads)
        if not leaves:
            return grads, numpy.bool_(True)  # host: nothing to check
        xp = get_array_module(leaves[0])
        inverse = 1.0 / xp.asarray(self.scale, dtype="float32")  # float32 0-d
        if is_cupy(xp):
            nonfinite = xp.zeros(1, dtype="int32")  # (1,), set to 1 by any inf or NaN

            def unscale_and_flag(g: Any) -> Any:
                return cuda_kernels.unscale_and_check(g, inverse, nonfinite)

            unscaled = _tree.map(unscale_and_flag, grads)
            return unscaled, nonfinite.reshape(()) == 0
        unscaled = _tree.map(lambda g: cuda_kernels.unscale_reference(g, inverse), grads)
        return unscaled, all_finite(unscaled)

    def update(self, finite: Any) -> DynamicLossScaler:
        """The scaler after a step whose gradients were `finite` (see the class docstring)."""
        if isinstance(finite, (bool, numpy.bool_)) or get_array_module(finite) is numpy:  # host
            return self._update_host(bool(finite))
        return self._update_device(finite)

    def _update_host(self, finite: bool) -> DynamicLossScaler:
        scale, good = float(self.scale), int(self.good_steps)
        if not finite:
            return attrs.evolve(
                self, scale=max(scale * self.backoff_factor, self.min_scale), good_steps=0
            )
        good += 1
        if good >= self.growth_interval:
            return attrs.evolve(
                self, scale=min(scale * self.growth_factor, self.max_scale), good_steps=0
            )
        return attrs.evolve(self, scale=scale, good_steps=good)

    def _update_device(self, finite: Any) -> DynamicLossScaler:
        # the same rules as _update_host, as element-wise selects on 0-d arrays: on a GPU
        # in one kernel (cuda_kernels.loss_scale_update), else (the reference) as arrays
        xp = get_array_module(finite)
        if is_cupy(xp):
            scale, good = cuda_kernels.loss_scale_update(
                finite, self.scale, self.good_steps, growth_factor=self.growth_factor,
                backoff_factor=self.backoff_factor, growth_interval=self.growth_interval,
                min_scale=self.min_scale, max_scale=self.max_scale,
            )  # fmt: skip
            return attrs.evolve(self, scale=scale, good_steps=good)
        scale = xp.asarray(self.scale, dtype="float64")
        good = xp.where(finite, xp.asarray(self.good_steps, dtype="int64") + 1, 0)
        grow = good >= self.growth_interval
        grown = xp.where(grow, xp.minimum(scale * self.growth_factor, self.max_scale), scale)
        shrunk = xp.maximum(scale * self.backoff_factor, self.min_scale)
        return attrs.evolve(
            self, scale=xp.where(finite, grown, shrunk), good_steps=xp.where(grow, 0, good)
        )


def scaled_forward_backward(
    network: Any,
    params: Any,
    state: Any,
    x: Any,
    labels: Any,
    scaler: DynamicLossScaler,
    *,
    loss_fn: Any,
    rng: Any = None,
    xp: Any = numpy,
    policy: Policy = MIXED,
) -> tuple[Any, Any, Any, Any, Any]:
    """Steps 1-4 of the module docstring: forward and backward in the compute dtype.

    Args:
        network: the layer (usually a `Sequential`); params, state: its float32 pytrees.
        x: the batch (N, *input_shape), any float dtype; labels as `loss_fn` takes them.
        loss_fn: `(logits, labels, *, xp) -> (loss, dloss/dlogits)`, run in float32.

    Returns:
        (loss, logits, new_state, grads, finite): the float32 loss (0-d) and logits (for
        metrics), the new layer state in the dtypes of `state`, the true gradients in
        float32 (divided by the loss scale), and whether they are all finite (0-d bool).
    """
    compute_params = policy.cast_to_compute(params)
    x = x.astype(policy.compute_dtype, copy=False)
    # An overflow in float16 is expected now and then: the scaler detects it and the step
    # is skipped, so NumPy need not warn about it.
    with numpy.errstate(over="ignore", invalid="ignore"):  # host: warnings only
        logits, new_state, cache = api.apply(
            network, compute_params, state, x, training=True, rng=rng, xp=xp
        )
        logits = logits.astype("float32")  # softmax and the loss in float32
        loss, dlogits = losses.value_and_grad(loss_fn, logits, labels, xp=xp)
        dlogits = scaler.scale_loss_grad(dlogits).astype(policy.compute_dtype)
        grads, _ = api.grad(network, compute_params, cache, dlogits, xp=xp, input_grad=False)
        grads, finite = scaler.unscale_and_check(grads)
    new_state = _cast_like(new_state, state)  # running statistics stay float32
    return loss, logits, new_state, policy.cast_to_param(grads), finite


def mixed_precision_step(
    network: Any,
    params: Any,
    state: Any,
    opt_state: Any,
    scaler: DynamicLossScaler,
    x: Any,
    labels: Any,
    *,
    optimizer: Any,
    loss_fn: Any,
    rng: Any = None,
    xp: Any = numpy,
    policy: Policy = MIXED,
) -> tuple[Any, Any, Any, DynamicLossScaler, Any, Any, Any]:
    """One whole training step in mixed precision (the five steps of the module docstring).

    `scaled_forward_backward`, then `optimizer.update_if(finite, ...)`: the update of the
    float32 params when the gradients are finite, a skipped step otherwise (the layers'
    state is kept too), then `scaler.update`.

    Returns:
        (params, state, opt_state, scaler, loss, logits, finite): the new float32 trees
        (unchanged when `finite` is false), the next scaler, the float32 loss (0-d), the
        float32 logits (N, classes) for metrics, and whether the step was taken (0-d).
    """
    loss, logits, new_state, grads, finite = scaled_forward_backward(
        network, params, state, x, labels, scaler, loss_fn=loss_fn, rng=rng, xp=xp, policy=policy
    )
    params, opt_state = optimizer.update_if(finite, params, grads, opt_state)
    state = select_if_finite(finite, new_state, state)
    return params, state, opt_state, scaler.update(finite), loss, logits, finite
