"""The two containers a model file can be: HDF5 (through h5py) or NPZ (a zip of .npy files).

Both hold the same layout: *attributes* (str or int values) attached to groups, and
*arrays* at slash-separated paths ("params/0/W"). In HDF5 groups and attributes are native.
In an NPZ, the array at "params/0/W" is the member "params/0/W.npy", and the attribute
`name` of group `g` is the 0-d array member "g/.attrs/name.npy" ("".attrs/name" at the
root); strings are 0-d unicode arrays, so nothing is ever pickled.

Writers take `attributes: {group: {name: value}}` and `arrays: {path: ndarray}`. Readers
(`open_reader`) expose the same two views and check every array's declared size against
the file before reading it, so a corrupted header cannot make us allocate gigabytes.

The HDF5 library can crash the process (not raise) on some corrupted files. So the HDF5
files written here start with a 512-byte user block, which HDF5 itself skips, holding a
seal: a magic line and the SHA-256 of every byte after the block. The seal is checked
before h5py ever sees the file; a damaged file is refused without being parsed. Only
HDF5 files written elsewhere (ConvNet-NumPy's) are opened without that protection.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import os
import stat
import zipfile
from typing import Any

import numpy

from .atomic import file_kind
from .errors import ModelFormatError
from .treedef import ARRAY_KINDS

__all__ = [
    "HDF5_SIGNATURE",
    "ForeignAttribute",
    "H5PY_AVAILABLE",
    "Reader",
    "check_regular_file",
    "check_seal",
    "container_of",
    "open_reader",
    "write_hdf5",
    "write_npz",
]

try:
    import h5py
except ImportError:  # the NPZ fallback
    h5py = None

H5PY_AVAILABLE = h5py is not None
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")
ATTRS = ".attrs"
# Compressed members may legitimately expand; beyond this ratio a size is not believable.
MAX_EXPANSION = 64
SLACK_BYTES = 1 << 20


SEAL_MAGIC = b"\x89convnet-hdf5\r\n\x1a\n"
USERBLOCK_SIZE = 512


def check_regular_file(path: str | bytes | os.PathLike) -> None:
    """Raise unless `path` names a regular file (symbolic links followed); nothing is opened.

    Opening a FIFO for reading waits for a writer, possibly for ever, and a device can
    stream bytes without end, so what the path is gets checked before any read. Raises
    FileNotFoundError when nothing is there, IsADirectoryError for a directory, and
    ModelFormatError naming the path for a device, FIFO or socket.
    """
    mode = os.stat(path).st_mode
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), os.fsdecode(path))
    raise ModelFormatError(path, f"it is {file_kind(mode)}, not a regular file")


def container_of(path: str | bytes | os.PathLike) -> str | None:
    """The kind of file, from its first bytes: "sealed-hdf5" (an HDF5 file written here),
    "hdf5" (any other HDF5 file), "npz", or None. What is not a regular file is refused
    first (`check_regular_file`), so a FIFO or a device is never read."""
    check_regular_file(path)
    with open(path, "rb") as f:
        head = f.read(len(SEAL_MAGIC))
    if head == SEAL_MAGIC:
        return "sealed-hdf5"
    if head[:8] == HDF5_SIGNATURE:
        return "hdf5"
    if head[:4] in ZIP_SIGNATURES:
        return "npz"
    return None


def _sha256_after_userblock(f) -> str:
    digest = hashlib.sha256()
    f.seek(USERBLOCK_SIZE)
    while chunk := f.read(1 << 20):
        digest.update(chunk)
    return digest.hexdigest()


def _seal(path: str) -> None:
    """Write the seal (magic + SHA-256 of the HDF5 data) into the file's user block."""
    with open(path, "r+b") as f:
        header = SEAL_MAGIC + f"sha256 {_sha256_after_userblock(f)}\n".encode()
        f.seek(0)
        f.write(header.ljust(USERBLOCK_SIZE, b"\0"))


def check_seal(path: str) -> None:
    """Raise ModelFormatError, naming `path` and what is wrong, unless the sealed HDF5 file
    at `path` is byte-for-byte as written.

    The error is the final one: callers let it through as it is, since it already says
    that the file is damaged and how.
    """
    with open(path, "rb") as f:
        block = f.read(USERBLOCK_SIZE)
        if len(block) < USERBLOCK_SIZE:
            raise ModelFormatError(path, "the file is truncated (shorter than its header)")
        line = block[len(SEAL_MAGIC) :].split(b"\n", 1)[0]
        if not line.startswith(b"sha256 ") or len(line) != 7 + 64:
            raise ModelFormatError(path, "the file's header is damaged")
        if _sha256_after_userblock(f) != line[7:].decode("ascii", "replace"):
            raise ModelFormatError(
                path, "the file is corrupted or truncated (its SHA-256 does not match)"
            )


# ---------------------------------------------------------------------------------------
# Writing


def write_hdf5(path: str, attributes: dict[str, dict[str, Any]], arrays: dict[str, Any]) -> None:
    """Write groups, attributes and arrays to a new HDF5 file at `path` (uncompressed)."""
    if h5py is None:
        raise ImportError("writing HDF5 needs h5py: pip install h5py (or save to a .npz path)")
    with h5py.File(path, "w", userblock_size=USERBLOCK_SIZE) as f:
        for group, attrs in attributes.items():
            node = f.require_group(group) if group else f
            for name, value in attrs.items():
                node.attrs[name] = value
        for key, array in arrays.items():
            f.create_dataset(key, data=array)
    _seal(path)


def _npz_member(zf: zipfile.ZipFile, key: str, array: numpy.ndarray) -> None:
    with zf.open(key + ".npy", "w", force_zip64=True) as member:
        numpy.lib.format.write_array(member, numpy.asanyarray(array), allow_pickle=False)


def write_npz(path: str, attributes: dict[str, dict[str, Any]], arrays: dict[str, Any]) -> None:
    """Write the same layout as an NPZ (uncompressed zip of .npy members) at `path`."""
    with open(path, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
        for group, attrs in attributes.items():
            prefix = f"{group}/{ATTRS}" if group else ATTRS
            for name, value in attrs.items():
                _npz_member(zf, f"{prefix}/{name}", numpy.array(value))
        for key, array in arrays.items():
            _npz_member(zf, key, array)


# ---------------------------------------------------------------------------------------
# Reading


@dataclasses.dataclass(frozen=True)
class ForeignAttribute:
    """An attribute value that convnet never writes (a float, an array, ...), as a reader
    hands it back: what it is. Other programs' files hold such values, so a reader lists
    them rather than fail, and the file is refused later for what it is."""

    description: str

    def __str__(self) -> str:
        return self.description


def _describe_value(value: Any) -> str:
    """What an attribute value is, for an error: "a float64 (0.001)", "an array of ..."."""
    if isinstance(value, numpy.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    if isinstance(value, numpy.generic):
        return f"a {value.dtype} ({value.item()!r})"
    if isinstance(value, (float, complex)):
        return f"a {type(value).__name__} ({value!r})"
    return f"a value of type {type(value).__name__}"


def _attribute_value(value: Any) -> str | int | ForeignAttribute:
    """An attribute as a Python str or int (h5py and NPZ hand back various types), or a
    ForeignAttribute saying what it is when it is neither."""
    if isinstance(value, numpy.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return ForeignAttribute(f"{len(value)} bytes that are not UTF-8 text")
    if isinstance(value, numpy.str_):
        return str(value)
    if isinstance(value, (numpy.integer, numpy.bool_)):
        return int(value)
    if isinstance(value, (str, int)):
        return value
    return ForeignAttribute(_describe_value(value))


class Reader:
    """Read-only view of a model file: `attributes()`, `array_paths()`, `info()`, `read()`."""

    kind = ""

    def __init__(self, path: str):
        self.path = path
        self.file_size = os.path.getsize(path)

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:  # pragma: no cover - overridden
        """Close the file; a `with` block calls it on leaving."""

    def attributes(self) -> dict[str, dict[str, Any]]:
        """{group: {name: str or int}} for every group that has attributes ("" = root); a
        value of another kind (another program's file) is a `ForeignAttribute`."""
        raise NotImplementedError

    def array_paths(self) -> list[str]:
        """Every array path in the file, sorted."""
        raise NotImplementedError

    def info(self, key: str) -> tuple[tuple[int, ...], numpy.dtype]:
        """(shape, dtype) of the array at `key`, without reading its data."""
        raise NotImplementedError

    def read(self, key: str) -> numpy.ndarray:
        """The array at `key` as a NumPy array (0-d arrays stay arrays)."""
        raise NotImplementedError

    #: What an array of a dtype with objects holds in this container, for the error that
    #: refuses it ("{dtype}" is filled in).
    objects = "Python objects (dtype {dtype})"

    def _check_size(self, key: str, shape: tuple[int, ...], dtype: numpy.dtype, limit: int):
        if dtype.hasobject:  # a model file never holds one: not damage, another content
            holds = self.objects.format(dtype=dtype)
            raise ModelFormatError(self.path, f"array {key!r} holds {holds}")
        if dtype.kind not in ARRAY_KINDS:
            raise ValueError(f"array {key!r} has unsupported dtype {dtype}")
        nbytes = int(numpy.prod(shape, dtype=object)) * dtype.itemsize  # host
        if nbytes > limit:
            raise ValueError(f"array {key!r} claims {nbytes} bytes, more than the file can hold")


class HDF5Reader(Reader):
    """A Reader over an HDF5 file opened read-only with h5py (groups, attributes, datasets)."""

    kind = "hdf5"
    objects = "variable-length data (strings or objects), not numbers"

    def __init__(self, path: str):
        super().__init__(path)
        if h5py is None:
            raise ImportError(f"{path} is an HDF5 file; reading it needs h5py: pip install h5py")
        self._file = h5py.File(path, "r")
        self._datasets: dict[str, Any] = {}
        self._groups: dict[str, Any] = {"": self._file}

        def visit(name: str, node: Any) -> None:
            if isinstance(node, h5py.Dataset):
                self._datasets[name] = node
            elif isinstance(node, h5py.Group):
                self._groups[name] = node
            else:  # pragma: no cover - h5py only yields groups and datasets
                raise ValueError(f"unexpected HDF5 object at {name!r}")

        self._file.visititems(visit)

    def close(self) -> None:
        self._file.close()

    def attributes(self) -> dict[str, dict[str, Any]]:
        result = {}
        for name, group in self._groups.items():
            attrs = {key: self._attribute(group, key) for key in group.attrs}
            if attrs:
                result[name] = attrs
        return result

    @staticmethod
    def _attribute(group: Any, key: str) -> str | int | ForeignAttribute:
        try:
            value = group.attrs[key]
        except (OSError, TypeError) as error:  # a type h5py cannot convert
            return ForeignAttribute(f"a value h5py cannot read ({error})")
        return _attribute_value(value)

    def array_paths(self) -> list[str]:
        return sorted(self._datasets)

    def info(self, key: str) -> tuple[tuple[int, ...], numpy.dtype]:
        dataset = self._datasets[key]
        return tuple(int(d) for d in dataset.shape), numpy.dtype(dataset.dtype)

    def read(self, key: str) -> numpy.ndarray:
        dataset = self._datasets[key]
        shape, dtype = self.info(key)
        contiguous = dataset.chunks is None
        limit = self.file_size if contiguous else MAX_EXPANSION * self.file_size + SLACK_BYTES
        self._check_size(key, shape, dtype, limit)
        array = numpy.asarray(dataset[()])
        if array.shape != shape or array.dtype != dtype:
            raise ValueError(f"array {key!r} read back as {array.dtype}{array.shape}")
        return array


class NPZReader(Reader):
    """A Reader over an NPZ (zip of .npy members), parsed member by member without pickles."""

    kind = "npz"
    objects = (
        "Python objects (dtype {dtype}), which only pickle could load; a model file's "
        "arrays are never unpickled"
    )

    def __init__(self, path: str):
        super().__init__(path)
        self._zip = zipfile.ZipFile(path, "r")
        self._members: dict[str, zipfile.ZipInfo] = {}
        for member in self._zip.infolist():
            if not member.filename.endswith(".npy"):
                raise ValueError(f"unexpected member {member.filename!r} in the NPZ archive")
            limit = MAX_EXPANSION * self.file_size + SLACK_BYTES
            if member.file_size > limit:
                raise ValueError(f"member {member.filename!r} claims {member.file_size} bytes")
            self._members[member.filename[: -len(".npy")]] = member
        self._headers: dict[str, tuple[tuple[int, ...], numpy.dtype]] = {}

    def close(self) -> None:
        self._zip.close()

    def _header(self, key: str) -> tuple[tuple[int, ...], numpy.dtype]:
        """(shape, dtype) from a member's .npy header, checked against the member's size."""
        if key not in self._headers:
            member = self._members[key]
            with self._zip.open(member) as stream:
                version = numpy.lib.format.read_magic(stream)
                if version == (1, 0):
                    shape, _, dtype = numpy.lib.format.read_array_header_1_0(stream)
                elif version == (2, 0):
                    shape, _, dtype = numpy.lib.format.read_array_header_2_0(stream)
                else:
                    raise ValueError(f"member {key!r} has unsupported .npy version {version}")
                header_bytes = stream.tell()
            shape = tuple(int(d) for d in shape)
            self._check_size(key, shape, dtype, member.file_size - header_bytes)
            self._headers[key] = (shape, dtype)
        return self._headers[key]

    def _load(self, key: str) -> numpy.ndarray:
        """Read one member (no pickles) after checking its header."""
        shape, dtype = self._header(key)
        data = self._zip.read(self._members[key])  # checks the CRC
        array = numpy.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
        if array.shape != shape or array.dtype != dtype:
            raise ValueError(f"member {key!r} read back as {array.dtype}{array.shape}")
        return array

    def _check_size(self, key, shape, dtype, limit):
        if dtype.kind == "U":  # attributes are 0-d strings
            if shape != ():
                raise ValueError(f"member {key!r} holds a string array")
            if dtype.itemsize > limit:
                raise ValueError(f"member {key!r} is truncated")
            return
        super()._check_size(key, shape, dtype, limit)

    def attributes(self) -> dict[str, dict[str, Any]]:
        result: dict[str, dict[str, Any]] = {}
        for key in self._members:
            group, _, name = key.rpartition("/")
            if group == ATTRS:
                owner = ""
            elif group.endswith("/" + ATTRS):
                owner = group[: -len(ATTRS) - 1]
            else:
                continue
            result.setdefault(owner, {})[name] = _attribute_value(self._load(key))
        return result

    def array_paths(self) -> list[str]:
        return sorted(
            key for key in self._members if not (key.startswith(ATTRS + "/") or f"/{ATTRS}/" in key)
        )

    def info(self, key: str) -> tuple[tuple[int, ...], numpy.dtype]:
        return self._header(key)

    def read(self, key: str) -> numpy.ndarray:
        if self._header(key)[1].kind not in ARRAY_KINDS:
            raise ValueError(f"array {key!r} has unsupported dtype {self._header(key)[1]}")
        return self._load(key)


def open_reader(path: str, kind: str) -> Reader:
    """A reader for `path`, of a `kind` given by `container_of` (a sealed file is checked)."""
    if kind == "sealed-hdf5":
        check_seal(path)
        return HDF5Reader(path)
    return HDF5Reader(path) if kind == "hdf5" else NPZReader(path)
