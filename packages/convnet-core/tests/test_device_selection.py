"""Choosing NumPy or CuPy: NN_DISABLE_CUDA, NN_FORCE_CUDA, device="auto"/"cpu"/"cuda".

A machine without a GPU cannot show what happens when CuPy imports but has no usable
device (test_backend.py covers CuPy being absent), so these tests put a fake `cupy` module
into sys.modules: one that has no device,
one whose driver fails, one that works. The real CuPy (where there is one) is restored
after each test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import types

import numpy
import pytest
from convnet_core import backend


def fake_cupy(*, devices=1, error=None, doubles=2):
    """A stand-in `cupy`: `devices` GPUs, or `error` raised when asked how many; on a
    working one `(arange(3) * doubles).sum()` is computed (6 when correct)."""
    calls = {"getDeviceCount": 0}

    def get_device_count():
        calls["getDeviceCount"] += 1
        if error is not None:
            raise error
        return devices

    module = types.ModuleType("cupy")
    module.cuda = types.SimpleNamespace(
        runtime=types.SimpleNamespace(getDeviceCount=get_device_count)
    )
    module.arange = lambda n: numpy.arange(n) * (doubles // 2)
    module.calls = calls
    return module


@pytest.fixture
def fresh_backend(monkeypatch):
    """Forget what the backend found before (and after: the real answer comes back)."""
    monkeypatch.delenv("NN_DISABLE_CUDA", raising=False)
    monkeypatch.delenv("NN_FORCE_CUDA", raising=False)
    backend.cuda_unavailable_reason.cache_clear()
    backend._announced.clear()
    yield monkeypatch
    backend.cuda_unavailable_reason.cache_clear()
    backend._announced.clear()


class CUDARuntimeError(RuntimeError):
    pass


NO_DEVICE = CUDARuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")


def test_auto_falls_back_to_numpy_with_one_informative_line(fresh_backend, capsys):
    fresh_backend.setitem(sys.modules, "cupy", fake_cupy(error=NO_DEVICE))
    assert backend.array_module("auto") is numpy
    assert backend.array_module() is numpy
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert "CPU" in lines[0] and "NumPy" in lines[0]
    assert "cudaErrorNoDevice" in lines[0]  # says why
    assert not backend.CUDA_AVAILABLE and not backend.USE_CUDA


def test_cuda_fails_clearly_when_cupy_has_no_device(fresh_backend):
    fresh_backend.setitem(sys.modules, "cupy", fake_cupy(error=NO_DEVICE))
    with pytest.raises(RuntimeError, match=r"device='cuda'.*no GPU is usable.*cudaErrorNoDevice"):
        backend.array_module("cuda")


@pytest.mark.parametrize(
    ("fake", "reason"),
    [
        (dict(devices=0), "CuPy found no CUDA device"),
        (dict(doubles=4), "wrong result"),
        (dict(error=OSError("libcudart.so.13: cannot open shared object file")), "libcudart"),
    ],
    ids=["zero-devices", "wrong-result", "broken-driver"],
)
def test_each_kind_of_unusable_gpu_is_named(fresh_backend, fake, reason):
    fresh_backend.setitem(sys.modules, "cupy", fake_cupy(**fake))
    assert reason in backend.cuda_unavailable_reason()
    assert backend.array_module("auto") is numpy


def test_a_working_gpu_is_chosen_by_auto_and_cuda(fresh_backend, capsys):
    cupy = fake_cupy()
    fresh_backend.setitem(sys.modules, "cupy", cupy)
    assert backend.array_module("auto") is cupy
    assert backend.array_module("cuda") is cupy
    assert backend.is_cupy(backend.array_module("auto"))
    assert backend.CUDA_AVAILABLE is True and backend.USE_CUDA is True
    assert capsys.readouterr().err == ""  # nothing to say when the GPU is used


def test_cpu_never_asks_cupy(fresh_backend):
    cupy = fake_cupy()
    fresh_backend.setitem(sys.modules, "cupy", cupy)
    assert backend.array_module("cpu") is numpy
    assert cupy.calls["getDeviceCount"] == 0


def test_nn_disable_cuda_forces_numpy_for_auto_only(fresh_backend, capsys):
    cupy = fake_cupy()
    fresh_backend.setitem(sys.modules, "cupy", cupy)
    fresh_backend.setenv("NN_DISABLE_CUDA", "1")
    assert backend.array_module("auto") is numpy
    assert cupy.calls["getDeviceCount"] == 0  # not even asked
    assert not backend.USE_CUDA and backend.CUDA_AVAILABLE
    assert backend.array_module("cuda") is cupy  # an explicit request still gets the GPU
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("value", ["0", "", "no"])
def test_nn_disable_cuda_off_values(fresh_backend, value):
    cupy = fake_cupy()
    fresh_backend.setitem(sys.modules, "cupy", cupy)
    fresh_backend.setenv("NN_DISABLE_CUDA", value)
    assert backend.array_module("auto") is cupy


def test_nn_force_cuda_warns_when_impossible(fresh_backend, capsys):
    fresh_backend.setitem(sys.modules, "cupy", fake_cupy(error=NO_DEVICE))
    fresh_backend.setenv("NN_FORCE_CUDA", "1")
    with pytest.warns(RuntimeWarning, match="NN_FORCE_CUDA is set but no GPU is usable"):
        assert backend.array_module("auto") is numpy


def test_nn_force_cuda_uses_a_working_gpu(fresh_backend):
    cupy = fake_cupy()
    fresh_backend.setitem(sys.modules, "cupy", cupy)
    fresh_backend.setenv("NN_FORCE_CUDA", "1")
    assert backend.array_module("auto") is cupy


def test_conflicting_or_misspelt_switches_are_refused_with_a_working_gpu_too(fresh_backend):
    cupy = fake_cupy()
    fresh_backend.setitem(sys.modules, "cupy", cupy)
    fresh_backend.setenv("NN_FORCE_CUDA", "sure")  # once read only when there was no GPU
    with pytest.raises(ValueError, match="NN_FORCE_CUDA='sure'"):
        backend.array_module("auto")
    fresh_backend.setenv("NN_FORCE_CUDA", "1")
    fresh_backend.setenv("NN_DISABLE_CUDA", "1")
    for read in (lambda: backend.array_module("auto"), lambda: backend.USE_CUDA):
        with pytest.raises(ValueError, match="NN_DISABLE_CUDA and NN_FORCE_CUDA are both set"):
            read()
    assert backend.array_module("cuda") is cupy  # an explicit device does not read them
    assert backend.CUDA_AVAILABLE is True


# ---------------------------------------------------------------------------------------
# whole processes: `python -m convnet_core` and importing without CuPy


def run_python(code: str, tmp_path, *, cupy_source: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter whose `import cupy` finds `cupy_source`."""
    fake = tmp_path / "fake" / "cupy"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(textwrap.dedent(cupy_source))
    env = {k: v for k, v in os.environ.items() if not k.startswith("NN_")}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(tmp_path / "fake"), *[p for p in sys.path if p]]
    )  # the fake first, then wherever convnet_core comes from
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )


def run_device_check(tmp_path, *args: str, cupy_source: str) -> subprocess.CompletedProcess:
    """`python -m convnet_core *args` where `import cupy` finds `cupy_source`."""
    code = f"import sys, runpy; sys.argv = ['convnet_core', *{args!r}];"
    code += "runpy.run_module('convnet_core', run_name='__main__', alter_sys=True)"
    return run_python(code, tmp_path, cupy_source=cupy_source)


def test_require_cuda_exits_nonzero_with_the_reason(tmp_path):
    result = run_device_check(
        tmp_path, "--require-cuda", cupy_source="raise ModuleNotFoundError('simulated: no CuPy')"
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no usable GPU: CuPy is not installed" in result.stdout
    assert "simulated: no CuPy" in result.stdout
    assert "tests-cuda needs CuPy" in result.stderr
    assert "Warning" not in result.stderr  # as `-m convnet_core.backend` gave: module run twice


def test_device_check_without_require_cuda_reports_and_exits_zero(tmp_path):
    result = run_device_check(tmp_path, cupy_source="raise ImportError('simulated: broken CUDA')")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no usable GPU: CuPy is installed but cannot be imported" in result.stdout
    assert "simulated: broken CUDA" in result.stdout
    assert result.stderr == ""


def test_importing_convnet_core_never_imports_cupy(tmp_path):
    # a cupy that records being imported: importing the whole core must not touch it
    result = run_python(
        "import sys, convnet_core, convnet_core.cuda_kernels, convnet_core.precision;"
        "from convnet_core import layers, optim, losses, backend;"
        "print('cupy imported' if 'cupy' in sys.modules else 'cupy untouched')",
        tmp_path,
        cupy_source="import sys; print('IMPORTED', file=sys.stderr)",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "cupy untouched"
    assert "IMPORTED" not in result.stderr
