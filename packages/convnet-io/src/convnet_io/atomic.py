"""Atomic file replacement: a crash mid-save never leaves a half-written model behind.

The new content goes to a temporary file in the target's directory (same filesystem, so
the final rename is atomic), is flushed and fsync'ed, and only then renamed over the
target with `os.replace`. Until that rename the previous file stays untouched.

What is replaced is the file the path names after following symbolic links: saving
through a link updates the file it points to, and the link stays a link. Only a regular
file is ever replaced. A directory, a device (such as /dev/null), a FIFO or a socket at
the path is refused before anything is written, and so is a path ending in a separator,
which names a folder. Errors name the path the caller gave, never the temporary file.

A process killed mid-save (kill -9, a power cut) cannot remove its temporary file. So
the temporary of a save to NAME is named `.NAME.<tag>-<pid>.XXXXXXXX.tmp`, where pid is
the saving process and tag identifies its machine and PID namespace, and each save to
NAME first removes the ones of its own machine and namespace whose process is gone: no
process could ever rename them into place. Any other is left alone: a live process may
still be writing it, and the processes of another machine cannot be checked.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import socket
import stat
import tempfile
from collections.abc import Iterator

__all__ = ["atomic_path", "file_kind", "resolve_target"]

#: What a path can be besides a regular file, as the errors describe it.
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
)


#: The most bytes of the target's name that a temporary's name repeats, leaving room for
#: the rest within the 255 bytes a file name may have.
_NAME_BYTES = 200


def _owner_tag() -> str:
    """8 hex digits naming this boot of this machine and this PID namespace: where this
    process's pid means this process. Temporaries with another tag are never judged by
    their pid. The boot's id tells apart machines that share a host name and the initial
    PID namespace (whose inode number is the same on every Linux machine) on a shared
    file system, and a pid from before a reboot."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:  # no /proc: no PID namespaces to tell apart
        namespace = 0
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as file:
            boot = file.read().strip()
    except OSError:
        boot = ""
    owner = f"{socket.gethostname()}\0{boot}\0{namespace}"
    return hashlib.sha256(owner.encode()).hexdigest()[:8]


def _temporary_start(name: str, tag: str) -> str:
    """How the name of a temporary file of a save to `name` starts, up to the pid:
    ".NAME.<tag>-" (NAME cut to _NAME_BYTES bytes)."""
    stem = os.fsdecode(os.fsencode(name)[:_NAME_BYTES])
    return f".{stem}.{tag}-"


def _process_exists(pid: int) -> bool:
    """Whether a process `pid` exists (on POSIX; os.kill(pid, 0) only asks)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # EPERM: it exists, another user's
        return True
    return True


def _remove_dead_temporaries(directory: str, name: str) -> None:
    """Remove the temporary files of saves to `name` in `directory` whose process, on this
    machine and in this PID namespace, is gone (see the module doc). Never raises."""
    if os.name != "posix" or not hasattr(os, "kill"):  # elsewhere os.kill may terminate
        return
    start = re.escape(_temporary_start(name, _owner_tag()))
    pattern = re.compile(start + r"([1-9][0-9]{0,9})\.[A-Za-z0-9_]+\.tmp")
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                match = pattern.fullmatch(entry.name)
                if match is None or not entry.is_file(follow_symlinks=False):
                    continue
                if not _process_exists(int(match[1])):
                    with contextlib.suppress(OSError):
                        os.remove(entry.path)
    except OSError:
        pass


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


def file_kind(mode: int) -> str:
    """What a path of `st_mode` `mode` is, when it is not a regular file ("a FIFO (named
    pipe)", "a directory", ...), as the errors of saving and loading name it."""
    for test, kind in _KINDS:
        if test(mode):
            return kind
    return "not a regular file"  # pragma: no cover - every kind POSIX has is listed


#: How HDF5's file driver reports a failed system call inside its own long message
#: ("file write failed: time = ..., errno = 28, error message = 'No space left on device',
#: buf = 0x..., ..."): the errno is all a reader needs of it.
_HDF5_ERRNO = re.compile(r"\berrno = (\d+)")


def _naming(error: OSError, shown: str, temporary: str | None, note: str = "") -> OSError:
    """`error` again (same type and errno) naming `shown`, the path the caller gave, where
    it named the temporary file; `note` is added to its description. An HDF5 error that
    carries a system errno in its text becomes that errno's plain OSError ("No space left
    on device")."""
    system = _HDF5_ERRNO.search(str(error))
    if system is not None:
        number = int(system.group(1))
        return OSError(number, os.strerror(number) + note, shown)
    if error.errno is not None and error.strerror:
        text = error.strerror
        if temporary is not None:
            text = text.replace(temporary, shown)
        try:
            return type(error)(error.errno, text + note, shown)
        except TypeError:  # pragma: no cover - an OSError subclass with its own signature
            return error
    text = str(error)
    if temporary is not None:
        text = text.replace(temporary, shown)
    try:
        return type(error)(f"cannot save {shown}: {text}{note}")
    except TypeError:  # pragma: no cover - an OSError subclass with its own signature
        return error


def resolve_target(path: str | bytes | os.PathLike) -> str:
    """The absolute path of the regular file that saving to `path` creates or replaces.

    Symbolic links are followed (the file a link points to is the one saved). Raises,
    naming `path`: ValueError for an empty path; IsADirectoryError for a directory or a
    path ending in a separator; FileNotFoundError when the folder is missing; OSError for a
    device, FIFO or socket; PermissionError for an existing file that may not be written
    (as `open(path, "w")` would). Nothing is created.
    """
    shown = os.fsdecode(path)
    if not shown:
        raise ValueError("cannot save to an empty path")
    separators = tuple(s for s in (os.sep, os.altsep) if s)
    if shown.endswith(separators) or os.path.basename(shown) in (".", ".."):
        raise IsADirectoryError(
            f"cannot save {shown}: the path names a folder; give the name of a file in it"
        )
    target = os.path.realpath(shown)
    try:
        mode: int | None = os.stat(target).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as error:  # a loop of links, a folder on the way that cannot be read
        raise _naming(error, shown, None) from None
    if mode is not None and not stat.S_ISREG(mode):
        kind = IsADirectoryError if stat.S_ISDIR(mode) else OSError
        raise kind(
            f"cannot save {shown}: it is {file_kind(mode)}, not a regular file; a save replaces "
            "the file at its path, so nothing was written"
        )
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot save {shown}: the folder {directory} does not exist")
    if mode is not None and not os.access(target, os.W_OK):
        raise PermissionError(errno.EACCES, "Permission denied (the file is read-only)", shown)
    return target


@contextlib.contextmanager
def atomic_path(path: str | bytes | os.PathLike) -> Iterator[str]:
    """Yield a temporary path beside the file `path` names; on success it replaces that
    file atomically.

    The caller writes and closes the temporary file inside the `with` block. On an
    exception the temporary file is removed and the file is left as it was; an OSError
    is raised again naming `path` (not the temporary file). See `resolve_target` for
    what may be saved to, checked before the temporary file is made.
    """
    shown = os.fsdecode(path)
    target = resolve_target(shown)
    directory, name = os.path.split(target)
    _remove_dead_temporaries(directory, name)
    prefix = f"{_temporary_start(name, _owner_tag())}{os.getpid()}."
    try:
        fd, temporary = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=directory)
    except OSError as error:
        note = f" (cannot create a file in the folder {directory})"
        raise _naming(error, shown, None, note) from None
    os.close(fd)
    try:
        try:
            yield temporary
            os.chmod(temporary, _file_mode(target))  # mkstemp makes 0600; use what open() would
            _fsync_file(temporary)
            os.replace(temporary, target)
        except OSError as error:
            raise _naming(error, shown, temporary) from error
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise
    _fsync_directory(directory)
