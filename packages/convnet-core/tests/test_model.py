"""Model: building, input layouts, predict/evaluate/summary, the fused softmax gradient, the
old custom-loop methods, parts and RNG state."""

import sys

import numpy
import pytest
from convnet_core import Model, optim
from convnet_core import tree as T
from convnet_core.layers import Activation, Conv2D, Dense, Flatten, ShapeError


def conv_model(xp, **kw):
    return Model([Conv2D(2, (3, 3)), Activation("relu"), Flatten(), Dense(3)], device=xp, **kw)


def host_leaves(tree):
    from convnet_core import backend

    return [numpy.array(leaf) for leaf in T.leaves(backend.to_host(tree))]  # copies


def test_build_takes_per_sample_and_batched_shapes(xp):
    assert conv_model(xp).build((1, 8, 8)).input_shape == (1, 8, 8)
    assert conv_model(xp).build((5, 1, 8, 8)).input_shape == (1, 8, 8)
    assert conv_model(xp).build((5, 8, 8, 1)).input_shape == (1, 8, 8)  # channels last
    dense = Model([Dense(4), Activation("relu"), Dense(1)], device=xp).build((1, 5))
    assert dense.input_shape == (5,)  # ConvNet-NumPy's batched (1, 5)
    model = conv_model(xp).build((1, 8, 8))
    params = model.params
    for compatible in [(1, 8, 8), (4, 8, 8), (4, 8, 8, 1), (4, 1, 8, 8)]:
        model.build(compatible)  # no-op on a built model
    assert model.params is params
    with pytest.raises(ValueError, match=r"built for inputs \(1, 8, 8\)"):
        model.build((4, 9, 9))
    with pytest.raises(ValueError, match="already built"):
        model.add(Dense(2))
    with pytest.raises(ShapeError):
        Model([Dense(3)], device=xp).build((2, 3, 4, 5))


def test_layouts_give_the_same_predictions(xp):
    model = conv_model(xp, seed=0).compile()
    x = numpy.random.default_rng(0).random((5, 1, 8, 8), dtype=numpy.float32)
    nchw = model.predict(x)
    numpy.testing.assert_array_equal(model.predict(x[:, 0]), nchw)  # (N, H, W)
    numpy.testing.assert_array_equal(model.predict(x.transpose(0, 2, 3, 1)), nchw)  # NHWC
    numpy.testing.assert_allclose(nchw.sum(axis=1), 1.0, rtol=1e-6)  # probabilities
    with pytest.raises(ShapeError, match=r"expects inputs of shape \(N, 1, 8, 8\)"):
        model.predict(numpy.zeros((2, 8, 8, 2), numpy.float32))


def test_input_shape_is_inferred_from_channels_last_data(xp):
    model = conv_model(xp, seed=0).compile()
    x = numpy.random.default_rng(0).random((3, 8, 8, 1), dtype=numpy.float32)
    assert model.predict(x).shape == (3, 3)
    assert model.input_shape == (1, 8, 8)
    flat = Model([Flatten(), Dense(2)], device=xp, seed=0).compile()
    flat.predict(numpy.zeros((2, 6, 6), numpy.float32))
    assert flat.input_shape == (6, 6)  # the shape as given fits: no channel axis added


@pytest.mark.parametrize("dtype", ["float16", numpy.float16, "f2"])
def test_float16_weights_are_refused_for_mixed_precision(dtype):
    # float16 weights lose updates below 1/1024 of a weight, and Adam's eps (1e-8) is 0
    # in float16, so training diverged at once and was blamed on the learning rate
    assert numpy.float16(1e-8) == 0 and numpy.float16(1.0) + numpy.float16(1e-4) == 1.0
    with pytest.raises(ValueError) as info:
        Model([Dense(2)], device="cpu", dtype=dtype)
    assert str(info.value) == (
        "Model: dtype float16 is too narrow for weights: updates smaller than a weight's "
        "float16 resolution (1/1024 of it) are lost and Adam's eps (1e-8) rounds to 0, so "
        "training diverges. For float16 compute keep dtype float32 and use "
        "compile(precision='mixed'): float32 master weights, float16 forward and backward"
    )


def test_model_dtypes_other_than_float32_and_float64_are_refused():
    with pytest.raises(ValueError) as info:
        Model([Dense(2)], device="cpu", dtype="int32")
    assert str(info.value) == "Model: dtype must be a floating type such as float32, not int32"
    assert Model([Dense(2)], device="cpu", dtype="float64").dtype == numpy.float64


def dense_softmax_model(xp, softmax):
    layers = [Dense(4), Activation("tanh"), Dense(3)]
    if softmax:
        layers.append(Activation("softmax"))
    model = Model(layers, device=xp, seed=1, dtype="float64")
    model.compile(loss="categorical_crossentropy", optimizer="sgd", lr=1.0)
    return model.build((5,))


def cross_entropy_of_probabilities(model, x, labels):
    probs = model.predict(x)
    return -numpy.log(probs[numpy.arange(len(labels)), labels]).mean()


def test_fused_softmax_gradient_matches_finite_differences(xp):
    """A softmax head trained with cross-entropy: the gradient is the true one of
    -mean log softmax, whichever path (fit's fused step, old-style backward) computes it."""
    rng = numpy.random.default_rng(2)
    x = rng.normal(size=(6, 5))
    labels = rng.integers(0, 3, 6)
    model = dense_softmax_model(xp, softmax=True)
    start = model.params

    numeric = []
    for index, leaf in enumerate(host_leaves(start)):
        g = numpy.zeros_like(leaf)
        for pos in numpy.ndindex(leaf.shape):
            values = []
            for sign in (1, -1):
                bumped = host_leaves(start)
                bumped[index][pos] += sign * 1e-6
                model.params = T.unflatten(
                    start, dict(zip(T.flatten(start), map(xp.asarray, bumped), strict=True))
                )
                values.append(cross_entropy_of_probabilities(model, x, labels))
            g[pos] = (values[0] - values[1]) / 2e-6
        numeric.append(g)
    model.params = start

    # the old custom-loop path: forward, loss.forward/backward, backward
    probs = model.forward(x, training=True)
    loss = model.loss.forward(probs, xp.asarray(labels))
    assert loss == pytest.approx(cross_entropy_of_probabilities(model, x, labels), rel=1e-12)
    model.backward(model.loss.backward())
    for got, want in zip(host_leaves(model.grads), numeric, strict=True):
        numpy.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8)

    # a gradient computed outside the loss goes through the softmax's own backward
    model.forward(x, training=True)
    t = numpy.eye(3)[labels]
    dprobs = xp.asarray(-t / (backend_host(probs) * len(labels)))
    model.backward(dprobs)
    for got, want in zip(host_leaves(model.grads), numeric, strict=True):
        numpy.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-8)

    # fit's step: one full-batch SGD step with lr 1 moves the params by -gradient
    model.fit((x, labels), epochs=1, batch_size=6, shuffle=False, verbose=False)
    for new, old, want in zip(host_leaves(model.params), host_leaves(start), numeric, strict=True):
        numpy.testing.assert_allclose(old - new, want, rtol=1e-6, atol=1e-8)


def backend_host(array):
    from convnet_core import backend

    return numpy.asarray(backend.to_host(array))


def test_softmax_head_and_logits_head_predict_alike(xp):
    with_softmax = dense_softmax_model(xp, softmax=True)
    logits_only = dense_softmax_model(xp, softmax=False)
    x = numpy.random.default_rng(0).normal(size=(4, 5))
    numpy.testing.assert_allclose(with_softmax.predict(x), logits_only.predict(x), rtol=1e-12)


def test_old_style_step_equals_the_optimizer_update(xp):
    model = dense_softmax_model(xp, softmax=False)
    x = numpy.random.default_rng(0).normal(size=(4, 5))
    y = numpy.array([0, 1, 2, 1])
    before = model.params
    out = model.forward(x, training=True)
    model.loss.forward(out, y)
    dx = model.backward(model.loss.backward())
    assert dx.shape == (4, 5)
    grads = model.grads
    model.optimizer.step(model.get_params_and_grads())
    expected, _ = model.optimizer.update(before, grads, model.optimizer.init(before))
    for got, want in zip(host_leaves(model.params), host_leaves(expected), strict=True):
        numpy.testing.assert_array_equal(got, want)
    pairs = list(model.get_params_and_grads())
    assert len(pairs) == len(T.leaves(model.params))
    with pytest.raises(TypeError, match="pure"):
        model.optimizer.step([(1, 2)])


def test_backward_takes_a_host_gradient_in_another_dtype(xp):
    model = conv_model(xp).build((1, 8, 8))
    x = numpy.random.default_rng(1).normal(size=(2, 1, 8, 8)).astype("float32")
    out = model.forward(x, training=True)
    assert out.dtype == numpy.float32
    model.backward(xp.ones(out.shape, dtype=out.dtype))
    want_grads = host_leaves(model.grads)

    # as an old loop writes it: a float64 NumPy array, whatever the model's device
    dx = model.backward(numpy.ones(tuple(out.shape)))

    assert dx.dtype == numpy.float32 and type(dx) is type(out)
    for got, want in zip(host_leaves(model.grads), want_grads, strict=True):
        assert got.dtype == numpy.float32
        numpy.testing.assert_array_equal(got, want)


def test_summary_lists_layers_shapes_and_counts(xp, capsys):
    model = conv_model(xp).build((1, 8, 8))
    text = model.summary()
    assert capsys.readouterr().out.strip() == text.strip()
    assert "(2, 8, 8)" in text and "(128,)" in text and "(3,)" in text
    total = 2 * 9 + 2 + 128 * 3 + 3
    assert f"Total params: {total:,}" in text
    with pytest.raises(ValueError, match="not built"):
        Model([Dense(2)], device=xp).summary()


def test_evaluate_returns_loss_and_accuracy(xp):
    model = dense_softmax_model(xp, softmax=False)
    x = numpy.random.default_rng(0).normal(size=(10, 5))
    y = numpy.random.default_rng(1).integers(0, 3, 10)
    loss, acc = model.evaluate(x, y, batch_size=3)
    probs = model.predict(x)
    assert loss == pytest.approx(-numpy.log(probs[numpy.arange(10), y]).mean(), rel=1e-10)
    assert acc == pytest.approx((probs.argmax(1) == y).mean())


def test_from_parts_and_rng_state(xp):
    model = conv_model(xp, seed=4).compile(optimizer="sgd", lr=0.1, momentum=0.9)
    model.build((1, 8, 8))
    x = numpy.random.default_rng(0).random((2, 1, 8, 8), dtype=numpy.float32)
    from convnet_core import backend

    copy = Model.from_parts(
        model.network,
        backend.to_host(model.params),
        backend.to_host(model.state),
        [1, 8, 8],
        optimizer=optim.to_config(model.optimizer),
        loss_name="categorical_crossentropy",
        history={"loss": [1.0]},
        epoch=3,
        device=xp,
    )
    numpy.testing.assert_array_equal(copy.predict(x), model.predict(x))
    assert copy.optimizer == model.optimizer and copy.epoch == 3
    assert copy.history == {"loss": [1.0]} and copy.input_shape == (1, 8, 8)
    state = model.get_rng_state()
    assert state == {"seed": 4}
    copy.set_rng_state(state)
    assert copy.seed == 4
    with pytest.raises(ValueError, match="set_rng_state"):
        copy.set_rng_state({"bit_generator": "PCG64"})


def test_learning_rate_property(xp):
    model = dense_softmax_model(xp, softmax=False)
    assert model.lr == 1.0
    model.lr = 0.125
    assert optim.get_lr(model.opt_state) == 0.125


def test_compile_errors_are_clear(xp):
    model = Model([Dense(2)], device=xp)
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        model.compile(loss="hinge")
    with pytest.raises(ValueError, match="optimizer's constructor"):
        model.compile(optimizer=optim.adam(), lr=0.1)
    with pytest.raises(ValueError, match="does not take momentum"):
        model.compile(optimizer="adam", momentum=0.9)
    assert model.compile(optimizer="sgd", lr=0.5, momentum=0.9).optimizer == optim.sgd(
        0.5, momentum=0.9
    )


def test_compile_passes_a_weight_decay_of_zero_on(xp):
    model = Model([Dense(2)], device=xp)
    assert model.compile(optimizer="adamw").optimizer.weight_decay == 0.01  # AdamW's default
    assert model.compile(optimizer="adamw", weight_decay=0.0).optimizer.weight_decay == 0.0
    assert model.compile(optimizer="adam", weight_decay=0.25).optimizer.weight_decay == 0.25


def test_save_without_convnet_io_names_the_package(xp, monkeypatch):
    monkeypatch.setitem(sys.modules, "convnet_io", None)
    model = Model([Dense(2)], device=xp).build((3,))
    with pytest.raises(ImportError, match="pip install convnet-io"):
        model.save("x.h5")
    with pytest.raises(ImportError, match="pip install convnet-io"):
        Model.load("x.h5")
