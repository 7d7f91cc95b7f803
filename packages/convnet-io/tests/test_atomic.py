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


def test_failed_save_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    from convnet_core import layers as L
    from convnet_io import storage

    net = L.Sequential((L.Dense(2),))
    old = ({"W": numpy.ones((3, 2), "float32"), "b": numpy.zeros(2, "float32")},)
    path = tmp_path / "m.npz"
    convnet_io.save(path, layer=net, params=old, input_shape=(3,))
    mode = os.stat(path).st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # as open() would have made it, not mkstemp's 0600

    def broken_writer(file, attributes, arrays):
        with open(file, "wb") as f:
            f.write(b"PK\x03\x04 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(storage, "write_npz", broken_writer)
    new = ({"W": numpy.full((3, 2), 7, "float32"), "b": numpy.zeros(2, "float32")},)
    with pytest.raises(OSError, match="disk full"):
        convnet_io.save(path, layer=net, params=new, input_shape=(3,))
    assert os.listdir(tmp_path) == ["m.npz"]
    assert (convnet_io.load(path, parts=True).params[0]["W"] == 1).all()


def test_saving_into_a_missing_folder_names_the_target(tmp_path):
    from convnet_core import layers as L

    net = L.Sequential((L.Dense(2),))
    params = ({"W": numpy.ones((3, 2), "float32"), "b": numpy.zeros(2, "float32")},)
    target = tmp_path / "no-such-folder" / "model.h5"
    with pytest.raises(FileNotFoundError, match=r"cannot save .*model\.h5.*does not exist"):
        convnet_io.save(target, layer=net, params=params, input_shape=(3,))
    assert not (tmp_path / "no-such-folder").exists()
