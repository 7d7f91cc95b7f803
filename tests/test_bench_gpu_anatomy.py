"""bench_gpu.py's step anatomy (host time to queue a step, GPU time to run it) measures
what it says, checked against a simulated GPU stream whose timings are known."""

from __future__ import annotations

import importlib.util
import pathlib
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_bench_gpu():
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "benchmarks" / "bench_gpu.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_gpu"] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


bench_gpu = load_bench_gpu()


class SimulatedStream:
    """A GPU stream on the host's clock: work runs in order, each piece after the one
    before and never before a hold ends; an event is reached when the work before it is."""

    def __init__(self):
        self.free_at = time.perf_counter()  # when the work queued so far is done

    def hold(self, seconds: float) -> None:
        self.free_at = max(self.free_at, time.perf_counter()) + seconds

    def launch(self, seconds: float) -> None:
        self.free_at = max(self.free_at, time.perf_counter()) + seconds

    def synchronize(self) -> None:
        time.sleep(max(0.0, self.free_at - time.perf_counter()))

    def elapsed_ms(self, begin: float, end: float) -> float:
        time.sleep(max(0.0, end - time.perf_counter()))  # wait for `end`, as a GPU event
        return 1e3 * (end - begin)

    def timeline(self):
        return bench_gpu.Timeline(
            hold=self.hold,
            mark=lambda: max(self.free_at, time.perf_counter()),  # when the GPU gets there
            reached=lambda event: time.perf_counter() >= event,
            elapsed_ms=self.elapsed_ms,
        )


def test_the_host_and_gpu_times_of_a_step_are_told_apart():
    stream = SimulatedStream()

    def step():  # 30 ms of host work queueing 3 kernels of 5 ms each
        for _ in range(3):
            time.sleep(0.01)
            stream.launch(0.005)

    host_ms, gpu_ms = bench_gpu.step_anatomy(
        step, timeline=stream.timeline(), repeats=3, hold_s=0.3
    )
    assert 30 <= host_ms < 60  # the host's 30 ms, whatever the GPU does
    assert gpu_ms == pytest.approx(15, abs=0.5)  # the three kernels back to back


def test_a_step_that_waits_for_the_gpu_gives_no_figures():
    stream = SimulatedStream()

    def step():
        stream.launch(0.005)
        stream.synchronize()  # waits for the hold too: host and GPU times would mix

    assert bench_gpu.step_anatomy(step, timeline=stream.timeline(), hold_s=0.1) is None
