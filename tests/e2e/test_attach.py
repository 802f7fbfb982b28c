"""`loadshed attach` in a real terminal (tmux) against a daemon started with `--no-ui`: the
screen shows the running daemon's house, its keys command that daemon, two screens see the same
house, and leaving a screen leaves the daemon running."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from loadshed.sim.house import SimHouse
from tests.e2e.conftest import SHEDDABLE, Loadshed, wait_until
from tests.e2e.test_ui import Pane, device_row
from tests.e2e.test_ui import pane as pane  # the pane fixture

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]

Start = Callable[..., Loadshed]


def attach(pane: Callable[..., Pane], config: Path, tmp_path: Path) -> Pane:
    command = [sys.executable, "-m", "loadshed", "attach", "--config", str(config)]
    return pane([*command, "--state-dir", str(tmp_path / "state")], tmp_path)


def test_attach_sees_and_commands_the_running_daemon_and_leaving_leaves_it(
    pane: Callable[..., Pane], house: SimHouse, config: Path, start: Start, tmp_path: Path
) -> None:
    daemon = start()
    daemon.wait_for_line("ready:")
    first, second = attach(pane, config, tmp_path), attach(pane, config, tmp_path)
    for screen in (first, second):
        screen.wait_text("on grid")
    house.cut_grid()
    for screen in (first, second):  # both screens follow the one daemon
        screen.wait_text("OFF GRID")
        screen.wait("TV shed", lambda s: "off-grid" in device_row(s, "TV"))
    first.keys("r")  # force a restore, from this screen, in the daemon
    first.wait_text("Force a restore now?")
    first.keys("y")
    wait_until("the forced restore", lambda: all(house.is_on(n) for n in SHEDDABLE))
    daemon.wait_for_line("forced from loadshed restore")
    first.keys("q")
    first.wait_text("Leave this screen? loadshed keeps running.")
    first.keys("y")
    first.wait_text("EXITED 0")
    assert daemon.process.poll() is None  # the daemon runs on
    second.wait_text("OFF GRID")  # and the other screen still sees it
    assert daemon.stop() == 0
    second.wait("the other screen told the daemon is gone", lambda s: "EXITED" in s)


def test_attach_with_no_daemon_says_how_to_start_one(
    pane: Callable[..., Pane], config: Path, tmp_path: Path
) -> None:
    screen = attach(pane, config, tmp_path)
    screen.wait_text("no daemon running")
    screen.wait_text("EXITED 3")
