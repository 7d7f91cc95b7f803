"""Forward passes against known results and plain-loop references, shapes, errors, dtypes,
BatchNorm's running statistics and Dropout's scaling and determinism."""

from __future__ import annotations

import itertools

import convnet_core as cn
import numpy
import pytest
from convnet_core import layers as L
from convnet_core.layers.base import layer_from_config, layer_to_config


def to_numpy(a):
    return a.get() if hasattr(a, "get") else numpy.asarray(a)


def conv_reference(x, W, b, stride, pads):
    """Direct cross-correlation with four nested loops (slow, obviously right)."""
    n, c, h, w = x.shape
    o, _, kh, kw = W.shape
    top, bottom, left, right = pads
    xp_ = numpy.zeros((n, c, h + top + bottom, w + left + right))
    xp_[:, :, top : top + h, left : left + w] = x
    ho = (xp_.shape[2] - kh) // stride[0] + 1
    wo = (xp_.shape[3] - kw) // stride[1] + 1
    y = numpy.zeros((n, o, ho, wo))
    for row, col in itertools.product(range(ho), range(wo)):
        patch = xp_[:, :, row * stride[0] : row * stride[0] + kh, col * stride[1] :][..., :kw]
        y[:, :, row, col] = numpy.einsum("nchw,ochw->no", patch, W)
    return y + (0 if b is None else b[None, :, None, None])


def pool_reference(x, pool, stride, reduce):
    n, c, h, w = x.shape
    ho, wo = (h - pool[0]) // stride[0] + 1, (w - pool[1]) // stride[1] + 1
    y = numpy.zeros((n, c, ho, wo))
    for row, col in itertools.product(range(ho), range(wo)):
        window = x[:, :, row * stride[0] :, col * stride[1] :][:, :, : pool[0], : pool[1]]
        y[:, :, row, col] = reduce(window.reshape(n, c, -1), axis=-1)
    return y


def max_pool_grad_reference(x, dy, pool, stride):
    """Each window's dy goes to its first maximum (row-major), as in PyTorch."""
    dx = numpy.zeros_like(x)
    n, c, ho, wo = dy.shape
    for b, ch, row, col in itertools.product(range(n), range(c), range(ho), range(wo)):
        top, left = row * stride[0], col * stride[1]
        window = x[b, ch, top : top + pool[0], left : left + pool[1]]
        i, j = numpy.unravel_index(numpy.argmax(window), window.shape)  # first max
        dx[b, ch, top + i, left + j] += dy[b, ch, row, col]
    return dx


CONV_CASES = [
    (L.Conv2D(4, (3, 3)), (3, 6, 6), (1, 1, 1, 1)),
    (L.Conv2D(2, (3, 3), padding="valid"), (3, 7, 5), (0, 0, 0, 0)),
    (L.Conv2D(3, (2, 3), padding=2), (2, 5, 7), (2, 2, 2, 2)),
    (L.Conv2D(3, (3, 2), stride=2), (2, 7, 6), (1, 1, 0, 0)),  # "same": ceil(7/2) = 4 rows
    (L.Conv2D(2, (4, 4), stride=1), (1, 6, 6), (1, 2, 1, 2)),  # even kernel: extra after
    (L.Conv2D(2, (3, 5), stride=(2, 1), padding=(1, 2)), (2, 6, 7), (1, 1, 2, 2)),
    (L.Conv2D(2, (1, 1), stride=3), (1, 6, 6), (0, 0, 0, 0)),  # "same" never pads < 0
]


@pytest.mark.parametrize(("layer", "shape", "pads"), CONV_CASES, ids=repr)
def test_conv2d_matches_a_direct_loop(layer, shape, pads, xp):
    params, state = cn.init(layer, shape, rng=0, xp=xp, dtype="float64")
    params["b"] = xp.asarray(numpy.arange(layer.filters, dtype="float64"))
    x = numpy.random.default_rng(1).standard_normal((2, *shape))
    y, _, _ = cn.apply(layer, params, state, xp.asarray(x), xp=xp)
    want = conv_reference(x, to_numpy(params["W"]), numpy.arange(layer.filters), layer.stride, pads)
    assert layer.pads(*shape[1:]) == pads
    assert y.shape == want.shape == (2, *layer.output_shape(shape))
    numpy.testing.assert_allclose(to_numpy(y), want, rtol=1e-12, atol=1e-12)


def test_conv2d_known_result(xp):
    # a 3x3 box filter over 0..15 with zero padding: each output is its neighbourhood's sum
    layer = L.Conv2D(1, (3, 3), use_bias=False)
    x = xp.asarray(numpy.arange(16, dtype="float32").reshape(1, 1, 4, 4))
    params = {"W": xp.ones((1, 1, 3, 3), dtype="float32")}
    y, _, _ = cn.apply(layer, params, {}, x, xp=xp)
    want = [[10, 18, 24, 18], [27, 45, 54, 39], [51, 81, 90, 63], [42, 66, 72, 50]]
    numpy.testing.assert_array_equal(to_numpy(y)[0, 0], numpy.array(want, dtype="float32"))


def test_conv2d_input_layout_does_not_matter(xp):
    layer = L.Conv2D(3, (3, 3), stride=2, padding=1)
    params, state = cn.init(layer, (2, 7, 6), rng=0, xp=xp)
    x = xp.asarray(numpy.random.default_rng(0).standard_normal((4, 2, 7, 6)), dtype="float32")
    channel_major = xp.ascontiguousarray(x.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    y1, _, c1 = cn.apply(layer, params, state, x, training=True, xp=xp)
    y2, _, c2 = cn.apply(layer, params, state, channel_major, training=True, xp=xp)
    numpy.testing.assert_array_equal(to_numpy(y1), to_numpy(y2))
    dy = xp.asarray(numpy.random.default_rng(1).standard_normal(y1.shape), dtype="float32")
    g1, dx1 = cn.grad(layer, params, c1, dy, xp=xp)
    g2, dx2 = cn.grad(layer, params, c2, xp.ascontiguousarray(dy), xp=xp)
    numpy.testing.assert_allclose(to_numpy(dx1), to_numpy(dx2), rtol=1e-6)
    numpy.testing.assert_allclose(to_numpy(g1["W"]), to_numpy(g2["W"]), rtol=1e-5)


def test_conv2d_he_initialisation(xp):
    layer = L.Conv2D(64, (3, 5))
    params, _ = cn.init(layer, (16, 8, 8), rng=0, xp=xp)
    W = to_numpy(params["W"])
    assert W.shape == (64, 16, 3, 5) and W.dtype == numpy.float32
    assert W.std() == pytest.approx(numpy.sqrt(2 / (16 * 3 * 5)), rel=0.03)
    assert abs(W.mean()) < 0.01
    numpy.testing.assert_array_equal(to_numpy(params["b"]), numpy.zeros(64, "float32"))
    again, _ = cn.init(layer, (16, 8, 8), rng=0, xp=xp)
    numpy.testing.assert_array_equal(to_numpy(again["W"]), W)


@pytest.mark.parametrize(
    ("layer", "pool", "stride"),
    [
        (L.MaxPool2D(), (2, 2), (2, 2)),
        (L.MaxPool2D((3, 3), stride=2), (3, 3), (2, 2)),
        (L.MaxPool2D((2, 3), stride=(1, 2)), (2, 3), (1, 2)),
        (L.MaxPool2D((2, 2), stride=3), (2, 2), (3, 3)),
        (L.MaxPool2D((3, 3)), (3, 3), (3, 3)),  # tiles, taken in two steps
        (L.MaxPool2D((2, 3)), (2, 3), (2, 3)),
        (L.MaxPool2D((1, 2)), (1, 2), (1, 2)),
        (L.MaxPool2D((3, 1)), (3, 1), (3, 1)),
    ],
    ids=repr,
)
def test_max_pool_matches_a_loop_with_ties(layer, pool, stride, xp):
    # small integers: many ties inside windows
    rng = numpy.random.default_rng(3)
    x = rng.integers(0, 3, (2, 3, 7, 8)).astype("float64")
    y, _, cache = cn.apply(layer, {}, {}, xp.asarray(x), training=True, xp=xp)
    numpy.testing.assert_array_equal(to_numpy(y), pool_reference(x, pool, stride, numpy.max))
    dy = rng.standard_normal(y.shape)
    _, dx = cn.grad(layer, {}, cache, xp.asarray(dy), xp=xp)
    want = max_pool_grad_reference(x, dy, pool, stride)
    numpy.testing.assert_allclose(to_numpy(dx), want, rtol=1e-12, atol=1e-12)


def test_max_pool_tie_goes_to_the_first_element(xp):
    x = xp.asarray(numpy.array([[[[1.0, 3.0], [3.0, 2.0]]]], dtype="float32"))
    _, _, cache = cn.apply(L.MaxPool2D(), {}, {}, x, training=True, xp=xp)
    _, dx = cn.grad(L.MaxPool2D(), {}, cache, xp.ones((1, 1, 1, 1), "float32"), xp=xp)
    numpy.testing.assert_array_equal(to_numpy(dx)[0, 0], [[0, 1], [0, 0]])
    flat = xp.full((1, 1, 2, 2), 5.0, dtype="float32")
    _, _, cache = cn.apply(L.MaxPool2D(), {}, {}, flat, training=True, xp=xp)
    _, dx = cn.grad(L.MaxPool2D(), {}, cache, xp.ones((1, 1, 1, 1), "float32"), xp=xp)
    numpy.testing.assert_array_equal(to_numpy(dx)[0, 0], [[1, 0], [0, 0]])


@pytest.mark.parametrize(
    ("layer", "pool", "stride"),
    [
        (L.AvgPool2D(), (2, 2), (2, 2)),
        (L.AvgPool2D((3, 3), stride=2), (3, 3), (2, 2)),
        (L.AvgPool2D((2, 3), stride=(1, 2)), (2, 3), (1, 2)),
    ],
    ids=repr,
)
def test_avg_pool_matches_a_loop(layer, pool, stride, xp):
    x = numpy.random.default_rng(4).standard_normal((2, 3, 7, 8))
    y, _, _ = cn.apply(layer, {}, {}, xp.asarray(x), xp=xp)
    numpy.testing.assert_allclose(
        to_numpy(y), pool_reference(x, pool, stride, numpy.mean), rtol=1e-12
    )


def test_global_avg_pool_known_result(xp):
    x = xp.asarray(numpy.arange(24, dtype="float32").reshape(2, 3, 2, 2))
    y, _, cache = cn.apply(L.GlobalAvgPool2D(), {}, {}, x, training=True, xp=xp)
    numpy.testing.assert_array_equal(to_numpy(y), [[1.5, 5.5, 9.5], [13.5, 17.5, 21.5]])
    _, dx = cn.grad(L.GlobalAvgPool2D(), {}, cache, xp.ones((2, 3), "float32"), xp=xp)
    numpy.testing.assert_array_equal(to_numpy(dx), numpy.full((2, 3, 2, 2), 0.25, "float32"))


# ---------------------------------------------------------------------------------------
# every layer: shapes, dtype, caches

EVERY_LAYER = [
    (L.Conv2D(4, (3, 3)), (3, 9, 7)),
    (L.Conv2D(2, (2, 3), stride=2, padding="valid"), (3, 9, 7)),
    (L.MaxPool2D(), (3, 9, 7)),
    (L.MaxPool2D((3, 3), stride=2), (3, 9, 7)),
    (L.AvgPool2D((2, 2)), (3, 9, 7)),
    (L.AvgPool2D((3, 2), stride=1), (3, 9, 7)),
    (L.GlobalAvgPool2D(), (3, 9, 7)),
    (L.BatchNorm2D(), (3, 9, 7)),
    (L.Dropout(0.5), (3, 9, 7)),
    (L.Flatten(), (3, 9, 7)),
    (L.Dense(5), (7,)),
    *[(L.Activation(name), (3, 4)) for name in sorted(L.ACTIVATIONS)],
    (L.Sequential([L.Conv2D(2), L.Activation("relu"), L.Flatten(), L.Dense(3)]), (1, 5, 5)),
    (L.Residual(L.Conv2D(3, (3, 3))), (3, 5, 5)),
]


@pytest.mark.parametrize(("layer", "shape"), EVERY_LAYER, ids=repr)
def test_float32_stays_float32_and_shapes_agree(layer, shape, xp):
    params, state = cn.init(layer, shape, rng=0, xp=xp)
    for leaf in cn.tree.leaves((params, state)):
        assert leaf.dtype == numpy.float32
    x = xp.asarray(numpy.random.default_rng(0).standard_normal((3, *shape)), dtype="float32")
    y, new_state, cache = cn.apply(layer, params, state, x, training=True, rng=1, xp=xp)
    assert y.dtype == numpy.float32
    assert tuple(y.shape) == (3, *layer.output_shape(shape))
    for leaf in cn.tree.leaves(new_state):
        assert leaf.dtype == numpy.float32
    grads, dx = cn.grad(layer, params, cache, xp.ones_like(y), xp=xp)
    assert dx.dtype == numpy.float32 and dx.shape == x.shape
    assert cn.tree.structure(grads) == cn.tree.structure(params)
    for g, p in zip(cn.tree.leaves(grads), cn.tree.leaves(params), strict=True):
        assert g.dtype == numpy.float32 and g.shape == p.shape
    grads_only, no_dx = cn.grad(layer, params, cache, xp.ones_like(y), xp=xp, input_grad=False)
    assert no_dx is None
    for a, b in zip(cn.tree.leaves(grads_only), cn.tree.leaves(grads), strict=True):
        numpy.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-6)


@pytest.mark.parametrize(("layer", "shape"), EVERY_LAYER, ids=repr)
def test_inference_keeps_no_cache(layer, shape, xp):
    params, state = cn.init(layer, shape, rng=0, xp=xp)
    x = xp.ones((2, *shape), dtype="float32")
    y, _, cache = cn.apply(layer, params, state, x, xp=xp)
    assert cache is None
    assert tuple(y.shape) == (2, *layer.output_shape(shape))
    direct = layer.apply(params, state, x, training=False, rng=None, xp=xp)
    assert direct[2] is None


@pytest.mark.parametrize(("layer", "shape"), EVERY_LAYER, ids=repr)
def test_config_round_trip(layer, shape):
    assert layer_from_config(layer_to_config(layer)) == layer


# ---------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(
    ("layer", "shape", "bad", "expected"),
    [
        (L.Conv2D(4), (3, 8, 8), (2, 2, 8, 8), "(N, 3, *, *)"),
        (L.Conv2D(4), (3, 8, 8), (2, 3, 8), "(N, 3, *, *)"),
        (L.Dense(4), (6,), (2, 5), "(N, 6)"),
        (L.BatchNorm2D(), (3, 4, 4), (2, 4, 4, 4), "(N, 3, *, *)"),
        (L.MaxPool2D(), (3, 4, 4), (2, 3, 4), "(N, *, *, *)"),
        (L.AvgPool2D(), (3, 4, 4), (2, 3, 4), "(N, *, *, *)"),
        (L.GlobalAvgPool2D(), (3, 4, 4), (2, 12), "(N, *, *, *)"),
    ],
    ids=str,
)
def test_shape_errors_name_layer_expected_and_actual(layer, shape, bad, expected, xp):
    params, state = cn.init(layer, shape, rng=0, xp=xp)
    with pytest.raises(L.ShapeError) as error:
        cn.apply(layer, params, state, xp.zeros(bad, "float32"), xp=xp)
    message = str(error.value)
    assert type(layer).__name__ in message and expected in message and str(bad) in message


def test_sequential_shape_error_names_the_child(xp):
    net = L.Sequential([L.Conv2D(2), L.Flatten(), L.Dense(3)])
    params, state = cn.init(net, (1, 4, 4), rng=0, xp=xp)
    with pytest.raises(L.ShapeError, match=r"layer 0 of Sequential: Conv2D.*\(N, 1, \*, \*\)"):
        cn.apply(net, params, state, xp.zeros((2, 3, 4, 4), "float32"), xp=xp)


def test_residual_paths_that_disagree_on_an_input_name_both_shapes(xp):
    # built for 8x8, where both paths give 4x4; on 7x7 the strided conv gives 4x4 and the
    # pool 3x3
    net = L.Residual(L.Conv2D(1, (3, 3), stride=2), L.MaxPool2D((2, 2)))
    params, state = cn.init(net, (1, 8, 8), rng=0, xp=xp)
    message = r"Residual: for an input of shape \(2, 1, 7, 7\) the body gives \(2, 1, 4, 4\)"
    with pytest.raises(L.ShapeError, match=message + r" but the shortcut gives \(2, 1, 3, 3\)"):
        cn.apply(net, params, state, xp.zeros((2, 1, 7, 7), "float32"), xp=xp)


def test_pool_and_kernel_larger_than_input():
    with pytest.raises(L.ShapeError, match=r"MaxPool2D.*\(1, 1, 3\).*2x2"):
        L.MaxPool2D().output_shape((1, 1, 3))
    with pytest.raises(L.ShapeError, match=r"Conv2D.*smaller than the kernel 5x5"):
        L.Conv2D(2, (5, 5), padding="valid").output_shape((1, 4, 9))


def test_unknown_activation_lists_the_valid_names():
    with pytest.raises(ValueError) as error:
        L.Activation("swish")
    for name in L.ACTIVATIONS:
        assert name in str(error.value)
    assert "'swish'" in str(error.value)


@pytest.mark.parametrize(
    "make",
    [
        lambda: L.Conv2D(0),
        lambda: L.Conv2D(2.7),
        lambda: L.Conv2D("8"),
        lambda: L.Dense(1.9),
        lambda: L.Dense(True),
        lambda: L.Conv2D(2, (0, 3)),
        lambda: L.Conv2D(2, stride=0),
        lambda: L.Conv2D(2, padding="full"),
        lambda: L.Conv2D(2, padding=-1),
        lambda: L.MaxPool2D((2, 0)),
        lambda: L.Dropout(1.0),
        lambda: L.Dropout(-0.1),
        lambda: L.BatchNorm2D(momentum=1.5),
        lambda: L.BatchNorm2D(eps=0),
    ],
)
def test_bad_hyper_parameters(make):
    with pytest.raises(ValueError):
        make()


# ---------------------------------------------------------------------------------------
# BatchNorm2D


def test_batchnorm_training_normalises_and_updates_running_stats(xp):
    layer = L.BatchNorm2D(momentum=0.8)
    rng = numpy.random.default_rng(5)
    x = rng.normal(3.0, 2.0, (4, 3, 5, 6))
    gamma, beta = numpy.array([1.0, 2.0, 0.5]), numpy.array([0.0, -1.0, 3.0])
    params = {"gamma": xp.asarray(gamma), "beta": xp.asarray(beta)}
    running_mean, running_var = rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    state = {"running_mean": xp.asarray(running_mean), "running_var": xp.asarray(running_var)}
    y, new_state, _ = cn.apply(layer, params, state, xp.asarray(x), training=True, xp=xp)
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    want = (x - mean[:, None, None]) / numpy.sqrt(var[:, None, None] + 1e-5)
    want = want * gamma[:, None, None] + beta[:, None, None]
    numpy.testing.assert_allclose(to_numpy(y), want, rtol=1e-10, atol=1e-10)
    m = x.size // 3
    numpy.testing.assert_allclose(
        to_numpy(new_state["running_mean"]), 0.8 * running_mean + 0.2 * mean, rtol=1e-12
    )
    numpy.testing.assert_allclose(
        to_numpy(new_state["running_var"]), 0.8 * running_var + 0.2 * var * m / (m - 1), rtol=1e-12
    )
    # the input state is not mutated
    numpy.testing.assert_array_equal(to_numpy(state["running_mean"]), running_mean)


def test_batchnorm_inference_uses_running_stats(xp):
    layer = L.BatchNorm2D()
    x = numpy.random.default_rng(6).standard_normal((2, 2, 3, 3))
    params = {"gamma": xp.asarray([2.0, 0.5]), "beta": xp.asarray([1.0, -1.0])}
    state = {"running_mean": xp.asarray([0.5, -0.5]), "running_var": xp.asarray([4.0, 0.25])}
    y, new_state, cache = cn.apply(layer, params, state, xp.asarray(x), xp=xp)
    want = (x - numpy.array([0.5, -0.5])[:, None, None]) / numpy.sqrt(
        numpy.array([4.0, 0.25])[:, None, None] + 1e-5
    ) * numpy.array([2.0, 0.5])[:, None, None] + numpy.array([1.0, -1.0])[:, None, None]
    numpy.testing.assert_allclose(to_numpy(y), want, rtol=1e-12)
    assert new_state is state and cache is None


# ---------------------------------------------------------------------------------------
# Dropout


def test_dropout_inverted_scaling(xp):
    layer = L.Dropout(0.25)
    x = xp.ones((50, 40, 50), dtype="float32")
    y, _, _ = cn.apply(layer, {}, {}, x, training=True, rng=0, xp=xp)
    values = to_numpy(y)
    kept = values != 0
    numpy.testing.assert_allclose(values[kept], 1 / 0.75, rtol=1e-6)
    assert kept.mean() == pytest.approx(0.75, abs=0.005)  # 100000 draws
    assert values.mean() == pytest.approx(1.0, abs=0.01)  # expectation preserved


def test_dropout_is_deterministic_given_the_rng(xp):
    layer = L.Dropout(0.5)
    x = xp.asarray(numpy.random.default_rng(0).standard_normal((8, 30)), dtype="float32")
    a, _, ca = cn.apply(layer, {}, {}, x, training=True, rng=7, xp=xp)
    b, _, _ = cn.apply(layer, {}, {}, x, training=True, rng=7, xp=xp)
    c, _, _ = cn.apply(layer, {}, {}, x, training=True, rng=8, xp=xp)
    numpy.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    assert (to_numpy(a) != to_numpy(c)).any()
    # the backward pass uses the same mask
    _, dx = cn.grad(layer, {}, ca, xp.ones_like(x), xp=xp)
    numpy.testing.assert_array_equal(to_numpy(dx) != 0, to_numpy(a) != 0)


def test_dropout_needs_an_rng_when_training_and_is_identity_otherwise(xp):
    x = xp.ones((2, 3), dtype="float32")
    with pytest.raises(ValueError, match="Dropout.*rng"):
        cn.apply(L.Dropout(0.5), {}, {}, x, training=True, xp=xp)
    y, _, _ = cn.apply(L.Dropout(0.5), {}, {}, x, xp=xp)
    assert y is x


@pytest.mark.parametrize(
    "layer", [L.MaxPool2D(), L.MaxPool2D((3, 3), stride=2), L.AvgPool2D()], ids=repr
)
def test_pool_gradients_do_not_depend_on_memory_layouts(layer):
    # the layers' outputs are channel-major in memory; a dy from Flatten is C-ordered
    rng = numpy.random.default_rng(7)
    x = rng.integers(0, 3, (3, 4, 8, 9)).astype("float32")  # (N, C, H, W) with ties
    x_channel_major = numpy.ascontiguousarray(x.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    y, _, cache = cn.apply(layer, {}, {}, x, training=True, xp=numpy)
    y_cm, _, cache_cm = cn.apply(layer, {}, {}, x_channel_major, training=True, xp=numpy)
    numpy.testing.assert_array_equal(y_cm, y)
    dy = rng.standard_normal(y.shape).astype("float32")  # C-ordered
    _, dx = cn.grad(layer, {}, cache, dy, xp=numpy)
    _, dx_cm = cn.grad(layer, {}, cache_cm, dy, xp=numpy)
    numpy.testing.assert_array_equal(dx_cm, dx)


def test_flatten_keeps_the_feature_count_of_an_empty_batch(xp):
    y, _, _ = L.Flatten().apply(
        {}, {}, xp.zeros((0, 2, 3, 4), "float32"), training=False, rng=None, xp=xp
    )
    assert y.shape == (0, 24)


def test_flatten_is_c_order_channels_first(xp):
    x = xp.asarray(numpy.arange(2 * 3 * 2 * 2, dtype="float32").reshape(2, 3, 2, 2))
    y, _, _ = L.Flatten().apply({}, {}, x, training=False, rng=None, xp=xp)
    # sample 0: channel 0's four pixels, then channel 1's, then channel 2's
    numpy.testing.assert_array_equal(cn.backend.to_host(y)[0], numpy.arange(12))


def test_dense_initialisation_is_he_uniform_with_zero_bias(xp):
    params, _ = cn.init(L.Dense(400), (600,), rng=0, xp=xp)
    W, b = (numpy.asarray(cn.backend.to_host(params[k])) for k in ("W", "b"))
    limit = numpy.sqrt(6.0 / 600)
    assert W.shape == (600, 400) and numpy.abs(W).max() <= limit
    assert numpy.abs(W).max() > 0.99 * limit  # 240,000 draws reach the edge
    assert W.std() == pytest.approx(limit / numpy.sqrt(3), rel=0.01)  # uniform's std
    assert not b.any()
