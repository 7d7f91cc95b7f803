"""`Dataset`: uint8 images and integer labels, with splitting and batch iteration.

Images stay uint8 (N, C, H, W) in memory (MNIST's 60000 training images take 47 MB this
way, four times less than as float32); `batches` converts each batch to float32 when it is
needed, in background threads, optionally augments it, and can place it on the GPU.

A Dataset lives on the host: its arrays are NumPy arrays and its bookkeeping (orders,
splits, seeds) is NumPy on purpose. The numerical work on batches (conversion, augmentation,
scaling) goes through the array module `xp` the batches are asked for.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from ._seeds import SeedLike, seed_sequence
from .prefetch import ordered_prefetch

__all__ = ["Dataset", "DEFAULT_MAX_THREADS"]

#: the most threads `batches` starts by default (the old project's choice)
DEFAULT_MAX_THREADS = 8


class Dataset:
    """Images and labels of a classification data set.

    `images` is uint8 (N, C, H, W); images given as (N, H, W) get a channel axis. `labels`
    is int64 (N,). `num_classes` defaults to max(label) + 1; `class_names` optionally names
    the classes. Indexing with an int gives `(image (C, H, W), label)`; with a slice, an
    index array or a boolean mask it gives a new Dataset.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        *,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        images = np.asarray(images)
        labels = np.asarray(labels)
        if images.dtype != np.uint8:
            raise ValueError(
                f"Dataset: images must be uint8 (0..255), got {images.dtype}; "
                "convert float images in [0, 1] with (x * 255).round().astype(np.uint8)"
            )
        if images.ndim == 3:
            images = images[:, None]  # (N, H, W) -> (N, 1, H, W)
        if images.ndim != 4:
            raise ValueError(
                f"Dataset: images must be (N, C, H, W) or (N, H, W), got shape {images.shape}"
            )
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"Dataset: labels must be ({images.shape[0]},) to match the images, "
                f"got shape {labels.shape}"
            )
        if labels.size and not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"Dataset: labels must be integers, got {labels.dtype}")
        if labels.size and labels.min() < 0:
            raise ValueError(f"Dataset: labels must be >= 0, got {labels.min()}")
        self.images = images
        self.labels = labels.astype(np.int64, copy=False)
        if class_names is not None:
            class_names = tuple(class_names)
        if num_classes is None:
            num_classes = len(class_names) if class_names else int(self.labels.max(initial=-1)) + 1
        if self.labels.size and self.labels.max() >= num_classes:
            raise ValueError(
                f"Dataset: label {self.labels.max()} is out of range for {num_classes} classes"
            )
        self.num_classes = int(num_classes)
        self.class_names = class_names

    # -- container protocol -----------------------------------------------------------

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: Any):
        """dataset[i] -> (image (C, H, W) uint8, label int); dataset[slice or array] -> Dataset."""
        if isinstance(index, (int, np.integer)):
            return self.images[index], int(self.labels[index])
        return self._take(index)

    def __repr__(self) -> str:
        return (
            f"Dataset({len(self)} images of shape {self.images.shape[1:]}, "
            f"{self.num_classes} classes)"
        )

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """The shape of one image, (C, H, W)."""
        return tuple(self.images.shape[1:])

    def _take(self, index: Any) -> Dataset:
        return Dataset(
            self.images[index],
            self.labels[index],
            num_classes=self.num_classes,
            class_names=self.class_names,
        )

    # -- subsets -------------------------------------------------------------------------

    def split(self, fraction: float, seed: SeedLike = None) -> tuple[Dataset, Dataset]:
        """(train, validation): a random `fraction` of the samples goes to validation.

        round(fraction * N) samples, chosen by a permutation drawn from `seed` (the same
        seed always gives the same split), form the validation set; the rest, in their
        original order, the training set.
        """
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"split: fraction must be between 0 and 1, got {fraction}")
        count = int(round(fraction * len(self)))
        if not 0 < count < len(self):
            raise ValueError(
                f"split: a fraction of {fraction} of {len(self)} samples leaves an empty part"
            )
        rng = np.random.default_rng(seed_sequence(seed, "split: seed"))  # host
        order = rng.permutation(len(self))  # host
        val_index = np.sort(order[:count])  # host
        train_mask = np.ones(len(self), dtype=bool)  # host
        train_mask[val_index] = False
        return self._take(train_mask), self._take(val_index)

    def subset(self, n_or_indices: int | Sequence[int] | np.ndarray, seed: SeedLike = None):
        """A Dataset of some samples: the first n (seed None), n random ones (with a
        seed; kept in their original order), or the samples at the given indices."""
        if isinstance(n_or_indices, (int, np.integer)):
            count = int(n_or_indices)
            if not 0 <= count <= len(self):
                raise ValueError(f"subset: n must be in 0..{len(self)}, got {count}")
            if seed is None:
                return self._take(slice(0, count))
            rng = np.random.default_rng(seed_sequence(seed, "subset: seed"))
            return self._take(np.sort(rng.choice(len(self), size=count, replace=False)))
        indices = np.asarray(n_or_indices)
        if indices.dtype != bool and not np.issubdtype(indices.dtype, np.integer):
            raise ValueError(f"subset: indices must be integers, got {indices.dtype}")
        return self._take(indices)

    # -- batches -------------------------------------------------------------------------

    def batches(
        self,
        batch_size: int = 64,
        shuffle: bool = True,
        preprocess: Callable[[Any], Any] | None = None,
        num_threads: int | None = None,
        drop_last: bool = False,
        seed: SeedLike = None,
        xp: Any = None,
        augment: Callable[[Any, np.random.Generator], Any] | None = None,
    ) -> Iterator[tuple[Any, Any]]:
        """One epoch of (x, y) batches: x float32 (B, C, H, W), y int64 (B,).

        Every sample appears exactly once per epoch (the last batch is smaller unless
        `drop_last`), in an order shuffled from `seed` when `shuffle` (the same seed gives
        the same batches, whatever the number of threads). Each batch is made as follows,
        in a background thread (`num_threads`, default min(8, CPU count); 0 for none):

        1. gather the uint8 images and labels of the batch on the host;
        2. move them to `xp` (numpy by default);
        3. convert the images to float32, values 0..255;
        4. `augment(x, rng)` when given (see convnet_data.augment), with a NumPy Generator
           derived from the seed and the batch's index;
        5. `preprocess(x)` when given, else x * float32(1/255) into [0, 1].

        `preprocess` therefore receives float32 values in 0..255, so the old project's
        `preprocess=lambda x: x / 255.0` gives the default [0, 1] batches to float32
        rounding (a division and a product by the reciprocal can differ in the last bit).

        With `xp=cupy`, steps 2-5 run on the GPU, queued from the worker thread, which
        waits for them to finish before handing the batch over: the training loop never
        blocks on the transfer, and only the uint8 batch crosses the bus.

        A few batches are prepared ahead (at most 2 * num_threads); breaking out of the loop
        or closing the iterator stops and joins the threads.
        """
        if batch_size < 1:
            raise ValueError(f"batches: batch_size must be >= 1, got {batch_size}")
        if num_threads is None:
            num_threads = min(DEFAULT_MAX_THREADS, os.cpu_count() or 1)
        if xp is None:
            xp = np
        root = seed_sequence(seed, "batches: seed")
        order_seed, augment_seed = root.spawn(2)
        n = len(self)
        if shuffle:
            order = np.random.default_rng(order_seed).permutation(n)  # host
        else:
            order = np.arange(n)  # host
        count = n // batch_size if drop_last else -(-n // batch_size)
        prepare = _BatchMaker(self, order, batch_size, xp, preprocess, augment, augment_seed)
        return ordered_prefetch(prepare, count, num_threads)


class _BatchMaker:
    """Builds batch number i of an epoch (the work each prefetch thread does)."""

    def __init__(self, dataset, order, batch_size, xp, preprocess, augment, augment_seed):
        self.dataset = dataset
        self.order = order
        self.batch_size = batch_size
        self.xp = xp
        self.preprocess = preprocess
        self.augment = augment
        self.augment_seed = augment_seed
        self.on_gpu = getattr(xp, "__name__", "") == "cupy"
        self.device_id = xp.cuda.Device().id if self.on_gpu else None

    def __call__(self, index: int):
        chosen = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        images = self.dataset.images[chosen]  # (B, C, H, W) uint8, on the host
        labels = self.dataset.labels[chosen]  # (B,) int64
        if not self.on_gpu:
            return self._finish(images, labels, index)
        cupy = self.xp
        with cupy.cuda.Device(self.device_id):
            x, y = self._finish(images, labels, index)
            # The copy and the augmentation kernels were queued on this thread's current
            # stream (the default stream, shared with the caller's kernels, which keeps the
            # memory pool's reuse safe); waiting here means the caller gets a finished batch
            # and never waits for it itself.
            cupy.cuda.get_current_stream().synchronize()
        return x, y

    def _finish(self, images: np.ndarray, labels: np.ndarray, index: int):
        xp = self.xp
        x = xp.asarray(images).astype(xp.float32)  # (B, C, H, W), 0..255
        if self.augment is not None:
            seq = self.augment_seed
            key = (*seq.spawn_key, index)  # one stream per batch: threads cannot reorder it
            rng = np.random.default_rng(np.random.SeedSequence(seq.entropy, spawn_key=key))  # host
            x = self.augment(x, rng)
        if self.preprocess is not None:
            x = self.preprocess(x)
        else:
            x *= xp.float32(1.0 / 255.0)
        return x, xp.asarray(labels)
