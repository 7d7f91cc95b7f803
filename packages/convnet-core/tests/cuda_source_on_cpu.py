"""Run the CUDA C source of convnet_core.cuda_kernels on the CPU, compiled by a C++ compiler.

`CupyOnCpu` stands in for the `cupy` module that `cuda_kernels` calls: it has what those
functions use (`RawKernel`, `ElementwiseKernel`, `empty`, `empty_like`, `zeros`), with NumPy
arrays in place of device arrays. So `cuda_kernels.col2im_gather(...)` runs unchanged: its
host code (shapes, strides in elements, the launch grid, the argument list) and the kernel's
own source text, which g++ compiles as C++ with a few lines that stand for CUDA's built-ins:

- `RawKernel`: the `__global__` function is called once per (block, thread) of the launch
  grid, one after another. That equals the parallel launch for a kernel whose threads write
  disjoint outputs and never wait for each other, so a source that uses shared memory,
  barriers or atomics is refused. launch_checks.py checks the rest, launch by launch:
  `check_runs` runs each launch three ways, which shows a read or write outside the arrays
  and a thread reading what another writes; `check_writers` runs each thread alone, which
  shows an element written by two threads. The kernel tests turn both on; the CuPy
  stand-in, which runs whole training steps, only `check_runs` (running each thread alone
  costs the launch's size times its number of threads). Each argument must be what CuPy
  passes for its parameter: CuPy packs an argument by its own type, not the parameter's (a
  Python int as an int64, a float as a float64, a NumPy scalar as its own bytes, an array
  as a pointer), so one of another size or kind than the declared C type, which on a GPU
  reads as other numbers or shifts every later argument, is refused with a TypeError.
- `ElementwiseKernel`: the operation is pasted into a loop over the elements, with each
  parameter bound by name as CuPy binds it (`const T& x` for an input, `T& y` for an output,
  a pointer for a `raw` output, which the operation indexes itself). Types are decided as
  CuPy decides them: a placeholder such as `T` takes the dtype of the arrays given for its
  parameters, an array (0-d included) of another dtype than its parameter's, input or
  output, raises CuPy's `Type is mismatched.` TypeError, and a scalar decides nothing and
  is converted to its parameter's type. float16 is GCC's
  `_Float16`, which may keep a chain of operations in float where CuPy's float16 rounds
  after each one: exact alike for the ReLU kernels (compare, select, multiply by 0 or 1),
  not a check of float16 arithmetic.

Compiled with -ffp-contract=off, so each float operation is rounded on its own, as NumPy
rounds it: where a kernel does NumPy's arithmetic in NumPy's order, the results are equal to
the last bit. (NVRTC fuses multiply-adds by default, so on a GPU the same source can differ
in the last bits; tests-cuda compares there with a tolerance.)
"""

from __future__ import annotations

import ctypes
import hashlib
import pathlib
import re
import shutil
import subprocess
from typing import Any

import launch_checks
import numpy

__all__ = ["CupyOnCpu", "compile_cpp", "cpp_compiler"]

# CUDA's thread coordinates, as globals the launch loop sets before each call
_RAW_KERNEL_PRELUDE = r"""
#include <cmath>
struct convnet_dim3 { unsigned int x = 1, y = 1, z = 1; };
static convnet_dim3 blockIdx, threadIdx, blockDim, gridDim;
#define __global__
#define __device__
#define __restrict__
"""

_ELEMENTWISE_PRELUDE = r"""
#include <cmath>
using std::isfinite;
using std::sqrt;
// CuPy's float16 converts to float for a math function, which then answers in float
inline float sqrt(_Float16 x) { return std::sqrt((float)x); }
"""

# NumPy dtype name -> C type, for the element type T and the fixed-type parameters
_C_TYPES = {
    "bool": "bool",
    "float16": "_Float16",
    "float32": "float",
    "float64": "double",
    "int32": "int",
    "int64": "long long",
}
# C type of a scalar kernel parameter -> (kind, bytes, ctypes type): an argument is taken
# when CuPy passes it with the same kind and size (see `_as_cupy_passes_it`)
_C_SCALARS = {
    "bool": ("bool", 1, ctypes.c_bool),
    "int": ("signed integer", 4, ctypes.c_int),
    "unsigned int": ("unsigned integer", 4, ctypes.c_uint),
    "long long": ("signed integer", 8, ctypes.c_longlong),
    "unsigned long long": ("unsigned integer", 8, ctypes.c_ulonglong),
    "float": ("float", 4, ctypes.c_float),
    "double": ("float", 8, ctypes.c_double),
}
_POINTER = ("pointer", 8, ctypes.c_void_p)
# NumPy dtype kind -> the kind named in _C_SCALARS
_KINDS = {
    "b": "bool",
    "i": "signed integer",
    "u": "unsigned integer",
    "f": "float",
    "c": "complex",
}
# the NumPy scalar types CuPy passes as they are (cupy/cuda/function.pyx)
_CUPY_SCALAR_TYPES = frozenset(numpy.dtype(c).type for c in "?bhilqBHILQefdFD")
_FORBIDDEN = ("__shared__", "__syncthreads", "atomic")


def cpp_compiler() -> str | None:
    """The path of g++ (or c++), or None when this machine has no C++ compiler."""
    return shutil.which("g++") or shutil.which("c++")


def compile_cpp(source: str, build_dir: pathlib.Path) -> ctypes.CDLL:
    """`source` compiled as a shared library and loaded (built once per distinct source)."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    library = build_dir / f"kernel_{digest}.so"
    if not library.exists():
        source_file = build_dir / f"kernel_{digest}.cpp"
        source_file.write_text(source)
        command = [cpp_compiler(), "-std=c++17", "-O2", "-ffp-contract=off", "-shared", "-fPIC"]
        result = subprocess.run(
            [*command, "-o", str(library), str(source_file)], capture_output=True, text=True
        )
        if result.returncode != 0:
            raise RuntimeError(f"g++ could not compile {source_file}:\n{result.stderr}")
    return ctypes.CDLL(str(library))


def _split_params(params: str) -> list[tuple[str, str]]:
    """'const float* a, int n' -> [('const float*', 'a'), ('int', 'n')]."""
    pairs = []
    for param in params.split(","):
        match = re.fullmatch(r"\s*(.*?[\s*&])(\w+)\s*", param, flags=re.S)
        if match is None:
            raise ValueError(f"cannot read the kernel parameter {param!r}")
        pairs.append((" ".join(match.group(1).split()), match.group(2)))
    return pairs


def _declared(c_type: str) -> tuple[str, int, Any]:
    """(kind, bytes, ctypes type) of a RawKernel parameter declared as `c_type`."""
    if c_type.endswith("*"):
        return _POINTER
    return _C_SCALARS[c_type.removeprefix("const ").strip()]


def _as_cupy_passes_it(value: Any) -> tuple[str, int, Any]:
    """(kind, bytes, value) of a RawKernel argument as CuPy 14 passes it, whatever the
    parameter's type (cupy/cuda/function.pyx, `_pointer`): an array (of any shape, 0-d
    included) or None is a pointer; a NumPy scalar its own bytes; a Python int an int64
    (a bool too, being an int), a float a float64, a complex a complex128."""
    if value is None or isinstance(value, numpy.ndarray):
        return "pointer", 8, value
    if type(value) not in _CUPY_SCALAR_TYPES:
        if isinstance(value, int):
            value = numpy.int64(value)  # OverflowError beyond int64, as in CuPy
        elif isinstance(value, float):
            value = numpy.float64(value)
        elif isinstance(value, complex):
            value = numpy.complex128(value)
        else:
            raise TypeError(f"Unsupported type {type(value)}")
    return _KINDS[value.dtype.kind], value.itemsize, value


def _described(kind: str, size: int) -> str:
    """("float", 4) -> "a 4-byte float"; ("pointer", 8) -> "a pointer"."""
    if kind == "pointer":
        return "a pointer"
    return f"{'an' if size == 8 else 'a'} {size}-byte {kind}"


def _type_name(value: Any) -> str:
    if isinstance(value, numpy.ndarray):
        return "an array"
    if isinstance(value, numpy.generic):
        return f"numpy.{type(value).__name__}"
    return type(value).__name__


class RawKernelOnCpu:
    """cupy.RawKernel(source, name), called as kernel(grid, block, args) on NumPy arrays."""

    def __init__(
        self,
        source: str,
        name: str,
        *,
        build_dir: pathlib.Path,
        calls: list,
        check_runs: bool,
        check_writers: bool,
    ) -> None:
        self.name, self.calls = name, calls
        self.check_runs, self.check_writers = check_runs, check_writers
        for word in _FORBIDDEN:
            if word in source:
                raise ValueError(f"{name}: threads that share work ({word}) cannot run in turn")
        match = re.search(rf'extern "C" __global__ void {name}\s*\((.*?)\)\s*\{{', source, re.S)
        if match is None:
            raise ValueError(f'no extern "C" __global__ function named {name} in the source')
        params = _split_params(match.group(1))
        names = ", ".join(param_name for _, param_name in params)
        # launch: every thread, first to last or last to first; launch_thread: one thread
        # alone. (Their own names start with convnet_, so no kernel parameter hides them.)
        launcher = (
            'extern "C" void launch_thread(unsigned int convnet_grid, unsigned int convnet_block,\n'
            f"                              long long convnet_id, {match.group(1)}) {{\n"
            "    gridDim.x = convnet_grid; blockDim.x = convnet_block;\n"
            "    blockIdx.x = convnet_id / convnet_block;\n"
            "    threadIdx.x = convnet_id % convnet_block;\n"
            f"    {name}({names});\n"
            "}\n"
            'extern "C" void launch(unsigned int convnet_grid, unsigned int convnet_block,\n'
            f"                       int convnet_reverse, {match.group(1)}) {{\n"
            "    const long long convnet_threads = (long long)convnet_grid * convnet_block;\n"
            "    for (long long convnet_k = 0; convnet_k < convnet_threads; ++convnet_k) {\n"
            "        const long long convnet_id =\n"
            "            convnet_reverse ? convnet_threads - 1 - convnet_k : convnet_k;\n"
            f"        launch_thread(convnet_grid, convnet_block, convnet_id, {names});\n"
            "    }\n"
            "}\n"
        )
        library = compile_cpp(_RAW_KERNEL_PRELUDE + source + launcher, build_dir)
        self.params = params
        self._declared = [_declared(c_type) for c_type, _ in params]
        self._ctypes = [ctype for _, _, ctype in self._declared]
        self._launch = library.launch
        self._launch.argtypes = [ctypes.c_uint, ctypes.c_uint, ctypes.c_int, *self._ctypes]
        self._launch.restype = None
        self._launch_thread = library.launch_thread
        self._launch_thread.argtypes = [ctypes.c_uint, ctypes.c_uint, ctypes.c_longlong]
        self._launch_thread.argtypes += self._ctypes
        self._launch_thread.restype = None

    def __call__(self, grid: tuple, block: tuple, args: tuple) -> None:
        if len(grid) != 1 or len(block) != 1:
            raise ValueError("only 1-D launches are emulated")
        if len(args) != len(self._ctypes):
            raise TypeError(f"the kernel takes {len(self._ctypes)} arguments, got {len(args)}")
        self._check_argument_types(args)
        self.calls.append(self.name)
        if self.check_runs or self.check_writers:
            self._launch_checked(grid[0], block[0], args)
        else:
            self.launch(grid[0], block[0], args)

    def _check_argument_types(self, args: tuple) -> None:
        """Refuse an argument that CuPy would pass with another kind or size than its
        parameter's: on a GPU the kernel would read other numbers from its bytes, or every
        later argument from the wrong place."""
        for (c_type, name), (kind, size, _), value in zip(
            self.params, self._declared, args, strict=True
        ):
            passed_kind, passed_size, _ = _as_cupy_passes_it(value)
            if (passed_kind, passed_size) != (kind, size):
                raise TypeError(
                    f"{self.name}: parameter `{name}` is declared `{c_type}` "
                    f"({_described(kind, size)}), given {_type_name(value)}: CuPy passes it "
                    f"as {_described(passed_kind, passed_size)}"
                )

    def _launch_checked(self, grid: int, block: int, args: tuple) -> None:
        """The launch, run the ways launch_checks describes, writing the first run's outputs
        (or those of a plain launch, when only the writers are checked)."""
        names = [name for _, name in self.params]
        arrays = {k: a for k, a in enumerate(args) if isinstance(a, numpy.ndarray)}
        outputs = [k for k in arrays if not self.params[k][0].startswith("const")]
        launch_checks.refuse_outputs_sharing_memory(self.name, names, arrays, outputs)

        def over(copies: dict) -> tuple:  # args, with each array replaced by its copy
            return tuple(copies[k].elements if k in copies else a for k, a in enumerate(args))

        def run(copies: dict, reverse: bool) -> dict:
            self.launch(grid, block, over(copies), reverse=reverse)
            return {}  # writes only into the arrays given

        def run_thread(copies: dict, thread: int) -> None:
            self.launch_thread(grid, block, thread, over(copies))

        if self.check_writers:
            launch_checks.check_each_element_has_one_writer(
                self.name, names, arrays, outputs, grid * block, run_thread
            )
        if self.check_runs:
            written = launch_checks.check_runs_agree(self.name, names, arrays, outputs, run)
            for k in outputs:
                arrays[k][...] = written[k]
        else:
            self.launch(grid, block, args)

    def launch(self, grid: int, block: int, args: tuple, *, reverse: bool = False) -> None:
        """Run every thread of the launch, in order (or in reverse order)."""
        self._launch(grid, block, int(reverse), *self._converted(args))

    def launch_thread(self, grid: int, block: int, thread: int, args: tuple) -> None:
        """Run thread number `thread` (blockIdx.x * blockDim.x + threadIdx.x) alone."""
        self._launch_thread(grid, block, thread, *self._converted(args))

    def _converted(self, args: tuple) -> list:
        """The arguments as ctypes values (their types already checked)."""
        converted = []
        for value, ctype in zip(args, self._ctypes, strict=True):
            if ctype is ctypes.c_void_p:  # the first element, also for a view
                converted.append(ctypes.c_void_p(None if value is None else value.ctypes.data))
            else:
                converted.append(ctype(_as_cupy_passes_it(value)[2].item()))
        return converted


class _ElementwiseParam:
    """One ElementwiseKernel parameter as CuPy reads it: `[raw] type name`, where a type of
    one letter (`T`, `S`) is a placeholder and any other names a dtype."""

    def __init__(self, declaration: str, *, kernel: str, is_output: bool) -> None:
        words = declaration.split()
        if len(words) < 2 or any(word != "raw" for word in words[:-2]):
            raise ValueError(f"{kernel}: cannot read the kernel parameter {declaration!r}")
        type_name, self.name = words[-2:]
        self.raw = "raw" in words[:-2]
        if self.raw and not is_output:
            raise ValueError(f"{kernel}: a raw input ({self.name}) is not emulated")
        self.placeholder = type_name if len(type_name) == 1 else None
        self.dtype = None if self.placeholder else numpy.dtype(type_name)
        if self.dtype is not None and self.dtype.name not in _C_TYPES:
            raise ValueError(f"{kernel}: no C type for {self.name}'s dtype {self.dtype} here")

    def dtype_in(self, types: dict[str, numpy.dtype]) -> numpy.dtype:
        """The parameter's dtype, given each placeholder's."""
        return self.dtype if self.placeholder is None else types[self.placeholder]

    def c_type(self) -> str:
        return self.placeholder or _C_TYPES[self.dtype.name]


def _is_cupy_scalar(value: Any) -> bool:
    """Whether CuPy takes `value` as a scalar kernel argument (cupy/_core/_scalar.pyx,
    CScalar): a Python bool, int, float or complex, or a NumPy scalar. An array (0-d
    included) is an array; anything else CuPy refuses."""
    if isinstance(value, numpy.ndarray):
        return False
    if type(value) in (bool, int, float, complex) or isinstance(value, numpy.generic):
        return True
    raise TypeError(f"Unsupported type {type(value)}")


class ElementwiseKernelOnCpu:
    """cupy.ElementwiseKernel(in_params, out_params, operation, name) on NumPy arrays.

    As in CuPy 14 (cupy/_core/_kernel.pyx, ElementwiseKernel.__call__): a placeholder
    (`T`, `S`: a type of one letter) takes the dtype of the arrays given for its
    parameters, outputs first, and an array of another dtype, or one for a fixed-type
    parameter (`float32 s`) of another dtype than that, raises `Type is mismatched.`;
    scalars decide no type and are converted to their parameter's. The arrays given for
    the parameters that are not raw are broadcast together (0-d arrays included); outputs
    passed after the inputs are written in place, others are returned new.
    """

    def __init__(
        self,
        in_params: str,
        out_params: str,
        operation: str,
        name: str,
        *,
        build_dir: pathlib.Path,
        calls: list,
        check_runs: bool,
    ) -> None:
        self.check_runs = check_runs
        self.inputs = [
            _ElementwiseParam(p, kernel=name, is_output=False) for p in in_params.split(",")
        ]
        self.outputs = [
            _ElementwiseParam(p, kernel=name, is_output=True) for p in out_params.split(",")
        ]
        self.operation = operation
        self.name = name
        self.build_dir = build_dir
        self.calls = calls

    def _source(self, types: dict[str, numpy.dtype], scalars: set[str]) -> str:
        """The loop, with `scalars` (input names) given as one value, the other inputs as
        arrays of the loop's shape."""
        params = ["long long n"]
        bind = []
        for param in self.inputs:
            index = "0" if param.name in scalars else "i"
            params.append(f"const {param.c_type()}* _raw_{param.name}")
            bind.append(f"const {param.c_type()}& {param.name} = _raw_{param.name}[{index}];")
        for param in self.outputs:
            if param.raw:  # the whole array, indexed by the operation
                params.append(f"{param.c_type()}* {param.name}")
            else:
                params.append(f"{param.c_type()}* _raw_{param.name}")
                bind.append(f"{param.c_type()}& {param.name} = _raw_{param.name}[i];")
        typedefs = "".join(
            f"typedef {_C_TYPES[dtype.name]} {name};\n" for name, dtype in sorted(types.items())
        )
        body = "\n        ".join(bind)
        return (
            f"{_ELEMENTWISE_PRELUDE}{typedefs}"
            f'extern "C" void {self.name}({", ".join(params)}, int convnet_reverse) {{\n'
            "    for (long long convnet_k = 0; convnet_k < n; ++convnet_k) {\n"
            "        const long long i = convnet_reverse ? n - 1 - convnet_k : convnet_k;\n"
            f"        {body}\n"
            f"        {self.operation};\n"
            "    }\n"
            "}\n"
        )

    def _loop_shape(self, given: list[tuple[_ElementwiseParam, Any]]) -> tuple:
        """The broadcast shape of the arrays given for parameters that are not raw."""
        arrays = [v for p, v in given if not p.raw and isinstance(v, numpy.ndarray)]
        if not arrays:
            raise ValueError("Loop size is undecided.")
        return numpy.broadcast_shapes(*(a.shape for a in arrays))

    def _decide_types(self, inputs: tuple, outputs: tuple) -> dict[str, numpy.dtype]:
        """Each placeholder's dtype, from the arrays given (outputs first), as CuPy's
        `_decide_params_type_core` decides them, with its errors."""
        types: dict[str, numpy.dtype] = {}
        given = [*zip(self.outputs, outputs, strict=False), *zip(self.inputs, inputs, strict=True)]
        for param, value in given:
            if not isinstance(value, numpy.ndarray):
                if param in self.outputs:
                    raise TypeError("Output arguments must be cupy.ndarray")
                continue  # a scalar takes its parameter's type
            if param.placeholder is None:
                if value.dtype != param.dtype:
                    raise TypeError(f"Type is mismatched. {param.name} {value.dtype} {param.dtype}")
            elif param.placeholder in types:
                decided = types[param.placeholder]
                if value.dtype != decided:
                    raise TypeError(
                        f"Type is mismatched. {param.name} {value.dtype} {decided} "
                        f"{param.placeholder}"
                    )
            else:
                types[param.placeholder] = value.dtype
        for param in self.inputs + self.outputs:
            if param.placeholder is not None and param.placeholder not in types:
                raise KeyError(param.placeholder)  # as CuPy's: only scalars for it
        for placeholder, dtype in types.items():
            if dtype.name not in _C_TYPES:
                raise TypeError(f"{self.name}: no C type for {placeholder} = {dtype} here")
        return types

    def _check_outputs(self, outputs: tuple, shape: tuple) -> None:
        """CuPy's checks of the outputs given (`_get_out_args_with_params`), or of their
        absence."""
        if not outputs:
            if any(param.raw for param in self.outputs):
                raise ValueError("Output array size is Undecided")
            return
        for param, value in zip(self.outputs, outputs, strict=True):
            if not param.raw and value.shape != shape:
                raise ValueError("Out shape is mismatched")
            if param.raw and not value.flags.c_contiguous:
                raise TypeError(f"{self.name}: a raw output must be a C-ordered array here")

    def __call__(self, *args: Any) -> Any:
        n_in, n_args = len(self.inputs), len(self.inputs) + len(self.outputs)
        if len(args) not in (n_in, n_args):
            raise TypeError(
                f"Wrong number of arguments for {self.name!r}. It must be either {n_in} or "
                f"{n_args} (with outputs), but given {len(args)}."
            )
        inputs, given_outputs = args[:n_in], args[n_in:]
        scalars = {p.name for p, v in zip(self.inputs, inputs, strict=True) if _is_cupy_scalar(v)}
        for value in given_outputs:
            _is_cupy_scalar(value)  # an unsupported type is refused before the rest
        params = self.inputs + self.outputs[: len(given_outputs)]
        shape = self._loop_shape(list(zip(params, args, strict=True)))
        types = self._decide_types(inputs, given_outputs)
        self._check_outputs(given_outputs, shape)
        self.calls.append(self.name)
        library = compile_cpp(self._source(types, scalars), self.build_dir)
        function = getattr(library, self.name)
        function.restype = None

        input_args: list[Any] = [ctypes.c_longlong(int(numpy.prod(shape)))]
        for param, value in zip(self.inputs, inputs, strict=True):
            dtype = param.dtype_in(types)
            if param.name in scalars:  # converted to the parameter's type, as CuPy does
                packed = numpy.empty((), dtype)
                packed[()] = value  # OverflowError for an int out of range, as in CuPy
                input_args.append(packed)
            else:  # a C-ordered copy of the broadcast array, of the parameter's dtype
                input_args.append(numpy.ascontiguousarray(numpy.broadcast_to(value, shape)))
        raw_outputs = {  # output position -> the array given, written in place
            index: given_outputs[index] for index, param in enumerate(self.outputs) if param.raw
        }

        def run(raw_targets: dict, reverse: bool) -> dict:
            """Run the loop over `raw_targets` (output position -> array or PaddedCopy) and
            new arrays for the other outputs; return those (output position -> array)."""
            made = {}
            out_args = []
            for index, param in enumerate(self.outputs):
                if index in raw_targets:
                    target = raw_targets[index]
                    out_args.append(getattr(target, "elements", target))
                else:  # C-ordered, copied into a given output afterwards
                    element = param.dtype_in(types)
                    out_args.append(made.setdefault(index, numpy.empty(shape, element)))
            call_args = (*input_args, *out_args, ctypes.c_int(int(reverse)))
            function(*(_as_pointer(a) if isinstance(a, numpy.ndarray) else a for a in call_args))
            return made

        if self.check_runs:
            names = [param.name for param in self.outputs]
            outputs = list(raw_outputs)
            written = launch_checks.check_runs_agree(self.name, names, raw_outputs, outputs, run)
            for index, target in raw_outputs.items():
                target[...] = written[index]
        else:
            written = run(raw_outputs, reverse=False) | raw_outputs
        results = [written[index] for index in range(len(self.outputs))]

        if given_outputs:
            for out, result in zip(given_outputs, results, strict=True):
                if out is not result:
                    out[...] = result  # of the same dtype, so no cast
            results = list(given_outputs)
        return results[0] if len(results) == 1 else tuple(results)


def _as_pointer(array: numpy.ndarray) -> ctypes.c_void_p:
    return ctypes.c_void_p(array.ctypes.data)


class CupyOnCpu:
    """The part of the `cupy` module that convnet_core.cuda_kernels uses, on the CPU."""

    def __init__(
        self, build_dir: pathlib.Path, *, check_runs: bool = False, check_writers: bool = False
    ) -> None:
        self.build_dir = build_dir
        self.check_runs = check_runs  # each launch three ways (launch_checks.check_runs_agree)
        self.check_writers = check_writers  # a RawKernel's threads alone, one by one
        self.kernels_built: list[str] = []  # kernel names, in the order they were built
        self.kernel_calls: list[str] = []  # kernel names, one per launch

    def RawKernel(self, source: str, name: str) -> RawKernelOnCpu:  # CuPy's names
        self.kernels_built.append(name)
        return RawKernelOnCpu(
            source,
            name,
            build_dir=self.build_dir,
            calls=self.kernel_calls,
            check_runs=self.check_runs,
            check_writers=self.check_writers,
        )

    def ElementwiseKernel(self, in_params, out_params, operation, name):
        self.kernels_built.append(name)
        return ElementwiseKernelOnCpu(
            in_params,
            out_params,
            operation,
            name,
            build_dir=self.build_dir,
            calls=self.kernel_calls,
            check_runs=self.check_runs,
        )

    ascontiguousarray = staticmethod(numpy.ascontiguousarray)
    empty = staticmethod(numpy.empty)
    zeros = staticmethod(numpy.zeros)
    empty_like = staticmethod(numpy.empty_like)
