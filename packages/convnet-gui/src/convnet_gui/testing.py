"""Helpers for testing the app without a screen: a virtual X display (Xvfb).

    with virtual_display() as display:      # ":5", say; DISPLAY is not touched
        ...                                   # run Tk or a process with DISPLAY=display

`Xvfb -displayfd FD` picks a free display number itself and writes it to FD once the
server accepts connections, so no number is guessed and no sleep is needed.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
import time
from collections.abc import Iterator

__all__ = ["XvfbUnavailable", "start_xvfb", "stop_xvfb", "virtual_display"]


class XvfbUnavailable(RuntimeError):
    """Xvfb is not installed, or did not start."""


def start_xvfb(screen: str = "1280x1024x24", timeout: float = 20.0) -> tuple[str, subprocess.Popen]:
    """Start `Xvfb -displayfd` on a free display; return (":N", the server process).

    Raises XvfbUnavailable when the program is missing or does not report a display within
    `timeout` seconds (with what it printed on stderr).
    """
    program = shutil.which("Xvfb")
    if program is None:
        raise XvfbUnavailable("Xvfb is not installed (Debian/Ubuntu: apt-get install xvfb)")
    read_end, write_end = os.pipe()
    try:
        process = subprocess.Popen(
            [program, "-displayfd", str(write_end), "-screen", "0", screen, "-nolisten", "tcp"],
            pass_fds=(write_end,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    finally:
        os.close(write_end)
    try:
        number = _read_display_number(read_end, process, timeout)
    except XvfbUnavailable:
        stop_xvfb(process)
        raise
    finally:
        os.close(read_end)
    return f":{number}", process


def _read_display_number(fd: int, process: subprocess.Popen, timeout: float) -> int:
    """Read the line "N\\n" that Xvfb writes to its -displayfd once it is ready."""
    deadline = time.monotonic() + timeout
    text = b""
    while not text.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise XvfbUnavailable(f"Xvfb reported no display within {timeout:.0f} s")
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 64)
        if not chunk:  # the server exited before reporting a display
            process.wait(timeout=5)
            stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise XvfbUnavailable(
                f"Xvfb exited with status {process.returncode}: {stderr.strip()[-500:]}"
            )
        text += chunk
    return int(text.strip())


def stop_xvfb(process: subprocess.Popen) -> None:
    """Terminate the server (kill it if it does not stop within 5 s)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stderr:
        process.stderr.close()


@contextlib.contextmanager
def virtual_display(screen: str = "1280x1024x24") -> Iterator[str]:
    """A running Xvfb for the duration of the block; yields its display name (":N")."""
    display, process = start_xvfb(screen)
    try:
        yield display
    finally:
        stop_xvfb(process)
