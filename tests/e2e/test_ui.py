"""The curses screen in a real terminal: `loadshed demo` and `loadshed run` inside tmux.

Each test starts its own tmux server (a unique socket: nothing leaks between tests, and the
server is killed at the end), runs loadshed inside a shell in a 100x30 pane, types keys with
send-keys and reads the screen with capture-pane, polling with deadlines. After q the shell in
the pane must work again: the terminal was left usable.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from loadshed.sim.house import SimHouse, sshd_available
from tests.e2e.conftest import ESSENTIAL, SHEDDABLE, TIERS, WAIT_S, Loadshed, wait_until

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]

WIDTH, HEIGHT = 100, 30
SCREEN_WITHIN_S = 5.0  # the issue: the screen appears within 5 s
PROMPT = "pane$ "


class Pane:
    """One tmux server with one session, running a command inside a shell."""

    def __init__(
        self, command: list[str], cwd: Path, width: int = WIDTH, height: int = HEIGHT
    ) -> None:
        self.socket = f"loadshed-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        # COLUMNS and LINES (pytest-xdist's workers set 80 x 24) would override the pane's size.
        dropped = ("LOADSHED_", "TMUX", "COLUMNS", "LINES")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
        self.env.pop("NO_COLOR", None)
        shell = "bash --norc --noprofile"
        # A non-interactive bash drops PS1 from its environment: give it to the last shell.
        script = f'{shlex.join(command)}; echo "EXITED $?"; PS1={shlex.quote(PROMPT)} exec {shell}'
        self.started = time.monotonic()
        self.tmux(
            "new-session",
            "-d",
            "-x",
            str(width),
            "-y",
            str(height),
            "-s",
            "ui",
            "-c",
            str(cwd),
            f"{shell} -c {shlex.quote(script)}",
        )
        self.socket_path = Path(self.tmux("display-message", "-p", "#{socket_path}").strip())

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, "-f", "/dev/null", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return done.stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "ui")

    def history(self) -> str:
        """Everything the pane printed, scrolled off or not, wrapped lines joined."""
        return self.tmux("capture-pane", "-p", "-J", "-S", "-", "-t", "ui")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "ui", *keys)

    def type(self, text: str) -> None:
        """Type text as it is, then Enter: a password that starts with "-" is not an option."""
        if text:
            self.tmux("send-keys", "-t", "ui", "-l", "--", text)
        self.keys("Enter")

    def wait(self, what: str, check: Callable[[str], bool], timeout_s: float = WAIT_S) -> str:
        """Poll the screen until check(screen); fail with the last screen in the message."""
        deadline = time.monotonic() + timeout_s
        while True:
            screen = self.screen()
            if check(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout_s:g} s waiting for {what}; the screen:\n{screen}"
                )
            time.sleep(0.05)

    def wait_text(self, text: str, timeout_s: float = WAIT_S) -> str:
        return self.wait(repr(text), lambda screen: text in screen, timeout_s)

    def close(self) -> None:
        subprocess.run(
            ["tmux", "-L", self.socket, "kill-server"],
            env=self.env,
            capture_output=True,
            check=False,
        )
        self.socket_path.unlink(missing_ok=True)  # tmux leaves its socket file behind


@pytest.fixture
def pane() -> Iterator[Callable[..., Pane]]:
    started: list[Pane] = []

    def _start(command: list[str], cwd: Path, width: int = WIDTH, height: int = HEIGHT) -> Pane:
        started.append(Pane(command, cwd, width, height))
        return started[-1]

    yield _start
    for each in started:
        each.close()


def device_row(screen: str, name: str) -> str:
    """The table row of a device ("▸ " or "  " before the name)."""
    for line in screen.splitlines():
        if line[2:].startswith(name + " "):
            return line
    raise AssertionError(f"no row for {name!r} on the screen:\n{screen}")


def rows_say(names: tuple[str, ...], *words: str) -> Callable[[str], bool]:
    def check(screen: str) -> bool:
        try:
            return all(all(w in device_row(screen, n) for w in words) for n in names)
        except AssertionError:
            return False

    return check


def rows_are_on(names: tuple[str, ...]) -> Callable[[str], bool]:
    def check(screen: str) -> bool:
        try:
            rows = [device_row(screen, n) for n in names]
        except AssertionError:
            return False
        return all(" on " in r or " on," in r for r in rows) and not any("SHED" in r for r in rows)

    return check


def select(pane: Pane, name: str) -> None:
    """Move the selection to a device: Home, then j as many rows down as it is."""
    table = _table(pane.screen())
    index = next(i for i, line in enumerate(table) if line[2:].startswith(name + " "))
    pane.keys("Home", *(["j"] * index))
    pane.wait(f"{name} selected", lambda s: device_row(s, name).startswith("▸ "), 5)


def _table(screen: str) -> list[str]:
    lines = screen.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("name "))
    table = []
    for line in lines[start + 1 :]:
        if line.startswith("  ▸ ") or line.startswith("─"):
            break
        table.append(line)
    return table


def quit_cleanly(pane: Pane) -> None:
    """q (and y if asked), exit 0, and the shell in the pane answers again."""
    pane.keys("q")
    screen = pane.wait("a question or the exit", lambda s: "Quit?" in s or "EXITED" in s)
    if "Quit?" in screen:
        pane.keys("y")
    screen = pane.wait_text("EXITED")
    assert "EXITED 0" in screen, screen
    pane.wait("the shell's prompt", lambda s: PROMPT.rstrip() in s.splitlines())
    pane.keys("echo $((6*7))", "Enter")
    pane.wait("the shell to answer", lambda s: "42" in s.splitlines())


def test_demo_screen_cut_the_grid_restore_pin_quit(
    pane: Callable[[list[str], Path], Pane], tmp_path: Path
) -> None:
    demo = pane([sys.executable, "-m", "loadshed", "demo", "--speed", "600"], tmp_path)
    demo.wait("the screen", lambda s: "DEMO" in s, SCREEN_WITHIN_S + 0.1)
    assert time.monotonic() - demo.started < SCREEN_WITHIN_S
    demo.wait_text("devices (2 essential), on grid")  # 12 with sshd's computers
    screen = demo.wait_text("● on grid since")
    assert "house clock 18:" in screen and "600x real time" in screen
    assert rows_are_on(SHEDDABLE + ESSENTIAL + TIERS)(screen)

    demo.keys("g")  # the demo cuts its simulated grid
    demo.wait("OFF GRID and the sheddable rows off", rows_say(SHEDDABLE, " off ", "SHED off-grid"))
    screen = demo.wait_text("● OFF GRID — on battery")
    assert "time left ≈" in screen
    assert "the grid is cut" in screen
    assert rows_are_on(ESSENTIAL)(screen)
    assert "SHED" not in device_row(screen, "Desk lamp")  # it was off before

    demo.keys("r")
    demo.wait_text("Force a restore now? y/n")
    demo.keys("y")
    screen = demo.wait("the sheddable rows back on", rows_are_on(SHEDDABLE))
    demo.wait_text("shedding paused by a forced restore until the grid is back")

    select(demo, "Aquarium")
    demo.keys("Space")  # keep on never switches anything off: no question
    demo.wait("the pin on screen", rows_say(("Aquarium",), "pin: keep on"))
    assert "y/n" not in demo.screen()

    demo.keys("g")  # the grid back: nothing to restore, nothing shed
    demo.wait_text("● on grid since")
    quit_cleanly(demo)
    assert list(tmp_path.iterdir()) == []  # the demo's state lived in a temporary dir


def test_run_screen_against_a_simulated_house(
    pane: Callable[[list[str], Path], Pane], house: SimHouse, config: Path, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    command = [sys.executable, "-m", "loadshed", "run", "--config", str(config)]
    run = pane([*command, "--state-dir", str(state_dir)], tmp_path)
    run.wait_text("ready: 9 devices (2 essential), on grid")
    screen = run.wait_text("● on grid since")
    assert "DEMO" not in screen
    assert "13.5 kWh assumed" in screen

    run.keys("s")
    run.wait_text("Force a shed now? y/n")
    run.keys("y")
    wait_until("every non-essential plug off", lambda: not any(map(house.is_on, SHEDDABLE + TIERS)))
    run.wait("the forced shed on screen", rows_say(SHEDDABLE, "SHED forced from keyboard"))
    run.wait_text("held off by a forced shed: r restores")
    assert all(map(house.is_on, ESSENTIAL))

    run.keys("r", "y")
    wait_until("every plug back on", lambda: all(map(house.is_on, SHEDDABLE + TIERS)))
    run.wait("the rows back on", rows_are_on(SHEDDABLE + TIERS))

    house.cut_grid()
    wait_until("the sheddable plugs off", lambda: not any(map(house.is_on, SHEDDABLE)))
    screen = run.wait("OFF GRID on screen", rows_say(SHEDDABLE, " off ", "SHED off-grid"))
    assert "● OFF GRID — on battery" in run.wait_text("● OFF GRID")

    select(run, "Space heater")
    run.keys("Space")  # keep on: a pin wins over the outage, and brings it back now
    run.wait("the pin on screen", rows_say(("Space heater",), "pin: keep on"))
    wait_until("the pinned heater back on", lambda: house.is_on("Space heater"))
    pins = json.loads((state_dir / "state.json").read_text())["pins"]
    assert pins == {"Space heater": "on"}

    run.keys("Space")  # back to its rule would switch it off again mid-outage: it asks
    run.wait_text("Space heater back to its rule (shed at outage): it is switched off now. y/n")
    run.keys("n")
    run.wait_text("Space heater: not changed, still keep on")
    assert "pin: keep on" in device_row(run.screen(), "Space heater")
    assert house.is_on("Space heater")

    house.restore_grid()
    wait_until("every shed plug back on", lambda: all(map(house.is_on, SHEDDABLE)))
    run.wait("every row on again", rows_are_on(SHEDDABLE + ESSENTIAL))
    assert not house.is_on("Desk lamp")

    select(run, "TV")
    run.keys("x")  # keep off switches it off: it asks, even on grid
    run.wait_text("Switch TV off and keep it off? y/n")
    assert house.is_on("TV")
    run.keys("y")
    run.wait("the keep-off pin on screen", rows_say(("TV",), "pin: keep off"))
    wait_until("the TV off", lambda: not house.is_on("TV"))
    pins = json.loads((state_dir / "state.json").read_text())["pins"]
    assert pins == {"Space heater": "on", "TV": "off"}
    quit_cleanly(run)
    events = (state_dir / "events.log").read_text()
    assert "grid lost" in events and "Space heater: keep on" in events
    assert "TV: keep off" in events
    assert house.password not in run.screen() + events


def test_run_without_a_terminal_is_plain_lines(config: Path, tmp_path: Path) -> None:
    """No --no-ui, but stdout is a pipe (systemd, a log file): plain lines, no screen."""
    args = ["run", "--config", str(config), "--state-dir", str(tmp_path / "state")]
    daemon = Loadshed(args, tmp_path)
    try:
        daemon.wait_for_line("ready: 9 devices (2 essential), on grid")
    finally:
        code = daemon.stop()
    assert code == 0
    assert "\x1b" not in daemon.output  # not one terminal escape
    assert daemon.saw("stopped")


# --- the screen read by someone new (issue #14) ----------------------------------------------

BUSY_STATES = frozenset({"switching off", "shutting down", "switching on", "waking"})
CLOCK = re.compile(r"(?<![\d:.])(\d\d):(\d\d)(?![\d:])")  # 18:30, not 127.0.0.1:39251


def columns(screen: str) -> dict[str, str]:
    """Each table row's state and loadshed cells, cut at the column heads' places."""
    lines = screen.splitlines()
    head = next(line for line in lines if line.lstrip().startswith("name "))
    kind, state, rule = head.index("kind"), head.index("state"), head.index("rule")
    shed = head.index("loadshed")
    return {
        line[2:kind].strip(): f"{line[state:rule].strip()}|{line[shed:].strip()}"
        for line in _table(screen)
    }


def counted(screen: str, pattern: str) -> int:
    found = re.search(pattern, screen)
    return int(found.group(1)) if found else 0


def assert_counts_true(screen: str) -> None:
    """The status line says exactly what the rows say: each device once, as it is now."""
    cells = columns(screen).values()
    busy = sum(c.split("|")[0] in BUSY_STATES for c in cells)
    off = sum(c.split("|")[0] == "off" and c.split("|")[1].startswith("SHED") for c in cells)
    status = screen.splitlines()[4]
    assert (
        counted(status, r"(\d+) switched off by loadshed"),
        counted(status, r"(\d+) switching"),
    ) == (
        off,
        busy,
    ), screen


def stable(pane: Pane) -> str:
    """A screen captured twice alike: not one caught halfway through a redraw."""
    while True:
        first = pane.screen()
        if pane.screen() == first:
            return first


def house_minutes(hhmm: tuple[str, str]) -> int:
    return int(hhmm[0]) * 60 + int(hhmm[1])


@pytest.mark.timeout(180)
def test_demo_screen_one_clock_true_counts_pinned_outage_and_forced_status(
    pane: Callable[..., Pane], tmp_path: Path
) -> None:
    demo = pane([sys.executable, "-m", "loadshed", "demo", "--speed", "60"], tmp_path, height=33)
    screen = demo.wait_text("● on grid since")
    title = screen.splitlines()[0]
    assert title.rstrip().endswith("solar by time of day")  # no wall clock beside the house's
    now = house_minutes(CLOCK.findall(title)[0])
    for hhmm in CLOCK.findall("\n".join(screen.splitlines()[1:])):  # since, events: the house's
        assert 0 <= (now - house_minutes(hhmm)) % (24 * 60) <= 30, (hhmm, screen)
    assert "─ events (house clock) ─" in screen

    demo.keys("g")  # the outage: every screen's counts agree with its rows
    deadline = time.monotonic() + WAIT_S
    while True:
        screen = stable(demo)
        if "OFF GRID" in screen:
            assert_counts_true(screen)
            states = [c.split("|")[0] for c in columns(screen).values()]
            if "shed finished" in screen and not BUSY_STATES & set(states):
                break
        assert time.monotonic() < deadline, f"the shed did not settle:\n{screen}"
        time.sleep(0.05)
    lines = screen.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith("─ events"))
    assert re.fullmatch(
        r"  \d\d:\d\d grid lost \(SystemIslandedActive\), battery \d+ %", lines[rule + 1]
    )
    assert "" not in lines[rule + 1 : -2], screen  # every row of the events pane is used
    now = house_minutes(CLOCK.findall(lines[0])[0])
    since = house_minutes(CLOCK.findall(lines[1])[0])  # OFF GRID — on battery for …, since
    assert 0 <= (now - since) % (24 * 60) <= 30, screen

    demo.keys("g")  # the grid back: the restore, then the outage's line goes
    demo.wait("every shed row back on", rows_are_on(SHEDDABLE), 40)
    demo.wait("the outage over", lambda s: "SHED" not in s and "grid lost" not in s, 40)

    demo.keys("s")
    demo.wait_text("Force a shed now? y/n")
    demo.keys("y")
    said: list[str] = []
    deadline = time.monotonic() + WAIT_S
    while True:
        screen = stable(demo)
        assert time.monotonic() < deadline, f"the forced shed's line stayed:\n{screen}"
        bottom = screen.rstrip("\n").splitlines()[-2]
        if "y/n" in bottom:  # the y not read yet
            continue
        if not bottom.startswith(" force shed:"):
            break  # done: the line is gone
        said.append(bottom)
        cells = columns(screen).values()
        if "asked" not in bottom:
            off = sum(c.startswith("off|SHED forced") for c in cells)
            busy = sum(c.split("|")[0] in BUSY_STATES for c in cells)
            assert bottom.startswith(f" force shed: {off} off, {busy} switching"), screen
        time.sleep(0.05)
    if sshd_available():  # the computers take seconds to shut down: the line was seen
        assert any(re.match(r" force shed: \d+ off, \d+ switching", line) for line in said)
    assert rows_say(SHEDDABLE, " off ", "SHED forced from keyboard")(screen), screen

    demo.keys("q")
    demo.wait_text("Quit? y/n")
    demo.keys("y")
    screen = demo.wait_text("EXITED 0")
    lines = [line for line in screen.splitlines() if line]
    assert lines[: lines.index("EXITED 0")][-1:] == [
        "That was the demo. Run `loadshed check` against your own house next (see README)."
    ]
    assert sum("loadshed check" in line for line in lines) == 1


@pytest.mark.timeout(150)
def test_the_demo_on_a_terminal_that_cannot_draw_plays_in_plain_lines(
    pane: Callable[..., Pane], tmp_path: Path
) -> None:
    command = [sys.executable, "-m", "loadshed", "demo", "--speed", "3000"]
    demo = pane(["env", "TERM=dumb", *command], tmp_path)
    demo.wait_text("EXITED", 140)
    out = demo.history()
    assert "EXITED 0" in out, out
    lines = out.splitlines()
    assert lines[0] == (
        "loadshed: this terminal cannot draw the screen (TERM=dumb cannot move the cursor); "
        "plain lines instead."
    )
    assert "Traceback" not in out and "\x1b" not in out
    assert "The end. Run `loadshed check` against your own house next" in out
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("term", "size", "why"),
    [
        pytest.param(
            "no-such-terminal",
            (WIDTH, HEIGHT),
            "cannot draw the screen (TERM=no-such-terminal is not in terminfo)",
            id="unknown-term",
        ),
        pytest.param(None, (60, 20), "is 60x20, too small for the screen (70x14)", id="small"),
    ],
)
def test_run_on_a_terminal_that_cannot_draw_says_why_in_one_line(
    pane: Callable[..., Pane],
    config: Path,
    tmp_path: Path,
    term: str | None,
    size: tuple[int, int],
    why: str,
) -> None:
    """One sentence, never a curses traceback; plain lines, if any follow, stop on SIGINT."""
    command = [sys.executable, "-m", "loadshed", "run", "--config", str(config)]
    command += ["--state-dir", str(tmp_path / "state")]
    stop = ["timeout", "-s", "INT", "10"]
    run = pane([*(["env", f"TERM={term}"] if term else []), *stop, *command], tmp_path, *size)
    run.wait_text("EXITED", 30)
    out = run.history()
    assert f"loadshed: this terminal {why}" in out, out
    assert "Traceback" not in out and "Error opening terminal" not in out
