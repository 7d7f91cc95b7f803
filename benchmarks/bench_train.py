"""One training epoch of the README model: `Model.fit` next to PyTorch CPU.

The model: convnet_core.presets.readme_layers(), i.e. Conv2D(8, 3x3) relu MaxPool2D
Conv2D(16, 3x3) relu MaxPool2D Flatten Dense(64) relu Dense(10) with 'same' padding, softmax
cross-entropy, Adam(lr=1e-3), batches of 64, shuffled, on 60,000 MNIST-shaped samples
(random float32 images in [0, 1] with random labels: the speed does not depend on the
values). Each side runs in its own subprocess with 2 threads and reports its seconds per
epoch and its peak resident memory (ru_maxrss, which includes the 188 MB of training
images each side holds).

    python benchmarks/bench_train.py                   # one timed epoch per side
    python benchmarks/bench_train.py --repeats 3       # best of three epochs
    python benchmarks/bench_train.py --samples 6000    # a quick look
    python benchmarks/bench_train.py --tune-malloc     # both sides: glibc keeps freed memory

Targets: convnet/torch <= 1.5, peak RSS <= 400 MB.

OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are removed from the convnet subprocess's environment:
some machines set them for old OpenBLAS builds, and they slow a current NumPy.

`--tune-malloc` makes each worker call `convnet_core.backend.tune_allocator()` first (the
same glibc malloc setting on both sides), which spares NumPy about 1,700 page faults per step.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time

THREADS = 2
BATCH = 64
SLOWING_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def make_data(samples: int):
    """Random images (N, 1, 28, 28) float32 in [0, 1) and labels (N,) int64 in 0..9."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.random((samples, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, samples)
    return x, y


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_convnet(samples: int, repeats: int) -> dict:
    from convnet_core import Model, presets

    x, y = make_data(samples)
    model = Model(presets.readme_layers(), seed=0, device="cpu")
    model.compile(loss="categorical_crossentropy", optimizer="adam", lr=1e-3)
    model.fit((x[:1280], y[:1280]), epochs=1, batch_size=BATCH, verbose=False)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.fit((x, y), epochs=1, batch_size=BATCH, verbose=False)
        times.append(time.perf_counter() - start)
    return {"seconds": min(times), "peak_rss_mb": peak_rss_mb(), "loss": model.history["loss"][-1]}


def run_torch(samples: int, repeats: int) -> dict:
    import torch
    import torch_twins
    from torch import nn

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    x, y = make_data(samples)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    model = torch_twins.readme_model(nn)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()

    def epoch(n):
        order = torch.randperm(n)
        total = torch.zeros(())
        for start in range(0, n, BATCH):
            index = order[start : start + BATCH]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[index]), y[index])
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(index)
        return float(total) / n

    epoch(1280)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        loss = epoch(samples)
        times.append(time.perf_counter() - start)
    return {
        "seconds": min(times),
        "peak_rss_mb": peak_rss_mb(),
        "loss": loss,
        "version": torch.__version__.split("+")[0],
    }


def worker_env(side: str) -> dict:
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = str(THREADS)
    if side == "convnet":
        for name in SLOWING_VARIABLES:
            env.pop(name, None)
    return env


def run_side(side: str, samples: int, repeats: int, tune_malloc: bool) -> dict:
    command = [
        sys.executable,
        __file__,
        "--worker",
        side,
        "--samples",
        str(samples),
        "--repeats",
        str(repeats),
    ]
    if tune_malloc:
        command.append("--tune-malloc")
    done = subprocess.run(
        command, env=worker_env(side), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"the {side} worker failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=60_000)
    parser.add_argument("--repeats", type=int, default=1, help="timed epochs (best is shown)")
    parser.add_argument(
        "--tune-malloc", action="store_true", help="both sides: keep freed memory (no page faults)"
    )
    parser.add_argument("--worker", choices=("convnet", "torch"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        if args.tune_malloc:
            from convnet_core.backend import tune_allocator

            tune_allocator()
        run = run_convnet if args.worker == "convnet" else run_torch
        print(json.dumps(run(args.samples, args.repeats)))
        return 0

    removed = [name for name in SLOWING_VARIABLES if name in os.environ]
    print(
        f"bench_train: one epoch of the README model, {args.samples:,} samples, batch {BATCH},"
        f" Adam 1e-3, {THREADS} threads per side, each side in its own process"
        + ("; malloc tuned on both sides" if args.tune_malloc else "")
    )
    print(
        "convnet worker: OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset "
        f"({', '.join(removed) + ' were set here' if removed else 'neither was set here'})"
    )
    ours = run_side("convnet", args.samples, args.repeats, args.tune_malloc)
    has_torch = importlib.util.find_spec("torch") is not None
    theirs = run_side("torch", args.samples, args.repeats, args.tune_malloc) if has_torch else None
    print(
        f"  convnet Model.fit : {ours['seconds']:7.2f} s/epoch   peak RSS "
        f"{ours['peak_rss_mb']:6.0f} MB   (loss {ours['loss']:.4f})"
    )
    if theirs is None:
        print("  PyTorch           : not installed (pip install torch==2.13.0, the CPU build)")
        return 0
    print(
        f"  PyTorch {theirs['version']:<10}: {theirs['seconds']:7.2f} s/epoch   peak RSS "
        f"{theirs['peak_rss_mb']:6.0f} MB   (loss {theirs['loss']:.4f})"
    )
    ratio = ours["seconds"] / theirs["seconds"]
    print(f"  ratio convnet/torch: {ratio:.2f}  (target <= 1.5; convnet peak RSS target <= 400 MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
