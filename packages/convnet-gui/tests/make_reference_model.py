"""Train the small CNN the convnet-gui tests use, and save it as tests/data/reference_mnist.h5.

    uv run python packages/convnet-gui/tests/make_reference_model.py

Why a committed file rather than training in the tests: the GUI tests need a model that
reads digits well (at least 97% of MNIST digits after the drawing round trip), fast and
the same on every run. Training it takes minutes on a small CPU, longer than all of this
package's tests together may take; the file is 50 kB. This script is the whole recipe
(the functional core, a plain loop, fixed seeds), so anyone can rebuild it and compare.

The network: conv 3x3 (8) - relu - maxpool 2 - conv 3x3 (16) - relu - maxpool 2 -
dense 10, about 10k weights; Adam, 3 epochs, batch 64. Test accuracy is printed and kept
in the file's metadata.
"""

from __future__ import annotations

import pathlib
import time

import convnet_core as cn
import convnet_io
import numpy
from convnet_core import layers as L
from convnet_core import losses, optim
from convnet_data import load_mnist

OUT = pathlib.Path(__file__).parent / "data" / "reference_mnist.h5"
EPOCHS = 3
BATCH = 64
SEED = 0


def network() -> L.Sequential:
    """The reference CNN: (N, 1, 28, 28) -> logits (N, 10)."""
    return L.Sequential(
        (
            L.Conv2D(8, (3, 3)),
            L.Activation("relu"),
            L.MaxPool2D((2, 2)),  # (N, 8, 14, 14)
            L.Conv2D(16, (3, 3)),
            L.Activation("relu"),
            L.MaxPool2D((2, 2)),  # (N, 16, 7, 7)
            L.Flatten(),
            L.Dense(10),
        )
    )


def accuracy(net, params, state, images: numpy.ndarray, labels: numpy.ndarray) -> float:
    """Fraction of `images` (N, 1, 28, 28) uint8 classified as `labels`."""
    correct = 0
    for start in range(0, len(images), 1000):
        x = images[start : start + 1000].astype(numpy.float32) / 255
        logits, _, _ = cn.apply(net, params, state, x, training=False)
        correct += int((logits.argmax(axis=1) == labels[start : start + 1000]).sum())
    return correct / len(images)


def main() -> None:
    train, test = load_mnist()
    net = network()
    rng = numpy.random.default_rng(SEED)
    params, state = cn.init(net, (1, 28, 28), rng=rng)
    opt = optim.adam(lr=1e-3)
    opt_state = opt.init(params)
    started = time.perf_counter()
    for epoch in range(1, EPOCHS + 1):
        order = rng.permutation(len(train.images))
        for start in range(0, len(order), BATCH):
            index = order[start : start + BATCH]
            x = train.images[index].astype(numpy.float32) / 255  # (B, 1, 28, 28)
            logits, state, cache = cn.apply(net, params, state, x, training=True)
            _, dlogits = losses.softmax_cross_entropy(logits, train.labels[index], xp=numpy)
            grads, _ = cn.grad(net, params, cache, dlogits, input_grad=False)
            params, opt_state = opt.update(params, grads, opt_state)
        test_accuracy = accuracy(net, params, state, test.images, test.labels)
        seconds = time.perf_counter() - started
        print(f"epoch {epoch}: test accuracy {test_accuracy:.4f} ({seconds:.0f} s)", flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    convnet_io.save(
        OUT,
        layer=net,
        params=params,
        state=state,
        input_shape=(1, 28, 28),
        metadata={"test_accuracy": test_accuracy, "epochs": EPOCHS, "seed": SEED},
    )
    print(f"saved {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
