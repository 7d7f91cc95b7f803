"""Optimizers as pure functions of explicit state, in the style of optax.

    opt = optim.adam(lr=1e-3)
    opt_state = opt.init(params)                       # {"lr", "step", "m", "v"}
    params, opt_state = opt.update(params, grads, opt_state)

Nothing is mutated: `update` returns new parameter and state pytrees. The learning rate
lives in the state (a 0-d array), so a custom loop schedules it with `set_lr`:

    opt_state = optim.set_lr(opt_state, 0.5 * optim.get_lr(opt_state))

Every optimizer takes two options on top of its own:

- `clip_norm`: scale all gradients together so their global L2 norm is at most clip_norm,
  g <- g · min(1, clip_norm / (‖g‖ + 1e-6)), as torch.nn.utils.clip_grad_norm_ does.
- `weight_decay`: the L2 penalty added to the gradient, g <- g + weight_decay · p (after
  clipping, as torch.optim does). `adamw` instead decays the weights directly (decoupled).

All arithmetic runs through the arrays' own module (numpy or cupy) on 0-d arrays for the
learning rate and step count, so no value is copied to the host during training.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator
from typing import Any, ClassVar

import attrs
import numpy

from . import cuda_kernels
from . import tree as _tree
from .backend import get_array_module, is_cupy
from .checks import in_range, real
from .precision import accumulation_dtype, select_if_finite

__all__ = [
    "OPTIMIZERS",
    "SGD",
    "Adam",
    "AdamW",
    "Optimizer",
    "RMSprop",
    "adam",
    "adamw",
    "from_config",
    "get",
    "get_lr",
    "rmsprop",
    "set_lr",
    "sgd",
    "to_config",
]

_CLIP_EPS = 1e-6  # added to the norm before dividing, as torch does


def _first_leaf(tree: Any) -> Any:
    leaves = _tree.leaves(tree)
    if not leaves:
        raise ValueError("the parameter tree holds no arrays; is the model built?")
    return leaves[0]


def _zeros_like(tree: Any) -> Any:
    return _tree.map(lambda p: get_array_module(p).zeros_like(p), tree)


_check_positive = in_range("optimizer", low=0.0)  # lr, weight decay, momentum, eps
_check_clip = in_range("optimizer", optional=True, low=0.0, low_open=True)  # clip_norm
# the weight a moving average keeps (beta1, beta2, RMSprop's decay)
_check_decay = in_range("optimizer", low=0.0, high=1.0, high_open=True)


def global_norm(grads: Any) -> Any:
    """‖g‖ = sqrt(Σ over every leaf of Σ g²), as a 0-d array on the grads' device.

    The squares are summed in `precision.accumulation_dtype` of each leaf: float16 leaves
    in float32 (a float16 sum of squares overflows once the norm passes 256), float32 and
    float64 leaves in their own dtype. A tree without leaves ({}, or layers without
    parameters) has norm 0, a NumPy 0-d float64 array since there is no device to put it on.
    """
    leaves = _tree.leaves(grads)
    if not leaves:
        return numpy.zeros((), dtype=numpy.float64)  # host
    xp = get_array_module(leaves[0])
    leaves = [_in_accumulation_dtype(g) for g in leaves]
    if is_cupy(xp):
        # element-wise kernels and a reduction: the result stays on the device
        squares = [(g * g).sum() for g in leaves]
    else:
        squares = [xp.vdot(g.ravel(), g.ravel()) for g in leaves]  # BLAS dot, no temporary
    total = squares[0]
    for value in squares[1:]:
        total = total + value
    return xp.sqrt(total)


def _in_accumulation_dtype(leaf: Any) -> Any:
    """`leaf` itself, or a float32 copy of a float16 leaf (for sums of its squares)."""
    dtype = accumulation_dtype(leaf.dtype)  # host
    return leaf if dtype == leaf.dtype else leaf.astype(dtype)


def clip_by_global_norm(grads: Any, clip_norm: float) -> Any:
    """Scale every gradient by min(1, clip_norm / (‖g‖ + 1e-6)); shapes unchanged.

    On a GPU the scale stays on the device and is always applied (no host sync); with NumPy
    the gradients are returned as they are when the scale is 1.
    """
    leaves = _tree.leaves(grads)
    if not leaves:
        return grads
    xp = get_array_module(leaves[0])
    norm = global_norm(grads)
    scale = xp.minimum(clip_norm / (norm.astype("float64") + _CLIP_EPS), 1.0)
    if not is_cupy(xp):
        scale = float(scale)  # a NumPy scalar: reading it costs nothing
        if scale == 1.0:
            return grads
        return _tree.map(lambda g: g * scale, grads)
    scales: dict[Any, Any] = {}

    def clip(g):
        if g.dtype not in scales:
            scales[g.dtype] = scale.astype(g.dtype)
        return g * scales[g.dtype]

    return _tree.map(clip, grads)


def _zip_leaves(trees: list[Any], out: list[tuple]) -> list[tuple]:
    """Matching leaves of trees shaped alike, in the first tree's order (dicts by key)."""
    first = trees[0]
    if isinstance(first, dict):
        for key in first:
            _zip_leaves([t[key] for t in trees], out)
    elif isinstance(first, (tuple, list)):
        for index in range(len(first)):
            _zip_leaves([t[index] for t in trees], out)
    else:
        out.append(tuple(trees))
    return out


def _rebuild(template: Any, values: Iterator[Any]) -> Any:
    """A tree shaped like `template` whose leaves are taken from `values` in order."""
    if isinstance(template, dict):
        return {key: _rebuild(child, values) for key, child in template.items()}
    if isinstance(template, (tuple, list)):
        return type(template)(_rebuild(child, values) for child in template)
    return next(values)


def _map_leaves(fn, n_out: int, template: Any, *trees: Any) -> tuple[Any, ...]:
    """Apply `fn(*leaves) -> n_out arrays` leaf by leaf; rebuild n_out trees like `template`."""
    results = [_on_arrays(fn, leaves) for leaves in _zip_leaves([template, *trees], [])]
    return tuple(_rebuild(template, iter([r[i] for r in results])) for i in range(n_out))


def _on_arrays(fn, leaves: list[Any]) -> tuple[Any, ...]:
    """fn(*leaves), with 0-d leaves (a scalar parameter) computed as shape (1,) and reshaped
    back: arithmetic on 0-d arrays gives scalars, which the in-place updates cannot take."""
    if leaves[0].ndim:
        return fn(*leaves)
    return tuple(out.reshape(()) for out in fn(*(leaf.reshape(1) for leaf in leaves)))


class _Scalars:
    """The step's scalars (learning rate, bias corrections) ready to multiply a leaf.

    With NumPy they become Python floats (reading a NumPy 0-d array costs no transfer) and
    keep float32 arrays float32. With CuPy they stay 0-d device arrays, cast once per leaf
    dtype, so nothing is copied to the host.
    """

    def __init__(self, xp: Any, **values: Any):
        self._host = not is_cupy(xp)
        self._values = values
        self._cast: dict[tuple[str, Any], Any] = {}

    def get(self, name: str, dtype: Any) -> Any:
        """The scalar `name` cast for leaves of `dtype` (computed once per dtype)."""
        key = (name, dtype)
        if key not in self._cast:
            value = self._values[name]
            if self._host:
                self._cast[key] = float(value)
            else:
                self._cast[key] = value.astype(dtype) if hasattr(value, "astype") else value
        return self._cast[key]


class _AdamScalars:
    """Adam's step scalars, lr, step_size and inv_sqrt_bias2, for the leaves of each dtype:
    on a GPU one kernel per dtype (`cuda_kernels.fused_adam_scalars`), on NumPy the same
    arithmetic in array operations (`cuda_kernels.adam_scalars_reference`)."""

    _NAMES = ("lr", "step_size", "inv_sqrt_bias2")

    def __init__(self, step: Any, lr: Any, *, beta1: float, beta2: float, fused: bool):
        self._step, self._lr, self._betas = step, lr, {"beta1": beta1, "beta2": beta2}
        self._compute = (
            cuda_kernels.fused_adam_scalars if fused else cuda_kernels.adam_scalars_reference
        )
        self._by_dtype: dict[Any, dict[str, Any]] = {}

    def get(self, name: str, dtype: Any) -> Any:
        """The scalar `name` for leaves of `dtype` (computed once per dtype)."""
        if dtype not in self._by_dtype:
            values = self._compute(self._step, self._lr, dtype=dtype, **self._betas)
            self._by_dtype[dtype] = dict(zip(self._NAMES, values, strict=True))
        return self._by_dtype[dtype][name]


@attrs.frozen(kw_only=True)
class Optimizer:
    """Base of every optimizer: the shared options and the update skeleton.

    Subclasses set `name`, add their hyper-parameters as fields and implement
    `_slot_names()` (the state's trees of one value per parameter, e.g. Adam's moments
    "m" and "v") and `_apply(...)` (the step).
    """

    name: ClassVar[str] = "optimizer"
    lr: float = attrs.field(converter=float, validator=_check_positive)
    weight_decay: float = attrs.field(default=0.0, converter=float, validator=_check_positive)
    clip_norm: float | None = attrs.field(
        default=None, converter=attrs.converters.optional(float), validator=_check_clip
    )

    def init(self, params: Any) -> dict[str, Any]:
        """The optimizer state for `params`: {"lr": 0-d, "step": 0-d, plus slot trees}.

        Each slot (`_slot_names()`) is a tree of zeros shaped like `params`, leaf by leaf
        of the parameter's shape and dtype.
        """
        xp = get_array_module(_first_leaf(params))
        state = {
            "lr": xp.asarray(self.lr, dtype="float64"),
            "step": xp.asarray(0, dtype="int64"),
        }
        state.update({slot: _zeros_like(params) for slot in self._slot_names()})
        return state

    def update(
        self, params: Any, grads: Any, opt_state: dict[str, Any], *, check: bool = True
    ) -> tuple[Any, Any]:
        """One step: returns (new_params, new_opt_state); the inputs are left untouched.

        `grads` is shaped like `params`; a gradient of another shape, or a missing or extra
        one, is a ValueError naming the parameter's path ("1/W") and both shapes.
        `opt_state` must be what this optimizer's `init` made for such parameters (the
        same slots, each shaped like `params`): else a ValueError naming the slot and the
        parameter's path. `check=False` skips those comparisons (tens of microseconds of
        host time a step): for a loop that has made sure of them itself, as `fit` does
        (it checks the state once, and `convnet_core.grad` checks each layer's gradients).
        """
        return self._update(params, grads, opt_state, take=None, check=check)

    def update_if(
        self, take: Any, params: Any, grads: Any, opt_state: dict[str, Any], *, check: bool = True
    ) -> tuple[Any, Any]:
        """`update` if `take` is true, else (params, opt_state) as they are: the step that
        mixed precision skips when its gradients overflowed (a skipped step is not counted).

        `take` is a boolean: a host one (Python, or a NumPy 0-d array) is a plain branch; a
        0-d device array is decided on the device, so a GPU never waits for the host. There
        the update is computed and each leaf picked with `where`, except by Adam and AdamW,
        whose fused kernel keeps the old values itself. `check` as for `update`.
        """
        if isinstance(take, (bool, numpy.bool_)) or not is_cupy(get_array_module(take)):
            if not bool(take):
                return params, opt_state
            return self.update(params, grads, opt_state, check=check)
        return self._update(params, grads, opt_state, take=take, check=check)

    def _update(self, params: Any, grads: Any, opt_state: dict[str, Any], take: Any, check: bool):
        """update (take None) or update_if on the device (take a 0-d device boolean).

        `grads` must be shaped like `params` (the same tree, each leaf of its parameter's
        shape), and so must each slot of `opt_state` (in dtype too): else ValueError naming
        the path and what differs, before a gradient or a slot is broadcast into a
        parameter (which would change its shape, or fail with no name). Comparing shapes
        and dtypes is host work; no value is read. `check=False` skips those comparisons.
        """
        if check:
            mismatch = _tree.grad_mismatch(params, grads, dtypes=True)
            if mismatch is not None:
                raise ValueError(f"{self.name}.update: {mismatch}")
            self.check_state(params, opt_state, "update")
        if self.clip_norm is not None:
            grads = clip_by_global_norm(grads, self.clip_norm)
        step = opt_state["step"] + (1 if take is None else take)  # int64 + bool: int64
        new_params, new_state = self._apply(params, grads, opt_state, step, take)
        if take is None or self._keeps_skipped_steps(step):
            return new_params, new_state
        new_params = select_if_finite(take, new_params, params)
        for slot in self._slot_names():  # "lr" and "step" are right already
            new_state[slot] = select_if_finite(take, new_state[slot], opt_state[slot])
        return new_params, new_state

    def check_state(self, params: Any, opt_state: Any, where: str) -> None:
        """Raise ValueError, naming this optimizer and `where` ("update", "fit"), when
        `opt_state` is not a state of this optimizer for `params` (`state_mismatch`)."""
        mismatch = self.state_mismatch(params, opt_state)
        if mismatch is not None:
            raise ValueError(f"{self.name}.{where}: {mismatch}")

    def state_mismatch(self, params: Any, opt_state: Any) -> str | None:
        """How `opt_state` fails to be a state of this optimizer for `params`, in words
        (naming the slot, and the parameter's path for a slot unlike the parameters);
        None when it is one. Keys, shapes and dtypes are compared; no value is read."""
        if not isinstance(opt_state, dict):
            return f"the optimizer state is a {type(opt_state).__name__}, not the dict init makes"
        slots = self._slot_names()
        if opt_state.keys() != {"lr", "step", *slots}:
            keeps = ", ".join(("lr", "step", *slots))
            has = ", ".join(map(str, opt_state))
            missing = [key for key in ("lr", "step", *slots) if key not in opt_state]
            if missing:
                what = f"has no {'slot ' if missing[0] in slots else ''}{missing[0]!r}"
            else:
                extra = next(key for key in opt_state if key not in ("lr", "step", *slots))
                what = f"has a slot {extra!r}, which {self.name} does not keep"
            return (
                f"the optimizer state {what}: it holds {has}, where {self.name} keeps {keeps} "
                f"(is it another optimizer's? init(params) makes one for this optimizer)"
            )
        for slot in slots:
            mismatch = _tree.slot_mismatch(params, opt_state[slot], slot)
            if mismatch is not None:
                return f"the optimizer state does not fit the parameters: {mismatch}"
        return None

    def _slot_names(self) -> tuple[str, ...]:
        """The state's slots besides "lr" and "step": trees of one value per parameter."""
        return ()

    def _keeps_skipped_steps(self, step: Any) -> bool:
        """Whether `_apply` itself returns the old values where `take` is false."""
        return False

    def _apply(self, params, grads, opt_state, step, take):  # pragma: no cover - abstract
        """(new_params, new_opt_state) of one step; `take` as in `_update`."""
        raise NotImplementedError

    def _decayed(self, g: Any, p: Any) -> Any:
        """The gradient with the L2 penalty: g + weight_decay · p."""
        return g + self.weight_decay * p if self.weight_decay else g

    def step(self, params_and_grads: Any) -> None:
        """The in-place step of ConvNet-NumPy loops: `opt.step(model.get_params_and_grads())`.

        `params_and_grads` is what `Model.get_params_and_grads()` returns; the model applies
        this optimizer's pure `update` to itself. New code calls `update` directly.
        """
        apply = getattr(params_and_grads, "apply_optimizer", None)
        if apply is None:
            raise TypeError(
                "Optimizer.step takes model.get_params_and_grads(); the optimizers are pure, "
                "so in a custom loop use `params, opt_state = opt.update(params, grads, "
                "opt_state)`"
            )
        apply(self)


@attrs.frozen(kw_only=True)
class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, as torch.optim.SGD.

    buf <- μ·buf + g;  p <- p - lr·(g + μ·buf) with nesterov, else p <- p - lr·buf.
    Without momentum, p <- p - lr·g. State slot "momentum" (only when μ > 0).
    """

    name: ClassVar[str] = "sgd"
    lr: float = attrs.field(default=0.01, converter=float, validator=_check_positive)
    momentum: float = attrs.field(default=0.0, converter=float, validator=_check_positive)
    nesterov: bool = False

    def __attrs_post_init__(self):
        if self.nesterov and self.momentum == 0:
            raise ValueError("sgd: nesterov=True needs momentum > 0")

    def _slot_names(self):
        return ("momentum",) if self.momentum else ()

    def _apply(self, params, grads, opt_state, step, take):
        scalars = _Scalars(get_array_module(step), lr=opt_state["lr"])
        mu = self.momentum

        if not mu:

            def plain(p, g):
                update = self._decayed(g, p) * scalars.get("lr", p.dtype)
                return (p - update,)

            (new_params,) = _map_leaves(plain, 1, params, grads)
            return new_params, {**opt_state, "step": step}

        def with_momentum(p, g, buf):
            g = self._decayed(g, p)
            buf = buf * mu
            buf += g  # buf <- μ·buf + g
            if self.nesterov:
                direction = buf * mu
                direction += g  # g + μ·buf
            else:
                direction = buf * 1  # a copy: buf is returned as the new state
            direction *= scalars.get("lr", p.dtype)
            return p - direction, buf

        new_params, new_buf = _map_leaves(with_momentum, 2, params, grads, opt_state["momentum"])
        return new_params, {**opt_state, "step": step, "momentum": new_buf}


@attrs.frozen(kw_only=True)
class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction, as torch.optim.Adam.

    m <- β1·m + (1-β1)·g;  v <- β2·v + (1-β2)·g²
    p <- p - lr/(1-β1ᵗ) · m / (sqrt(v)/sqrt(1-β2ᵗ) + eps).   State slots "m", "v".
    """

    name: ClassVar[str] = "adam"
    lr: float = attrs.field(default=1e-3, converter=float, validator=_check_positive)
    beta1: float = attrs.field(default=0.9, converter=float, validator=_check_decay)
    beta2: float = attrs.field(default=0.999, converter=float, validator=_check_decay)
    eps: float = attrs.field(default=1e-8, converter=float, validator=_check_positive)

    def _slot_names(self):
        return ("m", "v")

    def _decoupled_decay(self, p, lr):
        return p

    def _fused_decay(self) -> dict:
        """The weight decay as `cuda_kernels.fused_adam_update` takes it (L2 for Adam)."""
        return {"weight_decay": self.weight_decay}

    def _keeps_skipped_steps(self, step):
        return is_cupy(get_array_module(step))  # the fused kernel keeps them

    def _apply(self, params, grads, opt_state, step, take):
        xp = get_array_module(step)
        lr = opt_state["lr"]
        b1, b2, eps = self.beta1, self.beta2, self.eps
        fused = is_cupy(xp)  # on a GPU one kernel does the arithmetic of adam_leaf
        scalars = _AdamScalars(step, lr, beta1=b1, beta2=b2, fused=fused)

        def adam_leaf(p, g, m, v):
            if fused:  # reference: cuda_kernels.adam_update_reference
                return cuda_kernels.fused_adam_update(
                    p, g, m, v,
                    lr=scalars.get("lr", p.dtype),
                    step_size=scalars.get("step_size", p.dtype),
                    inv_sqrt_bias2=scalars.get("inv_sqrt_bias2", p.dtype),
                    beta1=b1, beta2=b2, eps=eps, **self._fused_decay(),
                    take=True if take is None else take,
                )  # fmt: skip
            g = self._decayed(g, p)
            m = m * b1
            m += (1.0 - b1) * g  # m <- β1·m + (1-β1)·g
            v_new = g * g
            v_new *= 1.0 - b2
            v_new += b2 * v  # v <- β2·v + (1-β2)·g²
            step_ = xp.sqrt(v_new)
            step_ *= scalars.get("inv_sqrt_bias2", p.dtype)
            step_ += eps  # sqrt(v)/sqrt(1-β2ᵗ) + eps
            xp.divide(m, step_, out=step_)
            step_ *= scalars.get("step_size", p.dtype)  # lr/(1-β1ᵗ) · m / denominator
            p = self._decoupled_decay(p, scalars.get("lr", p.dtype))
            return p - step_, m, v_new

        new_params, m, v = _map_leaves(adam_leaf, 3, params, grads, opt_state["m"], opt_state["v"])
        return new_params, {**opt_state, "step": step, "m": m, "v": v}


@attrs.frozen(kw_only=True)
class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as torch.optim.AdamW.

    p <- p·(1 - lr·weight_decay) before the Adam step; the decay never enters m or v.
    """

    name: ClassVar[str] = "adamw"
    weight_decay: float = attrs.field(default=1e-2, converter=float, validator=_check_positive)

    def _decayed(self, g, p):
        return g  # the decay is decoupled: it is applied to the weights, not the gradient

    def _decoupled_decay(self, p, lr):
        return p * (1.0 - lr * p.dtype.type(self.weight_decay)) if self.weight_decay else p

    def _fused_decay(self) -> dict:
        return {"decoupled_weight_decay": self.weight_decay}


@attrs.frozen(kw_only=True)
class RMSprop(Optimizer):
    """RMSprop, as torch.optim.RMSprop with alpha = decay.

    v <- decay·v + (1-decay)·g²;  p <- p - lr · g / (sqrt(v) + eps).   State slot "v".
    """

    name: ClassVar[str] = "rmsprop"
    lr: float = attrs.field(default=1e-3, converter=float, validator=_check_positive)
    decay: float = attrs.field(default=0.9, converter=float, validator=_check_decay)
    eps: float = attrs.field(default=1e-8, converter=float, validator=_check_positive)

    def _slot_names(self):
        return ("v",)

    def _apply(self, params, grads, opt_state, step, take):
        xp = get_array_module(step)
        scalars = _Scalars(xp, lr=opt_state["lr"])
        rho, eps = self.decay, self.eps

        def rms_leaf(p, g, v):
            g = self._decayed(g, p)
            v_new = g * g
            v_new *= 1.0 - rho
            v_new += rho * v  # v <- ρ·v + (1-ρ)·g²
            step_ = xp.sqrt(v_new)
            step_ += eps
            xp.divide(g, step_, out=step_)
            step_ *= scalars.get("lr", p.dtype)
            return p - step_, v_new

        new_params, v = _map_leaves(rms_leaf, 2, params, grads, opt_state["v"])
        return new_params, {**opt_state, "step": step, "v": v}


OPTIMIZERS: dict[str, type[Optimizer]] = {cls.name: cls for cls in (SGD, Adam, AdamW, RMSprop)}


def sgd(lr=0.01, momentum=0.0, nesterov=False, *, weight_decay=0.0, clip_norm=None) -> SGD:
    """SGD with optional momentum/Nesterov (see `SGD`)."""
    return SGD(
        lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, clip_norm=clip_norm
    )


def adam(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, *, weight_decay=0.0, clip_norm=None) -> Adam:
    """Adam with L2 `weight_decay` added to the gradient (see `Adam`)."""
    return Adam(
        lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay, clip_norm=clip_norm
    )


def adamw(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-2, *, clip_norm=None) -> AdamW:
    """Adam with decoupled weight decay (see `AdamW`)."""
    return AdamW(
        lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay, clip_norm=clip_norm
    )


def rmsprop(lr=1e-3, decay=0.9, eps=1e-8, *, weight_decay=0.0, clip_norm=None) -> RMSprop:
    """RMSprop (see `RMSprop`)."""
    return RMSprop(lr=lr, decay=decay, eps=eps, weight_decay=weight_decay, clip_norm=clip_norm)


def get(name: str, **options: Any) -> Optimizer:
    """The optimizer called `name` ("sgd", "adam", "adamw", "rmsprop") built with `options`.

    Options it does not take raise ValueError naming them (e.g. momentum for adam).
    """
    key = name.lower()
    cls = OPTIMIZERS.get(key)
    if cls is None:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(sorted(OPTIMIZERS))}")
    accepted = {field.name for field in attrs.fields(cls)}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(
            f"optimizer {key!r} does not take {', '.join(unknown)}; it takes "
            f"{', '.join(sorted(accepted))}"
        )
    return cls(**options)


def to_config(opt: Optimizer) -> dict[str, Any]:
    """{"name": "adam", "config": {"lr": ..., ...}}: JSON-able, for saving."""
    return {"name": opt.name, "config": attrs.asdict(opt)}


def from_config(config: dict[str, Any]) -> Optimizer:
    """Rebuild an optimizer from `to_config` output (ValueError for unknown names/fields)."""
    if not isinstance(config, dict) or "name" not in config:
        raise ValueError(f"an optimizer config is a dict with 'name' and 'config', not {config!r}")
    return get(config["name"], **dict(config.get("config", {})))


def get_lr(opt_state: dict[str, Any]) -> float:
    """The current learning rate as a Python float (one device-to-host copy on a GPU)."""
    return float(opt_state["lr"])


def set_lr(opt_state: dict[str, Any], lr: Any) -> dict[str, Any]:
    """A new state whose learning rate is `lr`; the rest is shared.

    `lr` is a real number >= 0: a Python or NumPy number, or a 0-d array of a real dtype.
    Anything else (None, a string, a bool, an array of another shape) is a TypeError, and
    a negative, NaN or infinite value a ValueError. NumPy values are checked on the host;
    a 0-d CuPy array is taken as it is, unread, so that setting it never makes the host
    wait for the GPU.
    """
    xp = get_array_module(opt_state["lr"])
    return {**opt_state, "lr": xp.asarray(_checked_lr(lr), dtype="float64")}


def _checked_lr(lr: Any) -> Any:
    """`lr` if it is a learning rate `set_lr` takes (see there), else TypeError/ValueError."""
    shape, dtype = getattr(lr, "shape", None), getattr(lr, "dtype", None)
    if isinstance(lr, numbers.Real) and not isinstance(lr, bool):
        number = lr
    elif shape == () and dtype is not None and dtype.kind in "iuf":
        if is_cupy(get_array_module(lr)):
            return lr  # reading it back would make the host wait for the GPU
        number = lr.item()  # a NumPy 0-d array: host memory, read at no cost
    else:
        what = repr(lr) if shape is None else f"an array of shape {shape} and dtype {dtype}"
        raise TypeError(f"set_lr: the learning rate must be a real number >= 0, not {what}")
    real(number, "set_lr: the learning rate", low=0.0)
    return lr
