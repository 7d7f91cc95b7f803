"""How fast convnet_data feeds training: MNIST load time and time spent waiting for batches.

    python benchmarks/bench_data.py                 # load times + a 300-batch wait share
    python benchmarks/bench_data.py --batches 0     # a whole epoch (938 batches of 64)
    python benchmarks/bench_data.py --augment-study # test accuracy with/without augmentation

Load: `load_mnist()` on the bundled .gz files, with and without checksum verification
(best of several runs).

Wait share: one epoch of the README model (Conv8-Conv16-Dense64) trained with Adam through
convnet_core's init/apply/grad, iterating `train.batches(64)`. The time the loop spends
blocked in `next()` on the batch iterator, over the whole loop time, is the share of the
epoch lost to data loading (target: under 5%). It is measured with the default
prefetching threads, with none (num_threads=0: each batch made on demand), and with
augmentation (random shifts and rotations; then also elastic distortion).

Augment study: the README model trained for 20 epochs on a 2000-image subset (where
augmentation matters), with no augmentation, shifts and rotations, and those plus elastic
distortion; test accuracy on the 10000 test images.
"""

from __future__ import annotations

import argparse
import os
import time

import convnet_core as cn
import convnet_data
import numpy as np
from convnet_core import layers as L
from convnet_core import losses, optim, presets
from convnet_data import augment


def readme_network():
    """The old project's README model (convnet_core.presets): (1, 28, 28) -> 10 logits."""
    return L.Sequential(presets.readme_layers())


def bench_load(repeats: int) -> None:
    print(f"load_mnist() from {convnet_data.find_mnist_dir()} (best of {repeats})")
    for verify in (True, False):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            convnet_data.load_mnist(verify=verify)
            times.append(time.perf_counter() - start)
        label = "with checksums   " if verify else "without checksums"
        print(f"  {label}  {min(times) * 1e3:7.1f} ms   (median {np.median(times) * 1e3:.1f} ms)")


class Trainer:
    """The README model and an Adam state: one `step(x, y)` is a forward and backward pass."""

    def __init__(self, seed: int = 0, lr: float = 2e-3) -> None:
        self.net = readme_network()
        self.params, self.state = cn.init(self.net, (1, 28, 28), rng=seed)
        self.opt = optim.adam(lr=lr)
        self.opt_state = self.opt.init(self.params)

    def step(self, x, y) -> float:
        logits, self.state, cache = cn.apply(
            self.net, self.params, self.state, x, training=True, rng=None
        )
        loss, dlogits = losses.softmax_cross_entropy(logits, y, xp=np)
        grads, _ = cn.grad(self.net, self.params, cache, dlogits, xp=np, input_grad=False)
        self.params, self.opt_state = self.opt.update(self.params, grads, self.opt_state)
        return float(loss)

    def accuracy(self, dataset, batch_size: int = 500) -> float:
        correct = 0
        for x, y in dataset.batches(batch_size, shuffle=False):
            logits, _, _ = cn.apply(self.net, self.params, self.state, x, training=False)
            correct += int((logits.argmax(axis=1) == y).sum())
        return correct / len(dataset)


def wait_share(train, label: str, max_batches: int, simulate_ms=None, **batch_args) -> None:
    """Train one epoch (or max_batches) and report the time blocked waiting for batches.

    With `simulate_ms`, each step is a sleep of that length instead (it releases the GIL,
    as a GPU step does while the device computes).
    """
    trainer = Trainer()
    iterator = train.batches(64, seed=0, **batch_args)
    waited = 0.0
    count = 0
    start = time.perf_counter()
    while True:
        before = time.perf_counter()
        try:
            x, y = next(iterator)
        except StopIteration:
            break
        waited += time.perf_counter() - before
        if simulate_ms is None:
            trainer.step(x, y)
        else:
            time.sleep(simulate_ms / 1e3)
        count += 1
        if max_batches and count >= max_batches:
            iterator.close()
            break
    total = time.perf_counter() - start
    print(
        f"  {label:<34} {count:4d} batches  {total:6.1f} s  waiting {waited:6.2f} s"
        f"  = {100 * waited / total:5.2f}%   ({1e3 * waited / count:.2f} ms/batch)"
    )


def augment_study(train, test, epochs: int, size: int, seed: int = 0) -> None:
    subset = train.subset(size, seed=seed)
    print(
        f"augment study: README model, {size} training images, {epochs} epochs, Adam 2e-3, "
        f"seed {seed}"
    )
    choices = {
        "none": None,
        "shift 2 px + rotate 10 deg": augment.random_affine(max_shift=2, max_degrees=10),
        "  + elastic (alpha 8, sigma 4)": augment.compose(
            augment.random_affine(max_shift=2, max_degrees=10), augment.elastic(8.0, 4.0)
        ),
    }
    for label, aug in choices.items():
        trainer = Trainer(seed=seed)
        start = time.perf_counter()
        for epoch in range(epochs):
            for x, y in subset.batches(64, seed=[seed, epoch], augment=aug):
                trainer.step(x, y)
        elapsed = time.perf_counter() - start
        print(
            f"  {label:<32} test accuracy {100 * trainer.accuracy(test):6.2f}%"
            f"   (train time {elapsed:.0f} s)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="load-time repeats")
    parser.add_argument("--batches", type=int, default=300, help="batches per run (0: epoch)")
    parser.add_argument("--simulate-ms", type=float, default=10.0, help="simulated step")
    parser.add_argument("--skip-wait-share", action="store_true")
    parser.add_argument("--augment-study", action="store_true")
    parser.add_argument("--study-epochs", type=int, default=20)
    parser.add_argument("--study-size", type=int, default=2000)
    parser.add_argument("--study-seed", type=int, default=0)
    args, _ = parser.parse_known_args()

    print(f"convnet_data {convnet_data.__version__}, {os.cpu_count()} CPUs, NumPy {np.__version__}")
    bench_load(args.repeats)
    train, test = convnet_data.load_mnist()
    affine = augment.random_affine(max_shift=2, max_degrees=10)
    both = augment.compose(affine, augment.elastic(8.0, 4.0))
    runs = [
        ("prefetch (default threads)", {}),
        ("no prefetch (num_threads=0)", {"num_threads": 0}),
        ("prefetch + shift/rotate", {"augment": affine}),
        ("no prefetch + shift/rotate", {"augment": affine, "num_threads": 0}),
        ("prefetch + shift/rotate + elastic", {"augment": both}),
    ]
    shown = "one epoch" if not args.batches else f"{args.batches} batches of 64"
    if not args.skip_wait_share:
        print(f"time blocked in next() while training the README model ({shown}):")
        for label, batch_args in runs:
            wait_share(train, label, args.batches, **batch_args)
        print(f"the same with a simulated {args.simulate_ms:g} ms step (GIL released):")
        for label, batch_args in runs:
            wait_share(train, label, args.batches, simulate_ms=args.simulate_ms, **batch_args)
    if args.augment_study:
        augment_study(train, test, args.study_epochs, args.study_size, args.study_seed)


if __name__ == "__main__":
    main()
