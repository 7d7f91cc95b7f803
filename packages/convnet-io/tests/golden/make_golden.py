"""Write the golden files of each format version that has none yet (run from anywhere):

    uv run python packages/convnet-io/tests/golden/make_golden.py

Writes, beside this script, for a version whose files are missing:
    model_v1.h5, model_v1.npz   a small trained-looking model (conv, batchnorm, pooling,
                                a residual block, dropout, dense) with an Adam state
    model_v1_io.npz             pinned inputs and the outputs the model gives on them
    model_v2.h5, model_v2.npz   the same model as a checkpoint of a run with early
                                stopping: also the params and state of its best epoch
    model_v2_io.npz             pinned inputs, the outputs of the model and of its best
                                epoch's weights

Files that exist are never rewritten: the point of these files is that a file written
today keeps loading tomorrow. A new format version adds its own files.
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


def perturbed(net, rng):
    """Params and state of `net`, moved off their initial values by `rng`."""
    params, state = init(net, INPUT_SHAPE, rng=0)
    params = tree.map(lambda p: (p + rng.normal(0, 0.1, p.shape)).astype(p.dtype), params)
    state = tree.map(lambda s: (numpy.abs(s) + rng.uniform(0, 0.5, s.shape)).astype(s.dtype), state)
    return params, state


def save_both(stem: str, **parts) -> None:
    """`stem`.h5 and `stem`.npz beside this script, of the same parts."""
    for suffix in (".h5", ".npz"):
        convnet_io.save(HERE / f"{stem}{suffix}", input_shape=INPUT_SHAPE, **parts)


def write_v1() -> None:
    rng = numpy.random.default_rng(2024)
    net = network()
    params, state = perturbed(net, rng)
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
    save_both("model_v1", layer=net, params=params, state=state, optimizer=opt,
              optimizer_state=opt_state, metadata=metadata)  # fmt: skip
    inputs = rng.normal(size=(4, *INPUT_SHAPE)).astype("float32")
    outputs, _, _ = apply(net, params, state, inputs)
    numpy.savez(HERE / "model_v1_io.npz", inputs=inputs, outputs=outputs)
    print(f"wrote model_v1.h5, model_v1.npz and model_v1_io.npz in {HERE}")


def write_v2() -> None:
    rng = numpy.random.default_rng(2026)
    net = network()
    params, state = perturbed(net, rng)
    best_params, best_state = perturbed(net, rng)
    metadata = {
        "epoch": 4,
        "history": {"loss": [1.0, 0.6, 0.65, 0.7], "val_loss": [1.1, 0.8, 0.85, 0.9]},
        "rng_state": {"seed": 2026},
        "loss_name": "categorical_crossentropy",
    }
    save_both("model_v2", layer=net, params=params, state=state, metadata=metadata,
              best_weights=(2, best_params, best_state))  # fmt: skip
    inputs = rng.normal(size=(4, *INPUT_SHAPE)).astype("float32")
    outputs, _, _ = apply(net, params, state, inputs)
    best_outputs, _, _ = apply(net, best_params, best_state, inputs)
    numpy.savez(HERE / "model_v2_io.npz", inputs=inputs, outputs=outputs, best_outputs=best_outputs)
    print(f"wrote model_v2.h5, model_v2.npz and model_v2_io.npz in {HERE}")


def main() -> None:
    for version, write in ((1, write_v1), (2, write_v2)):
        if not (HERE / f"model_v{version}_io.npz").exists():
            write()


if __name__ == "__main__":
    main()
