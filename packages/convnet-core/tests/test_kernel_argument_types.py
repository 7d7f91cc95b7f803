"""The CPU kernel runner (cuda_source_on_cpu.py) takes the kernel arguments CuPy 14 takes.

RawKernel: CuPy packs each argument by its own type, whatever the kernel declares
(cupy/cuda/function.pyx, `_pointer`): a device array is a pointer, a NumPy scalar its own
bytes, a Python int an int64 (a bool too, being an int), a Python float a float64. An
argument of another size or kind than its parameter reads as other numbers on a GPU, or
shifts every later argument, so the runner refuses it.

ElementwiseKernel: a fixed-type parameter given an array of another dtype, and an output
of another dtype than its parameter's, raise CuPy's `Type is mismatched.` error
(cupy/_core/_kernel.pyx, `_decide_params_type_core`); scalars take their parameter's type,
and only arrays decide a placeholder's.
"""

from __future__ import annotations

import re

import numpy
import pytest
from convnet_core import cuda_kernels as K
from cuda_source_on_cpu import CupyOnCpu, cpp_compiler
from cupy_on_numpy import make_cupy_on_numpy

# out[i] = x[i] * scale + k + offset (+ 100 where flag), for i < n
SCALED_SOURCE = r"""
extern "C" __global__ void scaled(const float* x, float* out, long long n, int k,
                                  float scale, double offset, bool flag) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = x[i] * scale + k + (float)offset + (flag ? 100.0f : 0.0f);
}
"""
X = numpy.arange(1, 7, dtype="float32")


@pytest.fixture
def cupy(kernel_build_dir):
    if cpp_compiler() is None:
        pytest.skip("no C++ compiler to build the CUDA sources for the CPU (apt-get install g++)")
    return CupyOnCpu(kernel_build_dir, check_runs=True, check_writers=True)


def scaled_args(out, **changes):
    """The arguments of `scaled`, each in the type CuPy passes as its parameter's, with
    `changes` (parameter name -> argument) planted."""
    args = dict(
        x=X,
        out=out,
        n=numpy.int64(6),
        k=numpy.int32(2),
        scale=numpy.float32(0.5),
        offset=0.25,  # a Python float: a double
        flag=numpy.bool_(False),
    )
    return tuple((args | changes).values())


# ---------------------------------------------------------------------------------------
# RawKernel


def test_a_raw_kernel_takes_the_argument_types_cupy_passes_as_its_parameters(cupy):
    kernel = cupy.RawKernel(SCALED_SOURCE, "scaled")
    for n, k in [(numpy.int64(6), numpy.int32(2)), (6, numpy.intc(2))]:  # Python int: int64
        out = numpy.zeros(6, "float32")
        kernel((1,), (8,), scaled_args(out, n=n, k=k))
        numpy.testing.assert_array_equal(out, X * 0.5 + 2.25)
    out = numpy.zeros(6, "float32")
    kernel((1,), (8,), scaled_args(out, offset=numpy.float64(1.0), flag=numpy.bool_(True)))
    numpy.testing.assert_array_equal(out, X * 0.5 + 103)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("k", numpy.int64(2), "`k` is declared `int` (a 4-byte signed integer), given "
         "numpy.int64: CuPy passes it as an 8-byte signed integer"),
        ("k", 2, "`k` is declared `int` (a 4-byte signed integer), given int: CuPy passes "
         "it as an 8-byte signed integer"),
        ("k", numpy.float32(2), "`k` is declared `int` (a 4-byte signed integer), given "
         "numpy.float32: CuPy passes it as a 4-byte float"),
        ("k", numpy.uint32(2), "`k` is declared `int` (a 4-byte signed integer), given "
         "numpy.uint32: CuPy passes it as a 4-byte unsigned integer"),
        ("n", numpy.int32(6), "`n` is declared `long long` (an 8-byte signed integer), "
         "given numpy.int32: CuPy passes it as a 4-byte signed integer"),
        ("scale", 0.5, "`scale` is declared `float` (a 4-byte float), given float: CuPy "
         "passes it as an 8-byte float"),
        ("scale", numpy.float64(0.5), "`scale` is declared `float` (a 4-byte float), given "
         "numpy.float64: CuPy passes it as an 8-byte float"),
        ("offset", numpy.float32(0.25), "`offset` is declared `double` (an 8-byte float), "
         "given numpy.float32: CuPy passes it as a 4-byte float"),
        ("offset", numpy.int64(0), "`offset` is declared `double` (an 8-byte float), given "
         "numpy.int64: CuPy passes it as an 8-byte signed integer"),
        ("flag", True, "`flag` is declared `bool` (a 1-byte bool), given bool: CuPy passes "
         "it as an 8-byte signed integer"),
        ("k", numpy.asarray(2, "int32"), "`k` is declared `int` (a 4-byte signed integer), "
         "given an array: CuPy passes it as a pointer"),
        ("x", numpy.float32(1), "`x` is declared `const float*` (a pointer), given "
         "numpy.float32: CuPy passes it as a 4-byte float"),
    ],
)  # fmt: skip
def test_a_raw_kernel_refuses_an_argument_of_another_size_or_kind(cupy, name, value, message):
    kernel = cupy.RawKernel(SCALED_SOURCE, "scaled")
    out = numpy.zeros(6, "float32")
    with pytest.raises(TypeError, match=f"^scaled: parameter {re.escape(message)}$"):
        kernel((1,), (8,), scaled_args(out, **{name: value}))
    assert not out.any()  # nothing ran


@pytest.mark.parametrize("value", ["2", numpy.longdouble(2), [2]])
def test_a_raw_kernel_refuses_a_type_cupy_cannot_pass(cupy, value):
    kernel = cupy.RawKernel(SCALED_SOURCE, "scaled")
    with pytest.raises(TypeError, match=f"^{re.escape(f'Unsupported type {type(value)}')}$"):
        kernel((1,), (8,), scaled_args(numpy.zeros(6, "float32"), k=value))


def test_a_python_int_cupy_cannot_pack_overflows(cupy):
    kernel = cupy.RawKernel(SCALED_SOURCE, "scaled")
    with pytest.raises(OverflowError):
        kernel((1,), (8,), scaled_args(numpy.zeros(6, "float32"), n=2**63))


def test_a_0d_device_array_is_a_pointer_for_the_cupy_stand_in_too(kernel_build_dir):
    if cpp_compiler() is None:
        pytest.skip("no C++ compiler to build the CUDA sources for the CPU (apt-get install g++)")
    cp = make_cupy_on_numpy(kernel_build_dir)
    kernel = cp.RawKernel(SCALED_SOURCE, "scaled")
    x, out = cp.asarray(X), cp.zeros(6, "float32")
    args = scaled_args(out, x=x, k=cp.asarray(2, "int32"))
    with pytest.raises(TypeError, match=r"^scaled: parameter `k` is declared `int` .* pointer$"):
        kernel((1,), (8,), args)
    kernel((1,), (8,), scaled_args(out, x=x))
    numpy.testing.assert_array_equal(out.get(), X * 0.5 + 2.25)


def test_the_col2im_kernel_refuses_an_int64_for_an_int_size(cupy_on_cpu):
    kernel = cupy_on_cpu.RawKernel(K.col2im_source("float32"), "convnet_col2im_gather_float32")
    blocks = numpy.zeros((1, 1, 1, 1, 2, 2), "float32")  # (C, kh, kw, N, Ho, Wo)
    dx = numpy.zeros((1, 1, 2, 2), "float32")
    sizes = [1, 2, 2, 1, 1, 2, 2, 1, 1]  # N, Hp, Wp, kh, kw, Ho, Wo, sh, sw
    strides = tuple(numpy.int64(s // 4) for s in blocks.strides)
    args = (blocks, dx, numpy.int64(4), numpy.int64(1), *map(numpy.int32, sizes[1:]), *strides)
    message = r"^convnet_col2im_gather_float32: parameter `N` is declared `int` .*8-byte"
    with pytest.raises(TypeError, match=message):
        kernel((1,), (256,), args)


# ---------------------------------------------------------------------------------------
# ElementwiseKernel


def scale_kernel(cupy):
    return cupy.ElementwiseKernel("T x, float32 s", "T y", "y = x * (T)s", "scale_by")


def test_a_fixed_type_parameter_takes_an_array_of_its_dtype_or_any_scalar(cupy):
    kernel = scale_kernel(cupy)
    x = numpy.arange(5, dtype="float64")
    for s in (numpy.asarray(0.5, "float32"), 0.5, numpy.float64(0.5), numpy.float16(0.5), 1):
        got = kernel(x, s)
        assert got.dtype == numpy.dtype("float64")
        numpy.testing.assert_array_equal(got, x * float(numpy.float32(s)))
    # a (5,) float32 array for s is bound element by element
    s = numpy.asarray([1, 2, 3, 4, 5], "float32")
    numpy.testing.assert_array_equal(kernel(x, s), x * s)


def test_a_fixed_type_parameter_refuses_an_array_of_another_dtype(cupy):
    kernel = scale_kernel(cupy)
    x = numpy.arange(5, dtype="float32")
    with pytest.raises(TypeError, match=r"^Type is mismatched\. s float64 float32$"):
        kernel(x, numpy.asarray(0.5))  # a 0-d float64 array
    with pytest.raises(TypeError, match=r"^Type is mismatched\. s float16 float32$"):
        kernel(x, numpy.full(5, 0.5, "float16"))


def test_an_output_of_another_dtype_than_its_parameters_is_refused(cupy):
    x = numpy.arange(5, dtype="float32")
    kernel = cupy.ElementwiseKernel("T x", "float32 y", "y = x", "copy_to_float32")
    with pytest.raises(TypeError, match=r"^Type is mismatched\. y float64 float32$"):
        kernel(x, numpy.zeros(5))
    # CuPy decides a placeholder from the outputs first, so the input is the one named
    kernel = scale_kernel(cupy)
    y = numpy.zeros(5)
    with pytest.raises(TypeError, match=r"^Type is mismatched\. x float32 float64 T$"):
        kernel(x, 0.5, y)
    assert not y.any()
    y = numpy.zeros(5, "float32")
    assert kernel(x, 0.5, y) is y
    numpy.testing.assert_array_equal(y, x * 0.5)


def test_a_placeholders_type_is_decided_by_its_arrays_never_by_scalars(cupy):
    kernel = cupy.ElementwiseKernel("T x, T b", "T y", "y = x + b", "add_b")
    x = numpy.arange(4, dtype="float32")
    for b in (0.1, numpy.float64(0.1), 1):  # each converted to float32, as CuPy does
        got = kernel(x, b)
        assert got.dtype == numpy.dtype("float32")
        numpy.testing.assert_array_equal(got, x + numpy.float32(b))
    with pytest.raises(TypeError, match=r"^Type is mismatched\. b float64 float32 T$"):
        kernel(x, numpy.asarray(0.1))  # a 0-d array is an array
    with pytest.raises(OverflowError):
        cupy.ElementwiseKernel("T x, T b", "T y", "y = x + b", "add_b")(x.astype("int32"), 2**40)


def test_a_loop_or_a_type_that_only_scalars_give_is_undecided(cupy):
    kernel = cupy.ElementwiseKernel("T x, T b", "T y", "y = x + b", "add_b")
    with pytest.raises(ValueError, match=r"^Loop size is undecided\.$"):
        kernel(1.0, 2.0)
    with pytest.raises(KeyError, match="T"):
        cupy.ElementwiseKernel("T x, float32 s", "float32 y", "y = x * s", "scaled")(
            1.0, numpy.ones(3, "float32")
        )


def test_an_elementwise_kernel_refuses_what_cupy_refuses(cupy):
    kernel = scale_kernel(cupy)
    x = numpy.arange(5, dtype="float32")
    with pytest.raises(TypeError, match=r"^Wrong number of arguments for 'scale_by'\. It must "
                       r"be either 2 or 3 \(with outputs\), but given 1\.$"):  # fmt: skip
        kernel(x)
    with pytest.raises(ValueError, match=r"^Out shape is mismatched$"):
        kernel(numpy.zeros((2, 5), "float32"), 0.5, numpy.zeros(5, "float32"))
    with pytest.raises(TypeError, match=r"^Unsupported type <class 'str'>$"):
        kernel(x, "0.5")
    flag = cupy.ElementwiseKernel("T x", "raw int32 flag", "flag[0] = 1", "set_flag")
    with pytest.raises(ValueError, match=r"^Output array size is Undecided$"):
        flag(x)


def test_the_unscale_kernel_refuses_a_float64_inverse_scale(cupy_on_cpu):
    scaled, nonfinite = numpy.ones(4, "float16"), numpy.zeros(1, "int32")
    with pytest.raises(TypeError, match=r"^Type is mismatched\. inverse_scale float64 float32$"):
        K.unscale_and_check(scaled, numpy.asarray(0.5), nonfinite)
    got = K.unscale_and_check(scaled, numpy.asarray(0.5, "float32"), nonfinite)
    numpy.testing.assert_array_equal(got, numpy.full(4, 0.5, "float32"))
