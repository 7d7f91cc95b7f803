"""Every kind of bad file raises ModelFormatError naming the file and the problem."""

import json
import os
import tempfile
import zipfile

import convnet_io
import numpy
import pytest
from convnet_core import init
from convnet_core import layers as L
from convnet_io import ModelFormatError
from convnet_io import format as fmt
from convnet_io_helpers import assert_same_tree, randomize
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
    expect_error(saved_file, "missing", "running_var")


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
    rewrite(saved_file, lambda attributes, a: attributes[""].update(format_version=2))
    expect_error(saved_file, "format_version 2 is newer", "upgrade convnet-io")


def test_checksum_catches_edited_content(saved_file):
    attributes, arrays = fmt.read_raw(saved_file)
    attributes[""]["metadata"] = json.dumps({"epoch": 99})
    writer = fmt.storage.write_npz if saved_file.suffix == ".npz" else fmt.storage.write_hdf5
    os.remove(saved_file)
    writer(str(saved_file), attributes, arrays)  # old checksum kept
    expect_error(saved_file, "checksum mismatch")


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
