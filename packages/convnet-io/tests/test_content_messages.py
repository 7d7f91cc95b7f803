"""An intact file whose content convnet does not take is described as what it holds,
never as "corrupted or truncated", and a problem is blamed on the file that has it."""

import json
import zipfile

import convnet_io
import numpy
import pytest
from convnet_core import init
from convnet_core import layers as L
from convnet_io import ModelFormatError
from convnet_io import format as fmt

NET = L.Sequential((L.Flatten(), L.Dense(2)))
SHAPE = (1, 2, 2)
DEEP = "[" * 100_000 + "]" * 100_000


def saved(tmp_path, suffix=".h5"):
    path = tmp_path / f"model{suffix}"
    params, state = init(NET, SHAPE, rng=0)
    convnet_io.save(path, layer=NET, params=params, state=state, input_shape=SHAPE)
    return path


def message(path, **options):
    with pytest.raises(ModelFormatError) as info:
        convnet_io.load(path, **options)
    return str(info.value)


def test_a_deeply_nested_weights_json_is_blamed_on_itself(tmp_path):
    h5py = pytest.importorskip("h5py")
    weights, architecture = tmp_path / "weights.hdf5", tmp_path / "weights.json"
    with h5py.File(weights, "w") as f:
        f["1_Dense_W"] = numpy.zeros((4, 2))
        f["1_Dense_b"] = numpy.zeros(2)
    architecture.write_text(DEEP)
    expected = f"{architecture}: cannot read the architecture: its JSON is nested too deeply"
    assert message(weights, input_shape=SHAPE) == expected


@pytest.mark.parametrize("suffix", [".h5", ".npz"])
def test_a_deeply_nested_attribute_is_named(tmp_path, suffix):
    path = saved(tmp_path, suffix)
    attributes, arrays = fmt.read_raw(path)
    attributes[""]["architecture"] = DEEP
    fmt.write_raw(path, attributes, arrays, container="npz" if suffix == ".npz" else None)
    expected = f"{path}: the attribute 'architecture' is JSON nested too deeply to read"
    assert message(path) == expected


@pytest.mark.parametrize(
    ("name", "what"),
    [("README.txt", "not a .npy array"), ("params/", "a directory entry")],
)
def test_an_npz_member_convnet_never_writes_is_named(tmp_path, name, what):
    """As `zip -r` adds a directory entry for every folder."""
    path = saved(tmp_path, ".npz")
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(name, "" if name.endswith("/") else "hello")
    expected = (
        f"{path}: the NPZ archive holds {name!r}, {what}; a model file holds only .npy members"
    )
    assert message(path) == expected


NUMBERS = "a model file holds only arrays of numbers (bool, int, uint, float, complex)"


@pytest.mark.parametrize("suffix", [".h5", ".npz"])
def test_an_array_of_bytes_is_named(tmp_path, suffix):
    path = saved(tmp_path, suffix)
    attributes, arrays = fmt.read_raw(path)
    arrays["params/1/b"] = numpy.array([b"ab", b"cd"])
    fmt.write_raw(path, attributes, arrays, container="npz" if suffix == ".npz" else None)
    assert message(path) == f"{path}: array 'params/1/b' has dtype |S2; {NUMBERS}"


def test_an_unusable_class_in_the_architecture_is_not_called_damage(tmp_path):
    path = saved(tmp_path)
    attributes, arrays = fmt.read_raw(path)
    architecture = json.loads(attributes[""]["architecture"])
    architecture["config"]["layers"][1]["class"] = []
    attributes[""]["architecture"] = json.dumps(architecture)
    fmt.write_raw(path, attributes, arrays)
    assert message(path) == f"{path}: bad architecture (TypeError: unhashable type: 'list')"
