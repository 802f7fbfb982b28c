"""The errors loadshed raises on purpose; their str() is shown to the owner as is."""

from __future__ import annotations

from enum import IntEnum
from pathlib import Path


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1  # runtime failure; `check` found something unreachable
    USAGE = 2  # bad config, computers.txt or arguments


class LoadshedError(Exception):
    """An error loadshed raises on purpose; its str() is shown to the owner as is."""


class ConfigError(LoadshedError):
    """A bad config.py, computers.txt or argument: names the place, the problem and the fix."""

    def __init__(
        self, path: Path | str | None, line: int | None, problem: str, fix: str = ""
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.line = line
        self.problem = problem
        self.fix = fix
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = f"{self.path}:{self.line}: " if self.line else f"{self.path}: "
        return f"{where}{self.problem}" + (f" — {self.fix}" if self.fix else "")
