"""The two containers a model file can be: HDF5 (through h5py) or NPZ (a zip of .npy files).

Both hold the same layout: *attributes* (str or int values) attached to groups, and
*arrays* at slash-separated paths ("params/0/W"). In HDF5 groups and attributes are native.
In an NPZ, the array at "params/0/W" is the member "params/0/W.npy", and the attribute
`name` of group `g` is the 0-d array member "g/.attrs/name.npy" ("".attrs/name" at the
root); strings are 0-d unicode arrays, so nothing is ever pickled.

Writers take `attributes: {group: {name: value}}` and `arrays: {path: ndarray}`. Readers
(`open_reader`) expose the same two views. When a reader opens a file it checks, before
any array is read, that every array is stored in the file itself (an HDF5 dataset with
external storage or a virtual layout, or a link, would read bytes from other files,
FIFOs or devices), and what the arrays claim against the file's size: each array at most
the file's size when stored as it is (`MAX_EXPANSION` times it, plus `SLACK_BYTES`, when
compressed), and all of them together at most `MAX_EXPANSION` times the file's size plus
`SLACK_BYTES`. So a corrupted or hostile header cannot make us allocate gigabytes.

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
except ImportError as error:  # the NPZ fallback
    h5py = None
    _h5py_error = error
else:
    _h5py_error = None

H5PY_AVAILABLE = h5py is not None


def _why_no_h5py(error: ImportError | None) -> str:
    """Why HDF5 cannot be used, for messages: h5py is missing, or is there but broken
    (a missing HDF5 library, say), which installing it again would not mend."""
    if error is None:
        return ""
    if isinstance(error, ModuleNotFoundError) and error.name == "h5py":
        return "h5py is not installed"
    return f"h5py is installed but failed to import ({type(error).__name__}: {error})"


#: "" when h5py imported, else why not ("h5py is not installed", or the import's error)
H5PY_MISSING = _why_no_h5py(_h5py_error)
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")
ATTRS = ".attrs"
# Compressed members may legitimately expand; beyond this ratio a size is not believable.
# It bounds each compressed array, and the arrays of a file all together.
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
        raise ImportError(
            f"writing HDF5 needs h5py, but {H5PY_MISSING}: pip install h5py "
            "(or save to a .npz path)"
        )
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


def _expansion_limit(file_size: int) -> int:
    """The most bytes that arrays read from a file of `file_size` bytes can believably
    take: a compressed array's, and all the arrays of a file together."""
    return MAX_EXPANSION * file_size + SLACK_BYTES


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
        """The array at `key` as a NumPy array (0-d arrays stay arrays), in the byte order
        the file stores it in."""
        raise NotImplementedError

    #: What an array of a dtype with objects holds in this container, for the error that
    #: refuses it ("{dtype}" is filled in).
    objects = "Python objects (dtype {dtype})"

    def _check_total(self, sizes: dict[str, int]) -> None:
        """Refuse a file whose arrays claim more bytes in all ({path: bytes}, as declared)
        than `_expansion_limit` of its size, before any of them is read."""
        total = sum(sizes.values())
        limit = _expansion_limit(self.file_size)
        if total > limit:
            raise ModelFormatError(
                self.path,
                f"its {len(sizes)} arrays claim {total} bytes in all, more than a file of "
                f"{self.file_size} bytes can hold (at most {limit}: {MAX_EXPANSION} times "
                f"its size plus {SLACK_BYTES})",
            )

    def _check_dtype(self, key: str, dtype: numpy.dtype) -> None:
        """Refuse an array of a dtype a model file never holds (content, not damage)."""
        if dtype.hasobject:
            holds = self.objects.format(dtype=dtype)
            raise ModelFormatError(self.path, f"array {key!r} holds {holds}")
        if dtype.kind not in ARRAY_KINDS:
            raise ModelFormatError(
                self.path,
                f"array {key!r} has dtype {dtype}; a model file holds only arrays of "
                "numbers (bool, int, uint, float, complex)",
            )

    def _check_size(self, key: str, shape: tuple[int, ...], dtype: numpy.dtype, limit: int):
        self._check_dtype(key, dtype)
        nbytes = int(numpy.prod(shape, dtype=object)) * dtype.itemsize  # host
        if nbytes > limit:
            raise ValueError(f"array {key!r} claims {nbytes} bytes, more than the file can hold")


def _link_kind(link: Any) -> str:
    """What an HDF5 link other than a hard link is, for an error."""
    if isinstance(link, h5py.ExternalLink):
        return f"an external link to {link.path!r} in the file {link.filename!r}"
    if isinstance(link, h5py.SoftLink):
        return f"a soft link to {link.path!r}"
    return f"a link of kind {type(link).__name__}"


def _builtin_filters() -> dict[int, str]:
    """{id: name} of the HDF5 filters that HDF5 and h5py implement themselves. A dataset
    naming any other filter would make HDF5 load a plugin (a shared library) from
    HDF5_PLUGIN_PATH when it is read."""
    z = h5py.h5z
    return {
        z.FILTER_DEFLATE: "deflate",
        z.FILTER_SHUFFLE: "shuffle",
        z.FILTER_FLETCHER32: "fletcher32",
        z.FILTER_SZIP: "szip",
        z.FILTER_NBIT: "nbit",
        z.FILTER_SCALEOFFSET: "scaleoffset",
        z.FILTER_LZF: "lzf",
    }


def _plugin_filter(filters: list[int]) -> str | None:
    """The first filter of `filters` that HDF5 would have to load as a plugin, as an error
    names it ("the HDF5 filter 32015, a plugin"); None when every one is built in. A
    built-in filter is one of `_builtin_filters` that this build of HDF5 has registered
    (`h5z.filter_avail`): a build without SZIP, say, would look for filter 4 on
    HDF5_PLUGIN_PATH too."""
    builtin = _builtin_filters()
    for number in filters:
        if number not in builtin:
            return f"the HDF5 filter {number}, a plugin"
        if not h5py.h5z.filter_avail(number):
            name = builtin[number]
            return f"the HDF5 filter {number} ({name}), which this build of HDF5 lacks: a plugin"
    return None


class HDF5Reader(Reader):
    """A Reader over an HDF5 file opened read-only with h5py (groups, attributes, datasets).

    Opening it walks the whole file and refuses, before any array is read, what would
    read bytes from outside the file (links, external storage, virtual datasets) or
    load a filter plugin, and arrays whose declared sizes the file cannot hold (one by
    one and all together). A `sealed` file (written by `write_hdf5`) must also hold its
    arrays as `write_hdf5` does: contiguous and unfiltered.
    """

    kind = "hdf5"
    objects = "variable-length data (strings or objects), not numbers"

    def __init__(self, path: str, *, sealed: bool = False):
        super().__init__(path)
        if h5py is None:
            raise ImportError(
                f"{path} is an HDF5 file; reading it needs h5py, but {H5PY_MISSING}: "
                "pip install h5py"
            )
        self.sealed = sealed
        self._datasets: dict[str, Any] = {}
        self._file = h5py.File(path, "r")
        self._groups: dict[str, Any] = {"": self._file}
        try:
            problem = self._file.visititems_links(self._visit)
            if problem is not None:
                raise ModelFormatError(path, problem)
            self._check_total({key: self._declared_bytes(key) for key in self._datasets})
        except BaseException:
            self._file.close()
            raise

    def _visit(self, name: str, link: Any) -> str | None:
        """Record the group or dataset a hard link names; for anything else, return what
        is wrong with it, which ends the walk (raising inside h5py's walk is not safe)."""
        if not isinstance(link, h5py.HardLink):
            return (
                f"{name!r} is {_link_kind(link)}; a model file holds its groups and arrays "
                "themselves, never links"
            )
        node = self._file[name]
        if isinstance(node, h5py.Dataset):
            self._datasets[name] = node
        elif isinstance(node, h5py.Group):
            self._groups[name] = node
        else:
            what = "a named HDF5 datatype" if isinstance(node, h5py.Datatype) else "an object"
            return f"{name!r} is {what}; a model file holds only groups and arrays (datasets)"
        return None

    def _check_layout(self, key: str, plist: Any) -> None:
        """Refuse a dataset whose bytes are not in the file itself (external storage, a
        virtual dataset), or that needs a filter plugin; in a sealed file, anything but
        the contiguous, unfiltered datasets `write_hdf5` writes."""
        d = h5py.h5d
        layout = plist.get_layout()
        if layout == d.VIRTUAL:
            source = plist.get_virtual_filename(0) if plist.get_virtual_count() else None
            where = "a virtual dataset" + (
                "" if source is None else f", whose first source file is {source!r}"
            )
        elif plist.get_external_count():
            where = f"external storage, in the file {os.fsdecode(plist.get_external(0)[0])!r}"
        else:
            where = None
        if where is not None:
            raise ModelFormatError(
                self.path,
                f"array {key!r} is stored outside the file ({where}); a model file holds "
                "its own data",
            )
        layouts = {d.COMPACT: "compact", d.CONTIGUOUS: "contiguous", d.CHUNKED: "chunked"}
        if layout not in layouts:
            raise ModelFormatError(
                self.path, f"array {key!r} has an unknown HDF5 layout ({layout})"
            )
        filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
        if self.sealed and (layout != d.CONTIGUOUS or filters):
            how = layouts[layout] + (" and filtered" if filters else "")
            raise ModelFormatError(
                self.path,
                f"array {key!r} is stored {how}, but convnet writes every array contiguous "
                "and unfiltered",
            )
        plugin = _plugin_filter(filters)
        if plugin is not None:
            available = [name for n, name in _builtin_filters().items() if h5py.h5z.filter_avail(n)]
            raise ModelFormatError(
                self.path,
                f"array {key!r} needs {plugin}; only the filters built into HDF5 and h5py "
                f"are read ({', '.join(available)})",
            )

    def _declared_bytes(self, key: str) -> int:
        """The bytes the dataset at `key` claims, once its storage is checked: held in
        the file, and no more than the file's size (`_expansion_limit` of it when
        filtered); unfiltered, no more than the bytes the file stores for it (what was
        never written would read as a fill value, from no bytes at all)."""
        dataset = self._datasets[key]
        if dataset.shape is None:
            raise ModelFormatError(
                self.path,
                f"array {key!r} is an empty HDF5 dataset (it has no shape), not an array",
            )
        plist = dataset.id.get_create_plist()
        self._check_layout(key, plist)
        # the size in the file of one element, without converting the type to NumPy's
        nbytes = int(numpy.prod(dataset.shape, dtype=object)) * dataset.id.get_type().get_size()
        filtered = plist.get_nfilters() > 0
        limit = _expansion_limit(self.file_size) if filtered else self.file_size
        if nbytes > limit:
            raise ModelFormatError(
                self.path,
                f"array {key!r} claims {nbytes} bytes, more than a file of {self.file_size} "
                f"bytes can hold (at most {limit})",
            )
        stored = dataset.id.get_storage_size()
        if not filtered and stored < nbytes:
            raise ModelFormatError(
                self.path, f"array {key!r} claims {nbytes} bytes, but the file holds {stored}"
            )
        return nbytes

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
        shape, dtype = self.info(key)
        self._check_dtype(key, dtype)  # its size was checked when the file was opened
        array = numpy.asarray(self._datasets[key][()])
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
                what = "a directory entry" if member.is_dir() else "not a .npy array"
                raise ModelFormatError(
                    path,
                    f"the NPZ archive holds {member.filename!r}, {what}; a model file holds "
                    "only .npy members",
                )
            if member.file_size > _expansion_limit(self.file_size):
                raise ValueError(f"member {member.filename!r} claims {member.file_size} bytes")
            self._members[member.filename[: -len(".npy")]] = member
        self._check_total({member.filename: member.file_size for member in self._zip.infolist()})
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
                    raise ModelFormatError(
                        self.path, f"member {key!r} has unsupported .npy version {version}"
                    )
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
                raise ModelFormatError(self.path, f"member {key!r} holds a string array")
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
        self._check_dtype(key, self._header(key)[1])
        return self._load(key)


def open_reader(path: str, kind: str) -> Reader:
    """A reader for `path`, of a `kind` given by `container_of` (a sealed file is checked)."""
    if kind == "sealed-hdf5":
        check_seal(path)
        return HDF5Reader(path, sealed=True)
    return HDF5Reader(path) if kind == "hdf5" else NPZReader(path)
