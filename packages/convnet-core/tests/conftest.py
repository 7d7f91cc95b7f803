"""Test fixtures shared by the convnet-core tests.

The `xp` fixture is numpy, or cupy when CONVNET_TEST_DEVICE=cuda (the tests-cuda session);
there, a missing GPU is an error, never a skip.
"""

import os

import numpy
import pytest
from convnet_core import backend


@pytest.fixture(scope="session")
def xp():
    if os.environ.get("CONVNET_TEST_DEVICE") == "cuda":
        return backend.array_module("cuda")
    return numpy
