"""GPU fast paths, each written next to the NumPy reference it must match.

On a GPU, CuPy runs every array expression as its own kernel: `dy * (y > 0)` is two
launches and a temporary boolean array, and an Adam step over one parameter is about a
dozen. For element-wise work the cost is memory traffic, so fusing a chain of operations
into one kernel that reads each input once and writes each output once is what pays.

Eight fast paths live here:

- `fused_adam_update`: the whole Adam step for one parameter array (weight decay, both
  moments, bias correction, the update) in one `cupy.ElementwiseKernel`, and
  `fused_adam_scalars`: the step's learning rate and bias corrections in another, once
  per step. References: `adam_update_reference` and `adam_scalars_reference`, the
  arithmetic of `convnet_core.optim.Adam`.
- `unscale_and_check`: mixed precision's gradient divided by the loss scale, in float32,
  and the check for inf and NaN, one `cupy.ElementwiseKernel` per gradient array, and
  `loss_scale_update`: the loss scaler's next state in one more. References:
  `unscale_reference` and `precision.all_finite`; the scaler's own array code.
- `fused_relu_forward` / `fused_relu_backward`: ReLU and its gradient as one kernel each.
  References: `relu_forward_reference`, `relu_backward_reference` (the arithmetic of
  `Activation("relu")`).
- `col2im_gather`: the adjoint of im2col as one `cupy.RawKernel` with one thread per input
  pixel that gathers the window entries which read that pixel (no atomics, so the sums
  are deterministic). Reference: `col2im_loop`, the strided-add loop over kernel offsets
  that `convnet_core.ops.col2im` runs (on NumPy and, by default, on CuPy).
- `im2col_gather`: the padding and the unfolding of a convolution's input in one
  `cupy.RawKernel`, one thread per column entry reading its pixel or a zero, where the
  array code zero-fills a padded copy, copies the input into it and copies the strided
  windows out. Reference: `ops.im2col(ops.pad_spatial(x, pads), ...)`.
- `maxpool_forward` / `maxpool_backward`: MaxPool2D as one kernel each way, one thread
  per output (the max and the position of the first max in its window) and one per input
  pixel (the gradients of the windows it won). The unfused layer makes about eight
  launches and a dozen strided views per pooling layer and step. Reference: the layer's
  array code for windows of any size and stride, `MaxPool2D.apply` and `.grad` on NumPy.
- `batchnorm_forward` / `batchnorm_input_grad`: BatchNorm2D's element-wise work when
  training, one `cupy.ElementwiseKernel` each way (x̂ and y together; dx from dy, x̂ and
  the per-channel sums), where the array code makes three and seven launches; and
  `batchnorm_statistics`: its per-channel arithmetic (1/√(σ² + eps) and both running
  statistics) in one more, where the array code makes ten. The per-channel means and
  sums stay CuPy's reductions. Reference: the layer's array code.
- `fused_softmax_cross_entropy`: the loss and its gradient for integer labels, one
  `cupy.RawKernel` with one thread per row (max, log-sum-exp, the row's loss and its
  gradient row), where the unfused code makes about sixteen launches and a one-hot matrix.
  Reference: `convnet_core.losses.softmax_cross_entropy_unfused`.

One more kernel is a diagnostic, never used in training: `hold_the_gpu(seconds)` keeps the
stream busy while the host goes on, which shows whether the host waits for the GPU (the
tests) and how long it takes to queue a training step (the benchmark).

Importing this module never imports CuPy: each kernel is compiled on first use and kept in
a module-level cache, so it is built once per process (and per dtype for the RawKernels).
The `*_ON_GPU` switches (environment variables CONVNET_IM2COL, CONVNET_COL2IM,
CONVNET_MAXPOOL, CONVNET_BATCHNORM, CONVNET_SOFTMAX_XENT, read on import) send a fast path
back to its array code: each takes "kernels" or "arrays" (`gpu_switch`), and an unknown
word is a ValueError.
`benchmarks/bench_gpu.py --kernels` times every fast path against its reference on a GPU.
"""

from __future__ import annotations

import os
from typing import Any

import numpy

__all__ = [
    "BATCHNORM_ON_GPU",
    "COL2IM_ON_GPU",
    "IM2COL_ON_GPU",
    "MAXPOOL_ON_GPU",
    "MAX_BLOCKS",
    "SOFTMAX_XENT_ON_GPU",
    "adam_scalars_reference",
    "batchnorm_forward",
    "batchnorm_input_grad",
    "batchnorm_kernels_take",
    "batchnorm_statistics",
    "adam_update_reference",
    "col2im_gather",
    "col2im_on_gpu",
    "col2im_source",
    "col2im_loop",
    "fused_adam_scalars",
    "fused_adam_update",
    "fused_relu_backward",
    "fused_relu_forward",
    "fused_softmax_cross_entropy",
    "gpu_switch",
    "hold_the_gpu",
    "im2col_gather",
    "im2col_kernel_takes",
    "im2col_source",
    "loss_scale_update",
    "maxpool_backward",
    "maxpool_forward",
    "maxpool_kernels_take",
    "maxpool_source",
    "relu_backward_reference",
    "relu_forward_reference",
    "softmax_cross_entropy_source",
    "unscale_and_check",
    "unscale_reference",
]

# name -> compiled kernel, filled on first use (compiling takes a moment; do it once)
_KERNELS: dict[str, Any] = {}


def _cached(name: str, build: Any) -> Any:
    """The kernel called `name`, built by `build()` the first time it is asked for."""
    kernel = _KERNELS.get(name)
    if kernel is None:
        kernel = _KERNELS[name] = build()
    return kernel


def _cupy() -> Any:
    import cupy  # deferred: convnet_core must import without CuPy

    return cupy


# Blocks per launch at most for the RawKernels: their grid-stride loops cover the rest.
MAX_BLOCKS = 65535


def _grid(total: int, threads: int) -> tuple[int]:
    """The grid for `total` items at `threads` per block (at least 1, at most MAX_BLOCKS)."""
    return (max(1, min((total + threads - 1) // threads, MAX_BLOCKS)),)


def _element_strides(a: Any) -> tuple:
    """a's strides in elements, as the int64 kernel arguments."""
    return tuple(numpy.int64(s // a.itemsize) for s in a.strides)  # host


def gpu_switch(variable: str, fast: str, slow: str) -> str:
    """The setting of the environment variable `variable`, a switch between a GPU fast path
    and its array code: `fast` or `slow`, the values the code compares the switch with.

    Every switch takes "kernels" (or "kernel") and `fast` for the fast path, the default
    when unset or empty, and "arrays" and `slow` for the array code, in any case. Anything
    else is a ValueError that lists the words: a misspelt setting must not quietly turn a
    fast path off.
    """
    fast_words = tuple(dict.fromkeys(("kernels", "kernel", fast)))
    slow_words = tuple(dict.fromkeys(("arrays", slow)))
    value = os.environ.get(variable, "").strip().lower()
    if value in ("", *fast_words):
        return fast
    if value in slow_words:
        return slow
    raise ValueError(
        f"{variable}={os.environ[variable]!r}: use {' or '.join(map(repr, fast_words))} for "
        f"the GPU kernels (the default), or {' or '.join(map(repr, slow_words))} for the "
        "array code"
    )


# ---------------------------------------------------------------------------------------
# Adam


def adam_update_reference(
    param: Any,
    grad: Any,
    m: Any,
    v: Any,
    *,
    lr: Any,
    step_size: Any,
    inv_sqrt_bias2: Any,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float = 0.0,
    decoupled_weight_decay: float = 0.0,
    xp: Any = numpy,
) -> tuple[Any, Any, Any]:
    """One Adam step for one parameter array, as `convnet_core.optim.Adam` computes it.

    With g = grad + weight_decay · param (Adam's L2 term, skipped when it is 0):

        m' = β1·m + (1-β1)·g
        v' = β2·v + (1-β2)·g²
        param' = param·(1 - lr·λ) - step_size · m' / (sqrt(v')·inv_sqrt_bias2 + eps)

    where step_size = lr / (1 - β1ᵗ) and inv_sqrt_bias2 = 1 / sqrt(1 - β2ᵗ) (0-d arrays
    of the parameter's dtype, or floats), and λ = decoupled_weight_decay is AdamW's decay
    (the factor is skipped when λ is 0). All arrays share one shape; returns
    (param', m', v').
    """
    g = grad + weight_decay * param if weight_decay else grad
    m = beta1 * m + (1.0 - beta1) * g
    v = beta2 * v + (1.0 - beta2) * (g * g)
    denom = xp.sqrt(v) * inv_sqrt_bias2 + eps
    if decoupled_weight_decay:
        param = param * (1.0 - lr * param.dtype.type(decoupled_weight_decay))
    return param - step_size * (m / denom), m, v


# The same arithmetic per element. Hyper-parameters arrive as float64 kernel arguments and
# are rounded to T as NumPy rounds a Python float that meets a T array. Where `take` is
# false (mixed precision's skipped step) the outputs are the inputs.
_ADAM_SOURCE = """
    T g = grad + (T)weight_decay * param;
    T m_new = (T)beta1 * m + (T)one_minus_beta1 * g;
    T v_new = (T)beta2 * v + (T)one_minus_beta2 * (g * g);
    T denom = sqrt(v_new) * inv_sqrt_bias2 + (T)eps;
    T param_new = param * ((T)1 - lr * (T)decoupled_weight_decay)
                  - step_size * (m_new / denom);
    param_out = take ? param_new : param;
    m_out = take ? m_new : m;
    v_out = take ? v_new : v;
"""


def _adam_kernel() -> Any:
    cupy = _cupy()
    return cupy.ElementwiseKernel(
        "T param, T grad, T m, T v, T lr, T step_size, T inv_sqrt_bias2, "
        "float64 beta1, float64 one_minus_beta1, float64 beta2, float64 one_minus_beta2, "
        "float64 eps, float64 weight_decay, float64 decoupled_weight_decay, bool take",
        "T param_out, T m_out, T v_out",
        _ADAM_SOURCE,
        "convnet_fused_adam",
    )


def fused_adam_update(
    param: Any,
    grad: Any,
    m: Any,
    v: Any,
    *,
    lr: Any,
    step_size: Any,
    inv_sqrt_bias2: Any,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float = 0.0,
    decoupled_weight_decay: float = 0.0,
    take: Any = True,
) -> tuple[Any, Any, Any]:
    """`adam_update_reference` on CuPy arrays (float32 or float64) in one kernel: 4 arrays
    read and 3 written per element, where the unfused update makes about a dozen passes.

    `lr`, `step_size` and `inv_sqrt_bias2` are 0-d device arrays of the parameter's dtype
    (as optim.Adam keeps them), so nothing is copied between host and device. `take`, True
    or a 0-d boolean device array, says whether the step is taken: where it is false the
    results equal (param, m, v), as `Optimizer.update_if` needs. Returns new arrays
    (param', m', v'); the inputs are left untouched.
    """
    kernel = _cached("adam", _adam_kernel)
    return kernel(
        param,
        grad,
        m,
        v,
        lr,
        step_size,
        inv_sqrt_bias2,
        beta1,
        1.0 - beta1,
        beta2,
        1.0 - beta2,
        eps,
        weight_decay,
        decoupled_weight_decay,
        take,
    )


# Adam's step scalars, from the step count t (0-d int64) and the learning rate (0-d
# float64), computed in float64 and cast to the parameters' dtype T:
#     lr, step_size = lr / (1 - β1ᵗ), inv_sqrt_bias2 = 1 / sqrt(1 - β2ᵗ)
_ADAM_SCALARS_SOURCE = """
    double t = (double)step;
    lr_out = (T)lr;
    step_size = (T)(lr / (1.0 - pow(beta1, t)));
    inv_sqrt_bias2 = (T)(1.0 / sqrt(1.0 - pow(beta2, t)));
"""


def _adam_scalars_kernel() -> Any:
    return _cupy().ElementwiseKernel(
        "int64 step, float64 lr, float64 beta1, float64 beta2",
        "T lr_out, T step_size, T inv_sqrt_bias2",
        _ADAM_SCALARS_SOURCE,
        "convnet_adam_scalars",
    )


def adam_scalars_reference(
    step: Any, lr: Any, *, beta1: float, beta2: float, dtype: Any, xp: Any = numpy
) -> tuple[Any, Any, Any]:
    """(lr, step_size, inv_sqrt_bias2) of Adam's step number `step` (int64, 0-d or a NumPy
    scalar) at learning rate `lr` (0-d float64), cast to `dtype`: the arithmetic of
    optim.Adam."""
    t = step.astype("float64")
    bias1 = 1.0 - beta1**t
    bias2 = 1.0 - beta2**t
    return lr.astype(dtype), (lr / bias1).astype(dtype), (1.0 / xp.sqrt(bias2)).astype(dtype)


def fused_adam_scalars(
    step: Any, lr: Any, *, beta1: float, beta2: float, dtype: Any
) -> tuple[Any, Any, Any]:
    """`adam_scalars_reference` on CuPy in one kernel, where the array code makes about ten
    launches on 0-d arrays: the three scalars `fused_adam_update` takes."""
    cupy = _cupy()
    out = tuple(cupy.empty((), dtype=dtype) for _ in range(3))  # lr, step_size, inv_sqrt
    kernel = _cached("adam_scalars", _adam_scalars_kernel)
    kernel(step.astype("int64", copy=False), lr.astype("float64", copy=False), beta1, beta2, *out)
    return out


# ---------------------------------------------------------------------------------------
# loss scaling
#
# Mixed precision's gradients come back multiplied by the loss scale S. For each leaf g
# (float16, or float32) precision.DynamicLossScaler.unscale_and_check computes
#
#     unscaled = float32(g) · (1/S)
#     finite   = no element of any unscaled leaf is inf or NaN
#
# where the array code makes a cast, a multiply, an isfinite, an all and an and per leaf.


def unscale_reference(scaled: Any, inverse_scale: Any) -> Any:
    """float32(scaled) · inverse_scale, element-wise: `scaled` any shape and float dtype,
    inverse_scale a float32 0-d array or scalar."""
    return scaled.astype("float32", copy=False) * inverse_scale


def _unscale_kernel() -> Any:
    return _cupy().ElementwiseKernel(
        "T scaled, float32 inverse_scale",
        "float32 unscaled, raw int32 nonfinite",
        # every thread that meets an inf or NaN writes the same 1, so no atomics are needed
        "unscaled = (float)scaled * inverse_scale; if (!isfinite(unscaled)) nonfinite[0] = 1;",
        "convnet_unscale_and_check",
    )


def unscale_and_check(scaled: Any, inverse_scale: Any, nonfinite: Any) -> Any:
    """`unscale_reference` on a CuPy array in one kernel, which also sets nonfinite[0] to 1
    where the result holds an inf or NaN (and leaves it alone otherwise).

    scaled: any shape, float16/32/64; inverse_scale: a float32 0-d device array; nonfinite:
    a (1,) int32 device array, zero before the first leaf, shared by all of a step's
    leaves. Returns the float32 result, shaped like `scaled`.
    """
    unscaled = _cupy().empty(scaled.shape, dtype="float32")
    kernel = _cached("unscale_and_check", _unscale_kernel)
    kernel(scaled, inverse_scale, unscaled, nonfinite)
    return unscaled


# After the step, the scaler's next state (DynamicLossScaler's rules), from `finite`, the
# loss scale S and the count of good steps:
#
#     finite   good <- good + 1, and when it reaches growth_interval
#              S <- min(S · growth_factor, max_scale) and good <- 0
#     inf/NaN  S <- max(S · backoff_factor, min_scale) and good <- 0
#
# where the array code makes about a dozen launches on 0-d arrays.

_LOSS_SCALE_UPDATE_SOURCE = """
    long long good = finite ? good_steps + 1 : 0;
    bool grow = good >= growth_interval;
    double grown = scale * growth_factor < max_scale ? scale * growth_factor : max_scale;
    double shrunk = scale * backoff_factor > min_scale ? scale * backoff_factor : min_scale;
    new_scale = finite ? (grow ? grown : scale) : shrunk;
    new_good_steps = grow ? 0 : good;
"""


def _loss_scale_update_kernel() -> Any:
    return _cupy().ElementwiseKernel(
        "bool finite, float64 scale, int64 good_steps, float64 growth_factor, "
        "float64 backoff_factor, int64 growth_interval, float64 min_scale, float64 max_scale",
        "float64 new_scale, int64 new_good_steps",
        _LOSS_SCALE_UPDATE_SOURCE,
        "convnet_loss_scale_update",
    )


def loss_scale_update(
    finite: Any, scale: Any, good_steps: Any, *, growth_factor: float, backoff_factor: float,
    growth_interval: int, min_scale: float, max_scale: float,
) -> tuple[Any, Any]:  # fmt: skip
    """(scale, good_steps) after a step, as 0-d float64 and int64 device arrays, in one
    kernel: `finite` is a 0-d boolean device array, `scale` and `good_steps` 0-d device
    arrays or (before the first step) Python numbers. Reference: the array code of
    `precision.DynamicLossScaler._update_device`."""
    kernel = _cached("loss_scale_update", _loss_scale_update_kernel)
    rules = (growth_factor, backoff_factor, growth_interval, min_scale, max_scale)
    return kernel(finite, scale, good_steps, *rules)


# ---------------------------------------------------------------------------------------
# ReLU


def relu_forward_reference(x: Any, *, xp: Any = numpy) -> Any:
    """ReLU: y = max(x, 0), element-wise (NaN stays NaN)."""
    return xp.maximum(x, 0)


def relu_backward_reference(y: Any, dy: Any, *, xp: Any = numpy) -> Any:
    """ReLU's gradient from its output: dx = dy · [y > 0] (so inf·0 gives NaN, as in NumPy)."""
    return dy * (y > 0)


def _relu_forward_kernel() -> Any:
    cupy = _cupy()
    # `x != x` is true only for NaN, which maximum propagates
    return cupy.ElementwiseKernel(
        "T x", "T y", "y = (x > (T)0 || x != x) ? x : (T)0", "convnet_relu_forward"
    )


def _relu_backward_kernel() -> Any:
    cupy = _cupy()
    # a multiply, not a select, so an inf or NaN in dy behaves exactly as in the reference
    return cupy.ElementwiseKernel(
        "T y, T dy", "T dx", "dx = dy * (T)(y > (T)0)", "convnet_relu_backward"
    )


def fused_relu_forward(x: Any) -> Any:
    """`relu_forward_reference` on a CuPy array, one kernel (same shape and dtype).

    The output has the memory layout of `x` (as NumPy's ufuncs keep it), so the
    channel-major activations of Conv2D stay channel-major (see convnet_core.ops)."""
    y = _cupy().empty_like(x)
    return _cached("relu_forward", _relu_forward_kernel)(x, y)


def fused_relu_backward(y: Any, dy: Any) -> Any:
    """`relu_backward_reference` on CuPy arrays: one kernel instead of a compare, a cast
    and a multiply with a boolean temporary. The result has the memory layout of `dy`."""
    dx = _cupy().empty_like(dy)
    return _cached("relu_backward", _relu_backward_kernel)(y, dy, dx)


# ---------------------------------------------------------------------------------------
# col2im
#
# Both versions take the column gradient as a 6-D array `blocks` indexed
# [c, i, j, n, oy, ox] (C, kh, kw, N, Ho, Wo), which is `dcols.reshape(C, kh, kw, N, Ho,
# Wo)` for the (C*kh*kw, N*Ho*Wo) columns of `convnet_core.ops.im2col` (a view, no copy),
# and return dx_padded (N, C, Hp, Wp) with
#
#     dx_padded[n, c, y, x] = Σ over (i, j, oy, ox) with y = oy*sh + i, x = ox*sw + j
#                             of blocks[c, i, j, n, oy, ox].


def col2im_loop(
    blocks: Any, padded_shape: tuple[int, int, int, int], stride: tuple[int, int], *, xp: Any
) -> Any:
    """col2im as kh*kw strided adds, one per kernel offset (i, j), of a (C, N, Ho, Wo) block.

    blocks (C, kh, kw, N, Ho, Wo) -> dx_padded (N, C, Hp, Wp), channel-major in memory.
    This is the loop `convnet_core.ops.col2im` runs.
    """
    n, c, hp, wp = padded_shape
    _, kh, kw, _, ho, wo = blocks.shape
    sh, sw = stride
    dx = xp.zeros((c, n, hp, wp), dtype=blocks.dtype)  # (C, N, Hp, Wp)
    for i in range(kh):
        for j in range(kw):
            rows = slice(i, i + sh * (ho - 1) + 1, sh)
            cols = slice(j, j + sw * (wo - 1) + 1, sw)
            dx[:, :, rows, cols] += blocks[:, i, j]
    return dx.transpose(1, 0, 2, 3)  # (N, C, Hp, Wp) view


# Where element idx of a channel-major (C, N, H, W) array is: the kernels that write such
# arrays (col2im, max pooling) give each element one thread and start from this.
_CHANNEL_MAJOR_SOURCE = r"""
struct convnet_position { long long c; int n, y, x; };

__device__ convnet_position convnet_channel_major(long long idx, int N, int H, int W)
{
    convnet_position at;
    at.x = (int)(idx % W);
    long long rest = idx / W;
    at.y = (int)(rest % H);
    rest /= H;
    at.n = (int)(rest % N);
    at.c = rest / N;
    return at;
}
"""


# The windows that read a pixel: shared by the gather kernels (col2im, max-pool backward),
# which give each input pixel one thread that collects from every window holding it.
_WINDOWS_HOLDING_SOURCE = r"""
// visit(i, j, oy, ox) for every window (oy, ox) of a kh x kw kernel moving by (sh, sw)
// over Ho x Wo positions that holds pixel (py, px), at offset (i, j) within it:
// py = oy*sh + i and px = ox*sw + j. The offsets come in row-major order.
template <typename Visit>
__device__ void convnet_windows_holding(int py, int px, int kh, int kw, int sh, int sw,
                                        int Ho, int Wo, Visit visit)
{
    for (int i = 0; i < kh; ++i) {
        int from_top = py - i;
        if (from_top < 0) break;
        if (from_top % sh != 0) continue;
        int oy = from_top / sh;
        if (oy >= Ho) continue;
        for (int j = 0; j < kw; ++j) {
            int from_left = px - j;
            if (from_left < 0) break;
            if (from_left % sw != 0) continue;
            int ox = from_left / sw;
            if (ox >= Wo) continue;
            visit(i, j, oy, ox);
        }
    }
}
"""


_COL2IM_SOURCE = r"""
extern "C" __global__ void convnet_col2im_gather_${NAME}(
    const ${T}* blocks, ${T}* dx, long long total,
    int N, int Hp, int Wp, int kh, int kw, int Ho, int Wo, int sh, int sw,
    long long s_c, long long s_i, long long s_j, long long s_n, long long s_oy,
    long long s_ox)
{
    // One thread per element of dx, stored channel-major (C, N, Hp, Wp) like the loop's.
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)blockDim.x * gridDim.x) {
        convnet_position at = convnet_channel_major(idx, N, Hp, Wp);
        const ${T}* base = blocks + at.c * s_c + at.n * s_n;
        ${ACC} sum = 0;
        auto add = [&](int i, int j, int oy, int ox) {
            sum += (${ACC})base[i * s_i + j * s_j + oy * s_oy + ox * s_ox];
        };
        convnet_windows_holding(at.y, at.x, kh, kw, sh, sw, Ho, Wo, add);
        dx[idx] = (${T})sum;
    }
}
"""

# dtype name -> (C type, accumulator type)
_COL2IM_TYPES = {
    "float32": ("float", "float"),
    "float64": ("double", "double"),
}

# float16 has no kernel of its own (a half type needs cuda_fp16.h, which CuPy does not put
# on NVRTC's include path for a RawKernel): col2im and max pooling run the float32 kernel
# on a widened copy, one cast in and one out, where the array code makes a launch or more
# per window offset. Max pooling stays exact; col2im's sums round to float16 once, at the
# end, where the loop rounds after each add.
_WIDENED = {"float16": "float32"}


def _col2im_kernel(dtype_name: str) -> Any:
    cupy = _cupy()
    return cupy.RawKernel(col2im_source(dtype_name), f"convnet_col2im_gather_{dtype_name}")


def col2im_source(dtype_name: str) -> str:
    """The CUDA C source of the gather kernel for `dtype_name` ("float32" or "float64")."""
    c_type, acc_type = _COL2IM_TYPES[dtype_name]
    return (
        _CHANNEL_MAJOR_SOURCE
        + _WINDOWS_HOLDING_SOURCE
        + (
            _COL2IM_SOURCE.replace("${NAME}", dtype_name)
            .replace("${T}", c_type)
            .replace("${ACC}", acc_type)
        )
    )


def col2im_gather(blocks: Any, padded_shape: tuple[int, int, int, int], stride: Any) -> Any:
    """`col2im_loop` on CuPy as one kernel: each thread sums what lands on one pixel.

    blocks (C, kh, kw, N, Ho, Wo), any strides (a view is fine) -> dx_padded (N, C, Hp, Wp)
    channel-major in memory, like `col2im_loop`. Each pixel's terms are added in the same
    (i, j) order as the loop, so float32 results agree with it to the last bit except
    where the compiler fuses a multiply-add (there is none here). float16 is summed in
    float32 (`_WIDENED`).
    """
    cupy = _cupy()
    name = blocks.dtype.name
    if name in _WIDENED:
        wide = col2im_gather(blocks.astype(_WIDENED[name]), padded_shape, stride)
        return wide.astype(name)  # keeps the channel-major layout
    if name not in _COL2IM_TYPES:
        raise ValueError(f"col2im_gather: dtype {name} is not one of {sorted(_COL2IM_TYPES)}")
    n, c, hp, wp = (int(d) for d in padded_shape)
    _, kh, kw, _, ho, wo = (int(d) for d in blocks.shape)
    sh, sw = (int(s) for s in stride)
    kernel = _cached(f"col2im_{name}", lambda: _col2im_kernel(name))
    dx = cupy.empty((c, n, hp, wp), dtype=blocks.dtype)  # (C, N, Hp, Wp)
    total = dx.size
    args = (blocks, dx, numpy.int64(total), *(numpy.int32(v) for v in (n, hp, wp, kh, kw)))  # host
    args += tuple(numpy.int32(v) for v in (ho, wo, sh, sw))  # host
    args += _element_strides(blocks)  # (c, i, j, n, oy, ox)
    kernel(_grid(total, 256), (256,), args)
    return dx.transpose(1, 0, 2, 3)  # (N, C, Hp, Wp) view


#: How `col2im_on_gpu` works on CuPy: "gather" (the kernel above) or "loop" (the strided
#: adds). Set with the environment variable CONVNET_COL2IM (`gpu_switch`);
#: benchmarks/bench_gpu.py times both.
COL2IM_ON_GPU = gpu_switch("CONVNET_COL2IM", "gather", "loop")


def col2im_on_gpu(
    dcols: Any, padded_shape: tuple[int, int, int, int], kernel: Any, stride: Any
) -> Any:
    """`convnet_core.ops.col2im` for CuPy arrays: dcols (C*kh*kw, N*Ho*Wo) -> dx_padded
    (N, C, Hp, Wp), by `col2im_gather` (float16/32/64, unless COL2IM_ON_GPU is "loop")
    or else by `col2im_loop`."""
    n, c, hp, wp = padded_shape
    kh, kw = kernel
    sh, sw = stride
    ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    blocks = dcols.reshape(c, kh, kw, n, ho, wo)  # a view
    if COL2IM_ON_GPU == "gather" and blocks.dtype.name in (*_COL2IM_TYPES, *_WIDENED):
        return col2im_gather(blocks, padded_shape, stride)
    return col2im_loop(blocks, padded_shape, stride, xp=_cupy())


# ---------------------------------------------------------------------------------------
# im2col
#
# For x (N, C, H, W), pads (top, bottom, left, right), a kh x kw kernel and stride (sh, sw),
# the columns of the convolution:
#
#     cols[(c, i, j), (n, oy, ox)] = x[n, c, oy*sh + i - top, ox*sw + j - left], or 0
#                                    where that pixel is in the padding

_IM2COL_SOURCE = r"""
extern "C" __global__ void convnet_im2col_gather_${NAME}(
    const ${T}* x, ${T}* cols, long long total, int N, int H, int W, int Ho, int Wo,
    int kh, int kw, int sh, int sw, int top, int left,
    long long s_n, long long s_c, long long s_h, long long s_w)
{
    // One thread per entry of the C-contiguous cols (C*kh*kw, N*Ho*Wo). The values are
    // copied as bits, so one kernel serves every float type of the same size.
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)blockDim.x * gridDim.x) {
        int ox = (int)(idx % Wo);
        long long rest = idx / Wo;
        int oy = (int)(rest % Ho);
        rest /= Ho;
        int n = (int)(rest % N);
        rest /= N;
        int j = (int)(rest % kw);
        rest /= kw;
        int i = (int)(rest % kh);
        long long c = rest / kh;
        int py = oy * sh + i - top, px = ox * sw + j - left;
        bool inside = 0 <= py && py < H && 0 <= px && px < W;
        cols[idx] = inside ? x[n * s_n + c * s_c + py * s_h + px * s_w] : (${T})0;
    }
}
"""

# dtype name -> the unsigned integer type of its size (the kernel copies bits; all-zero
# bits are +0.0 in each)
_IM2COL_TYPES = {
    "float16": "unsigned short",
    "float32": "unsigned int",
    "float64": "unsigned long long",
}

#: How Conv2D pads and unfolds its input on CuPy: "gather" (the kernel below) or "copies"
#: (`ops.pad_spatial` and `ops.im2col`). Set with the environment variable CONVNET_IM2COL
#: (`gpu_switch`); benchmarks/bench_gpu.py times both.
IM2COL_ON_GPU = gpu_switch("CONVNET_IM2COL", "gather", "copies")


def im2col_source(dtype_name: str) -> str:
    """The CUDA C source of the im2col kernel for `dtype_name` (float16/32/64)."""
    return _IM2COL_SOURCE.replace("${NAME}", dtype_name).replace("${T}", _IM2COL_TYPES[dtype_name])


def im2col_gather(
    x: Any, kernel: tuple[int, int], stride: tuple[int, int], pads: tuple[int, int, int, int]
) -> Any:
    """`ops.im2col(ops.pad_spatial(x, pads), kernel, stride)` on CuPy in one kernel.

    x (N, C, H, W), any strides -> cols (C*kh*kw, N*Ho*Wo), C-contiguous, the padding read
    as zeros instead of being written. Equal to the array code bit for bit (a copy).
    """
    cupy = _cupy()
    name = x.dtype.name
    if name not in _IM2COL_TYPES:
        raise ValueError(f"im2col_gather: dtype {name} is not one of {sorted(_IM2COL_TYPES)}")
    n, c, h, w = (int(d) for d in x.shape)
    kh, kw = (int(k) for k in kernel)
    sh, sw = (int(s) for s in stride)
    top, bottom, left, right = (int(p) for p in pads)
    ho, wo = (h + top + bottom - kh) // sh + 1, (w + left + right - kw) // sw + 1

    def build():
        return cupy.RawKernel(im2col_source(name), f"convnet_im2col_gather_{name}")

    kernel_ = _cached(f"im2col_{name}", build)
    cols = cupy.empty((c * kh * kw, n * ho * wo), dtype=x.dtype)  # (C*kh*kw, N*Ho*Wo)
    sizes = (n, h, w, ho, wo, kh, kw, sh, sw, top, left)
    args = (x, cols, numpy.int64(cols.size), *(numpy.int32(v) for v in sizes))  # host
    kernel_(_grid(cols.size, 256), (256,), args + _element_strides(x))
    return cols


def im2col_kernel_takes(x: Any) -> bool:
    """Whether Conv2D unfolds `x` (a CuPy array) with `im2col_gather`: float16/32/64,
    unless IM2COL_ON_GPU says "copies"."""
    return IM2COL_ON_GPU == "gather" and x.dtype.name in _IM2COL_TYPES


# ---------------------------------------------------------------------------------------
# max pooling
#
# For x (N, C, H, W), windows kh x kw moving by (sh, sw), and Ho, Wo the output size:
#
#     y[n, c, oy, ox]         = max over (i, j) of x[n, c, oy*sh + i, ox*sw + j]
#     first_max[n, c, oy, ox] = the k = i*kw + j (row-major) where that max is: the first
#                               of a tie, the last NaN
#     dx[n, c, y, x]          = Σ over the windows (oy, ox) holding the pixel, at offset
#                               (i, j) = (y - oy*sh, x - ox*sw), of [first_max = i*kw + j] · dy
#
# which is what MaxPool2D's array code computes with its kh*kw strided views: the max is
# PyTorch's (`val > max || isnan(val)` in row-major order), so ties go to the earlier
# offset and a window holding NaN has max NaN at its last NaN.

_MAXPOOL_FORWARD_SOURCE = r"""
extern "C" __global__ void convnet_maxpool_forward_${NAME}(
    const ${T}* x, ${T}* y, ${I}* first_max, long long total, int N, int Ho, int Wo,
    int kh, int kw, int sh, int sw, long long s_n, long long s_c, long long s_h,
    long long s_w)
{
    // One thread per output element; y and first_max are channel-major (C, N, Ho, Wo).
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)blockDim.x * gridDim.x) {
        convnet_position at = convnet_channel_major(idx, N, Ho, Wo);  // (c, n, oy, ox)
        const ${T}* window = x + at.n * s_n + at.c * s_c + (long long)at.y * sh * s_h
                             + (long long)at.x * sw * s_w;
        ${T} top = window[0];
        int first = 0;
        for (int i = 0; i < kh; ++i) {
            for (int j = 0; j < kw; ++j) {
                ${T} v = window[i * s_h + j * s_w];
                // PyTorch's rule: strictly larger (a tie keeps the earlier), or NaN (the
                // max is NaN, as NumPy's maximum gives it, at the last NaN)
                if (v > top || v != v) {
                    top = v;
                    first = i * kw + j;
                }
            }
        }
        y[idx] = top;
        first_max[idx] = (${I})first;
    }
}
"""

_MAXPOOL_BACKWARD_SOURCE = r"""
extern "C" __global__ void convnet_maxpool_backward_${NAME}(
    const ${T}* dy, const ${I}* first_max, ${T}* dx, long long total, int N, int H, int W,
    int Ho, int Wo, int kh, int kw, int sh, int sw,
    long long d_n, long long d_c, long long d_h, long long d_w,
    long long f_n, long long f_c, long long f_h, long long f_w)
{
    // One thread per input pixel; dx is channel-major (C, N, H, W).
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)blockDim.x * gridDim.x) {
        convnet_position at = convnet_channel_major(idx, N, H, W);
        const ${I}* first = first_max + at.n * f_n + at.c * f_c;
        const ${T}* grad = dy + at.n * d_n + at.c * d_c;
        ${T} sum = 0;
        auto add = [&](int i, int j, int oy, int ox) {
            int winner = (int)first[oy * f_h + ox * f_w];
            sum += (${T})(winner == i * kw + j) * grad[oy * d_h + ox * d_w];
        };
        convnet_windows_holding(at.y, at.x, kh, kw, sh, sw, Ho, Wo, add);
        dx[idx] = sum;
    }
}
"""

# dtype name -> C type; float16 runs the float32 kernels on a widened copy (see _WIDENED)
MAXPOOL_TYPES = {"float32": "float", "float64": "double"}

#: How MaxPool2D runs on CuPy: "kernels" (the two below) or "arrays" (the layer's array
#: code, as on NumPy). Set with the environment variable CONVNET_MAXPOOL (`gpu_switch`);
#: benchmarks/bench_gpu.py times both.
MAXPOOL_ON_GPU = gpu_switch("CONVNET_MAXPOOL", "kernels", "arrays")


def maxpool_kernels_take(x: Any) -> bool:
    """Whether MaxPool2D runs `maxpool_forward`/`maxpool_backward` on `x` (a CuPy array):
    float16/32/64, unless MAXPOOL_ON_GPU says "arrays"."""
    return MAXPOOL_ON_GPU == "kernels" and x.dtype.name in (*MAXPOOL_TYPES, *_WIDENED)


# the position type: uint8 up to 256 offsets per window, as the array code keeps it
_INDEX_TYPES = {"uint8": "unsigned char", "int32": "int"}


def maxpool_index_dtype(pool_size: tuple[int, int]) -> str:
    """The dtype of `first_max` for windows of `pool_size`: uint8, or int32 beyond 256."""
    return "uint8" if pool_size[0] * pool_size[1] <= 256 else "int32"


def maxpool_source(direction: str, dtype_name: str, index_dtype: str) -> str:
    """The CUDA C source of the max-pool kernel `direction` ("forward" or "backward") for
    values of `dtype_name` and positions of `index_dtype`."""
    if direction == "forward":
        source = _CHANNEL_MAJOR_SOURCE + _MAXPOOL_FORWARD_SOURCE
    else:
        source = _CHANNEL_MAJOR_SOURCE + _WINDOWS_HOLDING_SOURCE + _MAXPOOL_BACKWARD_SOURCE
    return (
        source.replace("${NAME}", f"{dtype_name}_{index_dtype}")
        .replace("${T}", MAXPOOL_TYPES[dtype_name])
        .replace("${I}", _INDEX_TYPES[index_dtype])
    )


def _maxpool_kernel(direction: str, dtype_name: str, index_dtype: str) -> Any:
    def build():
        source = maxpool_source(direction, dtype_name, index_dtype)
        name = f"convnet_maxpool_{direction}_{dtype_name}_{index_dtype}"
        return _cupy().RawKernel(source, name)

    return _cached(f"maxpool_{direction}_{dtype_name}_{index_dtype}", build)


def maxpool_forward(x: Any, pool_size: tuple[int, int], stride: tuple[int, int]) -> tuple:
    """MaxPool2D's forward pass on CuPy in one kernel: x (N, C, H, W), float16/32/64 (float16
    through float32, `_WIDENED`), any strides -> (y, first_max), both (N, C, Ho, Wo) and
    channel-major in memory.

    first_max holds the row-major offset k = i*kw + j of each window's first maximum (its
    last NaN where it holds NaN, as PyTorch picks it) (uint8, or int32 beyond 256 offsets),
    the cache `maxpool_backward` reads.
    """
    cupy = _cupy()
    if x.dtype.name in _WIDENED:  # a float16 max is a float32 max, exactly
        wide, first_max = maxpool_forward(x.astype(_WIDENED[x.dtype.name]), pool_size, stride)
        return wide.astype(x.dtype), first_max
    n, c, h, w = (int(d) for d in x.shape)
    kh, kw = (int(k) for k in pool_size)
    sh, sw = (int(s) for s in stride)
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    index_dtype = maxpool_index_dtype((kh, kw))
    kernel = _maxpool_kernel("forward", x.dtype.name, index_dtype)
    y = cupy.empty((c, n, ho, wo), dtype=x.dtype)  # (C, N, Ho, Wo)
    first_max = cupy.empty((c, n, ho, wo), dtype=index_dtype)
    sizes = (n, ho, wo, kh, kw, sh, sw)
    args = (x, y, first_max, numpy.int64(y.size), *(numpy.int32(v) for v in sizes))  # host
    kernel(_grid(y.size, 256), (256,), args + _element_strides(x))
    return y.transpose(1, 0, 2, 3), first_max.transpose(1, 0, 2, 3)  # (N, C, Ho, Wo) views


def maxpool_backward(
    dy: Any,
    first_max: Any,
    x_shape: tuple[int, int, int, int],
    pool_size: tuple[int, int],
    stride: tuple[int, int],
) -> Any:
    """MaxPool2D's backward pass on CuPy in one kernel: dy and first_max (N, C, Ho, Wo),
    any strides -> dx (N, C, H, W), channel-major: each pixel gets the dy of every window
    whose first maximum it was (windows may overlap), 0 elsewhere. float16 is summed in
    float32 (`_WIDENED`)."""
    cupy = _cupy()
    if dy.dtype.name in _WIDENED:
        wide = dy.astype(_WIDENED[dy.dtype.name])
        return maxpool_backward(wide, first_max, x_shape, pool_size, stride).astype(dy.dtype)
    n, c, h, w = (int(d) for d in x_shape)
    kh, kw = (int(k) for k in pool_size)
    sh, sw = (int(s) for s in stride)
    _, _, ho, wo = (int(d) for d in dy.shape)
    kernel = _maxpool_kernel("backward", dy.dtype.name, first_max.dtype.name)
    dx = cupy.empty((c, n, h, w), dtype=dy.dtype)  # (C, N, H, W)
    sizes = (n, h, w, ho, wo, kh, kw, sh, sw)
    args = (dy, first_max, dx, numpy.int64(dx.size), *(numpy.int32(v) for v in sizes))  # host
    args += _element_strides(dy) + _element_strides(first_max)
    kernel(_grid(dx.size, 256), (256,), args)
    return dx.transpose(1, 0, 2, 3)  # (N, C, H, W) view


# ---------------------------------------------------------------------------------------
# batch normalisation
#
# BatchNorm2D's element-wise work on (N, C, H, W) arrays; the per-channel values come in as
# (C, 1, 1) arrays, broadcast, and M = N*H*W is the count per channel:
#
#     forward   x̂ = centered · inv_std,  y = x̂ · γ + β
#     backward  dx = (γ · inv_std) · (dy - mean(dy) - x̂ · mean(dy x̂))
#
# and, in training, its per-channel arithmetic on (C,) arrays, from the batch's mean μ and
# biased variance σ², with m the momentum:
#
#     inv_std = 1 / √(σ² + eps)
#     running_mean ← m · running_mean + (1 - m) · μ
#     running_var  ← m · running_var + (1 - m) · (σ² · M/(M - 1))
#
# ten small launches of the array code made one. The kernels write the array code's
# products and sums in its order, so on the CPU stand-in of the tests (g++, no fused
# multiply-adds) float32 and float64 results equal it to the last bit. On a GPU they may
# not: NVRTC fuses a multiply and an add into one rounding (y = x̂·γ + β, the running
# statistics), and CuPy evaluates a float16 expression in float and rounds it to half once,
# where NumPy rounds after each operation. The GPU tests compare within tolerances that
# cover both.

_BATCHNORM_TYPES = ("float16", "float32", "float64")

#: How BatchNorm2D's element-wise work runs on CuPy when training: "kernels" (below) or
#: "arrays" (the layer's array code). Set with the environment variable CONVNET_BATCHNORM
#: (`gpu_switch`).
BATCHNORM_ON_GPU = gpu_switch("CONVNET_BATCHNORM", "kernels", "arrays")


def batchnorm_kernels_take(x: Any) -> bool:
    """Whether BatchNorm2D runs the kernels below on `x` (a CuPy array): float16/32/64,
    unless BATCHNORM_ON_GPU says "arrays"."""
    return BATCHNORM_ON_GPU == "kernels" and x.dtype.name in _BATCHNORM_TYPES


def _batchnorm_statistics_kernel() -> Any:
    # T: the batch's dtype; A: its accumulation dtype (float32 for a float16 batch), the
    # variance's, in which 1/√(σ² + eps) is computed; S: the running statistics' (float32
    # in mixed precision), in which they are updated
    return _cupy().ElementwiseKernel(
        "T mean, A var, S running_mean, S running_var, S momentum, S bessel, A eps",
        "T inv_std, S new_running_mean, S new_running_var",
        "inv_std = (T)((A)1 / sqrt(var + eps));"
        " new_running_mean = momentum * running_mean + ((S)1 - momentum) * (S)mean;"
        " new_running_var = momentum * running_var + ((S)1 - momentum) * ((S)var * bessel);",
        "convnet_batchnorm_statistics",
    )


def batchnorm_statistics(
    mean: Any, var: Any, running_mean: Any, running_var: Any, *, momentum: Any, bessel: Any,
    eps: Any,
) -> tuple[Any, Any, Any]:  # fmt: skip
    """(inv_std, new running_mean, new running_var), each (C,), in one kernel, from the
    batch's mean (C,) in the batch's dtype, its biased variance (C,) in the accumulation
    dtype (float32 for a float16 batch, whose squares and variance overflow float16) and
    the running statistics (C,). inv_std is computed in the variance's dtype, eps a scalar of
    it, and rounded to the batch's dtype once; the running statistics are updated in their
    own dtype (float32 with float16 batches in mixed precision), which momentum and bessel
    (M/(M - 1)) are scalars of."""
    kernel = _cached("batchnorm_statistics", _batchnorm_statistics_kernel)
    return kernel(mean, var, running_mean, running_var, momentum, bessel, eps)


def _batchnorm_forward_kernel() -> Any:
    return _cupy().ElementwiseKernel(
        "T centered, T inv_std, T gamma, T beta",
        "T x_hat, T y",
        "x_hat = centered * inv_std; y = x_hat * gamma + beta;",
        "convnet_batchnorm_forward",
    )


def _batchnorm_input_grad_kernel() -> Any:
    return _cupy().ElementwiseKernel(
        "T dy, T x_hat, T gamma, T inv_std, T mean_dy, T mean_dy_x_hat",
        "T dx",
        "dx = gamma * inv_std * (dy - mean_dy - x_hat * mean_dy_x_hat)",
        "convnet_batchnorm_input_grad",
    )


def batchnorm_forward(centered: Any, inv_std: Any, gamma: Any, beta: Any) -> tuple[Any, Any]:
    """(x̂, y) in one kernel: centered (N, C, H, W) = x - μ; inv_std, gamma and beta
    (C, 1, 1). Both outputs have the memory layout of `centered`."""
    cupy = _cupy()
    x_hat, y = cupy.empty_like(centered), cupy.empty_like(centered)
    kernel = _cached("batchnorm_forward", _batchnorm_forward_kernel)
    kernel(centered, inv_std, gamma, beta, x_hat, y)
    return x_hat, y


def batchnorm_input_grad(
    dy: Any, x_hat: Any, gamma: Any, inv_std: Any, mean_dy: Any, mean_dy_x_hat: Any
) -> Any:
    """dx (N, C, H, W) in one kernel from dy and x̂ (N, C, H, W) and the per-channel gamma,
    inv_std, mean(dy) and mean(dy x̂) (C, 1, 1). dx has dy's memory layout."""
    dx = _cupy().empty_like(dy)
    kernel = _cached("batchnorm_input_grad", _batchnorm_input_grad_kernel)
    kernel(dy, x_hat, gamma, inv_std, mean_dy, mean_dy_x_hat, dx)
    return dx


# ---------------------------------------------------------------------------------------
# softmax cross-entropy
#
# For logits z (N, k) and integer labels y (N,), what losses.softmax_cross_entropy_unfused
# computes:
#
#     loss      = 1/N Σₙ (log Σⱼ exp(zₙⱼ - mₙ) - (zₙ,yₙ - mₙ)),   mₙ = maxⱼ zₙⱼ
#     dlogitsₙⱼ = (softmax(zₙ)ⱼ - [j = yₙ]) / N

_SOFTMAX_XENT_SOURCE = r"""
extern "C" __global__ void convnet_softmax_xent_${NAME}(
    const ${T}* logits, const long long* labels, ${T}* row_loss, ${T}* dlogits,
    long long n, int k)
{
    // One thread per row of the C-contiguous (n, k) logits.
    const ${T} zero = 0, count = (${T})n;
    for (long long row = (long long)blockIdx.x * blockDim.x + threadIdx.x; row < n;
         row += (long long)blockDim.x * gridDim.x) {
        const ${T}* z = logits + row * k;
        ${T}* dz = dlogits + row * k;
        ${T} top = z[0];  // the row's max, NaN if any entry is NaN (as NumPy's max)
        for (int j = 1; j < k; ++j)
            top = (z[j] > top || z[j] != z[j]) ? z[j] : top;
        ${T} total = 0;  // Σ exp(z - max)
        for (int j = 0; j < k; ++j)
            total += ${EXP}(z[j] - top);
        const ${T} log_total = ${LOG}(total);
        const long long label = labels[row];
        // -log softmax(z)[label]; NaN for a label outside [0, k), so the loss shows it
        row_loss[row] = (0 <= label && label < k) ? log_total - (z[label] - top) : zero / zero;
        for (int j = 0; j < k; ++j) {
            const ${T} p = ${EXP}((z[j] - top) - log_total);  // softmax(z)[j]
            dz[j] = (p - (j == label ? (${T})1 : zero)) / count;
        }
    }
}
"""

#: How the softmax cross-entropy of integer labels runs on CuPy: "kernel" (below) or
#: "arrays" (`losses.softmax_cross_entropy_unfused`). Set with CONVNET_SOFTMAX_XENT
#: (`gpu_switch`).
SOFTMAX_XENT_ON_GPU = gpu_switch("CONVNET_SOFTMAX_XENT", "kernel", "arrays")

# dtype name -> (C type, exp, log)
SOFTMAX_XENT_TYPES = {
    "float32": ("float", "expf", "logf"),
    "float64": ("double", "exp", "log"),
}


def softmax_cross_entropy_source(dtype_name: str) -> str:
    """The CUDA C source of the fused loss kernel for `dtype_name` ("float32"/"float64")."""
    c_type, exp, log = SOFTMAX_XENT_TYPES[dtype_name]
    return (
        _SOFTMAX_XENT_SOURCE.replace("${NAME}", dtype_name)
        .replace("${T}", c_type)
        .replace("${EXP}", exp)
        .replace("${LOG}", log)
    )


def _softmax_xent_kernel(dtype_name: str) -> Any:
    source = softmax_cross_entropy_source(dtype_name)
    return _cupy().RawKernel(source, f"convnet_softmax_xent_{dtype_name}")


def fused_softmax_cross_entropy(logits: Any, labels: Any) -> tuple[Any, Any]:
    """`losses.softmax_cross_entropy_unfused` for CuPy logits (N, k), float32 or float64, and
    integer labels (N,): one kernel for the rows, one sum and one division for the loss.

    Returns (loss, dlogits): the mean loss, a 0-d array, and its gradient (N, k), both in
    the logits' dtype. A label outside [0, k) makes the loss NaN: the labels are not read,
    since checking them would make the host wait for the GPU (with NumPy,
    `losses.softmax_cross_entropy` raises a ValueError naming the label).
    """
    cupy = _cupy()
    name = logits.dtype.name
    if name not in SOFTMAX_XENT_TYPES:
        raise ValueError(f"fused_softmax_cross_entropy: dtype {name} is not one of "
                         f"{sorted(SOFTMAX_XENT_TYPES)}")  # fmt: skip
    kernel = _cached(f"softmax_xent_{name}", lambda: _softmax_xent_kernel(name))
    n, k = (int(d) for d in logits.shape)
    logits = cupy.ascontiguousarray(logits)
    labels = cupy.ascontiguousarray(labels.astype(numpy.int64, copy=False))
    row_loss = cupy.empty((n,), dtype=logits.dtype)  # (N,)
    dlogits = cupy.empty((n, k), dtype=logits.dtype)  # (N, k)
    args = (logits, labels, row_loss, dlogits, numpy.int64(n), numpy.int32(k))  # host
    kernel(_grid(n, 128), (128,), args)
    return row_loss.sum() / logits.dtype.type(n), dlogits


# ---------------------------------------------------------------------------------------
# holding the GPU back: a diagnostic for tests and benchmarks, never used in training

HOLD_SOURCE = r"""
extern "C" __global__ void convnet_hold_the_gpu(unsigned long long nanoseconds) {
    // %globaltimer: nanoseconds of wall-clock time, the same on every SM
    unsigned long long start, now;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
    do {
        __nanosleep(1000);
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
    } while (now - start < nanoseconds);
}
"""


def _hold_kernel() -> Any:
    kernel = _cupy().RawKernel(HOLD_SOURCE, "convnet_hold_the_gpu")
    kernel.compile()  # now, so that the first hold is not delayed by the compiler
    return kernel


def hold_the_gpu(seconds: float) -> None:
    """Keep the current CuPy stream busy for `seconds` with a one-thread kernel; return at
    once. Work queued after it waits for it, the host does not: code that queues work and
    then returns within `seconds` never waited for the GPU, and the time it took is the
    host's alone (tests/host_waits.py and benchmarks/bench_gpu.py use it that way)."""
    kernel = _cached("hold", _hold_kernel)
    kernel((1,), (1,), (numpy.uint64(round(seconds * 1e9)),))
