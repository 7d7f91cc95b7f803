"""tests/host_waits.py's GPU check, timed against a simulated GPU.

On a GPU, `assert_never_waits_for_the_gpu` holds the stream for `hold_s` seconds and calls
the work: work that returns after the hold ended waited for the GPU. CuPy compiles a kernel
the first time it meets it, which takes host time too, so work whose kernels are not yet
compiled can return late without ever waiting. The CuPy stand-in of tests-cuda-on-cpu
cannot show this (it checks host reads instead of timing, and compiles nothing inside the
work), so here the GPU's side is simulated: `hold_the_gpu` is recorded, and the work
sleeps for its "compilation" on its first call only.
"""

from __future__ import annotations

import time
import types

import host_waits
import pytest
from host_waits import HostWaitedForTheGPU, assert_never_waits_for_the_gpu

HOLD_S = 0.2


class SimulatedGpu:
    """A `cp` for host_waits: its stream's synchronize and the holds are recorded."""

    def __init__(self, monkeypatch):
        self.events = []
        stream = types.SimpleNamespace(synchronize=lambda: self.events.append("synchronize"))
        self.cuda = types.SimpleNamespace(get_current_stream=lambda: stream)
        monkeypatch.setattr(host_waits, "hold_the_gpu", lambda s: self.events.append(f"hold {s}"))

    def work(self, *, first_call_s, later_calls_s=0.0):
        """Work that takes first_call_s of host time on its first call (compiling its
        kernels), later_calls_s on the others (a wait for the GPU, when not 0)."""
        calls = []

        def work():
            calls.append(None)
            self.events.append("work")
            time.sleep(first_call_s if len(calls) == 1 else later_calls_s)
            return len(calls)

        return work


def test_work_compiling_its_kernels_inside_the_hold_looks_like_a_wait(monkeypatch):
    # why warm_up exists: this work never waits for the GPU
    gpu = SimulatedGpu(monkeypatch)
    with pytest.raises(HostWaitedForTheGPU):
        assert_never_waits_for_the_gpu(gpu, gpu.work(first_call_s=1.5 * HOLD_S), hold_s=HOLD_S)


def test_warm_up_compiles_the_work_before_the_hold(monkeypatch):
    gpu = SimulatedGpu(monkeypatch)
    work = gpu.work(first_call_s=1.5 * HOLD_S)
    assert assert_never_waits_for_the_gpu(gpu, work, hold_s=HOLD_S, warm_up=True) == 2
    # the first call runs and is waited for before the GPU is held; the second is checked
    assert gpu.events == [
        "work", "synchronize", "hold 0.0", f"hold {HOLD_S}", "work", "synchronize",
    ]  # fmt: skip


def test_warm_up_still_catches_work_that_waits(monkeypatch):
    gpu = SimulatedGpu(monkeypatch)
    work = gpu.work(first_call_s=0.0, later_calls_s=1.5 * HOLD_S)  # waits every time
    with pytest.raises(HostWaitedForTheGPU, match=f"held for {HOLD_S} s"):
        assert_never_waits_for_the_gpu(gpu, work, hold_s=HOLD_S, warm_up=True)
