"""Seeds: every random choice of convnet_data (splits, subsets, batch orders, augmentation)
takes the same kinds of seed, turned into NumPy's SeedSequence or Generator here."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["SeedLike", "generator", "seed_sequence"]

#: an int or a sequence of ints (e.g. [seed, epoch]), a Generator, a SeedSequence, or None
SeedLike = int | Sequence[int] | np.random.Generator | np.random.SeedSequence | None


def seed_sequence(seed: SeedLike, name: str) -> np.random.SeedSequence:
    """A SeedSequence from ints, a Generator (which draws one), a SeedSequence or None.

    A SeedSequence is copied, not used itself: spawning from it would advance the caller's
    object, and the same seed must give the same result every time, as an int does.
    Anything else raises the TypeError (or, for a negative int, the ValueError) of NumPy,
    with a message naming `name`, e.g. "batches: seed".
    """
    if isinstance(seed, np.random.SeedSequence):
        return np.random.SeedSequence(
            seed.entropy, spawn_key=seed.spawn_key, pool_size=seed.pool_size
        )
    if isinstance(seed, np.random.Generator):
        return np.random.SeedSequence(int(seed.integers(2**63)))  # host
    try:
        return np.random.SeedSequence(seed)
    except (TypeError, ValueError) as error:
        raise type(error)(
            f"{name} must be an int >= 0, a sequence of them, a NumPy Generator, "
            f"a SeedSequence or None, got {seed!r}"
        ) from None


def generator(seed: SeedLike, name: str) -> np.random.Generator:
    """`seed` itself when it is a Generator (its draws advance it), else a new Generator
    seeded by `seed_sequence(seed, name)`, so the same int gives the same draws each time."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed_sequence(seed, name))
