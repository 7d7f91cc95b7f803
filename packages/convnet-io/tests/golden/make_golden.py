"""Regenerate the golden files of format version 1 (run from anywhere):

    uv run python packages/convnet-io/tests/golden/make_golden.py

Writes, beside this script:
    model_v1.h5, model_v1.npz   a small trained-looking model (conv, batchnorm, pooling,
                                a residual block, dropout, dense) with an Adam state
    model_v1_io.npz             pinned inputs and the outputs the model gives on them

Only regenerate when the format version changes (then add model_v2.*, keep the v1 files):
the point of these files is that a file written today keeps loading tomorrow.
"""

from __future__ import annotations

import pathlib

import convnet_io
import numpy
from convnet_core import apply, init, optim, tree
from convnet_core import layers as L

HERE = pathlib.Path(__file__).parent
INPUT_SHAPE = (1, 8, 8)


def network():
    return L.Sequential(
        (
            L.Conv2D(4, (3, 3)),
            L.BatchNorm2D(),
            L.Activation("relu"),
            L.Residual(L.Sequential((L.Conv2D(4, (3, 3)), L.Activation("leaky_relu", 0.1)))),
            L.MaxPool2D((2, 2)),
            L.AvgPool2D((2, 2), stride=1),
            L.Dropout(0.25),
            L.Flatten(),
            L.Dense(6),
            L.Activation("tanh"),
            L.Dense(3),
            L.Activation("softmax"),
        )
    )


def main() -> None:
    rng = numpy.random.default_rng(2024)
    net = network()
    params, state = init(net, INPUT_SHAPE, rng=0)
    params = tree.map(lambda p: (p + rng.normal(0, 0.1, p.shape)).astype(p.dtype), params)
    state = tree.map(lambda s: (numpy.abs(s) + rng.uniform(0, 0.5, s.shape)).astype(s.dtype), state)
    opt = optim.adam(lr=1e-3)
    grads = tree.map(lambda p: rng.normal(size=p.shape).astype(p.dtype), params)
    _, opt_state = opt.update(params, grads, opt.init(params))
    metadata = {
        "epoch": 3,
        "history": {"loss": [1.1, 0.7, 0.5]},
        "seed": 2024,
        "rng_state": {"seed": 2024},
        "loss_name": "categorical_crossentropy",
    }
    for suffix in (".h5", ".npz"):
        convnet_io.save(
            HERE / f"model_v1{suffix}",
            layer=net,
            params=params,
            state=state,
            input_shape=INPUT_SHAPE,
            optimizer=opt,
            optimizer_state=opt_state,
            metadata=metadata,
        )
    inputs = rng.normal(size=(4, *INPUT_SHAPE)).astype("float32")
    outputs, _, _ = apply(net, params, state, inputs)
    numpy.savez(HERE / "model_v1_io.npz", inputs=inputs, outputs=outputs)
    print(f"wrote model_v1.h5, model_v1.npz and model_v1_io.npz in {HERE}")


if __name__ == "__main__":
    main()
