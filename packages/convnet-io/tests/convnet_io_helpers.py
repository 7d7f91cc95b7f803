"""Networks and checks shared by the convnet-io tests (a uniquely named module, so that
pytest runs over several packages never confuse it with another package's helpers)."""

import contextlib
import os
import socket
import stat
import threading

import numpy
from convnet_core import layers as L
from convnet_core import tree
from convnet_io import treedef


def randomize(params, state, seed):
    """Every leaf replaced by random numbers of its shape and dtype (variances positive)."""
    rng = numpy.random.default_rng(seed)

    def fill(leaf):
        return rng.normal(size=leaf.shape).astype(leaf.dtype)

    params = tree.map(fill, params)
    state = tree.map(lambda leaf: (numpy.abs(fill(leaf)) + 0.5).astype(leaf.dtype), state)
    return params, state


def every_layer_net():
    """A network using every built-in layer and both combinators, for (3, 10, 10) inputs."""
    return L.Sequential(
        (
            L.Conv2D(4, (3, 3)),
            L.BatchNorm2D(momentum=0.8, eps=1e-3),
            L.Activation("relu"),
            L.Residual(L.Sequential((L.Conv2D(4, (3, 3)), L.Activation("leaky_relu", 0.2)))),
            L.MaxPool2D((2, 2)),
            L.Residual(L.Conv2D(6, (1, 1)), shortcut=L.Conv2D(6, (1, 1), use_bias=False)),
            L.Activation("tanh"),
            L.AvgPool2D((2, 2), stride=1),
            L.Dropout(0.25),
            L.Conv2D(5, (2, 2), stride=2, padding="valid"),
            L.Activation("sigmoid"),
            L.Flatten(),
            L.Dense(8),
            L.Activation("gelu"),
            L.Dense(3, use_bias=False),
            L.Activation("softmax"),
        )
    )


#: (name, network, per-sample input shape): each layer alone, then everything together.
NETS = [
    ("conv", L.Sequential((L.Conv2D(3, (3, 3), stride=2, padding=1),)), (2, 7, 7)),
    ("batchnorm", L.Sequential((L.BatchNorm2D(),)), (3, 4, 4)),
    ("maxpool", L.Sequential((L.MaxPool2D((3, 3), stride=2),)), (2, 7, 7)),
    ("avgpool", L.Sequential((L.AvgPool2D((2, 2)),)), (2, 6, 6)),
    ("globalavgpool", L.Sequential((L.GlobalAvgPool2D(), L.Dense(2))), (3, 5, 5)),
    ("dense", L.Sequential((L.Flatten(), L.Dense(4, use_bias=False))), (2, 3, 3)),
    ("dropout", L.Sequential((L.Dropout(0.5),)), (2, 3, 3)),
    ("every-layer", every_layer_net(), (3, 10, 10)),
]


def assert_same_tree(got, want, *, exact_kinds=True):
    """Same structure (tuple/list/dict, key order) and bit-identical leaves of the same dtype.

    With exact_kinds=False a NumPy scalar and a 0-d array of the same value are taken as
    equal (a Model moves every leaf to its device as an array).
    """
    assert tree.structure(got) == tree.structure(want)
    if not exact_kinds:
        got, want = (tree.map(numpy.asarray, t) for t in (got, want))
    assert treedef.encode(got)[0] == treedef.encode(want)[0]  # tuple vs list, scalar kinds
    for a, b in zip(tree.leaves(got), tree.leaves(want), strict=True):
        assert type(a) is type(b)
        if isinstance(b, (numpy.ndarray, numpy.generic)):
            assert a.dtype == b.dtype and a.shape == b.shape
            assert a.tobytes() == b.tobytes()
        else:
            assert a == b


def our_net():
    """Every layer that PyTorch and ONNX share, for (2, 14, 14) inputs."""
    return L.Sequential(
        (
            L.Conv2D(4, (3, 3), padding="same"),
            L.BatchNorm2D(momentum=0.9, eps=1e-5),
            L.Activation("relu"),
            L.Residual(
                L.Sequential((L.Conv2D(4, (3, 3), padding=1), L.Activation("leaky_relu", 0.2))),
                shortcut=L.Conv2D(4, (1, 1), use_bias=False),
            ),
            L.MaxPool2D((2, 2)),
            L.Conv2D(6, (3, 3), stride=2, padding="valid"),
            L.Activation("tanh"),
            L.AvgPool2D((2, 2), stride=1),
            L.Dropout(0.5),
            L.Flatten(),
            L.Dense(8),
            L.Activation("gelu"),
            L.Dense(3, use_bias=False),
            L.Activation("softmax"),
        )
    )


#: The input shape of `our_net` (per sample).
SHAPE = (2, 14, 14)


def special_files(tmp_path):
    """(path, what the error calls it) for every kind of non-regular file we can make."""
    made = []
    folder = tmp_path / "adir"
    folder.mkdir()
    made.append((folder, "a directory"))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    made.append((fifo, "a FIFO"))
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "sock"))
    made.append((tmp_path / "sock", "a socket"))
    try:  # a copy of /dev/null (character device 1, 3), only ever inside tmp_path
        os.mknod(tmp_path / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        made.append((tmp_path / "null", "a character device"))
    except (PermissionError, OSError):
        pass  # not allowed here: the other kinds are still tested
    return made, server


@contextlib.contextmanager
def fifo_writer_after(fifo, seconds=5.0):
    """Inside the block, from `seconds` on, keep opening `fifo` for writing and closing it.

    A reader blocked on the FIFO then gets end-of-file, so a test of code that ought to
    refuse FIFOs fails (on whatever that code makes of an empty file) instead of hanging.
    """
    stop = threading.Event()

    def writer():
        if stop.wait(seconds):
            return
        while not stop.is_set():
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # no reader at the moment
                pass
            else:
                os.close(fd)
            stop.wait(0.05)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
