"""Fixtures for the convnet-gui tests.

- `xp`: numpy, or cupy when CONVNET_TEST_DEVICE=cuda (as in every package).
- `mnist_test`: the bundled MNIST test split, (images uint8 (N, 28, 28), labels (N,)), read
  straight from data/mnist/ (convnet-data is not a dependency of this package).
- `display`: a private Xvfb display for the `gui` tests, set as DISPLAY; the tests skip with
  a message when Xvfb is not installed.
- `mnist_round_trip`: 500 MNIST test digits drawn large, dark on light, and passed back
  through `to_mnist`.
"""

from __future__ import annotations

import gzip
import os
import pathlib

import numpy
import pytest
from convnet_core import backend
from convnet_gui.preprocess import to_mnist
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parents[3]
MNIST_DIR = REPO / "data" / "mnist"


@pytest.fixture(scope="session")
def xp():
    if os.environ.get("CONVNET_TEST_DEVICE") == "cuda":
        return backend.array_module("cuda")
    return numpy


def read_idx(path: pathlib.Path) -> numpy.ndarray:
    """An IDX file (gzipped): big-endian magic 0x0000TTDD, DD dims as uint32, then uint8 data."""
    raw = gzip.decompress(path.read_bytes())
    if raw[2] != 0x08:
        raise ValueError(f"{path}: expected unsigned-byte IDX data (type 0x08), got {raw[2]:#x}")
    ndim = raw[3]
    dims = numpy.frombuffer(raw, dtype=">u4", count=ndim, offset=4)
    return numpy.frombuffer(raw, dtype=numpy.uint8, offset=4 + 4 * ndim).reshape(dims)


@pytest.fixture(scope="session")
def mnist_test() -> tuple[numpy.ndarray, numpy.ndarray]:
    images = read_idx(MNIST_DIR / "t10k-images-idx3-ubyte.gz")  # (10000, 28, 28)
    labels = read_idx(MNIST_DIR / "t10k-labels-idx1-ubyte.gz")  # (10000,)
    return images, labels


@pytest.fixture(scope="session")
def display():
    from convnet_gui.testing import XvfbUnavailable, start_xvfb, stop_xvfb

    try:
        name, process = start_xvfb()
    except XvfbUnavailable as error:
        pytest.skip(f"GUI tests need a virtual display: {error}")
    previous = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = name
    yield name
    stop_xvfb(process)
    if previous is None:
        os.environ.pop("DISPLAY", None)
    else:
        os.environ["DISPLAY"] = previous


def as_large_drawing(digit: numpy.ndarray, rng: numpy.random.Generator) -> Image.Image:
    """An MNIST digit (28, 28), white on black, as a large dark-on-light drawing on a canvas."""
    scale = rng.uniform(6, 16)
    side = round(28 * scale)
    big = Image.fromarray(255 - digit).resize((side, side), Image.Resampling.BILINEAR)
    canvas_w, canvas_h = side + int(rng.integers(0, 200)), side + int(rng.integers(0, 200))
    canvas = Image.new("L", (canvas_w, canvas_h), 255)
    canvas.paste(
        big, (int(rng.integers(0, canvas_w - side + 1)), int(rng.integers(0, canvas_h - side + 1)))
    )
    return canvas


@pytest.fixture(scope="session")
def mnist_round_trip(mnist_test):
    """The first 500 MNIST test digits, drawn large and passed through to_mnist."""
    images, labels = mnist_test
    rng = numpy.random.default_rng(0)
    originals = images[:500].astype(numpy.float32) / 255  # (500, 28, 28)
    back = numpy.concatenate([to_mnist(as_large_drawing(d, rng)) for d in images[:500]])
    return originals, back[:, 0], labels[:500]
