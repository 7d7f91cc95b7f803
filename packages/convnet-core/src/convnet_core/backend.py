"""Choosing the array module: NumPy on the CPU, CuPy on an NVIDIA GPU.

Everything in convnet computes through an array module `xp` passed in by the caller, so
the same code runs on both. This module decides which one to use:

- `array_module("auto")` gives CuPy when a GPU is usable and NumPy otherwise (printing one
  line that says why it fell back), `array_module("cpu")` always NumPy, and
  `array_module("cuda")` CuPy or a clear `RuntimeError`.
- `NN_DISABLE_CUDA=1` forces the CPU for "auto"; `NN_FORCE_CUDA=1` makes "auto" insist on
  the GPU, warning clearly when that is impossible. These are the variables users of
  ConvNet-NumPy already set. Whatever reads them ("auto" and `USE_CUDA`) refuses a value
  that is neither true nor false, and the two set at once, with a ValueError; "cpu" and
  "cuda" do not read them.
- `CUDA_AVAILABLE` and `USE_CUDA` are plain booleans computed when read (importing CuPy
  is slow, so importing this module does not), as ConvNet-NumPy's `nn.cuda` had them.

`tune_allocator()` is an explicit opt-in for CPU training on glibc (Linux): it makes malloc
keep freed memory for reuse instead of handing every large temporary back to the OS.

`python -m convnet_core` prints what was found; with `--require-cuda` it exits non-zero
with the reason when no GPU is usable (the `tests-cuda` nox session runs it first).
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import os
import platform
import sys
import warnings
from types import ModuleType
from typing import Any

import numpy

from . import tree as _tree

__all__ = [
    "CUDA_AVAILABLE",  # noqa: F822 - computed when read, by the module's __getattr__
    "USE_CUDA",  # noqa: F822
    "array_module",
    "cuda_unavailable_reason",
    "device_name",
    "get_array_module",
    "is_cupy",
    "to_device",
    "to_host",
    "tune_allocator",
]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def _env_flag(name: str) -> bool:
    """Whether the environment variable `name` is set to a true value (1, true, yes, on).

    A value that is neither true nor false (0, false, no, off, or empty) is a ValueError:
    a misspelt setting must not be silently ignored.
    """
    value = os.environ.get(name, "").strip().lower()
    if value not in _TRUE | _FALSE:
        raise ValueError(
            f"{name}={os.environ[name]!r}: use 1, true, yes or on to set it, "
            "and 0, false, no, off or nothing to leave it unset"
        )
    return value in _TRUE


@functools.lru_cache(maxsize=1)
def cuda_unavailable_reason() -> str | None:
    """None when CuPy imports and sees a usable GPU; otherwise why not, in one line."""
    try:
        import cupy
    except ModuleNotFoundError as error:
        return f"CuPy is not installed ({type(error).__name__}: {error})"
    except Exception as error:  # a broken CUDA install can raise anything on import
        return f"CuPy is installed but cannot be imported ({type(error).__name__}: {error})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
        if count < 1:
            return "CuPy found no CUDA device"
        # A tiny computation proves the driver, the runtime and the kernels all work.
        value = int((cupy.arange(3) * 2).sum())
        if value != 6:
            return "CuPy computed a wrong result on the GPU"
    except Exception as error:
        return f"CuPy cannot use the GPU ({type(error).__name__}: {error})"
    return None


def _cuda_available() -> bool:
    return cuda_unavailable_reason() is None


def _cuda_switches() -> tuple[bool, bool]:
    """(NN_DISABLE_CUDA, NN_FORCE_CUDA) as booleans, for everything that reads them.

    ValueError for a value that is neither true nor false (see `_env_flag`), and for the
    two set at once: they ask for opposite things.
    """
    disable, force = _env_flag("NN_DISABLE_CUDA"), _env_flag("NN_FORCE_CUDA")
    if disable and force:
        raise ValueError("NN_DISABLE_CUDA and NN_FORCE_CUDA are both set; unset one")
    return disable, force


def _use_cuda() -> bool:
    """Whether `array_module("auto")` picks the GPU (without printing or warning)."""
    disable, _ = _cuda_switches()
    return not disable and _cuda_available()


# CUDA_AVAILABLE and USE_CUDA are module attributes computed when read (PEP 562): a
# constant would have to import CuPy when this module is imported, which is slow, and a
# stand-in object is not a bool (`USE_CUDA is False`, json.dumps and isinstance fail).
_COMPUTED = {
    #: True when CuPy is installed and a GPU is usable.
    "CUDA_AVAILABLE": _cuda_available,
    #: True when `array_module("auto")` would pick the GPU (honours NN_DISABLE_CUDA and
    #: NN_FORCE_CUDA, and raises ValueError as it does for a bad setting of them).
    "USE_CUDA": _use_cuda,
}


def __getattr__(name: str) -> bool:
    """`backend.CUDA_AVAILABLE` and `backend.USE_CUDA`: bools, computed on each read (the
    GPU probe behind them runs once per process, `cuda_unavailable_reason`)."""
    compute = _COMPUTED.get(name)
    if compute is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return bool(compute())


def __dir__() -> list[str]:
    return sorted([*globals(), *_COMPUTED])


_announced: set[str] = set()


def _announce_once(message: str) -> None:
    if message not in _announced:
        _announced.add(message)
        print(message, file=sys.stderr)


def array_module(device: str = "auto") -> ModuleType:
    """The array module for `device`: "auto", "cpu" or "cuda".

    "auto" uses the GPU when one is usable and NN_DISABLE_CUDA is not set, and otherwise
    NumPy, saying so once on stderr; it raises ValueError when NN_DISABLE_CUDA or
    NN_FORCE_CUDA holds neither a true nor a false value, or both are set. "cuda" raises
    RuntimeError when no GPU is usable. "cpu" and "cuda" do not read the two variables.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', not {device!r}")
    if device == "cpu":
        return numpy
    disable, force = _cuda_switches() if device == "auto" else (False, False)
    if disable:
        return numpy
    reason = cuda_unavailable_reason()
    if reason is None:
        import cupy

        return cupy
    if device == "cuda":
        raise RuntimeError(f"device='cuda' was asked for but no GPU is usable: {reason}")
    if force:
        warnings.warn(
            f"NN_FORCE_CUDA is set but no GPU is usable ({reason}); running on the CPU",
            RuntimeWarning,
            stacklevel=2,
        )
    else:
        _announce_once(f"convnet: running on the CPU with NumPy ({reason})")
    return numpy


def is_cupy(xp: Any) -> bool:
    """True when `xp` is the CuPy module."""
    return getattr(xp, "__name__", "") == "cupy"


def get_array_module(array: Any) -> ModuleType:
    """The module an array belongs to: cupy for a cupy.ndarray, numpy for anything else."""
    module = type(array).__module__
    if module.startswith("cupy"):
        import cupy

        return cupy
    return numpy


def device_name(xp: Any = None) -> str:
    """A human-readable name of where `xp` computes ("CPU (NumPy 2.1.0)", "NVIDIA H100 ...")."""
    xp = array_module() if xp is None else xp
    if not is_cupy(xp):
        return f"CPU (NumPy {numpy.__version__})"
    props = xp.cuda.runtime.getDeviceProperties(xp.cuda.Device().id)
    name = props["name"]
    name = name.decode() if isinstance(name, bytes) else name
    return f"{name} (CuPy {xp.__version__})"


def to_device(tree: Any, xp: Any) -> Any:
    """Copy every array leaf of `tree` into `xp` (a no-op for leaves already there)."""

    def move(leaf: Any) -> Any:
        if isinstance(leaf, (numpy.ndarray, numpy.generic)) or hasattr(
            leaf, "__cuda_array_interface__"
        ):
            return xp.asarray(leaf)
        return leaf

    return _tree.map(move, tree)


def to_host(tree: Any) -> Any:
    """`tree` with every GPU array leaf copied to a NumPy array on the host; host arrays
    and other leaves are returned as they are (not copied)."""

    def move(leaf: Any) -> Any:
        if hasattr(leaf, "__cuda_array_interface__"):
            return leaf.get()
        return leaf

    return _tree.map(move, tree)


# mallopt(3) parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_allocator(mmap_threshold: int = 64 << 20, trim_threshold: int = 256 << 20) -> bool:
    """Make glibc's malloc keep freed memory for reuse; True if applied, else a no-op (False).

    By default glibc returns the top of its heap to the kernel whenever more than its trim
    threshold is free there (twice the largest block it has mmapped and freed, so a few
    MB), and it mmaps, then unmaps, every block above its mmap threshold (128 KiB, raised
    as blocks are freed, up to 32 MiB). Each training step frees all its arrays, so the
    next one lands on fresh pages that the kernel zero-fills one by one: a step of the
    README model at batch 64 takes about 1,700 page faults, a third of its time.

    This calls `mallopt(M_MMAP_THRESHOLD, mmap_threshold)` (bytes; only larger blocks are
    mmapped) and `mallopt(M_TRIM_THRESHOLD, trim_threshold)` (bytes of free memory kept
    at the top of the heap before it is returned), the same as setting the
    environment variables MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ before Python
    starts. The cost: the process keeps up to `trim_threshold` bytes of freed memory.

    It changes the whole process (every library's allocations) and is never applied on
    import: call it once at the start of a program. It does nothing and returns False on
    a C library other than glibc (macOS, Windows, musl) or if glibc refuses a value.
    """
    if not (0 <= mmap_threshold < 2**31 and 0 <= trim_threshold < 2**31):
        raise ValueError(
            f"tune_allocator: thresholds must be 0 to 2**31 - 1 bytes, got mmap_threshold="
            f"{mmap_threshold}, trim_threshold={trim_threshold}"
        )
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    applied = mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold)) == 1
    return mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)) == 1 and applied


def _main(argv: list[str]) -> int:
    """`python -m convnet_core [--require-cuda]`: print whether a GPU is usable, and why
    not; the exit status is 1 when `--require-cuda` is given and none is, else 0.

    `--help` prints the usage; an unknown argument is an error (status 2), as argparse
    makes it.
    """
    parser = argparse.ArgumentParser(
        prog="python -m convnet_core",
        description="Say whether convnet can use a GPU (CuPy and a working NVIDIA device), "
        "and if not, why not.",
    )
    parser.add_argument(
        "--require-cuda",
        action="store_true",
        help="exit with status 1 when no GPU is usable (the first step of nox -s tests-cuda)",
    )
    args = parser.parse_args(argv)
    reason = cuda_unavailable_reason()
    if reason is None:
        import cupy

        print(f"GPU usable: {device_name(cupy)}")
        return 0
    print(f"no usable GPU: {reason}")
    if args.require_cuda:
        print(
            "tests-cuda needs CuPy and a working NVIDIA GPU; "
            "install convnet-core[cuda13] (or [cuda12]) on a machine with one",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":  # the older spelling; Python warns that the module ran twice
    raise SystemExit(_main(sys.argv[1:]))
