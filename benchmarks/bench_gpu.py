"""One epoch of training on a GPU: convnet on CuPy next to PyTorch CUDA, in the same run.

Models: the README model (Conv2D(8) relu MaxPool Conv2D(16) relu MaxPool Flatten Dense(64)
relu Dense(10)) and the `best` preset of apps/train_mnist.py (imported from there; the
PyTorch twin of each is built layer by layer from the convnet spec, so both sides train
the same network). Adam 1e-3, softmax cross-entropy, 60,000 MNIST-shaped samples already
on the device, batch 64 and 512.

Each configuration is warmed up on a few batches and on one of the epoch's last, short
size (CUDA kernels compile, and cuDNN picks its algorithms, on first use of a shape), then
whole epochs are timed between two device synchronisations: at the largest batch size,
the one the target is judged on, `--repeats` of each (default 3), convnet's then
PyTorch's, and a row shows the medians and their ratio; at the others, one of each:

- convnet float32 with `Model.fit` (what a user runs: its progress checks included);
- convnet float32 with a custom loop of `cn.apply`, `cn.grad` and Adam, the like of the
  PyTorch loop (no accuracy count, no loss read every 50 steps);
- convnet mixed precision (float16 compute, float32 master weights, dynamic loss scaling)
  with `Model.compile(precision="mixed")` when the Model has it, else a custom loop
  around `precision.mixed_precision_step` (printed as "loop");
- PyTorch float32, and PyTorch AMP (autocast float16 + GradScaler) for mixed precision,
  with `Adam(fused=True)` on a GPU (one kernel per update, as convnet's, and GradScaler
  then skips an overflowed step without reading its flag on the host every step).

The ratio is convnet time / PyTorch time (target: <= 1.5 at batch 512). PyTorch runs
with `cudnn.benchmark = True` (it times the convolution algorithms per shape and keeps the
fastest; not its default) and otherwise its defaults, which on a GPU do float32
convolutions in TF32 on the tensor cores (`torch.backends.cudnn.allow_tf32`), while CuPy's
float32 matmuls are full FP32 (unless CUPY_TF32=1 is set). So on a GPU each float32 row
also times PyTorch with TF32 off, in the columns "fp32 s" and "ratio": the same arithmetic
on both sides. Both sides keep images in NCHW, contiguous.

A section that fails (an epoch row, the kernels, the call costs, the anatomy) is reported,
with its traceback, and the next one runs; the exit status is then 1. The JSON is written
after each row.

    python benchmarks/bench_gpu.py                  # everything (about two minutes on an H100)
    python benchmarks/bench_gpu.py --kernels        # plus each fused kernel vs its reference
    python benchmarks/bench_gpu.py --anatomy        # plus, for one step, the host's time to
                                                    # queue it and the GPU's to run it
    python benchmarks/bench_gpu.py --cpu            # the same logic on NumPy + PyTorch CPU,
                                                    # tiny, to check the script without a GPU
    python benchmarks/bench_gpu.py --json out.json  # also write the figures as JSON
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import json
import os
import pathlib
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from functools import partial
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
for src in sorted((ROOT / "packages").glob("*/src")):  # run from a checkout, no install
    if str(src) not in sys.path:
        sys.path.insert(0, str(src))

import convnet_core as cn  # noqa: E402
import numpy  # noqa: E402
from convnet_core import backend, losses, optim, precision  # noqa: E402
from convnet_core import layers as L  # noqa: E402

# ---------------------------------------------------------------------------------------
# the models


def preset_layers(name: str) -> tuple[list, str]:
    """The layers of preset `name` ("readme" or "best") and where they came from."""
    return list(getattr(cn.presets, f"{name}_layers")()), f"convnet_core.presets.{name}_layers()"


def torch_twin(torch, layers, input_shape):
    """An nn.Sequential computing what the convnet `layers` compute (same shapes, same
    padding), built by walking the spec with convnet's own output_shape."""
    nn = torch.nn
    modules = []
    shape = tuple(input_shape)
    for layer in layers:
        out = layer.output_shape(shape)
        if isinstance(layer, L.Conv2D):
            top, bottom, left, right = layer.pads(*shape[1:])
            if top != bottom or left != right:
                modules.append(nn.ZeroPad2d((left, right, top, bottom)))
                top = left = 0
            modules.append(
                nn.Conv2d(shape[0], layer.filters, layer.kernel_size, layer.stride, (top, left),
                          bias=layer.use_bias)
            )  # fmt: skip
        elif isinstance(layer, L.BatchNorm2D):
            modules.append(nn.BatchNorm2d(shape[0], eps=layer.eps, momentum=1 - layer.momentum))
        elif isinstance(layer, L.MaxPool2D):
            modules.append(nn.MaxPool2d(layer.pool_size, layer.stride or layer.pool_size))
        elif isinstance(layer, L.Activation) and layer.name == "relu":
            modules.append(nn.ReLU())
        elif isinstance(layer, L.Flatten):
            modules.append(nn.Flatten())
        elif isinstance(layer, L.Dense):
            modules.append(nn.Linear(shape[0], layer.units, bias=layer.use_bias))
        elif isinstance(layer, L.Dropout):
            modules.append(nn.Dropout(layer.rate))
        else:
            raise ValueError(f"bench_gpu: no PyTorch twin for {layer!r}")
        shape = out
    return nn.Sequential(*modules)


# ---------------------------------------------------------------------------------------
# timing


def synchronize(xp) -> None:
    if backend.is_cupy(xp):
        xp.cuda.Device().synchronize()


def mnist_like(xp, samples: int, seed: int = 0):
    """(samples, 1, 28, 28) float32 in [0, 1) and int64 labels, made on the device."""
    rng = numpy.random.default_rng(seed)
    x = rng.random((samples, 1, 28, 28), dtype=numpy.float32)  # host
    y = rng.integers(0, 10, samples)  # host
    return xp.asarray(x), xp.asarray(y)


def supports_precision_option() -> bool:
    return "precision" in inspect.signature(cn.Model.compile).parameters


def warm_up_size(samples: int, batch: int) -> int:
    """How many samples a warm-up takes: three whole batches, then one of the size the
    epoch ends with, so that no shape is met first inside the timed epoch."""
    return min(samples, 3 * batch + samples % batch)


def convnet_fit_epoch(xp, layers, x, y, batch: int, *, mixed: bool) -> float:
    """Seconds for one epoch of Model.fit (after a warm-up fit on a few batches)."""
    model = cn.Model(layers, seed=0, device=xp)
    extra = {"precision": "mixed"} if mixed else {}
    model.compile(loss="categorical_crossentropy", optimizer="adam", lr=1e-3, **extra)
    warm = warm_up_size(len(x), batch)
    model.fit((x[:warm], y[:warm]), epochs=1, batch_size=batch, verbose=False)
    synchronize(xp)
    start = time.perf_counter()
    model.fit((x, y), epochs=1, batch_size=batch, verbose=False)
    synchronize(xp)
    return time.perf_counter() - start


def convnet_step(xp, layers, *, mixed: bool):
    """A training step `step(xb, yb)` of a custom loop (Adam 1e-3), float32 or mixed."""
    net = L.Sequential(tuple(layers))
    params, state = cn.init(net, (1, 28, 28), rng=0, xp=xp)
    opt = optim.adam(lr=1e-3)
    opt_state = opt.init(params)
    scaler = precision.DynamicLossScaler()
    rng = xp.random.default_rng(0)
    loss_fn = losses.softmax_cross_entropy

    def step(xb, yb):
        nonlocal params, state, opt_state, scaler
        if mixed:
            params, state, opt_state, scaler, *_ = precision.mixed_precision_step(
                net, params, state, opt_state, scaler, xb, yb,
                optimizer=opt, loss_fn=loss_fn, rng=rng, xp=xp,
            )  # fmt: skip
            return
        logits, state, cache = cn.apply(net, params, state, xb, training=True, rng=rng, xp=xp)
        _, dlogits = loss_fn(logits, yb, xp=xp)
        grads, _ = cn.grad(net, params, cache, dlogits, xp=xp, input_grad=False)
        params, opt_state = opt.update(params, grads, opt_state)

    return step


def convnet_loop_epoch(xp, layers, x, y, batch: int, *, mixed: bool) -> float:
    """Seconds for one epoch of a custom loop (shuffled batches, Adam), float32 or mixed."""
    step = convnet_step(xp, layers, mixed=mixed)

    def epoch(samples: int, seed: int) -> None:
        order = xp.asarray(numpy.random.default_rng(seed).permutation(samples))  # from host
        for start in range(0, samples, batch):
            index = order[start : start + batch]
            step(x[index], y[index])

    epoch(warm_up_size(len(x), batch), seed=0)  # the same calls as the timed epoch
    synchronize(xp)
    begin = time.perf_counter()
    epoch(len(x), seed=1)
    synchronize(xp)
    return time.perf_counter() - begin


def torch_step(torch, layers, device, *, amp: bool):
    """A training step `step(xb, yb)` of the PyTorch twin (Adam 1e-3; AMP float16 when
    `amp`)."""
    torch.manual_seed(0)
    model = torch_twin(torch, layers, (1, 28, 28)).to(device)
    model.train()
    on_gpu = torch.device(device).type == "cuda"
    # fused: one kernel per update, as convnet's; GradScaler then checks for inf on the GPU
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=on_gpu)
    loss_fn = torch.nn.CrossEntropyLoss()
    scaler = torch.amp.GradScaler("cuda", enabled=amp and on_gpu)
    autocast = (
        torch.autocast("cuda", dtype=torch.float16) if amp and on_gpu else contextlib.nullcontext()
    )

    def step(xb, yb):
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = loss_fn(model(xb), yb)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    return step


@contextlib.contextmanager
def torch_full_fp32(torch):
    """Inside: PyTorch's float32 convolutions and matmuls in full FP32, without TF32."""
    flags = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = [flag.allow_tf32 for flag in flags]
    for flag in flags:
        flag.allow_tf32 = False
    try:
        yield
    finally:
        for flag, allowed in zip(flags, saved, strict=True):
            flag.allow_tf32 = allowed


def float32_math(torch, *, on_gpu: bool) -> str:
    """How each side does float32 arithmetic, in words."""
    if not on_gpu:
        return "FP32 on both sides (the CPU has no TF32)"
    cupy_tf32 = os.environ.get("CUPY_TF32", "0") not in ("", "0")
    convnet = "TF32 matmuls (CUPY_TF32=1)" if cupy_tf32 else "full FP32 matmuls"
    if torch is None:
        return f"convnet: {convnet}"
    conv = "TF32" if torch.backends.cudnn.allow_tf32 else "FP32"
    matmul = "TF32" if torch.backends.cuda.matmul.allow_tf32 else "FP32"
    return f"convnet: {convnet}; torch: {conv} convolutions, {matmul} matmuls"


def torch_epoch(torch, layers, x, y, batch: int, *, amp: bool) -> float:
    """Seconds for one epoch of the PyTorch twin (Adam 1e-3; AMP float16 when `amp`)."""
    device = x.device
    on_gpu = device.type == "cuda"
    step = torch_step(torch, layers, device, amp=amp)

    def epoch(samples: int) -> None:
        order = torch.randperm(samples, device=device)
        for start in range(0, samples, batch):
            index = order[start : start + batch]
            step(x[index], y[index])

    epoch(warm_up_size(len(x), batch))  # the same calls and shapes as the timed epoch
    if on_gpu:
        torch.cuda.synchronize()
    begin = time.perf_counter()
    epoch(len(x))
    if on_gpu:
        torch.cuda.synchronize()
    return time.perf_counter() - begin


def torch_setup(torch, *, on_gpu: bool) -> str:
    """How PyTorch is set to run, in words (cuDNN's version and autotuning)."""
    if not on_gpu:
        return f"torch {torch.__version__} on the CPU"
    cudnn = torch.backends.cudnn
    return (
        f"torch {torch.__version__}, cuDNN {cudnn.version()}, "
        f"cudnn.benchmark={cudnn.benchmark}, NCHW"
    )


# ---------------------------------------------------------------------------------------
# where a step's time goes: the host queueing it, or the GPU running it


@dataclasses.dataclass
class Timeline:
    """What `step_anatomy` needs of one library's GPU stream.

    hold(seconds): keep the stream busy, return at once; mark(): record an event on the
    stream; reached(event): whether the GPU got to it; elapsed_ms(a, b): wait for b, then
    the GPU time between the two events.
    """

    hold: Callable[[float], None]
    mark: Callable[[], Any]
    reached: Callable[[Any], bool]
    elapsed_ms: Callable[[Any, Any], float]


def step_anatomy(step, *, timeline: Timeline, repeats: int = 3, hold_s: float = 1.0):
    """(host ms, GPU ms) of one training step `step()`, medians of `repeats`, or None.

    The GPU is held while the host queues the step between two events, so the host's time
    is all Python and launch overhead. When the hold ends, the GPU runs the queued step
    back to back, so the time between the events is the GPU's alone. If the host's is the
    larger, the step is bound by launching kernels, not by running them. None when the
    hold did not cover the queueing (the two times would mix).
    """
    host_ms, gpu_ms = [], []
    for _ in range(repeats):
        held_from = time.perf_counter()
        timeline.hold(hold_s)
        begin = timeline.mark()
        start = time.perf_counter()
        step()
        host_ms.append((time.perf_counter() - start) * 1e3)
        held = time.perf_counter() - held_from < hold_s and not timeline.reached(begin)
        end = timeline.mark()
        gpu_ms.append(timeline.elapsed_ms(begin, end))
        if not held:
            return None
    return statistics.median(host_ms), statistics.median(gpu_ms)


def cupy_timeline(cupy) -> Timeline:
    from convnet_core import cuda_kernels

    def mark():
        event = cupy.cuda.Event()
        event.record()
        return event

    def elapsed_ms(begin, end):
        end.synchronize()
        return cupy.cuda.get_elapsed_time(begin, end)

    return Timeline(
        hold=cuda_kernels.hold_the_gpu,
        mark=mark,
        reached=lambda event: event.done,
        elapsed_ms=elapsed_ms,
    )


def torch_timeline(torch) -> Timeline:
    """PyTorch's current stream, held by convnet's kernel on CuPy's: by default both are
    the legacy default stream (were they not, `reached` would say so and the row is None)."""
    from convnet_core import cuda_kernels

    def mark():
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def elapsed_ms(begin, end):
        end.synchronize()
        return begin.elapsed_time(end)

    return Timeline(
        hold=cuda_kernels.hold_the_gpu,
        mark=mark,
        reached=lambda event: event.query(),
        elapsed_ms=elapsed_ms,
    )


def bench_anatomy(xp, torch, layers_of, names, batch: int, torch_data) -> list[dict]:
    """Host and GPU time of one float32 training step at `batch` for each model, convnet
    and (with `torch`) PyTorch on `torch_data`, each after three warm-up steps."""
    x, y = mnist_like(xp, batch)
    rows = []
    for name in names:
        sides = [("convnet", convnet_step(xp, layers_of(name), mixed=False), x, y, xp)]
        if torch is not None:
            tx, ty = (t[:batch] for t in torch_data)
            sides.append(("torch", torch_step(torch, layers_of(name), tx.device, amp=False),
                          tx, ty, torch))  # fmt: skip
        for side, step, xb, yb, library in sides:
            for _ in range(3):
                step(xb, yb)
            timeline = torch_timeline(torch) if library is torch else cupy_timeline(xp)
            times = step_anatomy(partial(step, xb, yb), timeline=timeline, hold_s=0.5)
            host_ms, gpu_ms = times if times is not None else (None, None)
            rows.append({"model": name, "batch": batch, "side": side,
                         "host_ms": host_ms, "gpu_ms": gpu_ms})  # fmt: skip
    return rows


# ---------------------------------------------------------------------------------------
# fused kernels against the unfused code they replace


# (label, cuda_kernels switch, its array-code value): each GPU fast path, switched off.
# The epochs here and benchmarks/gpu_calls.py's counts are taken with each in turn.
FAST_PATHS_OFF = [
    ("softmax xent arrays", "SOFTMAX_XENT_ON_GPU", "arrays"),
    ("maxpool arrays", "MAXPOOL_ON_GPU", "arrays"),
    ("col2im loop", "COL2IM_ON_GPU", "loop"),
    ("im2col copies", "IM2COL_ON_GPU", "copies"),
    ("batchnorm arrays", "BATCHNORM_ON_GPU", "arrays"),
]


def with_switch(switch: str, value: str, function, *args, **kwargs):
    """function(*args, **kwargs) with cuda_kernels.<switch> set to `value` meanwhile."""
    from convnet_core import cuda_kernels

    saved = getattr(cuda_kernels, switch)
    setattr(cuda_kernels, switch, value)
    try:
        return function(*args, **kwargs)
    finally:
        setattr(cuda_kernels, switch, saved)


def gpu_time_per_call(xp, calls: int = 20):
    """`gpu_time(function, result)`: the GPU's own time for one call of `function`, in ms.

    `calls` calls are queued while the GPU is held (cuda_kernels.hold_the_gpu), so they
    run back to back and the time between two events around them is the GPU's alone; the
    events of cupyx.profiler.benchmark (`result`) are taken from an idle GPU, so for a
    short kernel they time the host's launch as well. When the GPU cannot be held, or the
    hold did not cover the queueing, the median of the benchmark's GPU times stands in.
    """
    from convnet_core import cuda_kernels

    try:
        cuda_kernels.hold_the_gpu(0.0)  # builds the hold kernel
        timeline = cupy_timeline(xp)
    except Exception as error:  # the CPU stand-in cannot build its inline PTX
        print(f"(GPU times from events around single calls: no hold here, {error!r:.80})")
        timeline = None

    def gpu_time(function, result) -> float:
        if timeline is not None:
            times = step_anatomy(
                lambda: [function() for _ in range(calls)], timeline=timeline, hold_s=0.05
            )
            if times is not None:
                return times[1] / calls
        return float(numpy.median(result.gpu_times)) * 1e3

    return gpu_time


def bench_kernels(xp) -> list[dict]:
    """GPU time of each fused kernel and of its reference, on the models' shapes."""
    from convnet_core import cuda_kernels as K
    from convnet_core import ops
    from cupyx.profiler import benchmark

    rows = []
    gpu_time = gpu_time_per_call(xp)

    def timed(name, shape, fused, reference):
        row = {"kernel": name, "shape": str(shape)}
        for side, function in (("fused", fused), ("ref", reference)):
            result = benchmark(function, n_repeat=50, n_warmup=5, name=f"{name} {side}")
            row[f"{side}_ms"] = gpu_time(function, result)  # the GPU's time
            row[f"{side}_host_us"] = statistics.median(result.cpu_times) * 1e6  # the host's
        rows.append(row)

    rng = xp.random.default_rng(0)
    hyper = dict(beta1=0.9, beta2=0.999, eps=1e-8)
    scalars = {"lr": 1e-3, "step_size": 1e-2, "inv_sqrt_bias2": 1.5}
    scalars = {key: xp.asarray(value, dtype=xp.float32) for key, value in scalars.items()}
    for shape in [(16, 8, 3, 3), (3136, 128), (64, 64, 3, 3)]:
        p, g, m = (rng.standard_normal(shape, dtype=xp.float32) for _ in range(3))
        v = xp.abs(rng.standard_normal(shape, dtype=xp.float32))
        fused = partial(K.fused_adam_update, p, g, m, v, **scalars, **hyper)
        reference = partial(K.adam_update_reference, p, g, m, v, **scalars, **hyper, xp=xp)
        timed("adam", shape, fused, reference)
    for shape in [(64, 8, 26, 26), (512, 32, 28, 28)]:
        x = rng.standard_normal(shape, dtype=xp.float32)
        dy = rng.standard_normal(shape, dtype=xp.float32)
        y = K.fused_relu_forward(x)
        timed(
            "relu forward",
            shape,
            partial(K.fused_relu_forward, x),
            partial(K.relu_forward_reference, x, xp=xp),
        )
        timed(
            "relu backward",
            shape,
            partial(K.fused_relu_backward, y, dy),
            partial(K.relu_backward_reference, y, dy, xp=xp),
        )
    # conv input gradients (3x3, stride 1, "same": padded by one): README conv2 (8 channels
    # in, 14x14 -> 16x16 padded), and the best model's convs (14x14 and 7x7 inputs)
    for n, c, hw in [(64, 8, 16), (512, 8, 16), (64, 16, 16), (512, 16, 16), (512, 32, 9)]:
        padded = (n, c, hw, hw)
        ho = ops.conv_output_size(hw, 3, 1, 0)
        blocks = rng.standard_normal((c, 3, 3, n, ho, ho), dtype=xp.float32)
        timed(
            "col2im gather|loop",
            padded,
            partial(K.col2im_gather, blocks, padded, (1, 1)),
            partial(K.col2im_loop, blocks, padded, (1, 1), xp=xp),
        )
    # the README model's convolution inputs, padded and unfolded ("same", 3x3)
    for shape in [(64, 1, 28, 28), (512, 1, 28, 28), (512, 8, 14, 14)]:
        x = rng.standard_normal(shape, dtype=xp.float32)
        timed(
            "im2col gather|copies",
            shape,
            partial(K.im2col_gather, x, (3, 3), (1, 1), (1, 1, 1, 1)),
            partial(with_switch, "IM2COL_ON_GPU", "copies", ops.im2col_padded, x,
                    (1, 1, 1, 1), (3, 3), (1, 1), xp=xp),
        )  # fmt: skip
    # max pools of the README model (8 and 16 channels, 28x28 and 14x14 inputs), forward and
    # backward, against the layer's array code on CuPy
    for shape in [(64, 8, 28, 28), (512, 8, 28, 28), (512, 16, 14, 14)]:
        time_maxpool(xp, timed, "maxpool", rng.standard_normal(shape, dtype=xp.float32))
    # the best preset's batch norms (after its 16-, 32- and 64-channel convs), training
    norm = L.BatchNorm2D()
    arrays = partial(with_switch, "BATCHNORM_ON_GPU", "arrays")
    for shape in [(512, 16, 28, 28), (512, 32, 14, 14), (512, 64, 7, 7)]:
        x = rng.standard_normal(shape, dtype=xp.float32)
        params, state = cn.init(norm, shape[1:], rng=0, xp=xp)
        y, _, cache = norm.apply(params, state, x, training=True, rng=None, xp=xp)
        dy = rng.standard_normal(shape, dtype=xp.float32)
        forward = partial(norm.apply, params, state, x, training=True, rng=None, xp=xp)
        backward = partial(norm.grad, params, cache, dy, xp=xp)
        timed("batchnorm forward", shape, forward, partial(arrays, forward))
        timed("batchnorm backward", shape, backward, partial(arrays, backward))
    for n in (64, 512):
        logits = rng.standard_normal((n, 10), dtype=xp.float32)
        labels = xp.arange(n) % 10
        timed(
            "softmax xent",
            (n, 10),
            partial(K.fused_softmax_cross_entropy, logits, labels),
            partial(losses.softmax_cross_entropy_unfused, logits, labels, xp=xp),
        )
    time_mixed_precision_kernels(xp, timed)
    return rows


def time_mixed_precision_kernels(xp, timed) -> None:
    """`timed(name, shape, fused, reference)` for mixed precision's paths: a float16
    gradient unscaled and checked (the best preset's largest and a conv's), and float16
    col2im and max pooling through the float32 kernels on a widened copy against their
    float16 array code."""
    from convnet_core import cuda_kernels as K

    rng = xp.random.default_rng(1)
    inverse = xp.asarray(1 / 1024, dtype=xp.float32)
    nonfinite = xp.zeros(1, dtype=xp.int32)
    for shape in [(3136, 128), (64, 32, 3, 3)]:
        g = rng.standard_normal(shape, dtype=xp.float32).astype(xp.float16)

        def reference(g=g):
            unscaled = K.unscale_reference(g, inverse)
            return unscaled, precision.all_finite(unscaled)

        timed(
            "unscale+check", shape, partial(K.unscale_and_check, g, inverse, nonfinite), reference
        )
    padded = (512, 16, 16, 16)
    blocks = rng.standard_normal((16, 3, 3, 512, 14, 14), dtype=xp.float32).astype(xp.float16)
    timed(
        "col2im float16 widened|loop",
        padded,
        partial(K.col2im_gather, blocks, padded, (1, 1)),
        partial(K.col2im_loop, blocks, padded, (1, 1), xp=xp),
    )
    x = rng.standard_normal((512, 16, 28, 28), dtype=xp.float32).astype(xp.float16)
    time_maxpool(xp, timed, "maxpool float16", x)


def time_maxpool(xp, timed, name: str, x) -> None:
    """`timed` for a 2x2 MaxPool2D's kernels on x (N, C, H, W), forward and backward,
    against the layer's array code on CuPy."""
    from convnet_core import cuda_kernels as K

    layer = L.MaxPool2D((2, 2))
    array_code = partial(with_switch, "MAXPOOL_ON_GPU", "arrays")
    y, first_max = K.maxpool_forward(x, (2, 2), (2, 2))
    dy = xp.random.default_rng(2).standard_normal(y.shape, dtype=xp.float32).astype(x.dtype)
    _, _, cache = array_code(layer.apply, {}, {}, x, training=True, rng=None, xp=xp)
    timed(
        f"{name} forward",
        x.shape,
        partial(K.maxpool_forward, x, (2, 2), (2, 2)),
        partial(array_code, layer.apply, {}, {}, x, training=True, rng=None, xp=xp),
    )
    timed(
        f"{name} backward",
        x.shape,
        partial(K.maxpool_backward, dy, first_max, x.shape, (2, 2), (2, 2)),
        partial(array_code, layer.grad, {}, cache, dy, xp=xp),
    )


# ---------------------------------------------------------------------------------------
# what each kind of call into CuPy costs the host


def bench_call_costs(xp) -> list[dict]:
    """The host's time for one call of each kind a training step makes, in microseconds
    (median of 200, the GPU synchronised between calls), on the README model's shapes at
    batch 512. benchmarks/gpu_calls.py counts the calls of each kind per step, so the two
    together say where a launch-bound step's host time goes."""
    from convnet_core import cuda_kernels as K
    from cupyx.profiler import benchmark

    rng = xp.random.default_rng(0)
    f32 = xp.float32
    activations = rng.standard_normal((512, 8, 28, 28), dtype=f32)  # conv1's output
    weights = rng.standard_normal((16, 72), dtype=f32)  # conv2's W as (O, C*kh*kw)
    cols = rng.standard_normal((72, 512 * 14 * 14), dtype=f32)  # conv2's im2col columns
    conv_out = weights @ cols  # (O, N*Ho*Wo)
    bias = rng.standard_normal((16, 1), dtype=f32)
    flat = rng.standard_normal((512, 784), dtype=f32)  # Dense(64)'s input
    dense_w = rng.standard_normal((784, 64), dtype=f32)
    hidden = flat @ dense_w  # (512, 64)
    logits = rng.standard_normal((512, 10), dtype=f32)
    p, g, m = (rng.standard_normal((784, 64), dtype=f32) for _ in range(3))
    v = xp.abs(rng.standard_normal((784, 64), dtype=f32))
    scalars = {"lr": 1e-3, "step_size": 1e-3, "inv_sqrt_bias2": 1.0}
    scalars = {key: xp.asarray(value, dtype=f32) for key, value in scalars.items()}
    adam = partial(K.fused_adam_update, p, g, m, v, **scalars, beta1=0.9, beta2=0.999, eps=1e-8)
    crop = (slice(None), slice(None), slice(1, 27), slice(1, 27))
    calls = [
        ("view: reshape", partial(activations.reshape, 512, -1)),
        ("view: transpose", partial(activations.transpose, 1, 0, 2, 3)),
        ("view: slice", partial(activations.__getitem__, crop)),
        ("astype to its own dtype", partial(activations.astype, f32, copy=False)),
        ("empty (512, 8, 28, 28)", partial(xp.empty, (512, 8, 28, 28), dtype=f32)),
        ("ufunc: += bias, (16, N*196)", partial(xp.add, conv_out, bias, out=conv_out)),
        ("sum, axis 0 of (512, 64)", partial(hidden.sum, axis=0)),
        ("argmax, axis 1 of (512, 10)", partial(logits.argmax, axis=1)),
        ("matmul (16, 72) @ (72, N*196)", partial(xp.matmul, weights, cols)),
        ("matmul (512, 784) @ (784, 64)", partial(xp.matmul, flat, dense_w)),
        ("RawKernel: relu forward", partial(K.fused_relu_forward, activations)),
        ("ElementwiseKernel: adam", adam),
        # Conv2D's bias gradient, a row sum of dY (O, N*Ho*Wo): as Conv2D computes it (a
        # ones vector and a matrix-vector product, the faster on NumPy), and as one reduction
        ("conv db: dY @ ones(N*196)", lambda: conv_out @ xp.ones(conv_out.shape[1], dtype=f32)),
        ("conv db: dY.sum(axis=1)", partial(conv_out.sum, axis=1)),
    ]
    rows = []
    for name, call in calls:
        result = benchmark(call, n_repeat=200, n_warmup=10, name=name)
        host_us = statistics.median(result.cpu_times) * 1e6
        gpu_us = float(numpy.median(result.gpu_times)) * 1e6
        rows.append({"call": name, "host_us": host_us, "gpu_us": gpu_us})
    return rows


def write_report(path: pathlib.Path | None, report: dict) -> None:
    """Write what has been measured so far (each section adds to it), so that a run cut
    short still leaves its figures."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="NumPy + PyTorch CPU, tiny sizes")
    parser.add_argument("--samples", type=int, default=None, help="default 60000 (--cpu: 128)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None)
    parser.add_argument("--models", nargs="+", default=["readme", "best"])
    parser.add_argument("--no-torch", action="store_true", help="convnet only")
    parser.add_argument("--no-mixed", action="store_true", help="skip mixed precision")
    parser.add_argument("--kernels", action="store_true", help="time the fused kernels (GPU)")
    parser.add_argument("--anatomy", action="store_true", help="host vs GPU time of one step (GPU)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="epochs timed per row at the largest batch size"
    )
    parser.add_argument("--json", type=pathlib.Path, help="write the results here")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    xp = numpy if args.cpu else backend.array_module("cuda")  # a clear error without a GPU
    samples = args.samples or (128 if args.cpu else 60_000)
    batch_sizes = args.batch_sizes or ([64] if args.cpu else [64, 512])
    print(f"device: {backend.device_name(xp)}")

    torch = None
    if not args.no_torch:
        import torch

        torch.backends.cudnn.benchmark = True
        if args.cpu:
            torch.set_num_threads(2)
        tdev = "cpu" if args.cpu else "cuda"
        where = torch.cuda.get_device_name() if tdev == "cuda" else "CPU"
        print(f"torch {torch.__version__} on {where}")
        print(f"torch setup: {torch_setup(torch, on_gpu=not args.cpu)}")
    strict_fp32_too = torch is not None and not args.cpu  # TF32 exists only on a GPU
    print(f"float32 arithmetic: {float32_math(torch, on_gpu=not args.cpu)}")

    found = {name: preset_layers(name) for name in ("readme", "best")}
    models = {name: (lambda layers=layers: list(layers)) for name, (layers, _) in found.items()}
    for name, (_, source) in found.items():
        print(f"{name} model: {source}")
    fit_mixed = supports_precision_option()
    mixed_how = (
        "Model.fit(precision='mixed')"
        if fit_mixed
        else "custom loop (Model has no precision option)"
    )
    print(f"mixed precision timed with: {mixed_how}")

    x, y = mnist_like(xp, samples)
    if torch is not None:
        tx = torch.as_tensor(backend.to_host(x), device=tdev)
        ty = torch.as_tensor(backend.to_host(y), device=tdev)

    results = []
    report = {
        "device": backend.device_name(xp),
        "float32_math": float32_math(torch, on_gpu=not args.cpu),
        "torch_setup": None if torch is None else torch_setup(torch, on_gpu=not args.cpu),
        "models": {name: source for name, (_, source) in found.items()},
        "samples": samples,
        "repeats": args.repeats,
        "epochs": results,
        "errors": [],
    }

    def section(what: str, run: Callable[[], None]) -> None:
        """run(); a failure is printed and recorded, and the benchmark goes on."""
        try:
            run()
        except Exception as error:
            text = traceback.format_exc()
            print(f"\n{what} FAILED: {error!r}\n{text}", flush=True)
            report["errors"].append({"section": what, "error": repr(error), "traceback": text})
        write_report(args.json, report)

    def median_of(measure: Callable[[], float], batch: int) -> tuple[float, float]:
        """(median, fastest) of `measure()`'s seconds, over --repeats runs at the largest
        batch size and one run at the others."""
        repeats = args.repeats if batch == max(batch_sizes) else 1
        times = [measure() for _ in range(repeats)]
        return statistics.median(times), min(times)

    header = (
        f"{'model':7} {'batch':>5} {'variant':24} {'convnet s':>10} {'torch s':>9} {'ratio':>6}"
    )
    if strict_fp32_too:
        header += f" {'fp32 s':>9} {'ratio':>6}"
    torch_times: dict[tuple, tuple[float, float]] = {}  # rows share PyTorch's epochs

    def torch_time(name: str, batch: int, *, amp: bool, tf32: bool = True):
        """PyTorch's (median, fastest) seconds for an epoch, measured once per setting."""
        key = (name, batch, amp, tf32)
        if key not in torch_times:
            measure = partial(torch_epoch, torch, models[name](), tx, ty, batch, amp=amp)
            with contextlib.nullcontext() if tf32 else torch_full_fp32(torch):
                torch_times[key] = median_of(measure, batch)
        return torch_times[key]

    def epoch_row(name: str, batch: int, label: str, how: str, mixed: bool) -> None:
        loop = how == "loop" or (mixed and not fit_mixed)
        epoch = convnet_loop_epoch if loop else convnet_fit_epoch
        measure = partial(epoch, xp, models[name](), x, y, batch, mixed=mixed)
        seconds, fastest = median_of(measure, batch)
        row = {"model": name, "batch": batch, "variant": label, "convnet_s": seconds,
               "convnet_min_s": fastest}  # fmt: skip
        if torch is not None:
            row["torch_s"], row["torch_min_s"] = torch_time(name, batch, amp=mixed)
            row["ratio"] = seconds / row["torch_s"]
        if strict_fp32_too and not mixed:
            row["torch_fp32_s"], row["torch_fp32_min_s"] = torch_time(
                name, batch, amp=False, tf32=False
            )
            row["ratio_fp32"] = seconds / row["torch_fp32_s"]
        results.append(row)
        t = f"{row['torch_s']:9.3f} {row['ratio']:6.2f}" if torch is not None else ""
        if "torch_fp32_s" in row:
            t += f" {row['torch_fp32_s']:9.3f} {row['ratio_fp32']:6.2f}"
        print(f"{name:7} {batch:5d} {label:24} {seconds:10.3f} {t}", flush=True)

    def fast_path_off_row(name: str, batch: int, off: str, switch: str, slow: str) -> None:
        label = f"float32 fit, {off}"
        layers = models[name]()
        seconds = with_switch(switch, slow, convnet_fit_epoch, xp, layers, x, y, batch, mixed=False)
        results.append({"model": name, "batch": batch, "variant": label, "convnet_s": seconds})
        print(f"{name:7} {batch:5d} {label:24} {seconds:10.3f}", flush=True)

    repeats = f"medians of {args.repeats} at batch {max(batch_sizes)}"
    print(f"\none epoch of {samples} samples ({repeats})\n{header}")
    variants = [("float32 fit", "fit", False), ("float32 loop", "loop", False)]
    if not args.no_mixed:
        variants.append(("mixed " + ("fit" if fit_mixed else "loop"), "fit", True))
    for name in args.models:
        for batch in batch_sizes:
            for label, how, mixed in variants:
                section(f"{name} batch {batch} {label}",
                        partial(epoch_row, name, batch, label, how, mixed))  # fmt: skip
            if args.kernels and not args.cpu and batch == max(batch_sizes):
                # the whole epoch again with one fast path switched to the array code: what
                # each kernel buys in a real step, not only in isolation
                for off, switch, slow in FAST_PATHS_OFF:
                    section(f"{name} batch {batch} float32 fit, {off}",
                            partial(fast_path_off_row, name, batch, off, switch, slow))  # fmt: skip

    def kernels() -> None:
        print("\neach fused kernel against the array code it replaces: GPU ms, host us per call")
        columns = f"{'fused ms':>9} {'ref ms':>9} {'fused us':>9} {'ref us':>9}"
        print(f"{'kernel':20} {'shape':22} {columns}")
        report["kernels"] = bench_kernels(xp)
        for row in report["kernels"]:
            gpu_ms = f"{row['fused_ms']:9.4f} {row['ref_ms']:9.4f}"
            host_us = f"{row['fused_host_us']:9.1f} {row['ref_host_us']:9.1f}"
            print(f"{row['kernel']:20} {row['shape']:22} {gpu_ms} {host_us}")

    def call_costs() -> None:
        print("\none call of each kind a step makes (README model, batch 512)")
        print(f"{'call':36} {'host us':>8} {'GPU us':>8}")
        report["call_costs"] = bench_call_costs(xp)
        for row in report["call_costs"]:
            print(f"{row['call']:36} {row['host_us']:8.1f} {row['gpu_us']:8.1f}")

    def anatomy() -> None:
        batch = max(batch_sizes)
        print(f"\none float32 step at batch {batch}, queued while the GPU is held")
        print(f"{'model':7} {'side':8} {'host ms':>8} {'GPU ms':>7}")
        torch_data = (tx, ty) if torch is not None else None
        layers_of = lambda name: models[name]()  # noqa: E731
        report["step_anatomy"] = bench_anatomy(xp, torch, layers_of, args.models, batch, torch_data)
        for row in report["step_anatomy"]:
            if row["host_ms"] is None:
                print(f"{row['model']:7} {row['side']:8} (the hold did not cover the step)")
                continue
            print(f"{row['model']:7} {row['side']:8} {row['host_ms']:8.2f} {row['gpu_ms']:7.2f}")

    if args.kernels and not args.cpu:
        section("kernels", kernels)
        section("call costs", call_costs)
    if args.anatomy and not args.cpu:
        section("step anatomy", anatomy)
    if report["errors"]:
        print(f"\n{len(report['errors'])} section(s) failed: "
              f"{', '.join(e['section'] for e in report['errors'])}")  # fmt: skip
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
