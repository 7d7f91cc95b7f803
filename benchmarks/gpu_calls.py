"""Calls into CuPy per training step, counted without a GPU.

A small network's training step on a GPU is bound by launches rather than arithmetic:
every CuPy call costs the host microseconds, whatever the size of its arrays. This script
runs `Model.fit` on NumPy dressed as CuPy (packages/convnet-core/tests/cupy_on_numpy.py)
and counts, per step, the calls the step makes into the array module (functions, array
methods and operators, indexing) and the fused kernels it launches. The count is exact
and the same on every machine; what each call costs is for `bench_gpu.py --anatomy` to
say on a GPU.

Each model is counted with every fast path on, then with each of them switched back to
its array code (`bench_gpu.FAST_PATHS_OFF`; ReLU and Adam have no switch), then in mixed
precision (`compile(precision="mixed")`) with every fast path on:

    python benchmarks/gpu_calls.py                    # README and best models, batch 512
    python benchmarks/gpu_calls.py --json calls.json  # also write the counts as JSON
    python benchmarks/gpu_calls.py --by-call          # each call's count, all fast paths on
    python benchmarks/gpu_calls.py --by-call --precision mixed   # the same, mixed precision
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
for path in [*sorted((ROOT / "packages").glob("*/src")), ROOT / "packages/convnet-core/tests"]:
    if str(path) not in sys.path:  # run from a checkout: the packages and the stand-in
        sys.path.insert(0, str(path))

import convnet_core as cn  # noqa: E402
import numpy  # noqa: E402
from bench_gpu import FAST_PATHS_OFF, with_switch  # noqa: E402
from cupy_on_numpy import cupy_on_numpy_installed  # noqa: E402
from device_arrays import counting_calls  # noqa: E402


def stand_in():
    """The CuPy stand-in installed as `cupy`, each kernel launch run once (its launch checks
    are for the tests; counting needs no more than the calls)."""
    build_dir = pathlib.Path(tempfile.mkdtemp(prefix="gpu_calls_"))
    return cupy_on_numpy_installed(build_dir, check_launches=False)


def calls_per_step(layers, batch: int, precision: str = "float32") -> tuple[float, float]:
    """(calls into the array module, kernel launches) per step of Model.fit at `batch`."""
    by_call = calls_per_step_by_name(layers, batch, precision)
    kernels = sum(n for name, n in by_call.items() if name.startswith("kernel "))
    return sum(by_call.values()) - kernels, kernels


def calls_per_step_by_name(layers, batch: int, precision: str = "float32") -> dict[str, float]:
    """Calls per step of Model.fit at `batch`, by name (a function such as `empty`, an
    array method or operator such as `__matmul__`, or `kernel <name>` for a fused kernel):
    the counts of a 4-step epoch less those of a 2-step one, halved (so the per-epoch work
    cancels out). `precision` is Model.compile's ("float32" or "mixed")."""
    model = cn.Model(layers, seed=0, device="cuda")
    model.compile(loss="categorical_crossentropy", optimizer="adam", lr=1e-3, precision=precision)
    rng = numpy.random.default_rng(0)
    x = rng.random((4 * batch, 1, 28, 28), dtype=numpy.float32)  # host
    y = rng.integers(0, 10, 4 * batch)  # host
    model.fit((x[:batch], y[:batch]), epochs=1, batch_size=batch, verbose=False)  # warm-up
    counts = []
    for steps in (2, 4):
        with counting_calls() as calls:
            data = (x[: steps * batch], y[: steps * batch])
            model.fit(data, epochs=1, batch_size=batch, verbose=False)
        counts.append(dict(calls))
    two, four = counts
    per_step = {name: (four.get(name, 0) - two.get(name, 0)) / 2 for name in {*two, *four}}
    return {name: n for name, n in per_step.items() if n}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--models", nargs="+", default=["readme", "best"])
    parser.add_argument("--json", type=pathlib.Path, help="write the counts here")
    parser.add_argument(
        "--by-call", action="store_true", help="each model's calls by name, all fast paths on"
    )
    parser.add_argument(
        "--precision", choices=["float32", "mixed"], default="float32", help="for --by-call"
    )
    args = parser.parse_args(argv)
    if args.by_call:
        return print_by_call(args.models, args.batch, args.precision)

    rows = []
    print(f"calls into CuPy per training step (Model.fit, Adam), batch {args.batch}")
    print(f"{'model':7} {'setting':22} {'calls':>6} {'fused kernels':>14}")
    with stand_in():
        for name in args.models:
            layers = getattr(cn.presets, f"{name}_layers")()
            settings = [("all fast paths", calls_per_step, ())]
            settings += [
                (label, with_switch, (switch, value, calls_per_step))
                for label, switch, value in FAST_PATHS_OFF
            ]
            settings += [("mixed precision", calls_per_step, ())]
            for label, run, head in settings:
                precision = "mixed" if label == "mixed precision" else "float32"
                calls, kernels = run(*head, layers, args.batch, precision)
                rows.append({"model": name, "setting": label, "calls": calls, "kernels": kernels})
                print(f"{name:7} {label:22} {calls:6.0f} {kernels:14.0f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"batch": args.batch, "per_step": rows}, indent=2))
    return 0


def print_by_call(models: list[str], batch: int, precision: str) -> int:
    """Print each model's calls per step by name, most frequent first."""
    with stand_in():
        for name in models:
            layers = getattr(cn.presets, f"{name}_layers")()
            by_call = calls_per_step_by_name(layers, batch, precision)
            print(
                f"{name} model, batch {batch}, {precision}: calls into CuPy per training step, "
                "by name"
            )
            for call, n in sorted(by_call.items(), key=lambda item: (-item[1], item[0])):
                print(f"  {n:5.0f}  {call}")
            print(f"  {sum(by_call.values()):5.0f}  in all\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
