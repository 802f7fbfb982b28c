"""`loadshed demo`: a scripted outage in a simulated house, with the real engine, on loopback.

The house (a Powerwall, Kasa plugs and a strip, Tuya plugs) runs on 127.0.0.1; its battery
drains `speed` times faster than real time. The real engine watches it from a monitor thread,
as `loadshed run` would, with its state in a temporary directory. The script: on grid → the
grid fails → every "shed at outage" plug goes off → the battery drains through the tiers →
the grid comes back → exactly what was shed comes back on. Needs no hardware and no config.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final, TextIO

from loadshed.check import format_table, run_check
from loadshed.config import load_config
from loadshed.errors import ExitCode, LoadshedError
from loadshed.logs import redact_secrets
from loadshed.monitor import Monitor
from loadshed.sim.house import SimHouse
from loadshed.state import EVENTS_LOGGER, StateStore

DEFAULT_SPEED: Final = 1000.0  # sim seconds per real second: a winter evening in a minute
START_BATTERY_PCT: Final = 56.0  # just above the Dehumidifier's 50 % tier
START_HOUR: Final = 18.5  # a winter evening: no sun to help
DEMO_POLL_S: Final = 0.5
DEMO_RESTORE_S: Final = 3.0  # RESTORE_AFTER_SECONDS for the demo (60 by default)
STEP_TIMEOUT_S: Final = 120.0  # no step of the story may take longer than this


def run_demo(out: TextIO, speed: float = DEFAULT_SPEED) -> int:
    """Play the scripted outage; print what happens. 0 when the story ends as it should."""
    with (
        tempfile.TemporaryDirectory(prefix="loadshed-demo-") as tmp,
        SimHouse(speed=speed, battery_pct=START_BATTERY_PCT, hour=START_HOUR) as house,
    ):
        config_path = house.write_config(Path(tmp) / "config.py")
        with config_path.open("a") as f:
            f.write(f"POLL_SECONDS = {DEMO_POLL_S}\nRESTORE_AFTER_SECONDS = {DEMO_RESTORE_S}\n")
        config = load_config(config_path, {})
        redact_secrets(config.secrets())
        say = _Narrator(out, house)
        say(f"A simulated house on 127.0.0.1: {house.summary()}.")
        say(f"Its battery clock runs {speed:g}x real time; state in {tmp}/state.\n")
        print(format_table(asyncio.run(run_check(config, ())).rows), file=out, flush=True)

        store = StateStore(Path(tmp) / "state")
        store.open()
        events = logging.getLogger(EVENTS_LOGGER)
        handler = store.events_handler()
        events.addHandler(handler)
        monitor = Monitor(config, store)
        try:
            monitor.start()
            return _story(say, house, monitor, speed)
        finally:
            monitor.stop()
            monitor.join(STEP_TIMEOUT_S)
            events.removeHandler(handler)
            handler.close()
            store.close()


def _story(say: _Narrator, house: SimHouse, monitor: Monitor, speed: float) -> int:
    at_outage = ("Monitor", "Printer", "TV", "Space heater")
    say.step("On grid. loadshed reads every device before deciding anything.")
    say.wait("loadshed ready", lambda: monitor.snapshot.started)

    say.step("The grid fails: the Powerwall islands the house.")
    house.cut_grid()
    say.wait("the 'shed at outage' plugs off", lambda: not any(map(house.is_on, at_outage)))
    say.wait("the shed settled", lambda: not any(row.busy for row in monitor.snapshot.devices))
    say(f"  Off: {', '.join(at_outage)}. Router and Aquarium are essential; the Desk lamp was off.")

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
    say.wait(
        "loadshed's state emptied",
        lambda: not any(row.shed_reason or row.busy for row in monitor.snapshot.devices),
    )
    lamp = "still off, as it was before" if not house.is_on("Desk lamp") else "ON (wrong!)"
    say(f"  Back on: {', '.join(shed)}. The Desk lamp is {lamp}.")
    say.step("The end. Run `loadshed check` against your own house next (see README).")
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
