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
from device_arrays import DirectNumpyCall, reference_signature


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


def fake_cupy():
    """A CuPy whose `zeros` takes no `order`, whose arrays have `sum` without `keepdims` but
    no `ptp`, and whose generator has `random` without `dtype` but no `permutation`."""

    def zeros(shape, dtype=float):
        pass

    class Ndarray:
        def sum(self, axis=None):
            pass

    class Generator:
        def random(self, size=None):
            pass

    def as_strided(x, shape=None, strides=None):
        pass

    def sliding_window_view(x, window_shape, axis=None):
        pass

    return types.SimpleNamespace(
        __name__="cupy",
        zeros=zeros,
        ndarray=Ndarray,
        random=types.SimpleNamespace(Generator=Generator),
        lib=types.SimpleNamespace(
            stride_tricks=types.SimpleNamespace(
                as_strided=as_strided, sliding_window_view=sliding_window_view
            )
        ),
    )


def test_only_the_names_the_real_cupy_has_are_offered(kernel_build_dir):
    stand_in = make_cupy_on_numpy(kernel_build_dir, fake_cupy())
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


REFUSED_ARGUMENTS = {
    "zeros(order=)": lambda cupy, a: cupy.zeros(3, order="C"),  # NumPy takes it
    "sum(keepdims=)": lambda cupy, a: a.sum(keepdims=True),
    "random(dtype=)": lambda cupy, a: cupy.random.default_rng(0).random(3, dtype="float32"),
    "as_strided(writeable=)": lambda cupy, a: cupy.lib.stride_tricks.as_strided(
        a, shape=(2,), strides=(4,), writeable=False
    ),
}


def test_the_arguments_the_real_cupy_takes_are_accepted(kernel_build_dir):
    stand_in = make_cupy_on_numpy(kernel_build_dir, fake_cupy())
    a = stand_in.zeros(3, dtype="float32")
    a.sum(axis=0)
    stand_in.random.default_rng(0).random(3)
    stand_in.lib.stride_tricks.as_strided(a, shape=(2,), strides=(4,))


@pytest.mark.parametrize("call", sorted(REFUSED_ARGUMENTS))
def test_an_argument_the_real_cupy_does_not_take_is_refused(kernel_build_dir, call):
    stand_in = make_cupy_on_numpy(kernel_build_dir, fake_cupy())
    a = stand_in.zeros(3, dtype="float32")
    with pytest.raises(TypeError, match="unexpected keyword"):
        REFUSED_ARGUMENTS[call](stand_in, a)


def test_the_signatures_of_cupys_cython_methods_and_ufuncs_are_read():
    # CuPy's ndarray methods carry their signature on their docstring's first line
    class Method:
        __doc__ = (
            "_ndarray_base.astype(self, dtype, order='K', casting=None, subok=None, "
            "copy=True) -> _ndarray_base\n\nCasts the array."
        )

    astype = reference_signature(Method())
    assert list(astype.parameters) == ["dtype", "order", "casting", "subok", "copy"]
    astype.bind("float32", copy=False)
    with pytest.raises(TypeError):
        astype.bind("float32", device="cpu")

    class Swapaxes:
        __doc__ = "_ndarray_base.swapaxes(self, Py_ssize_t axis1, Py_ssize_t axis2) -> x"

    assert list(reference_signature(Swapaxes()).parameters) == ["axis1", "axis2"]

    class Reshape:
        __doc__ = "_ndarray_base.reshape(self, *shape, order='C', copy=None)"

    reshape = reference_signature(Reshape())
    assert reshape.bind(2, 3, order="C").arguments == {"shape": (2, 3), "order": "C"}
    assert reshape.bind(2, 3, "C").arguments == {"shape": (2, 3, "C")}  # keyword-only order

    ufunc = type("ufunc", (), {})()  # CuPy's ufuncs: operands, then out, dtype, casting
    signature = reference_signature(ufunc)
    signature.bind(1, 2, out=None, dtype="float32")
    with pytest.raises(TypeError):
        signature.bind(1, 2, where=True)  # NumPy's ufuncs take `where`; CuPy's do not

    assert reference_signature(type("NoDoc", (), {"__doc__": "Adds."})()) is None


def test_installed_it_is_the_gpu_convnet_finds(kernel_build_dir):
    before = sys.modules.get("cupy")
    with cupy_on_numpy_installed(kernel_build_dir) as stand_in:
        assert backend.array_module("cuda") is stand_in
        assert backend.get_array_module(stand_in.zeros(2)) is stand_in
        assert backend.device_name(stand_in).startswith("NumPy dressed as CuPy")
        host = backend.to_host({"w": stand_in.ones(2)})["w"]
        assert type(host) is numpy.ndarray
    assert sys.modules.get("cupy") is before
