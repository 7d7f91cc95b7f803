"""Models saved by ConvNet-NumPy (NHWC, weights.json + weights.hdf5) load converted.

The fixtures are written here from the old format's description, and the old NHWC
forward pass is computed independently in plain NumPy to compare predictions.
"""

import json
import warnings

import convnet_io
import numpy
import pytest
from convnet_core import Model, apply
from convnet_core import layers as L
from convnet_core.backend import to_host
from convnet_io import ModelFormatError, legacy

OLD_ARCHITECTURE = [
    {
        "class": "Conv2D",
        "config": {
            "filters": 4,
            "kernel_size": [3, 3],
            "stride": 1,
            "padding": "same",
            "use_bias": True,
        },
    },
    {"class": "BatchNorm2D", "config": {"momentum": 0.9, "eps": 1e-5}},
    {"class": "Activation", "config": {"func": "relu"}},
    {"class": "MaxPool2D", "config": {"pool_size": [2, 2], "stride": None}},
    {
        "class": "Conv2D",
        "config": {
            "filters": 5,
            "kernel_size": 3,
            "stride": 1,
            "padding": "valid",
            "use_bias": True,
        },
    },
    {"class": "Activation", "config": {"func": "tanh"}},
    {"class": "Flatten", "config": {}},
    {"class": "Dropout", "config": {"rate": 0.3}},
    {"class": "Dense", "config": {"units": 7, "use_bias": True}},
    {"class": "Activation", "config": {"func": "relu"}},
    {"class": "Dense", "config": {"units": 3, "use_bias": False}},
    {"class": "Activation", "config": {"func": "softmax"}},
]


def old_weights(in_channels, flat_features, seed=0, with_stats=False):
    """float64 weights in the old NHWC layout, keyed as the old package named them."""
    rng = numpy.random.default_rng(seed)
    w = {
        "0_Conv2D_W": rng.normal(0, 0.5, (3, 3, in_channels, 4)),
        "0_Conv2D_b": rng.normal(0, 0.1, 4),
        "1_BatchNorm2D_gamma": rng.uniform(0.5, 1.5, 4),
        "1_BatchNorm2D_beta": rng.normal(0, 0.1, 4),
        "4_Conv2D_W": rng.normal(0, 0.3, (3, 3, 4, 5)),
        "4_Conv2D_b": rng.normal(0, 0.1, 5),
        "8_Dense_W": rng.normal(0, 0.2, (flat_features, 7)),
        "8_Dense_b": rng.normal(0, 0.1, 7),
        "10_Dense_W": rng.normal(0, 0.5, (7, 3)),
    }
    if with_stats:
        w["1_BatchNorm2D_running_mean"] = rng.normal(0, 0.2, 4)
        w["1_BatchNorm2D_running_var"] = rng.uniform(0.5, 2.0, 4)
    return w


def old_conv(x, W, b, padding):
    """NHWC convolution, stride 1: x (N, H, W, C), W (kh, kw, C, O) -> (N, Ho, Wo, O)."""
    kh, kw = W.shape[:2]
    if padding == "same":
        x = numpy.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    ho, wo = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    out = numpy.zeros((x.shape[0], ho, wo, W.shape[3]))
    for i in range(kh):
        for j in range(kw):
            out += numpy.einsum("nhwc,co->nhwo", x[:, i : i + ho, j : j + wo, :], W[i, j])
    return out + b


def old_forward(x_nhwc, w):
    """The old package's inference pass, in NHWC, float64; BatchNorm stats 0/1 unless saved."""
    y = old_conv(x_nhwc, w["0_Conv2D_W"], w["0_Conv2D_b"], "same")
    mean = w.get("1_BatchNorm2D_running_mean", numpy.zeros(4))
    var = w.get("1_BatchNorm2D_running_var", numpy.ones(4))
    y = w["1_BatchNorm2D_gamma"] * (y - mean) / numpy.sqrt(var + 1e-5) + w["1_BatchNorm2D_beta"]
    y = numpy.maximum(y, 0)
    n, h, wd, c = y.shape
    y = y[:, : h // 2 * 2, : wd // 2 * 2].reshape(n, h // 2, 2, wd // 2, 2, c).max(axis=(2, 4))
    y = numpy.tanh(old_conv(y, w["4_Conv2D_W"], w["4_Conv2D_b"], "valid"))
    y = y.reshape(n, -1)  # the old Flatten: (H, W, C) order
    y = numpy.maximum(y @ w["8_Dense_W"] + w["8_Dense_b"], 0)
    y = y @ w["10_Dense_W"]
    e = numpy.exp(y - y.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def write_arrays(path, arrays, *, container):
    """`arrays` (name -> array) as an HDF5 file (datasets at its root, container "hdf5") or
    an .npz archive; returns `path`."""
    if container == "hdf5":
        h5py = pytest.importorskip("h5py")
        with h5py.File(path, "w") as f:
            for key, value in arrays.items():
                f.create_dataset(key, data=value)
    else:
        numpy.savez(path, **arrays)
    return path


def write_old(directory, weights, *, container, architecture=OLD_ARCHITECTURE):
    """weights.json + weights.hdf5 (or weights.hdf5.npz), as ConvNet-NumPy saved them."""
    (directory / "weights.json").write_text(json.dumps(architecture))
    name = "weights.hdf5" if container == "hdf5" else "weights.hdf5.npz"
    return write_arrays(directory / name, weights, container=container)


# (C, H, W) inputs: MNIST's default, and a non-square multi-channel one where a wrong
# flatten order or transpose could not go unnoticed.
CASES = [((1, 28, 28), None), ((2, 11, 9), (2, 11, 9))]


@pytest.mark.parametrize("container", ["hdf5", "npz"])
@pytest.mark.parametrize(("shape", "given_shape"), CASES)
def test_old_model_predicts_what_it_predicted(tmp_path, container, shape, given_shape):
    c, h, w = shape
    flat = ((h // 2) - 2) * ((w // 2) - 2) * 5
    weights = old_weights(c, flat)
    path = write_old(tmp_path, weights, container=container)
    x = numpy.random.default_rng(1).normal(size=(5, c, h, w)).astype("float32")

    with pytest.warns(UserWarning, match="did not save BatchNorm running statistics"):
        saved = convnet_io.load(path, parts=True, input_shape=given_shape)

    assert saved.source == "convnet-numpy" and saved.input_shape == shape
    assert saved.layer.layers[0] == L.Conv2D(4, (3, 3), stride=1, padding="same")
    assert saved.layer.layers[3] == L.MaxPool2D((2, 2), stride=None)
    assert saved.params[0]["W"].shape == (4, c, 3, 3) and saved.params[0]["W"].dtype == "float32"
    assert numpy.array_equal(saved.state[1]["running_mean"], numpy.zeros(4, "float32"))
    assert numpy.array_equal(saved.state[1]["running_var"], numpy.ones(4, "float32"))
    got, _, _ = apply(saved.layer, saved.params, saved.state, x)
    want = old_forward(x.astype("float64").transpose(0, 2, 3, 1), weights)
    numpy.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert numpy.array_equal(got.argmax(1), want.argmax(1))
    with pytest.warns(UserWarning, match="BatchNorm"):
        model = Model.load(path, input_shape=given_shape)  # the old users' entry point
    numpy.testing.assert_allclose(model.predict(x), want, rtol=1e-4, atol=1e-6)


def test_saved_running_statistics_are_used_without_warning(tmp_path, recwarn):
    weights = old_weights(1, 720, with_stats=True)
    path = write_old(tmp_path, weights, container="npz")
    saved = convnet_io.load(path, parts=True)
    assert not [w for w in recwarn if "BatchNorm" in str(w.message)]
    x = numpy.random.default_rng(2).normal(size=(3, 1, 28, 28)).astype("float32")
    got, _, _ = apply(saved.layer, saved.params, saved.state, x)
    numpy.testing.assert_allclose(
        got, old_forward(x.astype("float64").transpose(0, 2, 3, 1), weights), rtol=1e-4, atol=1e-6
    )


def test_converted_model_saves_in_the_new_format(tmp_path):
    path = write_old(tmp_path, old_weights(1, 720), container="npz")
    with pytest.warns(UserWarning):
        old = convnet_io.load(path, parts=True)
    convnet_io.save(
        tmp_path / "new.h5",
        layer=old.layer,
        params=old.params,
        state=old.state,
        input_shape=old.input_shape,
        metadata=old.metadata,
    )
    new = convnet_io.load(tmp_path / "new.h5", parts=True)
    assert new.source == "convnet" and new.metadata["converted_from"] == "ConvNet-NumPy"
    assert numpy.array_equal(new.params[8]["W"], old.params[8]["W"])


def expect_error(path, *fragments, **kwargs):
    with pytest.raises(ModelFormatError) as info:
        convnet_io.load(path, parts=True, **kwargs)
    for fragment in fragments:
        assert fragment in str(info.value)


@pytest.mark.parametrize("container", ["hdf5", "npz"])
def test_bad_old_files(tmp_path, container):
    good = old_weights(1, 720)
    path = write_old(tmp_path, {**good, "8_Dense_W": good["8_Dense_W"][:-1]}, container=container)
    expect_error(path, "8_Dense_W", "(719, 7)", "(720, 7)")
    past_the_end = {**good, f"{len(OLD_ARCHITECTURE)}_Dense_W": good["8_Dense_W"]}
    path = write_old(tmp_path, past_the_end, container=container)
    layers = len(OLD_ARCHITECTURE)
    expect_error(path, f"is for layer {layers}, but the architecture has {layers} layers")
    path = write_old(tmp_path, {**good, "4_Dense_W": good["4_Conv2D_W"]}, container=container)
    expect_error(path, "'4_Dense_W' is for a Dense, but layer 4 is a Conv2D")
    del good["4_Conv2D_b"]
    path = write_old(tmp_path, good, container=container)
    expect_error(path, "'4_Conv2D_b' is missing")
    ints = {**old_weights(1, 720), "0_Conv2D_b": numpy.arange(4)}
    path = write_old(tmp_path, ints, container=container)
    expect_error(path, "0_Conv2D_b", "int64")
    nan = old_weights(1, 720)
    nan["8_Dense_b"][3] = numpy.nan
    path = write_old(tmp_path, nan, container=container)
    with pytest.warns(UserWarning):
        expect_error(path, "NaN")
    unknown = [*OLD_ARCHITECTURE[:-1], {"class": "Softmax2D", "config": {}}]
    path = write_old(tmp_path, old_weights(1, 720), container=container, architecture=unknown)
    last = len(OLD_ARCHITECTURE) - 1
    expect_error(path, f"layer {last}: unknown ConvNet-NumPy layer class 'Softmax2D'")
    expect_error(path, "known: Activation, BatchNorm2D, Conv2D")
    bad_units = [*OLD_ARCHITECTURE[:8], {"class": "Dense", "config": {"units": -7}}]
    bad_units += OLD_ARCHITECTURE[9:]
    path = write_old(tmp_path, old_weights(1, 720), container=container, architecture=bad_units)
    expect_error(path, "layer 8 (Dense): bad config")
    path = write_old(tmp_path, old_weights(1, 720), container=container)
    expect_error(path, "input_shape", input_shape=(1, 4, 4))
    path = write_old(
        tmp_path, {**old_weights(1, 720), "notes": numpy.zeros(1)}, container=container
    )
    expect_error(path, "'notes' (not <index>_<Class>_<param>)")  # known by its weights.json
    path = write_old(tmp_path, old_weights(1, 720), container=container)
    (tmp_path / "weights.json").unlink()
    expect_error(path, "weights.json is missing")


OLD_MLP = [{"class": "Flatten", "config": {}}, {"class": "Dense", "config": {"units": 10}}]


def error_message(path, **kwargs):
    with pytest.raises(ModelFormatError) as info:
        convnet_io.load(path, parts=True, **kwargs)
    return str(info.value)


@pytest.mark.parametrize(
    ("given", "suggested"), [((28, 28, 1), (1, 28, 28)), ((32, 24, 3), (3, 32, 24))]
)
def test_channels_last_input_shape_is_refused(tmp_path, given, suggested):
    h, w, c = given
    weights = {"1_Dense_W": numpy.ones((h * w * c, 10)), "1_Dense_b": numpy.zeros(10)}
    path = write_old(tmp_path, weights, container="npz", architecture=OLD_MLP)
    assert error_message(path, input_shape=given) == (
        f"{path}: input_shape={given} looks channels-last (H, W, C); convnet wants "
        f"(C, H, W): pass input_shape={suggested}"
    )
    saved = convnet_io.load(path, parts=True, input_shape=suggested)
    assert saved.input_shape == suggested


def test_input_shape_mismatch_says_what_to_pass(tmp_path):
    rgb = old_weights(3, 720)
    path = write_old(tmp_path, rgb, container="npz")
    assert error_message(path) == (
        f"{path}: array '0_Conv2D_W' has shape (3, 3, 3, 4) but the architecture needs "
        "(3, 3, 1, 4); the weights take 3 input channels, not the 1 from MNIST's default "
        "input shape (1, 28, 28): pass input_shape=(C, H, W) to load"
    )
    assert error_message(path, input_shape=(2, 28, 28)).endswith(
        "(3, 3, 2, 4); the weights take 3 input channels, not the 2 from "
        "input_shape=(2, 28, 28): pass the (C, H, W) it was trained on"
    )
    path = write_old(tmp_path, old_weights(1, 720), container="npz")
    assert error_message(path, input_shape=(1, 24, 24)).endswith(
        "needs (500, 7); the weights take 720 features after Flatten, not the 500 from "
        "input_shape=(1, 24, 24): pass the (C, H, W) it was trained on"
    )
    # A later layer's channels do not come from the input shape: no hint there.
    path = write_old(
        tmp_path, {**old_weights(1, 720), "4_Conv2D_W": numpy.ones((3, 3, 2, 5))}, container="npz"
    )
    assert error_message(path).endswith(
        "has shape (3, 3, 2, 5) but the architecture needs (3, 3, 4, 5)"
    )


@pytest.mark.parametrize("container", ["hdf5", "npz"])
def test_other_model_beside_a_json_is_not_read_as_convnet_numpy(tmp_path, container):
    keras_names = {"dense_1/kernel": numpy.ones((784, 10)), "dense_1/bias": numpy.zeros(10)}
    if container == "hdf5":
        path = write_arrays(tmp_path / "model.h5", keras_names, container=container)
    else:
        flat_names = {key.replace("/", "_"): v for key, v in keras_names.items()}
        path = write_arrays(tmp_path / "model.npz", flat_names, container=container)
    # The error is about the file passed, not "model.json: the architecture must be ...".
    (tmp_path / "model.json").write_text(json.dumps({"class_name": "Sequential"}))
    arrays = (
        "'dense_1/bias', 'dense_1/kernel'"
        if container == "hdf5"
        else ("'dense_1_bias', 'dense_1_kernel'")
    )
    assert error_message(path) == (
        f"{path}: not a convnet model file (no 'format' attribute at the root; root "
        f"attributes: none; arrays: {arrays})"
    )


@pytest.mark.parametrize(("kept", "lost"), [("mean", "var"), ("var", "mean")])
def test_half_saved_running_statistics_name_the_missing_one(tmp_path, kept, lost):
    weights = old_weights(1, 720, with_stats=True)
    del weights[f"1_BatchNorm2D_running_{lost}"]
    path = write_old(tmp_path, weights, container="npz")
    assert error_message(path) == (
        f"{path}: '1_BatchNorm2D_running_{lost}' is missing (running_{kept} is present)"
    )


@pytest.mark.parametrize("stride", [0, -1])
def test_conv_stride_below_one_is_refused(tmp_path, stride):
    conv = {**OLD_ARCHITECTURE[0], "config": {**OLD_ARCHITECTURE[0]["config"], "stride": stride}}
    path = write_old(
        tmp_path, old_weights(1, 720), container="npz", architecture=[conv, *OLD_ARCHITECTURE[1:]]
    )
    assert error_message(path) == (
        f"{tmp_path / 'weights.json'}: layer 0 (Conv2D): bad config {conv['config']!r}: "
        f"Conv2D stride must be positive, got ({stride}, {stride})"
    )


def test_conv_stride_null_means_one(tmp_path):
    conv = {**OLD_ARCHITECTURE[0], "config": {**OLD_ARCHITECTURE[0]["config"], "stride": None}}
    path = write_old(
        tmp_path, old_weights(1, 720), container="npz", architecture=[conv, *OLD_ARCHITECTURE[1:]]
    )
    with pytest.warns(UserWarning, match="BatchNorm"):
        saved = convnet_io.load(path, parts=True)
    assert saved.layer.layers[0] == L.Conv2D(4, (3, 3), stride=1, padding="same")


OLD_CONV_NET = [
    {"class": "Conv2D", "config": {"filters": 2, "kernel_size": [3, 3], "padding": "same"}},
    {"class": "Flatten", "config": {}},
    {"class": "Dense", "config": {"units": 3}},
]


def old_conv_weights(c, h, w):
    rng = numpy.random.default_rng(3)
    return {
        "0_Conv2D_W": rng.normal(size=(3, 3, c, 2)),
        "0_Conv2D_b": numpy.zeros(2),
        "2_Dense_W": rng.normal(size=(2 * h * w, 3)),
        "2_Dense_b": numpy.zeros(3),
    }


@pytest.mark.parametrize("shape", [(16, 4, 4), (12, 3, 3), (4, 6, 1)])
def test_channels_first_shape_that_the_first_kernel_confirms_loads(tmp_path, shape):
    weights = old_conv_weights(*shape)
    path = write_old(tmp_path, weights, container="npz", architecture=OLD_CONV_NET)
    model = Model.load(path, input_shape=shape)
    assert model.input_shape == shape
    assert numpy.array_equal(
        to_host(model.params[0]["W"]), weights["0_Conv2D_W"].transpose(3, 2, 0, 1).astype("float32")
    )


@pytest.mark.parametrize(
    ("given", "suggested"), [((4, 4, 16), (16, 4, 4)), ((28, 28, 1), (1, 28, 28))]
)
def test_channels_last_shape_that_the_first_kernel_contradicts_is_refused(
    tmp_path, given, suggested
):
    path = write_old(
        tmp_path, old_conv_weights(*suggested), container="npz", architecture=OLD_CONV_NET
    )
    assert error_message(path, input_shape=given) == (
        f"{path}: input_shape={given} is channels-last (H, W, C): '0_Conv2D_W' takes "
        f"{suggested[0]} input channels, its last axis; convnet wants (C, H, W): pass "
        f"input_shape={suggested}"
    )


def test_one_pixel_per_channel_mlp_input_loads(tmp_path):
    # (C, 1, 1) flattens the same in (H, W, C) and (C, H, W) order: nothing can be permuted.
    weights = {"1_Dense_W": numpy.arange(40.0).reshape(4, 10), "1_Dense_b": numpy.zeros(10)}
    path = write_old(tmp_path, weights, container="npz", architecture=OLD_MLP)
    saved = convnet_io.load(path, parts=True, input_shape=(4, 1, 1))
    assert saved.input_shape == (4, 1, 1)
    assert numpy.array_equal(saved.params[1]["W"], weights["1_Dense_W"].astype("float32"))


def test_conv_without_padding_key_takes_conv2d_default(tmp_path):
    architecture = [{"class": "Conv2D", "config": {"filters": 2}}, *OLD_CONV_NET[1:]]
    path = write_old(
        tmp_path, old_conv_weights(1, 5, 5), container="npz", architecture=architecture
    )
    saved = convnet_io.load(path, parts=True, input_shape=(1, 5, 5))
    assert saved.layer.layers[0] == L.Conv2D(2) and L.Conv2D(2).padding == "same"


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"class": "Conv2D", "config": {"filters": 4}}, L.Conv2D(4)),
        ({"class": "Conv2D", "config": {"filters": 4, "stride": None}}, L.Conv2D(4)),
        ({"class": "Activation", "config": {"func": "relu"}}, L.Activation("relu")),
        ({"class": "MaxPool2D", "config": {}}, L.MaxPool2D()),
        ({"class": "MaxPool2D", "config": {"stride": None}}, L.MaxPool2D()),
        ({"class": "Dense", "config": {"units": 3}}, L.Dense(3)),
        ({"class": "Dropout", "config": {"rate": 0.2}}, L.Dropout(0.2)),
        ({"class": "BatchNorm2D", "config": {}}, L.BatchNorm2D()),
        ({"class": "BatchNorm2D"}, L.BatchNorm2D()),
        ({"class": "Flatten", "config": {}}, L.Flatten()),
    ],
)
def test_missing_config_keys_take_the_layers_own_defaults(entry, expected):
    assert legacy._convert_layer("weights.json", 0, entry) == expected


@pytest.mark.parametrize(
    ("entry", "missing"),
    [
        ({"class": "Conv2D", "config": {"kernel_size": 3}}, "'filters'"),
        ({"class": "Dense", "config": {}}, "'units'"),
        ({"class": "Dropout", "config": {}}, "'rate'"),
        ({"class": "Activation", "config": {}}, "'func'"),
    ],
)
def test_missing_required_config_key_is_named(entry, missing):
    with pytest.raises(ModelFormatError) as info:
        legacy._convert_layer("weights.json", 2, entry)
    assert str(info.value) == (
        f"weights.json: layer 2 ({entry['class']}): config {entry['config']!r} has no "
        f"{missing}, which {entry['class']} needs (it has no default)"
    )


def test_weight_beyond_float32_range_names_the_old_array(tmp_path):
    weights = old_conv_weights(1, 5, 5)
    weights["2_Dense_W"][0, 0] = 1e300
    weights["2_Dense_W"][1, 2] = -numpy.finfo("float64").max
    path = write_old(tmp_path, weights, container="npz", architecture=OLD_CONV_NET)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "overflow encountered in cast"
        message = error_message(path, input_shape=(1, 5, 5))
    assert message == (
        f"{path}: array '2_Dense_W' holds 2 values that overflow float32 (the largest "
        "magnitude is 1.8e+308; float32 holds up to 3.4e+38)"
    )
