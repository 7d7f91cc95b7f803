"""Every ```python block of README.md, CONTRIBUTING.md, docs/*.md and the package READMEs
runs, so the documentation never rots.

The blocks of one file run in order in one namespace (a page is a story), in a fresh
temporary working directory, with matplotlib drawing off-screen. A block opened with
```python no-run is shown but not executed; use it only for code that needs what a test
cannot have (a GPU, a window), and say so next to it.
"""

from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```python([^\n]*)\n(.*?)^```", re.DOTALL | re.MULTILINE)


def documented_pages() -> list[pathlib.Path]:
    pages = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
    pages += sorted((ROOT / "packages").glob("*/README.md"))
    return [page for page in pages if page.exists()]


def python_blocks(page: pathlib.Path) -> list[tuple[int, str]]:
    """(line number, source) of each runnable ```python block of `page`."""
    text = page.read_text(encoding="utf-8")
    blocks = []
    for match in BLOCK.finditer(text):
        if "no-run" in match.group(1):
            continue
        line = text.count("\n", 0, match.start()) + 2
        blocks.append((line, match.group(2)))
    return blocks


def test_block_pattern_finds_blocks(tmp_path):
    page = tmp_path / "sample.md"
    page.write_text("text\n```python\nx = 1\n```\n```python no-run\ny = 2\n```\n")
    assert python_blocks(page) == [(3, "x = 1\n")]


@pytest.mark.parametrize(
    "page",
    [page for page in documented_pages() if python_blocks(page)],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_page_runs(page, tmp_path, monkeypatch):
    blocks = python_blocks(page)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("CONVNET_REPO", str(ROOT))
    namespace = {"__name__": "__doc_page__"}
    for line, source in blocks:
        code = compile(source, f"{page.relative_to(ROOT)}:{line}", "exec")
        exec(code, namespace)


def test_every_doc_page_is_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"docs/{page.name}" in readme, f"README.md does not link docs/{page.name}"
