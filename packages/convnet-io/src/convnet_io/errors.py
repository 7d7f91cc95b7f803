"""The one error type that loading a model file raises for anything wrong with the file."""

from __future__ import annotations

import os

__all__ = ["ModelFormatError"]


class ModelFormatError(ValueError):
    """A model file that cannot be loaded: truncated, of another format, inconsistent, ...

    The message names the file and the problem. `path` holds the file's path.
    """

    def __init__(self, path: str | bytes | os.PathLike | None, problem: str):
        self.path = None if path is None else os.fsdecode(path)
        self.problem = problem
        where = f"{self.path}: " if self.path is not None else ""
        super().__init__(f"{where}{problem}")
