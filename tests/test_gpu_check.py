"""benchmarks/gpu_check.sh's test command: pytest-xdist's 4 processes where the machine has
pytest-xdist, and the same pytest arguments whether nox runs tests-cuda or, without nox, the
script runs tests-cuda's commands itself.

The script runs in a copy of the checkout's `benchmarks/`, with `python3` and `nvidia-smi`
replaced by stand-ins that write each call into a log, so nothing runs on a GPU."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# `python3 -c "import xdist"` and `python3 -c "import nox"` succeed as the test says; every
# call is logged with the BLAS thread count it was given.
PYTHON3 = """#!/bin/bash
echo "python3 $* [threads=${{OPENBLAS_NUM_THREADS:-}}]" >> {log}
case "$*" in
"-c import xdist") exit {xdist};;
"-c import nox") exit {nox};;
esac
exit 0
"""


def run_gpu_check(tmp_path, *, xdist: bool, nox: bool) -> list[str]:
    """The python3 calls of gpu_check.sh that run the tests, in order."""
    checkout = tmp_path / "checkout"
    (checkout / "benchmarks").mkdir(parents=True)
    shutil.copy(ROOT / "benchmarks" / "gpu_check.sh", checkout / "benchmarks")
    (checkout / "packages" / "convnet-core" / "tests").mkdir(parents=True)
    tools = tmp_path / "bin"
    tools.mkdir()
    log = tmp_path / "log"
    for name, text in [
        ("python3", PYTHON3.format(log=log, xdist=0 if xdist else 1, nox=0 if nox else 1)),
        ("nvidia-smi", "#!/bin/bash\nexit 0\n"),
    ]:
        (tools / name).write_text(text)
        (tools / name).chmod(0o755)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.endswith("_NUM_THREADS") and key not in ("OUT", "PYTHONPATH")
    }
    env["PATH"] = f"{tools}{os.pathsep}{env['PATH']}"
    process = subprocess.run(
        ["bash", str(checkout / "benchmarks" / "gpu_check.sh"), str(tmp_path / "out")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert process.returncode == 0, process.stdout + process.stderr
    calls = log.read_text().splitlines()
    return [call for call in calls if " -m nox " in call or " -m pytest " in call]


@pytest.fixture(scope="module")
def on_gpu_marker():
    """The marker tests-cuda selects, read from the noxfile (which needs nox to import)."""
    pytest.importorskip("nox")
    spec = importlib.util.spec_from_file_location("noxfile_of_gpu_check", ROOT / "noxfile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ON_GPU


XDIST = "-q -p no:cacheprovider -n 4 --dist loadfile [threads=4]"
SERIAL = "-q -p no:cacheprovider [threads=]"


@pytest.mark.skipif(os.name != "posix", reason="gpu_check.sh is a bash script")
@pytest.mark.parametrize(("xdist", "args"), [(True, XDIST), (False, SERIAL)])
def test_nox_runs_the_gpu_tests_in_4_processes_where_xdist_is_installed(tmp_path, xdist, args):
    calls = run_gpu_check(tmp_path, xdist=xdist, nox=True)
    assert calls == [f"python3 -m nox --no-venv -s tests-cuda -- {args}"]


@pytest.mark.skipif(os.name != "posix", reason="gpu_check.sh is a bash script")
@pytest.mark.parametrize(("xdist", "args"), [(True, XDIST), (False, SERIAL)])
def test_without_nox_the_script_runs_what_tests_cuda_runs(tmp_path, xdist, args, on_gpu_marker):
    calls = run_gpu_check(tmp_path, xdist=xdist, nox=False)
    assert calls == [f"python3 -m pytest packages/convnet-core/tests -m {on_gpu_marker} {args}"]
