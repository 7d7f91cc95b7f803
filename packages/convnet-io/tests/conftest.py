"""Fixtures shared by the convnet-io tests.

The `xp` fixture is numpy, or cupy when CONVNET_TEST_DEVICE=cuda (the tests-cuda session);
there, a missing GPU is an error, never a skip. `make_net` builds small networks holding
every kind of layer, with random (not initial) parameters and state.
"""

import os

import numpy
import pytest
from convnet_core import backend, init
from convnet_io_helpers import NETS, randomize


@pytest.fixture(scope="session")
def xp():
    if os.environ.get("CONVNET_TEST_DEVICE") == "cuda":
        return backend.array_module("cuda")
    return numpy


@pytest.fixture(params=NETS, ids=[name for name, _, _ in NETS])
def net_parts(request):
    """(network, params, state, input_shape) with random params and state."""
    _, net, shape = request.param
    params, state = init(net, shape, rng=0)
    params, state = randomize(params, state, seed=1)
    return net, params, state, shape
