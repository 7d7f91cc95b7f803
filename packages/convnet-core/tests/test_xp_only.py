"""Core computes through `xp` only, so the same code runs on CuPy.

Two checks:

1. Run-time proof. `STRICT` is an array module that wraps NumPy the way CuPy is separate
   from it (tests/device_arrays.py): its arrays (`DeviceArray`) refuse every NumPy entry
   point (`__array__`, `__array_function__`, `__array_ufunc__`) and any arithmetic with a
   raw `numpy.ndarray`, as CuPy arrays do. Every layer, the losses and `check_grad` run
   forward and backward on it; a single direct `numpy.` call on data, or a NumPy array
   created behind `xp`'s back and mixed in, raises. The results must also equal plain
   NumPy's, bit for bit.
2. Source scan. In the compute modules, every line that calls `numpy.`/`np.` is either a
   type check or annotation, or is marked `# host` (shape arithmetic, seeding on the host).
"""

from __future__ import annotations

import pathlib
import re

import convnet_core as cn
import numpy
import pytest
from convnet_core import layers as L
from convnet_core import losses
from device_arrays import DeviceArray, DirectNumpyCall, make_array_module

STRICT = make_array_module("strictxp")


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
