"""Regenerate the figures and tables of docs/ from real training runs.

    uv run scripts/make_doc_figures.py                        # everything (about 6 minutes)
    uv run scripts/make_doc_figures.py --only lr reg          # some parts
    uv run scripts/make_doc_figures.py --only inside --model models/mnist.h5   # this model

Parts (each writes into docs/figures/, PNGs kept small):

- lr:      the README model trained with Adam and SGD at several learning rates on
           12,000 MNIST digits for 3 epochs: loss per step (lr_comparison.png) and the test
           accuracy of each run (lr_comparison.json).
- reg:     regularisation on a small training set (3,000 digits, up to 20 epochs, 5,000
           other training digits for validation, the 10,000 test digits for the final
           score, three seeds each): baseline, dropout, weight decay, augmentation, batch
           normalisation, early stopping and a combination (regularisation.json,
           regularisation.png).
- batch:   training throughput of the README model against the batch size (batch_size.json).
- inside:  the first-layer filters, the feature maps of one digit and the most confidently
           wrong test digits of a trained model (filters.png, features.png, wrong.png);
           the README model trained here for 3 epochs, or the saved model --model.

Every run uses one BLAS thread and fixed seeds. The JSON files record the machine, the
times and the numbers that the docs quote.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before NumPy is imported
os.environ.setdefault("MPLBACKEND", "Agg")

import convnet_core as cn
import convnet_data
import matplotlib.pyplot as plt
import numpy as np
from convnet_core import layers as L
from convnet_core import losses, optim, presets
from convnet_data import augment

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIGURES = ROOT / "docs" / "figures"
DPI = 80


def machine() -> str:
    """A one-line description of where the numbers were measured."""
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"NumPy {np.__version__}, OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}"
    )


def readme_layers(dropout: float = 0.0, batchnorm: bool = False) -> list:
    """`presets.readme_layers()` (Conv8-Conv16-Dense64, 'same' padding), optionally with
    BatchNorm2D after each conv and Dropout before and after the hidden Dense."""
    variant = []
    for layer in presets.readme_layers():
        if dropout and isinstance(layer, L.Dense):
            variant.append(L.Dropout(dropout))
        variant.append(layer)
        if batchnorm and isinstance(layer, L.Conv2D):
            variant.append(L.BatchNorm2D())
    return variant


def as_inputs(dataset) -> tuple[np.ndarray, np.ndarray]:
    """float32 images (N, 1, 28, 28) in [0, 1] and int64 labels (N,)."""
    return dataset.images.astype(np.float32) / 255.0, np.asarray(dataset.labels)


def save(figure, name: str) -> None:
    figure.savefig(FIGURES / name, dpi=DPI)
    plt.close(figure)
    print(f"wrote docs/figures/{name}")


def write_json(name: str, record: dict) -> None:
    (FIGURES / name).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(f"wrote docs/figures/{name}")


# ---------------------------------------------------------------------------------------
# Learning rates


def train_steps(net, opt, x, y, *, epochs, batch_size, seed):
    """A plain loop (init/apply/grad/update); returns the loss of every step and the params."""
    params, state = cn.init(net, x.shape[1:], rng=seed)
    opt_state = opt.init(params)
    order_rng = np.random.default_rng(seed)
    step_losses = []
    for _ in range(epochs):
        order = order_rng.permutation(len(y))
        for start in range(0, len(y), batch_size):
            batch = order[start : start + batch_size]
            logits, state, cache = cn.apply(net, params, state, x[batch], training=True)
            loss, dlogits = losses.softmax_cross_entropy(logits, y[batch], xp=np)
            grads, _ = cn.grad(net, params, cache, dlogits, input_grad=False)
            params, opt_state = opt.update(params, grads, opt_state)
            step_losses.append(float(loss))
    return step_losses, params, state


def accuracy(net, params, state, x, y) -> float:
    correct = 0
    for start in range(0, len(y), 1000):
        logits, _, _ = cn.apply(net, params, state, x[start : start + 1000])
        correct += int((logits.argmax(axis=1) == y[start : start + 1000]).sum())
    return correct / len(y)


def learning_rates(train, test) -> None:
    x, y = as_inputs(train.subset(12_000, seed=0))
    x_test, y_test = as_inputs(test)
    net = L.Sequential(tuple(readme_layers()))
    runs = [("adam", lr) for lr in (1e-4, 1e-3, 1e-2, 1e-1)]
    runs += [("sgd", lr) for lr in (1e-2, 1e-1)]
    results = []
    figure, axis = plt.subplots(figsize=(6.4, 3.6))
    for name, lr in runs:
        opt = optim.adam(lr=lr) if name == "adam" else optim.sgd(lr=lr, momentum=0.9)
        started = time.perf_counter()
        step_losses, params, state = train_steps(net, opt, x, y, epochs=3, batch_size=64, seed=0)
        seconds = time.perf_counter() - started
        test_acc = accuracy(net, params, state, x_test, y_test)
        label = f"{name} lr={lr:g}" + (" (momentum 0.9)" if name == "sgd" else "")
        finite = np.isfinite(step_losses)
        smooth = np.convolve(np.where(finite, step_losses, np.nan), np.ones(20) / 20, "valid")
        axis.plot(smooth, label=f"{label}: test {100 * test_acc:.1f}%", linewidth=1.2)
        results.append(
            {
                "optimizer": name,
                "lr": lr,
                "test_accuracy": test_acc,
                "final_loss_mean_last_50": float(np.nanmean(step_losses[-50:])),
                "seconds": round(seconds, 1),
            }
        )
        print(f"{label}: test accuracy {100 * test_acc:.2f}% ({seconds:.0f} s)")
    axis.set_xlabel("step (batch of 64; 3 epochs of 12,000 digits)")
    axis.set_ylabel("training loss (mean of 20 steps)")
    axis.set_yscale("log")
    axis.set_ylim(0.01, 5)
    axis.legend(fontsize=7)
    axis.set_title("README model on MNIST: the learning rate decides", fontsize=9)
    figure.tight_layout()
    save(figure, "lr_comparison.png")
    write_json("lr_comparison.json", {"machine": machine(), "runs": results})


# ---------------------------------------------------------------------------------------
# Regularisation


class Augmented:
    """A Dataset seen through random shifts and rotations (what Model.fit iterates over)."""

    def __init__(self, dataset, transform):
        self.dataset = dataset
        self.transform = transform

    def __len__(self):
        return len(self.dataset)

    def batches(self, batch_size, shuffle=True, seed=None):
        return self.dataset.batches(batch_size, shuffle=shuffle, seed=seed, augment=self.transform)


SEEDS = (0, 1, 2)


def regularisation(train, test) -> None:
    pool = train.subset(8_000, seed=1)
    small, validation = pool[:3000], pool[3000:]
    x, y = as_inputs(small)
    val = as_inputs(validation)
    x_test, y_test = as_inputs(test)
    variants = {
        "baseline": {},
        "dropout 0.3": {"layers": {"dropout": 0.3}},
        "weight decay 1e-3 (L2)": {"compile": {"weight_decay": 1e-3}},
        "augmentation (shift 2 px, rotate 10°)": {"augment": True},
        "batch normalisation": {"layers": {"batchnorm": True}},
        "early stopping (patience 3)": {"fit": {"early_stopping": True, "patience": 3}},
        "dropout + augmentation + BN": {
            "layers": {"dropout": 0.3, "batchnorm": True},
            "augment": True,
        },
    }
    rows = []
    figure, axis = plt.subplots(figsize=(6.4, 3.6))
    for name, variant in variants.items():
        runs = []
        for seed in SEEDS:
            model = cn.Model(readme_layers(**variant.get("layers", {})), seed=seed)
            model.build((1, 28, 28))
            options = variant.get("compile", {})
            model.compile(loss="categorical_crossentropy", optimizer="adam", lr=1e-3, **options)
            data = (x, y)
            if variant.get("augment"):
                data = Augmented(small, augment.random_affine(2, 10.0))
            started = time.perf_counter()
            model.fit(
                data,
                epochs=20,
                batch_size=64,
                val_data=val,
                seed=seed,
                verbose=False,
                monitor="val_loss",
                **variant.get("fit", {}),
            )
            seconds = time.perf_counter() - started
            test_loss, test_acc = model.evaluate(x_test, y_test)
            _, train_acc = model.evaluate(x, y)
            history = model.history
            runs.append(
                {
                    "seed": seed,
                    "epochs": len(history["loss"]),
                    "train_accuracy": float(train_acc),
                    "test_accuracy": float(test_acc),
                    "test_loss": float(test_loss),
                    "seconds": round(seconds, 1),
                }
            )
            if seed == SEEDS[0]:
                epochs = range(1, len(history["val_loss"]) + 1)
                axis.plot(epochs, history["val_loss"], label=name)
            print(
                f"{name}, seed {seed}: train {100 * train_acc:.2f}%, test {100 * test_acc:.2f}% "
                f"({len(history['loss'])} epochs, {seconds:.0f} s)"
            )
        tests = [run["test_accuracy"] for run in runs]
        rows.append(
            {
                "variant": name,
                "mean_test_accuracy": float(np.mean(tests)),
                "min_test_accuracy": float(min(tests)),
                "max_test_accuracy": float(max(tests)),
                "mean_train_accuracy": float(np.mean([r["train_accuracy"] for r in runs])),
                "mean_test_loss": float(np.mean([r["test_loss"] for r in runs])),
                "mean_epochs": float(np.mean([r["epochs"] for r in runs])),
                "mean_seconds": float(np.mean([r["seconds"] for r in runs])),
                "runs": runs,
            }
        )
    axis.set_xlabel("epoch (3,000 training digits)")
    axis.set_ylabel("validation loss (seed 0)")
    axis.set_ylim(0.05, 0.4)
    axis.legend(fontsize=7)
    axis.set_title("README model on 3,000 MNIST digits", fontsize=9)
    figure.tight_layout()
    save(figure, "regularisation.png")
    write_json("regularisation.json", {"machine": machine(), "seeds": list(SEEDS), "rows": rows})


# ---------------------------------------------------------------------------------------
# Batch size


def batch_sizes(train) -> None:
    x, y = as_inputs(train.subset(4096, seed=2))
    net = L.Sequential(tuple(readme_layers()))
    params, state = cn.init(net, (1, 28, 28), rng=0)
    opt = optim.adam(lr=1e-3)
    opt_state = opt.init(params)
    rows = []
    for batch_size in (8, 32, 64, 128, 256, 1024):
        seen, started = 0, time.perf_counter()
        while time.perf_counter() - started < 3.0:
            start = seen % (len(y) - batch_size)
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            logits, state, cache = cn.apply(net, params, state, xb, training=True)
            _, dlogits = losses.softmax_cross_entropy(logits, yb, xp=np)
            grads, _ = cn.grad(net, params, cache, dlogits, input_grad=False)
            params, opt_state = opt.update(params, grads, opt_state)
            seen += batch_size
        rate = seen / (time.perf_counter() - started)
        rows.append({"batch_size": batch_size, "samples_per_second": round(rate)})
        print(f"batch {batch_size}: {rate:,.0f} samples/s")
    write_json("batch_size.json", {"machine": machine(), "runs": rows})


# ---------------------------------------------------------------------------------------
# Looking inside a trained model


def grid(images, titles, columns, cmap="gray", size=1.1):
    rows = -(-len(images) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(size * columns, size * rows + 0.3))
    for axis in np.ravel(axes):
        axis.axis("off")
    for axis, image, title in zip(np.ravel(axes), images, titles, strict=False):
        axis.imshow(image, cmap=cmap)
        axis.set_title(title, fontsize=7)
    return figure


def inside(train, test, model_path: pathlib.Path | None) -> None:
    if model_path is not None:
        model = cn.Model.load(str(model_path))
        inside_root = model_path.resolve().is_relative_to(ROOT)
        source = str(model_path.resolve().relative_to(ROOT)) if inside_root else model_path.name
    else:
        model = cn.Model(readme_layers(), seed=0)
        model.compile(loss="categorical_crossentropy", optimizer="adam", lr=2e-3)
        model.fit(as_inputs(train), epochs=3, batch_size=64, seed=0, verbose=False)
        source = "the README model trained here for 3 epochs"
    x_test, y_test = as_inputs(test)

    kernels = np.asarray(model.params[0]["W"])  # (8, 1, 3, 3)
    figure = grid([k[0] for k in kernels], [f"filter {i}" for i in range(len(kernels))], 8)
    save(figure, "filters.png")

    digit = x_test[:1]  # (1, 1, 28, 28), a 7
    maps = digit
    for layer, params, state in zip(
        model.network.layers[:2], model.params[:2], model.state[:2], strict=True
    ):
        maps, _, _ = cn.apply(layer, params, state, maps)  # conv, then relu
    pictures = [digit[0, 0], *maps[0]]
    titles = [f"input ({y_test[0]})", *[f"map {i}" for i in range(len(maps[0]))]]
    save(grid(pictures, titles, 9, cmap="viridis"), "features.png")

    probabilities = np.asarray(model.predict(x_test))
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != y_test)
    wrong = wrong[np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")][:12]
    titles = [
        f"{y_test[i]}->{predicted[i]} ({100 * probabilities[i, predicted[i]]:.0f}%)" for i in wrong
    ]
    save(grid([x_test[i, 0] for i in wrong], titles, 6), "wrong.png")
    pairs = {}
    for true, guess in zip(
        y_test[predicted != y_test], predicted[predicted != y_test], strict=True
    ):
        pairs[f"{true}->{guess}"] = pairs.get(f"{true}->{guess}", 0) + 1
    top = sorted(pairs.items(), key=lambda item: -item[1])[:5]
    write_json(
        "inside.json",
        {
            "machine": machine(),
            "model": source,
            "test_accuracy": float((predicted == y_test).mean()),
            "wrong": int(len(np.flatnonzero(predicted != y_test))),
            "most_confused_pairs": dict(top),
            "most_confident_wrong": [int(i) for i in wrong],
        },
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parts = ("lr", "reg", "batch", "inside")
    parser.add_argument("--only", nargs="+", choices=parts, default=list(parts))
    parser.add_argument("--model", type=pathlib.Path, default=None, help="a saved model")
    args = parser.parse_args(argv)
    FIGURES.mkdir(parents=True, exist_ok=True)
    train, test = convnet_data.load_mnist()
    print(f"machine: {machine()}")
    for part in args.only:
        started = time.perf_counter()
        if part == "lr":
            learning_rates(train, test)
        elif part == "reg":
            regularisation(train, test)
        elif part == "batch":
            batch_sizes(train)
        else:
            inside(train, test, args.model)
        print(f"{part}: {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
