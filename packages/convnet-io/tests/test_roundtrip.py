"""Saving and loading give back exactly what was saved: every bit, every structure."""

import json
import os

import convnet_io
import numpy
import pytest
from convnet_core import apply, backend, init, tree
from convnet_core import layers as L
from convnet_io import format as fmt
from convnet_io import storage
from convnet_io_helpers import NETS, assert_same_tree

SUFFIXES = [".h5", ".npz"]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_every_layer_round_trips_bit_for_bit(tmp_path, suffix, net_parts, xp):
    net, params, state, shape = net_parts
    x = numpy.random.default_rng(2).normal(size=(2, *shape)).astype("float32")
    on_device = backend.to_device((params, state), xp)  # saved from the device when on a GPU
    path = tmp_path / f"model{suffix}"

    written = convnet_io.save(
        path, layer=net, params=on_device[0], state=on_device[1], input_shape=shape
    )
    saved = convnet_io.load(path, parts=True)

    assert written == str(path)
    assert storage.container_of(path) == ("npz" if suffix == ".npz" else "sealed-hdf5")
    assert saved.layer == net and saved.input_shape == shape
    assert all(isinstance(leaf, numpy.ndarray) for leaf in tree.leaves(saved.params))
    assert_same_tree(saved.params, params)
    assert_same_tree(saved.state, state)
    want, _, _ = apply(net, params, state, x)
    got, _, _ = apply(net, saved.params, saved.state, x)
    assert got.tobytes() == want.tobytes()
    # and back onto the device: the same predictions there too
    dev_params, dev_state = backend.to_device((saved.params, saved.state), xp)
    got_dev, _, _ = apply(net, dev_params, dev_state, xp.asarray(x), xp=xp)
    want_dev, _, _ = apply(net, on_device[0], on_device[1], xp.asarray(x), xp=xp)
    assert backend.to_host(got_dev).tobytes() == backend.to_host(want_dev).tobytes()


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_float64_and_special_values_survive(tmp_path, suffix):
    net = L.Sequential((L.Flatten(), L.Dense(3)))
    params = ({}, {"W": numpy.arange(12.0).reshape(4, 3), "b": numpy.array([-0.0, 1e-308, 5e-324])})
    path = tmp_path / f"m{suffix}"
    convnet_io.save(path, layer=net, params=params, state=({}, {}), input_shape=(4,))
    saved = convnet_io.load(path, parts=True)
    assert_same_tree(saved.params, params)
    assert numpy.signbit(saved.params[1]["b"][0])


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_optimizer_metadata_and_odd_structures_round_trip(tmp_path, suffix):
    net = L.Sequential((L.Flatten(), L.Dense(2)))
    params = ({}, {"W": numpy.ones((3, 2), "float32"), "b": numpy.zeros(2, "float32")})
    opt_state = {
        "lr": numpy.array(0.01, "float32"),
        "step": numpy.array(7, "int64"),
        "scalar": numpy.float32(2.5),
        "m": ({}, {"W": numpy.full((3, 2), 0.5, "float32"), "b": numpy.zeros(2, "float32")}),
        "odd keys": {"a/b": numpy.arange(3), "": numpy.array([True, False]), ".": [], "%": ()},
        "list": [numpy.zeros((0, 4)), {}, (), None, 3, 0.1, "text", True],
    }
    metadata = {
        "epoch": 3,
        "history": {"loss": [1.5, float("nan")]},
        "seed": 42,
        "rng_state": {"seed": 42},
        "generator": {"bit_generator": "PCG64", "state": {"state": 2**127 + 5, "inc": 3}},
    }
    path = tmp_path / f"m{suffix}"
    convnet_io.save(
        path,
        layer=net,
        params=params,
        input_shape=(3,),
        optimizer_state=opt_state,
        metadata=metadata,
    )
    saved = convnet_io.load(path, parts=True)
    assert saved.optimizer is None  # a state without a config: stored as it is, unchecked
    assert_same_tree(saved.optimizer_state, opt_state)
    assert saved.state == ({}, {})  # state defaults to empty dicts shaped like params
    assert saved.metadata["rng_state"] == metadata["rng_state"]
    assert saved.metadata["generator"] == metadata["generator"]  # big ints, nested objects
    assert saved.metadata["seed"] == 42 and saved.metadata["epoch"] == 3
    assert saved.metadata["history"]["loss"][0] == 1.5
    assert numpy.isnan(saved.metadata["history"]["loss"][1])


def test_layout_is_the_documented_one(tmp_path):
    h5py = pytest.importorskip("h5py")
    net = L.Sequential((L.Flatten(), L.Dense(2)))
    params = ({}, {"W": numpy.ones((3, 2), "float32"), "b": numpy.zeros(2, "float32")})
    path = tmp_path / "m.h5"
    convnet_io.save(path, layer=net, params=params, input_shape=(3,), metadata={"seed": 1})
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == "convnet"
        assert f.attrs["format_version"] == 1  # version 2 only adds checkpoints' best/ groups
        assert convnet_io.FORMAT_VERSION == 2
        assert json.loads(f.attrs["architecture"]) == L.layer_to_config(net)
        assert json.loads(f.attrs["input_shape"]) == [3]
        assert json.loads(f.attrs["metadata"]) == {"seed": 1}
        assert f["params/1/W"].shape == (3, 2) and f["params/1/b"].dtype == numpy.float32
        assert json.loads(f["params"].attrs["tree"]) == {
            "tuple": [{"dict": []}, {"dict": [["W", "array"], ["b", "array"]]}]
        }
    attributes, arrays = fmt.read_raw(path)
    npz = tmp_path / "m.npz"
    fmt.write_raw(npz, attributes, arrays)
    with numpy.load(npz, allow_pickle=False) as z:  # readable with plain numpy too
        assert str(z[".attrs/format"]) == "convnet"
        assert numpy.array_equal(z["params/1/W"], params[1]["W"])
    assert convnet_io.load(npz, parts=True).metadata == {"seed": 1}


def test_custom_registered_layer_round_trips(tmp_path):
    import attrs
    from convnet_core import register_layer

    @register_layer(name="IoTestScale")
    @attrs.frozen
    class Scale:
        factor: float = 1.0

        def output_shape(self, input_shape):
            return tuple(input_shape)

        def init(self, input_shape, rng, *, xp, dtype):
            return {"s": xp.full(input_shape[-1:], self.factor, dtype)}, {
                "calls": xp.zeros((), dtype)
            }

        def apply(self, params, state, x, *, training, rng, xp):
            return x * params["s"], state, None

        def grad(self, params, cache, dy, *, xp, input_grad=True):
            raise NotImplementedError

    net = L.Sequential((Scale(2.0), L.Dense(2)))
    params = (
        {"s": numpy.array([1.0, 2.0, 3.0], "float32")},
        {"W": numpy.ones((3, 2), "float32"), "b": numpy.zeros(2, "float32")},
    )
    state = ({"calls": numpy.array(4.0, "float32")}, {})
    convnet_io.save(tmp_path / "c.h5", layer=net, params=params, state=state, input_shape=(3,))
    saved = convnet_io.load(tmp_path / "c.h5", parts=True)
    assert saved.layer == net and saved.layer.layers[0].factor == 2.0
    assert_same_tree(saved.params, params)
    assert_same_tree(saved.state, state)


def test_without_h5py_saves_npz_next_to_the_name(tmp_path, monkeypatch):
    _, net, shape = NETS[0]
    params, state = init(net, shape, rng=0)
    convnet_io.save(tmp_path / "real.h5", layer=net, params=params, input_shape=shape)
    monkeypatch.setattr(storage, "H5PY_AVAILABLE", False)
    monkeypatch.setattr(storage, "h5py", None)
    monkeypatch.setattr(storage, "H5PY_MISSING", "h5py is not installed")
    with pytest.warns(RuntimeWarning, match="h5py is not installed"):
        written = convnet_io.save(
            tmp_path / "w.hdf5", layer=net, params=params, state=state, input_shape=shape
        )
    assert written == str(tmp_path / "w.hdf5.npz")
    assert not (tmp_path / "w.hdf5").exists()
    saved = convnet_io.load(tmp_path / "w.hdf5", parts=True)  # finds the .npz beside the name
    assert_same_tree(saved.params, params)
    with pytest.raises(ImportError, match="pip install h5py"):
        convnet_io.load(tmp_path / "real.h5")


def test_large_metadata_is_stored(tmp_path):
    net = L.Sequential((L.Dense(2),))
    params = ({"W": numpy.ones((3, 2), "float32"), "b": numpy.zeros(2, "float32")},)
    history = {"loss": [float(i) / 7 for i in range(20000)]}  # about 400 kB of JSON
    for suffix in SUFFIXES:
        convnet_io.save(
            tmp_path / f"m{suffix}",
            layer=net,
            params=params,
            input_shape=(3,),
            metadata={"history": history},
        )
        assert convnet_io.load(tmp_path / f"m{suffix}", parts=True).metadata["history"] == history


def test_save_refuses_what_load_would_refuse(tmp_path):
    net = L.Sequential((L.Dense(2),))
    good = {"W": numpy.ones((3, 2), "float32"), "b": numpy.zeros(2, "float32")}
    with pytest.raises(ValueError, match="shape"):
        convnet_io.save(
            tmp_path / "m.h5", layer=net, params=({**good, "W": good["W"].T},), input_shape=(3,)
        )
    with pytest.raises(ValueError, match="NaN"):
        convnet_io.save(
            tmp_path / "m.h5",
            layer=net,
            params=({**good, "b": numpy.array([0, numpy.nan], "float32")},),
            input_shape=(3,),
        )
    with pytest.raises(ValueError, match="layer= and params="):
        convnet_io.save(tmp_path / "m.h5")
    assert not list(tmp_path.iterdir())  # nothing half-written left behind


def test_save_refuses_metadata_load_would_refuse_and_keeps_the_old_file(tmp_path):
    from convnet_core import Model

    model = Model([L.Flatten(), L.Dense(2)], seed=1, device="cpu").build((3,))
    model.compile(loss="mse", optimizer="sgd")
    path = tmp_path / "m.h5"
    model.save(path, metadata={"note": "kept"})
    before = path.read_bytes()
    taken = (
        {"epoch": "best"},
        {"history": "none"},
        {"loss_name": ["x"]},
        {"rng_state": 7},
        {"precision": "mixed"},
        {"loss_scaler": {"scale": 8.0}},
    )
    for entry in taken:
        (key,) = entry
        with pytest.raises(ValueError, match=f"not saving {path}: metadata '{key}' is stored from"):
            model.save(path, metadata=entry)
    net = L.Sequential((L.Dense(2),))
    params = ({"W": numpy.ones((3, 2), "float32"), "b": numpy.zeros(2, "float32")},)
    bad = (
        {"epoch": -1},
        {"history": {"loss": "x"}},
        {"checkpoint": 3},
        {"precision": {"compute_dtype": "bfloat16"}},
        {"loss_scaler": {"scale": float("inf")}},
    )
    for entry in bad:
        (key,) = entry
        with pytest.raises(ValueError, match=f"not saving {path}: metadata '{key}' must be"):
            convnet_io.save(path, layer=net, params=params, input_shape=(3,), metadata=entry)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["m.h5"]
    assert convnet_io.load(path, parts=True).metadata["note"] == "kept"


def test_save_refuses_state_load_would_refuse(tmp_path):
    from convnet_core import optim

    net, shape = next((net, shape) for n, net, shape in NETS if n == "batchnorm")
    params, state = init(net, shape, rng=0)
    bad_state = ({**state[0], "running_var": -state[0]["running_var"]},)
    with pytest.raises(ValueError, match="running_var holds 3 negative values"):
        convnet_io.save(
            tmp_path / "m.h5", layer=net, params=params, state=bad_state, input_shape=shape
        )
    opt = optim.adam()
    opt_state = opt.init(params)
    complex_state = {**opt_state, "m": tree.map(lambda m: m.astype("complex64"), opt_state["m"])}
    with pytest.raises(ValueError, match="m/0/gamma has dtype complex64, expected float32"):
        convnet_io.save(
            tmp_path / "m.h5",
            layer=net,
            params=params,
            state=state,
            input_shape=shape,
            optimizer=opt,
            optimizer_state=complex_state,
        )
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("name", ["conv", "batchnorm", "every-layer"])
def test_real_optimizer_state_round_trips(tmp_path, suffix, name):
    from convnet_core import optim

    net, shape = next((net, shape) for n, net, shape in NETS if n == name)
    params, state = init(net, shape, rng=0)
    opt = optim.adam(lr=3e-3, weight_decay=1e-4)
    grads = tree.map(lambda p: numpy.ones_like(p), params)
    _, opt_state = opt.update(params, grads, opt.init(params))
    path = tmp_path / f"m{suffix}"
    convnet_io.save(
        path,
        layer=net,
        params=params,
        state=state,
        input_shape=shape,
        optimizer=opt,
        optimizer_state=opt_state,
    )
    saved = convnet_io.load(path, parts=True)
    assert optim.from_config(saved.optimizer) == opt
    assert_same_tree(saved.optimizer_state, opt_state)


def test_input_shape_given_at_load(tmp_path):
    from convnet_core import Model

    net = L.Sequential((L.Flatten(), L.Dense(2)))
    params = ({}, {"W": numpy.ones((12, 2), "float32"), "b": numpy.zeros(2, "float32")})
    convnet_io.save(tmp_path / "s.h5", layer=net, params=params, input_shape=(12,))
    with pytest.raises(convnet_io.ModelFormatError, match=r"saved for input shape \(12,\)"):
        convnet_io.load(tmp_path / "s.h5", input_shape=(3, 4))
    # a file without an input shape (the format allows one): parts, or a Model given one
    attributes, arrays = fmt.read_raw(tmp_path / "s.h5")
    attributes[""]["input_shape"] = "null"
    fmt.write_raw(tmp_path / "m.h5", attributes, arrays)
    assert convnet_io.load(tmp_path / "m.h5", parts=True).input_shape is None
    with pytest.raises(convnet_io.ModelFormatError, match="no input shape") as info:
        convnet_io.load(tmp_path / "m.h5")
    assert str(tmp_path / "m.h5") in str(info.value)
    model = convnet_io.load(tmp_path / "m.h5", input_shape=(3, 2, 2))
    assert isinstance(model, Model) and model.input_shape == (3, 2, 2)
    with pytest.raises(convnet_io.ModelFormatError, match=r"params/1/W has shape \(12, 2\)"):
        convnet_io.load(tmp_path / "m.h5", input_shape=(5,))  # checked against the weights


def test_functional_save_needs_the_input_shape(tmp_path):
    """Without it the arrays cannot be checked: Dense(3) with a (7, 7) W and no b made a
    file no input shape could ever load as a Model."""
    path = tmp_path / "m.npz"
    good = ({"W": numpy.ones((4, 3), "float32"), "b": numpy.zeros(3, "float32")},)
    net = L.Sequential((L.Dense(3),))
    convnet_io.save(path, layer=net, params=good, input_shape=(4,))
    before = path.read_bytes()
    with pytest.raises(ValueError, match="save needs input_shape="):
        convnet_io.save(path, layer=L.Dense(3), params={"W": numpy.zeros((7, 7), "float32")})
    with pytest.raises(ValueError, match="the architecture has 2 arrays"):
        convnet_io.save(
            path, layer=L.Dense(3), params={"W": numpy.zeros((7, 3), "float32")}, input_shape=(7,)
        )
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]
