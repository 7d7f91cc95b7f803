"""A model file holds its own bytes. HDF5 datasets that would read bytes from elsewhere
(external storage, virtual datasets, links) or load a filter plugin are refused, naming
the file and the array, before any array is read; and the arrays' declared sizes are
bounded by the file's size, each one and all of them together."""

import contextlib
import json
import os
import subprocess
import sys
import tracemalloc
import zipfile

import convnet_io
import numpy
import pytest
from convnet_core import backend, init
from convnet_core import layers as L
from convnet_io import ModelFormatError, storage
from convnet_io import format as fmt
from convnet_io_helpers import fifo_writer_after

h5py = pytest.importorskip("h5py")

NET = L.Sequential((L.Flatten(), L.Dense(2)))
SHAPE = (1, 2, 2)
OUTSIDE = "a model file holds its own data"


def sealed_model(tmp_path, make_dataset=None, extra=None):
    """A model file sealed as `save` seals it, whose array 'params/1/W' is written by
    `make_dataset(f, key, array)` (default: as save writes it); `extra(f)` adds more."""
    good = tmp_path / "good.h5"
    params, state = init(NET, SHAPE, rng=0)
    convnet_io.save(good, layer=NET, params=params, state=state, input_shape=SHAPE)
    attributes, arrays = fmt.read_raw(good)
    path = tmp_path / "model.h5"
    with h5py.File(path, "w", userblock_size=storage.USERBLOCK_SIZE) as f:
        for group, values in attributes.items():
            node = f.require_group(group) if group else f
            for name, value in values.items():
                node.attrs[name] = value
        for key, array in arrays.items():
            if key == "params/1/W" and make_dataset is not None:
                make_dataset(f, key, array)
            else:
                f.create_dataset(key, data=array)
        if extra is not None:
            extra(f)
    storage._seal(path)
    return path


def old_model(tmp_path, make_weights, extra=None):
    """A ConvNet-NumPy model (weights.hdf5 + weights.json) of Flatten, Dense(2) whose
    array '1_Dense_W' (4, 2) is written by `make_weights(f, key)`; `extra(f)` adds more."""
    path = tmp_path / "weights.hdf5"
    with h5py.File(path, "w") as f:
        make_weights(f, "1_Dense_W")
        f["1_Dense_b"] = numpy.zeros(2, numpy.float32)
        if extra is not None:
            extra(f)
    layers = [{"class": "Flatten"}, {"class": "Dense", "config": {"units": 2}}]
    (tmp_path / "weights.json").write_text(json.dumps(layers))
    return path


def refused(path, problem, loaders=None):
    """Every way of loading `path` raises ModelFormatError '<path>: <problem>'."""
    loaders = loaders or (
        lambda p: convnet_io.load(p, input_shape=SHAPE),
        convnet_io.load_checkpoint,
        fmt.read_raw,
    )
    for load in loaders:
        with pytest.raises(ModelFormatError) as info:
            load(path)
        assert str(info.value) == f"{path}: {problem}"


def external(source, size=32):
    def make(f, key, array=None):
        f.create_dataset(key, shape=(4, 2), dtype="<f4", external=[(str(source), 0, size)])

    return make


@pytest.mark.parametrize("kind", ["a regular file", "a FIFO", "/dev/zero"])
@pytest.mark.parametrize("sealed", [False, True], ids=["convnet-numpy", "sealed"])
def test_external_storage_is_refused_before_its_source_is_read(tmp_path, kind, sealed):
    """Its bytes would come from any file the user can read (a private key became the
    weights), a FIFO (load blocked for ever) or a device."""
    if kind == "a regular file":
        source = tmp_path / "private.txt"
        source.write_text("API_KEY=hunter2-very-secret-token\n")
    elif kind == "a FIFO":
        source = tmp_path / "pipe"
        os.mkfifo(source)
    else:
        source = "/dev/zero"
    if sealed:
        path, key = sealed_model(tmp_path, external(source)), "params/1/W"
    else:
        path, key = old_model(tmp_path, external(source)), "1_Dense_W"
    where = f"external storage, in the file {str(source)!r}"
    problem = f"array {key!r} is stored outside the file ({where}); {OUTSIDE}"
    # a FIFO read by mistake gets end-of-file after 2 s, failing the test, not hanging it
    with fifo_writer_after(source, seconds=2.0) if kind == "a FIFO" else contextlib.nullcontext():
        refused(path, problem)


def test_a_virtual_dataset_reading_another_file_is_refused(tmp_path):
    """A virtual dataset whose source is missing read as zeros; one whose source is
    another file read that file."""
    source = tmp_path / "other.h5"
    with h5py.File(source, "w") as f:
        f["x"] = numpy.ones((4, 2), numpy.float32)

    def virtual(f, key):
        layout = h5py.VirtualLayout(shape=(4, 2), dtype="<f4")
        layout[:] = h5py.VirtualSource(str(source), "x", shape=(4, 2))
        f.create_virtual_dataset(key, layout, fillvalue=0)

    path = old_model(tmp_path, virtual)
    problem = (
        f"array '1_Dense_W' is stored outside the file (a virtual dataset, whose first "
        f"source file is {str(source)!r}); {OUTSIDE}"
    )
    refused(path, problem)


SELF_VDS = """
import sys, convnet_io
try:
    convnet_io.load(sys.argv[1])
except convnet_io.ModelFormatError as error:
    print(error)
"""


def test_a_sealed_virtual_dataset_of_its_own_file_is_refused_without_crashing(tmp_path):
    """HDF5 crashed the process (SIGSEGV) on a sealed file whose array is a virtual dataset
    of itself; it runs in a child process, so a crash fails this test only."""

    def virtual(f, key, array):
        layout = h5py.VirtualLayout(shape=array.shape, dtype=array.dtype)
        layout[:] = h5py.VirtualSource(".", key, shape=array.shape)
        f.create_virtual_dataset(key, layout, fillvalue=0)

    path = sealed_model(tmp_path, virtual)
    child = subprocess.run(
        [sys.executable, "-c", SELF_VDS, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    problem = (
        "array 'params/1/W' is stored outside the file (a virtual dataset, whose first "
        f"source file is '.'); {OUTSIDE}"
    )
    assert child.stdout.strip().splitlines()[-1] == f"{path}: {problem}"


@pytest.mark.parametrize("kind", ["external", "soft"])
def test_links_are_refused(tmp_path, kind):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = numpy.ones((4, 2), numpy.float32)

    def link(f, key, array=None):
        f[key] = h5py.ExternalLink(str(other), "/x") if kind == "external" else h5py.SoftLink("/x")

    def target(f):
        f["x"] = numpy.ones((4, 2), numpy.float32)

    path = sealed_model(tmp_path, link, extra=target if kind == "soft" else None)
    what = (
        f"an external link to '/x' in the file {str(other)!r}"
        if kind == "external"
        else "a soft link to '/x'"
    )
    problem = (
        f"'params/1/W' is {what}; a model file holds its groups and arrays themselves, never links"
    )
    refused(path, problem)


def test_a_named_datatype_is_named(tmp_path):
    def weights(f, key):
        f[key] = numpy.zeros((4, 2), numpy.float32)

    def datatype(f):
        f["float_type"] = numpy.dtype("<f4")

    path = old_model(tmp_path, weights, extra=datatype)
    problem = (
        "'float_type' is a named HDF5 datatype; a model file holds only groups and "
        "arrays (datasets)"
    )
    refused(path, problem)


@pytest.mark.parametrize(
    ("options", "how"),
    [
        ({"chunks": (2, 2)}, "chunked"),
        ({"chunks": (2, 2), "compression": "gzip"}, "chunked and filtered"),
    ],
)
def test_a_sealed_file_holds_its_arrays_as_save_writes_them(tmp_path, options, how):
    def dataset(f, key, array):
        f.create_dataset(key, data=array, **options)

    path = sealed_model(tmp_path, dataset)
    problem = (
        f"array 'params/1/W' is stored {how}, but convnet writes every array contiguous "
        "and unfiltered"
    )
    refused(path, problem)


def test_a_filter_plugin_is_never_loaded(tmp_path):
    """A dataset naming a filter that neither HDF5 nor h5py implements would make HDF5
    look for a plugin (a shared library) on HDF5_PLUGIN_PATH."""

    def weights(f, key):
        data = numpy.zeros((4, 2), numpy.float32)
        f.create_dataset(
            key, data=data, chunks=(4, 2), compression=32015, allow_unknown_filter=True
        )

    path = old_model(tmp_path, weights)
    problem = (
        "array '1_Dense_W' needs the HDF5 filter 32015, a plugin; only the filters built "
        "into HDF5 and h5py are read (deflate, shuffle, fletcher32, szip, nbit, "
        "scaleoffset, lzf)"
    )
    refused(path, problem)


@pytest.mark.parametrize(
    ("compression", "number", "name"), [("szip", 4, "szip"), ("gzip", 1, "deflate")]
)
def test_a_built_in_filter_missing_from_this_build_of_hdf5_is_a_plugin_too(
    tmp_path, monkeypatch, compression, number, name
):
    """HDF5 built without SZIP (say) would look for filter 4 on HDF5_PLUGIN_PATH."""

    def weights(f, key):
        data = numpy.zeros((4, 2), numpy.float32)
        f.create_dataset(key, data=data, chunks=(4, 2), compression=compression)

    path = old_model(tmp_path, weights)
    available = h5py.h5z.filter_avail
    monkeypatch.setattr(h5py.h5z, "filter_avail", lambda n: n != number and available(n))
    names = ["deflate", "shuffle", "fletcher32", "szip", "nbit", "scaleoffset", "lzf"]
    names.remove(name)
    problem = (
        f"array '1_Dense_W' needs the HDF5 filter {number} ({name}), which this build of "
        f"HDF5 lacks: a plugin; only the filters built into HDF5 and h5py are read "
        f"({', '.join(names)})"
    )
    refused(path, problem)


def test_compressed_convnet_numpy_weights_still_load(tmp_path):
    weights = numpy.arange(8, dtype=numpy.float32).reshape(4, 2)

    def compressed(f, key):
        f.create_dataset(key, data=weights, chunks=(2, 2), compression="gzip", shuffle=True)

    model = convnet_io.load(old_model(tmp_path, compressed), input_shape=SHAPE)
    numpy.testing.assert_array_equal(backend.to_host(model.params[1]["W"]), weights)


def test_an_array_the_file_never_wrote_is_refused(tmp_path):
    """Unwritten chunks take no bytes in the file and read as the fill value."""

    def unwritten(f, key):
        f.create_dataset(key, shape=(4, 2), dtype="<f4", chunks=(2, 2))

    path = old_model(tmp_path, unwritten)
    refused(path, "array '1_Dense_W' claims 32 bytes, but the file holds 0")


def test_an_empty_hdf5_dataset_is_named(tmp_path):
    def empty(f, key):
        f[key] = h5py.Empty("<f4")

    path = old_model(tmp_path, empty)
    refused(path, "array '1_Dense_W' is an empty HDF5 dataset (it has no shape), not an array")


ZEROS = 2 << 20  # bytes of zeros in each padding array: deflate shrinks them ~1000 times


def total_problem(path, count, total):
    size = os.path.getsize(path)
    limit = storage.MAX_EXPANSION * size + storage.SLACK_BYTES
    return (
        f"its {count} arrays claim {total} bytes in all, more than a file of {size} bytes "
        f"can hold (at most {limit}: {storage.MAX_EXPANSION} times its size plus "
        f"{storage.SLACK_BYTES})"
    )


def test_compressed_arrays_are_bounded_all_together_in_hdf5(tmp_path):
    """Each array is within the limit for one compressed array, but together they claim
    far more than the file could expand to: refused before any of them is read."""

    def weights(f, key):
        f[key] = numpy.zeros((4, 2), numpy.float32)

    def padding(f):
        for i in range(12):
            f.create_dataset(f"pad/{i}", data=numpy.zeros(ZEROS, numpy.uint8), compression="gzip")

    path = old_model(tmp_path, weights, extra=padding)
    assert ZEROS < storage.MAX_EXPANSION * os.path.getsize(path) + storage.SLACK_BYTES
    tracemalloc.start()
    try:
        refused(path, total_problem(path, 14, 12 * ZEROS + 32 + 8))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < ZEROS


def test_compressed_members_are_bounded_all_together_in_npz(tmp_path):
    path = tmp_path / "model.npz"
    params, state = init(NET, SHAPE, rng=0)
    convnet_io.save(path, layer=NET, params=params, state=state, input_shape=SHAPE)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as zf:
        for i in range(12):
            with zf.open(f"pad/{i}.npy", "w") as member:
                numpy.lib.format.write_array(member, numpy.zeros(ZEROS, numpy.uint8))
    with zipfile.ZipFile(path) as zf:
        members = zf.infolist()
        total = sum(member.file_size for member in members)
    assert (
        max(m.file_size for m in members)
        < storage.MAX_EXPANSION * os.path.getsize(path) + storage.SLACK_BYTES
    )
    tracemalloc.start()
    try:
        refused(path, total_problem(path, len(members), total))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < ZEROS
