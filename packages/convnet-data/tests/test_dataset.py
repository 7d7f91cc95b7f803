"""Dataset: construction, indexing, split/subset, and the batch iterator's invariants."""

from __future__ import annotations

import re
import threading
import time

import numpy as np
import pytest
from convnet_core import backend
from convnet_data import Dataset


def make_dataset(n=103, shape=(1, 5, 4), seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    # each image's first pixel encodes its index, so batches can be traced back
    labels = np.arange(n) % 7
    return Dataset(images, labels)


def sample_ids(dataset, x, y):
    """The dataset indices of a batch, found by matching images exactly."""
    x = backend.to_host(x)
    flat = dataset.images.reshape(len(dataset), -1).astype(np.float32) / 255
    ids = []
    for row in x.reshape(len(x), -1):
        match = np.flatnonzero(np.abs(flat - row).max(axis=1) < 1e-6)
        assert len(match) == 1
        ids.append(int(match[0]))
    np.testing.assert_array_equal(dataset.labels[ids], backend.to_host(y))
    return ids


# -- construction and indexing ----------------------------------------------------------


def test_construction_adds_channel_axis_and_int64_labels():
    ds = Dataset(np.zeros((4, 6, 5), np.uint8), np.array([0, 2, 1, 2], np.uint8))
    assert ds.images.shape == (4, 1, 6, 5) and ds.labels.dtype == np.int64
    assert len(ds) == 4 and ds.num_classes == 3 and ds.sample_shape == (1, 6, 5)


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (np.zeros((4, 6, 5), np.float32), np.zeros(4, int), "uint8"),
        (np.zeros((4, 5), np.uint8), np.zeros(4, int), r"\(N, C, H, W\)"),
        (np.zeros((4, 1, 6, 5), np.uint8), np.zeros(3, int), r"\(4,\)"),
        (np.zeros((4, 1, 6, 5), np.uint8), np.zeros(4, np.float32), "integers"),
        (np.zeros((4, 1, 6, 5), np.uint8), -np.ones(4, int), ">= 0"),
    ],
)
def test_construction_errors(images, labels, message):
    with pytest.raises(ValueError, match=message):
        Dataset(images, labels)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (
            np.array([0, 2**63], np.uint64),
            "labels must be < 2**63 (int64), got 9223372036854775808",
        ),
        (
            np.array([1, 2**64 - 1], np.uint64),
            "labels must be < 2**63 (int64), got 18446744073709551615",
        ),
        (np.array([3, -2, 1], np.int8), "labels must be >= 0, got -2"),
    ],
)
def test_labels_are_range_checked_before_the_cast_to_int64(labels, message):
    # 2**63 as uint64 used to wrap to a negative int64, and the dataset to count 0 classes
    with pytest.raises(ValueError, match=f"^Dataset: {re.escape(message)}$"):
        Dataset(np.zeros((len(labels), 1, 2, 2), np.uint8), labels)
    largest = np.array([0, 2**62], np.uint64)  # fits: kept exactly
    ds = Dataset(np.zeros((2, 1, 2, 2), np.uint8), largest)
    assert ds.labels.dtype == np.int64 and ds.labels[1] == 2**62 and ds.num_classes == 2**62 + 1


def test_class_names_name_every_class_once():
    images = np.zeros((4, 1, 2, 2), np.uint8)
    labels = np.array([0, 1, 2, 1])
    named = Dataset(images, labels, class_names=["zero", "one", "two"])
    assert named.num_classes == 3 and named.class_names == ("zero", "one", "two")
    wider = Dataset(images, labels, num_classes=4, class_names="a b c d".split())
    assert wider.num_classes == 4 and wider[1:].class_names == ("a", "b", "c", "d")
    with pytest.raises(
        ValueError, match=r"^Dataset: 3 class_names for 5 classes: \('a', 'b', 'c'\)$"
    ):
        Dataset(images, labels, num_classes=5, class_names=["a", "b", "c"])
    with pytest.raises(ValueError, match="^Dataset: label 2 is out of range for 2 classes$"):
        Dataset(images, labels, class_names=["a", "b"])
    message = "Dataset: class_names must be a sequence of names, got the string 'abc'"
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        Dataset(images, labels, class_names="abc")


@pytest.mark.parametrize(
    ("num_classes", "message"),
    [
        (-3, "num_classes must be >= 1, got -3"),
        (0, "num_classes must be >= 1, got 0"),
        (2.5, "num_classes must be a whole number >= 1, got 2.5"),
        (None, "no labels to count the classes of; give num_classes"),
    ],
)
def test_an_empty_dataset_needs_a_real_number_of_classes(num_classes, message):
    with pytest.raises(ValueError, match=f"^Dataset: {re.escape(message)}$"):
        Dataset(np.zeros((0, 1, 2, 2), np.uint8), np.zeros(0, int), num_classes=num_classes)
    empty = Dataset(np.zeros((0, 1, 2, 2), np.uint8), [], num_classes=np.int64(3))
    assert empty.num_classes == 3 and type(empty.num_classes) is int
    assert empty.labels.dtype == np.int64
    assert Dataset(np.zeros((0, 2, 2), np.uint8), [], class_names=["a"]).num_classes == 1


def test_indexing():
    ds = make_dataset()
    image, label = ds[5]
    np.testing.assert_array_equal(image, ds.images[5])
    assert label == 5 and isinstance(label, int)
    part = ds[10:20]
    assert isinstance(part, Dataset) and len(part) == 10
    np.testing.assert_array_equal(part.labels, np.arange(10, 20) % 7)
    picked = ds[np.array([3, 1, 4])]
    np.testing.assert_array_equal(picked.images, ds.images[[3, 1, 4]])
    assert picked.num_classes == ds.num_classes


def test_split_is_disjoint_complete_and_seeded():
    ds = make_dataset(100)
    train, val = ds.split(0.2, seed=3)
    assert len(train) == 80 and len(val) == 20
    ids = sample_ids(ds, train.images / 255, train.labels) + sample_ids(
        ds, val.images / 255, val.labels
    )
    assert sorted(ids) == list(range(100))
    again = ds.split(0.2, seed=3)[1]
    np.testing.assert_array_equal(again.images, val.images)
    assert not np.array_equal(ds.split(0.2, seed=4)[1].images, val.images)
    for bad in (0.0, 1.0, 0.001):
        with pytest.raises(ValueError, match="split"):
            ds.split(bad)


def test_split_rounds_the_validation_count():
    # round(fraction * N): 0.29 * 100 is 28.999999999999996 in floating point, and 0.25 * 10
    # is 2.5, which rounds to the even 2; 0.35 * 10 = 3.5 rounds to 4
    for n, fraction, expected in ((100, 0.29, 29), (10, 0.25, 2), (10, 0.35, 4), (7, 0.5, 4)):
        train, val = make_dataset(n).split(fraction, seed=0)
        assert (len(train), len(val)) == (n - expected, expected), (n, fraction)


def test_split_keeps_both_parts_in_their_original_order():
    ds = make_dataset(60)
    for seed in range(3):
        train, val = ds.split(0.5, seed=seed)
        train_ids = sample_ids(ds, train.images / 255, train.labels)
        val_ids = sample_ids(ds, val.images / 255, val.labels)
        assert train_ids == sorted(train_ids) and val_ids == sorted(val_ids)
        assert sorted(train_ids + val_ids) == list(range(60))
        assert val_ids != list(range(30))  # a random half, not the first one


def test_subset():
    ds = make_dataset(50)
    np.testing.assert_array_equal(ds.subset(10).images, ds.images[:10])
    a, b = ds.subset(10, seed=1), ds.subset(10, seed=1)
    np.testing.assert_array_equal(a.images, b.images)
    ids = sample_ids(ds, a.images / 255, a.labels)
    assert len(set(ids)) == 10 and ids == sorted(ids)
    np.testing.assert_array_equal(ds.subset([4, 2]).labels, ds.labels[[4, 2]])
    with pytest.raises(ValueError, match="subset"):
        ds.subset(51)
    with pytest.raises(ValueError, match="^subset: indices must be integers, got float64$"):
        ds.subset([1.0, 2.0])


@pytest.mark.parametrize("seed", [None, 1])
def test_subset_copies_the_samples_as_split_does(seed):
    ds = make_dataset(50)
    before = ds.images.copy()
    part = ds.subset(10, seed=seed)
    part.images[:] = 0
    part.labels[:] = 0
    np.testing.assert_array_equal(ds.images, before)
    np.testing.assert_array_equal(ds.labels, np.arange(50) % 7)


@pytest.mark.parametrize("n", [True, False, np.True_, 2.0])
def test_subset_count_is_a_whole_number(n):
    ds = make_dataset(50)
    with pytest.raises(ValueError, match=rf"^subset: n must be a whole number >= 0, got {n!r}$"):
        ds.subset(n)


def test_subset_count_range():
    ds = make_dataset(50)
    assert len(ds.subset(0)) == 0 and len(ds.subset(np.int64(50))) == 50
    with pytest.raises(ValueError, match=r"^subset: n must be in 0..50, got 51$"):
        ds.subset(51)
    with pytest.raises(ValueError, match=r"^subset: n must be >= 0, got -1$"):
        ds.subset(-1)


@pytest.mark.parametrize("nothing", [[], (), np.array([], int), np.array([])])
def test_an_empty_list_of_indices_is_an_empty_subset(nothing):
    ds = make_dataset(50)
    none = ds.subset(nothing)
    assert len(none) == 0 and none.num_classes == ds.num_classes == 7
    assert none.images.shape == (0, 1, 5, 4) and none.labels.dtype == np.int64


# -- batches ----------------------------------------------------------------------------


@pytest.mark.parametrize("num_threads", [0, 1, 3])
def test_every_sample_once_per_epoch(xp, num_threads):
    ds = make_dataset(103)
    sizes, ids = [], []
    for x, y in ds.batches(16, seed=0, num_threads=num_threads, xp=xp):
        assert backend.get_array_module(x) is xp and backend.get_array_module(y) is xp
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert x.shape[1:] == (1, 5, 4) and x.shape[0] == y.shape[0]
        sizes.append(len(y))
        ids += sample_ids(ds, x, y)
    assert sizes == [16] * 6 + [7]
    assert sorted(ids) == list(range(103))
    assert ids != list(range(103))  # shuffled


def test_values_in_unit_interval_and_no_shuffle_keeps_order(xp):
    ds = make_dataset(20)
    batches = list(ds.batches(8, shuffle=False, xp=xp))
    x = backend.to_host(batches[0][0])
    np.testing.assert_allclose(x, ds.images[:8] / 255.0, rtol=1e-6)
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert sum((sample_ids(ds, bx, by) for bx, by in batches), []) == list(range(20))


def test_drop_last():
    ds = make_dataset(103)
    sizes = [len(y) for _, y in ds.batches(16, drop_last=True, seed=1)]
    assert sizes == [16] * 6
    assert [len(y) for _, y in ds.batches(103, drop_last=True)] == [103]


def test_deterministic_for_a_seed_whatever_the_threads():
    ds = make_dataset(64)
    runs = [
        [backend.to_host(y) for _, y in ds.batches(10, seed=7, num_threads=t)] for t in (0, 1, 4)
    ]
    for run in runs[1:]:
        for a, b in zip(runs[0], run, strict=True):
            np.testing.assert_array_equal(a, b)
    other = np.concatenate([y for _, y in ds.batches(10, seed=8)])
    assert not np.array_equal(np.concatenate(runs[0]), other)


def test_a_generator_seed_gives_a_new_order_each_epoch_reproducibly():
    ds = make_dataset(64)

    def two_epochs(rng):
        return [np.concatenate([y for _, y in ds.batches(10, seed=rng)]) for _ in range(2)]

    first = two_epochs(np.random.default_rng(0))
    second = two_epochs(np.random.default_rng(0))
    assert not np.array_equal(first[0], first[1])
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


def test_a_seed_sequence_gives_the_same_order_each_time_and_is_not_advanced():
    ds = make_dataset(64)
    seed = np.random.SeedSequence(1234)
    orders = [np.concatenate([y for _, y in ds.batches(10, seed=seed)]) for _ in range(2)]
    np.testing.assert_array_equal(orders[0], orders[1])
    assert seed.n_children_spawned == 0
    from_int = np.concatenate([y for _, y in ds.batches(10, seed=1234)])
    np.testing.assert_array_equal(orders[0], from_int)  # the same seed as its entropy


def test_preprocess_receives_float_0_255_and_old_signature_matches_default():
    ds = make_dataset(40)
    seen = []

    def record(x):
        seen.append((x.dtype, float(x.max())))
        return x / 255.0

    old = list(ds.batches(batch_size=8, shuffle=True, preprocess=record, num_threads=4, seed=2))
    new = list(ds.batches(8, seed=2))
    for (xo, yo), (xn, yn) in zip(old, new, strict=True):
        np.testing.assert_allclose(xo, xn, rtol=1e-6)
        np.testing.assert_array_equal(yo, yn)
    assert all(dtype == np.float32 for dtype, _ in seen)
    assert max(top for _, top in seen) > 1.0  # raw 0..255 values, not yet scaled


def test_batches_are_made_in_background_threads_ahead_of_the_consumer():
    ds = make_dataset(400)
    made = []

    def record(x):
        made.append(threading.current_thread().name)
        return x / 255.0

    iterator = ds.batches(4, preprocess=record, num_threads=2, seed=0)
    next(iterator)
    deadline = time.monotonic() + 5.0
    while len(made) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    assert 3 <= len(made) <= 2 * 2 + 1  # ahead, but bounded (100 batches in the epoch)
    assert all(name.startswith("convnet-data") for name in made)
    iterator.close()


def count_threads_after(action):
    before = threading.active_count()
    action()
    deadline = time.monotonic() + 2.0
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    return before, threading.active_count()


def test_leaving_the_loop_early_leaks_no_threads():
    ds = make_dataset(500)

    def break_early():
        for _ in ds.batches(4, num_threads=4, seed=0):
            break

    def close_midway():
        iterator = ds.batches(4, num_threads=4, seed=0)
        for _ in range(5):
            next(iterator)
        iterator.close()

    def run_to_the_end():
        for _ in ds.batches(64, num_threads=4):
            pass

    def raise_in_the_loop():
        with pytest.raises(KeyError):
            for _ in ds.batches(4, num_threads=4, seed=0):
                raise KeyError("the loop's own error")

    for action in (break_early, close_midway, run_to_the_end, raise_in_the_loop):
        before, after = count_threads_after(action)
        assert after == before, action.__name__


def test_close_joins_the_threads_immediately():
    ds = make_dataset(500)
    before = threading.active_count()
    iterator = ds.batches(4, num_threads=4, seed=0)
    next(iterator)
    assert threading.active_count() > before
    iterator.close()
    assert threading.active_count() == before


def test_a_named_iterator_keeps_its_threads_after_break_until_closed():
    ds = make_dataset(50)
    before = threading.active_count()
    iterator = ds.batches(1, num_threads=16, seed=0)
    assert threading.active_count() == before  # nothing starts before the first next()
    for _ in iterator:
        break
    time.sleep(0.05)
    assert threading.active_count() > before  # `iterator` still references them
    iterator.close()
    assert threading.active_count() == before
    assert list(iterator) == []  # closed: the epoch is over
    iterator.close()  # closing again does nothing


def test_leaving_a_with_block_joins_the_threads_at_once():
    ds = make_dataset(50)
    before = threading.active_count()
    with ds.batches(1, num_threads=16, seed=0) as batches:
        for count, _ in enumerate(batches, start=1):
            if count == 3:
                break
        time.sleep(0.05)
        assert threading.active_count() > before
    assert threading.active_count() == before

    with pytest.raises(KeyError, match="the loop's own error"):
        with ds.batches(1, num_threads=16, seed=0) as batches:
            for _ in batches:
                raise KeyError("the loop's own error")
    assert threading.active_count() == before


def test_the_with_block_gives_the_same_batches_as_a_plain_loop():
    ds = make_dataset(30)
    with ds.batches(8, seed=3, num_threads=2) as batches:
        inside = [y for _, y in batches]
    plain = [y for _, y in ds.batches(8, seed=3, num_threads=2)]
    assert [len(y) for y in inside] == [8, 8, 8, 6]
    for a, b in zip(inside, plain, strict=True):
        np.testing.assert_array_equal(a, b)


def test_an_error_in_a_worker_reaches_the_consumer_and_stops_the_threads():
    ds = make_dataset(100)
    calls = []

    def failing(x):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("broken preprocess")
        return x / 255.0

    def consume():
        with pytest.raises(RuntimeError, match="broken preprocess"):
            for _ in ds.batches(4, preprocess=failing, num_threads=2, seed=0):
                pass

    before, after = count_threads_after(consume)
    assert after == before


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
        ({"batch_size": 4.0}, "batch_size must be a whole number >= 1, got 4.0"),
        ({"batch_size": 2.5}, "batch_size must be a whole number >= 1, got 2.5"),
        ({"batch_size": None}, "batch_size must be a whole number >= 1, got None"),
        ({"batch_size": True}, "batch_size must be a whole number >= 1, got True"),
        ({"num_threads": -1}, "num_threads must be >= 0, got -1"),
        ({"num_threads": 2.0}, "num_threads must be a whole number >= 0, got 2.0"),
    ],
)
def test_batches_argument_errors_come_from_the_call_not_a_worker_thread(arguments, message):
    ds = make_dataset(10)
    before = threading.active_count()
    with pytest.raises(ValueError, match=f"^batches: {re.escape(message)}$"):
        ds.batches(**arguments)  # raised at once, without iterating
    assert threading.active_count() == before


def test_batches_take_numpy_integers():
    ds = make_dataset(10)
    sizes = [len(y) for _, y in ds.batches(np.int64(4), shuffle=False, num_threads=np.uint8(2))]
    assert sizes == [4, 4, 2]


def test_seed_as_seed_and_epoch_pair():
    ds = make_dataset(64)

    def labels(seed):
        return np.concatenate([y for _, y in ds.batches(10, seed=seed, num_threads=0)])

    np.testing.assert_array_equal(labels([1, 2]), labels([1, 2]))
    assert not np.array_equal(labels([1, 2]), labels([1, 3]))


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda ds: ds.split(0.5, seed="abc"), "split: seed"),
        (lambda ds: ds.subset(3, seed="abc"), "subset: seed"),
        (lambda ds: ds.batches(4, seed="abc"), "batches: seed"),
    ],
)
def test_a_bad_seed_is_refused_naming_the_method(call, name):
    message = (
        f"{name} must be an int >= 0, a sequence of them, a NumPy Generator, "
        "a SeedSequence or None, got 'abc'"
    )
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        call(make_dataset(10))


def test_prefetch_finishes_each_result_in_the_callers_thread():
    from convnet_data.prefetch import ordered_prefetch

    made_in, finished_in = set(), set()

    def make(index):
        made_in.add(threading.get_ident())
        return index

    def finish(index):
        finished_in.add(threading.get_ident())
        return index * 10

    with ordered_prefetch(make, 6, num_threads=2, finish=finish) as results:
        assert list(results) == [0, 10, 20, 30, 40, 50]
    assert finished_in == {threading.get_ident()}
    assert threading.get_ident() not in made_in


def test_prefetch_finish_errors_come_out_and_closing_joins_the_threads():
    from convnet_data.prefetch import ordered_prefetch

    def finish(index):
        if index == 2:
            raise KeyError("batch 2")
        return index

    before = set(threading.enumerate())
    results = ordered_prefetch(lambda i: i, 8, num_threads=2, finish=finish)
    assert next(results) == 0 and next(results) == 1
    with pytest.raises(KeyError, match="batch 2"):
        next(results)
    results.close()
    assert set(threading.enumerate()) <= before
