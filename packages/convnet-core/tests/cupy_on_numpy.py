"""NumPy dressed as CuPy: a `cupy` module to run convnet's GPU code paths without a GPU.

`make_cupy_on_numpy(build_dir)` returns a module named "cupy" that has what convnet's
packages and test_cuda_equivalence.py use of CuPy, over NumPy:

- arrays are `CupyArray` (tests/device_arrays.py): NumPy cannot touch them, mixing them with
  NumPy arrays raises, reductions give 0-d arrays, `.get()` copies to the host, and
  `backend.get_array_module` and `backend.to_host` take them for CuPy arrays;
- `ElementwiseKernel` and `RawKernel` compile the kernels' CUDA source with g++
  (tests/cuda_source_on_cpu.py), so the fused kernels run from their own source, each
  launch checked for reads and writes outside its arrays and for threads that depend on
  each other's writes (tests/launch_checks.py);
- `cuda.Device`, `cuda.Stream`, `cuda.get_current_stream`, `cuda.runtime` for one device;
- `random.default_rng` with only the draws CuPy's generator has;
- when the real CuPy is installed (it imports without a GPU), only the functions, array
  attributes and arguments it has: asking for a function it lacks raises AttributeError,
  and passing an argument it does not take raises TypeError, as they would there;
- `refusing_host_reads()`, a block in which every host read raises (float, bool, int,
  item, get, a boolean mask, a synchronize): tests/host_waits.py uses it where on a GPU it
  holds the GPU back to see whether the host waits;
- `cupyx.profiler.benchmark`, which runs the function once and reports that one time (so
  benchmarks/bench_gpu.py runs through; its figures mean nothing here).

With it installed as `sys.modules["cupy"]`, `backend.array_module("cuda")`,
`Model(device="cuda")` and every `is_cupy(xp)` branch take the GPU path on the CPU. What it
cannot show is CuPy's own behaviour: summation order, float16 arithmetic, speed.

Loaded as a pytest plugin (`pytest -p cupy_on_numpy`, with this folder on the path), it is
installed for the whole run and sets CONVNET_TEST_DEVICE=cuda, so every package's tests run
as tests-cuda runs them, on the CPU: the `tests-cuda-on-cpu` nox session.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pathlib
import sys
import tempfile
import time
import types
from typing import Any

import numpy
from cuda_source_on_cpu import CupyOnCpu
from device_arrays import (
    DeviceArray,
    DeviceGenerator,
    checked_against,
    count_call,
    make_array_module,
    unwrap,
)

__all__ = [
    "CupyArray",
    "HostReadRefused",
    "cupy_on_numpy_installed",
    "make_cupy_on_numpy",
    "refusing_host_reads",
]

# cupy.random.Generator's draws in CuPy 14 (a subset of NumPy's)
CUPY_GENERATOR_METHODS = frozenset(
    "beta binomial chisquare dirichlet exponential f gamma geometric hypergeometric integers "
    "logseries poisson power random standard_exponential standard_gamma standard_normal "
    "uniform".split()
)


class HostReadRefused(RuntimeError):
    """A value was read on the host inside `refusing_host_reads()`."""


_host_reads_refused = [False]


@contextlib.contextmanager
def refusing_host_reads() -> Any:
    """A block in which reading a device value on the host, or synchronizing, raises
    HostReadRefused: on a GPU each of these would make the host wait for it."""
    saved = _host_reads_refused[0]
    _host_reads_refused[0] = True
    try:
        yield
    finally:
        _host_reads_refused[0] = saved


def _refuse_if_refusing(what: str) -> None:
    if _host_reads_refused[0]:
        raise HostReadRefused(f"{what} waits for the GPU")


class CupyArray(DeviceArray):
    """A cupy.ndarray stand-in: a NumPy array only the `cupy` stand-in's functions touch."""

    __module__ = "cupy"  # backend.get_array_module looks at the type's module
    reference_ndarray: Any = None  # the real cupy.ndarray, when CuPy is installed

    def __getattr__(self, name: str) -> Any:
        reference = type(self).reference_ndarray
        if reference is None or name.startswith("__"):
            return super().__getattr__(name)
        if not hasattr(reference, name):
            raise AttributeError(f"cupy.ndarray has no {name!r}")
        attribute = super().__getattr__(name)
        if not callable(attribute):
            return attribute
        return checked_against(getattr(reference, name), f"cupy.ndarray.{name}", attribute)

    def _host_read(self, what: str) -> None:
        _refuse_if_refusing(what)

    @property
    def __cuda_array_interface__(self) -> dict:
        data = self._data
        return {
            "shape": data.shape,
            "typestr": data.dtype.str,
            "data": (data.ctypes.data, False),
            "strides": data.strides,
            "version": 3,
        }

    @property
    def device(self) -> Device:
        return Device(0)


class _WaitsForTheGpu:
    """What cupy.cuda.Device and Stream share here: a `with` block that does nothing (one
    device, one queue) and a synchronize, refused where host reads are."""

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def synchronize(self) -> None:
        _refuse_if_refusing(f"{type(self).__name__}.synchronize()")


class Device(_WaitsForTheGpu):
    """cupy.cuda.Device: the one device, 0."""

    def __init__(self, device: int = 0) -> None:
        if int(device) != 0:
            raise ValueError(f"there is one device, 0, not {device}")
        self.id = 0


class Stream(_WaitsForTheGpu):
    """cupy.cuda.Stream: one queue, as the stand-in runs everything at once."""

    def __init__(self, non_blocking: bool = False) -> None:
        self.non_blocking = non_blocking


def _as_host(value: Any) -> Any:
    return value._data if isinstance(value, DeviceArray) else value


def _on_device_arrays(kernel: Any, array_class: type) -> Any:
    """A CPU kernel (tests/cuda_source_on_cpu.py) made to take and give device arrays."""

    def call(*args: Any, **kwargs: Any) -> Any:
        count_call(f"kernel {kernel.name}")
        return array_class._wrap(kernel(*unwrap(args), **kwargs))

    return call


_STAND_IN_MODULES = ("cupy", "cupyx", "cupyx.profiler")
_real_cupy: list[Any] = []  # [the installed CuPy module or None], found once


def real_cupy() -> Any:
    """The installed CuPy module (importing it needs no GPU), or None; imported once, and
    never again, since a second import of a package would make a second module."""
    if not _real_cupy:
        current = sys.modules.get("cupy")
        if current is not None and not getattr(current, "is_stand_in", False):
            _real_cupy.append(current)
            return current
        stand_in = sys.modules.pop("cupy", None)
        try:
            import cupy

            _real_cupy.append(cupy)
        except ImportError:
            _real_cupy.append(None)
        finally:
            if stand_in is not None:
                sys.modules["cupy"] = stand_in
    return _real_cupy[0]


def make_cupy_on_numpy(
    build_dir: pathlib.Path, reference: Any = None, *, check_launches: bool = True
) -> types.ModuleType:
    """The `cupy` stand-in; kernels are compiled into `build_dir`. With `reference` (the real
    CuPy module) it offers only the names that has. With `check_launches`, each kernel
    launch runs the three ways of launch_checks.check_runs_agree (about three times the
    kernels' work): for tests, not for a program only run to see that its paths work."""
    # each stand-in has its own array class, so one's reference does not leak to another
    ndarray = type(
        "ndarray",
        (CupyArray,),
        {"__module__": "cupy", "reference_ndarray": getattr(reference, "ndarray", None)},
    )
    cupy = make_array_module("cupy", ndarray, reference=reference)
    cupy.__version__ = f"NumPy {numpy.__version__} dressed as CuPy"
    cupy.is_stand_in = True
    cupy.ndarray = ndarray
    cupy.asnumpy = lambda a: a.get() if isinstance(a, ndarray) else numpy.asarray(a)
    cupy.get_array_module = lambda *arrays: (
        cupy if any(isinstance(a, ndarray) for a in arrays) else numpy
    )

    kernels = CupyOnCpu(build_dir, check_runs=check_launches)

    def elementwise_kernel(*args: Any) -> Any:
        return _on_device_arrays(kernels.ElementwiseKernel(*args), ndarray)

    def raw_kernel(*args: Any) -> Any:
        return _on_device_arrays(kernels.RawKernel(*args), ndarray)

    cupy.ElementwiseKernel, cupy.RawKernel = elementwise_kernel, raw_kernel

    def standard_normal(size: Any = None, dtype: Any = float) -> CupyArray:
        return ndarray(numpy.random.default_rng().standard_normal(size, dtype=dtype))

    draws, generator = CUPY_GENERATOR_METHODS, None
    if reference is not None:
        generator = reference.random.Generator
        draws = {name for name in dir(generator) if not name.startswith("_")}
    cupy.random = types.SimpleNamespace(
        default_rng=functools.partial(
            DeviceGenerator, array_class=ndarray, methods=draws, reference=generator
        ),
        standard_normal=standard_normal,
    )
    cupy.cuda = types.SimpleNamespace(
        Device=Device,
        Stream=Stream,
        get_current_stream=Stream,
        runtime=types.SimpleNamespace(
            getDeviceCount=lambda: 1,
            getDeviceProperties=lambda device: {"name": b"NumPy dressed as CuPy"},
        ),
    )
    cupy.testing = types.SimpleNamespace(
        assert_allclose=lambda a, b, **kw: numpy.testing.assert_allclose(
            _as_host(a), _as_host(b), **kw
        ),
        assert_array_equal=lambda a, b, **kw: numpy.testing.assert_array_equal(
            _as_host(a), _as_host(b), **kw
        ),
    )
    return cupy


def make_cupyx_on_numpy() -> types.ModuleType:
    """`cupyx` with `profiler.benchmark(fn, n_repeat=..., n_warmup=..., name=...)`, timing
    one call. Without `name` it reads `function.__name__`, as CuPy's does (a
    functools.partial has none)."""

    def benchmark(
        function: Any,
        args: tuple = (),
        kwargs: dict | None = None,
        n_repeat: int = 1,
        *,
        name: str | None = None,
        n_warmup: int = 0,
    ):
        if name is None:
            name = function.__name__  # AttributeError for a partial, as in CuPy
        start = time.perf_counter()
        function(*args, **(kwargs or {}))
        elapsed = numpy.array([[time.perf_counter() - start]])  # (devices, repeats)
        return types.SimpleNamespace(gpu_times=elapsed, cpu_times=elapsed[0])

    cupyx = types.ModuleType("cupyx")
    cupyx.profiler = types.ModuleType("cupyx.profiler")
    cupyx.profiler.benchmark = benchmark
    return cupyx


@contextlib.contextmanager
def cupy_on_numpy_installed(build_dir: pathlib.Path, *, check_launches: bool = True) -> Any:
    """The stand-in as `sys.modules["cupy"]` (and so the GPU convnet finds) for the block;
    `check_launches` as for make_cupy_on_numpy."""
    from convnet_core import backend, cuda_kernels

    reference = real_cupy()
    saved_modules = {name: sys.modules.get(name) for name in _STAND_IN_MODULES}
    saved_kernels = dict(cuda_kernels._KERNELS)
    cupyx = make_cupyx_on_numpy()
    sys.modules.update(cupyx=cupyx, **{"cupyx.profiler": cupyx.profiler})
    sys.modules["cupy"] = make_cupy_on_numpy(build_dir, reference, check_launches=check_launches)
    cuda_kernels._KERNELS.clear()  # kernels built by another `cupy` are not ours
    backend.cuda_unavailable_reason.cache_clear()  # it finds the stand-in's one device
    try:
        yield sys.modules["cupy"]
    finally:
        for name, module in saved_modules.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
        cuda_kernels._KERNELS.clear()
        cuda_kernels._KERNELS.update(saved_kernels)
        backend.cuda_unavailable_reason.cache_clear()


# ---------------------------------------------------------------------------------------
# as a pytest plugin: the whole run on the stand-in

_plugin_state: dict[str, Any] = {}


def pytest_configure(config: Any) -> None:
    build_dir = pathlib.Path(tempfile.mkdtemp(prefix="cupy_on_numpy_"))
    installed = cupy_on_numpy_installed(build_dir)
    installed.__enter__()
    _plugin_state.update(installed=installed, device=os.environ.get("CONVNET_TEST_DEVICE"))
    os.environ["CONVNET_TEST_DEVICE"] = "cuda"


def pytest_unconfigure(config: Any) -> None:
    if "installed" in _plugin_state:
        _plugin_state.pop("installed").__exit__(None, None, None)
        device = _plugin_state.pop("device")
        if device is None:
            os.environ.pop("CONVNET_TEST_DEVICE", None)
        else:
            os.environ["CONVNET_TEST_DEVICE"] = device


def pytest_report_header(config: Any) -> str:
    reference = sys.modules["cupy"].ndarray.reference_ndarray
    names = (
        "names checked against the installed CuPy"
        if reference is not None
        else ("CuPy is not installed, so its names are not checked")
    )
    return f"cupy: NumPy dressed as CuPy (tests/cupy_on_numpy.py), kernels by g++; {names}"
