"""IDX files: round trips for every type and rank, and a clear error for every bad file."""

from __future__ import annotations

import gzip
import pathlib
import struct

import numpy as np
import pytest
from convnet_data import IDXFormatError, read_idx, write_idx
from convnet_data.idx import IDX_DTYPES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]
SHAPES = [(7,), (3, 5), (4, 3, 2), (2, 3, 4, 5)]


def sample_array(dtype, shape, seed=0):
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"rank{len(s)}")
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_round_trip(tmp_path, dtype, shape, suffix):
    array = sample_array(dtype, shape)
    path = tmp_path / f"a.idx{suffix}"
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype)
    assert back.shape == shape
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_layout_is_big_endian_with_the_type_code(tmp_path, dtype):
    array = sample_array(dtype, (2, 3), seed=1)
    write_idx(tmp_path / "a.idx", array)
    data = (tmp_path / "a.idx").read_bytes()
    code = {np.dtype(v).newbyteorder("="): k for k, v in IDX_DTYPES.items()}[np.dtype(dtype)]
    assert data[:4] == bytes([0, 0, code, 2])
    assert struct.unpack(">II", data[4:12]) == (2, 3)
    assert data[12:] == array.astype(np.dtype(dtype).newbyteorder(">")).tobytes()


def test_gzip_is_deterministic_and_detected_by_content(tmp_path):
    array = sample_array(np.uint8, (10, 4))
    write_idx(tmp_path / "a.gz", array)
    first = (tmp_path / "a.gz").read_bytes()
    write_idx(tmp_path / "a.gz", array)
    assert (tmp_path / "a.gz").read_bytes() == first
    (tmp_path / "renamed.idx").write_bytes(first)  # gzip data under a plain name
    np.testing.assert_array_equal(read_idx(tmp_path / "renamed.idx"), array)


def test_write_rejects_unsupported_dtypes(tmp_path):
    for array in (np.zeros(3, np.uint16), np.zeros(3, np.int64), np.zeros(3, bool)):
        with pytest.raises(ValueError, match=str(array.dtype)):
            write_idx(tmp_path / "a.idx", array)


def good_bytes(shape=(4, 3), dtype=np.int16) -> bytes:
    array = sample_array(dtype, shape)
    code = {np.dtype(v).newbyteorder("="): k for k, v in IDX_DTYPES.items()}[np.dtype(dtype)]
    header = struct.pack(f">HBB{len(shape)}I", 0, code, len(shape), *shape)
    return header + array.astype(np.dtype(dtype).newbyteorder(">")).tobytes()


BAD_FILES = {
    "truncated data": (good_bytes()[:-3], "truncated"),
    "truncated header": (good_bytes()[:9], "truncated header"),
    "too short": (b"\x00\x00", "too short"),
    "trailing bytes": (good_bytes() + b"\x00\x01", "2 trailing bytes"),
    "wrong magic": (b"\x12\x34" + good_bytes()[2:], "not an IDX file"),
    "unknown type code": (b"\x00\x00\x0a" + good_bytes()[3:], "unknown IDX type code 0x0A"),
    "dims disagree with length": (
        good_bytes()[:4] + struct.pack(">I", 5) + good_bytes()[8:],
        "truncated",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
def test_bad_file_gives_clear_error_naming_the_file(tmp_path, case, compress):
    data, message = BAD_FILES[case]
    path = tmp_path / ("bad.idx.gz" if compress else "bad.idx")
    path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
    with pytest.raises(IDXFormatError, match=message) as error:
        read_idx(path)
    assert str(path) in str(error.value)
    assert isinstance(error.value, ValueError)


def gz_of_good() -> bytes:
    return gzip.compress(good_bytes((30, 20), np.uint8), mtime=0)


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda d: d[: len(d) // 2], "truncated"),
        (lambda d: d[:-4], "truncated"),
        (lambda d: d[:20] + bytes([d[20] ^ 0xFF]) + d[21:], "corrupt gzip"),
        (lambda d: d[:-8] + bytes([d[-8] ^ 1]) + d[-7:], "corrupt gzip"),  # CRC-32
        (lambda d: d + b"junk", "trailing bytes after the end of the gzip stream"),
        (lambda d: d + d[:10], "truncated"),  # the start of a second member
    ],
    ids=["half", "no-trailer", "flipped-data", "bad-crc", "trailing", "partial-member"],
)
def test_corrupt_gzip_gives_clear_error(tmp_path, mangle, message):
    path = tmp_path / "bad.gz"
    path.write_bytes(mangle(gz_of_good()))
    with pytest.raises(IDXFormatError, match=message) as error:
        read_idx(path)
    assert str(path) in str(error.value)


def test_gz_name_without_gzip_data(tmp_path):
    path = tmp_path / "labels.gz"
    path.write_bytes(good_bytes())
    with pytest.raises(IDXFormatError, match="named .gz but not gzip"):
        read_idx(path)


def test_multi_member_gzip_reads_as_one_file(tmp_path):
    data = good_bytes((6, 5), np.uint8)
    path = tmp_path / "two.gz"
    path.write_bytes(gzip.compress(data[:17], mtime=0) + gzip.compress(data[17:], mtime=0))
    np.testing.assert_array_equal(read_idx(path), np.frombuffer(data[12:], np.uint8).reshape(6, 5))


# -- fuzzing: whatever the damage, only IDXFormatError comes out ------------------------

FUZZ_SOURCES = {
    "raw": good_bytes((5, 4, 3), np.int32),
    "gz": gzip.compress(good_bytes((6, 7), np.float32), mtime=0),
}


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    source=st.sampled_from(sorted(FUZZ_SOURCES)),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), max_size=4),
    cut=st.one_of(st.none(), st.integers(0, 10_000)),
)
def test_fuzzed_files_raise_only_idx_format_error(tmp_path, source, flips, cut):
    data = bytearray(FUZZ_SOURCES[source])
    for position, mask in flips:
        data[position % len(data)] ^= mask
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    path = pathlib.Path(tmp_path) / "fuzz.idx"
    path.write_bytes(bytes(data))
    try:
        array = read_idx(path)
    except IDXFormatError as error:
        assert str(path) in str(error)
    else:  # the damage left a valid file: it must read as that file says
        expected = decoded_by_the_format(bytes(data))
        assert array.dtype == expected.dtype
        assert array.shape == expected.shape
        np.testing.assert_array_equal(array, expected)


def decoded_by_the_format(data: bytes) -> np.ndarray:
    """The array that valid IDX bytes (raw or gzipped) hold, decoded straight from the
    format's definition: a 4-byte magic (0, 0, type code, rank), one big-endian uint32 per
    dimension, then exactly the big-endian values."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    zero, code, rank = struct.unpack(">HBB", data[:4])
    assert zero == 0
    shape = struct.unpack(f">{rank}I", data[4 : 4 + 4 * rank])
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    values = data[4 + 4 * rank :]
    assert len(values) == np.dtype(dtype).itemsize * int(np.prod(shape))
    return np.frombuffer(values, dtype).reshape(shape).astype(np.dtype(dtype).newbyteorder("="))


def test_a_truncated_file_says_how_many_bytes_it_needs_and_has(tmp_path):
    data = good_bytes((4, 3), np.int16)  # a 4-dimension header of 4 + 2*4 bytes, then 24 bytes
    path = tmp_path / "cut.idx"
    path.write_bytes(data[:-3])
    needed = len(data)
    with pytest.raises(IDXFormatError, match=rf"needs {needed} bytes, the file has {needed - 3}"):
        read_idx(path)
