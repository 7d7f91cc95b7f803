"""Downloading files into a cache, with a checksum and no partial files left behind.

`download(url, checksum, cache_dir)` streams the file into a temporary file beside the
target, hashing as it goes, shows a tqdm progress bar, and renames the temporary file into
place only when it is complete and its checksum matches. An interrupted or corrupt download
therefore never replaces a good file, and never leaves a half-written one under the
target's name.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import tempfile
import urllib.error
import urllib.parse
import urllib.request

from tqdm.auto import tqdm

__all__ = ["ChecksumError", "DownloadError", "download", "file_digest", "parse_checksum"]

_CHUNK = 1 << 20
_ALGORITHMS = ("sha256", "md5", "sha1", "sha512")


class DownloadError(OSError):
    """A download that could not be completed: unreachable, cut short, or a wrong checksum."""


class ChecksumError(ValueError):
    """A file whose checksum differs from the expected one."""


def parse_checksum(checksum: str) -> tuple[str, str]:
    """("sha256", hex digest) from "sha256:<hex>" or "md5:<hex>".

    A bare hex digest is taken as SHA-256 when it has 64 digits and MD5 when it has 32.
    """
    algorithm, sep, digest = checksum.partition(":")
    if not sep:
        algorithm, digest = {64: "sha256", 32: "md5"}.get(len(checksum), ""), checksum
    algorithm, digest = algorithm.lower(), digest.strip().lower()
    if algorithm not in _ALGORITHMS:
        raise ValueError(
            f"checksum {checksum!r}: expected 'sha256:<hex>' or 'md5:<hex>' "
            f"(algorithms: {', '.join(_ALGORITHMS)})"
        )
    expected_length = hashlib.new(algorithm).digest_size * 2
    if len(digest) != expected_length or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(
            f"checksum {checksum!r}: a {algorithm} digest has {expected_length} hex digits"
        )
    return algorithm, digest


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """The hex digest of the file at `path` under `algorithm` (read in 1 MiB chunks)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _filename_of(url: str) -> str:
    name = pathlib.PurePosixPath(urllib.parse.urlparse(url).path).name
    if not name:
        raise ValueError(f"cannot tell a file name from {url!r}: pass filename=")
    return name


def download(
    url: str,
    checksum: str,
    cache_dir: str | os.PathLike,
    *,
    filename: str | None = None,
    timeout: float = 60.0,
    progress: bool = True,
) -> pathlib.Path:
    """Download `url` into `cache_dir` and return the file's path.

    `checksum` is "sha256:<hex>" or "md5:<hex>" (see `parse_checksum`). When the file is
    already there with the right checksum nothing is downloaded. Otherwise the data goes to
    a temporary file in `cache_dir`, hashed while it streams, and is renamed over the
    target only when complete and correct. Raises DownloadError when the server cannot be
    reached, answers with an error, sends fewer bytes than announced, or sends data with
    the wrong checksum; the temporary file is removed and an existing target left as it
    was.
    """
    algorithm, expected = parse_checksum(checksum)
    cache_dir = pathlib.Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / (filename or _filename_of(url))
    if target.is_file() and file_digest(target, algorithm) == expected:
        return target

    descriptor, temp_name = tempfile.mkstemp(
        dir=cache_dir, prefix=f".{target.name}.", suffix=".part"
    )
    temp = pathlib.Path(temp_name)
    try:
        with os.fdopen(descriptor, "wb") as out:
            actual = _stream(url, out, algorithm, target.name, timeout=timeout, progress=progress)
        if actual != expected:
            raise DownloadError(
                f"{url}: {algorithm} checksum mismatch: expected {expected}, got {actual}; "
                f"{target} was not changed"
            )
        os.chmod(temp, 0o644)  # mkstemp makes it private; a cached data file is not
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    return target


def _stream(url: str, out, algorithm: str, name: str, *, timeout: float, progress: bool) -> str:
    """Copy the body at `url` into the open file `out`; return its hex digest."""
    digest = hashlib.new(algorithm)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            received = 0
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=name,
                disable=not progress,
                leave=False,
            ) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as error:
        message = f"{url}: the server answered HTTP {error.code} {error.reason}"
        raise DownloadError(message) from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DownloadError(f"{url}: download failed ({reason})") from None
    except Exception as error:  # http.client.IncompleteRead and other protocol errors
        raise DownloadError(f"{url}: download failed ({type(error).__name__}: {error})") from None
    if total is not None and received != total:
        raise DownloadError(f"{url}: connection cut after {received} of {total} bytes")
    return digest.hexdigest()
