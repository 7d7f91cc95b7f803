"""`Dataset.batches(xp=cupy)` on NumPy dressed as CuPy: the batches are those NumPy gives,
and taking them never waits for the GPU.

On a GPU, CuPy's default stream is shared by every thread, so a batch queued and waited for
in a background thread would make the host wait for all the training kernels queued before
it. Here every host read and every synchronize raises (`refusing_host_reads`), in the
background threads too.
"""

from __future__ import annotations

import pathlib
import sys

import numpy
import pytest
from convnet_data import Dataset
from convnet_data.augment import random_affine

CORE_TESTS = pathlib.Path(__file__).resolve().parents[1] / "packages" / "convnet-core" / "tests"
sys.path.insert(0, str(CORE_TESTS))
from cuda_source_on_cpu import cpp_compiler  # noqa: E402
from cupy_on_numpy import cupy_on_numpy_installed, refusing_host_reads  # noqa: E402

sys.path.remove(str(CORE_TESTS))

pytestmark = pytest.mark.skipif(
    cpp_compiler() is None, reason="no C++ compiler for the kernels (apt-get install g++)"
)


def small_dataset() -> Dataset:
    rng = numpy.random.default_rng(0)
    images = rng.integers(0, 256, (50, 1, 8, 8), dtype=numpy.uint8)
    return Dataset(images, rng.integers(0, 10, 50), num_classes=10)


@pytest.mark.parametrize("num_threads", [0, 2])
@pytest.mark.parametrize("augmented", [False, True])
def test_batches_on_the_gpu_never_wait_and_equal_numpys(tmp_path, num_threads, augmented):
    dataset = small_dataset()
    settings = {"seed": 3, "num_threads": num_threads}
    if augmented:
        settings["augment"] = random_affine(max_shift=1, max_degrees=10.0)
    on_host = list(dataset.batches(16, **settings))
    with cupy_on_numpy_installed(tmp_path, check_launches=False) as cupy:
        with refusing_host_reads(), dataset.batches(16, xp=cupy, **settings) as batches:
            on_device = list(batches)
        assert len(on_device) == len(on_host) == 4  # 16 + 16 + 16 + 2
        for (x, y), (x_host, y_host) in zip(on_device, on_host, strict=True):
            assert isinstance(x, cupy.ndarray) and x.dtype == numpy.float32
            numpy.testing.assert_allclose(x.get(), x_host, rtol=1e-6, atol=1e-6)
            numpy.testing.assert_array_equal(y.get(), y_host)
