"""The noxfile's choices: the CuPy wheel for `nox -s tests-cuda`, by the driver's CUDA; the
CPU build of torch for parity and bench; the tool versions."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

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
        ("12.4", "cupy-cuda12x[ctk]>=14"),
        ("13.0", "cupy-cuda13x[ctk]>=14"),
        ("14.1", "cupy-cuda13x[ctk]>=14"),
    ],
)
def test_the_wheel_follows_the_drivers_cuda_version(noxfile, cuda, wheel):
    assert noxfile.cupy_wheel_for(HEADER.format(cuda)) == wheel


def test_without_a_cuda_version_it_takes_the_newest_wheel(noxfile):
    assert noxfile.cupy_wheel_for("") == "cupy-cuda13x[ctk]>=14"


def test_convnet_cupy_overrides_the_choice(noxfile, monkeypatch):
    monkeypatch.setenv("CONVNET_CUPY", "cupy-cuda12x==13.6.0")
    assert noxfile.cupy_wheel() == "cupy-cuda12x==13.6.0"


def test_with_no_nvidia_smi_it_takes_the_newest_wheel(noxfile, monkeypatch, tmp_path):
    monkeypatch.delenv("CONVNET_CUPY", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi anywhere
    assert noxfile.cupy_wheel() == "cupy-cuda13x[ctk]>=14"


def test_it_reads_the_report_of_nvidia_smi(noxfile, monkeypatch, tmp_path):
    monkeypatch.delenv("CONVNET_CUPY", raising=False)
    fake = tmp_path / "nvidia-smi"
    fake.write_text(f"#!/bin/sh\necho '{HEADER.format('12.2')}'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert noxfile.cupy_wheel() == "cupy-cuda12x[ctk]>=14"


# --- torch for the parity and bench sessions: the CPU build, never a CUDA one


def test_with_a_wheel_folder_only_its_cpu_wheel_of_torch_can_match(noxfile):
    # PyPI has no "+cpu" version: a Python the folder's wheel does not fit fails to resolve
    assert noxfile.torch_install_args("/opt/wheels") == [
        "--find-links",
        "/opt/wheels",
        "torch==2.13.0+cpu",
    ]
    assert noxfile.torch_install_args("/a /b") == [
        "--find-links",
        "/a",
        "--find-links",
        "/b",
        "torch==2.13.0+cpu",
    ]


def test_without_a_wheel_folder_torch_comes_from_pytorchs_cpu_index(noxfile):
    assert noxfile.torch_install_args(None) == ["--torch-backend", "cpu", "torch==2.13.0"]
    assert noxfile.torch_install_args("") == ["--torch-backend", "cpu", "torch==2.13.0"]


def test_uv_knows_the_cpu_torch_backend():
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on the PATH")
    help_text = subprocess.run(
        [uv, "pip", "install", "--help"], capture_output=True, text=True, check=True
    ).stdout
    option = help_text.split("--torch-backend", 1)[1].split("\n      --", 1)[0]
    assert "possible values: auto, cpu," in " ".join(option.split())


def fake_site(folder: pathlib.Path, *, version: str, cuda: str | None, nvidia: bool):
    """A site-packages holding a stand-in torch (its version.py as torch writes it) and, with
    `nvidia`, the distribution nvidia-cublas with one 1000-byte file."""
    torch = folder / "torch"
    torch.mkdir(parents=True)
    (torch / "__init__.py").write_text("raise ImportError('the probe must not import torch')\n")
    (torch / "version.py").write_text(
        "from typing import Optional\n\n"
        f"__version__ = {version!r}\ndebug = False\ncuda: Optional[str] = {cuda!r}\n"
    )
    if nvidia:
        info = folder / "nvidia_cublas-13.1.1.3.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: nvidia-cublas\n")
        (info / "RECORD").write_text("nvidia/cu13/lib/libcublas.so.13,,\n")
        library = folder / "nvidia" / "cu13" / "lib" / "libcublas.so.13"
        library.parent.mkdir(parents=True)
        library.write_bytes(b"\0" * 1000)
    return folder


def probe(noxfile, site: pathlib.Path) -> dict:
    # -S: no site-packages but the stand-in's, so only its distributions are seen
    output = subprocess.run(
        [sys.executable, "-S", "-c", noxfile.TORCH_PROBE, noxfile.CUDA_COMPANION.pattern],
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(output)


def test_the_probe_reads_a_cpu_build(noxfile, tmp_path):
    report = probe(noxfile, fake_site(tmp_path, version="2.13.0+cpu", cuda=None, nvidia=False))
    assert report["version"] == "2.13.0+cpu" and report["cuda"] is None
    assert report["companions"] == []
    torch_bytes = sum(f.stat().st_size for f in (tmp_path / "torch").iterdir())
    assert report["bytes"] == torch_bytes
    assert noxfile.cuda_build_problem(report) is None


def test_the_probe_finds_a_cuda_build_and_its_libraries(noxfile, tmp_path):
    report = probe(noxfile, fake_site(tmp_path, version="2.13.0", cuda="13.0", nvidia=True))
    assert report["cuda"] == "13.0" and report["companions"] == ["nvidia-cublas"]
    torch_bytes = sum(f.stat().st_size for f in (tmp_path / "torch").iterdir())
    assert report["bytes"] == torch_bytes + 1000
    assert noxfile.cuda_build_problem(report) == "torch 2.13.0 is a CUDA 13.0 build"


def test_cuda_libraries_or_a_cpu_build_too_big_are_problems(noxfile):
    cpu = {"version": "2.13.0+cpu", "cuda": None, "bytes": 700_000_000, "companions": []}
    assert noxfile.cuda_build_problem(cpu) is None
    assert noxfile.cuda_build_problem({**cpu, "companions": ["nvidia-nccl-cu13", "triton"]}) == (
        "the CUDA libraries of a CUDA build are installed: nvidia-nccl-cu13, triton"
    )
    assert noxfile.cuda_build_problem({**cpu, "bytes": 2_600_000_000}) == (
        "torch and its libraries take 2.6 GB"
    )


class FakeSession:
    """Records what install_torch asks of a nox session; `reports` are the probe's answers."""

    def __init__(self, *reports):
        self.reports = list(reports)
        self.calls = []

    def run(self, *args, **kwargs):
        if args[:2] == ("python", "-c"):
            return json.dumps(self.reports.pop(0)) + "\n"
        self.calls.append(("run", *args))
        return ""

    def install(self, *args):
        self.calls.append(("install", *args))

    def log(self, message):
        self.calls.append(("log", message))

    def error(self, message):
        raise RuntimeError(message)


CPU = {"version": "2.13.0+cpu", "cuda": None, "bytes": 695_000_000, "companions": []}
CUDA = {"version": "2.13.0", "cuda": "13.0", "bytes": 4_000_000_000, "companions": ["triton"]}
NONE = {"version": None, "cuda": None, "bytes": 0, "companions": []}


def test_a_cuda_build_in_a_reused_venv_is_removed_before_the_cpu_build_goes_in(
    noxfile, monkeypatch
):
    monkeypatch.setenv("PIP_FIND_LINKS", "/opt/wheels")
    session = FakeSession(CUDA, CPU)
    noxfile.install_torch(session)
    assert session.calls == [
        ("log", "not a CPU build of torch (torch 2.13.0 is a CUDA 13.0 build): removing it"),
        ("run", "uv", "pip", "uninstall", "torch", "triton"),
        ("install", "--find-links", "/opt/wheels", "torch==2.13.0+cpu"),
        ("log", "torch 2.13.0+cpu installed: 695 MB"),
    ]


def test_a_fresh_venv_gets_the_cpu_build_from_pytorchs_index(noxfile, monkeypatch):
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    session = FakeSession(NONE, CPU)
    noxfile.install_torch(session)
    assert session.calls == [
        ("install", "--torch-backend", "cpu", "torch==2.13.0"),
        ("log", "torch 2.13.0+cpu installed: 695 MB"),
    ]


def test_a_cuda_build_after_the_install_stops_the_session(noxfile, monkeypatch):
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    with pytest.raises(RuntimeError) as error:
        noxfile.install_torch(FakeSession(NONE, CUDA))
    assert str(error.value) == (
        "torch 2.13.0 is a CUDA 13.0 build, where the CPU build of torch==2.13.0 was asked for"
    )


def test_lint_uses_the_ruff_of_the_lock(noxfile):
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    (locked,) = [package["version"] for package in lock["package"] if package["name"] == "ruff"]
    assert noxfile.RUFF == f"ruff=={locked}"
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["dependency-groups"]["dev"]
    assert [r for r in dev if r.startswith("ruff")] == [noxfile.RUFF]


def test_contributings_pytest_command_leaves_out_what_the_sessions_run_apart(noxfile):
    text = (ROOT / "CONTRIBUTING.md").read_text()
    commands = [line for line in text.splitlines() if line.startswith("uv run pytest ")]
    assert commands == [f'uv run pytest packages/convnet-core/tests -q -m "{noxfile.NOT_EXTRA}"']
    assert "uv run nox -s \"tests(package='convnet-core')\"" in text
