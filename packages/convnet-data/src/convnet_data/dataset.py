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
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from convnet_core import checks

from ._seeds import SeedLike, seed_sequence
from .prefetch import PrefetchIterator, ordered_prefetch

__all__ = ["Dataset", "DEFAULT_MAX_THREADS"]

#: the most threads `batches` starts by default (the old project's choice)
DEFAULT_MAX_THREADS = 8


class Dataset:
    """Images and labels of a classification data set.

    `images` is uint8 (N, C, H, W); images given as (N, H, W) get a channel axis. `labels`
    is int64 (N,), each in 0 .. num_classes - 1. `class_names` optionally names the classes,
    one name each; `num_classes` (>= 1) defaults to their number, else to max(label) + 1,
    so an empty Dataset needs one of them. Indexing with an int gives
    `(image (C, H, W), label)`; with a slice, an index array or a boolean mask it gives a
    new Dataset.
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
        self.images = images
        self.labels = _checked_labels(labels, images.shape[0])
        self.num_classes, self.class_names = _checked_classes(self.labels, num_classes, class_names)

    # -- container protocol -----------------------------------------------------------

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: Any):
        """dataset[i] -> (image (C, H, W) uint8, label int); dataset[slice or array] -> Dataset
        (a slice shares this Dataset's arrays, as NumPy slicing does; an index array or a
        mask copies)."""
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
        seed; kept in their original order), or the samples at the given indices.

        n is a whole number in 0..len(self) (not a bool). Like `split`, and unlike
        `ds[a:b]` (a NumPy view), the result holds its own copy of the samples, whichever
        way they are chosen: writing to it leaves this Dataset unchanged.
        """
        if np.ndim(n_or_indices) == 0:  # a count, not indices
            count = checks.count(n_or_indices, "subset: n", minimum=0)
            if count > len(self):
                raise ValueError(f"subset: n must be in 0..{len(self)}, got {count}")
            if seed is None:
                return self._take(np.arange(count))  # an index array: a copy, as below
            rng = np.random.default_rng(seed_sequence(seed, "subset: seed"))
            return self._take(np.sort(rng.choice(len(self), size=count, replace=False)))
        indices = np.asarray(n_or_indices)
        if not indices.size:
            indices = indices.astype(np.int64)  # [] reads as float64: no index is integer indices
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
    ) -> PrefetchIterator[tuple[Any, Any]]:
        """One epoch of (x, y) batches: x float32 (B, C, H, W), y int64 (B,).

        `batch_size` (B, >= 1) and `num_threads` (>= 0) are whole numbers (an int or a
        NumPy integer; 4.0 is refused, as by `fit`), checked before any thread starts.
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

        With `xp=cupy`, only step 1 runs in the background threads; steps 2-5 are queued
        on the GPU from the caller's thread as `next()` hands the batch over, on the
        caller's stream behind its own kernels, so nothing waits for the GPU: the copy of
        the uint8 batch is asynchronous (CuPy stages it in pinned memory), and only those
        bytes cross the bus. (Queued from another thread, the batch would have to be
        waited for before use: CuPy's default stream is shared by all threads, so that
        wait would include every kernel the training loop had queued.)

        A few batches are prepared ahead (at most 2 * num_threads), from the first `next()`.
        The threads stop, joined, when the epoch ends, when an error from a batch comes out,
        and when the iterator is closed: `close()`, or leaving a `with` block,

            with ds.batches(64, seed=epoch) as batches:
                for x, y in batches: ...

        or dropping its last reference. So a bare `for x, y in ds.batches(...): break` stops
        them as it leaves the loop, but after `it = ds.batches(...); for b in it: break`
        they stay until `it.close()` or `del it`.
        """
        batch_size = checks.count(batch_size, "batches: batch_size")
        if num_threads is None:
            num_threads = min(DEFAULT_MAX_THREADS, os.cpu_count() or 1)
        num_threads = checks.count(num_threads, "batches: num_threads", minimum=0)
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
        if getattr(xp, "__name__", "") == "cupy":  # the GPU work in the caller's thread
            return ordered_prefetch(prepare.gather, count, num_threads, finish=prepare.finish)
        return ordered_prefetch(prepare, count, num_threads)


def _checked_labels(labels: np.ndarray, count: int) -> np.ndarray:
    """`labels` as int64 (count,), when they are `count` integers in 0 .. 2**63 - 1.

    The range is checked before the cast: uint64 labels of 2**63 or more would wrap to
    negative int64 values.
    """
    if labels.ndim != 1 or labels.shape[0] != count:
        raise ValueError(
            f"Dataset: labels must be ({count},) to match the images, got shape {labels.shape}"
        )
    if not labels.size:
        return labels.astype(np.int64)  # [] reads as float64: no label is integer labels
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"Dataset: labels must be integers, got {labels.dtype}")
    low, high = int(labels.min()), int(labels.max())  # Python ints: exact for uint64
    if low < 0:
        raise ValueError(f"Dataset: labels must be >= 0, got {low}")
    if high > np.iinfo(np.int64).max:
        raise ValueError(f"Dataset: labels must be < 2**63 (int64), got {high}")
    return labels.astype(np.int64, copy=False)


def _checked_classes(
    labels: np.ndarray, num_classes: int | None, class_names: Sequence[str] | None
) -> tuple[int, tuple[str, ...] | None]:
    """(num_classes, class_names as a tuple or None), checked against each other and the
    int64 labels (N,).

    num_classes defaults to the number of class_names, else to max(label) + 1; it must be
    a whole number >= 1 above every label, and class_names (a sequence, not one string)
    must name exactly num_classes classes.
    """
    if class_names is not None:
        if isinstance(class_names, (str, bytes)):
            raise TypeError(
                f"Dataset: class_names must be a sequence of names, got the string {class_names!r}"
            )
        class_names = tuple(class_names)
    if num_classes is None:
        if class_names is not None:
            num_classes = len(class_names)
        elif labels.size:
            num_classes = int(labels.max()) + 1
        else:
            raise ValueError("Dataset: no labels to count the classes of; give num_classes")
    num_classes = checks.count(num_classes, "Dataset: num_classes")
    if labels.size and labels.max() >= num_classes:
        raise ValueError(f"Dataset: label {labels.max()} is out of range for {num_classes} classes")
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(
            f"Dataset: {len(class_names)} class_names for {num_classes} classes: {class_names!r}"
        )
    return num_classes, class_names


class _BatchMaker:
    """Builds batch number i of an epoch: `gather` on the host, then `finish` on `xp`.

    Called as one function on NumPy (a prefetch thread does both steps); on CuPy a
    prefetch thread gathers and the caller's thread finishes (see `Dataset.batches`).
    """

    def __init__(self, dataset, order, batch_size, xp, preprocess, augment, augment_seed):
        self.dataset = dataset
        self.order = order
        self.batch_size = batch_size
        self.xp = xp
        self.preprocess = preprocess
        self.augment = augment
        self.augment_seed = augment_seed

    def __call__(self, index: int):
        return self.finish(self.gather(index))

    def gather(self, index: int) -> tuple[np.ndarray, np.ndarray, int]:
        """The host arrays of batch `index`: images (B, C, H, W) uint8, labels (B,) int64."""
        chosen = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        return self.dataset.images[chosen], self.dataset.labels[chosen], index

    def finish(self, gathered: tuple[np.ndarray, np.ndarray, int]):
        """(x, y) on `xp` from what `gather` gave: x float32 (B, C, H, W), y int64 (B,)."""
        images, labels, index = gathered
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
