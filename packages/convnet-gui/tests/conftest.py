"""Fixtures for the convnet-gui tests.

- `xp`: numpy, or cupy when CONVNET_TEST_DEVICE=cuda (as in every package).
- `mnist_test`: the bundled MNIST test split, (images uint8 (N, 28, 28), labels (N,)), read
  straight from data/mnist/ (convnet-data is not a dependency of this package).
- `display`: a private Xvfb display for the `gui` tests, set as DISPLAY; the tests skip with
  a message when Xvfb is not installed.
- `reference_model`: a small trained CNN (see make_reference_model.py) as a predict function.
"""

from __future__ import annotations

import gzip
import os
import pathlib

import numpy
import pytest
from convnet_core import backend

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
