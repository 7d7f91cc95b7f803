"""Reading and writing IDX files, the format of MNIST and Fashion-MNIST.

An IDX file is a header followed by the raw array, all big-endian:

    bytes 0-1   zero
    byte  2     the element type: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
                0x0D float32, 0x0E float64
    byte  3     the number of dimensions d
    d x int32   the size of each dimension
    data        prod(sizes) elements in C order

`read_idx` accepts the file raw or gzipped (told apart by the content, not the name) and
checks every part of that layout, so that a truncated, corrupt or mislabeled file gives an
`IDXFormatError` naming the file and the problem instead of a wrong array.
"""

from __future__ import annotations

import gzip
import io
import os
import pathlib
import struct
import zlib

import numpy as np

__all__ = ["IDX_DTYPES", "IDXFormatError", "decompress_gzip", "parse_idx", "read_idx", "write_idx"]

#: IDX type code -> big-endian dtype of the stored elements
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODE_OF_KIND = {(dtype.kind, dtype.itemsize): code for code, dtype in IDX_DTYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"


class IDXFormatError(ValueError):
    """A file that is not a well-formed IDX file (or not a well-formed gzip of one)."""


def decompress_gzip(data: bytes, name: str) -> bytes:
    """The decompressed content of gzip `data` (every member); IDXFormatError when corrupt.

    zlib checks the CRC-32 and length stored at the end of each member, so flipped bits and
    truncation are caught here rather than showing up as wrong pixels.
    """
    pieces = []
    rest = data
    while rest:
        stream = zlib.decompressobj(wbits=31)  # 31: a gzip header and trailer are expected
        try:
            pieces.append(stream.decompress(rest))
            pieces.append(stream.flush())
        except zlib.error as error:
            raise IDXFormatError(f"{name}: corrupt gzip data ({error})") from None
        if not stream.eof:
            raise IDXFormatError(f"{name}: the gzip stream is truncated (no end of stream)")
        rest = stream.unused_data
        if rest and not rest.startswith(_GZIP_MAGIC):
            raise IDXFormatError(
                f"{name}: {len(rest)} trailing bytes after the end of the gzip stream"
            )
    return b"".join(pieces)


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """The array held by the IDX bytes `data` (already decompressed), in native byte order.

    `name` only labels the error messages. Raises IDXFormatError when the magic, the type
    code, the dimensions or the length do not fit together.
    """
    if len(data) < 4:
        raise IDXFormatError(f"{name}: {len(data)} bytes is too short for an IDX header")
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0:
        raise IDXFormatError(
            f"{name}: not an IDX file (magic {data[:4].hex()}: the first two bytes must be 0)"
        )
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise IDXFormatError(f"{name}: unknown IDX type code 0x{code:02X} (known: {known})")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise IDXFormatError(
            f"{name}: truncated header: {ndim} dimensions need {header_size} bytes, "
            f"the file has {len(data)}"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header_size])
    if any(size >= 2**31 for size in shape):
        raise IDXFormatError(f"{name}: dimension sizes {shape} do not fit a signed int32")
    dtype = IDX_DTYPES[code]
    count = 1
    for size in shape:
        count *= size
    expected = header_size + count * dtype.itemsize
    if len(data) < expected:
        raise IDXFormatError(
            f"{name}: truncated: shape {shape} of {dtype.name} needs {expected} bytes, "
            f"the file has {len(data)}"
        )
    if len(data) > expected:
        raise IDXFormatError(
            f"{name}: {len(data) - expected} trailing bytes after the data of shape {shape} "
            f"({expected} bytes expected)"
        )
    array = np.frombuffer(data, dtype=dtype, count=count, offset=header_size).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # a writable copy in native byte order


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array stored in the IDX file `path`, raw or gzipped, with its shape and dtype.

    A gzipped file is recognised by its first bytes, whatever its name. Raises
    IDXFormatError (a ValueError) naming the file for a truncated or corrupt gzip stream,
    a bad magic number, an unknown type code, or a length that does not match the
    dimensions (missing or trailing bytes).
    """
    path = pathlib.Path(path)
    data = path.read_bytes()
    name = str(path)
    if data.startswith(_GZIP_MAGIC):
        data = decompress_gzip(data, name)
    elif path.suffix == ".gz":
        raise IDXFormatError(f"{name}: named .gz but not gzip data (starts with {data[:4].hex()})")
    return parse_idx(data, name)


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of `array`: header (magic, one int32 per dim) then big-endian data."""
    array = np.asarray(array)
    code = _CODE_OF_KIND.get((array.dtype.kind, array.dtype.itemsize))
    if code is None:
        raise ValueError(
            f"IDX cannot store dtype {array.dtype}: use uint8, int8, int16, int32, "
            "float32 or float64"
        )
    if array.ndim > 255 or any(size >= 2**31 for size in array.shape):
        raise ValueError(f"IDX cannot store shape {array.shape} (at most 255 dims < 2**31)")
    header = struct.pack(f">HBB{array.ndim}I", 0, code, array.ndim, *array.shape)
    return header + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write `array` (uint8, int8, int16, int32, float32 or float64; any rank) to `path`.

    A name ending in .gz is gzipped deterministically (no file name, mtime 0), so the same
    array always gives the same bytes.
    """
    data = idx_bytes(array)
    path = pathlib.Path(path)
    if path.suffix == ".gz":
        buffer = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as gz:
            gz.write(data)
        data = buffer.getvalue()
    path.write_bytes(data)
