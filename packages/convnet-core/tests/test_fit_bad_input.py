"""fit, evaluate and predict given bad data or settings: a clear error, before any
training where the problem can be seen up front, and never a model that silently holds
NaN weights or learned from wrong labels."""

import math

import numpy
import pytest
from convnet_core import Model
from convnet_core import tree as T
from convnet_core.callbacks import EarlyStopping
from convnet_core.layers import Dense, Flatten, Sequential
from convnet_core.training import NonFiniteLossError


def host_leaves(tree):
    from convnet_core import backend

    return [numpy.array(leaf) for leaf in T.leaves(backend.to_host(tree))]


def data(n=32, classes=3, seed=0):
    rng = numpy.random.default_rng(seed)
    return rng.random((n, 4), dtype=numpy.float32), rng.integers(0, classes, n)


def model(xp, **compile_options):
    options = {"optimizer": "sgd", "lr": 0.1, **compile_options}
    return Model([Dense(3)], device=xp, seed=0).compile(**options)


class BatchesOnly:
    """A dataset that only yields batches: its labels cannot be checked up front."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def batches(self, batch_size, shuffle=False):
        for start in range(0, len(self.x), batch_size):
            yield self.x[start : start + batch_size], self.y[start : start + batch_size]


@pytest.mark.parametrize("epochs", [1, 2])
def test_an_update_that_breaks_the_weights_in_an_epochs_last_step_is_caught(xp, epochs):
    # one batch per epoch: its update is the epoch's last, with no loss after it to tell
    rng = numpy.random.default_rng(0)
    x = rng.random((8, 1, 4, 4), dtype=numpy.float32) * 1e3
    y = numpy.arange(8) % 10
    net = Model([Flatten(), Dense(10)], device=xp, seed=0).compile(optimizer="sgd", lr=1e38)
    net.build((1, 4, 4))
    before = host_leaves(net.params)
    with (
        numpy.errstate(over="ignore", invalid="ignore"),
        pytest.raises(NonFiniteLossError, match="the parameters became NaN or infinite at epoch 1"),
    ):
        net.fit((x, y), epochs=epochs, batch_size=8, verbose=False)
    after = host_leaves(net.params)
    assert all(numpy.array_equal(a, b) for a, b in zip(before, after, strict=True))
    assert net.epoch == 0


class Batches:
    """Batches of 8 in order, `x` scaled by `scale[number]` (1-based; 1 when not given):
    1e25 makes Adam's v = g² overflow float32 while the loss and the weights stay finite
    (the step m / (sqrt(v) + eps) is then 0); NaN makes the loss NaN."""

    def __init__(self, x, y, scale):
        self.x, self.y, self.scale = x, y, scale

    def batches(self, batch_size, shuffle=False):
        for number, start in enumerate(range(0, len(self.x), batch_size), start=1):
            x = self.x[start : start + batch_size] * numpy.float32(self.scale.get(number, 1))
            yield x, self.y[start : start + batch_size]


def adam_model(xp):
    return Model([Dense(3)], device=xp, seed=0).compile(optimizer="adam", lr=0.1)


def assert_all_finite(tree):
    assert all(numpy.isfinite(leaf).all() for leaf in host_leaves(tree))


def test_an_optimizer_state_that_overflows_stops_fit_at_the_end_of_the_epoch(xp):
    # as compile(optimizer="adam", lr=1e6) on MNIST: a finite loss and finite weights,
    # but v infinite, which the model could not be saved with
    x, y = data(40)
    net = adam_model(xp)
    net.fit((x, y), epochs=1, batch_size=8, verbose=False)
    after_one = host_leaves((net.params, net.opt_state))
    with (
        numpy.errstate(over="ignore", invalid="ignore"),
        pytest.raises(NonFiniteLossError) as error,
    ):
        net.fit(Batches(x, y, {2: 1e25}), epochs=1, batch_size=8, verbose=False)
    assert str(error.value) == (
        "the optimizer state became NaN or infinite during epoch 2 (first in 'v/0/W', "
        "learning rate 0.1); the model goes back to where epoch 2 started. Try a lower "
        "learning rate (compile(lr=...)) or gradient clipping (clip_norm=...)."
    )
    # v stayed infinite after batch 2, so the last good point is the epoch's start
    for kept, want in zip(host_leaves((net.params, net.opt_state)), after_one, strict=True):
        numpy.testing.assert_array_equal(kept, want)
    assert net.epoch == 1 and len(net.history["loss"]) == 1


def test_an_optimizer_state_that_overflows_in_the_last_step_keeps_the_step_before(xp):
    x, y = data(40)
    net = adam_model(xp)
    with (
        numpy.errstate(over="ignore", invalid="ignore"),
        pytest.raises(NonFiniteLossError, match="the model keeps its last good parameters"),
    ):
        net.fit(Batches(x, y, {5: 1e25}), epochs=1, batch_size=8, verbose=False)
    four_steps = adam_model(xp)
    four_steps.fit((x[:32], y[:32]), epochs=1, batch_size=8, shuffle=False, verbose=False)
    assert int(net.opt_state["step"]) == 4
    assert_all_finite(net.opt_state)
    want = host_leaves((four_steps.params, four_steps.opt_state))
    for kept, expected in zip(host_leaves((net.params, net.opt_state)), want, strict=True):
        numpy.testing.assert_array_equal(kept, expected)


def test_a_nan_loss_after_the_optimizer_state_overflowed_goes_back_to_the_epoch_start(
    xp, monkeypatch
):
    # the loss of batch 2 vouches for the weights after step 1, but v was infinite there.
    # A GPU reads losses back every GPU_CHECK_EVERY batches; here every batch, as a CPU does.
    from convnet_core import training

    monkeypatch.setattr(training, "GPU_CHECK_EVERY", 1)
    x, y = data(40)
    net = adam_model(xp)
    built = host_leaves(net.build((4,)).params)
    with (
        numpy.errstate(over="ignore", invalid="ignore"),
        pytest.raises(NonFiniteLossError) as error,
    ):
        net.fit(Batches(x, y, {1: 1e25, 3: math.nan}), epochs=1, batch_size=8, verbose=False)
    assert str(error.value).startswith(
        "the loss became NaN or infinite at epoch 1, batch 3 (learning rate 0.1); the model "
        "goes back to where epoch 1 started."
    )
    assert int(net.opt_state["step"]) == 0
    assert_all_finite(net.opt_state)
    for kept, want in zip(host_leaves(net.params), built, strict=True):
        numpy.testing.assert_array_equal(kept, want)


def test_validation_labels_are_checked_before_training(xp):
    x, y = data()
    net = model(xp)
    for bad in (y + 3, y - 1):
        with pytest.raises(ValueError, match=r"fit: val_data labels must be classes in \[0, 3\)"):
            net.fit((x, y), val_data=(x, bad), epochs=1, verbose=False)
    assert net.epoch == 0


def test_a_wrong_label_in_a_later_batch_of_a_dataset_is_caught(xp):
    x, y = data()
    y[-1] = -1  # in the last batch; the dataset offers no `labels` to check up front
    with pytest.raises(ValueError, match=r"labels must be classes in \[0, 3\).* from -1 to"):
        model(xp).fit(BatchesOnly(x, y), epochs=1, batch_size=8, verbose=False)


def test_integer_labels_for_mse_must_be_classes_too(xp):
    x, y = data()
    for bad in (y + 10, y - 3):
        with pytest.raises(ValueError, match=r"labels must be classes in \[0, 3\)"):
            model(xp, loss="mse").fit((x, bad), epochs=1, verbose=False)


def test_fractional_labels_for_cross_entropy_are_refused(xp):
    x, _ = data()
    with pytest.raises(ValueError, match="integer class labels .* such as 0.5"):
        model(xp).fit((x, numpy.full(len(x), 0.5)), epochs=1, verbose=False)


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_nan_or_infinity_in_the_data_is_named_not_blamed_on_the_learning_rate(xp, value):
    x, y = data()
    x[5, 2] = value
    net = model(xp)
    with pytest.raises(ValueError, match=r"fit: the training data: X holds 1 NaN .*sample 5"):
        net.fit((x, y), epochs=1, verbose=False)
    good_x, _ = data()
    with pytest.raises(ValueError, match=r"fit: val_data: X holds 1 NaN"):
        net.fit((good_x, y), val_data=(x, y), epochs=1, verbose=False)
    with pytest.raises(ValueError, match=r"evaluate: the data: X holds 1 NaN"):
        net.evaluate(x, y)
    one_hot = numpy.eye(3, dtype=numpy.float32)[y]
    one_hot[0, 0] = value
    with pytest.raises(ValueError, match=r"y holds 1 NaN"):
        net.fit((good_x, one_hot), epochs=1, verbose=False)


def test_inputs_that_are_not_real_numbers_are_refused(xp):
    x, y = data()
    with pytest.raises(ValueError, match="X must hold real numbers, got complex64"):
        model(xp).fit((x.astype(numpy.complex64), y), epochs=1, verbose=False)
    with pytest.raises(ValueError, match="X must hold numbers"):
        model(xp).fit(([["0.5"] * 4] * len(y), y), epochs=1, verbose=False)
    with pytest.raises(ValueError, match="y must be an array of samples"):
        model(xp).fit((x, 3), epochs=1, verbose=False)


def test_lists_train_like_arrays(xp):
    x, y = data()
    from_arrays = model(xp).fit((x, y), epochs=2, verbose=False)
    from_lists = model(xp).fit((x.tolist(), y.tolist()), epochs=2, verbose=False)
    assert from_lists["loss"] == pytest.approx(from_arrays["loss"], rel=1e-6)


def test_a_monitor_that_fit_does_not_log_is_refused_before_training(xp):
    x, y = data()
    net = model(xp)
    with pytest.raises(ValueError, match=r"monitor='banana' is not among .*\(loss, acc, lr\)"):
        net.fit((x, y), epochs=3, early_stopping=True, monitor="banana", verbose=False)
    with pytest.raises(ValueError, match="monitor='val_loss'.*need val_data or val_split"):
        net.fit((x, y), epochs=3, lr_schedule="plateau", monitor="val_loss", verbose=False)
    assert net.epoch == 0
    # a callback of the user's own says so at the first epoch's end
    with pytest.raises(ValueError, match="monitor='val_acc'"):
        net.fit((x, y), epochs=3, callbacks=[EarlyStopping("val_acc")], verbose=False)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch_size": 2.5}, "fit: batch_size must be a whole number"),
        ({"batch_size": "8"}, "fit: batch_size must be a whole number"),
        ({"batch_size": 0}, "fit: batch_size must be >= 1"),
        ({"epochs": -1}, "fit: epochs must be >= 0"),
        ({"epochs": 1.7}, "fit: epochs must be a whole number"),
    ],
)
def test_fit_refuses_counts_that_are_not_whole_numbers(xp, options, message):
    x, y = data()
    with pytest.raises(ValueError, match=message):
        model(xp).fit((x, y), verbose=False, **options)


def test_callbacks_none_means_no_callbacks(xp):
    x, y = data()
    history = model(xp).fit((x, y), epochs=1, callbacks=None, verbose=False)
    assert len(history["loss"]) == 1


def test_evaluate_and_predict_name_themselves_and_check_batch_size(xp):
    x, y = data()
    net = model(xp)
    with pytest.raises(ValueError, match="evaluate: the data: X has 32 samples but y has 4"):
        net.evaluate(x, y[:4])
    with pytest.raises(ValueError, match=r"evaluate: labels must be classes in \[0, 3\)"):
        net.evaluate(x, y + 10)
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="Model.predict: batch_size must be"):
            net.predict(x, batch_size=bad)
        with pytest.raises(ValueError, match="Model.evaluate: batch_size must be"):
            net.evaluate(x, y, batch_size=bad)
    with pytest.raises(ValueError, match="Model.predict: x must be a batch of inputs"):
        net.predict(numpy.float32(1))


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: Model("conv"), TypeError, "Model takes a list of layers, not 'conv'"),
        (lambda: Model(Dense(3)), TypeError, "Model takes a list of layers, not Dense"),
        (lambda: Model([Dense(3), 2]), TypeError, "Model layer 1: 2 is not a layer"),
        (
            lambda: Sequential([Dense(3), Dense]),
            TypeError,
            "Sequential layer 1: .*Dense.* is not a layer",
        ),
        (lambda: Model([Dense(3)]).add("relu"), TypeError, "Model.add: 'relu' is not a layer"),
        (lambda: Model([Dense(3)], dtype="int32"), ValueError, "dtype must be a floating type"),
        (lambda: Model([Dense(3)], device=0), TypeError, "device must be 'auto', 'cpu'"),
        (lambda: Model([Dense(3)]).build((0,)), ValueError, "input_shape must be positive"),
        (lambda: Model([Flatten(), Dense(3)]).build((1, -4, 4)), ValueError, "must be positive"),
    ],
)
def test_a_model_made_of_wrong_parts_is_refused_where_it_is_made(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_a_last_batch_that_a_batchnorm_cannot_train_on_is_refused_before_training(xp):
    # 65 samples in batches of 64 end each epoch with 1 sample; the BatchNorm2D sees 1x1
    # maps, so that batch has one value per channel: refused before the first epoch
    from convnet_core import layers as L

    rng = numpy.random.default_rng(0)
    x, y = rng.random((65, 1, 2, 2), dtype=numpy.float32), numpy.arange(65) % 2
    layers = [L.Conv2D(4, 3), L.MaxPool2D(2), L.BatchNorm2D(), L.Flatten(), L.Dense(2)]
    model = Model(layers, device=xp, seed=0).compile()
    with pytest.raises(ValueError) as error:
        model.fit((x, y), epochs=1, batch_size=64, verbose=False)
    assert str(error.value) == (
        "fit: with 65 samples and batch_size=64, every epoch ends with a batch of 1 sample, "
        "which this network cannot train on (layer 2 of Sequential: BatchNorm2D(momentum=0.9, "
        "eps=1e-05): expected more than 1 value per channel when training, got an input of "
        "shape (1, 4, 1, 1)); choose a batch_size that leaves more than 1 sample in the last "
        "batch"
    )
    assert model.epoch == 0
    model.fit((x, y), epochs=1, batch_size=30, verbose=False)  # 30 + 30 + 5
    assert model.epoch == 1
    # with 2x2 maps a batch of 1 has 4 values per channel: trained as it is
    wider = Model([L.Conv2D(4, 3), L.BatchNorm2D(), L.Flatten(), L.Dense(2)], device=xp, seed=0)
    wider.compile().fit((x, y), epochs=1, batch_size=64, verbose=False)
    assert wider.epoch == 1
