"""The CuPy stand-in of tests-cuda-on-cpu (tests/cupy_on_numpy.py) catches what CuPy would.

tests-cuda-on-cpu is only worth running if the stand-in refuses what a GPU refuses: NumPy
on device arrays, a host read where the host must not wait for the GPU, a function CuPy
does not have.
"""

from __future__ import annotations

import sys
import types

import numpy
import pytest
from convnet_core import backend
from cupy_on_numpy import (
    HostReadRefused,
    cupy_on_numpy_installed,
    make_cupy_on_numpy,
    refusing_host_reads,
)
from device_arrays import DirectNumpyCall


@pytest.fixture
def stand_in(kernel_build_dir):
    return make_cupy_on_numpy(kernel_build_dir)


def test_device_arrays_refuse_numpy_and_host_arrays(stand_in):
    a = stand_in.arange(6, dtype="float32").reshape(2, 3)
    assert isinstance(a, stand_in.ndarray) and isinstance(a.sum(), stand_in.ndarray)
    with pytest.raises((TypeError, DirectNumpyCall)):
        numpy.asarray(a)
    with pytest.raises((TypeError, DirectNumpyCall)):
        a + numpy.ones((2, 3))
    numpy.testing.assert_array_equal(a.get(), numpy.arange(6).reshape(2, 3))


@pytest.mark.parametrize(
    "read",
    [
        lambda a: float(a.sum()),
        lambda a: bool(a[0] > 0),
        lambda a: a.get(),
        lambda a: a.sum().item(),
        lambda a: a[a > 2],  # a boolean mask: the result's size is data
        lambda a: numpy.asarray(a.tolist()),
    ],
    ids=["float", "bool", "get", "item", "mask", "tolist"],
)
def test_a_host_read_is_refused_where_reads_are_refused(stand_in, read):
    a = stand_in.arange(5, dtype="float32")
    read(a)  # fine outside the block
    with refusing_host_reads():
        with pytest.raises(HostReadRefused):
            read(a)
        a * 2 + 1  # device work is fine
    read(a)  # and fine again after it


@pytest.mark.parametrize("synchronize", ["Stream", "Device"])
def test_a_synchronize_is_refused_where_reads_are_refused(stand_in, synchronize):
    waiter = getattr(stand_in.cuda, synchronize)()
    with refusing_host_reads(), pytest.raises(HostReadRefused, match="synchronize"):
        waiter.synchronize()


def test_only_the_names_the_real_cupy_has_are_offered(kernel_build_dir):
    class Ndarray:  # a CuPy whose arrays have `sum` but no `ptp`
        def sum(self):
            pass

    reference = types.SimpleNamespace(
        __name__="cupy",
        zeros=None,
        ndarray=Ndarray,
        random=types.SimpleNamespace(Generator=type("Generator", (), {"random": None})),
    )
    stand_in = make_cupy_on_numpy(kernel_build_dir, reference)
    a = stand_in.zeros(3)
    a.sum()
    with pytest.raises(AttributeError, match="busday_count"):
        stand_in.busday_count  # noqa: B018 - NumPy has it
    with pytest.raises(AttributeError, match="ptp"):
        a.ptp  # noqa: B018
    rng = stand_in.random.default_rng(0)
    rng.random(3)
    with pytest.raises(AttributeError, match="permutation"):
        rng.permutation(3)


def test_installed_it_is_the_gpu_convnet_finds(kernel_build_dir):
    before = sys.modules.get("cupy")
    with cupy_on_numpy_installed(kernel_build_dir) as stand_in:
        assert backend.array_module("cuda") is stand_in
        assert backend.get_array_module(stand_in.zeros(2)) is stand_in
        assert backend.device_name(stand_in).startswith("NumPy dressed as CuPy")
        host = backend.to_host({"w": stand_in.ones(2)})["w"]
        assert type(host) is numpy.ndarray
    assert sys.modules.get("cupy") is before
