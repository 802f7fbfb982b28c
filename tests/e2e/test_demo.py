"""`loadshed demo` as a newcomer runs it: the whole story, on loopback, exit 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.timeout(180)
@pytest.mark.parametrize("args", [["--no-ui"], ["--no-ui", "--speed", "3000"]])
def test_demo_plays_the_outage_and_restores_exactly(tmp_path: Path, args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "loadshed", "demo", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    story = [line for line in out.splitlines() if line.startswith("== ")]
    assert [s.split("] ", 1)[1].split(" ")[0:2] for s in story] == [
        ["On", "grid."],
        ["The", "grid"],
        ["The", "battery"],
        ["The", "grid"],
        ["The", "end."],
    ]
    assert "shed finished: " in out
    assert "switching off Dehumidifier (battery" in out
    assert "switching off Freezer (battery" in out
    assert "restore finished: " in out and "failed" not in out.split("restore finished: ")[1]
    assert "The Desk lamp is still off, as it was before." in out
    assert list(tmp_path.iterdir()) == []  # nothing left behind
