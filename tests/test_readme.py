"""The README's quick start is what users and CI really run."""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
TRAIN_COMMAND = "uv run apps/train_mnist.py"
TEST_COMMAND = "uv run nox"


def quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block, "the quick start has no bash block"
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_quick_start_is_the_two_commands():
    assert quick_start_commands() == [TRAIN_COMMAND, TEST_COMMAND]


def test_ci_runs_the_readme_test_command():
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    commands = [
        line.strip()
        for line in script.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    assert commands[-1] == TEST_COMMAND
    assert "set -euo pipefail" in commands


def test_the_main_job_exists():
    assert (ROOT / "apps" / "train_mnist.py").is_file()


def test_python_floor_matches_the_packages():
    assert 'requires-python = ">=3.10"' in (ROOT / "pyproject.toml").read_text()
    for pyproject in (ROOT / "packages").glob("*/pyproject.toml"):
        assert 'requires-python = ">=3.10"' in pyproject.read_text(), pyproject
