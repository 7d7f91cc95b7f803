"""download(): against an HTTP server on 127.0.0.1 started by the test."""

from __future__ import annotations

import hashlib
import os
import socket
import stat

import pytest
from convnet_data import DownloadError, download, file_digest
from convnet_data.download import parse_checksum

PAYLOAD = bytes(range(256)) * 4099  # about 1 MiB, not a multiple of the read size


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


def test_good_file_is_downloaded_and_checked(http_server, tmp_path):
    http_server.files["/data/file.bin"] = PAYLOAD
    path = download(http_server.url("/data/file.bin"), sha256(PAYLOAD), tmp_path / "cache")
    assert path == tmp_path / "cache" / "file.bin"
    assert path.read_bytes() == PAYLOAD
    assert leftovers(tmp_path / "cache") == []


def test_md5_checksum_and_explicit_filename(http_server, tmp_path):
    http_server.files["/x"] = PAYLOAD
    md5 = "md5:" + hashlib.md5(PAYLOAD).hexdigest()
    path = download(http_server.url("/x"), md5, tmp_path, filename="named.bin")
    assert path.name == "named.bin" and path.read_bytes() == PAYLOAD


def test_cached_file_is_not_downloaded_again(http_server, tmp_path):
    http_server.files["/f.bin"] = PAYLOAD
    download(http_server.url("/f.bin"), sha256(PAYLOAD), tmp_path)
    download(http_server.url("/f.bin"), sha256(PAYLOAD), tmp_path)
    assert http_server.requests == ["/f.bin"]


def test_wrong_checksum_raises_and_keeps_the_previous_file(http_server, tmp_path):
    http_server.files["/f.bin"] = PAYLOAD
    previous = b"the previous, good version"
    (tmp_path / "f.bin").write_bytes(previous)
    with pytest.raises(DownloadError, match="checksum mismatch") as error:
        download(http_server.url("/f.bin"), sha256(b"what the file should hold"), tmp_path)
    assert "f.bin" in str(error.value)
    assert (tmp_path / "f.bin").read_bytes() == previous
    assert leftovers(tmp_path) == []


def test_connection_cut_halfway_leaves_no_partial_file(http_server, tmp_path):
    http_server.files["/f.bin"] = PAYLOAD
    previous = b"the previous, good version"
    (tmp_path / "f.bin").write_bytes(previous)
    with pytest.raises(DownloadError, match="f.bin"):
        download(http_server.url("/cut/f.bin"), sha256(PAYLOAD), tmp_path)
    assert (tmp_path / "f.bin").read_bytes() == previous
    assert leftovers(tmp_path) == []
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_cut_without_previous_file_leaves_nothing(http_server, tmp_path):
    http_server.files["/f.bin"] = PAYLOAD
    with pytest.raises(DownloadError):
        download(http_server.url("/cut/f.bin"), sha256(PAYLOAD), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_fewer_bytes_than_announced_is_refused_even_when_the_checksum_matches(
    http_server, tmp_path
):
    # /cut/ announces len(PAYLOAD) bytes and sends the first half; the checksum given is the
    # half's, so only the announced length tells that the file is incomplete
    half = PAYLOAD[: len(PAYLOAD) // 2]
    http_server.files["/f.bin"] = PAYLOAD
    with pytest.raises(DownloadError, match=r"cut after 524672 of 1049344 bytes"):
        download(http_server.url("/cut/f.bin"), sha256(half), tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_downloaded_file_is_readable_by_everyone(http_server, tmp_path):
    # the temporary file is created private (0o600); the cached file is an ordinary one
    http_server.files["/f.bin"] = PAYLOAD
    old_umask = os.umask(0o022)
    try:
        path = download(http_server.url("/f.bin"), sha256(PAYLOAD), tmp_path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_http_error_is_a_download_error(http_server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(http_server.url("/missing.bin"), sha256(b""), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_unreachable_server_is_a_download_error(tmp_path):
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DownloadError, match="download failed"):
        download(f"http://127.0.0.1:{port}/f.bin", sha256(b""), tmp_path, timeout=5)
    assert list(tmp_path.iterdir()) == []


def test_parse_checksum_forms():
    digest = hashlib.sha256(b"").hexdigest()
    assert parse_checksum(f"sha256:{digest}") == ("sha256", digest)
    assert parse_checksum(f"SHA256:{digest.upper()}") == ("sha256", digest)
    assert parse_checksum(digest) == ("sha256", digest)
    assert parse_checksum("d41d8cd98f00b204e9800998ecf8427e") == (
        "md5",
        "d41d8cd98f00b204e9800998ecf8427e",
    )
    for bad in ("crc32:1234", "sha256:abc", "md5:" + "g" * 32, "nonsense"):
        with pytest.raises(ValueError, match="checksum"):
            parse_checksum(bad)


def test_file_digest(tmp_path):
    (tmp_path / "f").write_bytes(PAYLOAD)
    assert file_digest(tmp_path / "f") == hashlib.sha256(PAYLOAD).hexdigest()
    assert file_digest(tmp_path / "f", "md5") == hashlib.md5(PAYLOAD).hexdigest()
