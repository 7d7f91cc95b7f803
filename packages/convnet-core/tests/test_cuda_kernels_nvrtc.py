"""The GPU kernels compile for real GPUs, checked on a machine without one.

NVRTC, the CUDA compiler CuPy calls at run time, needs no GPU to compile. Each kernel of
convnet_core.cuda_kernels is compiled here to PTX the way CuPy compiles it on first use:
the RawKernel source as written, and each ElementwiseKernel as CuPy wraps it, by CuPy's own
code generator, for every element type it can meet (float16 included, which the CPU run in
test_cuda_kernels_on_cpu.py cannot cover) and the contiguous and strided array variants.
The targets are compute_90 (H100, H200) and compute_75, the oldest CUDA 13 supports.

Run by the cuda-compile session, which pins the CuPy and NVRTC versions: the code generator
is internal to CuPy and may change between its releases.
"""

from __future__ import annotations

import numpy
import pytest
from convnet_core import cuda_kernels as K

pytestmark = pytest.mark.nvrtc

ARCHES = ["compute_75", "compute_90"]
ELEMENTWISE = {
    "convnet_adam_scalars": K._adam_scalars_kernel,
    "convnet_batchnorm_forward": K._batchnorm_forward_kernel,
    "convnet_batchnorm_input_grad": K._batchnorm_input_grad_kernel,
    "convnet_batchnorm_statistics": K._batchnorm_statistics_kernel,
    "convnet_fused_adam": K._adam_kernel,
    "convnet_relu_forward": K._relu_forward_kernel,
    "convnet_relu_backward": K._relu_backward_kernel,
    "convnet_unscale_and_check": K._unscale_kernel,
    "convnet_loss_scale_update": K._loss_scale_update_kernel,
}
# Each form a kernel is launched in, where it is not the plain one (every placeholder the
# array dtype, fixed-type inputs host scalars): `arrays`, the fixed-type inputs given as
# 0-d device arrays; `types`, placeholders of another dtype. The Adam update takes `take`
# as True (a plain step) or on the device (mixed precision's step, taken or skipped);
# BatchNorm's variance A is float32 for a float16 batch, and its running statistics S stay
# float32 in mixed precision (float16 otherwise). (The loss scaler's
# kernel has no placeholder: its dtype and layout parameters change nothing.)
PLAIN = {"arrays": frozenset(), "types": ()}
FORM_OPTIONS = {
    "convnet_fused_adam": [PLAIN, {"arrays": frozenset({"take"}), "types": ()}],
    "convnet_unscale_and_check": [{"arrays": frozenset({"inverse_scale"}), "types": ()}],
    "convnet_batchnorm_statistics": [
        PLAIN,
        {"arrays": frozenset(), "types": (("A", "float32"),)},
        {"arrays": frozenset(), "types": (("A", "float32"), ("S", "float32"))},
    ],
    # the first step's scale and count are Python numbers, the later ones device arrays
    "convnet_loss_scale_update": [
        {"arrays": frozenset({"finite"}), "types": ()},
        {"arrays": frozenset({"finite", "scale", "good_steps"}), "types": ()},
    ],
}
FORMS = [
    (name, form["arrays"], form["types"])
    for name in sorted(ELEMENTWISE)
    for form in FORM_OPTIONS.get(name, [PLAIN])
]
# how CuPy sees the arrays it launches on: (ndim, C-contiguous, 32-bit indices)
LAYOUTS = {"contiguous": (1, True, True), "strided-4d": (4, False, False)}


class Nvrtc:
    """NVRTC through CuPy's bindings, with the options and headers CuPy compiles with."""

    def __init__(self):
        import cupy._core.core as cupy_core  # CuPy's compiler options and headers
        from cupy_backends.cuda.libs import nvrtc

        self.nvrtc = nvrtc
        self.options = list(cupy_core.assemble_cupy_compiler_options(()))
        self.header = "".join(f"#include <{h}>\n" for h in cupy_core._cupy_header_list)

    def compile(self, source: str, arch: str, *, with_cupy_headers: bool) -> str:
        """PTX of `source`; raises AssertionError with NVRTC's log when it does not build."""
        text = self.header + source if with_cupy_headers else source
        program = self.nvrtc.createProgram(text, "kernel.cu", [], [])
        try:
            self.nvrtc.compileProgram(program, [*self.options, f"-arch={arch}"])
        except self.nvrtc.NVRTCError as error:
            log = self.nvrtc.getProgramLog(program)
            raise AssertionError(f"NVRTC could not compile it for {arch}:\n{log}") from error
        ptx = self.nvrtc.getPTX(program)
        return ptx.decode() if isinstance(ptx, bytes) else ptx


@pytest.fixture(scope="module")
def nvrtc():
    return Nvrtc()


def elementwise_source(kernel, dtype: str, layout: str, arrays=frozenset(), types=()) -> str:
    """The CUDA source CuPy generates for `kernel` on arrays of `dtype` in `layout`, with
    the fixed-type inputs named in `arrays` given as arrays and the others as scalars, and
    the placeholders named in `types` ((name, dtype) pairs) of their own dtype."""
    import cupy
    from cupy._core import _carray, _kernel, _scalar

    ndim, c_contiguous, index_32_bits = LAYOUTS[layout]
    placeholder = {name: numpy.dtype(d).type for name, d in types}

    def given_type(param):
        if param.dtype is None:  # a placeholder
            return placeholder.get(param.ctype, numpy.dtype(dtype).type)
        return param.dtype.type

    in_arrays = tuple(
        given_type(p) if p.dtype is None or p.name in arrays else None for p in kernel.in_params
    )
    in_types, out_types, type_map = kernel._decide_params_type(
        in_arrays, tuple(given_type(p) for p in kernel.out_params)
    )
    array, indexer, scalar = 1, 2, 3  # CuPy's _ArgKind

    def array_info(param, typ):
        # a raw array keeps its own dimensions (a flag of shape (1,) here); the others
        # are broadcast to the layout's
        if param.raw:
            return _kernel._ArgInfo(array, cupy.ndarray, typ, 1, True, True)
        return _kernel._ArgInfo(array, cupy.ndarray, typ, ndim, c_contiguous, index_32_bits)

    infos = [
        array_info(param, typ)
        if param.dtype is None or param.name in arrays  # an array
        else _kernel._ArgInfo(scalar, _scalar.CScalar, typ, 0, True, True)
        for param, typ in zip(kernel.in_params, in_types, strict=True)
    ]
    infos += [
        array_info(param, typ) for param, typ in zip(kernel.out_params, out_types, strict=True)
    ]
    infos.append(_kernel._ArgInfo(indexer, _carray.Indexer, None, ndim, True, index_32_bits))
    return _kernel._get_elementwise_kernel_code(
        tuple(infos), type_map, kernel.params, kernel.operation, kernel.name, kernel.preamble
    )


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize(("name", "arrays", "types"), FORMS)
def test_elementwise_kernel_compiles(nvrtc, name, arrays, types, dtype, layout, arch):
    kernel = ELEMENTWISE[name]()
    source = elementwise_source(kernel, dtype, layout, arrays, types)
    ptx = nvrtc.compile(source, arch, with_cupy_headers=True)
    assert f".entry {name}(" in ptx


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("dtype", sorted(K._COL2IM_TYPES))
def test_col2im_gather_compiles(nvrtc, dtype, arch):
    ptx = nvrtc.compile(K.col2im_source(dtype), arch, with_cupy_headers=False)
    assert f".entry convnet_col2im_gather_{dtype}(" in ptx
    assert "atom." not in ptx  # a gather: no atomics, so the sums are deterministic


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_im2col_gather_compiles(nvrtc, dtype, arch):
    ptx = nvrtc.compile(K.im2col_source(dtype), arch, with_cupy_headers=False)
    assert f".entry convnet_im2col_gather_{dtype}(" in ptx


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("index", ["uint8", "int32"])
@pytest.mark.parametrize("dtype", sorted(K.MAXPOOL_TYPES))
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_maxpool_kernels_compile(nvrtc, direction, dtype, index, arch):
    ptx = nvrtc.compile(K.maxpool_source(direction, dtype, index), arch, with_cupy_headers=False)
    assert f".entry convnet_maxpool_{direction}_{dtype}_{index}(" in ptx
    assert "atom." not in ptx  # each output written by one thread: deterministic


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("dtype", sorted(K.SOFTMAX_XENT_TYPES))
def test_softmax_cross_entropy_compiles(nvrtc, dtype, arch):
    ptx = nvrtc.compile(K.softmax_cross_entropy_source(dtype), arch, with_cupy_headers=False)
    assert f".entry convnet_softmax_xent_{dtype}(" in ptx


@pytest.mark.parametrize("arch", ARCHES)
def test_the_hold_kernel_compiles(nvrtc, arch):
    # tests-cuda and bench_gpu.py hold the GPU back with it (see host_waits.py)
    ptx = nvrtc.compile(K.HOLD_SOURCE, arch, with_cupy_headers=False)
    assert ".entry convnet_hold_the_gpu(" in ptx and "%globaltimer" in ptx


def test_a_kernel_that_does_not_build_fails_with_nvrtcs_log(nvrtc):
    import cupy

    broken = cupy.ElementwiseKernel("T x", "T y", "y = x + undeclared", "convnet_broken")
    source = elementwise_source(broken, "float32", "contiguous")
    with pytest.raises(AssertionError, match='identifier "undeclared" is undefined'):
        nvrtc.compile(source, "compute_90", with_cupy_headers=True)
