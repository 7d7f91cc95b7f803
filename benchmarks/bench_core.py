"""Forward + backward of a small CNN: convnet (NumPy) next to PyTorch CPU.

The model: the README model, convnet_core.presets.readme_layers() (Conv2D(8) relu MaxPool2D
Conv2D(16) relu MaxPool2D Flatten Dense(64) relu Dense(10), 'same' padding) with softmax
cross-entropy, on a 64x1x28x28 float32 batch. One "step" is the forward pass, the loss and
the backward pass (all parameter gradients, no input gradient); no optimizer update.

Each side runs in its own subprocess with 2 threads (PyTorch's OpenMP threads keep
spinning after each op and would slow NumPy's BLAS threads in a shared process), and the
two alternate for several rounds, so that a noisy machine hurts both alike. The figures are
the medians over rounds of each round's median time per step; the ratio is convnet/torch.

    python benchmarks/bench_core.py                 # 5 rounds
    python benchmarks/bench_core.py --rounds 9 --layer   # plus a per-layer breakdown

OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are removed from the convnet subprocess's environment:
some machines set them for old OpenBLAS builds, and they slow a current NumPy.

`--tune-malloc` runs both sides with glibc's malloc told to keep freed memory: each worker
calls `convnet_core.backend.tune_allocator()` first (mallopt of the mmap and trim
thresholds). By default glibc returns the top of its heap to the kernel after each step,
and a NumPy training step of this model then takes about 1,700 page faults (or 2,600,
depending on the process's memory layout): each round prints both sides' faults per step.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

BATCH = (64, 1, 28, 28)
THREADS = 2
SLOWING_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
CLOCK = time.perf_counter  # --cpu-time: time.process_time


def _median_ms(fn, *, repeats: int, number: int) -> float:
    """Median over `repeats` of the mean time of `number` calls of fn, in ms."""
    times = []
    for _ in range(repeats):
        start = CLOCK()
        for _ in range(number):
            fn()
        times.append((CLOCK() - start) / number * 1e3)
    return statistics.median(times)


def _time_steps(step, args) -> dict:
    """The median ms per step (see _median_ms) and the page faults per timed step."""
    faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    ms = _median_ms(step, repeats=args.repeats, number=args.number)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before
    return {"ms": ms, "faults": faults / (args.repeats * args.number)}


# --------------------------------------------------------------------------------------
# convnet side


def _convnet_setup():
    import convnet_core as cn
    import numpy as np
    from convnet_core import layers as L
    from convnet_core import losses, presets

    net = L.Sequential(presets.readme_layers())
    params, state = cn.init(net, BATCH[1:], rng=0)
    rng = np.random.default_rng(1)
    x = rng.standard_normal(BATCH).astype(np.float32)
    labels = rng.integers(0, 10, BATCH[0])

    def step():
        logits, _, cache = cn.apply(net, params, state, x, training=True, xp=np)
        _, dlogits = losses.softmax_cross_entropy(logits, labels, xp=np)
        cn.grad(net, params, cache, dlogits, xp=np, input_grad=False)

    return net, params, state, x, step


def _convnet_layers(net, params, state, x, repeats, number):
    import numpy as np

    rows = []
    for index, (layer, p, s) in enumerate(zip(net.layers, params, state, strict=True)):
        y, _, cache = layer.apply(p, s, x, training=True, rng=None, xp=np)
        dy = np.ones_like(y)
        forward = _median_ms(
            lambda layer=layer, p=p, s=s, x=x: layer.apply(p, s, x, training=True, rng=None, xp=np),
            repeats=repeats,
            number=number,
        )
        backward = _median_ms(
            lambda layer=layer, p=p, cache=cache, dy=dy, index=index: layer.grad(
                p, cache, dy, xp=np, input_grad=index > 0
            ),
            repeats=repeats,
            number=number,
        )
        rows.append([f"{index} {type(layer).__name__}", forward, backward])
        x = y
    return rows


def _tune_malloc(args) -> None:
    """--tune-malloc: the same allocator setting on both sides (a no-op off glibc)."""
    if args.tune_malloc:
        from convnet_core.backend import tune_allocator

        tune_allocator()


def _worker_convnet(args) -> dict:
    from threadpoolctl import threadpool_info, threadpool_limits

    _tune_malloc(args)
    threadpool_limits(THREADS)
    net, params, state, x, step = _convnet_setup()
    for _ in range(args.warmup):
        step()
    result = _time_steps(step, args)
    result["blas"] = [
        f"{i['internal_api']} {i.get('version')} {i.get('architecture')} x{i['num_threads']}"
        for i in threadpool_info()
    ]
    if args.layer:
        result["layers"] = _convnet_layers(net, params, state, x, args.repeats, args.number)
    return result


# --------------------------------------------------------------------------------------
# PyTorch side


def _torch_setup():
    import torch
    import torch_twins
    from torch import nn

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    model = torch_twins.readme_model(nn)
    x = torch.randn(BATCH)
    labels = torch.randint(0, 10, (BATCH[0],))
    loss_fn = nn.CrossEntropyLoss()

    def step():
        model.zero_grad(set_to_none=True)
        loss_fn(model(x), labels).backward()

    return torch, model, x, step


def _torch_layers(torch, model, x, repeats, number):
    rows = []
    for index, layer in enumerate(model):
        inp = x.detach().requires_grad_(index > 0)
        y = layer(inp)
        dy = torch.ones_like(y)

        def forward(layer=layer, inp=inp):
            with torch.no_grad():
                layer(inp)

        def both(layer=layer, inp=inp, dy=dy):
            layer.zero_grad(set_to_none=True)
            if inp.requires_grad or any(p.requires_grad for p in layer.parameters()):
                layer(inp).backward(dy)
            else:
                layer(inp)

        fwd = _median_ms(forward, repeats=repeats, number=number)
        total = _median_ms(both, repeats=repeats, number=number)
        rows.append([f"{index} {type(layer).__name__}", fwd, max(total - fwd, 0.0)])
        x = y.detach()
    return rows


def _worker_torch(args) -> dict:
    _tune_malloc(args)
    torch, model, x, step = _torch_setup()
    for _ in range(args.warmup):
        step()
    result = _time_steps(step, args)
    result["version"] = torch.__version__
    if args.layer:
        result["layers"] = _torch_layers(torch, model, x, args.repeats, args.number)
    return result


# --------------------------------------------------------------------------------------
# the driver


def _run_worker(side: str, args) -> dict:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(THREADS)
    env["CONVNET_BENCH_THREADS"] = str(THREADS)
    if side == "convnet":
        for name in SLOWING_VARIABLES:
            env.pop(name, None)
        env["OPENBLAS_NUM_THREADS"] = str(THREADS)
    command = [
        sys.executable,
        __file__,
        "--worker",
        side,
        "--repeats",
        str(args.repeats),
        "--number",
        str(args.number),
        "--warmup",
        str(args.warmup),
    ]
    if args.layer:
        command.append("--layer")
    if args.cpu_time:
        command.append("--cpu-time")
    if args.tune_malloc:
        command.append("--tune-malloc")
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the {side} worker failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _print_layers(convnet_rows, torch_rows) -> None:
    print("\nper layer, ms (forward / backward), last round:")
    print(f"{'layer':<22}{'convnet fwd':>12}{'bwd':>8}   {'torch fwd':>10}{'bwd':>8}")
    for mine, theirs in zip(convnet_rows, torch_rows, strict=False):
        print(
            f"{mine[0]:<22}{mine[1]:>12.3f}{mine[2]:>8.3f}   {theirs[1]:>10.3f}{theirs[2]:>8.3f}"
            f"   ({theirs[0]})"
        )


def main(argv: list[str] | None = None) -> int:
    global THREADS, CLOCK
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--number", type=int, default=20, help="steps per timing")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="threads on each side")
    parser.add_argument("--layer", action="store_true", help="also time each layer")
    parser.add_argument(
        "--tune-malloc", action="store_true", help="both sides: keep freed memory (no page faults)"
    )
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time CPU seconds of the process instead of wall time (with --threads 1, a "
        "steadier measure on a machine busy with other work)",
    )
    parser.add_argument("--worker", choices=["convnet", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    CLOCK = time.process_time if args.cpu_time else time.perf_counter
    THREADS = int(os.environ.get("CONVNET_BENCH_THREADS", args.threads))

    if args.worker == "convnet":
        print(json.dumps(_worker_convnet(args)))
        return 0
    if args.worker == "torch":
        print(json.dumps(_worker_torch(args)))
        return 0

    try:
        import torch  # noqa: F401
    except ImportError:
        print("PyTorch is not installed: install torch==2.13.0 (CPU) to compare")
        return 1
    removed = [name for name in SLOWING_VARIABLES if name in os.environ]
    print(
        f"model: conv8-relu-pool-conv16-relu-pool-dense64-relu-dense10, batch {BATCH}, "
        f"float32, {THREADS} threads; convnet env without {', '.join(SLOWING_VARIABLES)}"
        f" (set here: {', '.join(removed) or 'neither'})"
        + ("; malloc tuned on both sides" if args.tune_malloc else "")
        + ("; CPU time" if args.cpu_time else "; wall time")
    )
    mine, theirs = [], []
    last = {}
    for round_index in range(args.rounds):
        last["convnet"] = _run_worker("convnet", args)
        last["torch"] = _run_worker("torch", args)
        mine.append(last["convnet"]["ms"])
        theirs.append(last["torch"]["ms"])
        print(
            f"round {round_index + 1}: convnet {mine[-1]:.2f} ms  torch {theirs[-1]:.2f} ms  "
            f"ratio {mine[-1] / theirs[-1]:.2f}   page faults per step: "
            f"convnet {last['convnet']['faults']:.0f}, torch {last['torch']['faults']:.0f}",
            flush=True,
        )
    convnet_ms, torch_ms = statistics.median(mine), statistics.median(theirs)
    print(f"BLAS: {', '.join(last['convnet']['blas'])}; torch {last['torch']['version']}")
    print(f"convnet  {convnet_ms:.2f} ms per step (median of {args.rounds} rounds)")
    print(f"torch    {torch_ms:.2f} ms per step (median of {args.rounds} rounds)")
    print(f"ratio    {convnet_ms / torch_ms:.2f} (convnet / torch; target <= 1.5)")
    print(
        f"fastest rounds (less disturbed by other load): convnet {min(mine):.2f} ms, "
        f"torch {min(theirs):.2f} ms, ratio {min(mine) / min(theirs):.2f}"
    )
    if args.layer:
        _print_layers(last["convnet"]["layers"], last["torch"]["layers"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
