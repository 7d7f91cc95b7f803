"""Every check of the project, as nox sessions.

uv run nox                   the default set: lint, tests, tests-cuda-on-cpu, cuda-compile,
                             parity, gui
uv run nox -s tests          each package alone in its own venv (CPU)
uv run nox -s tests-cuda-on-cpu  tests-cuda's run on NumPy dressed as CuPy (no GPU needed)
uv run nox -s cuda-compile   the GPU kernels compiled by NVRTC (no GPU needed)
uv run nox -s tests-cuda     the same on a GPU through CuPy (fails when none is usable)
nox --no-venv -s tests-cuda  on a machine whose Python already has CuPy and no registry
uv run nox -s bench          benchmarks next to PyTorch CPU
"""

from __future__ import annotations

import glob
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import nox

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

nox.options.default_venv_backend = "uv"
nox.options.sessions = ["lint", "tests", "tests-cuda-on-cpu", "cuda-compile", "parity", "gui"]
nox.options.reuse_existing_virtualenvs = True

ROOT = pathlib.Path(__file__).parent
PACKAGES = ["convnet-core", "convnet-data", "convnet-io", "convnet-gui"]
TEST_TOOLS = ["pytest>=8", "hypothesis>=6.100"]
# The version uv.lock holds: a newer ruff brings new rules and format styles, an older one
# fails on this tree (0.6 finds 48 UP038 errors).
RUFF = "ruff==0.17.6"
TORCH = "torch==2.13.0"
# A CPU build of torch installs at about 0.75 GB; a CUDA build, with its nvidia-* libraries,
# is several GB.
TORCH_CPU_MAX_BYTES = 1_500_000_000
# What a CUDA build of torch brings beside itself; a CPU build needs none of it.
CUDA_COMPANION = re.compile(r"nvidia-.*|cuda-.*|triton")
# Markers of tests that need more than the package itself: run by their own sessions.
NOT_EXTRA = "not parity and not gui and not cuda and not nvrtc"
ON_GPU = "not parity and not gui and not nvrtc"
# cuda-compile reads CuPy's internal kernel generator: pinned to the versions it was checked
# with. NVRTC needs no GPU, so these install and run on any Linux x86-64 machine.
NVRTC_TOOLS = ["cupy-cuda13x==14.2.0", "nvidia-cuda-nvrtc==13.5.37"]


def package_dir(name: str) -> pathlib.Path:
    return ROOT / "packages" / name


def sibling_closure(name: str) -> list[str]:
    """The package and every sibling it depends on, read from the pyproject files."""
    seen: list[str] = []

    def visit(pkg: str) -> None:
        if pkg in seen:
            return
        seen.append(pkg)
        meta = tomllib.loads((package_dir(pkg) / "pyproject.toml").read_text())
        for requirement in meta["project"].get("dependencies", []):
            for sibling in PACKAGES:
                if requirement.startswith(sibling) and requirement[len(sibling)] in " <>=!~[;":
                    visit(sibling)

    visit(name)
    return seen


def install_packages(session: nox.Session, *names: str) -> None:
    """Install packages from the tree (never from PyPI) with their declared dependencies."""
    wanted: list[str] = []
    for name in names:
        for pkg in sibling_closure(name):
            if pkg not in wanted:
                wanted.append(pkg)
    # Rebuilt on every run: a reused venv would otherwise keep yesterday's code.
    reinstall = [arg for pkg in wanted for arg in ("--reinstall-package", pkg)]
    session.install(*reinstall, *[str(package_dir(pkg)) for pkg in wanted], *TEST_TOOLS)


# Run by the session's Python with CUDA_COMPANION's pattern as its argument: which torch is
# installed, for which CUDA (None for a CPU build), what it and the CUDA libraries beside it
# take on disk, and those libraries' names. torch/version.py is read, not imported: it holds
# plain assignments, and importing torch would take seconds.
TORCH_PROBE = """
import importlib.metadata, importlib.util, json, pathlib, re, sys
report = {"version": None, "cuda": None, "bytes": 0, "companions": []}
spec = importlib.util.find_spec("torch")
if spec is not None and spec.origin:
    folder = pathlib.Path(spec.origin).parent
    scope = {}
    exec((folder / "version.py").read_text(), scope)
    report["version"], report["cuda"] = scope["__version__"], scope["cuda"]
    report["bytes"] = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
for dist in importlib.metadata.distributions():
    name = re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
    if re.fullmatch(sys.argv[1], name):
        report["companions"].append(name)
        files = [pathlib.Path(dist.locate_file(f)) for f in dist.files or []]
        report["bytes"] += sum(f.stat().st_size for f in files if f.is_file())
print(json.dumps(report))
"""


def torch_install_args(find_links: str | None) -> list[str]:
    """The arguments of `uv pip install` that get the CPU build of torch 2.13.0, never a
    CUDA one. From the folders in $PIP_FIND_LINKS when it is set: only their `+cpu` wheel
    matches, so a Python that wheel does not fit fails instead of taking PyPI's CUDA build.
    Otherwise from PyTorch's CPU index (uv's --torch-backend cpu)."""
    if find_links:
        folders = [arg for folder in find_links.split() for arg in ("--find-links", folder)]
        return [*folders, f"{TORCH}+cpu"]
    return ["--torch-backend", "cpu", TORCH]


def torch_report(session: nox.Session) -> dict:
    """TORCH_PROBE's report on the session's venv."""
    output = session.run(
        "python", "-c", TORCH_PROBE, CUDA_COMPANION.pattern, silent=True, log=False
    )
    return json.loads(output.strip().splitlines()[-1])


def cuda_build_problem(report: dict) -> str | None:
    """What makes the installed torch not a CPU build, or None when it is one (or none is
    installed)."""
    if report["cuda"] is not None:
        return f"torch {report['version']} is a CUDA {report['cuda']} build"
    if report["companions"]:
        return (
            f"the CUDA libraries of a CUDA build are installed: {', '.join(report['companions'])}"
        )
    if report["bytes"] > TORCH_CPU_MAX_BYTES:
        return f"torch and its libraries take {report['bytes'] / 1e9:.1f} GB"
    return None


def install_torch(session: nox.Session) -> None:
    """PyTorch 2.13.0, CPU build: from the wheel folders in $PIP_FIND_LINKS when it is set,
    else from PyTorch's CPU index. A CUDA build left in a reused venv is removed first, with
    the CUDA libraries it brought: the CPU build's `==2.13.0` would count it as installed."""
    before = torch_report(session)
    problem = cuda_build_problem(before)
    if problem:
        session.log(f"not a CPU build of torch ({problem}): removing it")
        session.run("uv", "pip", "uninstall", "torch", *before["companions"], external=True)
    session.install(*torch_install_args(os.environ.get("PIP_FIND_LINKS")))
    report = torch_report(session)
    session.log(f"torch {report['version']} installed: {report['bytes'] / 1e6:.0f} MB")
    problem = cuda_build_problem(report)
    if problem:
        session.error(f"{problem}, where the CPU build of {TORCH} was asked for")


def cupy_wheel_for(nvidia_smi_report: str) -> str:
    """The CuPy wheel for the driver that `nvidia-smi` describes ("CUDA Version: 12.4" in
    its header): cupy-cuda11x, cupy-cuda12x or, for CUDA 13 and later or when the report
    says nothing, cupy-cuda13x. A CuPy built for a newer CUDA than the driver's cannot run.
    For CUDA 12 and 13, CuPy 14 with its [ctk] extra, which brings the CUDA libraries it
    loads (NVRTC, cuBLAS, ...) from PyPI, so the driver is all the machine needs; CuPy 13,
    the last for CUDA 11, has no such extra and needs a local CUDA Toolkit."""
    match = re.search(r"CUDA Version:\s*(\d+)\.", nvidia_smi_report)
    major = int(match.group(1)) if match else 13
    if major == 11:
        return "cupy-cuda11x>=13"
    if major == 12:
        return "cupy-cuda12x[ctk]>=14"
    return "cupy-cuda13x[ctk]>=14"


def cupy_wheel() -> str:
    """The CuPy wheel tests-cuda installs: $CONVNET_CUPY when set (for example
    "cupy-cuda12x==13.6.0"), else the one for this machine's driver."""
    chosen = os.environ.get("CONVNET_CUPY", "").strip()
    if chosen:
        return chosen
    try:
        report = subprocess.run(
            ["nvidia-smi"], capture_output=True, text=True, timeout=60, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        report = ""
    return cupy_wheel_for(report)


def pytest_args(session: nox.Session, *paths: str, marker: str) -> list[str]:
    return ["pytest", *paths, "-m", marker, *session.posargs]


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the whole tree."""
    session.install(RUFF)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
@nox.parametrize("package", [*PACKAGES, "workspace"])
def tests(session: nox.Session, package: str) -> None:
    """One package alone on the CPU, in a venv holding only it, its dependencies and pytest.

    `workspace` runs the tests of apps/, docs/ and the README with every package installed.
    """
    if package == "workspace":
        install_packages(session, *PACKAGES)
        # nox itself: tests/test_noxfile.py checks the choices this file makes
        session.install(
            "click>=8.1", "tqdm>=4.60", "matplotlib>=3.7", "threadpoolctl>=3.1", "nox>=2024.10.9"
        )
        session.run(*pytest_args(session, "tests", marker=NOT_EXTRA))
        return
    install_packages(session, package)
    session.run(*pytest_args(session, f"packages/{package}/tests", marker=NOT_EXTRA))


@nox.session(name="tests-cuda")
def tests_cuda(session: nox.Session) -> None:
    """Every package's tests with CuPy on the GPU, plus the CPU/GPU equivalence tests.

    Fails when no GPU is usable: a green run means the GPU was tested. It installs the CuPy
    wheel for the driver's CUDA version (`cupy_wheel`; CONVNET_CUPY overrides it). With
    `--no-venv` it installs nothing and imports the packages from the tree, for a machine
    whose Python already has CuPy and no package registry.
    """
    if shutil.which("nvidia-smi") is None and not glob.glob("/dev/nvidia[0-9]*"):
        session.error(
            "tests-cuda needs an NVIDIA GPU, and this machine has none (no nvidia-smi, no "
            "/dev/nvidia*); run `nox -s tests` for the CPU"
        )
    no_venv = session.venv_backend == "none"
    env = {"CONVNET_TEST_DEVICE": "cuda"}
    if no_venv:
        src = [str(package_dir(pkg) / "src") for pkg in PACKAGES]
        env["PYTHONPATH"] = os.pathsep.join([*src, os.environ.get("PYTHONPATH", "")])
        python = sys.executable
    else:
        install_packages(session, *PACKAGES)
        session.install(cupy_wheel(), "click>=8.1", "tqdm>=4.60")
        python = "python"
    session.run(python, "-m", "convnet_core", "--require-cuda", env=env)
    paths = [f"packages/{pkg}/tests" for pkg in PACKAGES]
    session.run(python, "-m", *pytest_args(session, *paths, marker=ON_GPU), env=env)


@nox.session(name="tests-cuda-on-cpu")
def tests_cuda_on_cpu(session: nox.Session) -> None:
    """tests-cuda's run, on the CPU: every package's tests and the equivalence tests with
    `cupy` replaced by NumPy dressed as CuPy (packages/convnet-core/tests/cupy_on_numpy.py).

    Every GPU code path of the packages runs, the kernels from their CUDA source compiled
    by g++; what it cannot show is CuPy's own arithmetic and speed (tests-cuda does).
    """
    install_packages(session, *PACKAGES)
    # CuPy itself imports without a GPU: the stand-in then offers only the names it has
    session.install("click>=8.1", "tqdm>=4.60", *NVRTC_TOOLS)
    env = {"PYTHONPATH": str(package_dir("convnet-core") / "tests")}
    paths = [f"packages/{pkg}/tests" for pkg in PACKAGES]
    session.run(*pytest_args(session, *paths, marker=ON_GPU), "-p", "cupy_on_numpy", env=env)


@nox.session(name="cuda-compile")
def cuda_compile(session: nox.Session) -> None:
    """Every GPU kernel compiled to PTX by NVRTC, as CuPy compiles it, with no GPU.

    A CUDA source that does not build for float16, float32 or float64, or for an H100/H200
    (compute_90) or the oldest GPU CUDA 13 supports (compute_75), fails here, before any
    GPU time is spent. (tests run the same sources on the CPU, compiled by g++.)
    """
    install_packages(session, "convnet-core")
    session.install(*NVRTC_TOOLS)
    session.run(*pytest_args(session, "packages/convnet-core/tests", marker="nvrtc"))


@nox.session
def parity(session: nox.Session) -> None:
    """Layers, the whole model, optimizers and conversions against PyTorch 2.13.0 CPU, and
    the documentation's ```python parity examples (tests/test_docs.py)."""
    install_packages(session, *PACKAGES)
    install_torch(session)
    session.install("onnx>=1.15", "onnxruntime>=1.17")
    paths = [f"packages/{pkg}/tests" for pkg in PACKAGES]
    session.run(*pytest_args(session, *paths, "tests/test_docs.py", marker="parity"))


@nox.session
def gui(session: nox.Session) -> None:
    """The Tk app under Xvfb (started by a fixture; the tests skip when Xvfb is missing)."""
    install_packages(session, *PACKAGES)
    session.install("click>=8.1", "tqdm>=4.60")
    if shutil.which("Xvfb") is None:
        session.warn("Xvfb is not installed: the GUI tests will skip (apt-get install xvfb)")
    session.run(*pytest_args(session, "packages/convnet-gui/tests", "tests", marker="gui"))


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks: convnet next to PyTorch CPU in the same run, printed as ratios."""
    install_packages(session, *PACKAGES)
    install_torch(session)
    session.install("click>=8.1", "tqdm>=4.60", "psutil>=5.9", "threadpoolctl>=3.1")
    for script in ("bench_core.py", "bench_train.py", "bench_data.py"):
        if (ROOT / "benchmarks" / script).exists():
            session.run("python", f"benchmarks/{script}", *session.posargs)
