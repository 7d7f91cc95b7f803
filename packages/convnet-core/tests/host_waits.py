"""Does a piece of code make the host wait for the GPU? Hold the GPU back and see.

A training step should only queue work on the GPU: reading a value on the host (`float(x)`,
`bool(x)`, `x.get()`, `x.item()`) or synchronizing a stream makes the host wait until the
GPU has caught up, and each such wait leaves the GPU idle while Python runs.

`assert_never_waits_for_the_gpu(cp, work)` launches a one-thread kernel that keeps the
current stream busy for `hold_s` seconds (`convnet_core.cuda_kernels.hold_the_gpu`), then
calls `work()`. Work that only queues kernels
returns long before the hold ends; work that waits for the GPU anywhere returns only after
it, because any wait on the stream first waits for the hold. So `work()` returning after
`hold_s` seconds means the host waited, and `HostWaitedForTheGPU` is raised. Nothing else is
needed from CuPy: the check covers every kind of wait, inside CuPy or out.

(A CUDA stream capture, which refuses host syncs outright, cannot be used: CuPy 14 refuses
to call cuBLAS while a stream is capturing, and every matrix product calls cuBLAS.)

On the CuPy stand-in of tests-cuda-on-cpu (tests/cupy_on_numpy.py) NumPy runs each
operation at once, so there is no queue to hold back; there the stand-in refuses host reads
for the duration of `work()` instead, and names the read.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from convnet_core.cuda_kernels import hold_the_gpu

__all__ = ["HostWaitedForTheGPU", "assert_never_waits_for_the_gpu"]


class HostWaitedForTheGPU(AssertionError):
    """The host waited for the GPU while the work was being queued."""


def assert_never_waits_for_the_gpu(
    cp: Any, work: Callable[[], Any], *, hold_s: float = 2.0, warm_up: bool = False
) -> Any:
    """Call `work()` while the current stream is held back for `hold_s` seconds; return
    its result, or raise HostWaitedForTheGPU if the host waited for the GPU inside it.

    `hold_s` must exceed the host time `work()` takes to queue its kernels (milliseconds
    for a training step, once its kernels are compiled and the memory pool is warm).
    CuPy compiles each kernel the first time it meets it (0.1-0.5 s apiece on a machine
    whose kernel cache is empty), which counts as host time inside the hold: with
    `warm_up`, `work()` runs once before the hold and is waited for, so the held call finds
    its kernels compiled and its memory in the pool. (For work that may run twice; the
    check of the held call is the same.)
    """
    if getattr(cp, "is_stand_in", False):
        return _with_host_reads_refused(work)
    if warm_up:
        work()
        cp.cuda.get_current_stream().synchronize()
    hold_the_gpu(0.0)  # compiled and loaded before the clock starts
    start = time.perf_counter()
    hold_the_gpu(hold_s)
    result = work()
    returned_after = time.perf_counter() - start
    cp.cuda.get_current_stream().synchronize()
    if returned_after >= hold_s:
        raise HostWaitedForTheGPU(
            f"the work returned {returned_after:.2f} s after the GPU was held for {hold_s} s: "
            "it waited for the GPU (a host read or a synchronize); tests-cuda-on-cpu names "
            "the read"
        )
    return result


def _with_host_reads_refused(work: Callable[[], Any]) -> Any:
    from cupy_on_numpy import HostReadRefused, refusing_host_reads

    try:
        with refusing_host_reads():
            return work()
    except HostReadRefused as error:
        raise HostWaitedForTheGPU(str(error)) from error
