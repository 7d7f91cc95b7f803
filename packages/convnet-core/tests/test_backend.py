"""Backend selection without CuPy (patched to be absent), and moving trees between devices.

test_device_selection.py covers a fake CuPy in depth; these pin the rules users rely on.
"""

from __future__ import annotations

import json
import warnings

import numpy
import pytest
from convnet_core import Model, backend
from convnet_core.layers import Dense

ABSENT = "CuPy is not installed (ModuleNotFoundError: No module named 'cupy')"


@pytest.fixture
def no_cupy(monkeypatch):
    monkeypatch.setattr(backend, "cuda_unavailable_reason", lambda: ABSENT)
    monkeypatch.delenv("NN_DISABLE_CUDA", raising=False)
    monkeypatch.delenv("NN_FORCE_CUDA", raising=False)
    monkeypatch.setattr(backend, "_announced", set())


def test_auto_and_cpu_give_numpy_without_cupy(no_cupy, capsys):
    assert backend.array_module("auto") is numpy
    assert backend.array_module() is numpy
    assert backend.array_module("cpu") is numpy
    assert "No module named 'cupy'" in capsys.readouterr().err  # says why, once
    backend.array_module("auto")
    assert capsys.readouterr().err == ""
    assert not backend.USE_CUDA and not backend.CUDA_AVAILABLE


def test_cuda_without_a_gpu_is_a_clear_error(no_cupy):
    with pytest.raises(RuntimeError, match=r"device='cuda'.*no GPU is usable.*cupy"):
        backend.array_module("cuda")


def test_nn_disable_cuda_forces_the_cpu_quietly(no_cupy, monkeypatch, capsys):
    monkeypatch.setenv("NN_DISABLE_CUDA", "1")
    monkeypatch.setattr(
        backend, "cuda_unavailable_reason", lambda: pytest.fail("must not probe the GPU")
    )
    assert backend.array_module("auto") is numpy
    assert capsys.readouterr().err == ""
    assert not backend.USE_CUDA


def test_nn_force_cuda_warns_when_no_gpu(no_cupy, monkeypatch):
    monkeypatch.setenv("NN_FORCE_CUDA", "1")
    with pytest.warns(RuntimeWarning, match="NN_FORCE_CUDA.*no GPU is usable.*CPU"):
        assert backend.array_module("auto") is numpy


def test_nn_force_cuda_off_does_not_warn(no_cupy, monkeypatch):
    monkeypatch.setenv("NN_FORCE_CUDA", "0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backend.array_module("auto") is numpy


@pytest.mark.parametrize("name", ["NN_DISABLE_CUDA", "NN_FORCE_CUDA"])
@pytest.mark.parametrize("value", ["2", "y", "enabled"])
def test_a_misspelt_switch_is_an_error_not_ignored(no_cupy, monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=rf"{name}='{value}': use 1, true, yes or on"):
        backend.array_module("auto")


BOTH_SET = "NN_DISABLE_CUDA and NN_FORCE_CUDA are both set; unset one"


def test_both_switches_at_once_are_an_error_wherever_they_are_read(no_cupy, monkeypatch):
    monkeypatch.setenv("NN_DISABLE_CUDA", "yes")
    monkeypatch.setenv("NN_FORCE_CUDA", "on")
    with pytest.raises(ValueError, match=BOTH_SET):
        backend.array_module("auto")
    with pytest.raises(ValueError, match=BOTH_SET):
        backend.USE_CUDA  # noqa: B018 - reading it is the test
    with pytest.raises(ValueError, match=BOTH_SET):
        Model([Dense(2)])  # device="auto"
    # an explicit device does not read them (docs/gpu.md: they change "auto")
    assert backend.array_module("cpu") is numpy
    assert not backend.CUDA_AVAILABLE


def test_a_misspelt_switch_is_refused_by_use_cuda_too(no_cupy, monkeypatch):
    monkeypatch.setenv("NN_FORCE_CUDA", "2")
    with pytest.raises(ValueError, match=r"NN_FORCE_CUDA='2': use 1, true, yes or on"):
        backend.USE_CUDA  # noqa: B018 - reading it is the test


def test_the_flags_are_real_booleans(no_cupy):
    assert backend.USE_CUDA is False and backend.CUDA_AVAILABLE is False
    assert backend.USE_CUDA == False  # noqa: E712 - what ConvNet-NumPy code writes
    assert isinstance(backend.CUDA_AVAILABLE, bool)
    flags = {"CUDA_AVAILABLE": backend.CUDA_AVAILABLE, "USE_CUDA": backend.USE_CUDA}
    assert json.dumps(flags) == '{"CUDA_AVAILABLE": false, "USE_CUDA": false}'
    from convnet_core.backend import USE_CUDA

    assert USE_CUDA is False
    assert {"CUDA_AVAILABLE", "USE_CUDA"} <= set(dir(backend))


def test_the_flags_are_read_when_used_not_when_imported(no_cupy, monkeypatch):
    # each read asks again: the environment can change between reads
    monkeypatch.setattr(backend, "cuda_unavailable_reason", lambda: None)
    assert backend.CUDA_AVAILABLE is True and backend.USE_CUDA is True
    monkeypatch.setenv("NN_DISABLE_CUDA", "1")
    assert backend.USE_CUDA is False and backend.CUDA_AVAILABLE is True
    with pytest.raises(AttributeError, match="has no attribute 'USE_CUDAA'"):
        backend.USE_CUDAA  # noqa: B018


def test_help_prints_the_usage_not_the_diagnosis(monkeypatch, capsys):
    monkeypatch.setattr(backend, "cuda_unavailable_reason", lambda: pytest.fail("probed"))
    with pytest.raises(SystemExit) as stop:
        backend._main(["--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m convnet_core [-h] [--require-cuda]")
    assert "exit with status 1 when no GPU is usable" in out
    assert "GPU usable" not in out and "no usable GPU" not in out


def test_an_unknown_argument_is_an_error(monkeypatch, capsys):
    monkeypatch.setattr(backend, "cuda_unavailable_reason", lambda: pytest.fail("probed"))
    with pytest.raises(SystemExit) as stop:
        backend._main(["--bogus"])
    assert stop.value.code == 2
    captured = capsys.readouterr()
    assert "unrecognized arguments: --bogus" in captured.err
    assert captured.out == ""


@pytest.mark.parametrize(("argv", "status"), [([], 0), (["--require-cuda"], 1)])
def test_the_diagnosis_and_its_exit_status(no_cupy, capsys, argv, status):
    assert backend._main(argv) == status
    captured = capsys.readouterr()
    assert captured.out == f"no usable GPU: {ABSENT}\n"
    assert ("tests-cuda needs CuPy" in captured.err) == bool(status)


def test_a_cupy_that_fails_to_import_is_not_called_missing(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def failing_import(name, *args, **kwargs):
        if name == "cupy":
            raise OSError("libcudart.so.13: cannot open shared object file")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", failing_import)
    backend.cuda_unavailable_reason.cache_clear()
    try:
        reason = backend.cuda_unavailable_reason()
    finally:
        backend.cuda_unavailable_reason.cache_clear()
    assert reason == (
        "CuPy is installed but cannot be imported "
        "(OSError: libcudart.so.13: cannot open shared object file)"
    )


def test_unknown_device():
    with pytest.raises(ValueError, match="'auto', 'cpu' or 'cuda'.*'gpu'"):
        backend.array_module("gpu")


def test_to_device_and_to_host_on_numpy():
    params = ({"W": numpy.ones((2, 2), "float32")}, {}, [numpy.float32(3.0), "label"])
    moved = backend.to_device(params, numpy)
    assert moved[0]["W"].dtype == numpy.float32 and moved[2][1] == "label"
    back = backend.to_host(moved)
    numpy.testing.assert_array_equal(back[0]["W"], params[0]["W"])


def test_names_and_modules():
    assert backend.device_name(numpy).startswith("CPU (NumPy ")
    assert not backend.is_cupy(numpy)
    assert backend.get_array_module(numpy.zeros(2)) is numpy
