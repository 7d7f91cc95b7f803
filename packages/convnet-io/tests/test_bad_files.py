"""Every kind of bad file raises ModelFormatError naming the file and the problem."""

import json
import os
import tempfile
import tracemalloc
import zipfile

import convnet_io
import numpy
import pytest
from convnet_core import init
from convnet_core import layers as L
from convnet_io import ModelFormatError
from convnet_io import format as fmt
from convnet_io_helpers import assert_same_tree, fifo_writer_after, randomize, special_files
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

NET = L.Sequential(
    (
        L.Conv2D(2, (3, 3)),
        L.BatchNorm2D(),
        L.Activation("relu"),
        L.MaxPool2D((2, 2)),
        L.Flatten(),
        L.Dense(3),
    )
)
SHAPE = (1, 4, 4)


def parts():
    params, state = init(NET, SHAPE, rng=0)
    return randomize(params, state, seed=3)


@pytest.fixture(params=[".h5", ".npz"])
def saved_file(request, tmp_path):
    params, state = parts()
    path = tmp_path / f"model{request.param}"
    convnet_io.save(path, layer=NET, params=params, state=state, input_shape=SHAPE)
    return path


def rewrite(path, change):
    """Apply `change(attributes, arrays)` to a valid file and write it back, checksum updated."""
    attributes, arrays = fmt.read_raw(path)
    change(attributes, arrays)
    fmt.write_raw(path, attributes, arrays, container="npz" if str(path).endswith("npz") else None)


def expect_error(path, *fragments):
    with pytest.raises(ModelFormatError) as info:
        convnet_io.load(path, parts=True)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message
    assert isinstance(info.value, ValueError)
    return message


def test_truncated_file(saved_file):
    data = saved_file.read_bytes()
    for size in (0, 10, len(data) // 2, len(data) - 1):
        saved_file.write_bytes(data[:size])
        expect_error(saved_file)


def test_other_formats(tmp_path):
    (tmp_path / "a.h5").write_text("just some text, not a model\n")
    expect_error(tmp_path / "a.h5", "neither HDF5 nor NPZ")
    with zipfile.ZipFile(tmp_path / "b.npz", "w") as zf:
        zf.writestr("readme.txt", "hello")
    expect_error(tmp_path / "b.npz", "readme.txt")
    numpy.savez(tmp_path / "c.npz", x=numpy.zeros(3))
    expect_error(tmp_path / "c.npz", "not a convnet model file")
    numpy.savez(tmp_path / "d.npz", obj=numpy.array([{"a": 1}], dtype=object))
    expect_error(tmp_path / "d.npz")  # never unpickled


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        convnet_io.load(tmp_path / "nothing.h5")


def test_what_is_not_a_regular_file_is_refused_without_being_read(tmp_path):
    """A FIFO would block the first read until a writer came, and a device could stream
    bytes without end: every way of loading looks at what the path is first."""
    made, server = special_files(tmp_path)
    try:
        for path, kind in made:
            error = IsADirectoryError if kind == "a directory" else ModelFormatError
            for load in (convnet_io.load, convnet_io.load_checkpoint, fmt.read_raw):
                with fifo_writer_after(path), pytest.raises(error) as info:
                    load(path)
                if error is IsADirectoryError:
                    assert info.value.filename == str(path)
                else:
                    assert str(info.value).startswith(f"{path}: it is {kind}")
                    assert str(info.value).endswith(", not a regular file")
    finally:
        server.close()


def test_a_fifo_beside_a_convnet_numpy_file_is_not_read(tmp_path):
    """The architecture file of an old model (weights.json) is checked the same way."""
    weights = tmp_path / "weights.npz"
    numpy.savez(weights, **{"0_Dense_W": numpy.zeros((784, 10)), "0_Dense_b": numpy.zeros(10)})
    architecture = tmp_path / "weights.json"
    os.mkfifo(architecture)
    with fifo_writer_after(architecture), pytest.raises(ModelFormatError) as info:
        convnet_io.load(weights)
    expected = "cannot read the architecture: it is a FIFO (named pipe), not a regular file"
    assert str(info.value) == f"{architecture}: {expected}"


def test_shape_disagreement(saved_file):
    rewrite(saved_file, lambda a, arrays: arrays.update({"params/5/W": arrays["params/5/W"][:-1]}))
    expect_error(saved_file, "params/5/W", "shape (7, 3)", "(8, 3)")


def test_count_disagreement(saved_file):
    def drop_bias(attributes, arrays):
        del arrays["params/5/b"]
        tree = json.loads(attributes["params"]["tree"])
        tree["tuple"][5]["dict"].pop()
        attributes["params"]["tree"] = json.dumps(tree)

    rewrite(saved_file, drop_bias)
    expect_error(saved_file, "the architecture has 6 arrays", "the file has 5")


def test_undescribed_and_missing_arrays(saved_file):
    rewrite(saved_file, lambda a, arrays: arrays.update({"params/9/X": numpy.zeros(2)}))
    expect_error(saved_file, "does not describe", "params/9/X")

    def drop(attributes, arrays):
        del arrays["params/9/X"], arrays["state/1/running_var"]

    rewrite(saved_file, drop)
    expect_error(saved_file, "state: arrays missing from the file", "running_var")


def test_dtype_disagreement(saved_file):
    rewrite(
        saved_file,
        lambda a, arrays: arrays.update({"params/0/b": arrays["params/0/b"].astype("float64")}),
    )
    expect_error(saved_file, "params/0/b", "float64", "float32")


def test_unknown_layer_lists_known_ones(saved_file):
    def rename(attributes, arrays):
        arch = json.loads(attributes[""]["architecture"])
        arch["config"]["layers"][2]["class"] = "Swish"
        attributes[""]["architecture"] = json.dumps(arch)

    rewrite(saved_file, rename)
    expect_error(saved_file, "'Swish'", "Conv2D", "Dense", "MaxPool2D")
    # the file is intact: the message is the class's, not "bad architecture"
    with pytest.raises(convnet_io.ModelFormatError) as caught:
        convnet_io.load(saved_file)
    assert str(caught.value).startswith(f"{saved_file}: unknown layer class 'Swish': ")
    assert isinstance(caught.value.__context__, L.UnknownLayerError)


def test_nan_weights(saved_file):
    def poison(attributes, arrays):
        arrays["params/0/W"] = arrays["params/0/W"].copy()
        arrays["params/0/W"][0, 0, 1, 1] = numpy.nan

    rewrite(saved_file, poison)
    expect_error(saved_file, "params/0/W", "NaN")


def test_optimizer_state_that_does_not_fit(tmp_path):
    from convnet_core import optim

    params, state = parts()
    opt = optim.sgd(lr=0.1, momentum=0.9)
    opt_state = opt.init(params)
    path = tmp_path / "m.h5"
    convnet_io.save(
        path,
        layer=NET,
        params=params,
        state=state,
        input_shape=SHAPE,
        optimizer=opt,
        optimizer_state=opt_state,
    )
    assert convnet_io.load(path, parts=True).optimizer == optim.to_config(opt)
    rewrite(
        path,
        lambda a, arrays: (
            arrays.update({"optimizer/state/velocity/5/W": numpy.zeros((2, 2), "float32")})
            if "optimizer/state/velocity/5/W" in arrays
            else arrays.update(
                {
                    k: numpy.zeros((2, 2), "float32")
                    for k in arrays
                    if k.endswith("/5/W") and k.startswith("optimizer/")
                }
            )
        ),
    )
    expect_error(path, "optimizer/state/", "/5/W has shape (2, 2), expected (8, 3)")

    def bad_config(attributes, arrays):
        attributes["optimizer"]["config"] = json.dumps({"name": "adagrad", "config": {}})

    rewrite(path, bad_config)
    expect_error(path, "bad optimizer config", "adagrad")


def test_newer_format_version(saved_file):
    rewrite(saved_file, lambda attributes, a: attributes[""].update(format_version=3))
    expect_error(saved_file, "format_version 3 is newer", "(up to 2); upgrade convnet-io")


def test_checksum_catches_edited_content(saved_file):
    attributes, arrays = fmt.read_raw(saved_file)
    attributes[""]["metadata"] = json.dumps({"epoch": 99})
    writer = fmt.storage.write_npz if saved_file.suffix == ".npz" else fmt.storage.write_hdf5
    os.remove(saved_file)
    writer(str(saved_file), attributes, arrays)  # old checksum kept
    expect_error(saved_file, "checksum mismatch")


@pytest.mark.skipif(not fmt.storage.H5PY_AVAILABLE, reason="needs h5py")
@pytest.mark.parametrize("damage", ["bytes appended", "a weight changed"])
def test_a_sealed_file_altered_after_saving_is_refused_before_hdf5_opens_it(
    tmp_path, monkeypatch, damage
):
    params, state = parts()
    path = tmp_path / "model.h5"
    convnet_io.save(path, layer=NET, params=params, state=state, input_shape=SHAPE)
    opened = []
    real_file = fmt.storage.h5py.File

    def recording_file(name, *args, **kwargs):
        opened.append(os.fspath(name))
        return real_file(name, *args, **kwargs)

    monkeypatch.setattr(fmt.storage.h5py, "File", recording_file)
    convnet_io.load(path, parts=True)  # as saved: it loads, through h5py
    assert opened == [str(path)]
    opened.clear()

    data = bytearray(path.read_bytes())
    if damage == "bytes appended":
        # HDF5 ignores bytes past its data and every array and attribute is intact, so only
        # the seal can tell that the file is not the one written
        data += b"\0" * 64
    else:
        weights = numpy.ascontiguousarray(params[0]["W"]).tobytes()
        at = data.find(weights)
        assert at > 0
        data[at + 5] ^= 0x40
    path.write_bytes(bytes(data))
    message = expect_error(path, "SHA-256 does not match")
    assert "checksum mismatch" not in message  # refused by the seal, before being parsed
    assert opened == []


@pytest.mark.skipif(not fmt.storage.H5PY_AVAILABLE, reason="needs h5py")
def test_a_damaged_sealed_file_is_described_once(tmp_path):
    """The seal's verdict is the message: the file and what is wrong, said once, not wrapped
    in a second "corrupted or truncated (ValueError: ...)"."""
    params, state = parts()
    path = tmp_path / "model.h5"
    convnet_io.save(path, layer=NET, params=params, state=state, input_shape=SHAPE)
    data = path.read_bytes()
    magic = len(fmt.storage.SEAL_MAGIC)  # then "sha256 <64 hex digits>\n"
    cases = [
        (
            data[: len(data) - 100],
            "the file is corrupted or truncated (its SHA-256 does not match)",
        ),
        (data[:100], "the file is truncated (shorter than its header)"),
        (data[:magic] + b"SHA256 " + data[magic + 7 :], "the file's header is damaged"),
    ]
    for content, problem in cases:
        path.write_bytes(content)
        with pytest.raises(ModelFormatError) as info:
            convnet_io.load(path, parts=True)
        assert str(info.value) == f"{path}: {problem}"
        assert info.value.problem == problem


def test_code_in_a_file_is_never_run(tmp_path, saved_file):
    def inject(attributes, arrays):
        arch = json.loads(attributes[""]["architecture"])
        arch["config"]["layers"][2]["config"]["name"] = "__import__('os').system('touch pwned')"
        attributes[""]["architecture"] = json.dumps(arch)

    rewrite(saved_file, inject)
    expect_error(saved_file, "unknown activation")
    assert not (tmp_path / "pwned").exists() and not os.path.exists("pwned")


# ---------------------------------------------------------------------------------------
# Random damage: only ModelFormatError, or exactly the saved numbers.


def _valid_bytes(suffix):
    params, state = parts()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m" + suffix)
        convnet_io.save(path, layer=NET, params=params, state=state, input_shape=SHAPE)
        with open(path, "rb") as f:
            return f.read(), params, state


VALID = {suffix: _valid_bytes(suffix) for suffix in (".h5", ".npz")}


@pytest.mark.parametrize("suffix", [".h5", ".npz"])
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_flipped_and_truncated_bytes_raise_only_model_format_error(suffix, data):
    original, params, state = VALID[suffix]
    damaged = bytearray(original)
    flips = data.draw(
        st.lists(
            st.tuples(st.integers(0, len(original) - 1), st.integers(1, 255)),
            min_size=0,
            max_size=4,
        )
    )
    for position, mask in flips:
        damaged[position] ^= mask
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(original) - 1)))
    if cut is not None:
        damaged = damaged[:cut]
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m" + suffix)
        with open(path, "wb") as f:
            f.write(bytes(damaged))
        try:
            saved = convnet_io.load(path, parts=True)
        except ModelFormatError as error:
            assert path in str(error)
        else:  # damage in bytes the format does not use: the content is intact
            assert saved.layer == NET
            assert_same_tree(saved.params, params)
            assert_same_tree(saved.state, state)


# ---------------------------------------------------------------------------------------
# Metadata, optimizer and statistics a model cannot use: refused naming the file and field


def set_metadata(**entries):
    def change(attributes, arrays):
        metadata = json.loads(attributes[""]["metadata"])
        metadata.update(entries)
        attributes[""]["metadata"] = json.dumps(metadata)

    return change


BAD_METADATA = [
    ("epoch", "abc"),
    ("epoch", -5),
    ("epoch", 1.9),
    ("epoch", True),
    ("epoch", None),
    ("history", [1, 2]),
    ("history", {"loss": 5}),
    ("history", {"loss": ["0.5"]}),
    ("history", {"loss": [True]}),
    ("loss_name", ["x"]),
    ("loss_name", ""),
    ("rng_state", 5),
    ("rng_state", {"seed": "abc"}),
    ("rng_state", {"seed": -1}),
    ("rng_state", {"state": 3}),
    ("checkpoint", "best"),
    ("checkpoint", {"monitor": "val_loss", "mode": "up", "best": 0.5, "epoch": 1}),
    ("precision", "mixed"),
    ("precision", {"compute_dtype": "int8", "param_dtype": "float32"}),
    ("precision", {"compute_dtype": "float16", "param_dtype": "float16"}),
    ("precision", {"compute_dtype": "float16", "master": "float32"}),
    ("loss_scaler", 1024),
    ("loss_scaler", {"scale": float("nan")}),
    ("loss_scaler", {"scale": 0.0}),
    ("loss_scaler", {"scale": 8.0, "min_scale": 16.0, "max_scale": 4.0}),
    ("loss_scaler", {"scale": 8.0, "good_steps": -3}),
    ("loss_scaler", {"scale": 8.0, "growth": 2.0}),
]


@pytest.mark.parametrize(
    ("field", "value"), BAD_METADATA, ids=[f"{f}={v!r}" for f, v in BAD_METADATA]
)
def test_bad_metadata_entries(saved_file, field, value):
    rewrite(saved_file, set_metadata(**{field: value}))
    expect_error(saved_file, f"metadata {field!r} must be", repr(value)[:20])


def test_a_bad_precision_or_loss_scaler_says_why(saved_file):
    rewrite(saved_file, set_metadata(loss_scaler={"scale": float("nan")}))
    message = expect_error(saved_file, "metadata 'loss_scaler' must be null or the state")
    assert message.endswith(
        "not {'scale': nan} (DynamicLossScaler scale must be a finite number in [min_scale, "
        "max_scale] = [1, 1.67772e+07], not nan)"
    )
    rewrite(saved_file, set_metadata(loss_scaler={"scale": 8.0, "growth": 2.0}))
    message = expect_error(saved_file, "metadata 'loss_scaler' must be")
    assert message.endswith(
        "(a loss scaler config has no entry 'growth'; its entries are scale, good_steps, "
        "growth_factor, backoff_factor, growth_interval, min_scale, max_scale)"
    )


def test_mixed_precision_master_weights_must_be_the_params_dtype(saved_file):
    # the params of saved_file are float32
    master64 = {"compute_dtype": "float16", "param_dtype": "float64"}
    rewrite(saved_file, set_metadata(precision=master64))
    message = expect_error(saved_file)
    assert message.endswith(
        "metadata 'precision' keeps the master weights in float64, but the params are float32"
    )
    params, state = parts()
    other = saved_file.with_name("other.npz")
    with pytest.raises(ValueError) as info:  # and save writes no such file
        convnet_io.save(
            other, layer=NET, params=params, state=state, input_shape=SHAPE,
            metadata={"precision": master64},
        )  # fmt: skip
    assert str(info.value) == (
        f"not saving {other}: metadata 'precision' keeps the master weights in float64, but "
        "the params are float32"
    )
    assert not other.exists()


def test_metadata_entries_in_their_documented_forms_load(saved_file):
    good = {
        "epoch": 0,
        "history": {"loss": [1.5, None, float("nan")], "val_loss": []},
        "loss_name": "my_custom_loss",  # a loss function of the user's: compile again
        "rng_state": {"seed": None},
        "checkpoint": {"monitor": "val_acc", "mode": "max", "best": None, "epoch": 3},
        "precision": {"compute_dtype": "float16", "param_dtype": "float32"},
        "loss_scaler": {"scale": 512.0, "good_steps": 12, "growth_interval": 100},
        "anything else": [{"is": "the caller's"}],
    }
    rewrite(saved_file, set_metadata(**good))
    metadata = convnet_io.load(saved_file, parts=True).metadata
    assert metadata["rng_state"] == {"seed": None} and metadata["anything else"] == [
        {"is": "the caller's"}
    ]
    for entry in ("precision", "loss_scaler"):
        rewrite(saved_file, set_metadata(**{entry: None}))
        assert convnet_io.load(saved_file, parts=True).metadata[entry] is None


def model_file(tmp_path, suffix=".h5"):
    from convnet_core import Model

    model = Model(list(NET.layers), seed=3, device="cpu").compile(
        loss="categorical_crossentropy", optimizer="adam", lr=0.01
    )
    x = numpy.random.default_rng(0).normal(size=(8, *SHAPE)).astype("float32")
    model.fit((x, numpy.arange(8) % 3), epochs=1, batch_size=4, verbose=False)
    path = tmp_path / f"model{suffix}"
    model.save(path)
    return path, model, x


def test_every_way_of_loading_names_the_file_and_the_field(tmp_path):
    from convnet_core import Model

    path, model, x = model_file(tmp_path)
    rewrite(path, set_metadata(epoch="abc"))
    for load in (
        lambda: Model.load(path),
        lambda: convnet_io.load_checkpoint(path),
        lambda: model.fit((x, numpy.arange(8) % 3), epochs=2, verbose=False, resume_from=path),
    ):
        with pytest.raises(ModelFormatError, match="metadata 'epoch' must be") as info:
            load()
        assert str(path) in str(info.value)


def set_array(key, value):
    return lambda attributes, arrays: arrays.update({key: value})


def test_bad_optimizer_state(tmp_path):
    path, _, _ = model_file(tmp_path)
    _, arrays = fmt.read_raw(path)
    m = arrays["optimizer/state/m/0/W"]
    cases = [
        (set_array("optimizer/state/lr", numpy.array(-1.0)), "optimizer/state/lr is -1.0"),
        (set_array("optimizer/state/lr", numpy.array(numpy.nan)), "optimizer/state/lr holds NaN"),
        (set_array("optimizer/state/lr", numpy.array(0.1, "float32")), "lr has dtype float32"),
        (set_array("optimizer/state/step", numpy.array(-7)), "optimizer/state/step is -7"),
        (set_array("optimizer/state/step", numpy.array(-7.5)), "step has dtype float64"),
        (set_array("optimizer/state/m/0/W", m.astype("complex64")), "m/0/W has dtype complex64"),
        (set_array("optimizer/state/m/0/W", m.astype("int64")), "m/0/W has dtype int64"),
        (set_array("optimizer/state/v/0/W", -numpy.ones_like(m)), "v/0/W holds 18 negative"),
    ]
    for change, fragment in cases:
        path, _, _ = model_file(tmp_path)
        rewrite(path, change)
        expect_error(path, fragment)


@pytest.mark.parametrize(
    ("option", "value"), [("lr", float("inf")), ("eps", float("nan")), ("clip_norm", float("inf"))]
)
def test_optimizer_config_with_numbers_that_are_not_finite(tmp_path, option, value):
    path, _, _ = model_file(tmp_path)

    def change(attributes, arrays):
        config = json.loads(attributes["optimizer"]["config"])
        config["config"][option] = value
        attributes["optimizer"]["config"] = json.dumps(config)

    rewrite(path, change)
    expect_error(path, "bad optimizer config", option)  # core or the finiteness check


def test_negative_batchnorm_variance(saved_file):
    _, arrays = fmt.read_raw(saved_file)
    var = arrays["state/1/running_var"].copy()
    var[0] = -0.5
    rewrite(saved_file, set_array("state/1/running_var", var))
    expect_error(saved_file, "state/1/running_var holds 1 negative values")
    var[0] = 0.0  # a channel that never varied: fine
    rewrite(saved_file, set_array("state/1/running_var", var))
    assert convnet_io.load(saved_file, parts=True).state[1]["running_var"][0] == 0


# ---------------------------------------------------------------------------------------
# An architecture claiming enormous layers is compared without being allocated


def claim_units(units):
    def change(attributes, arrays):
        architecture = json.loads(attributes[""]["architecture"])
        architecture["config"]["layers"][5]["config"]["units"] = units
        attributes[""]["architecture"] = json.dumps(architecture)

    return change


@pytest.mark.parametrize("units", [2_000_000, 10**12])
def test_huge_architecture_fails_fast_in_little_memory(saved_file, units):
    rewrite(saved_file, claim_units(units))  # a file of a few KB
    assert saved_file.stat().st_size < 100_000
    tracemalloc.start()
    try:
        message = expect_error(saved_file, "params/5/W has shape (8, 3)", f"(8, {units})")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000, (peak, message)  # a real init of 2,000,000 units: > 100 MB


def test_a_custom_layer_whose_init_needs_real_arrays_still_loads(tmp_path):
    """Layers of the user's own may compute with the arrays they make; those few get a
    real init for the comparison, and the file loads as before."""
    import attrs
    from convnet_core import register_layer

    @register_layer(name="IoTestOffsets")
    @attrs.frozen
    class Offsets:
        def output_shape(self, input_shape):
            return tuple(input_shape)

        def init(self, input_shape, rng, *, xp, dtype):
            offsets = xp.zeros(input_shape[-1:], dtype)
            offsets[0] = 1  # writes into its array: a data-less one refuses
            return {"offsets": offsets}, {}

        def apply(self, params, state, x, *, training, rng, xp):
            return x + params["offsets"], state, None

        def grad(self, params, cache, dy, *, xp, input_grad=True):
            raise NotImplementedError

    net = L.Sequential((Offsets(), L.Dense(2)))
    params, state = init(net, (3,), rng=0)
    convnet_io.save(tmp_path / "c.h5", layer=net, params=params, state=state, input_shape=(3,))
    saved = convnet_io.load(tmp_path / "c.h5", parts=True)
    assert_same_tree(saved.params, params)
