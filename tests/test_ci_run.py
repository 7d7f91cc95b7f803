""".ci/run on machines it meets: a long list of shared libraries, no uv, and a system
Python that refuses `pip install` (Debian 12, PEP 668).

The script runs in a copy of the checkout's `.ci/` with every command it calls replaced by a
stand-in on PATH that writes what it was asked into a log, so nothing is installed."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
REAL_TOOLS = ("cat", "cp", "dirname", "grep", "mkdir")

# A system python3 that behaves as Debian 12's: it makes venvs (when `venv_status` is 0), and
# its own pip refuses to install unless told --break-system-packages. A venv's python, asked to
# pip install uv, puts a uv beside itself. uv and the venv's python log into $CI_TEST_LOG, the
# log of the run that calls them (a venv made by an earlier run is reused by a later one).
PYTHON3 = """#!/bin/bash
echo "python3 $*" >> {log}
if [ "$1" = "-c" ]; then exit {ensurepip_status}; fi
if [ "$1 $2" = "-m venv" ]; then
    [ {venv_status} = 0 ] || {{ echo "ensurepip is not available" >&2; exit 1; }}
    venv="${{@: -1}}"
    mkdir -p "$venv/bin" && cp {venv_python} "$venv/bin/python"
    exit
fi
case " $* " in
*" -m pip install "*" --break-system-packages "*)
    mkdir -p "$HOME/.local/bin" && cp {uv} "$HOME/.local/bin/uv";;
*)
    echo "error: externally-managed-environment" >&2
    exit 1;;
esac
"""
VENV_PYTHON = """#!/bin/bash
echo "venv python $*" >> "$CI_TEST_LOG"
cp {uv} "$(dirname "$0")/uv"
"""
UV = """#!/bin/bash
echo "$0 $*" >> "$CI_TEST_LOG"
"""


def fake(path: pathlib.Path, text: str) -> pathlib.Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def run_ci(
    tmp_path,
    *,
    uv: bool,
    ensurepip_status: int = 0,
    venv_status: int = 0,
    home: pathlib.Path | None = None,
    env: dict[str, str] | None = None,
):
    """Run a copy of .ci/run among stand-ins, with `home` as $HOME (default: a new folder
    tmp_path/home); returns (process, the log's lines)."""
    checkout = tmp_path / "checkout"
    (checkout / ".ci").mkdir(parents=True)
    shutil.copy(ROOT / ".ci" / "run", checkout / ".ci" / "run")
    tools = tmp_path / "bin"
    tools.mkdir()
    for name in REAL_TOOLS:
        (tools / name).symlink_to(shutil.which(name))
    log = tmp_path / "log"
    for name in ("g++", "Xvfb", "xdotool"):
        fake(tools / name, "#!/bin/bash\nexit 0\n")
    # a machine with many libraries: libtk8.6 comes first, then far more than a pipe holds
    libraries = tmp_path / "ldconfig.txt"
    lines = [f"\tlib{i}.so.1 (libc6,x86-64) => /usr/lib/lib{i}.so.1" for i in range(20_000)]
    libraries.write_text(
        "\tlibtk8.6.so (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libtk8.6.so\n"
        + "\n".join(lines)
        + "\n"
    )
    fake(tools / "ldconfig", f"#!/bin/bash\ncat {libraries}\n")
    fake(tools / "apt-get", f'#!/bin/bash\necho apt-get "$*" >> {log}\n')
    uv_template = fake(tmp_path / "uv", UV.format(log=log))
    if uv:
        shutil.copy(uv_template, tools / "uv")
    venv_python = fake(tmp_path / "venv_python", VENV_PYTHON.format(log=log, uv=uv_template))
    fake(
        tools / "python3",
        PYTHON3.format(
            log=log,
            uv=uv_template,
            venv_python=venv_python,
            ensurepip_status=ensurepip_status,
            venv_status=venv_status,
        ),
    )
    if home is None:
        home = tmp_path / "home"
        home.mkdir()
    process = subprocess.run(
        [shutil.which("bash"), str(checkout / ".ci" / "run")],
        env={"PATH": str(tools), "HOME": str(home), "CI_TEST_LOG": str(log), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return process, log.read_text().splitlines() if log.exists() else []


posix_only = pytest.mark.skipif(os.name != "posix", reason=".ci/run is a bash script")


@posix_only
def test_a_long_library_list_holding_tk_installs_nothing(tmp_path):
    process, log = run_ci(tmp_path, uv=True)
    assert process.returncode == 0, process.stderr
    assert log == [f"{tmp_path}/bin/uv run nox"]


@posix_only
def test_without_uv_it_installs_uv_into_a_venv_not_into_the_system_python(tmp_path):
    process, log = run_ci(tmp_path, uv=False)
    assert process.returncode == 0, process.stderr
    venv = f"{tmp_path}/home/.cache/convnet-ci/uv-venv"
    assert log == [
        "python3 -c import ensurepip, venv",
        f"python3 -m venv --clear {venv}",
        "venv python -m pip install --quiet uv",
        f"{venv}/bin/uv run nox",
    ]


@posix_only
def test_the_next_run_reuses_the_venv_of_uv_while_its_uv_works(tmp_path):
    """One fixed venv, under $XDG_CACHE_HOME or ~/.cache: a later run installs nothing."""
    run_ci(tmp_path / "first", uv=False)
    home = tmp_path / "first" / "home"
    process, log = run_ci(tmp_path / "second", uv=False, home=home)
    assert process.returncode == 0, process.stderr
    venv = f"{home}/.cache/convnet-ci/uv-venv"
    assert log == [
        "python3 -c import ensurepip, venv",
        f"{venv}/bin/uv --version",
        f"{venv}/bin/uv run nox",
    ]
    (home / ".cache" / "convnet-ci" / "uv-venv" / "bin" / "uv").unlink()  # a broken venv
    process, log = run_ci(tmp_path / "third", uv=False, home=home)
    assert process.returncode == 0, process.stderr
    assert log[1:] == [
        f"python3 -m venv --clear {venv}",
        "venv python -m pip install --quiet uv",
        f"{venv}/bin/uv run nox",
    ]
    cache = tmp_path / "xdg"
    process, log = run_ci(tmp_path / "fourth", uv=False, env={"XDG_CACHE_HOME": str(cache)})
    assert process.returncode == 0, process.stderr
    assert log[1] == f"python3 -m venv --clear {cache}/convnet-ci/uv-venv"
    assert (cache / "convnet-ci" / "uv-venv" / "bin" / "uv").is_file()


@posix_only
def test_without_the_venv_module_it_asks_apt_then_falls_back_to_the_user_site(tmp_path):
    process, log = run_ci(tmp_path, uv=False, ensurepip_status=1, venv_status=1)
    assert process.returncode == 0, process.stderr
    assert log[:3] == [
        "python3 -c import ensurepip, venv",
        "apt-get update -qq",
        "apt-get install -y -qq --no-install-recommends python3-venv",
    ]
    assert log[3] == f"python3 -m venv --clear {tmp_path}/home/.cache/convnet-ci/uv-venv", log
    assert log[4:] == [
        "python3 -m pip install --quiet --user --break-system-packages uv",
        f"{tmp_path}/home/.local/bin/uv run nox",
    ]
