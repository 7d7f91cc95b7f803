"""The programs' GPU paths, run on NumPy dressed as CuPy, so they need no GPU.

Each program runs as a process through a short launcher that installs the stand-in of
packages/convnet-core/tests/cupy_on_numpy.py as `cupy` first: `--device cuda` and
benchmarks/bench_gpu.py then take the code paths they take on a GPU, kernels compiled from
their CUDA source by g++. A crash there would otherwise first show on a machine with a GPU.
Timings mean nothing here; what is checked is that every path runs to its end. (Each
kernel launch runs once: the launch checks run in the tests-cuda-on-cpu session.)
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CORE_TESTS = ROOT / "packages" / "convnet-core" / "tests"
STAND_IN = "NumPy dressed as CuPy"

LAUNCHER = f"""
import pathlib, runpy, sys, tempfile
sys.path.insert(0, {str(CORE_TESTS)!r})
from cupy_on_numpy import cupy_on_numpy_installed
with cupy_on_numpy_installed(pathlib.Path(tempfile.mkdtemp()), check_launches=False):
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
"""


def have_cpp_compiler() -> bool:
    sys.path.insert(0, str(CORE_TESTS))
    try:
        from cuda_source_on_cpu import cpp_compiler
    finally:
        sys.path.remove(str(CORE_TESTS))
    return cpp_compiler() is not None


pytestmark = pytest.mark.skipif(
    not have_cpp_compiler(), reason="no C++ compiler for the kernels (apt-get install g++)"
)


def run_on_stand_in(script: pathlib.Path, *args, cwd: pathlib.Path, timeout: float = 300):
    environment = {**os.environ, "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-c", LAUNCHER, str(script), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
    )


def test_bench_gpu_runs_its_gpu_path(tmp_path):
    result = run_on_stand_in(
        ROOT / "benchmarks" / "bench_gpu.py",
        *("--samples", "200", "--batch-sizes", "32", "64", "--no-torch", "--kernels"),
        *("--repeats", "2", "--json", tmp_path / "bench.json"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["device"].startswith(STAND_IN)
    assert report["errors"] == [] and report["repeats"] == 2
    variants = {(r["model"], r["batch"], r["variant"]) for r in report["epochs"]}
    for model in ("readme", "best"):
        for batch in (32, 64):
            assert (model, batch, "float32 fit") in variants
            assert (model, batch, "float32 loop") in variants
            assert (model, batch, "mixed fit") in variants
        assert (model, 64, "float32 fit, col2im loop") in variants  # at the largest batch
        assert (model, 64, "float32 fit, softmax xent arrays") in variants
        assert (model, 64, "float32 fit, maxpool arrays") in variants
        assert (model, 64, "float32 fit, im2col copies") in variants
        assert (model, 64, "float32 fit, batchnorm arrays") in variants
    assert all(row["convnet_s"] > 0 for row in report["epochs"])
    timed_twice = [row for row in report["epochs"] if "convnet_min_s" in row]
    assert len(timed_twice) == 12  # 2 models x 2 batches x 3 variants (2 runs at batch 64)
    assert all(0 < row["convnet_min_s"] <= row["convnet_s"] for row in timed_twice)
    kernels = [row["kernel"] for row in report["kernels"]]
    assert kernels.count("adam") == 3 and kernels.count("col2im gather|loop") == 5
    assert kernels.count("relu forward") == kernels.count("relu backward") == 2
    assert kernels.count("softmax xent") == 2
    assert kernels.count("maxpool forward") == kernels.count("maxpool backward") == 3
    assert kernels.count("im2col gather|copies") == 3
    assert kernels.count("batchnorm forward") == kernels.count("batchnorm backward") == 3
    assert kernels.count("unscale+check") == 2 and "col2im float16 widened|loop" in kernels
    assert "maxpool float16 forward" in kernels and "maxpool float16 backward" in kernels
    for row in report["kernels"]:
        assert row["fused_host_us"] > 0 and row["ref_host_us"] > 0
    calls = {row["call"]: row for row in report["call_costs"]}
    assert len(calls) == 14 and "matmul (16, 72) @ (72, N*196)" in calls
    assert all(row["host_us"] > 0 for row in calls.values())


def test_train_and_evaluate_with_device_cuda(tmp_path):
    quick = ("--device", "cuda", "--limit-train", "600", "--limit-test", "200", "--seed", "3")
    trained = run_on_stand_in(
        ROOT / "apps" / "train_mnist.py", *quick, "--epochs", "1", "--out", "m.h5", cwd=tmp_path
    )
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert f"device: {STAND_IN}" in trained.stdout
    assert (tmp_path / "m.h5").is_file()

    evaluated = run_on_stand_in(
        ROOT / "apps" / "evaluate.py", "m.h5", "--device", "cuda", "--limit-test", "200",
        cwd=tmp_path,
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
    accuracy = float(re.search(r"test accuracy: ([\d.]+)%", evaluated.stdout).group(1))
    assert 30.0 < accuracy <= 100.0


def test_each_fast_path_saves_calls_into_cupy(tmp_path):
    result = subprocess.run(
        [sys.executable, ROOT / "benchmarks" / "gpu_calls.py", "--batch", "32", "--json",
         tmp_path / "calls.json"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    rows = json.loads((tmp_path / "calls.json").read_text())["per_step"]
    for model in ("readme", "best"):
        counts = {r["setting"]: r["calls"] + r["kernels"] for r in rows if r["model"] == model}
        fastest = counts.pop("all fast paths")
        # mixed precision's casts, loss scaling and skipped-step selects, within bounds
        assert fastest < counts.pop("mixed precision") < 2 * fastest, model
        assert set(counts) == {
            "softmax xent arrays",
            "maxpool arrays",
            "col2im loop",
            "im2col copies",
            "batchnorm arrays",
        }
        unused = {"batchnorm arrays"} if model == "readme" else set()  # it has no BatchNorm
        for setting, count in counts.items():
            if setting in unused:
                assert fastest == count, (model, setting, fastest, count)
            else:
                assert fastest < count, (model, setting, fastest, count)

    by_call = subprocess.run(
        [sys.executable, ROOT / "benchmarks" / "gpu_calls.py", "--batch", "32", "--by-call",
         "--models", "readme"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert by_call.returncode == 0, by_call.stdout + by_call.stderr
    lines = [line.split(maxsplit=1) for line in by_call.stdout.splitlines()[1:] if line.strip()]
    counts = {name: float(n) for n, name in lines}
    readme = next(r for r in rows if r["model"] == "readme" and r["setting"] == "all fast paths")
    assert counts.pop("in all") == sum(counts.values()) == readme["calls"] + readme["kernels"]
    assert counts["__matmul__"] >= 8  # two convs and two dense layers, forward and backward
    assert sum(n for name, n in counts.items() if name.startswith("kernel ")) == readme["kernels"]
