"""Atomic file replacement: a crash mid-save never leaves a half-written model behind.

The new content goes to a temporary file in the target's directory (same filesystem, so
the final rename is atomic), is flushed and fsync'ed, and only then renamed over the
target with `os.replace`. Until that rename the previous file stays untouched.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator

__all__ = ["atomic_path"]


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _file_mode(target: str) -> int:
    """The target's current permissions, or the default for a new file under the umask."""
    try:
        return os.stat(target).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path beside `path`; on success it replaces `path` atomically.

    The caller writes and closes the temporary file inside the `with` block. On an
    exception the temporary file is removed and `path` is left as it was.
    """
    target = os.path.abspath(os.fspath(path))
    directory, name = os.path.split(target)
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"cannot save {os.fspath(path)}: the folder {directory} does not exist"
        )
    fd, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    os.close(fd)
    os.chmod(temporary, _file_mode(target))  # mkstemp makes 0600; use what open() would
    try:
        yield temporary
        _fsync_file(temporary)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise
    _fsync_directory(directory)
