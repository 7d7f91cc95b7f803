"""Loading MNIST (bundled), Fashion-MNIST and CIFAR-10 into `Dataset`s.

These readers work on the host: files are read with the standard library and NumPy, and
the Datasets they return hold NumPy arrays (`batches(xp=cupy)` moves them to a GPU).

MNIST comes with the project in data/mnist/ (see its README.md), so `load_mnist()` needs
no network. It looks for the files in `root` when given; else in $CONVNET_DATA_DIR when
set (the folder itself or its mnist/ subfolder; a folder without the files is an error,
not a reason to look elsewhere); else in data/mnist of the source tree this package is
installed from (an editable or in-tree install).

Fashion-MNIST and CIFAR-10 are read from a folder you name, and downloaded into it from
their official addresses (with checksums) when `download=True` and files are missing.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import tarfile
from collections.abc import Iterable, Mapping

import numpy as np

from .dataset import Dataset
from .download import ChecksumError, download
from .idx import _GZIP_MAGIC, IDXFormatError, decompress_gzip, parse_idx, read_idx

__all__ = [
    "CIFAR10_CLASSES",
    "DataNotFoundError",
    "FASHION_MNIST_CLASSES",
    "MNIST_FILES",
    "find_mnist_dir",
    "find_mnist_file",
    "load_cifar10",
    "load_fashion_mnist",
    "load_idx_pair",
    "load_mnist",
    "load_mnist_gz",
]

ENV_VAR = "CONVNET_DATA_DIR"

#: file stem -> (MD5 of the uncompressed IDX file (canonical), SHA-256 of the bundled .gz)
MNIST_FILES: dict[str, tuple[str, str]] = {
    "train-images-idx3-ubyte": (
        "6bbc9ace898e44ae57da46a324031adb",
        "71524e2cd1ad2968737f7f2f2ff69cbfc32df8ccddff51593f7cb2d4e0eb5b64",
    ),
    "train-labels-idx1-ubyte": (
        "a25bea736e30d166cdddb491f175f624",
        "fe03b8bd7915f70bf5aa08be480aa413fbd85afcaa58b35d230d335f284fd88e",
    ),
    "t10k-images-idx3-ubyte": (
        "2646ac647ad5339dbf082846283269ea",
        "5634745efa576a17e7d4cf5cd9d09123c75e6538e5114267c2d156edaf519341",
    ),
    "t10k-labels-idx1-ubyte": (
        "27ae3e4e09519cfbb04c329615203637",
        "ae18e77e031ccde52407f794d123116439864147d33ac992975f85dd4dc42af6",
    ),
}
_SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
#: the published MD5 sums of the Fashion-MNIST .gz files
FASHION_MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "md5:8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "md5:25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "md5:bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "md5:bb300cfdad3c16e7a12a480ee83cd310",
}
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_CHECKSUM = "md5:c32a1d4ab5d03f1284b67883e8d87530"
CIFAR10_DIR = "cifar-10-batches-bin"
CIFAR10_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_TEST = ("test_batch.bin",)
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
_CIFAR_RECORD = 1 + 3 * 32 * 32  # one label byte, then 1024 red, 1024 green, 1024 blue


class DataNotFoundError(FileNotFoundError):
    """Data files that are not where they were looked for (the message says where)."""


# -- finding files ----------------------------------------------------------------------


def _has_mnist(folder: pathlib.Path, stems: tuple[str, ...]) -> bool:
    """Whether `folder` holds a file for each MNIST stem of `stems`."""
    return all(find_mnist_file(folder, stem) is not None for stem in stems)


def find_mnist_file(folder: str | os.PathLike, stem: str) -> pathlib.Path | None:
    """The file of an MNIST-named IDX `stem` ("t10k-images-idx3-ubyte") in `folder`:
    stem.gz or stem (also the stem.idx3-ubyte spelling some mirrors use); None when there
    is none."""
    folder = pathlib.Path(folder)
    dotted = stem.replace("-idx", ".idx")
    for name in (f"{stem}.gz", stem, f"{dotted}.gz", dotted):
        if (folder / name).is_file():
            return folder / name
    return None


def _mnist_candidates() -> list[pathlib.Path]:
    """Where load_mnist() looks when no root is given, in order: $CONVNET_DATA_DIR and its
    mnist/ when the variable is set (and only there), else the source tree's data/mnist."""
    env = os.environ.get(ENV_VAR)
    if env:
        return [pathlib.Path(env), pathlib.Path(env) / "mnist"]
    candidates = []
    # the source tree's data/mnist: above this file (packages/convnet-data/src/convnet_data/
    # for an editable install; a virtual environment inside the checkout also works), then
    # above the working directory
    for start in (pathlib.Path(__file__).resolve(), pathlib.Path.cwd().resolve()):
        for parent in (start, *start.parents):
            folder = parent / "data" / "mnist"
            if folder.is_dir():
                if folder not in candidates:
                    candidates.append(folder)
                break
    return candidates


def find_mnist_dir(*, stems: Iterable[str] = tuple(MNIST_FILES)) -> pathlib.Path:
    """The folder holding the MNIST files load_mnist() reads by default.

    `stems` names the files the folder must hold (keys of MNIST_FILES; by default all
    four; the two t10k files for a program that reads only the test set). Raises
    DataNotFoundError naming the files looked for (when not all four), the folders
    searched and how to point at the data; ValueError for a stem that is not an MNIST
    file's.
    """
    stems = tuple(stems)
    unknown = [stem for stem in stems if stem not in MNIST_FILES]
    if unknown or not stems:
        raise ValueError(
            f"find_mnist_dir: stems must be among {', '.join(MNIST_FILES)}, "
            f"not {', '.join(unknown) or '(none)'}"
        )
    candidates = _mnist_candidates()
    for folder in candidates:
        if _has_mnist(folder, stems):
            return folder
    searched = "\n".join(f"  {folder}" for folder in candidates) or "  (nowhere)"
    if set(stems) == set(MNIST_FILES):
        what, holding = "MNIST files", "the four IDX files"
        how = "Pass the folder holding the four IDX files: load_mnist(root='path/to/mnist'), "
        how += f"or set {ENV_VAR}."
    else:
        names = " and ".join(f"{stem}(.gz)" for stem in stems)
        what, holding = f"MNIST files {names}", "these files"
        how = f"Set {ENV_VAR} to the folder holding them."
    env = os.environ.get(ENV_VAR)
    if env:
        raise DataNotFoundError(
            f"{what} not found where ${ENV_VAR} points ({env!r}). Looked in:\n"
            f"{searched}\n"
            f"Point {ENV_VAR} at the folder holding {holding}, or unset it to use "
            "the bundled data/mnist/ of a source checkout."
        )
    raise DataNotFoundError(
        f"{what} not found. Looked in:\n"
        f"{searched}\n"
        f"(${ENV_VAR} is not set; "
        f"the bundled data/mnist/ folder exists only in a source checkout.) {how}"
    )


# -- MNIST and IDX pairs ----------------------------------------------------------------


def _read_checked(path: pathlib.Path, md5: str | None, sha256: str | None) -> np.ndarray:
    """read_idx(path), checking the file against its known sums on the way.

    The cheap check first: the SHA-256 of the file's bytes (the bundled .gz files). When
    that differs (a gzip made by another tool, or a raw file), the MD5 of the
    decompressed IDX bytes must match the canonical MNIST sum.
    """
    data = path.read_bytes()
    name = str(path)
    if sha256 is not None and hashlib.sha256(data).hexdigest() == sha256:
        return parse_idx(decompress_gzip(data, name), name)
    raw = decompress_gzip(data, name) if data.startswith(_GZIP_MAGIC) else data
    if md5 is not None:
        actual = hashlib.md5(raw).hexdigest()
        if actual != md5:
            raise ChecksumError(
                f"{name}: checksum mismatch: the uncompressed MD5 is {actual}, the canonical "
                f"file's is {md5}. The file is damaged or not this data set's; rebuild or "
                "download it again, or pass verify=False to load it anyway."
            )
    return parse_idx(raw, name)


def load_idx_pair(
    images_path: str | os.PathLike,
    labels_path: str | os.PathLike,
    *,
    checksums: Mapping[str, tuple[str | None, str | None]] | None = None,
    num_classes: int | None = None,
    class_names=None,
) -> Dataset:
    """A Dataset from an IDX images file (N, H, W) or (N, C, H, W) and labels file (N,).

    `checksums` maps a file's stem to (uncompressed MD5, SHA-256 of the file) to verify.
    `num_classes` (by default the number of `class_names`, if given) is the data set's
    class count; without either, it is the largest label + 1. Raises IDXFormatError when
    the files do not hold uint8 images and labels of one count, or when a label is not
    below `num_classes`.
    """
    images_path, labels_path = pathlib.Path(images_path), pathlib.Path(labels_path)
    arrays = []
    for path in (images_path, labels_path):
        sums = (checksums or {}).get(_stem(path))
        arrays.append(_read_checked(path, *sums) if sums else read_idx(path))
    images, labels = arrays
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise IDXFormatError(
            f"{images_path}: expected uint8 images (N, H, W), got {images.dtype} {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise IDXFormatError(
            f"{labels_path}: expected uint8 labels (N,), got {labels.dtype} {labels.shape}"
        )
    if labels.shape[0] != images.shape[0]:
        raise IDXFormatError(
            f"{labels_path}: {labels.shape[0]} labels for the {images.shape[0]} images "
            f"of {images_path}"
        )
    if num_classes is None and class_names is not None:
        num_classes = len(class_names)
    if num_classes is not None:
        _check_label_range(labels, num_classes, labels_path)
    return Dataset(images, labels, num_classes=num_classes, class_names=class_names)


def _check_label_range(labels: np.ndarray, num_classes: int, path: pathlib.Path) -> None:
    """IDXFormatError naming the file, the first label of `labels` (N,) that is not in
    0 .. num_classes - 1, and its index."""
    outside = np.flatnonzero(labels >= num_classes)  # uint8 labels: never negative
    if outside.size:
        index = int(outside[0])
        raise IDXFormatError(
            f"{path}: label {labels[index]} at index {index} is out of range "
            f"0..{num_classes - 1} ({num_classes} classes)"
        )


def _stem(path: pathlib.Path) -> str:
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    return name.replace(".idx", "-idx")


def _load_idx_folder(root: pathlib.Path, what: str, checksums=None, class_names=None):
    """(train, test) from the four MNIST-named IDX files in `root`, each of 10 classes."""
    result = []
    for split in ("train", "test"):
        paths = []
        for stem in _SPLITS[split]:
            found = find_mnist_file(root, stem)
            if found is None:
                message = f"{what} file {stem}.gz (or {stem}) not found in {root}"
                raise DataNotFoundError(2, message, str(root / f"{stem}.gz"))
            paths.append(found)
        pair = load_idx_pair(*paths, checksums=checksums, num_classes=10, class_names=class_names)
        result.append(pair)
    return tuple(result)


def load_mnist(root: str | os.PathLike | None = None, verify: bool = True):
    """MNIST as (train, test) Datasets: 60000 and 10000 uint8 images (N, 1, 28, 28).

    `root`: the folder holding train-images-idx3-ubyte(.gz), train-labels-idx1-ubyte(.gz),
    t10k-images-idx3-ubyte(.gz) and t10k-labels-idx1-ubyte(.gz); None uses the bundled
    copy (see find_mnist_dir). With `verify` every file is checked against its known
    checksum and a ChecksumError names the file that differs. A label outside 0..9 is an
    IDXFormatError naming the labels file, verified or not.
    """
    folder = find_mnist_dir() if root is None else pathlib.Path(root)
    return _load_idx_folder(folder, "MNIST", MNIST_FILES if verify else None)


def load_mnist_gz(path: str | os.PathLike | None = None, verify: bool = True):
    """The old project's name for load_mnist: (train, test) from the folder `path`."""
    return load_mnist(path, verify=verify)


def load_fashion_mnist(root: str | os.PathLike, download: bool = False, verify: bool = True):
    """Fashion-MNIST as (train, test) Datasets: 60000 and 10000 images (N, 1, 28, 28).

    Reads the four IDX files (MNIST's names) from `root`. Missing files are downloaded
    from the official address when `download` is true, otherwise DataNotFoundError says
    so. With `verify`, each file read that holds gzip data, whichever of the names
    find_mnist_file accepts it has, is checked against the published MD5 sum of its .gz file;
    raw files have no published sums (read_idx still checks their structure).
    """
    root = pathlib.Path(root)
    missing = [name for name in FASHION_MNIST_FILES if find_mnist_file(root, name[:-3]) is None]
    if missing and download:
        for name in missing:
            _download(FASHION_MNIST_URL + name, FASHION_MNIST_FILES[name], root)
    elif missing:
        raise DataNotFoundError(
            2,
            f"Fashion-MNIST files {', '.join(missing)} not found in {root}; "
            "pass download=True to fetch them",
            str(root / missing[0]),
        )
    if verify:
        for name, checksum in FASHION_MNIST_FILES.items():
            _verify_gz_file(find_mnist_file(root, name[:-3]), checksum)  # the file read below
    return _load_idx_folder(root, "Fashion-MNIST", class_names=FASHION_MNIST_CLASSES)


def _download(url, checksum, root):
    """download() through the module attribute, so tests can point it at a local server."""
    return download(url, checksum, root)


def _verify_gz_file(path: pathlib.Path, checksum: str) -> None:
    """ChecksumError when the file at `path` holds gzip data (told by its first bytes, as
    read_idx tells it, whatever its name) and its digest differs from `checksum`, the
    published sum of the .gz file."""
    from .download import file_digest, parse_checksum

    with path.open("rb") as file:
        if file.read(len(_GZIP_MAGIC)) != _GZIP_MAGIC:
            return  # an uncompressed copy: read_idx still validates its structure
    algorithm, expected = parse_checksum(checksum)
    actual = file_digest(path, algorithm)
    if actual != expected:
        raise ChecksumError(
            f"{path}: checksum mismatch: {algorithm} {actual}, expected {expected}; "
            "download it again, or pass verify=False"
        )


# -- CIFAR-10 ---------------------------------------------------------------------------


def read_cifar10_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) from one CIFAR-10 binary batch file.

    Each record is 3073 bytes: the label (0-9), then the 1024 red, 1024 green and 1024 blue
    values of the 32x32 image, row by row. Raises ValueError naming the file when the
    size is not a whole number of records or a label is out of range.
    """
    path = pathlib.Path(path)
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0 or data.size % _CIFAR_RECORD:
        raise ValueError(
            f"{path}: {data.size} bytes is not a whole number of CIFAR-10 records "
            f"({_CIFAR_RECORD} bytes each)"
        )
    records = data.reshape(-1, _CIFAR_RECORD)  # (N, 3073)
    labels = records[:, 0]
    if labels.max() > 9:
        raise ValueError(f"{path}: label {labels.max()} out of range 0..9 (not a CIFAR-10 file?)")
    images = records[:, 1:].reshape(-1, 3, 32, 32)  # channel planes, then rows, then columns
    return np.ascontiguousarray(images), labels.astype(np.int64)


def _cifar_folder(root: pathlib.Path) -> pathlib.Path | None:
    for folder in (root / CIFAR10_DIR, root):
        if all((folder / name).is_file() for name in CIFAR10_TRAIN + CIFAR10_TEST):
            return folder
    return None


def _extract_cifar(archive: pathlib.Path, root: pathlib.Path) -> None:
    """Extract only the six .bin batch files of the archive into root/cifar-10-batches-bin."""
    wanted = {f"{CIFAR10_DIR}/{name}" for name in CIFAR10_TRAIN + CIFAR10_TEST}
    target = root / CIFAR10_DIR
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            if member.name in wanted and member.isfile():
                source = tar.extractfile(member)
                partial = target / (pathlib.PurePosixPath(member.name).name + ".part")
                partial.write_bytes(source.read())
                os.replace(partial, target / pathlib.PurePosixPath(member.name).name)
                wanted.discard(member.name)
    if wanted:
        raise ValueError(f"{archive}: missing {', '.join(sorted(wanted))}")


def load_cifar10(root: str | os.PathLike, download: bool = False):
    """CIFAR-10 as (train, test) Datasets: 50000 and 10000 uint8 images (N, 3, 32, 32).

    Reads the binary version (data_batch_1.bin ... data_batch_5.bin, test_batch.bin) from
    root/cifar-10-batches-bin or root itself; never the pickled Python version. With
    `download`, missing files are fetched (cifar-10-binary.tar.gz, checked by MD5) and the
    six batch files extracted.
    """
    root = pathlib.Path(root)
    folder = _cifar_folder(root)
    if folder is None and download:
        archive = _download(CIFAR10_URL, CIFAR10_CHECKSUM, root)
        _extract_cifar(archive, root)
        folder = _cifar_folder(root)
    if folder is None:
        raise DataNotFoundError(
            2,
            f"CIFAR-10 binary batches ({', '.join(CIFAR10_TRAIN + CIFAR10_TEST)}) not found "
            f"in {root / CIFAR10_DIR} or {root}; pass download=True to fetch them",
            str(root / CIFAR10_DIR),
        )
    result = []
    for names in (CIFAR10_TRAIN, CIFAR10_TEST):
        parts = [read_cifar10_batch(folder / name) for name in names]
        images = np.concatenate([images for images, _ in parts])
        labels = np.concatenate([labels for _, labels in parts])
        result.append(Dataset(images, labels, num_classes=10, class_names=CIFAR10_CLASSES))
    return tuple(result)
