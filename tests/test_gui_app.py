"""End to end: apps/mnist_gui.py as a process on a virtual display, drawn on with xdotool.

The screenshot of the window after drawing is kept as artifacts/mnist_gui.png. The tests of
the program's errors need no display and run with the other workspace tests.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
APP = ROOT / "apps" / "mnist_gui.py"
MODEL = ROOT / "packages" / "convnet-gui" / "tests" / "data" / "reference_mnist.h5"
ARTIFACTS = ROOT / "artifacts"
TOP_BAR = (0x1E, 0x88, 0xE5)  # the colour of the most probable digit's bar


@pytest.fixture(scope="module")
def display():
    from convnet_gui.testing import XvfbUnavailable, start_xvfb, stop_xvfb

    if shutil.which("xdotool") is None:
        pytest.skip("the end-to-end GUI test needs xdotool (apt-get install xdotool)")
    try:
        name, server = start_xvfb()
    except XvfbUnavailable as error:
        pytest.skip(f"the end-to-end GUI test needs a virtual display: {error}")
    yield name
    stop_xvfb(server)


def screenshot(display: str):
    from PIL import ImageGrab

    return ImageGrab.grab(xdisplay=display).convert("RGB")


def xdotool(display: str, *args: str) -> str:
    result = subprocess.run(
        ["xdotool", *args],
        env={**os.environ, "DISPLAY": display},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout


def start_app(display: str, *options: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(APP), *options],
        cwd=ROOT,
        env={**os.environ, "DISPLAY": display},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_canvas(display: str, process: subprocess.Popen, timeout: float = 60) -> tuple:
    """Wait for the window, then find the drawing canvas: the only large pure white area."""
    xdotool(display, "search", "--sync", "--onlyvisible", "--name", "draw a digit")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        pixels = numpy.asarray(screenshot(display))
        white = (pixels == 255).all(axis=2)  # (H, W); button bevels have thin white lines
        cols = numpy.flatnonzero(white.sum(axis=0) > 100)  # only the canvas is that tall
        if cols.size:
            left, right = cols[0], cols[-1] + 1
            rows = numpy.flatnonzero(white[:, left:right].mean(axis=1) > 0.9)
        if cols.size and rows.size:
            top, bottom = rows[0], rows[-1] + 1
            if bottom - top > 100 and abs((bottom - top) - (right - left)) <= 2:
                return int(left), int(top), int(right - left)
        time.sleep(0.2)
    raise AssertionError("the drawing canvas did not appear")


def top_bar_pixels(pixels: numpy.ndarray) -> int:
    """How many pixels have the colour of the most probable digit's bar."""
    return int((pixels == TOP_BAR).all(axis=2).sum())


def wait_for_prediction(display: str, process: subprocess.Popen, timeout: float = 30):
    """Screenshots until the bar of a predicted digit shows (or `timeout`); the last one."""
    deadline = time.monotonic() + timeout
    while True:
        time.sleep(0.5)
        shot = screenshot(display)
        if top_bar_pixels(numpy.asarray(shot)) > 50 or time.monotonic() > deadline:
            return shot
        assert process.poll() is None, process.communicate()


def stop(process: subprocess.Popen) -> tuple[str, str]:
    process.terminate()
    try:
        return process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()


@pytest.mark.gui
def test_drawing_in_the_app_shows_a_prediction(display):
    process = start_app(display, "--model", str(MODEL))
    try:
        left, top, side = wait_for_canvas(display, process)
        # A "7": a top bar, then a diagonal down to the left, in fractions of the canvas.
        path = [(0.25, 0.2), (0.75, 0.2), (0.55, 0.5), (0.4, 0.85)]
        points = [(left + round(fx * side), top + round(fy * side)) for fx, fy in path]
        moves: list[str] = ["mousemove", str(points[0][0]), str(points[0][1]), "mousedown", "1"]
        for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
            for t in numpy.linspace(0, 1, 11)[1:]:
                x, y = round(x0 + (x1 - x0) * t), round(y0 + (y1 - y0) * t)
                moves += ["mousemove", str(x), str(y), "sleep", "0.01"]
        moves += ["mouseup", "1"]
        xdotool(display, *moves)
        shot = wait_for_prediction(display, process)
        ARTIFACTS.mkdir(exist_ok=True)
        shot.save(ARTIFACTS / "mnist_gui.png")
        assert process.poll() is None, process.communicate()

        pixels = numpy.asarray(shot)
        assert pixels.std() > 20  # not a blank screen
        canvas = pixels[top : top + side, left : left + side]
        for x, y in points:  # the stroke is on the canvas where the pointer went
            assert (canvas[y - top, x - left] < 64).all(), (x, y)
        assert (canvas.min(axis=2) > 200).mean() > 0.5  # and the canvas is still mostly white
        # A prediction is shown: the bar of the most probable digit is drawn in its colour.
        assert top_bar_pixels(pixels) > 50
    finally:
        _, stderr = stop(process)
    assert "Traceback" not in stderr, stderr


@pytest.mark.gui
def test_without_a_model_the_app_stays_open_and_says_so(display, tmp_path):
    missing = tmp_path / "none.h5"
    process = start_app(display, "--model", str(missing))
    try:
        wait_for_canvas(display, process)
        time.sleep(0.5)
        assert process.poll() is None
    finally:
        _, stderr = stop(process)
    assert f"No model at {missing}" in stderr
    assert "train one first with: uv run apps/train_mnist.py" in stderr
    assert "Traceback" not in stderr, stderr


@pytest.mark.gui
def test_ctrl_c_closes_the_app_at_once(display):
    """SIGINT ends the program within a second even when no X event comes (Tk's event loop
    wakes up regularly so that Python runs its signal handler)."""
    process = start_app(display, "--model", str(MODEL))
    try:
        wait_for_canvas(display, process)
        time.sleep(0.5)  # idle: no event is pending
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=2)
    finally:
        if process.poll() is None:
            stop(process)
    assert process.returncode == 130
    assert stderr.strip() == "mnist_gui.py: error: interrupted"  # click starts a new line


def run_app_without_display(*options: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "DISPLAY"}
    return subprocess.run(
        [sys.executable, str(APP), *options],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_damaged_model_file_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"this is not a model")
    result = run_app_without_display("--model", str(bad))
    assert result.returncode == 1
    assert result.stderr.startswith(f"mnist_gui.py: error: cannot use the model {bad} on cpu: ")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("built_for", "units", "reason"),
    [
        ((1, 28, 28), 3, "the network gives outputs of shape (3,) for one drawing"),
        ((3, 32, 32), 10, "the network was built for inputs of shape (3, 32, 32)"),
    ],
    ids=["three-outputs", "built-for-cifar"],
)
def test_a_model_of_other_shapes_is_a_one_line_error(tmp_path, built_for, units, reason):
    import convnet_core as cn
    from convnet_core import layers as L

    model = cn.Model([L.Flatten(), L.Dense(units)], seed=0)
    model.build(built_for)
    path = tmp_path / "other.h5"
    model.save(path)
    result = run_app_without_display("--model", str(path))
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"mnist_gui.py: error: cannot use the model {path} on cpu: {reason}"
    ), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_no_display_is_a_one_line_error():
    result = run_app_without_display("--model", str(MODEL))
    assert result.returncode == 1
    assert result.stderr.startswith("mnist_gui.py: error: cannot open a window: "), result.stderr
    assert "Traceback" not in result.stderr
