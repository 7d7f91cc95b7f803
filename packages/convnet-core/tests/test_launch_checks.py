"""The launch checks of the CPU kernel runner (launch_checks.py) catch the GPU bugs they
are for: each planted kernel below has one, and the check names it."""

from __future__ import annotations

import numpy
import pytest
from cuda_source_on_cpu import CupyOnCpu, cpp_compiler
from launch_checks import LaunchError


@pytest.fixture
def cupy(kernel_build_dir):
    if cpp_compiler() is None:
        pytest.skip("no C++ compiler to build the CUDA sources for the CPU (apt-get install g++)")
    return CupyOnCpu(kernel_build_dir, check_runs=True, check_writers=True)


def raw_kernel(cupy, body: str, params: str = "const float* x, float* out, long long n"):
    """A RawKernel `planted` whose thread number is i, with `body` as its code."""
    source = (
        f'extern "C" __global__ void planted({params}) {{\n'
        "    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;\n"
        f"    {body}\n"
        "}\n"
    )
    return cupy.RawKernel(source, "planted")


def launch(kernel, x, out, n, threads=8):
    kernel((1,), (threads,), (x, out, numpy.int64(n)))


X = numpy.arange(1, 7, dtype="float32")  # 6 values, launched on 8 threads


def test_a_correct_kernel_passes_and_writes_its_output(cupy):
    doubled = numpy.zeros(6, "float32")
    launch(raw_kernel(cupy, "if (i < n) out[i] = 2 * x[i];"), X, doubled, 6)
    numpy.testing.assert_array_equal(doubled, 2 * X)


def test_a_kernel_that_reads_a_view_through_its_strides_passes(cupy):
    kernel = raw_kernel(cupy, "if (i < n) out[i] = x[2 * i];")  # x: every other element
    base = numpy.arange(12, dtype="float32")
    out = numpy.zeros(6, "float32")
    launch(kernel, base[::2], out, 6)
    numpy.testing.assert_array_equal(out, base[::2])


def test_a_missing_bounds_test_is_a_write_outside_the_output(cupy):
    kernel = raw_kernel(cupy, "out[i] = 2 * x[i];")  # threads 6 and 7 run past the end
    with pytest.raises(LaunchError, match=r"planted writes outside `out`: 8 bytes"):
        launch(kernel, X, numpy.zeros(6, "float32"), 6)


def test_reading_one_past_the_end_is_a_read_outside(cupy):
    kernel = raw_kernel(cupy, "if (i < n) out[i] = x[i] + x[i + 1];")
    with pytest.raises(LaunchError, match=r"`out`\[5\] differs .* reads outside its arrays"):
        launch(kernel, X, numpy.zeros(6, "float32"), 6)


def test_reading_between_the_elements_of_a_view_is_a_read_outside(cupy):
    kernel = raw_kernel(cupy, "if (i < n) out[i] = x[i];")  # a stride of 1 for a view of 2
    base = numpy.arange(12, dtype="float32")
    with pytest.raises(LaunchError, match=r"`out`\[1\] differs .* reads outside its arrays"):
        launch(kernel, base[::2], numpy.zeros(6, "float32"), 6)


def test_reading_another_threads_output_depends_on_their_order(cupy):
    # a running sum that takes the previous thread's result: right only one after another
    body = "if (i < n) out[i] = (i == 0 ? 0.0f : out[i - 1]) + x[i];"
    with pytest.raises(LaunchError, match=r"last to first .* reads what another thread"):
        launch(raw_kernel(cupy, body), X, numpy.zeros(6, "float32"), 6)


def test_two_threads_adding_into_one_element_is_a_race(cupy):
    # pairs summed by scatter: right when run in turn (either way round), a lost add on a GPU
    kernel = raw_kernel(cupy, "if (i < n) out[i / 2] += x[i];")
    with pytest.raises(LaunchError, match=r"threads 0 and 1 both write `out`\[0\]"):
        launch(kernel, X, numpy.zeros(3, "float32"), 6)


def test_an_output_sharing_memory_with_an_input_is_refused(cupy):
    kernel = raw_kernel(cupy, "if (i < n) out[i] = 2 * x[i];")
    x = X.copy()
    with pytest.raises(TypeError, match="`out` shares memory with `x`"):
        launch(kernel, x, x, 6)


def test_an_elementwise_raw_output_indexed_past_its_end_is_caught(cupy):
    kernel = cupy.ElementwiseKernel("T x", "raw int32 flag", "if (x > 0) flag[1] = 1", "planted")
    with pytest.raises(LaunchError, match=r"planted writes outside `flag`: 4 bytes"):
        kernel(X, numpy.zeros(1, "int32"))


def test_an_elementwise_raw_output_with_a_last_writer_is_caught(cupy):
    kernel = cupy.ElementwiseKernel("T x", "raw T last", "last[0] = x", "planted")
    with pytest.raises(LaunchError, match=r"`last`\[0\] differs .* last to first"):
        kernel(X, numpy.zeros(1, "float32"))


def test_an_elementwise_flag_that_every_writer_sets_alike_passes(cupy):
    kernel = cupy.ElementwiseKernel("T x", "raw int32 flag", "if (x > 4) flag[0] = 1", "planted")
    flag = numpy.zeros(1, "int32")
    kernel(X, flag)
    assert flag[0] == 1
