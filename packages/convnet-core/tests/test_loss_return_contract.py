"""What a loss must return, (0-d value, gradient shaped and typed like the predictions),
checked where its result is first used: a loss that breaks it is a ValueError naming the
loss and what it returned, in fit, evaluate, the custom loop and mixed precision alike.
A value returned as a Python float or a NumPy scalar (as ConvNet-NumPy's losses did) is
taken as a 0-d array."""

import numpy
import pytest
from convnet_core import Model, backend, losses
from convnet_core.layers import Dense

X = numpy.random.default_rng(0).standard_normal((20, 4)).astype(numpy.float32)
Y = numpy.random.default_rng(1).standard_normal((20, 1)).astype(numpy.float32)


def as_python_float(p, t, *, xp):
    value, grad = losses.mse(p, t, xp=xp)
    return float(value), grad


def as_numpy_scalar(p, t, *, xp):
    value, grad = losses.mse(p, t, xp=xp)
    return numpy.float32(float(value)), grad


def value_only(p, t, *, xp):
    return xp.asarray(losses.mse(p, t, xp=xp)[0])  # a 0-d array with NumPy too


def per_sample(p, t, *, xp):
    diff = p - xp.asarray(t, dtype=p.dtype)
    return (diff * diff).mean(axis=1), diff * p.dtype.type(2 / diff.size)


def float64_grad(p, t, *, xp):
    value, grad = losses.mse(p, t, xp=xp)
    return value, grad.astype("float64")


def three_items(p, t, *, xp):
    value, grad = losses.mse(p, t, xp=xp)
    return value, grad, None


def no_grad(p, t, *, xp):
    return losses.mse(p, t, xp=xp)[0], None


REFUSED = {
    value_only: "loss 'value_only' returned a 0-d array of dtype float32 instead of a pair "
    "(value, grad): the batch's mean loss as a 0-d array and dLoss/dpredictions shaped like "
    "the predictions",
    per_sample: "loss 'per_sample' returned a value of shape (N,) for predictions of shape "
    "(N, 1); the value must be the batch's mean loss, a 0-d array (return per-sample "
    "losses' .mean())",
    float64_grad: "loss 'float64_grad' returned a gradient of dtype float64 for predictions "
    "of dtype float32; the gradient of a loss must have the predictions' dtype",
    three_items: "loss 'three_items' returned a tuple of 3 items instead of a pair "
    "(value, grad): the batch's mean loss as a 0-d array and dLoss/dpredictions shaped like "
    "the predictions",
    no_grad: "loss 'no_grad' returned a gradient that is a NoneType, not an array, for "
    "predictions of shape (N, 1); the gradient of a loss must have the predictions' shape",
}


def model_with(loss, xp, precision=None):
    return Model([Dense(1)], device=xp, seed=0).compile(
        loss=loss, optimizer="sgd", lr=0.01, precision=precision
    )


def expected(loss, batch):
    return REFUSED[loss].replace("(N,", f"({batch},")


@pytest.mark.parametrize("loss", list(REFUSED), ids=lambda f: f.__name__)
@pytest.mark.parametrize("batch_size", [8, 20])
def test_fit_and_evaluate_name_the_loss_and_what_it_returned(xp, loss, batch_size):
    model = model_with(loss, xp).build((4,))
    with pytest.raises(ValueError) as error:
        model.fit((X, Y), epochs=1, batch_size=batch_size, verbose=False)
    assert str(error.value) == expected(loss, batch_size)
    with pytest.raises(ValueError) as error:
        model.evaluate(X, Y, batch_size=batch_size)
    assert str(error.value) == expected(loss, batch_size)


@pytest.mark.parametrize("loss", list(REFUSED), ids=lambda f: f.__name__)
def test_the_custom_loop_names_the_loss(xp, loss):
    model = model_with(loss, xp)
    out = model.build((4,)).forward(X, training=True)
    with pytest.raises(ValueError) as error:
        model.loss.forward(out, Y)
    assert str(error.value) == expected(loss, 20)
    with pytest.raises(ValueError) as error:
        model.loss(out, Y)
    assert str(error.value) == expected(loss, 20)


@pytest.mark.filterwarnings("ignore::convnet_core.precision.MixedPrecisionOnNumPyWarning")
def test_mixed_precision_names_the_loss(xp):
    model = model_with(per_sample, xp, precision="mixed").build((4,))
    with pytest.raises(ValueError) as error:
        model.fit((X, Y), epochs=1, batch_size=8, verbose=False)
    assert str(error.value) == expected(per_sample, 8)


@pytest.mark.parametrize("loss", [as_python_float, as_numpy_scalar], ids=lambda f: f.__name__)
@pytest.mark.parametrize("batch_size", [8, 20])
def test_a_float_value_is_taken_as_a_0d_array(xp, loss, batch_size):
    trained = []
    for loss_fn in (loss, "mse"):
        model = model_with(loss_fn, xp)
        history = model.fit((X, Y), epochs=1, batch_size=batch_size, verbose=False, seed=0)
        evaluated = model.evaluate(X, Y, batch_size=batch_size)[0]
        trained.append((history["loss"][0], evaluated))
    assert trained[0] == pytest.approx(trained[1], rel=1e-6)
    value, grad = losses.value_and_grad(loss, xp.asarray(X[:, :1]), Y, xp=xp)
    assert value.shape == () and backend.get_array_module(value) is xp
    assert float(value) == pytest.approx(float(losses.mse(xp.asarray(X[:, :1]), Y, xp=xp)[0]))
