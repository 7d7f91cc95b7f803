"""Core computes through `xp` only, so the same code runs on CuPy.

Two checks:

1. Run-time proof. `StrictXP` is an array module that wraps NumPy the way CuPy is separate
   from it: its arrays (`DeviceArray`) refuse every NumPy entry point (`__array__`,
   `__array_function__`, `__array_ufunc__`) and any arithmetic with a raw `numpy.ndarray`,
   as CuPy arrays do. Every layer, the losses and `check_grad` run forward and backward on
   it; a single direct `numpy.` call on data, or a NumPy array created behind `xp`'s back
   and mixed in, raises. The results must also equal plain NumPy's, bit for bit.
2. Source scan. In the compute modules, every line that calls `numpy.`/`np.` is either a
   type check or annotation, or is marked `# host` (shape arithmetic, seeding on the host).
"""

from __future__ import annotations

import functools
import pathlib
import re
import types

import convnet_core as cn
import numpy
import pytest
from convnet_core import layers as L
from convnet_core import losses

# --------------------------------------------------------------------------------------
# a CuPy-like strict array module over NumPy


class DirectNumpyCall(RuntimeError):
    """NumPy was handed a device array directly (not a TypeError, which NumPy may swallow)."""


def unwrap(value):
    """DeviceArray -> its NumPy array, recursively; raw ndarrays are refused."""
    if isinstance(value, DeviceArray):
        return value._data
    if isinstance(value, numpy.ndarray) and value.ndim > 0:
        raise DirectNumpyCall(f"a NumPy array {value.shape} was mixed with device arrays")
    if isinstance(value, tuple):
        return tuple(unwrap(v) for v in value)
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    return value


def wrap(value):
    """NumPy arrays -> DeviceArray (0-d too, like CuPy), recursively through tuples."""
    if isinstance(value, numpy.ndarray):
        return DeviceArray(value)
    if isinstance(value, numpy.generic):  # reductions give 0-d arrays, as in CuPy
        return DeviceArray(numpy.asarray(value))
    if isinstance(value, tuple):
        return tuple(wrap(v) for v in value)
    return value


def through(fn):
    """fn made to take and give device arrays."""

    @functools.wraps(fn)
    def call(*args, **kwargs):
        return wrap(fn(*unwrap(args), **unwrap(kwargs)))

    return call


class DeviceArray:
    """An array that NumPy cannot touch: it must go through StrictXP or its own methods."""

    __array_ufunc__ = None  # numpy ufuncs on it raise TypeError, ndarray ops defer to us

    def __init__(self, data):
        self._data = data

    def __array__(self, *args, **kwargs):
        raise DirectNumpyCall("numpy tried to convert a device array (use xp, not numpy)")

    def __array_function__(self, func, types_, args, kwargs):
        raise DirectNumpyCall(f"numpy.{func.__name__} was called on a device array")

    def get(self):
        """The host copy, as cupy.ndarray.get()."""
        return self._data.copy()

    def __getattr__(self, name):
        if name.startswith("__"):  # no __array_interface__, __array_struct__, __dlpack__...
            raise AttributeError(name)
        attribute = getattr(self._data, name)
        return through(attribute) if callable(attribute) else wrap(attribute)

    def __getitem__(self, key):
        return wrap(self._data[unwrap(key)])

    def __setitem__(self, key, value):
        self._data[unwrap(key)] = unwrap(value)

    def __len__(self):
        return len(self._data)

    def __float__(self):
        return float(self._data)

    def __int__(self):
        return int(self._data)

    def __bool__(self):
        return bool(self._data)

    def __repr__(self):
        return f"DeviceArray({self._data!r})"


def _binary(name):
    def method(self, other):
        return wrap(getattr(self._data, name)(unwrap(other)))

    method.__name__ = name
    return method


def _unary(name):
    def method(self):
        return wrap(getattr(self._data, name)())

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


class StrictGenerator:
    """xp.random.default_rng(seed): draws come back as device arrays."""

    def __init__(self, seed=None):
        self._rng = numpy.random.default_rng(seed)

    def __getattr__(self, name):
        return through(getattr(self._rng, name))


def make_strict_xp():
    """A module object that looks like numpy/cupy to the layers; arrays are DeviceArray."""
    module = types.ModuleType("strictxp")
    module.__name__ = "strictxp"

    def get(name):
        value = getattr(numpy, name)
        if isinstance(value, type) or not callable(value):
            return value  # dtypes (xp.float32), constants (xp.pi)
        return through(value)

    def from_host(fn):
        """xp.asarray / xp.array: the one door for host arrays (a copy to the "device")."""

        def call(value, *args, **kwargs):
            if isinstance(value, numpy.ndarray):
                value = DeviceArray(value.copy())
            return through(fn)(value, *args, **kwargs)

        return call

    module.__getattr__ = get
    module.asarray = from_host(numpy.asarray)
    module.array = from_host(numpy.array)
    module.random = types.SimpleNamespace(default_rng=StrictGenerator)
    module.lib = types.SimpleNamespace(
        stride_tricks=types.SimpleNamespace(
            as_strided=through(numpy.lib.stride_tricks.as_strided),
            sliding_window_view=through(numpy.lib.stride_tricks.sliding_window_view),
        )
    )
    return module


STRICT = make_strict_xp()


def test_the_strict_module_refuses_numpy():
    a = STRICT.ones((2, 3), dtype="float32")
    assert isinstance(a, DeviceArray) and isinstance(a.sum(), DeviceArray)
    refused = (TypeError, DirectNumpyCall)
    with pytest.raises(refused):
        numpy.exp(a)
    with pytest.raises(refused):
        numpy.sum(a)
    with pytest.raises(refused):
        numpy.asarray(a)
    with pytest.raises(refused):
        a + numpy.ones((2, 3))
    with pytest.raises(refused):
        numpy.ones((2, 3)) * a
    with pytest.raises(refused):
        STRICT.maximum(a, numpy.zeros((2, 3)))
    numpy.testing.assert_array_equal((a * numpy.float32(2) + 1).get(), numpy.full((2, 3), 3.0))


# --------------------------------------------------------------------------------------
# every layer forward and backward on the strict module

LAYERS = [
    (L.Conv2D(4, (3, 3)), (3, 7, 6)),
    (L.Conv2D(2, (2, 3), stride=2, padding="valid"), (3, 7, 6)),
    (L.Conv2D(2, (3, 3), padding=2, use_bias=False), (3, 5, 5)),
    (L.MaxPool2D(), (3, 7, 6)),
    (L.MaxPool2D((3, 3), stride=2), (3, 7, 6)),
    (L.AvgPool2D(), (3, 7, 6)),
    (L.AvgPool2D((3, 2), stride=1), (3, 7, 6)),
    (L.GlobalAvgPool2D(), (3, 7, 6)),
    (L.BatchNorm2D(), (3, 7, 6)),
    (L.Dropout(0.3), (3, 7, 6)),
    (L.Flatten(), (3, 7, 6)),
    (L.Dense(4), (6,)),
    *[(L.Activation(name), (5,)) for name in sorted(L.ACTIVATIONS)],
    (
        L.Sequential(
            [L.Conv2D(2), L.BatchNorm2D(), L.Activation("relu"), L.MaxPool2D(), L.Flatten()]
        ),
        (1, 6, 6),
    ),
    (L.Residual(L.Conv2D(3, (3, 3)), L.Conv2D(3, (1, 1))), (2, 5, 5)),
]


def run_layer(layer, shape, xp, x, dy):
    params, state = cn.init(layer, shape, rng=0, xp=xp)
    y, new_state, cache = cn.apply(layer, params, state, xp.asarray(x), training=True, rng=3, xp=xp)
    y_eval, _, _ = cn.apply(layer, params, state, xp.asarray(x), xp=xp)
    grads, dx = cn.grad(layer, params, cache, xp.asarray(dy), xp=xp)
    return [y, y_eval, dx, *cn.tree.leaves(new_state), *cn.tree.leaves(grads)]


@pytest.mark.parametrize(("layer", "shape"), LAYERS, ids=repr)
def test_every_layer_runs_on_a_strict_array_module(layer, shape):
    rng = numpy.random.default_rng(0)
    x = rng.standard_normal((2, *shape)).astype("float32")
    out_shape = (2, *layer.output_shape(shape))
    dy = rng.standard_normal(out_shape).astype("float32")
    strict = run_layer(layer, shape, STRICT, x, dy)
    plain = run_layer(layer, shape, numpy, x, dy)
    for got, want in zip(strict, plain, strict=True):
        assert isinstance(got, DeviceArray), f"{layer!r} returned a {type(got)}"
        numpy.testing.assert_array_equal(got.get(), want)


def test_losses_run_on_a_strict_array_module():
    rng = numpy.random.default_rng(1)
    logits = rng.standard_normal((4, 3)).astype("float32")
    labels = numpy.array([0, 2, 1, 2])
    for name, fn in losses.LOSSES.items():
        target = logits[::-1].copy() if name in ("mse", "huber") else labels
        strict_value, strict_grad = fn(STRICT.asarray(logits), STRICT.asarray(target), xp=STRICT)
        value, grad = fn(logits, target, xp=numpy)
        assert float(strict_value) == pytest.approx(float(value), rel=1e-6)
        numpy.testing.assert_allclose(strict_grad.get(), grad, rtol=1e-6)


def test_check_grad_runs_on_a_strict_array_module():
    layer = L.Sequential([L.Conv2D(2, (3, 3)), L.Activation("tanh"), L.Flatten(), L.Dense(2)])
    params, state = cn.init(layer, (1, 4, 4), rng=0, xp=STRICT, dtype="float64")
    x = STRICT.asarray(numpy.random.default_rng(2).standard_normal((2, 1, 4, 4)))
    report = cn.check_grad(layer, params, state, x, xp=STRICT, max_elements=4)
    assert report.ok, str(report)


# --------------------------------------------------------------------------------------
# source scan

SOURCE = pathlib.Path(cn.__file__).parent
COMPUTE_MODULES = [
    *sorted((SOURCE / "layers").glob("*.py")),
    SOURCE / "ops.py",
    SOURCE / "losses.py",
    SOURCE / "api.py",
    SOURCE / "gradcheck.py",
    SOURCE / "tree.py",
]
NUMPY_CALL = re.compile(r"\b(?:numpy|np)\.[\w.]+\(")
ALLOWED = re.compile(r"isinstance\(|numpy\.random\.Generator|->|:\s*numpy\.")


def unmarked_numpy_calls(path: pathlib.Path) -> list[str]:
    found = []
    in_docstring = False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        code = line.split("#", 1)[0]
        if line.count('"""') % 2 == 1:
            in_docstring = not in_docstring
            continue
        if in_docstring or '"""' in line:
            continue
        if NUMPY_CALL.search(code) and not line.rstrip().endswith("# host"):
            if not ALLOWED.search(code):
                found.append(f"{path.name}:{number}: {line.strip()}")
    return found


def test_compute_modules_call_numpy_only_on_marked_host_lines():
    found = [hit for path in COMPUTE_MODULES for hit in unmarked_numpy_calls(path)]
    assert found == [], "numpy called on lines not marked '# host':\n" + "\n".join(found)


def test_the_scan_finds_an_unmarked_call(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        '"""doc mentions numpy.exp(x)"""\n'
        "y = numpy.exp(x)\n"
        "z = numpy.sqrt(2.0)  # host\n"
        "ok = isinstance(a, numpy.ndarray)\n"
    )
    assert unmarked_numpy_calls(sample) == ["sample.py:2: y = numpy.exp(x)"]
