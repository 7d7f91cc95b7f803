"""Checks on a kernel launch run on the CPU by cuda_source_on_cpu, for what
compute-sanitizer's memcheck and racecheck look for on a GPU.

The launch runs several times, each time over fresh copies of its arrays:

- **Out of bounds.** Each array is copied into a buffer in which every byte that is not one
  of its elements (64 bytes on each side, and the gaps between a view's elements) holds a
  fill byte. A launch that changes one of those bytes writes outside its array; a launch
  whose outputs change when the fills change (0xFF around the inputs and 0xA5 around the
  outputs, then 0x00 and 0x5A) reads outside. Inputs and outputs have different fills so
  that a value read from outside an input and written outside an output shows.
- **A thread reading what another writes.** On a GPU the threads of a launch run at once,
  in no order. Here they run one after another, first to last and then last to first:
  outputs that differ show that a thread's result depends on another thread's writes.
- **Two threads writing one element.** Each thread runs alone over outputs filled with a
  sentinel byte, twice (0xA5, then 0x5A, so that no written value can match both), which
  shows the elements it writes. An element that two threads write is a race on a GPU: one
  write is lost (an unguarded `+=`), or which one lands depends on timing.

The outputs are the arrays given for pointer parameters not declared `const` (for a
RawKernel) or for `raw` outputs (an ElementwiseKernel's other outputs are its own, one
element per index). Each check raises LaunchError, which names the kernel, the parameter
and an element. The first run's outputs go back into the arrays given, as an unchecked
launch would have written them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy
from numpy.lib.array_utils import byte_bounds

__all__ = [
    "LaunchError",
    "PaddedCopy",
    "check_each_element_has_one_writer",
    "check_runs_agree",
    "refuse_outputs_sharing_memory",
]

GUARD_BYTES = 64  # on each side of an array's elements
# (around the inputs, around the outputs), one pair per way of filling; 0xFF is a NaN in
# every float type
FILLS = ((0xFF, 0xA5), (0x00, 0x5A))
SENTINELS = (0xA5, 0x5A)


class LaunchError(AssertionError):
    """A kernel launch that would misbehave on a GPU: out of bounds, or racing."""


class PaddedCopy:
    """`array`'s elements copied into a buffer whose other bytes all hold `fill`.

    `elements` is the copy, with the array's shape and strides (a view stays a view);
    `element_bytes` is the same memory as uint8, shape (*array.shape, itemsize).
    """

    def __init__(self, array: numpy.ndarray, fill: int) -> None:
        low, high = byte_bounds(array)  # the memory from the lowest to the highest element
        self.start = GUARD_BYTES + (array.ctypes.data - low)  # the first element, in buffer
        self.fill = fill
        self.buffer = numpy.full(high - low + 2 * GUARD_BYTES, fill, numpy.uint8)
        self.elements = numpy.ndarray(
            array.shape, array.dtype, self.buffer, self.start, array.strides
        )
        self.elements[...] = array
        byte_shape, byte_strides = (*array.shape, array.itemsize), (*array.strides, 1)
        self.element_bytes = numpy.ndarray(
            byte_shape, numpy.uint8, self.buffer, self.start, byte_strides
        )
        is_element = numpy.zeros(self.buffer.shape, bool)
        numpy.ndarray(byte_shape, bool, is_element, self.start, byte_strides)[...] = True
        self._outside = ~is_element

    def stray_writes(self) -> numpy.ndarray:
        """Byte offsets, from the first element, of the bytes outside the elements that no
        longer hold the fill."""
        return numpy.flatnonzero(self._outside & (self.buffer != self.fill)) - self.start


def refuse_outputs_sharing_memory(
    kernel_name: str, names: list[str], arrays: dict[int, numpy.ndarray], outputs: list[int]
) -> None:
    """Raise TypeError where an output shares memory with another array argument: the
    checks copy each array on its own, which would part the two."""
    for position in outputs:
        for other, array in arrays.items():
            if other != position and numpy.shares_memory(arrays[position], array):
                raise TypeError(
                    f"{kernel_name}: `{names[position]}` shares memory with `{names[other]}`, "
                    "which the launch checks cannot copy apart"
                )


def check_runs_agree(
    kernel_name: str,
    names: list[str],
    arrays: dict[int, numpy.ndarray],
    outputs: list[int],
    run: Callable[[dict[int, Any], bool], dict[int, numpy.ndarray]],
) -> dict[int, numpy.ndarray]:
    """Run the launch three ways and check that they write the same outputs, inside them.

    `arrays` maps argument positions to the arrays given there, `outputs` lists the
    positions the launch may write and `names` holds every parameter's name. `run(copies,
    reverse)` launches over `copies` (position -> PaddedCopy) with the threads first to
    last, or last to first, and returns any further outputs it made (position -> array).
    Returns the first run's outputs: position -> array, the copies included.
    """
    ways = [  # (fills, reverse, what a difference from the first run means)
        (FILLS[0], False, None),
        (FILLS[0], True, "a thread reads what another thread of the launch writes"),
        (FILLS[1], False, "the kernel reads outside its arrays"),
    ]
    first: dict[int, numpy.ndarray] = {}
    for (input_fill, output_fill), reverse, meaning in ways:
        copies = {
            position: PaddedCopy(array, output_fill if position in outputs else input_fill)
            for position, array in arrays.items()
        }
        made = run(copies, reverse)
        for position, copy in copies.items():
            stray = copy.stray_writes()
            if stray.size:
                raise LaunchError(
                    f"{kernel_name} writes outside `{names[position]}`: {stray.size} bytes, "
                    f"at byte offsets {stray[:4].tolist()} from its first element"
                )
        written = {position: copies[position].elements for position in outputs} | made
        if meaning is None:
            first = written
            continue
        for position, array in written.items():
            index = _first_difference(first[position], array)
            if index is not None:
                order = "last to first" if reverse else "first to last"
                raise LaunchError(
                    f"{kernel_name}: `{names[position]}`{list(index)} differs when the threads "
                    f"run {order} with {input_fill:#04x} around the inputs and "
                    f"{output_fill:#04x} around the outputs: {meaning}"
                )
    return first


def check_each_element_has_one_writer(
    kernel_name: str,
    names: list[str],
    arrays: dict[int, numpy.ndarray],
    outputs: list[int],
    threads: int,
    run_thread: Callable[[dict[int, PaddedCopy], int], None],
) -> None:
    """Run each of the launch's `threads` threads alone and check that no element of an
    output is written by two of them. `run_thread(copies, thread)` runs one thread over
    `copies` (position -> PaddedCopy); the other arguments are as for check_runs_agree."""
    writer = {position: numpy.full(arrays[position].shape, -1) for position in outputs}
    for sentinel in SENTINELS:
        copies = {position: PaddedCopy(array, FILLS[0][0]) for position, array in arrays.items()}
        for position in outputs:
            copies[position].element_bytes[...] = sentinel
        for thread in range(threads):
            run_thread(copies, thread)
            for position in outputs:
                element_bytes = copies[position].element_bytes
                written = (element_bytes != sentinel).any(axis=-1)  # the output's shape
                earlier = writer[position][written]
                clash = (earlier >= 0) & (earlier != thread)
                if clash.any():
                    index = numpy.argwhere(written)[clash][0].tolist()
                    raise LaunchError(
                        f"{kernel_name}: threads {earlier[clash][0]} and {thread} both write "
                        f"`{names[position]}`{index}. On a GPU they run at the same time, so "
                        "one write is lost or which one lands depends on timing"
                    )
                writer[position][written] = thread
                element_bytes[written] = sentinel


def _first_difference(a: numpy.ndarray, b: numpy.ndarray) -> tuple | None:
    """The index of the first element whose bytes differ between a and b, or None."""
    a_bytes = numpy.ascontiguousarray(a).view(numpy.uint8).reshape(*a.shape, a.itemsize)
    b_bytes = numpy.ascontiguousarray(b).view(numpy.uint8).reshape(*b.shape, b.itemsize)
    differs = (a_bytes != b_bytes).any(axis=-1)
    return tuple(numpy.argwhere(differs)[0].tolist()) if differs.any() else None
