"""What each package declares and ships: its licence, its dependency floors, its metadata and
its version."""

from __future__ import annotations

import importlib
import pathlib
import re
import shutil
import subprocess
import tarfile
import zipfile

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ["convnet-core", "convnet-data", "convnet-io", "convnet-gui"]


def pyproject(package: str) -> dict:
    return tomllib.loads((ROOT / "packages" / package / "pyproject.toml").read_text())


def requirement(package: str, name: str) -> str:
    (found,) = [r for r in pyproject(package)["project"]["dependencies"] if r.startswith(name)]
    return found


# --- the licence


def test_the_licence_is_mit_with_its_copyright_line():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n\nCopyright (c) 2026 convnet developers\n")
    assert "The above copyright notice and this permission notice shall be included" in text


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_declares_the_licence_file_it_holds(package):
    project = pyproject(package)["project"]
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    copy = ROOT / "packages" / package / "LICENSE"
    assert copy.read_text() == (ROOT / "LICENSE").read_text()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Every package built by uv, wheel and sdist, as a release would build it."""
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on the PATH")
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [uv, "build", "--all-packages", "--quiet", "--out-dir", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=600,
    )
    return out


@pytest.mark.parametrize("package", PACKAGES)
def test_the_wheel_and_the_sdist_ship_the_licence(built, package):
    stem = f"{package.replace('-', '_')}-{pyproject(package)['project']['version']}"
    licence = (ROOT / "LICENSE").read_bytes()
    with zipfile.ZipFile(built / f"{stem}-py3-none-any.whl") as wheel:
        assert wheel.read(f"{stem}.dist-info/licenses/LICENSE") == licence
        metadata = wheel.read(f"{stem}.dist-info/METADATA").decode()
    with tarfile.open(built / f"{stem}.tar.gz") as sdist:
        assert sdist.extractfile(f"{stem}/LICENSE").read() == licence
    headers = metadata.split("\n\n", 1)[0].splitlines()
    # License-Expression and License-File are valid from metadata version 2.4 on
    version = next(h.split(": ", 1)[1] for h in headers if h.startswith("Metadata-Version:"))
    assert tuple(int(part) for part in version.split(".")) >= (2, 4)
    assert "License-Expression: MIT" in headers
    assert "License-File: LICENSE" in headers


# --- dependency floors


@pytest.mark.parametrize("package", PACKAGES)
def test_hatchling_writes_metadata_pypi_accepts(package):
    # hatchling before 1.27 writes License-Expression under Metadata-Version 2.1
    assert pyproject(package)["build-system"]["requires"] == ["hatchling>=1.27"]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_needs_numpy_2(package):
    # the tests' helpers (numpy.lib.array_utils) and the float32 loss need NumPy 2
    assert requirement(package, "numpy") == "numpy>=2.0"


def test_h5py_is_one_built_for_numpy_2():
    # h5py before 3.11 fails to import beside NumPy 2 ("numpy.dtype size changed")
    assert requirement("convnet-io", "h5py") == "h5py>=3.11"


# --- CuPy


def test_the_cuda_extras_bring_the_cuda_libraries_cupy_loads():
    # CuPy 14's wheels need a local CUDA Toolkit, or their [ctk] extra, which installs NVRTC,
    # cuBLAS and the rest from PyPI: a machine with only the driver needs the extra
    extras = pyproject("convnet-core")["project"]["optional-dependencies"]
    assert extras["cuda12"] == ["cupy-cuda12x[ctk]>=14"]
    assert extras["cuda13"] == ["cupy-cuda13x[ctk]>=14"]


def test_the_lock_keeps_cuda_12_and_cuda_13_apart():
    conflicts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["uv"]["conflicts"]
    assert conflicts == [
        [
            {"package": "convnet-core", "extra": "cuda12"},
            {"package": "convnet-core", "extra": "cuda13"},
        ]
    ]


# --- what PyPI shows


@pytest.mark.parametrize("package", PACKAGES)
def test_the_version_in_the_code_is_the_packages_version(package):
    module = importlib.import_module(package.replace("-", "_"))
    assert module.__version__ == pyproject(package)["project"]["version"]


@pytest.mark.parametrize("package", PACKAGES)
def test_the_readme_pypi_shows_links_nowhere_relative(package):
    # a package's README is its long description on PyPI, where a relative link is dead
    readme = (ROOT / "packages" / package / "README.md").read_text()
    targets = re.findall(r"\]\(([^)]*)\)", readme)
    assert [t for t in targets if not t.startswith("https://")] == []


@pytest.mark.parametrize("package", PACKAGES)
def test_authors_and_the_python_versions_are_declared(package):
    project = pyproject(package)["project"]
    assert project["authors"] == [{"name": "convnet developers"}]
    versions = [
        c.rsplit(" :: ", 1)[1]
        for c in project["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    ]
    assert versions == ["3.10", "3.11", "3.12", "3.13"]
    assert project["requires-python"] == ">=3.10"
