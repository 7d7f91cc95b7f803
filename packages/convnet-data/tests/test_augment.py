"""Augmentation: exact known moves, determinism, and sanity on real digits."""

from __future__ import annotations

import re

import numpy as np
import pytest
from convnet_core import backend
from convnet_data import Dataset, augment, load_mnist


def batch(xp, n=6, c=2, h=9, w=9, seed=0):
    rng = np.random.default_rng(seed)
    return xp.asarray(rng.random((n, c, h, w)).astype(np.float32))


def centre_of_mass(x):
    """(N, 2) row and column centre of mass of the summed channels."""
    x = backend.to_host(x).sum(axis=1)  # (N, H, W)
    rows = np.arange(x.shape[1])[None, :, None]
    cols = np.arange(x.shape[2])[None, None, :]
    total = x.sum(axis=(1, 2))
    return np.stack([(x * rows).sum(axis=(1, 2)) / total, (x * cols).sum(axis=(1, 2)) / total], 1)


def test_whole_pixel_shift_moves_pixels_exactly(xp):
    x = batch(xp)
    shifts = np.array([[1, 2], [-2, 0], [0, -1], [3, 3], [0, 0], [-1, 1]])
    out = backend.to_host(augment.transform(x, np.zeros(6), shifts))
    host = backend.to_host(x)
    for i, (dy, dx) in enumerate(shifts):
        expected = np.zeros_like(host[i])
        h, w = host.shape[2:]
        expected[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = host[
            i, :, max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
        ]
        np.testing.assert_allclose(out[i], expected, atol=1e-6)


def test_quarter_turn_is_rot90(xp):
    x = batch(xp, h=8, w=8)
    out = augment.transform(x, np.full(6, 90.0), np.zeros((6, 2)))
    expected = np.rot90(backend.to_host(x), k=1, axes=(2, 3))
    np.testing.assert_allclose(backend.to_host(out), expected, atol=1e-5)


def test_half_pixel_shift_is_the_average_of_neighbours(xp):
    x = batch(xp, n=1, c=1)
    out = backend.to_host(augment.transform(x, [0.0], [[0.0, 0.5]]))
    host = backend.to_host(x)[0, 0]
    np.testing.assert_allclose(out[0, 0, :, 1:], (host[:, 1:] + host[:, :-1]) / 2, atol=1e-6)
    np.testing.assert_allclose(out[0, 0, :, 0], host[:, 0] / 2, atol=1e-6)  # outside is 0


@pytest.mark.parametrize(
    "make",
    [
        lambda: augment.random_shift(2),
        lambda: augment.random_rotation(15),
        lambda: augment.random_affine(2, 10, 0.1),
        lambda: augment.elastic(8, 4),
        lambda: augment.compose(augment.random_shift(1), augment.elastic(4, 3)),
    ],
    ids=["shift", "rotation", "affine", "elastic", "compose"],
)
def test_deterministic_for_a_seed_and_varied_across_samples(xp, make):
    aug = make()
    x = batch(xp)
    a = backend.to_host(aug(x, np.random.default_rng(5)))
    b = backend.to_host(aug(x, np.random.default_rng(5)))
    c = backend.to_host(aug(x, np.random.default_rng(6)))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert a.shape == x.shape and a.dtype == np.float32
    assert np.isfinite(a).all()
    changes = [not np.allclose(a[i], backend.to_host(x)[i]) for i in range(len(a))]
    assert sum(changes) >= 4  # most samples were moved, each by its own draw


def test_scale_above_one_enlarges_about_the_centre(xp):
    # a ramp x[.., i, j] = j (plus 100 i): bilinear reads of a linear image are exact, so
    # scaling by s about the centre c = 4 gives c + (j - c) / s wherever the source is inside
    h = w = 9
    ramp = np.arange(h)[:, None] * 100.0 + np.arange(w)[None, :]
    x = xp.asarray(np.broadcast_to(ramp, (2, 1, h, w)).astype(np.float32))
    out = backend.to_host(augment.transform(x, np.zeros(2), np.zeros((2, 2)), [2.0, 0.5]))
    j = np.arange(w, dtype=np.float64)
    enlarged = (4 + (j - 4) / 2)[None, :] + 100 * (4 + (j - 4) / 2)[:, None]
    np.testing.assert_allclose(out[0, 0], enlarged, atol=1e-3)  # columns 2 + j/2: 2 to 6
    # halved: c + 2 (j - c), from 0 at j = 2 to 8 at j = 6; sources outside read 0
    src = 2 * j - 4
    inside = (src >= 0) & (src <= 8)
    shrunk = np.where(inside[:, None] & inside[None, :], src[None, :] + 100 * src[:, None], 0)
    np.testing.assert_allclose(out[1, 0], shrunk, atol=1e-3)


def test_gaussian_matrix_is_a_normalised_gaussian_of_std_sigma():
    for sigma in (1.5, 3.0, 4.0):
        g = augment.gaussian_matrix(81, sigma)
        row = g[40]  # the middle row: the kernel fits inside, 10 sigma either way
        offsets = np.arange(81) - 40.0
        assert row.sum() == pytest.approx(1.0, abs=1e-6)  # a blur keeps the mean
        assert (row * offsets).sum() == pytest.approx(0.0, abs=1e-9)
        assert (row * offsets**2).sum() == pytest.approx(sigma**2, rel=1e-6)  # variance
        assert row[40] == pytest.approx(1 / (sigma * np.sqrt(2 * np.pi)), rel=1e-12)
        assert row[41] / row[40] == pytest.approx(np.exp(-0.5 / sigma**2), rel=1e-12)
        np.testing.assert_allclose(g, g.T)
    # blurring a constant field leaves its interior unchanged
    g = augment.gaussian_matrix(40, 2.0)
    np.testing.assert_allclose((g @ np.ones(40))[12:28], 1.0, atol=1e-6)


def test_zero_strength_is_the_identity(xp):
    x = batch(xp)
    rng = np.random.default_rng(0)
    for aug in (augment.random_affine(0, 0.0), augment.elastic(alpha=0.0)):
        np.testing.assert_allclose(backend.to_host(aug(x, rng)), backend.to_host(x), atol=1e-6)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: augment.random_affine(max_shift=-1),
            "RandomAffine: max_shift must be >= 0, got -1",
        ),
        (
            lambda: augment.random_shift(2.5),
            "RandomAffine: max_shift must be a whole number >= 0, got 2.5",
        ),
        (
            lambda: augment.random_rotation(np.nan),
            "RandomAffine: max_degrees must be >= 0, got nan",
        ),
        (
            lambda: augment.random_rotation(np.inf),
            "RandomAffine: max_degrees must be >= 0, got inf",
        ),
        (
            lambda: augment.random_affine(max_scale=np.nan),
            r"RandomAffine: max_scale must be in \[0, 1\), got nan",
        ),
        (
            lambda: augment.random_affine(max_scale=1.0),
            r"RandomAffine: max_scale must be in \[0, 1\), got 1.0",
        ),
        (lambda: augment.elastic(sigma=0), "Elastic: sigma must be > 0, got 0"),
        (lambda: augment.elastic(sigma=np.nan), "Elastic: sigma must be > 0, got nan"),
        (lambda: augment.elastic(alpha=np.nan), "Elastic: alpha must be >= 0, got nan"),
        (lambda: augment.elastic(alpha=-1.0), "Elastic: alpha must be >= 0, got -1.0"),
    ],
)
def test_augmentations_reject_bad_parameters(make, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        make()


def test_whole_shifts_given_as_numpy_integers_are_accepted():
    assert augment.random_shift(np.int64(3)).max_shift == 3


AUGMENTATIONS = {
    "RandomAffine": augment.random_rotation(10),
    "Elastic": augment.elastic(),
    "Compose": augment.compose(augment.random_shift(1)),
}


@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_one_image_is_refused_with_the_batch_shape_to_use(xp, name):
    image = xp.zeros((1, 7, 7), dtype=xp.float32)  # (C, H, W), no batch axis
    caller = "RandomAffine" if name == "Compose" else name  # Compose's step says it
    message = (
        f"{caller}: x must be a batch (N, C, H, W), got shape (1, 7, 7); "
        "one image (C, H, W) is the batch x[None]"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        AUGMENTATIONS[name](image, np.random.default_rng(0))
    assert AUGMENTATIONS[name](image[None], np.random.default_rng(0)).shape == (1, 1, 7, 7)


def test_fixed_moves_name_themselves_in_shape_and_dtype_errors(xp):
    with pytest.raises(ValueError, match=r"^transform: x must be a batch \(N, C, H, W\), got"):
        augment.transform(xp.zeros((7, 7)), [0.0], [[0, 0]])
    grid = xp.zeros((1, 7, 7))
    with pytest.raises(ValueError, match=r"^sample_bilinear: x must be a batch"):
        augment.sample_bilinear(xp.zeros((1, 7, 7)), grid, grid)
    with pytest.raises(TypeError, match="^RandomAffine: x must hold integers or floats, got bool$"):
        augment.random_shift(1)(xp.zeros((1, 1, 7, 7), dtype=bool), 0)
    with pytest.raises(TypeError, match="^Elastic: x must be a NumPy or CuPy array"):
        augment.elastic()([[[[0.0]]]], 0)


def test_an_int_seed_is_accepted_in_place_of_a_generator(xp):
    x = batch(xp)
    for aug in (
        augment.random_affine(2, 10),
        augment.elastic(),
        augment.compose(augment.random_shift(1), augment.random_rotation(5)),
    ):
        from_int = backend.to_host(aug(x, 7))
        from_generator = backend.to_host(aug(x, np.random.default_rng(7)))
        np.testing.assert_array_equal(from_int, from_generator)
        np.testing.assert_array_equal(backend.to_host(aug(x, 7)), from_int)  # the same each call
        assert not np.allclose(backend.to_host(aug(x, 8)), from_int)


def test_compose_makes_one_generator_for_all_its_steps(xp):
    # with the int passed on to each step, both rotations would draw the same angles
    x = batch(xp)
    rotation = augment.random_rotation(30)
    twice = backend.to_host(augment.compose(rotation, rotation)(x, 3))
    rng = np.random.default_rng(3)
    np.testing.assert_allclose(twice, backend.to_host(rotation(rotation(x, rng), rng)), atol=1e-5)


@pytest.mark.parametrize(
    ("seed", "error"), [("abc", TypeError), (2.5, TypeError), (-1, ValueError)]
)
def test_a_bad_seed_is_refused_naming_the_augmentation(xp, seed, error):
    message = (
        "RandomAffine: rng must be an int >= 0, a sequence of them, a NumPy Generator, "
        f"a SeedSequence or None, got {seed!r}"
    )
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        augment.random_shift(1)(batch(xp), seed)


def horizontal_bar(xp, dtype, value=200):
    """A 7x7 image, 0 but for its middle row, (1, 1, 7, 7)."""
    x = np.zeros((1, 1, 7, 7), dtype)
    x[0, 0, 3] = value
    return xp.asarray(x)


def test_integer_images_are_interpolated_in_float_and_rounded(xp):
    # the middle row of a bar rotated by 10 degrees about the centre reads the bar at
    # 3 + sin(10 deg) (j - 3): 200 (1 - |sin(10 deg) (j - 3)|) by bilinear interpolation
    expected = 200 * (1 - np.abs(np.sin(np.radians(10)) * (np.arange(7) - 3)))
    np.testing.assert_allclose(
        expected, [95.81, 130.54, 165.27, 200, 165.27, 130.54, 95.81], atol=0.01
    )
    as_float = augment.transform(horizontal_bar(xp, np.float32), [10.0], [[0, 0]])
    np.testing.assert_allclose(backend.to_host(as_float)[0, 0, 3], expected, atol=1e-3)
    as_uint8 = augment.transform(horizontal_bar(xp, np.uint8), [10.0], [[0, 0]])
    assert as_uint8.dtype == np.uint8
    np.testing.assert_array_equal(
        backend.to_host(as_uint8)[0, 0, 3], [96, 131, 165, 200, 165, 131, 96]
    )
    np.testing.assert_array_equal(
        backend.to_host(as_uint8), np.rint(backend.to_host(as_float)).astype(np.uint8)
    )


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.uint16, np.int32, np.int64])
def test_every_augmentation_keeps_integer_dtypes_and_rounds_the_float_result(xp, dtype):
    info = np.iinfo(dtype)
    rng = np.random.default_rng(0)
    low = max(info.min, -(2**40))  # exact in float64, the working dtype of wide integers
    high = min(info.max, 2**40)
    x = xp.asarray(rng.integers(low, high, (4, 2, 9, 9), endpoint=True).astype(dtype))
    work = np.float32 if info.bits <= 16 else np.float64
    for aug in (augment.random_affine(2, 20, 0.2), augment.elastic(10, 3)):
        out = aug(x, np.random.default_rng(1))
        assert out.dtype == dtype and out.shape == x.shape
        reference = aug(x.astype(work), np.random.default_rng(1))
        np.testing.assert_array_equal(
            backend.to_host(out), np.rint(backend.to_host(reference)).astype(dtype)
        )


def test_extreme_integer_values_stay_in_range(xp):
    # weighted means of pixels and the 0 outside: never beyond the input's range
    for dtype, value in ((np.uint8, 255), (np.int8, -128), (np.int16, 32767)):
        x = xp.full((8, 1, 9, 9), value, dtype=dtype)
        out = backend.to_host(augment.random_affine(2, 45, 0.3)(x, 0))
        assert out.dtype == dtype
        assert set(np.unique(out)) >= {0, value}  # edges read 0, the inside keeps the value
        assert out.min() >= min(value, 0) and out.max() <= max(value, 0)


@pytest.fixture(scope="module")
def digits():
    train, _ = load_mnist()
    return train.subset(64)


def test_shift_moves_the_centre_of_mass_of_digits(xp, digits):
    x = xp.asarray(digits.images.astype(np.float32))
    shifts = np.tile([[2, -3]], (len(digits), 1))
    moved = augment.transform(x, np.zeros(len(digits)), shifts)
    delta = centre_of_mass(moved) - centre_of_mass(x)
    # digits whose ink stays inside the frame move by exactly the shift
    kept = np.isclose(
        backend.to_host(moved).sum(axis=(1, 2, 3)), backend.to_host(x).sum(axis=(1, 2, 3))
    )
    assert kept.sum() >= 40
    np.testing.assert_allclose(delta[kept], np.tile([[2.0, -3.0]], (kept.sum(), 1)), atol=1e-3)
    # the others lost ink at the frame, and still moved that way
    assert (delta[:, 0] > 1.0).all() and (delta[:, 1] < -2.0).all()


def test_rotation_keeps_the_ink_and_the_centre(xp, digits):
    x = xp.asarray(digits.images.astype(np.float32))
    out = augment.random_rotation(10)(x, np.random.default_rng(0))
    ink_before = backend.to_host(x).sum(axis=(1, 2, 3))
    ink_after = backend.to_host(out).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(ink_after, ink_before, rtol=0.02)
    assert np.abs(centre_of_mass(out) - centre_of_mass(x)).max() < 1.5


def test_elastic_keeps_the_digit_close(xp, digits):
    x = xp.asarray(digits.images.astype(np.float32))
    out = backend.to_host(augment.elastic(8, 4)(x, np.random.default_rng(0)))
    host = backend.to_host(x)
    assert 0 < np.abs(out - host).mean() < 0.5 * host.mean()
    np.testing.assert_allclose(out.sum(axis=(1, 2, 3)), host.sum(axis=(1, 2, 3)), rtol=0.1)


def test_augment_in_batches_is_deterministic_and_threads_do_not_matter(xp):
    rng = np.random.default_rng(0)
    ds = Dataset(rng.integers(0, 256, (50, 1, 12, 12), dtype=np.uint8), np.arange(50) % 10)
    aug = augment.random_affine(2, 10)

    def epoch(threads):
        return [
            backend.to_host(x)
            for x, _ in ds.batches(8, seed=4, augment=aug, xp=xp, num_threads=threads)
        ]

    a, b = epoch(0), epoch(3)
    for xa, xb in zip(a, b, strict=True):
        np.testing.assert_array_equal(xa, xb)
    plain = [backend.to_host(x) for x, _ in ds.batches(8, seed=4, xp=xp)]
    assert not np.allclose(a[0], plain[0])
    assert all(0.0 <= x.min() and x.max() <= 1.0 + 1e-6 for x in a)


def test_each_batch_gets_its_own_augmentation(xp):
    # 40 copies of one image, not shuffled: if every batch drew from the same stream, all
    # five batches would come out identical
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (1, 1, 12, 12), dtype=np.uint8)
    ds = Dataset(np.repeat(image, 40, axis=0), np.zeros(40, int))
    aug = augment.random_affine(2, 15)
    for threads in (0, 3):
        out = [
            backend.to_host(x)
            for x, _ in ds.batches(
                8, shuffle=False, seed=0, augment=aug, xp=xp, num_threads=threads
            )
        ]
        assert len(out) == 5
        for a in range(5):
            for b in range(a + 1, 5):
                assert not np.allclose(out[a], out[b]), (threads, a, b)
        # and within the epoch, the 40 copies were moved in many different ways
        distinct = {np.round(sample, 4).tobytes() for batch in out for sample in batch}
        assert len(distinct) >= 30
