"""Array modules over NumPy whose arrays NumPy cannot touch, as it cannot touch CuPy's.

`DeviceArray` holds a NumPy array but refuses every NumPy entry point (`__array__`,
`__array_function__`, `__array_ufunc__`) and any arithmetic with a raw `numpy.ndarray`,
as CuPy arrays do. `make_array_module(name, array_class)` builds a module object that looks
like numpy/cupy to the layers: each function unwraps its arguments, calls NumPy and wraps
the results in `array_class`; `asarray`/`array` are the one door for host arrays.

Reading a value on the host (`get`, `float(a)`, `bool(a)`, `int(a)`, `a.item()`,
`a.tolist()`, indexing with a boolean mask, `nonzero`) goes through `array_class._host_read`,
which a subclass can refuse: the CuPy stand-in (tests/cupy_on_numpy.py) does inside
`refusing_host_reads()`, where on a GPU the host would wait for it.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import inspect
import re
import types
from typing import Any

import numpy

__all__ = [
    "CALLS",
    "DeviceArray",
    "DirectNumpyCall",
    "checked_against",
    "counting_calls",
    "make_array_module",
    "reference_signature",
    "unwrap",
]

# NumPy functions whose result size depends on the data: CuPy waits for the GPU in them
_DATA_DEPENDENT = {"nonzero", "flatnonzero", "argwhere", "unique", "extract", "compress"}
# array methods that hand a value to the host
_HOST_METHODS = {"item", "tolist", "tobytes", "nonzero"}


class DirectNumpyCall(RuntimeError):
    """NumPy was handed a device array directly (not a TypeError, which NumPy may swallow)."""


def unwrap(value: Any) -> Any:
    """DeviceArray -> its NumPy array, recursively; raw ndarrays are refused."""
    if isinstance(value, DeviceArray):
        return value._data
    if isinstance(value, numpy.ndarray):  # 0-d too: CuPy takes NumPy scalars, not arrays
        raise DirectNumpyCall(f"a NumPy array {value.shape} was mixed with device arrays")
    if isinstance(value, tuple):
        return tuple(unwrap(v) for v in value)
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    return value


# ---------------------------------------------------------------------------------------
# counting the calls made into an array module

CALLS: collections.Counter = collections.Counter()  # name -> calls, inside counting_calls()
_counting = [False]


@contextlib.contextmanager
def counting_calls() -> Any:
    """Count into CALLS (cleared first), for the block, every call to a module function,
    an array method or operator, indexing, and (through `count_call`) kernel launches.
    On a GPU each is one call into CuPy, which costs the host microseconds whatever the
    array's size."""
    CALLS.clear()
    _counting[0] = True
    try:
        yield CALLS
    finally:
        _counting[0] = False


def count_call(name: str) -> None:
    """One call of `name`, when counting."""
    if _counting[0]:
        CALLS[name] += 1


def through(fn: Any, array_class: type) -> Any:
    """fn made to take device arrays and give `array_class` arrays."""
    name = getattr(fn, "__name__", type(fn).__name__)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        count_call(name)
        return array_class._wrap(fn(*unwrap(args), **unwrap(kwargs)))

    return call


# ---------------------------------------------------------------------------------------
# the arguments a reference module (the real CuPy) accepts

# what a CuPy ufunc takes besides its operands (cupy/_core/_kernel.pyx, ufunc.__call__)
_UFUNC_KEYWORDS = ("out", "dtype", "casting")
_DOCSTRING_SIGNATURE = re.compile(r"^[\w.]+\((?P<parameters>.*)\)\s*(->.*)?$")


def reference_signature(function: Any) -> inspect.Signature | None:
    """How `function`, from the reference module, can be called; None where that is not
    known. CuPy's Python functions carry a signature; its Cython methods write theirs on the
    first line of their docstring; its ufuncs take operands and a few keywords."""
    if type(function).__name__ == "ufunc":
        operands = inspect.Parameter("operands", inspect.Parameter.VAR_POSITIONAL)
        keywords = [
            inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=None)
            for k in _UFUNC_KEYWORDS
        ]
        return inspect.Signature([operands, *keywords])
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        signature = _signature_from_docstring(function.__doc__ or "")
    if signature is None:
        return None
    parameters = list(signature.parameters.values())
    if parameters and parameters[0].name == "self":  # called on an instance
        signature = signature.replace(parameters=parameters[1:])
    return signature


def _signature_from_docstring(doc: str) -> inspect.Signature | None:
    """`_ndarray_base.sum(self, axis=None, ...) -> _ndarray_base` -> its Signature (names
    and which have defaults; Cython types such as `Py_ssize_t axis1` are dropped)."""
    lines = doc.strip().splitlines()
    match = _DOCSTRING_SIGNATURE.match(lines[0].strip()) if lines else None
    if match is None:
        return None
    parameters, kind = [], inspect.Parameter.POSITIONAL_OR_KEYWORD
    for text in _split_top_level(match["parameters"]):
        name, has_default = text.split("=")[0].strip(), "=" in text
        if name == "*":
            kind = inspect.Parameter.KEYWORD_ONLY
        elif name.startswith("**"):
            parameters.append(inspect.Parameter(name[2:], inspect.Parameter.VAR_KEYWORD))
        elif name.startswith("*"):
            parameters.append(inspect.Parameter(name[1:], inspect.Parameter.VAR_POSITIONAL))
            kind = inspect.Parameter.KEYWORD_ONLY
        elif name:
            default = None if has_default else inspect.Parameter.empty
            parameters.append(inspect.Parameter(name.split()[-1], kind, default=default))
    try:
        return inspect.Signature(parameters)
    except ValueError:  # not a signature after all
        return None


def _split_top_level(text: str) -> list[str]:
    """Split at the commas outside brackets and quotes."""
    parts, depth, quote, current = [], 0, "", ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += char
    return [*parts, current] if current.strip() else parts


def checked_against(reference: Any, name: str, function: Any) -> Any:
    """`function`, refusing with TypeError the arguments `reference` would refuse."""
    signature = reference_signature(reference)
    if signature is None:
        return function

    @functools.wraps(function)
    def call(*args, **kwargs):
        try:
            signature.bind(*args, **kwargs)
        except TypeError as error:
            raise TypeError(f"{name}{signature}: {error}") from None
        return function(*args, **kwargs)

    return call


class DeviceArray:
    """An array that NumPy cannot touch: it must go through its module or its own methods."""

    __array_ufunc__ = None  # numpy ufuncs on it raise TypeError, ndarray ops defer to us

    def __init__(self, data: numpy.ndarray) -> None:
        self._data = data

    @classmethod
    def _wrap(cls, value: Any) -> Any:
        """NumPy arrays -> cls (0-d too, like CuPy), recursively through tuples."""
        if isinstance(value, numpy.ndarray):
            return cls(value)
        if isinstance(value, numpy.generic):  # reductions give 0-d arrays, as in CuPy
            return cls(numpy.asarray(value))
        if isinstance(value, tuple):
            return tuple(cls._wrap(v) for v in value)
        return value

    def _host_read(self, what: str) -> None:
        """Called before a value goes to the host; a subclass may refuse (see module doc)."""

    def __array__(self, *args, **kwargs):
        raise DirectNumpyCall("numpy tried to convert a device array (use xp, not numpy)")

    def __array_function__(self, func, types_, args, kwargs):
        raise DirectNumpyCall(f"numpy.{func.__name__} was called on a device array")

    def get(self) -> numpy.ndarray:
        """The host copy, as cupy.ndarray.get()."""
        self._host_read("get()")
        return self._data.copy()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # no __array_interface__, __array_struct__, __dlpack__...
            raise AttributeError(name)
        if name in _HOST_METHODS:
            self._host_read(f".{name}()")
        attribute = getattr(self._data, name)
        return through(attribute, type(self)) if callable(attribute) else self._wrap(attribute)

    def __getitem__(self, key: Any) -> Any:
        count_call("__getitem__")
        if isinstance(key, DeviceArray) and key._data.dtype == bool:
            self._host_read("indexing with a boolean mask")  # the result size is data
        return self._wrap(self._data[unwrap(key)])

    def __setitem__(self, key: Any, value: Any) -> None:
        count_call("__setitem__")
        self._data[unwrap(key)] = unwrap(value)

    def __len__(self) -> int:
        return len(self._data)

    def __float__(self) -> float:
        self._host_read("float()")
        return float(self._data)

    def __int__(self) -> int:
        self._host_read("int()")
        return int(self._data)

    def __bool__(self) -> bool:
        self._host_read("bool()")
        return bool(self._data)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._data!r})"


def _binary(name: str) -> Any:
    def method(self, other):
        count_call(name)
        return self._wrap(getattr(self._data, name)(unwrap(other)))

    method.__name__ = name
    return method


def _unary(name: str) -> Any:
    def method(self):
        count_call(name)
        return self._wrap(getattr(self._data, name)())

    method.__name__ = name
    return method


for _op in ["add", "sub", "mul", "truediv", "floordiv", "pow", "matmul", "mod", "and", "or"]:
    for _form in (f"__{_op}__", f"__r{_op}__", f"__i{_op}__"):
        setattr(DeviceArray, _form, _binary(_form))
for _op in ["xor", "lt", "le", "gt", "ge", "eq", "ne"]:
    setattr(DeviceArray, f"__{_op}__", _binary(f"__{_op}__"))
setattr(DeviceArray, "__ixor__", _binary("__ixor__"))  # noqa: B010
for _op in ["neg", "pos", "abs", "invert"]:
    setattr(DeviceArray, f"__{_op}__", _unary(f"__{_op}__"))


class DeviceGenerator:
    """xp.random.default_rng(seed): draws come back as device arrays.

    `methods`, when given, is the set of draws the generator offers (CuPy's has fewer than
    NumPy's); asking for another raises AttributeError, as it would there. `reference`,
    when given, is the generator class whose arguments each draw accepts.
    """

    def __init__(self, seed=None, *, array_class=DeviceArray, methods=None, reference=None):
        self._rng = numpy.random.default_rng(seed)
        self._array_class = array_class
        self._methods = methods
        self._reference = reference

    def __getattr__(self, name: str) -> Any:
        if self._methods is not None and name not in self._methods:
            raise AttributeError(f"this generator has no method {name!r}")
        draw = through(getattr(self._rng, name), self._array_class)
        if self._reference is None:
            return draw
        return checked_against(getattr(self._reference, name), f"Generator.{name}", draw)


def make_array_module(
    name: str, array_class: type = DeviceArray, *, reference: Any = None
) -> types.ModuleType:
    """A module object named `name` that looks like numpy/cupy; its arrays are array_class.

    With a `reference` module (the real CuPy), asking for a function it lacks raises
    AttributeError, and calling one with arguments it does not take raises TypeError, as
    they would there.
    """
    module = types.ModuleType(name)

    def get(attribute: str) -> Any:
        if reference is not None and not hasattr(reference, attribute):
            raise AttributeError(f"{name} has no {attribute!r} ({reference.__name__} lacks it)")
        value = getattr(numpy, attribute)
        if isinstance(value, type) or not callable(value):
            return value  # dtypes (xp.float32), constants (xp.pi)
        function = through(value, array_class)
        if reference is not None:
            function = checked_against(
                getattr(reference, attribute), f"{name}.{attribute}", function
            )
        if attribute not in _DATA_DEPENDENT:
            return function

        def data_dependent(*args, **kwargs):
            for arg in args:
                if isinstance(arg, DeviceArray):
                    arg._host_read(f"{name}.{attribute}()")
            return function(*args, **kwargs)

        return data_dependent

    def from_host(fn: Any) -> Any:
        """xp.asarray / xp.array: the one door for host arrays (a copy to the "device")."""

        def call(value, *args, **kwargs):
            if isinstance(value, array_class) and not args and not kwargs:
                return value  # already on the device: the same object, as in CuPy
            if isinstance(value, numpy.ndarray):
                value = array_class(value.copy())
            return through(fn, array_class)(value, *args, **kwargs)

        return call

    module.__getattr__ = get
    module.asarray = from_host(numpy.asarray)
    module.array = from_host(numpy.array)
    module.random = types.SimpleNamespace(
        default_rng=functools.partial(DeviceGenerator, array_class=array_class)
    )
    stride_tricks = {}
    for trick in ("as_strided", "sliding_window_view"):
        function = through(getattr(numpy.lib.stride_tricks, trick), array_class)
        if reference is not None:
            qualified = f"{name}.lib.stride_tricks.{trick}"
            function = checked_against(
                getattr(reference.lib.stride_tricks, trick), qualified, function
            )
        stride_tricks[trick] = function
    module.lib = types.SimpleNamespace(stride_tricks=types.SimpleNamespace(**stride_tricks))
    return module
