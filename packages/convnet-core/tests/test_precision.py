"""Mixed precision: the loss-scaler state machine, the casts, and training in float16.

NumPy computes float16 (slowly) on the CPU, so the arithmetic of a mixed-precision step is
tested here; its speed is measured on a GPU by benchmarks/bench_gpu.py.
"""

from __future__ import annotations

import convnet_core as cn
import numpy
import pytest
from convnet_core import layers as L
from convnet_core import losses, optim, precision
from convnet_core import tree as T
from convnet_core.precision import DynamicLossScaler

# ---------------------------------------------------------------------------------------
# the loss scaler, on scripted sequences of finite / overflowing steps

# (finite?, scale after, good_steps after) from scale 8, growth_interval 3, factors 2 and 1/2,
# min_scale 1, max_scale 32: growth after 3 good steps, halving on every overflow, clamps.
SCRIPT = [
    (True, 8.0, 1),
    (True, 8.0, 2),
    (True, 16.0, 0),  # third good step in a row: doubled
    (False, 8.0, 0),  # overflow: halved, count reset
    (True, 8.0, 1),
    (False, 4.0, 0),  # an overflow also resets a partial count
    (False, 2.0, 0),
    (False, 1.0, 0),
    (False, 1.0, 0),  # never below min_scale
    (True, 1.0, 1),
    (True, 1.0, 2),
    (True, 2.0, 0),
    *[(True, 2.0, 1), (True, 2.0, 2), (True, 4.0, 0)],
    *[(True, 4.0, 1), (True, 4.0, 2), (True, 8.0, 0)],
    *[(True, 8.0, 1), (True, 8.0, 2), (True, 16.0, 0)],
    *[(True, 16.0, 1), (True, 16.0, 2), (True, 32.0, 0)],
    *[(True, 32.0, 1), (True, 32.0, 2), (True, 32.0, 0)],  # never above max_scale
]


def scripted_scaler() -> DynamicLossScaler:
    return DynamicLossScaler(scale=8.0, growth_interval=3, min_scale=1.0, max_scale=32.0)


def test_scaler_follows_the_script_with_host_booleans():
    scaler = scripted_scaler()
    for step, (finite, scale, good) in enumerate(SCRIPT):
        scaler = scaler.update(finite)
        assert (scaler.scale, scaler.good_steps) == (scale, good), f"step {step}"


def test_scaler_device_rules_match_the_host_rules():
    # _update_device is what runs on a GPU (0-d arrays, no host sync); it runs on NumPy too
    scaler = scripted_scaler()
    for step, (finite, scale, good) in enumerate(SCRIPT):
        scaler = scaler._update_device(numpy.asarray(finite))
        assert isinstance(scaler.scale, numpy.ndarray) and scaler.scale.shape == ()
        assert (float(scaler.scale), int(scaler.good_steps)) == (scale, good), f"step {step}"


def test_scaler_is_pure():
    scaler = scripted_scaler()
    scaler.update(False)
    scaler.update(True)
    assert (scaler.scale, scaler.good_steps) == (8.0, 0)


@pytest.mark.parametrize(
    "options",
    [
        {"growth_factor": 1.0},
        {"backoff_factor": 1.0},
        {"backoff_factor": 0.0},
        {"growth_interval": 0},
    ],
)
def test_scaler_rejects_bad_settings(options):
    with pytest.raises(ValueError, match="DynamicLossScaler"):
        DynamicLossScaler(**options)


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"scale": NAN}, "DynamicLossScaler scale must be a finite number in [min_scale, "
         "max_scale] = [1, 1.67772e+07], not nan"),
        ({"scale": 0.0}, "DynamicLossScaler scale must be a finite number in [min_scale, "
         "max_scale] = [1, 1.67772e+07], not 0.0"),
        ({"scale": INF}, "DynamicLossScaler scale must be a finite number in [min_scale, "
         "max_scale] = [1, 1.67772e+07], not inf"),
        ({"scale": 64.0, "max_scale": 32.0}, "DynamicLossScaler scale must be a finite number "
         "in [min_scale, max_scale] = [1, 32], not 64.0"),
        ({"scale": "1024"}, "DynamicLossScaler scale must be a finite number in [min_scale, "
         "max_scale] = [1, 1.67772e+07], not '1024'"),
        ({"min_scale": 8.0, "max_scale": 4.0, "scale": 4.0}, "DynamicLossScaler needs 0 < "
         "min_scale <= max_scale, got min_scale 8.0 and max_scale 4.0"),
        ({"min_scale": 0.0}, "DynamicLossScaler needs 0 < min_scale <= max_scale, got "
         "min_scale 0.0 and max_scale 16777216.0"),
        ({"max_scale": INF}, "DynamicLossScaler max_scale must be a finite number, not inf"),
        ({"min_scale": NAN}, "DynamicLossScaler min_scale must be a finite number, not nan"),
        ({"growth_factor": INF}, "DynamicLossScaler growth_factor must be a finite number, "
         "not inf"),
        ({"growth_interval": 2.5}, "DynamicLossScaler growth_interval must be an int >= 1, "
         "got 2.5"),
        ({"good_steps": -1}, "DynamicLossScaler good_steps must be an int >= 0, not -1"),
    ],
)  # fmt: skip
def test_scaler_refuses_a_state_it_could_never_leave_naming_the_argument(options, message):
    # a NaN, 0 or inf scale would make every step overflow or vanish: all skipped for ever
    with pytest.raises(ValueError) as info:
        DynamicLossScaler(**options)
    assert str(info.value) == message


def test_scaler_takes_numpy_numbers_and_its_own_bounds():
    scaler = DynamicLossScaler(scale=numpy.float32(32.0), good_steps=numpy.int64(3),
                               min_scale=32.0, max_scale=32.0)  # fmt: skip
    assert scaler.update(True).scale == 32.0 and scaler.update(False).scale == 32.0


def test_scale_loss_grad_multiplies_and_keeps_the_dtype():
    dloss = numpy.array([[0.5, -0.25], [1e-6, 3.0]], dtype="float16")
    scaled = DynamicLossScaler(scale=1024.0).scale_loss_grad(dloss)
    assert scaled.dtype == numpy.float16
    numpy.testing.assert_array_equal(scaled, dloss.astype("float32") * 1024)


def test_scaling_keeps_small_gradients_that_float16_would_flush_to_zero():
    tiny = numpy.array([1e-8], dtype="float32")
    assert tiny.astype("float16")[0] == 0  # below float16's smallest subnormal (6e-8)
    scaler = DynamicLossScaler(scale=2.0**16)
    scaled16 = scaler.scale_loss_grad(tiny).astype("float16")
    unscaled, finite = scaler.unscale_and_check({"g": scaled16})
    assert bool(finite)
    numpy.testing.assert_allclose(unscaled["g"], tiny, rtol=1e-3)


def test_unscale_and_check_divides_in_float32():
    rng = numpy.random.default_rng(0)
    grads = ({"W": rng.normal(size=(3, 4)).astype("float16")}, {"b": numpy.ones(4, "float16")})
    unscaled, finite = DynamicLossScaler(scale=512.0).unscale_and_check(grads)
    assert bool(finite) and finite.shape == ()
    for got, raw in zip(T.leaves(unscaled), T.leaves(grads), strict=True):
        assert got.dtype == numpy.float32
        numpy.testing.assert_array_equal(got, raw.astype("float32") / 512)


@pytest.mark.parametrize("bad", [numpy.inf, -numpy.inf, numpy.nan])
def test_unscale_and_check_flags_any_inf_or_nan(bad):
    grads = {"a": numpy.zeros((2, 2), "float16"), "b": numpy.ones(5, "float16")}
    grads["b"][3] = bad
    _, finite = DynamicLossScaler(scale=4.0).unscale_and_check(grads)
    assert not bool(finite)


def test_select_if_finite_on_host_and_as_device_where():
    new = {"W": numpy.full(3, 2.0)}
    old = {"W": numpy.full(3, 1.0)}
    assert precision.select_if_finite(numpy.bool_(True), new, old) is new
    assert precision.select_if_finite(False, new, old) is old
    assert precision.all_finite(new) and not precision.all_finite({"W": numpy.array([numpy.nan])})


# ---------------------------------------------------------------------------------------
# policies and casts


def test_policies_and_their_casts():
    assert precision.get_policy(None) == precision.FLOAT32
    assert precision.get_policy("mixed") == precision.MIXED
    assert precision.MIXED.mixed and not precision.FLOAT32.mixed
    with pytest.raises(ValueError, match="unknown precision 'half'.*mixed"):
        precision.get_policy("half")
    tree = {
        "W": numpy.ones((2, 2), "float32"),
        "step": numpy.asarray(3),
        "mask": numpy.ones(2, bool),
    }
    cast = precision.MIXED.cast_to_compute(tree)
    assert cast["W"].dtype == numpy.float16
    assert cast["step"].dtype == tree["step"].dtype and cast["mask"].dtype == bool
    back = precision.MIXED.cast_to_param(cast)
    assert back["W"].dtype == numpy.float32
    same = numpy.ones(3, "float32")
    assert precision.cast_floating(same, "float32") is same  # no copy when nothing changes


@pytest.mark.parametrize("bad", [["mixed"], {"mixed": 1}, 16, "half"])
def test_an_unknown_precision_is_named_with_the_valid_ones(bad):
    with pytest.raises(ValueError) as info:
        precision.get_policy(bad)
    assert str(info.value) == f"unknown precision {bad!r}; valid: float32, mixed, mixed_float16"
    model = cn.Model([L.Flatten(), L.Dense(2)], device="cpu")
    with pytest.raises(ValueError) as info:
        model.compile(precision=bad)
    assert str(info.value) == f"unknown precision {bad!r}; valid: float32, mixed, mixed_float16"
    assert model.loss_name is None and model.precision == precision.FLOAT32  # unchanged


def test_policy_dtypes_are_floating_names_and_weights_at_least_float32():
    assert precision.Policy(numpy.float16, "f4") == precision.MIXED
    assert precision.MIXED.compute_dtype == "float16"
    for options, message in [
        (("int8", "float32"), "Policy compute_dtype must be a floating dtype such as "
         "'float16' or 'float32', not 'int8'"),
        (("float16", "half-ish"), "Policy param_dtype must be a floating dtype such as "
         "'float16' or 'float32', not 'half-ish'"),
        (("float16", None), "Policy param_dtype must be a floating dtype such as 'float16' "
         "or 'float32', not None"),
        (("float16", "float16"), "Policy param_dtype must be float32 or wider, not float16: "
         "weights kept in float16 lose most updates (float16 is for the compute dtype)"),
    ]:  # fmt: skip
        with pytest.raises(ValueError) as info:
            precision.Policy(*options)
        assert str(info.value) == message


@pytest.mark.parametrize("name", ["mixed", "mixed_float16"])
def test_a_float64_model_refuses_mixed_precision(name):
    # mixed precision keeps float32 master weights; a float64 model would train float64
    # weights beside float32 gradients and optimizer state, which is neither
    model = cn.Model([L.Flatten(), L.Dense(2)], device="cpu", dtype="float64")
    with pytest.raises(ValueError) as info:
        model.compile(optimizer="adam", precision=name)
    assert str(info.value) == (
        f"compile(precision={name!r}): mixed precision keeps the master weights in float32, "
        "but this model's dtype is float64; use Model(..., dtype='float32') for mixed "
        "precision, or precision='float32' to train in float64"
    )
    assert model.optimizer is None and model.precision == precision.FLOAT32
    model.compile(optimizer="adam", precision="float32")  # float64 throughout: fine
    # master weights in float64 with float16 compute, asked for explicitly
    model.compile(optimizer="adam", precision=precision.Policy("float16", "float64"))
    assert model.precision.mixed


def test_accumulation_dtype():
    assert precision.accumulation_dtype("float16") == numpy.float32
    assert precision.accumulation_dtype(numpy.float32) == numpy.float32
    assert precision.accumulation_dtype("float64") == numpy.float64


# ---------------------------------------------------------------------------------------
# mixed-precision training steps


def blob_images(n: int, seed: int) -> tuple[numpy.ndarray, numpy.ndarray]:
    """(n, 1, 8, 8) noisy images whose class (0-2) is where a bright 3x3 blob sits."""
    rng = numpy.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    x = rng.normal(0.0, 0.3, (n, 1, 8, 8))
    corners = [(0, 0), (0, 5), (5, 2)]
    for i, label in enumerate(labels):
        r, c = corners[label]
        x[i, 0, r : r + 3, c : c + 3] += 2.0
    return x.astype("float32"), labels


def small_net() -> L.Sequential:
    return L.Sequential(
        (
            L.Conv2D(4, (3, 3)),
            L.BatchNorm2D(),
            L.Activation("relu"),
            L.MaxPool2D((2, 2)),
            L.Flatten(),
            L.Dense(3),
        )
    )


def accuracy(net, params, state, x, labels) -> float:
    logits, _, _ = cn.apply(net, params, state, x)
    return float((logits.argmax(axis=1) == labels).mean())


def train(policy: str, steps: int = 60, batch: int = 32):
    """Adam on blob_images with one seed; mixed or float32. Returns trees and accuracy."""
    net = small_net()
    x, labels = blob_images(256, seed=1)
    params, state = cn.init(net, (1, 8, 8), rng=0)
    opt = optim.adam(lr=1e-2)
    opt_state = opt.init(params)
    scaler = DynamicLossScaler(growth_interval=20)
    skipped = 0
    for step in range(steps):
        start = (step * batch) % len(x)
        xb, yb = x[start : start + batch], labels[start : start + batch]
        if policy == "mixed":
            params, state, opt_state, scaler, loss, _, finite = precision.mixed_precision_step(
                net, params, state, opt_state, scaler, xb, yb,
                optimizer=opt, loss_fn=losses.softmax_cross_entropy,
            )  # fmt: skip
            skipped += not bool(finite)
        else:
            logits, state, cache = cn.apply(net, params, state, xb, training=True)
            loss, dlogits = losses.softmax_cross_entropy(logits, yb, xp=numpy)
            grads, _ = cn.grad(net, params, cache, dlogits, input_grad=False)
            params, opt_state = opt.update(params, grads, opt_state)
    x_test, y_test = blob_images(200, seed=2)
    return params, state, opt_state, scaler, skipped, accuracy(net, params, state, x_test, y_test)


@pytest.fixture(scope="module")
def trained():
    return {policy: train(policy) for policy in ("float32", "mixed")}


def test_mixed_training_reaches_the_float32_accuracy(trained):
    acc32 = trained["float32"][-1]
    acc16 = trained["mixed"][-1]
    assert acc32 >= 0.9, f"float32 training did not learn the task ({acc32:.2f})"
    assert abs(acc16 - acc32) <= 0.05, f"mixed {acc16:.3f} vs float32 {acc32:.3f}"


def test_mixed_training_keeps_float32_master_weights_and_state(trained):
    params, state, opt_state, scaler, skipped, _ = trained["mixed"]
    for tree in (params, state, opt_state["m"], opt_state["v"]):
        assert {leaf.dtype for leaf in T.leaves(tree)} == {numpy.dtype("float32")}
    # the default scale 2**16 overflows float16 at first: steps were skipped, each halving
    # the scale, which then grows back after runs of good steps, in powers of two
    assert skipped >= 1
    assert scaler.scale in {2.0**e for e in range(25)}
    assert int(opt_state["step"]) == 60 - skipped  # a skipped step does not count


def test_one_mixed_step_matches_a_float32_step():
    # SGD with lr 1 makes the parameter change equal to minus the gradient
    net = L.Sequential((L.Conv2D(3, (3, 3)), L.Activation("relu"), L.Flatten(), L.Dense(3)))
    x, labels = blob_images(16, seed=3)
    params, state = cn.init(net, (1, 8, 8), rng=4)
    opt = optim.sgd(lr=1.0)
    logits, _, cache = cn.apply(net, params, state, x, training=True)
    _, dlogits = losses.softmax_cross_entropy(logits, labels, xp=numpy)
    grads32, _ = cn.grad(net, params, cache, dlogits, input_grad=False)
    new_params, _, _, _, loss, logits16, finite = precision.mixed_precision_step(
        net, params, state, opt.init(params), DynamicLossScaler(scale=1024.0), x, labels,
        optimizer=opt, loss_fn=losses.softmax_cross_entropy,
    )  # fmt: skip
    assert bool(finite) and loss.dtype == numpy.float32 and logits16.dtype == numpy.float32
    for key, g32 in T.flatten(grads32).items():
        step = T.flatten(params)[key] - T.flatten(new_params)[key]
        scale = numpy.abs(g32).max()
        numpy.testing.assert_allclose(step, g32, atol=2e-2 * scale, err_msg=key)


def test_an_overflowing_step_is_skipped_and_the_scale_backs_off():
    net = L.Sequential((L.Flatten(), L.Dense(3)))
    x, labels = blob_images(8, seed=5)
    params, state = cn.init(net, (1, 8, 8), rng=6)
    opt = optim.adam(lr=0.1)
    opt_state = opt.init(params)
    huge = DynamicLossScaler(scale=2.0**24)  # dlogits * 2**24 overflows float16 (max 65504)
    out = precision.mixed_precision_step(
        net, params, state, opt_state, huge, x, labels,
        optimizer=opt, loss_fn=losses.softmax_cross_entropy,
    )  # fmt: skip
    new_params, _, new_opt_state, scaler, loss, _, finite = out
    assert not bool(finite) and numpy.isfinite(loss)
    assert new_params is params and new_opt_state is opt_state
    assert scaler.scale == 2.0**23 and scaler.good_steps == 0


@pytest.mark.filterwarnings("ignore::convnet_core.precision.MixedPrecisionOnNumPyWarning")
def test_model_fit_in_mixed_precision_with_batchnorm_and_dropout():
    # Model.compile(precision="mixed") over the layers of the `best` preset's kinds
    x, labels = blob_images(256, seed=1)
    x_test, y_test = blob_images(200, seed=2)
    results = {}
    for policy in ("float32", "mixed"):
        model = cn.Model(
            [
                L.Conv2D(4, (3, 3)),
                L.BatchNorm2D(),
                L.Activation("relu"),
                L.MaxPool2D((2, 2)),
                L.Flatten(),
                L.Dropout(0.2),
                L.Dense(3),
            ],
            seed=0,
            device="cpu",
        )
        model.compile(loss="categorical_crossentropy", lr=1e-2, precision=policy)
        model.fit((x, labels), epochs=3, batch_size=32, verbose=False)
        results[policy] = (model, model.evaluate(x_test, y_test)[1])
    mixed, acc16 = results["mixed"]
    acc32 = results["float32"][1]
    assert acc32 >= 0.9, f"float32 training did not learn the task ({acc32:.2f})"
    assert abs(acc16 - acc32) <= 0.05, f"mixed {acc16:.3f} vs float32 {acc32:.3f}"
    assert {leaf.dtype for leaf in T.leaves((mixed.params, mixed.state))} == {
        numpy.dtype("float32")
    }


def test_batchnorm_backward_in_float16_survives_more_values_than_float16_can_count():
    # 2 x 200 x 200 = 80,000 values per channel: above float16's largest number, 65,504
    layer = L.BatchNorm2D()
    rng = numpy.random.default_rng(5)
    x = rng.normal(1.0, 2.0, (2, 2, 200, 200))
    dy = rng.normal(size=x.shape)
    results = {}
    for dtype in ("float16", "float64"):
        params, state = cn.init(layer, (2, 200, 200), rng=0, dtype=dtype)
        _, _, cache = cn.apply(layer, params, state, x.astype(dtype), training=True)
        results[dtype] = cn.grad(layer, params, cache, dy.astype(dtype))
    grads16, dx16 = results["float16"]
    grads64, dx64 = results["float64"]
    assert numpy.isfinite(dx16).all()
    numpy.testing.assert_allclose(dx16, dx64, atol=5e-3 * numpy.abs(dx64).max())
    for key in ("gamma", "beta"):  # sums of 80,000 terms, each rounded to float16 first
        numpy.testing.assert_allclose(grads16[key], grads64[key], atol=1e-5 * 80_000)
