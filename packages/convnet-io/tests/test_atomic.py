"""A writer killed in the middle of a save leaves the previous file whole."""

import glob
import os
import signal
import subprocess
import sys
import textwrap
import time

import convnet_io
import numpy
import pytest

WRITER = textwrap.dedent(
    """
    import sys, numpy, convnet_io
    from convnet_core import layers as L
    path = sys.argv[1]
    net = L.Sequential((L.Dense(2000),))
    for k in range(1, 10**6):  # each save holds one value everywhere, and says which
        params = ({"W": numpy.full((1000, 2000), k, "float32"),
                   "b": numpy.full(2000, k, "float32")},)
        convnet_io.save(path, layer=net, params=params, input_shape=(1000,),
                        metadata={"iteration": k})
    """
)


def wait_for(predicate, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.002)
    raise AssertionError("timed out")


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".h5", ".npz"])
def test_killed_writer_leaves_the_previous_file_loadable(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    temporaries = str(tmp_path / f".model{suffix}.*.tmp")
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(path)])
    try:
        wait_for(path.exists)
        for _ in range(3):
            # kill while a newer version is being written beside the file
            wait_for(lambda: glob.glob(temporaries))
            time.sleep(numpy.random.default_rng().uniform(0, 0.05))
            os.kill(process.pid, signal.SIGSTOP)  # freeze it, wherever it is
            saved = convnet_io.load(path, parts=True)
            k = saved.metadata["iteration"]
            assert (saved.params[0]["W"] == k).all() and (saved.params[0]["b"] == k).all()
            os.kill(process.pid, signal.SIGCONT)
        wait_for(lambda: glob.glob(temporaries))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        saved = convnet_io.load(path, parts=True)
        k = saved.metadata["iteration"]
        assert k >= 1
        assert (saved.params[0]["W"] == k).all() and (saved.params[0]["b"] == k).all()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
