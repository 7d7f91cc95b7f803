"""The noxfile's choice of CuPy wheel for `nox -s tests-cuda`, by the driver's CUDA."""

from __future__ import annotations

import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def noxfile():
    """The noxfile as a module (imported here, not at collection: it needs nox, which the
    workspace session installs and the other sessions that collect tests/ do not)."""
    spec = importlib.util.spec_from_file_location("noxfile", ROOT / "noxfile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# the header line of `nvidia-smi` as drivers print it
HEADER = "| NVIDIA-SMI 580.159.04   Driver Version: 580.159.04   CUDA Version: {} |"


@pytest.mark.parametrize(
    ("cuda", "wheel"),
    [
        ("11.8", "cupy-cuda11x>=13"),
        ("12.4", "cupy-cuda12x>=13"),
        ("13.0", "cupy-cuda13x>=13"),
        ("14.1", "cupy-cuda13x>=13"),
    ],
)
def test_the_wheel_follows_the_drivers_cuda_version(noxfile, cuda, wheel):
    assert noxfile.cupy_wheel_for(HEADER.format(cuda)) == wheel


def test_without_a_cuda_version_it_takes_the_newest_wheel(noxfile):
    assert noxfile.cupy_wheel_for("") == "cupy-cuda13x>=13"


def test_convnet_cupy_overrides_the_choice(noxfile, monkeypatch):
    monkeypatch.setenv("CONVNET_CUPY", "cupy-cuda12x==13.6.0")
    assert noxfile.cupy_wheel() == "cupy-cuda12x==13.6.0"


def test_with_no_nvidia_smi_it_takes_the_newest_wheel(noxfile, monkeypatch, tmp_path):
    monkeypatch.delenv("CONVNET_CUPY", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi anywhere
    assert noxfile.cupy_wheel() == "cupy-cuda13x>=13"


def test_it_reads_the_report_of_nvidia_smi(noxfile, monkeypatch, tmp_path):
    monkeypatch.delenv("CONVNET_CUPY", raising=False)
    fake = tmp_path / "nvidia-smi"
    fake.write_text(f"#!/bin/sh\necho '{HEADER.format('12.2')}'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert noxfile.cupy_wheel() == "cupy-cuda12x>=13"
