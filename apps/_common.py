"""Helpers shared by the programs in apps/: threads, errors, data, reports and plots.

Nothing here imports NumPy at module level: `set_blas_threads` must run before NumPy
loads its BLAS library, because OpenBLAS reads its thread count from the environment
once, when it is loaded (setting the variable afterwards, as ConvNet-NumPy did, changes
nothing).
"""

from __future__ import annotations

import errno
import importlib
import importlib.machinery
import json
import math
import os
import pathlib
import signal
import sys
import tempfile
import traceback
from typing import Any, NamedTuple

import click

#: Setting this environment variable shows the full traceback of an unexpected error.
DEBUG_ENV = "CONVNET_DEBUG"

_THREAD_VARIABLES = (
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


class AppError(Exception):
    """An error the user can fix; the program prints its message as one line and exits 1."""


class FiniteFloatRange(click.FloatRange):
    """`click.FloatRange` that also refuses nan, inf and -inf.

    NaN fails every comparison, so FloatRange lets it through whatever the bounds, and an
    open-ended range lets infinity through; a NaN learning rate or weight decay would only
    show up later as a diverged loss, and `--val-split nan` would silently mean no split.
    """

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


# Options that evaluate.py and show_filters.py share.
data_option = click.option(
    "--data",
    "data_dir",
    type=click.Path(file_okay=False, path_type=pathlib.Path),
    help="Folder with the MNIST test files t10k-images-idx3-ubyte.gz and "
    "t10k-labels-idx1-ubyte.gz (default: the bundled data/mnist).",
)
threads_option = click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="BLAS threads for the CPU (more rarely pay for these small networks).",
)


# The option of the programs that load a model: evaluate.py, show_filters.py, mnist_gui.py.
import_option = click.option(
    "--import",
    "imports",
    metavar="MODULE",
    multiple=True,
    help="Import MODULE before loading the model, so that the custom layers it registers "
    "with @register_layer can be loaded (repeat the option for several modules). MODULE is "
    "a module name such as mylayers or mypkg.layers, looked for first in the current "
    "directory, then on the Python path.",
)


def plural(count: int, word: str) -> str:
    """'1 filter', '2 filters', '0 epochs'."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


# ---------------------------------------------------------------------------------------
# Threads


_thread_limiter: Any = None  # keeps a threadpoolctl limiter alive for the whole run


def set_blas_threads(threads: int | None) -> None:
    """Make BLAS (matmul, the heart of every conv) use `threads` threads; None keeps the default.

    Before NumPy is imported the environment variables read by OpenBLAS, MKL, BLIS and
    OpenMP are set, which works with every BLAS. When NumPy is already imported, the
    thread pools are resized through threadpoolctl, else through OpenBLAS's own
    `openblas_set_num_threads`; failing both, the program re-executes itself with the
    variables set (only when it runs as a script).
    """
    global _thread_limiter
    if threads is None:
        return
    if threads < 1:
        raise AppError(f"--threads must be at least 1, not {threads}")
    numpy_loaded = "numpy" in sys.modules
    for name in _THREAD_VARIABLES:
        os.environ[name] = str(threads)
    if not numpy_loaded:
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        if not _call_openblas("set_num_threads", threads):
            _reexec_with_environment()
        return
    _thread_limiter = threadpool_limits(limits=threads)


def _reexec_with_environment() -> None:
    """Run this program again from the start, so that NumPy loads with the new variables."""
    marker = "CONVNET_THREADS_REEXEC"
    main = sys.modules.get("__main__")
    if os.environ.get(marker) or not getattr(main, "__file__", None):
        return  # already re-executed, or not a script: keep going with what we have
    os.environ[marker] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def _openblas_libraries() -> list[str]:
    """Paths of the OpenBLAS libraries loaded in this process (Linux: /proc/self/maps)."""
    import numpy  # noqa: F401  (loads the BLAS library)

    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            return sorted({line.split()[-1] for line in maps if "openblas" in line.lower()})
    except OSError:
        return []


def _call_openblas(function: str, *args: int) -> int | None:
    """Call `openblas_<function>(*args)` of the loaded OpenBLAS through ctypes; None if absent.

    NumPy's wheels rename the symbols (scipy_openblas_..._64_), so each spelling is tried.
    """
    import ctypes

    names = (f"openblas_{function}", f"scipy_openblas_{function}64_")
    names += (f"openblas_{function}64_", f"scipy_openblas_{function}")
    for path in _openblas_libraries():
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for name in names:
            entry = getattr(library, name, None)
            if entry is not None:
                entry.restype = None if function.startswith("set_") else ctypes.c_int
                result = entry(*args)
                return 1 if result is None else int(result)  # 1: a setter that ran
    return None


def openblas_threads() -> int | None:
    """The thread count OpenBLAS reports for itself (`openblas_get_num_threads`), or None."""
    return _call_openblas("get_num_threads")


def blas_description() -> str:
    """One line: the BLAS library and how many threads it uses (read back, not assumed)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        count = openblas_threads()
        if count is None:
            wanted = os.environ.get("OPENBLAS_NUM_THREADS")
            if wanted:
                return f"BLAS threads: {wanted} (asked through OPENBLAS_NUM_THREADS)"
            return f"BLAS threads: the library's default (this machine has {os.cpu_count()} cores)"
        return f"BLAS threads: {count} (openblas)"
    import numpy  # noqa: F401  (loads the BLAS library)

    pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    if not pools:
        return "BLAS threads: unknown (no BLAS library found)"
    return ", ".join(
        f"BLAS threads: {p['num_threads']} ({p.get('internal_api', 'blas')})" for p in pools
    )


# ---------------------------------------------------------------------------------------
# Errors: one clear line and a non-zero exit, never a traceback


def one_line(error: BaseException) -> str:
    """The error's message on one line (multi-line messages are joined with '; ')."""
    text = str(error).strip() or type(error).__name__
    return "; ".join(part.strip() for part in text.splitlines() if part.strip())


def describe_os_error(error: OSError) -> str:
    """A short sentence for an OSError: full disk, permissions, missing files."""
    where = error.filename if error.filename is not None else ""
    where = f" {where}" if where else ""
    if error.errno == errno.ENOSPC:
        return f"no space left on the device while writing{where}"
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"permission denied:{where}" if where else "permission denied"
    if error.errno == errno.ENOENT:
        return f"no such file or directory:{where}" if where else one_line(error)
    if error.strerror:
        return f"{error.strerror.lower()}:{where}" if where else error.strerror.lower()
    return one_line(error)


def _is_disk_full(error: BaseException) -> bool:
    """True when `error` or one of its causes is ENOSPC (HDF5 reports it inside its message)."""
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        text = str(error)
        if "No space left on device" in text or "errno = 28," in text:
            return True
        error = error.__cause__ or error.__context__
        seen += 1
    return False


def debug_requested() -> bool:
    """Whether CONVNET_DEBUG asks for the traceback of a failure.

    The value is read as convnet_core.backend reads NN_DISABLE_CUDA and NN_FORCE_CUDA: 1,
    true, yes or on set it; 0, false, no, off or nothing leave it unset; anything else is
    a ValueError saying so. It is called only once the command has failed, so that
    importing convnet_core (and NumPy with it) never comes before `set_blas_threads`.
    """
    from convnet_core.backend import _env_flag

    return _env_flag(DEBUG_ENV)


def _debug_note(error: BaseException, hint: str = "") -> str:
    """Print the traceback of `error` when CONVNET_DEBUG asks for it; returns how the
    error's line ends: "" after a traceback, else `hint`, or why CONVNET_DEBUG was not
    understood when its value is neither true nor false."""
    try:
        debug = debug_requested()
    except ValueError as problem:
        return f" (no traceback: {one_line(problem)})"
    except ImportError:  # convnet_core itself is broken: its import error is the message
        return hint
    if debug:
        traceback.print_exception(type(error), error, error.__traceback__)
        return ""
    return hint


def run_command(command: click.Command, prog: str, argv: list[str] | None = None) -> int:
    """Run a click command; map every failure to one line on stderr and an exit code.

    0 success, 1 an error (bad file, full disk, ...), 2 bad arguments, 130 interrupted.
    When CONVNET_DEBUG is set (`debug_requested`), the traceback of an error that is not
    about the arguments comes before its line.
    """

    def fail(message: str, code: int, error: BaseException | None = None, hint: str = "") -> int:
        if error is not None:
            message += _debug_note(error, hint)
        click.echo(f"{prog}: error: {message}", err=True)
        return code

    try:
        result = command.main(args=argv, prog_name=prog, standalone_mode=False)
    except click.UsageError as error:  # the cause's traceback: a module --import ran
        message = f"{one_line(error.format_message())} (see {prog} --help)"
        return fail(message, 2, error.__cause__)
    except click.ClickException as error:
        return fail(one_line(error.format_message()), error.exit_code)
    except (click.Abort, KeyboardInterrupt):
        return fail("interrupted", 130)
    except AppError as error:
        return fail(one_line(error), 1, error)
    except MemoryError as error:
        return fail("out of memory (try a smaller --batch-size)", 1, error)
    except Exception as error:
        if _is_disk_full(error):
            where = getattr(error, "filename", None)
            where = f" while writing {where}" if where else ""
            return fail(f"no space left on the device{where}", 1, error)
        if isinstance(error, OSError):
            return fail(describe_os_error(error), 1, error)
        if isinstance(error, (ValueError, RuntimeError, ImportError)):
            # ModelFormatError, data errors: their message names the file
            return fail(one_line(error), 1, error)
        hint = f" (set {DEBUG_ENV}=1 for the traceback)"
        return fail(f"{type(error).__name__}: {one_line(error)}", 1, error, hint)
    return int(result or 0)


# ---------------------------------------------------------------------------------------
# Custom layers: the modules --import names


def import_modules(names: tuple[str, ...]) -> None:
    """Import each module of `names` (the --import options), in order, so that the layers
    they register can be loaded.

    The current directory is searched first, as `python -c` and `python -m` search it: a
    user's code.py is imported for `--import code`, not the standard library's `code`.
    Afterwards the current directory stays on the Python path, but last, so that the
    modules the program itself imports later are not taken from it.

    A usage error names the module and why it could not be imported: where the module's
    own code failed, the file and line; CONVNET_DEBUG shows the whole traceback. A file
    name or path instead of a module name, and a module of the current directory whose
    name is already taken by a module loaded from elsewhere, are usage errors too.
    """
    if not names:
        return
    here = os.getcwd()
    sys.path.insert(0, here)
    importlib.invalidate_caches()  # the folder may have changed since it was last listed
    try:
        for name in names:
            _import_module(name, here)
    finally:
        sys.path.remove(here)  # the first entry that is `here`: the one inserted above
        if here not in sys.path and "" not in sys.path:
            sys.path.append(here)


def _import_module(name: str, here: str) -> None:
    """Import the module `name`, the current directory `here` being first on sys.path."""
    if name.endswith(".py") or "/" in name or os.sep in name:
        raise click.BadParameter(
            f"cannot import {name}: {_module_name_hint(name, here)}", param_hint="--import"
        )
    _check_not_shadowed(name, here)
    try:
        importlib.import_module(name)
    except Exception as error:
        cause = f"{type(error).__name__}: {one_line(error)}{_failed_line(error)}"
        raise click.BadParameter(f"cannot import {name}: {cause}", param_hint="--import") from error


def _module_name_hint(name: str, here: str) -> str:
    """What to give --import instead of the file or path `name`: the dotted path of the
    module relative to the current directory `here` (./mylayers.py -> mylayers,
    pkg/layers.py and pkg/layers -> pkg.layers); for a file outside `here`, its folder to
    run from and its stem."""
    path = os.path.abspath(name)
    kind = "file name" if path.endswith(".py") else "path"
    if path.endswith(".py"):
        path = path[: -len(".py")]
    if os.path.basename(path) == "__init__":  # pkg/__init__.py is the package pkg
        path = os.path.dirname(path)
    try:
        relative = os.path.relpath(path, here)
    except ValueError:  # another drive (Windows)
        relative = os.pardir
    if relative != os.curdir and not relative.startswith(os.pardir):
        return f"give the module's name, not its {kind}: --import {relative.replace(os.sep, '.')}"
    folder, stem = os.path.split(path)
    return (
        f"give the module's name, not its {kind}; {folder} is outside the current "
        f"directory: run from {folder} (or put it on PYTHONPATH) and give --import {stem}"
    )


def _check_not_shadowed(name: str, here: str) -> None:
    """A usage error when the top package of `name` is a module of the current directory
    `here`, but a module of that name was already loaded from elsewhere (the standard
    library's `code`, say): Python would keep the loaded one, and the user's file would
    silently not be imported."""
    top = name.partition(".")[0]
    loaded = sys.modules.get(top)
    if loaded is None:
        return
    local = importlib.machinery.PathFinder.find_spec(top, [here])
    if local is None:
        return
    ours, theirs = _spec_location(local), _module_location(loaded)
    if theirs is not None and os.path.realpath(ours) == os.path.realpath(theirs):
        return
    if os.path.basename(ours).startswith("__init__."):  # a package: its folder
        ours = os.path.dirname(ours)
    raise click.BadParameter(
        f"cannot import {name}: {ours} cannot be imported as {top}, because a module of "
        f"that name is already loaded from {theirs or 'the interpreter (built in)'}; rename "
        f"{os.path.basename(ours)} and give --import with the new name",
        param_hint="--import",
    )


def _spec_location(spec) -> str:
    """The file (a module) or folder (a namespace package) where a module spec was found."""
    if spec.origin is not None and spec.has_location:
        return spec.origin
    return list(spec.submodule_search_locations)[0]


def _module_location(module) -> str | None:
    """The file (or namespace package's folder) a loaded module came from; None when
    built into the interpreter."""
    location = getattr(module, "__file__", None)
    if location is None:
        location = next(iter(getattr(module, "__path__", None) or []), None)
    return location


def _failed_line(error: BaseException) -> str:
    """' (FILE, line N)': the first line of the imported code on the way to `error`, the
    frames of importlib left out; "" when none (a module not found, a syntax error, whose
    message says where)."""
    frames = traceback.extract_tb(error.__traceback__)
    starts = [i for i, frame in enumerate(frames) if frame.filename == importlib.__file__]
    for frame in frames[starts[-1] + 1 if starts else 0 :]:
        if not frame.filename.startswith("<"):  # "<frozen importlib._bootstrap>"
            return f" ({frame.filename}, line {frame.lineno})"
    return ""


def unknown_layer_hint(error: BaseException) -> str:
    """What to add to the message of a model that could not be loaded: how to import the
    module of a layer class it does not know ("" for any other problem)."""
    if "unknown layer class" not in str(error):
        return ""
    return " (give --import MODULE to import the module that registers it)"


# ---------------------------------------------------------------------------------------
# Files


def companion_path(model_path: str | os.PathLike, suffix: str) -> pathlib.Path:
    """A file beside the model: models/mnist.h5 + ".history.json" -> models/mnist.history.json."""
    path = pathlib.Path(model_path)
    return path.with_name(path.stem + suffix)


class FileUse(NamedTuple):
    """A file a program reads or writes, as `check_distinct_files` compares them."""

    #: the path as the user gave it, or as it was derived from one (NAME.ckpt.h5)
    path: pathlib.Path
    #: how the usage error names it: "the model MODEL", "the --plot PNG"
    what: str
    #: the option that names it, which the usage error points at ("--out" for the files
    #: written beside --out); None for an argument
    option: str | None = None
    #: it holds a model: read, it is the file `load_model` finds (NAME or NAME.npz); written,
    #: the file a save writes (NAME.npz without h5py)
    model: bool = False


def model_file(path: str | os.PathLike, *, written: bool) -> pathlib.Path:
    """The file that holds a model named `path`: the one `convnet_io.load` reads (`path`,
    or `path + ".npz"` when only that exists), or the one `convnet_io.save` writes
    (`path + ".npz"` when h5py is missing and `path` does not end in .npz)."""
    from convnet_io import storage
    from convnet_io.format import resolve_path

    if not written:
        return pathlib.Path(resolve_path(path))
    text = os.fspath(path)
    if storage.H5PY_AVAILABLE or text.lower().endswith(".npz"):
        return pathlib.Path(text)
    return pathlib.Path(text + ".npz")


def _file_identity(path: pathlib.Path) -> tuple:
    """What tells whether two paths name one file: its device and inode when it exists
    (through any links, spellings or case-insensitive names), else its absolute path with
    the links followed (where a write would create it)."""
    real = os.path.realpath(path)
    try:
        status = os.stat(real)
    except OSError:
        return ("path", real)
    return ("file", status.st_dev, status.st_ino)


def check_distinct_files(writes: list[FileUse], reads: list[FileUse] = ()) -> None:
    """A usage error (exit 2) when a file the program writes is one it reads, or one of its
    other outputs, however the paths are spelled (./m.h5 and m.h5, a symbolic link, NAME for
    the NAME.npz a model is read from); call it before any work, so that nothing is written.

    A model may be written over a model the run reads (train_mnist.py --resume m.h5 --out
    m.h5 continues m.h5's training); any other output there would replace the input, and
    two outputs at one path would leave only the last one written. The error points at the
    option of the later output in `writes`.
    """
    seen: list[tuple[tuple, FileUse, pathlib.Path]] = []
    for use in reads:
        file = model_file(use.path, written=False) if use.model else use.path
        seen.append((_file_identity(file), use, file))
    read_count = len(seen)
    for use in writes:
        file = model_file(use.path, written=True) if use.model else use.path
        identity = _file_identity(file)
        for index, (other_identity, other, other_file) in enumerate(seen):
            is_read = index < read_count
            if other_identity != identity or (is_read and use.model and other.model):
                continue
            shown = "" if str(other_file) == str(use.path) else f" ({other_file})"
            if is_read:
                problem = f"writing {use.what} there would replace it"
            else:
                problem = f"{use.what} would replace it"
            raise click.BadParameter(
                f"{use.path} is {other.what}{shown}: {problem}; give another path",
                param_hint=use.option,
            )
        seen.append((identity, use, file))


def check_writable(path: str | os.PathLike) -> None:
    """Create the folder of `path` when missing; AppError when the file could not be saved
    there: no file can be made in the folder, or the path is a file that may not be
    replaced (read-only), a directory or a device.

    A file is really created in the folder (and removed): permissions alone do not tell,
    e.g. root may write anywhere but nothing can be created in /proc. The path itself is
    checked as convnet-io's atomic save checks it before writing (`resolve_target`). It is
    better to hear either before a long training run than after it.
    """
    from convnet_io.atomic import resolve_target

    folder = pathlib.Path(path).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise AppError(f"cannot create the folder {folder}: {describe_os_error(error)}") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-test.", suffix=".tmp", dir=folder)
    except OSError as error:
        reason = (error.strerror or type(error).__name__).lower()
        raise AppError(f"cannot write to the folder {folder} ({reason})") from None
    os.close(fd)
    os.unlink(probe)
    try:
        resolve_target(path)
    except OSError as error:  # its message names the path, unless it is only an errno's
        if error.errno is None or not error.strerror:
            raise AppError(one_line(error)) from None
        reason = error.strerror[:1].lower() + error.strerror[1:]
        raise AppError(f"cannot write {path}: {reason}") from None


def write_atomic(path: str | os.PathLike, write) -> None:
    """Write a file through `write(tmp_path)` into a temporary file, then rename it into place.

    convnet-io's `atomic_path` does the work, as for the models: a crash or a full disk
    halfway leaves the previous file intact.
    """
    from convnet_io.atomic import atomic_path

    with atomic_path(path) as tmp:
        write(tmp)


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write `data` as indented JSON, atomically."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as file:
            file.write(text)

    write_atomic(path, write)


def jsonable(value: Any) -> Any:
    """Plain Python numbers and lists for numpy/cupy scalars and arrays (for JSON)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


# ---------------------------------------------------------------------------------------
# Data


#: The stems of the MNIST test files, images then labels (each read as STEM.gz or STEM).
MNIST_TEST_FILES = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def load_mnist_data(data_dir: str | os.PathLike | None, limit_train=None, limit_test=None):
    """The MNIST (train, test) Datasets from `data_dir` (None: the bundled files).

    Every file is checked against its known checksum. `limit_train`/`limit_test` keep the
    first N samples (for quick runs and tests).
    """
    import convnet_data

    check_data_dir(data_dir)
    try:
        train, test = convnet_data.load_mnist(data_dir)
    except FileNotFoundError as error:  # DataNotFoundError: the message names the file
        raise AppError(one_line(error.strerror or error)) from None
    return limit(train, limit_train), limit(test, limit_test)


def load_mnist_test(data_dir: str | os.PathLike | None, limit_test=None):
    """The MNIST test Dataset from the t10k files of `data_dir` (None: the bundled files),
    without the training files, which need not be there.

    The files are found and checked against their known checksums as
    `convnet_data.load_mnist` finds and checks them. `limit_test` keeps the first N samples.
    """
    import convnet_data
    from convnet_data.datasets import MNIST_FILES

    check_data_dir(data_dir)
    try:
        if data_dir is None:
            root = convnet_data.find_mnist_dir(stems=MNIST_TEST_FILES)
        else:
            root = pathlib.Path(data_dir)
    except FileNotFoundError as error:  # DataNotFoundError: the message says where it looked
        raise AppError(one_line(error)) from None
    images, labels = (mnist_file(root, stem) for stem in MNIST_TEST_FILES)
    test = convnet_data.load_idx_pair(images, labels, checksums=MNIST_FILES, num_classes=10)
    return limit(test, limit_test)


def check_data_dir(data_dir: str | os.PathLike | None) -> None:
    """AppError unless `data_dir` (a --data folder; None: the bundled one) is a folder."""
    if data_dir is None:
        return
    root = pathlib.Path(data_dir)
    if not root.exists():
        raise AppError(f"data directory {root} does not exist")
    if not root.is_dir():
        raise AppError(f"data directory {root} is not a directory")


def mnist_file(root: pathlib.Path, stem: str) -> pathlib.Path:
    """The MNIST file `stem` in `root`, found as convnet_data finds it
    (`find_mnist_file`); AppError naming the file when there is none."""
    import convnet_data

    found = convnet_data.find_mnist_file(root, stem)
    if found is None:
        raise AppError(f"MNIST file {stem}.gz (or {stem}) not found in {root}")
    return found


def limit(dataset, count: int | None):
    """The first `count` samples of a Dataset (all of them for None)."""
    if count is None or count >= len(dataset):
        return dataset
    if count < 1:
        raise AppError(f"a sample limit must be at least 1, not {count}")
    return dataset.subset(count)


class InterruptWatch:
    """A `fit` callback under which no Ctrl-C is lost.

    Python raises KeyboardInterrupt in the main thread at the next line it runs. When that
    line is in a weakref callback or a `__del__` (h5py closes its objects from such
    callbacks, so a save leaves some behind), Python prints "Exception ignored" and goes
    on: the interrupt is gone and training runs on. Inside `with InterruptWatch() as
    watch:`, Ctrl-C is counted before it is raised, and `watch` (in fit's callbacks, last)
    raises it again at the end of the epoch in which it was swallowed.
    """

    def __init__(self) -> None:
        self.interrupts = 0
        self._previous: Any = None

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self.interrupts += 1
        signal.default_int_handler(signum, frame)  # raises KeyboardInterrupt

    def __enter__(self) -> InterruptWatch:
        self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc_info) -> None:
        signal.signal(signal.SIGINT, self._previous)

    def on_epoch_end(self, model: Any, epoch: int, logs: dict) -> None:
        """Raise the Ctrl-C that came during this epoch and was swallowed on its way."""
        if self.interrupts:
            raise KeyboardInterrupt


def to_inputs(images):
    """uint8 images (N, 1, 28, 28) -> float32 inputs in [0, 1] (N, 1, 28, 28)."""
    import numpy

    return numpy.asarray(images, dtype=numpy.float32) / 255.0


#: The shape of one MNIST digit as the networks take it: (channels, height, width).
MNIST_INPUT_SHAPE = (1, 28, 28)


def existing_model_file(path: str | os.PathLike) -> pathlib.Path:
    """The file that holds the model named `path`, found as `convnet_io.load` finds it:
    `path`, or `path + ".npz"` when only that exists (a model saved without h5py).
    AppError when neither exists or when it is a directory."""
    from convnet_io.format import resolve_path

    path = pathlib.Path(resolve_path(path))
    if not path.exists():
        raise AppError(f"model file {path} does not exist")
    if path.is_dir():
        raise AppError(f"model file {path} is a directory")
    return path


def load_model(path: str | os.PathLike, xp=None):
    """A saved MNIST Model (convnet-io format or an old ConvNet-NumPy file), on the array
    module `xp` (None: where device "auto" puts it).

    The file is the one `existing_model_file` finds (an AppError when there is none).
    AppError when the model does not take MNIST digits (`MNIST_INPUT_SHAPE`), so that
    nothing is computed or written for it, and when it holds a layer class that no
    imported module registered (it says to use --import); convnet-io's ModelFormatError
    (one line naming the file and the problem) when it is not a readable model.
    """
    import convnet_io

    path = existing_model_file(path)
    try:
        model = convnet_io.load(str(path), device=xp)
    except ValueError as error:
        hint = unknown_layer_hint(error)
        if not hint:
            raise
        raise AppError(one_line(error) + hint) from error
    shape = tuple(model.input_shape)
    if shape != MNIST_INPUT_SHAPE:
        layout = " (channels, height, width)"
        ours, theirs = (layout, "") if len(shape) == 3 else ("", layout)
        raise AppError(
            f"{path}: not an MNIST model: it takes inputs of shape {shape}{ours}, and MNIST "
            f"digits are {MNIST_INPUT_SHAPE}{theirs}"
        )
    if model.loss_name is None:  # predict gives probabilities only with a cross-entropy loss
        model.compile(loss="categorical_crossentropy", optimizer=model.optimizer or "adam")
    return model


# ---------------------------------------------------------------------------------------
# Reports


def confusion_matrix(labels, predicted, num_classes: int = 10):
    """counts[true, predicted] as an int64 array (num_classes, num_classes)."""
    import numpy

    counts = numpy.zeros((num_classes, num_classes), dtype=numpy.int64)
    numpy.add.at(counts, (numpy.asarray(labels), numpy.asarray(predicted)), 1)
    return counts


def per_class_accuracy(matrix):
    """Accuracy of each true class (the diagonal over the row sums); NaN for an empty class."""
    import numpy

    totals = matrix.sum(axis=1)
    with numpy.errstate(invalid="ignore", divide="ignore"):
        return numpy.where(totals > 0, numpy.diag(matrix) / totals, numpy.nan)


def outputs_are_probabilities(model) -> bool:
    """Whether `model.predict` gives class probabilities (a cross-entropy loss) rather than
    the network's raw outputs (mse, huber or a custom loss)."""
    from convnet_core.model import CROSS_ENTROPY_NAMES

    return model.loss_name in CROSS_ENTROPY_NAMES


def model_loss(model, outputs, labels) -> float | None:
    """The mean of the model's own loss over `outputs` (what `model.predict` returned, on
    the host) for integer `labels`; None for a loss that is not built in.

    Cross-entropy is read from the probabilities; mse and huber compare the outputs with
    one-hot rows, as `fit` does for integer labels.
    """
    import numpy
    from convnet_core import losses

    labels = numpy.asarray(labels)
    if outputs_are_probabilities(model):
        picked = outputs[numpy.arange(len(labels)), labels]  # host
        return float(-numpy.log(numpy.clip(picked, 1e-12, 1.0)).mean())
    function = losses.LOSSES.get(model.loss_name)
    if function is None:
        return None
    targets = losses.one_hot(labels, outputs.shape[1], xp=numpy, dtype=outputs.dtype)
    value, _ = function(outputs, targets, xp=numpy)
    return float(value)


def lowest_accuracy(accuracy, count: int) -> list[int]:
    """The `count` classes of lowest accuracy (`per_class_accuracy`), lowest first; a class
    without samples (NaN) is never among them."""
    import numpy

    accuracy = numpy.asarray(accuracy, dtype=numpy.float64)
    present = numpy.flatnonzero(~numpy.isnan(accuracy))
    order = present[numpy.argsort(accuracy[present], kind="stable")]
    return [int(c) for c in order[:count]]


def format_confusion(matrix) -> str:
    """The confusion matrix as text: one row per true class, one column per prediction,
    and the class's accuracy ("n/a" for a class without samples)."""
    n = matrix.shape[0]
    width = max(5, len(str(int(matrix.max()))) + 1)
    head = "true\\pred" + "".join(f"{j:>{width}}" for j in range(n)) + "   acc"
    accuracy = per_class_accuracy(matrix)
    rows = [head]
    for i in range(n):
        cells = "".join(f"{int(v):>{width}}" for v in matrix[i])
        shown = "n/a" if math.isnan(accuracy[i]) else f"{100 * accuracy[i]:5.1f}%"
        rows.append(f"{i:>9}{cells}  {shown:>6}")
    return "\n".join(rows)


# ---------------------------------------------------------------------------------------
# Plots


def import_pyplot():
    """matplotlib.pyplot on the file-only Agg backend, or None when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: str | os.PathLike) -> None:
    """Save a matplotlib figure as PNG atomically and close it."""
    check_writable(path)
    try:
        write_atomic(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100))
    finally:
        figure.canvas.figure.clf()
        import matplotlib.pyplot as plt

        plt.close(figure)


def image_grid(plt, images, titles, columns: int, cmap="gray", size: float = 1.4):
    """A figure showing `images` (list of 2-D arrays) in a grid, each with its title."""
    count = max(1, len(images))
    rows = (count + columns - 1) // columns
    figure, axes = plt.subplots(
        rows, columns, figsize=(size * columns, size * rows + 0.4), squeeze=False
    )
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index < len(images):
            axis.imshow(images[index], cmap=cmap)
            axis.set_title(titles[index], fontsize=7)
    figure.tight_layout()
    return figure
