"""End-to-end fixtures: a simulated house, and loadshed itself as a subprocess against it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from loadshed.sim.house import SimHouse
from tests.test_notify import Receiver

WAIT_S = 20.0  # the longest any end-to-end step may take before the test fails
POLL_S = 0.5  # POLL_SECONDS in the tests' config: the smallest loadshed accepts
RESTORE_S = 2.0  # RESTORE_AFTER_SECONDS in the tests' config

SHEDDABLE = ("Monitor", "Printer", "TV", "Space heater")  # rule 100 and on before the outage
ESSENTIAL = ("Router", "Aquarium")
TIERS = ("Freezer", "Dehumidifier")  # shed below 30 % and 50 %


def wait_until(what: str, check: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    """Poll check until it is true; fail the test naming what did not happen."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for: {what}")
        time.sleep(0.02)


class Loadshed:
    """`python -m loadshed ...` as a child process, its output collected line by line."""

    def __init__(
        self,
        args: list[str],
        cwd: Path,
        env: dict[str, str] | None = None,
        *,
        argv: list[str] | None = None,
    ) -> None:
        """`argv` replaces `python -m loadshed args` (a shell line, say); it gets a stdin pipe."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOADSHED_")} | (env or {})
        self.process = subprocess.Popen(
            argv or [sys.executable, "-m", "loadshed", *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE if argv else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def saw(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def wait_for_line(self, text: str, timeout_s: float = WAIT_S) -> None:
        wait_until(f"a line with {text!r} in:\n{self.output}", lambda: self.saw(text), timeout_s)

    def count(self, text: str) -> int:
        return sum(text in line for line in self.lines)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(WAIT_S)
        self._reader.join(5)
        return code


@pytest.fixture
def house() -> Iterator[SimHouse]:
    with SimHouse() as simulated:
        yield simulated


@pytest.fixture
def config(house: SimHouse, tmp_path: Path) -> Path:
    path = house.write_config(tmp_path / "config.py")
    with path.open("a") as f:
        f.write(f"POLL_SECONDS = {POLL_S}\nRESTORE_AFTER_SECONDS = {RESTORE_S}\n")
    return path


@pytest.fixture
def start(config: Path, tmp_path: Path) -> Iterator[Callable[..., Loadshed]]:
    """Start `loadshed run --no-ui` (or another verb) against the house; stopped afterwards."""
    started: list[Loadshed] = []

    def _start(*extra: str, verb: str = "run", env: dict[str, str] | None = None) -> Loadshed:
        args = [verb, "--config", str(config), "--state-dir", str(tmp_path / "state")]
        if verb == "run":
            args.append("--no-ui")
        process = Loadshed([*args, *extra], tmp_path, env)
        started.append(process)
        return process

    yield _start
    for process in started:
        if process.process.poll() is None:
            process.stop(signal.SIGKILL)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """An Apprise json:// receiver on 127.0.0.1, keeping each post."""
    r = Receiver()
    yield r
    r.close()
