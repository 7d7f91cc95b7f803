"""The package README describes the code as it is (its ```python blocks run in
tests/test_docs.py; the signatures it quotes in prose are checked here)."""

from __future__ import annotations

import inspect
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def call_form(name: str, function) -> str:
    """`name(a, b, *, c=None)` as the README writes a call signature (no annotations)."""
    parts, starred = [], False
    for parameter in inspect.signature(function).parameters.values():
        if parameter.name == "self":
            continue
        if parameter.kind is parameter.KEYWORD_ONLY and not starred:
            parts.append("*")
            starred = True
        default = parameter.default
        parts.append(
            parameter.name if default is parameter.empty else f"{parameter.name}={default!r}"
        )
    return f"{name}({', '.join(parts)})"


@pytest.mark.parametrize("name", ["DigitApp", "run"])
def test_readme_quotes_the_window_signatures_as_they_are(name):
    app = pytest.importorskip("convnet_gui.app", reason="needs tkinter")
    text = " ".join(README.read_text(encoding="utf-8").split())  # lines joined
    quoted = re.findall(rf"`convnet_gui\.app\.({name}\([^`]*\))`", text)
    assert quoted, f"the README does not show convnet_gui.app.{name}(...)"
    for form in quoted:
        assert form == call_form(name, getattr(app, name))
