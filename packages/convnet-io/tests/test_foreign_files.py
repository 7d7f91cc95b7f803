"""Files of other programs are refused as such, whatever attributes they carry, and an
old ConvNet-NumPy weights file that carries attributes convnet never writes still loads."""

import json
import zipfile

import convnet_io
import numpy
import pytest
from convnet_io import ModelFormatError

h5py = pytest.importorskip("h5py")


def error_message(path):
    with pytest.raises(ModelFormatError) as info:
        convnet_io.load(path, parts=True)
    return str(info.value)


def test_keras_like_file_is_not_a_convnet_model(tmp_path):
    path = tmp_path / "keras_model.h5"
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = "2.15.0"
        f.attrs["backend"] = "tensorflow"
        group = f.create_group("model_weights")
        group.attrs["layer_names"] = numpy.array([b"dense"])
        group.create_dataset("dense/dense/kernel:0", data=numpy.ones((4, 2), "f4"))
    assert error_message(path) == (
        f"{path}: not a convnet model file (no 'format' attribute at the root; root "
        "attributes: 'backend', 'keras_version'; arrays: 'model_weights/dense/dense/kernel:0')"
    )


@pytest.mark.parametrize("container", ["hdf5", "npz"])
def test_file_with_a_float_root_attribute_is_not_a_convnet_model(tmp_path, container):
    if container == "hdf5":
        path = tmp_path / "float_attr.h5"
        with h5py.File(path, "w") as f:
            f.attrs["learning_rate"] = 0.001
            for i in range(5):
                f.create_dataset(f"w{i}", data=numpy.ones(3))
    else:
        path = tmp_path / "float_attr.npz"
        arrays = {f"w{i}": numpy.ones(3) for i in range(5)}
        numpy.savez(path, **{".attrs/learning_rate": numpy.float64(0.001)}, **arrays)
    assert error_message(path) == (
        f"{path}: not a convnet model file (no 'format' attribute at the root; root "
        "attributes: 'learning_rate'; arrays: 'w0', 'w1', 'w2' and 2 more)"
    )


def test_other_format_attribute_is_not_a_convnet_model(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f.attrs["format"] = numpy.array([1.5, 2.5])
    assert error_message(path) == (
        f"{path}: not a convnet model file (its root attribute 'format' is an array of "
        "shape (2,) and dtype float64, not 'convnet'; root attributes: 'format'; arrays: none)"
    )


def test_old_weights_file_with_foreign_attributes_loads(tmp_path):
    (tmp_path / "weights.json").write_text(
        json.dumps([{"class": "Flatten", "config": {}}, {"class": "Dense", "config": {"units": 3}}])
    )
    path = tmp_path / "weights.hdf5"
    with h5py.File(path, "w") as f:
        f.attrs["learning_rate"] = 0.001
        f.attrs["layer_names"] = numpy.array([b"flatten", b"dense"])
        f.create_dataset("1_Dense_W", data=numpy.ones((16, 3)))
        f.create_dataset("1_Dense_b", data=numpy.zeros(3))
    saved = convnet_io.load(path, parts=True, input_shape=(1, 4, 4))
    assert saved.source == "convnet-numpy" and saved.params[1]["W"].shape == (16, 3)


def test_convnet_file_with_a_foreign_attribute_names_it(tmp_path):
    path = tmp_path / "model.npz"
    model = convnet_io.load(_saved(tmp_path), parts=True)
    convnet_io.save(
        path, layer=model.layer, params=model.params, state=model.state, input_shape=(4,)
    )
    with zipfile.ZipFile(path, "a") as zf, zf.open("params/.attrs/scale.npy", "w") as member:
        numpy.lib.format.write_array(member, numpy.array(0.5))
    assert error_message(path) == (
        f"{path}: the attribute 'params/scale' holds a float64 (0.5); a convnet model file "
        "holds only str and int attributes"
    )


def _saved(tmp_path):
    from convnet_core import init
    from convnet_core import layers as L

    net = L.Sequential((L.Dense(2),))
    params, state = init(net, (4,), rng=0)
    path = tmp_path / "source.h5"
    convnet_io.save(path, layer=net, params=params, state=state, input_shape=(4,))
    return path


OBJECTS = [
    numpy.array([{"a": 1}, None], dtype=object),
    numpy.array([(None,)], dtype=[("a", "O")]),
]


def _replace_member(path, name, array):
    """`path` rewritten with its member `name` (.npy) holding `array` (pickled objects)."""
    with zipfile.ZipFile(path) as zf:
        members = {info.filename: zf.read(info) for info in zf.infolist()}
    with zipfile.ZipFile(path, "w") as zf:
        for member, data in members.items():
            if member == name:
                with zf.open(member, "w") as stream:
                    numpy.lib.format.write_array(stream, array, allow_pickle=True)
            else:
                zf.writestr(member, data)


@pytest.mark.parametrize("objects", OBJECTS, ids=["object", "struct-with-object"])
@pytest.mark.parametrize("member", ["params/0/W", ".attrs/architecture"])
def test_npz_member_of_python_objects_is_named_never_unpickled(tmp_path, objects, member):
    path = tmp_path / "model.npz"
    saved = convnet_io.load(_saved(tmp_path), parts=True)
    convnet_io.save(
        path, layer=saved.layer, params=saved.params, state=saved.state, input_shape=(4,)
    )
    _replace_member(path, member + ".npy", objects)
    assert error_message(path) == (
        f"{path}: array {member!r} holds Python objects (dtype {objects.dtype}), which only "
        "pickle could load; a model file's arrays are never unpickled"
    )


def test_old_weights_of_python_objects_are_named_never_unpickled(tmp_path):
    (tmp_path / "weights.json").write_text(
        json.dumps([{"class": "Flatten", "config": {}}, {"class": "Dense", "config": {"units": 3}}])
    )
    path = tmp_path / "weights.hdf5.npz"
    numpy.savez(path, **{"1_Dense_W": OBJECTS[0], "1_Dense_b": numpy.zeros(3)})
    assert error_message(path) == (
        f"{path}: array '1_Dense_W' holds Python objects (dtype object), which only pickle "
        "could load; a model file's arrays are never unpickled"
    )


def test_hdf5_array_of_strings_is_named(tmp_path):
    (tmp_path / "weights.json").write_text(
        json.dumps([{"class": "Flatten", "config": {}}, {"class": "Dense", "config": {"units": 3}}])
    )
    path = tmp_path / "weights.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("1_Dense_W", data=numpy.ones((784, 3)))
        f.create_dataset("1_Dense_b", data=["a", "b", "c"], dtype=h5py.string_dtype())
    assert error_message(path) == (
        f"{path}: array '1_Dense_b' holds variable-length data (strings or objects), not numbers"
    )
