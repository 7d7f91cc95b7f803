"""Loading MNIST (bundled), Fashion-MNIST and CIFAR-10, and checking their files."""

from __future__ import annotations

import gzip
import hashlib
import io
import pathlib
import shutil
import tarfile

import convnet_data
import numpy as np
import pytest
from convnet_data import (
    ChecksumError,
    DataNotFoundError,
    IDXFormatError,
    load_cifar10,
    load_fashion_mnist,
    load_mnist,
    load_mnist_gz,
    read_idx,
    write_idx,
)
from convnet_data import datasets as datasets_module

# The label counts of MNIST, a known property of the canonical files.
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
STEMS = list(datasets_module.MNIST_FILES)


@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


def test_bundled_mnist_shapes_and_label_counts(mnist):
    train, test = mnist
    assert train.images.shape == (60000, 1, 28, 28) and train.images.dtype == np.uint8
    assert test.images.shape == (10000, 1, 28, 28) and test.images.dtype == np.uint8
    assert train.labels.dtype == np.int64 and test.labels.dtype == np.int64
    assert np.bincount(train.labels).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(test.labels).tolist() == MNIST_TEST_COUNTS
    assert train.num_classes == 10
    assert train.images.max() == 255 and train.images.min() == 0
    assert train.labels[:8].tolist() == [5, 0, 4, 1, 9, 2, 1, 3]  # the famous first digits


def test_load_mnist_gz_is_load_mnist(mnist):
    train, test = load_mnist_gz(convnet_data.find_mnist_dir())
    np.testing.assert_array_equal(train.images, mnist[0].images)
    np.testing.assert_array_equal(test.labels, mnist[1].labels)


@pytest.fixture
def mnist_copy(tmp_path):
    """A copy of the bundled MNIST folder that a test may damage."""
    source = convnet_data.find_mnist_dir()
    for stem in STEMS:
        shutil.copy(source / f"{stem}.gz", tmp_path / f"{stem}.gz")
    return tmp_path


def small_label_file(path: pathlib.Path, labels) -> None:
    write_idx(path, np.asarray(labels, dtype=np.uint8))


def test_checksum_mismatch_names_the_file(mnist_copy):
    # a well-formed IDX labels file of the right size, with one label changed
    path = mnist_copy / "t10k-labels-idx1-ubyte.gz"
    labels = read_idx(path)
    labels[0] = (labels[0] + 1) % 10
    write_idx(path, labels)
    with pytest.raises(ChecksumError, match="t10k-labels-idx1-ubyte.gz") as error:
        load_mnist(mnist_copy)
    assert "27ae3e4e09519cfbb04c329615203637" in str(error.value)
    train, test = load_mnist(mnist_copy, verify=False)  # structurally fine, so it loads
    assert test.labels[0] == labels[0]


def test_recompressed_and_raw_files_pass_through_the_canonical_md5(mnist_copy):
    # other tools gzip differently: the SHA-256 of the .gz differs, the content is canonical
    path = mnist_copy / "train-labels-idx1-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw, compresslevel=1, mtime=12345))
    images = mnist_copy / "t10k-images-idx3-ubyte.gz"
    (mnist_copy / "t10k-images-idx3-ubyte").write_bytes(gzip.decompress(images.read_bytes()))
    images.unlink()
    train, test = load_mnist(mnist_copy)
    assert len(train) == 60000 and test.images.shape == (10000, 1, 28, 28)


def test_mnist_verifies_the_dotted_spelling_too(mnist_copy):
    # train-images.idx3-ubyte(.gz), as some mirrors name the files
    for stem in STEMS:
        path = mnist_copy / f"{stem}.gz"
        path.rename(mnist_copy / f"{stem.replace('-idx', '.idx')}.gz")
    path = mnist_copy / "t10k-labels.idx1-ubyte.gz"
    labels = read_idx(path)
    labels[0] = (labels[0] + 1) % 10
    write_idx(path, labels)
    with pytest.raises(ChecksumError, match=r"t10k-labels.idx1-ubyte.gz: checksum mismatch"):
        load_mnist(mnist_copy)
    path.write_bytes(gzip.decompress(path.read_bytes()))  # raw data under the .gz name
    with pytest.raises(ChecksumError, match=r"t10k-labels.idx1-ubyte.gz: checksum mismatch"):
        load_mnist(mnist_copy)


def test_mislabeled_files_are_refused(mnist_copy):
    # the test labels where the training labels should be: a count mismatch
    shutil.copy(mnist_copy / "t10k-labels-idx1-ubyte.gz", mnist_copy / "train-labels-idx1-ubyte.gz")
    with pytest.raises(IDXFormatError, match="10000 labels for the 60000 images"):
        load_mnist(mnist_copy, verify=False)
    # a labels file where the images should be
    shutil.copy(mnist_copy / "t10k-labels-idx1-ubyte.gz", mnist_copy / "train-images-idx3-ubyte.gz")
    with pytest.raises(IDXFormatError, match="expected uint8 images"):
        load_mnist(mnist_copy, verify=False)
    with pytest.raises(ChecksumError, match="train-images-idx3-ubyte.gz"):
        load_mnist(mnist_copy)


def test_a_label_out_of_range_names_the_labels_file(mnist_copy):
    # a well-formed labels file whose label 200 would make the test set 201 classes
    path = mnist_copy / "t10k-labels-idx1-ubyte.gz"
    labels = read_idx(path)
    labels[3] = 200
    write_idx(path, labels)
    message = (
        r"t10k-labels-idx1-ubyte.gz: label 200 at index 3 is out of range 0..9 \(10 classes\)$"
    )
    with pytest.raises(IDXFormatError, match=message):
        load_mnist(mnist_copy, verify=False)
    labels[3] = 9  # the largest valid label: the test set keeps MNIST's 10 classes
    write_idx(path, labels)
    train, test = load_mnist(mnist_copy, verify=False)
    assert train.num_classes == test.num_classes == 10


def test_load_idx_pair_checks_labels_against_the_class_count(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    write_idx(images, np.zeros((4, 2, 2), np.uint8))
    small_label_file(labels, [0, 1, 2, 1])
    # no count given: the largest label + 1
    assert convnet_data.load_idx_pair(images, labels).num_classes == 3
    assert convnet_data.load_idx_pair(images, labels, num_classes=5).num_classes == 5
    message = r"labels: label 2 at index 2 is out of range 0..1 \(2 classes\)$"
    with pytest.raises(IDXFormatError, match=message):
        convnet_data.load_idx_pair(images, labels, num_classes=2)
    # the class names give the count when num_classes is not given
    with pytest.raises(IDXFormatError, match=message):
        convnet_data.load_idx_pair(images, labels, class_names=("no", "yes"))


def test_corrupt_bundled_file_is_a_format_error(mnist_copy):
    path = mnist_copy / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(IDXFormatError, match="train-labels-idx1-ubyte.gz"):
        load_mnist(mnist_copy)


def test_missing_file_names_it(tmp_path, mnist_copy):
    (mnist_copy / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataNotFoundError, match="t10k-images-idx3-ubyte") as error:
        load_mnist(mnist_copy)
    assert isinstance(error.value, FileNotFoundError)
    assert error.value.filename.endswith("t10k-images-idx3-ubyte.gz")


def test_data_dir_from_environment(monkeypatch, mnist_copy):
    monkeypatch.setenv("CONVNET_DATA_DIR", str(mnist_copy))
    assert convnet_data.find_mnist_dir() == mnist_copy
    nested = mnist_copy / "elsewhere"
    (nested / "mnist").mkdir(parents=True)
    for path in mnist_copy.glob("*.gz"):
        shutil.move(path, nested / "mnist" / path.name)
    monkeypatch.setenv("CONVNET_DATA_DIR", str(nested))
    assert convnet_data.find_mnist_dir() == nested / "mnist"


def test_source_tree_data_dir_is_found_above_the_package_or_the_working_dir(
    monkeypatch, tmp_path, mnist_copy
):
    monkeypatch.delenv("CONVNET_DATA_DIR")
    tree = tmp_path / "checkout"
    (tree / "data" / "mnist").mkdir(parents=True)
    for path in mnist_copy.glob("*.gz"):
        shutil.copy(path, tree / "data" / "mnist" / path.name)
    package_file = tree / "packages" / "convnet-data" / "src" / "convnet_data" / "datasets.py"
    monkeypatch.setattr(datasets_module, "__file__", str(package_file))
    monkeypatch.chdir(tmp_path)
    assert convnet_data.find_mnist_dir() == tree / "data" / "mnist"
    monkeypatch.setattr(datasets_module, "__file__", str(tmp_path / "site" / "datasets.py"))
    monkeypatch.chdir(tree / "data")
    assert convnet_data.find_mnist_dir() == tree / "data" / "mnist"


def test_not_found_says_where_it_looked(monkeypatch, tmp_path):
    monkeypatch.delenv("CONVNET_DATA_DIR")
    monkeypatch.setattr(datasets_module, "__file__", str(tmp_path / "a" / "b" / "datasets.py"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataNotFoundError) as error:
        load_mnist()
    message = str(error.value)
    assert "MNIST files not found. Looked in:\n  (nowhere)" in message
    assert "load_mnist(root=" in message and "$CONVNET_DATA_DIR is not set" in message


def test_a_data_dir_without_the_files_is_an_error_not_a_fallback(monkeypatch, tmp_path):
    # the source tree's data/mnist exists (the bundled copy), but the variable wins
    monkeypatch.setenv("CONVNET_DATA_DIR", str(tmp_path / "typo"))
    with pytest.raises(DataNotFoundError) as error:
        load_mnist()
    assert str(error.value) == (
        f"MNIST files not found where $CONVNET_DATA_DIR points ({str(tmp_path / 'typo')!r}). "
        f"Looked in:\n  {tmp_path / 'typo'}\n  {tmp_path / 'typo' / 'mnist'}\n"
        "Point CONVNET_DATA_DIR at the folder holding the four IDX files, or unset it to use "
        "the bundled data/mnist/ of a source checkout."
    )
    monkeypatch.delenv("CONVNET_DATA_DIR")
    assert len(load_mnist()[1]) == 10_000


def test_find_mnist_dir_can_look_for_the_test_files_only(monkeypatch, tmp_path, mnist_copy):
    for split in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (mnist_copy / f"{split}.gz").unlink()
    test_files = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    monkeypatch.setenv("CONVNET_DATA_DIR", str(mnist_copy))
    assert convnet_data.find_mnist_dir(stems=test_files) == mnist_copy
    with pytest.raises(DataNotFoundError, match="the four IDX files"):
        convnet_data.find_mnist_dir()
    (mnist_copy / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataNotFoundError) as error:
        convnet_data.find_mnist_dir(stems=test_files)
    assert str(error.value) == (
        "MNIST files t10k-images-idx3-ubyte(.gz) and t10k-labels-idx1-ubyte(.gz) not found "
        f"where $CONVNET_DATA_DIR points ({str(mnist_copy)!r}). Looked in:\n  {mnist_copy}\n"
        f"  {mnist_copy / 'mnist'}\nPoint CONVNET_DATA_DIR at the folder holding these files, "
        "or unset it to use the bundled data/mnist/ of a source checkout."
    )
    monkeypatch.delenv("CONVNET_DATA_DIR")
    monkeypatch.setattr(datasets_module, "__file__", str(tmp_path / "a" / "b" / "datasets.py"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataNotFoundError) as error:
        convnet_data.find_mnist_dir(stems=test_files[:1])
    assert str(error.value) == (
        "MNIST files t10k-images-idx3-ubyte(.gz) not found. Looked in:\n  (nowhere)\n"
        "($CONVNET_DATA_DIR is not set; the bundled data/mnist/ folder exists only in a source "
        "checkout.) Set CONVNET_DATA_DIR to the folder holding them."
    )
    with pytest.raises(ValueError, match="find_mnist_dir: stems must be among .*, not t10k"):
        convnet_data.find_mnist_dir(stems=["t10k"])


# -- Fashion-MNIST, downloaded from the loopback server ---------------------------------


def fake_idx_set(rng, n_train, n_test):
    """{file name: gz bytes} of a small IDX data set with MNIST's file names."""
    files = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            buffer = io.BytesIO()
            write_idx_to(buffer, array)
            files[f"{prefix}-{kind}-ubyte.gz"] = gzip.compress(buffer.getvalue(), mtime=0)
    return files


def write_idx_to(buffer, array):
    from convnet_data.idx import idx_bytes

    buffer.write(idx_bytes(array))


def test_fashion_mnist_downloads_missing_files(http_server, tmp_path, monkeypatch):
    files = fake_idx_set(np.random.default_rng(0), 50, 20)
    for name, data in files.items():
        http_server.files[f"/fashion/{name}"] = data
    monkeypatch.setattr(datasets_module, "FASHION_MNIST_URL", http_server.url("/fashion/"))
    checksums = {name: "md5:" + hashlib.md5(data).hexdigest() for name, data in files.items()}
    monkeypatch.setattr(datasets_module, "FASHION_MNIST_FILES", checksums)
    with pytest.raises(DataNotFoundError, match="download=True"):
        load_fashion_mnist(tmp_path)
    train, test = load_fashion_mnist(tmp_path, download=True)
    assert train.images.shape == (50, 1, 28, 28) and len(test) == 20
    assert train.class_names[0] == "T-shirt/top"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files)
    requests = len(http_server.requests)
    load_fashion_mnist(tmp_path, download=True)  # all there now: no request
    assert len(http_server.requests) == requests
    # a damaged file is caught by the published checksum
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(files["train-labels-idx1-ubyte.gz"])
    with pytest.raises(ChecksumError, match="t10k-labels-idx1-ubyte.gz"):
        load_fashion_mnist(tmp_path)


def test_fashion_mnist_label_out_of_range_names_the_file(tmp_path):
    files = fake_idx_set(np.random.default_rng(5), 50, 20)
    for name, data in files.items():  # raw files, as some mirrors ship them
        (tmp_path / name[:-3]).write_bytes(gzip.decompress(data))
    path = tmp_path / "t10k-labels-idx1-ubyte"
    labels = read_idx(path)
    labels[3] = 12
    write_idx(path, labels)
    message = r"t10k-labels-idx1-ubyte: label 12 at index 3 is out of range 0..9 \(10 classes\)$"
    with pytest.raises(IDXFormatError, match=message):
        load_fashion_mnist(tmp_path)


@pytest.mark.parametrize("spelling", ["-idx", ".idx"])
def test_fashion_mnist_verifies_the_gz_file_it_reads_whatever_its_spelling(tmp_path, spelling):
    # well-formed files that are not Fashion-MNIST's, under either name find_mnist_file accepts
    for name, data in fake_idx_set(np.random.default_rng(6), 50, 20).items():
        (tmp_path / name.replace("-idx", spelling)).write_bytes(data)
    with pytest.raises(ChecksumError, match=rf"train-images{spelling}3-ubyte.gz: checksum"):
        load_fashion_mnist(tmp_path)
    train, test = load_fashion_mnist(tmp_path, verify=False)
    assert len(train) == 50 and len(test) == 20


def test_fashion_mnist_verifies_gzip_data_under_a_raw_name(tmp_path):
    for name, data in fake_idx_set(np.random.default_rng(7), 50, 20).items():
        (tmp_path / name[:-3]).write_bytes(data)  # gzipped, but named as a raw file
    with pytest.raises(ChecksumError, match=r"train-images-idx3-ubyte: checksum"):
        load_fashion_mnist(tmp_path)


def test_fashion_mnist_checksums_are_the_published_ones():
    assert datasets_module.FASHION_MNIST_FILES["train-images-idx3-ubyte.gz"] == (
        "md5:8d4fb7e6c68d591d4c3dfef9ec88bf0d"
    )
    assert datasets_module.FASHION_MNIST_URL.startswith("http://fashion-mnist.s3-website")


# -- CIFAR-10 binary --------------------------------------------------------------------


def cifar_records(rng, n):
    """(bytes of n CIFAR-10 records, images (n, 3, 32, 32), labels (n,))."""
    images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    records = np.concatenate([labels[:, None], images.reshape(n, -1)], axis=1)
    return records.tobytes(), images, labels


def write_cifar(folder: pathlib.Path, rng, per_batch=4):
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for name in (*datasets_module.CIFAR10_TRAIN, *datasets_module.CIFAR10_TEST):
        data, images, labels = cifar_records(rng, per_batch)
        (folder / name).write_bytes(data)
        truth[name] = (images, labels)
    return truth


def test_cifar10_binary_layout(tmp_path):
    truth = write_cifar(tmp_path / "cifar-10-batches-bin", np.random.default_rng(1))
    train, test = load_cifar10(tmp_path)
    assert train.images.shape == (20, 3, 32, 32) and test.images.shape == (4, 3, 32, 32)
    np.testing.assert_array_equal(train.images[4:8], truth["data_batch_2.bin"][0])
    np.testing.assert_array_equal(train.labels[4:8], truth["data_batch_2.bin"][1])
    np.testing.assert_array_equal(test.images, truth["test_batch.bin"][0])
    # red plane first: byte 1 of a record is the top-left red value
    raw = (tmp_path / "cifar-10-batches-bin" / "test_batch.bin").read_bytes()
    assert test.images[0, 0, 0, 0] == raw[1] and test.images[0, 1, 0, 0] == raw[1 + 1024]
    assert train.class_names[3] == "cat"


def test_cifar10_bad_files(tmp_path):
    write_cifar(tmp_path, np.random.default_rng(2))
    path = tmp_path / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ValueError, match="data_batch_3.bin.*whole number of CIFAR-10 records"):
        load_cifar10(tmp_path)
    (tmp_path / "data_batch_3.bin").unlink()
    with pytest.raises(DataNotFoundError, match="download=True"):
        load_cifar10(tmp_path)


@pytest.mark.parametrize("bad_label", [10, 255])
def test_cifar10_label_out_of_range_names_the_file(tmp_path, bad_label):
    write_cifar(tmp_path, np.random.default_rng(4))
    path = tmp_path / "data_batch_2.bin"
    records = bytearray(path.read_bytes())
    records[3 * 3073] = bad_label  # the label byte of the fourth record
    path.write_bytes(bytes(records))
    message = rf"data_batch_2.bin: label {bad_label} out of range 0..9"
    with pytest.raises(ValueError, match=message):
        convnet_data.read_cifar10_batch(path)
    with pytest.raises(ValueError, match=message):
        load_cifar10(tmp_path)
    records[3 * 3073] = 9  # the largest valid label
    path.write_bytes(bytes(records))
    images, labels = convnet_data.read_cifar10_batch(path)
    assert images.shape == (4, 3, 32, 32) and labels[3] == 9


def test_cifar10_download_extracts_only_the_batches(http_server, tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    source = tmp_path / "build"
    truth = write_cifar(source / "cifar-10-batches-bin", rng)
    (source / "cifar-10-batches-bin" / "readme.html").write_text("not extracted")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(source / "cifar-10-batches-bin", arcname="cifar-10-batches-bin")
    archive = buffer.getvalue()
    http_server.files["/cifar-10-binary.tar.gz"] = archive
    monkeypatch.setattr(datasets_module, "CIFAR10_URL", http_server.url("/cifar-10-binary.tar.gz"))
    monkeypatch.setattr(
        datasets_module, "CIFAR10_CHECKSUM", "sha256:" + hashlib.sha256(archive).hexdigest()
    )
    root = tmp_path / "cache"
    train, test = load_cifar10(root, download=True)
    np.testing.assert_array_equal(test.labels, truth["test_batch.bin"][1])
    assert len(train) == 20
    assert sorted(p.name for p in (root / "cifar-10-batches-bin").iterdir()) == sorted(truth)
