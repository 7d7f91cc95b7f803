"""Every ```python block of README.md, CONTRIBUTING.md, docs/*.md and the package READMEs
runs, so the documentation never rots.

The blocks of one file run in order in one namespace (a page is a story), in a fresh
temporary working directory, with matplotlib drawing off-screen. A block opened with
```python no-run is shown but not executed; use it only for code that needs what a test
cannot have (a GPU, a window), and say so next to it.

A block that needs what only one nox session installs names that session's marker:
```python parity (PyTorch, ONNX Runtime). The default run leaves it out; the session that
selects the marker runs the whole page with it, each block in its place.

A ```text block that comes right after a ```python block (with at most prose between)
shows what that block prints: each of its lines must be a line of the printed output
(spaces aside), so a page cannot show output the code no longer gives.
"""

from __future__ import annotations

import contextlib
import io
import pathlib
import re
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```python([^\n]*)\n(.*?)^```", re.DOTALL | re.MULTILINE)
FENCE = re.compile(r"^```(\w*)([^\n]*)\n(.*?)^```", re.DOTALL | re.MULTILINE)
#: Markers a block may name, each run by the nox session that selects it.
SESSION_MARKERS = ("parity",)


def documented_pages() -> list[pathlib.Path]:
    pages = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
    pages += sorted((ROOT / "packages").glob("*/README.md"))
    return [page for page in pages if page.exists()]


def block_marker(info: str) -> str | None:
    """The session marker an info string names ("python parity" -> "parity"), or None."""
    named = [word for word in info.split() if word in SESSION_MARKERS]
    assert len(named) <= 1, f"a block names more than one session marker: {info!r}"
    return named[0] if named else None


def python_blocks(page: pathlib.Path, marker: str | None = None) -> list[tuple[int, str]]:
    """(line number, source) of each ```python block of `page` that runs in the default
    test run, and also of those that name `marker`."""
    text = page.read_text(encoding="utf-8")
    blocks = []
    for match in BLOCK.finditer(text):
        info = match.group(1)
        if "no-run" in info or block_marker(info) not in (None, marker):
            continue
        line = text.count("\n", 0, match.start()) + 2
        blocks.append((line, match.group(2)))
    return blocks


def shown_outputs(page: pathlib.Path) -> dict[int, str]:
    """{line of a ```python block: the ```text block right after it}: what the page says
    that block prints."""
    text = page.read_text(encoding="utf-8")
    shown, previous = {}, None
    for match in FENCE.finditer(text):
        language, body = match.group(1), match.group(3)
        line = text.count("\n", 0, match.start()) + 2
        if language == "text" and previous is not None:
            shown[previous] = body
        previous = line if language == "python" else None
    return shown


def check_shown_output(shown: str, printed: str, where: str) -> None:
    """Each non-blank line of `shown` is a line of `printed`, runs of spaces aside."""

    def normal(line: str) -> str:
        return " ".join(line.split())

    printed_lines = {normal(line) for line in printed.splitlines()}
    for line in shown.splitlines():
        if line.strip() and normal(line) not in printed_lines:
            raise AssertionError(
                f"{where}: the page shows\n  {line.strip()}\nbut the block printed\n{printed}"
            )


def page_markers(page: pathlib.Path) -> list[str]:
    """The session markers that the blocks of `page` name."""
    text = page.read_text(encoding="utf-8")
    found = {block_marker(match.group(1)) for match in BLOCK.finditer(text)}
    return sorted(marker for marker in found if marker)


def test_block_pattern_finds_blocks(tmp_path):
    page = tmp_path / "sample.md"
    page.write_text(
        "text\n```python\nx = 1\n```\n```python no-run\ny = 2\n```\n```python parity\nz = 3\n```\n"
    )
    assert python_blocks(page) == [(3, "x = 1\n")]
    assert python_blocks(page, "parity") == [(3, "x = 1\n"), (9, "z = 3\n")]
    assert page_markers(page) == ["parity"]


def test_a_text_block_after_a_python_block_is_its_output(tmp_path):
    page = tmp_path / "sample.md"
    page.write_text(
        "```python\nprint(1)\n```\nIt prints:\n```text\n1\n```\n"
        "```bash\nls\n```\n```text\nfiles\n```\n"
    )
    assert shown_outputs(page) == {2: "1\n"}  # the second follows a shell block
    check_shown_output("a   b\n\n c\n", "x\na b\nc\n", "here")
    with pytest.raises(AssertionError, match="the page shows\n  a b c\nbut the block printed"):
        check_shown_output("a b c\n", "a b\nc\n", "here")


def page_runs() -> list:
    """One run of each page in the default session, and one per session marker it names."""
    runs = []
    for page in documented_pages():
        name = str(page.relative_to(ROOT))
        if python_blocks(page):
            runs.append(pytest.param(page, None, id=name))
        for marker in page_markers(page):
            mark = getattr(pytest.mark, marker)
            runs.append(pytest.param(page, marker, marks=mark, id=f"{name}[{marker}]"))
    return runs


@pytest.mark.parametrize(("page", "marker"), page_runs())
def test_page_runs(page, marker, tmp_path, monkeypatch):
    blocks = python_blocks(page, marker)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("CONVNET_REPO", str(ROOT))
    shown = shown_outputs(page)
    namespace = {"__name__": "__doc_page__"}
    for line, source in blocks:
        where = f"{page.relative_to(ROOT)}:{line}"
        code = compile(source, where, "exec")
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(code, namespace)
        sys.stdout.write(printed.getvalue())  # still shown when the test fails
        if line in shown:
            check_shown_output(shown[line], printed.getvalue(), where)


def test_every_doc_page_is_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"docs/{page.name}" in readme, f"README.md does not link docs/{page.name}"
