"""Calls into CuPy per training step, counted without a GPU.

A small network's training step on a GPU is bound by launches rather than arithmetic:
every CuPy call costs the host microseconds, whatever the size of its arrays. This script
runs `Model.fit` on NumPy dressed as CuPy (packages/convnet-core/tests/cupy_on_numpy.py)
and counts, per step, the calls the step makes into the array module (functions, array
methods and operators, indexing) and the fused kernels it launches. The count is exact
and the same on every machine; what each call costs is for `bench_gpu.py --anatomy` to
say on a GPU.

Each model is counted with every fast path on, then with each of them switched back to
its array code (`bench_gpu.FAST_PATHS_OFF`; ReLU and Adam have no switch):

    python benchmarks/gpu_calls.py                    # README and best models, batch 512
    python benchmarks/gpu_calls.py --json calls.json  # also write the counts as JSON
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


def calls_per_step(layers, batch: int) -> tuple[float, float]:
    """(calls into the array module, kernel launches) per step of Model.fit at `batch`:
    the counts of a 4-step epoch less those of a 2-step one, halved (so the per-epoch work
    cancels out)."""
    model = cn.Model(layers, seed=0, device="cuda")
    model.compile(loss="categorical_crossentropy", optimizer="adam", lr=1e-3)
    rng = numpy.random.default_rng(0)
    x = rng.random((4 * batch, 1, 28, 28), dtype=numpy.float32)  # host
    y = rng.integers(0, 10, 4 * batch)  # host
    model.fit((x[:batch], y[:batch]), epochs=1, batch_size=batch, verbose=False)  # warm-up
    totals = []
    for steps in (2, 4):
        with counting_calls() as calls:
            data = (x[: steps * batch], y[: steps * batch])
            model.fit(data, epochs=1, batch_size=batch, verbose=False)
        kernels = sum(n for name, n in calls.items() if name.startswith("kernel "))
        totals.append((sum(calls.values()) - kernels, kernels))
    (calls_2, kernels_2), (calls_4, kernels_4) = totals
    return (calls_4 - calls_2) / 2, (kernels_4 - kernels_2) / 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--models", nargs="+", default=["readme", "best"])
    parser.add_argument("--json", type=pathlib.Path, help="write the counts here")
    args = parser.parse_args(argv)

    rows = []
    print(f"calls into CuPy per training step (Model.fit, Adam), batch {args.batch}")
    print(f"{'model':7} {'setting':22} {'calls':>6} {'fused kernels':>14}")
    with cupy_on_numpy_installed(pathlib.Path(tempfile.mkdtemp(prefix="gpu_calls_"))):
        for name in args.models:
            layers = getattr(cn.presets, f"{name}_layers")()
            settings = [("all fast paths", calls_per_step, ())]
            settings += [
                (label, with_switch, (switch, value, calls_per_step))
                for label, switch, value in FAST_PATHS_OFF
            ]
            for label, run, head in settings:
                calls, kernels = run(*head, layers, args.batch)
                rows.append({"model": name, "setting": label, "calls": calls, "kernels": kernels})
                print(f"{name:7} {label:22} {calls:6.0f} {kernels:14.0f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"batch": args.batch, "per_step": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
