"""Test fixtures shared by the convnet-core tests.

The `xp` fixture is numpy, or cupy when CONVNET_TEST_DEVICE=cuda (the tests-cuda session);
there, a missing GPU is an error, never a skip.

`cupy_on_cpu` puts the CPU stand-in for CuPy (tests/cuda_source_on_cpu.py) under
convnet_core.cuda_kernels, so the GPU kernels' CUDA source runs here, compiled by g++.
"""

import os

import numpy
import pytest
from convnet_core import backend
from convnet_core import cuda_kernels as K
from cuda_source_on_cpu import CupyOnCpu, cpp_compiler


@pytest.fixture(scope="session")
def xp():
    if os.environ.get("CONVNET_TEST_DEVICE") == "cuda":
        return backend.array_module("cuda")
    return numpy


@pytest.fixture(scope="session")
def kernel_build_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("kernels")  # each kernel source is compiled once per run


@pytest.fixture
def cupy_on_cpu(monkeypatch, kernel_build_dir):
    """cuda_kernels with CuPy replaced by the CPU stand-in and an empty kernel cache."""
    if cpp_compiler() is None:
        pytest.skip("no C++ compiler to build the CUDA sources for the CPU (apt-get install g++)")
    fake = CupyOnCpu(kernel_build_dir, check_runs=True, check_writers=True)
    monkeypatch.setattr(K, "_cupy", lambda: fake)
    monkeypatch.setattr(K, "_KERNELS", {})
    monkeypatch.setattr(K, "COL2IM_ON_GPU", "gather")
    return fake
