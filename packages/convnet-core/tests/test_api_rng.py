"""`apply`'s `rng`: one generator passed to every call draws new numbers each time; an int
seed starts a new generator at each call, so it repeats its draws (docs/custom_loop.md)."""

import convnet_core as cn
import numpy
from convnet_core import layers as L


def dropout_masks(xp, rng_for_call, calls=3):
    """The dropout masks (as host booleans, 1 = kept) of `calls` training calls of one
    Dropout layer on a batch of ones, with `rng_for_call(i)` as the rng of call i."""
    layer = L.Dropout(0.5)
    params, state = cn.init(layer, (64,), rng=0, xp=xp)
    x = xp.ones((4, 64), dtype=xp.float32)
    masks = []
    for call in range(calls):
        y, _, _ = cn.apply(layer, params, state, x, training=True, rng=rng_for_call(call), xp=xp)
        masks.append(cn.backend.to_host(y) != 0)
    return masks


def test_one_generator_for_the_loop_draws_a_new_mask_for_each_batch(xp):
    generator = xp.random.default_rng(3)
    masks = dropout_masks(xp, lambda call: generator)
    assert not numpy.array_equal(masks[0], masks[1])
    assert not numpy.array_equal(masks[1], masks[2])
    # and the run repeats from the same seed
    again = xp.random.default_rng(3)
    for got, want in zip(dropout_masks(xp, lambda call: again), masks, strict=True):
        numpy.testing.assert_array_equal(got, want)


def test_an_int_seed_starts_a_new_generator_each_call_so_repeats_the_mask(xp):
    # rng=epoch inside a loop over batches: every batch of the epoch gets one mask
    masks = dropout_masks(xp, lambda call: 7)
    numpy.testing.assert_array_equal(masks[0], masks[1])
    numpy.testing.assert_array_equal(masks[0], masks[2])
    assert 0 < masks[0].sum() < masks[0].size  # a real mask, not all kept or all dropped
    numpy.testing.assert_array_equal(
        masks[0], dropout_masks(xp, lambda call: xp.random.default_rng(7), calls=1)[0]
    )
