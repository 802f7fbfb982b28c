"""`loadshed demo`: a scripted outage in a simulated house, with the real engine, on loopback.

The house (a Powerwall, Kasa plugs and a strip, Tuya plugs) runs on 127.0.0.1; its battery
drains `speed` times faster than real time. The real engine watches it from a monitor thread,
as `loadshed run` would, with its state in a temporary directory. The script: on grid → the
grid fails → every "shed at outage" plug goes off → the battery drains through the tiers →
the grid comes back → exactly what was shed comes back on. Needs no hardware and no config.

`run_live_demo` is the same house and engine behind the curses screen, for a person to play
with, plus the house's two computers on a real sshd when OpenSSH is installed: g cuts and
restores the grid, + and - add and remove solar. Its keys act on the house only; what loadshed
does about it is the real engine's business, as in `loadshed run`. It ends with one line
pointing to `loadshed check`; on a terminal that cannot draw the screen it says why in one line
and plays the scripted outage instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TextIO

from loadshed.check import format_table, run_check
from loadshed.computers import Computer, load_computers
from loadshed.config import Config, load_config
from loadshed.errors import ExitCode, LoadshedError
from loadshed.logs import redact_secrets
from loadshed.monitor import Monitor
from loadshed.sim.house import SimHouse, sshd_available
from loadshed.state import EVENTS_LOGGER, StateStore

DEFAULT_SPEED: Final = 1000.0  # sim seconds per real second: a winter evening in a minute
START_BATTERY_PCT: Final = 56.0  # just above the Dehumidifier's 50 % tier
START_HOUR: Final = 18.5  # a winter evening: no sun to help
DEMO_POLL_S: Final = 0.5
DEMO_RESTORE_S: Final = 3.0  # RESTORE_AFTER_SECONDS for the demo (60 by default)
STEP_TIMEOUT_S: Final = 120.0  # no step of the story may take longer than this
LIVE_SPEED: Final = 60.0  # the live demo's default: a minute of the house each second
LIVE_BATTERY_PCT: Final = 80.0  # room to drain through both tiers (50 %, 30 %) while playing
LIVE_RESTORE_S: Final = 10.0  # long enough to watch "restoring in" count down
SOLAR_STEP_W: Final = 1000.0  # one press of + or -
SOLAR_MAX_W: Final = 10_000.0
NEXT_STEP: Final = "Run `loadshed check` against your own house next (see README)."


@dataclass(frozen=True, slots=True)
class _Stage:
    """A running simulated house, its config, and an open state dir, for either demo."""

    house: SimHouse
    config: Config
    computers: tuple[Computer, ...]
    computers_path: Path
    store: StateStore
    tmp: Path

    def monitor(self) -> Monitor:
        return Monitor(
            self.config, self.store, computers=self.computers, computers_path=self.computers_path
        )


@contextlib.contextmanager
def _stage(speed: float, battery_pct: float, restore_s: float) -> Iterator[_Stage]:
    """Start the house (with its computers when sshd is installed) and a temporary state dir."""
    with (
        tempfile.TemporaryDirectory(prefix="loadshed-demo-") as tmp,
        SimHouse(
            speed=speed, battery_pct=battery_pct, hour=START_HOUR, computers=sshd_available()
        ) as house,
    ):
        config_path = house.write_config(Path(tmp) / "config.py")
        with config_path.open("a") as f:
            f.write(f"POLL_SECONDS = {DEMO_POLL_S}\nRESTORE_AFTER_SECONDS = {restore_s}\n")
        config = load_config(config_path, {})
        redact_secrets(config.secrets())
        computers_path = config_path.parent / "computers.txt"
        store = StateStore(Path(tmp) / "state")
        store.open()
        events = logging.getLogger(EVENTS_LOGGER)
        handler = store.events_handler()
        events.addHandler(handler)
        try:
            yield _Stage(
                house, config, load_computers(computers_path), computers_path, store, Path(tmp)
            )
        finally:
            events.removeHandler(handler)
            handler.close()
            store.close()


def run_demo(out: TextIO, speed: float = DEFAULT_SPEED) -> int:
    """Play the scripted outage; print what happens. 0 when the story ends as it should."""
    with _stage(speed, START_BATTERY_PCT, DEMO_RESTORE_S) as stage:
        say = _Narrator(out, stage.house)
        say(f"A simulated house on 127.0.0.1: {stage.house.summary()}.")
        say(f"Its battery clock runs {speed:g}x real time; state in {stage.tmp}/state.\n")
        report = asyncio.run(run_check(stage.config, stage.computers, stage.computers_path))
        print(format_table(report.rows), file=out, flush=True)
        monitor = stage.monitor()
        try:
            monitor.start()
            return _story(say, stage.house, monitor, speed)
        finally:
            monitor.stop()
            monitor.join(STEP_TIMEOUT_S)


def run_live_demo(speed: float = LIVE_SPEED, out: TextIO | None = None) -> int:
    """The simulated house behind the live screen, until q. 0 when quit from the screen.

    On a terminal that cannot draw the screen: one line why, then the scripted outage in plain
    lines (at its own speed, unless another was asked for).
    """
    from loadshed.daemon import logs_held
    from loadshed.ui import CannotDraw, run_ui, why_no_screen  # the scripted demo: no curses
    from loadshed.view import Demo

    out = sys.stdout if out is None else out
    why = why_no_screen()
    if why is None:
        try:
            with _stage(speed, LIVE_BATTERY_PCT, LIVE_RESTORE_S) as stage, logs_held():
                house = stage.house
                code = run_ui(
                    stage.monitor(),
                    demo_keys=_demo_keys(house),
                    demo_info=lambda: Demo(speed, house.energy.hour, house.energy.solar_override_w),
                    capacity_wh=house.energy.capacity_wh,
                )
        except CannotDraw as err:
            why = str(err)
        else:
            if code == ExitCode.OK:
                print(f"That was the demo. {NEXT_STEP}", file=out, flush=True)
            return code
    print(f"loadshed: {why}; plain lines instead.", file=out, flush=True)
    return run_demo(out, DEFAULT_SPEED if speed == LIVE_SPEED else speed)


def _demo_keys(house: SimHouse) -> dict[str, Callable[[], str]]:
    """What the demo's keys do to the house, each saying what it did."""

    def grid() -> str:
        if house.energy.grid_up:
            house.cut_grid()
            return "demo: the grid is cut; the Powerwall islands the house"
        house.restore_grid()
        return "demo: the grid is back; loadshed restores once it has been stable"

    def solar(step_w: float) -> Callable[[], str]:
        def change() -> str:
            now_w = house.energy.solar_override_w
            watts = min(max((now_w or 0.0) + step_w, 0.0), SOLAR_MAX_W)
            house.set_solar(watts if watts > 0 else None)
            if watts > 0:
                return f"demo: solar fixed at {watts / 1000:g} kW"
            return "demo: solar follows the time of day again"

        return change

    return {"g": grid, "+": solar(SOLAR_STEP_W), "-": solar(-SOLAR_STEP_W)}


def _story(say: _Narrator, house: SimHouse, monitor: Monitor, speed: float) -> int:
    at_outage = ("Monitor", "Printer", "TV", "Space heater", *house.outlets.keys() & {"NAS plug"})
    say.step("On grid. loadshed reads every device before deciding anything.")
    say.wait("loadshed ready", lambda: monitor.snapshot.started)

    say.step("The grid fails: the Powerwall islands the house.")
    house.cut_grid()
    say.wait("the 'shed at outage' plugs off", lambda: not any(map(house.is_on, at_outage)))
    say.wait("the shed settled", lambda: not any(row.busy for row in monitor.snapshot.devices))
    say(f"  Off: {', '.join(at_outage)}. Router and Aquarium are essential; the Desk lamp was off.")
    if house.hosts:
        downs = ", ".join(f"{n} ({h.shutdowns()[0]!r})" for n, h in house.hosts.items())
        say(f"  Shut down over SSH first: {downs}; the NAS plug was cut only after the NAS.")

    drain_h = (START_BATTERY_PCT - 30) / 100 * house.energy.capacity_wh / house.energy.load_w()
    say.step(
        "The battery drains on a winter evening "
        f"(about {drain_h * 3600 / speed:.0f} s at --speed {speed:g}) ..."
    )
    say.wait("the Dehumidifier shed below 50 %", lambda: not house.is_on("Dehumidifier"))
    say.wait("the Freezer shed below 30 %", lambda: not house.is_on("Freezer"))

    say.step("The grid comes back. loadshed waits for it to be stable, then restores.")
    house.restore_grid()
    shed = (*at_outage, "Dehumidifier", "Freezer")
    say.wait("everything shed back on", lambda: all(map(house.is_on, shed)))
    if house.hosts:
        say("  The Workstation gets a Wake-on-LAN packet; the NAS plug stays off 10 s first, so")
        say("  the NAS's BIOS sees a power loss and boots it ...")
        say.wait("the computers back up", lambda: all(h.is_up for h in house.hosts.values()))
    say.wait(
        "loadshed's state emptied",
        lambda: not any(row.shed_reason or row.busy for row in monitor.snapshot.devices),
    )
    lamp = "still off, as it was before" if not house.is_on("Desk lamp") else "ON (wrong!)"
    back = (*shed, *house.hosts)
    say(f"  Back on: {', '.join(back)}. The Desk lamp is {lamp}.")
    say.step(f"The end. {NEXT_STEP}")
    return ExitCode.OK if not house.is_on("Desk lamp") else ExitCode.FAILURE


class _Narrator:
    """Print the story's lines, each with the sim clock and the battery."""

    def __init__(self, out: TextIO, house: SimHouse) -> None:
        self.out = out
        self.house = house

    def __call__(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def step(self, text: str) -> None:
        hour = self.house.energy.hour
        clock = f"{int(hour):02d}:{int(hour % 1 * 60):02d}"
        battery = self.house.site.battery_pct
        self(f"\n== [house {clock}, battery {battery:.0f} %] {text}")

    def wait(self, what: str, done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while not done():
            if time.monotonic() > deadline:
                raise LoadshedError(f"demo: {what} did not happen in {STEP_TIMEOUT_S:g} s")
            time.sleep(0.05)
