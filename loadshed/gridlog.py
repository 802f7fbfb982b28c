"""What the grid did, since when, and what to tell the owner: the engine's grid bookkeeping.

Transitions, not levels (NUT upsmon): a line and an alert when the grid is lost and when it is
back, when the Powerwall has been unreadable for `policy.UNKNOWN_POLLS` polls and when it is
readable again. It also keeps the wall-clock times the screen shows: since when the grid is as
it is, since when the house is on battery. It switches nothing; the engine does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from loadshed import policy
from loadshed.model import EventKind, Grid, GridReading


class Say(Protocol):
    def __call__(self, text: str, level: int = logging.INFO, *, event: bool = False) -> None: ...


class GridLog:
    """The grid's story so far, told once per change."""

    def __init__(
        self,
        poll_s: float,
        *,
        wall: Callable[[], float],
        say: Say,
        tell: Callable[[EventKind, str], None],
    ) -> None:
        self.poll_s = poll_s
        self.wall = wall
        self.say = say
        self.tell = tell
        self.since: float | None = None  # wall clock when the present grid state began
        self.outage_since: float | None = None  # wall clock when the outage began
        self.powerwall_lost = False  # unreadable long enough to have told the owner

    def start(self, reading: GridReading) -> None:
        """The reading taken at start: known since loadshed started, as far as it knows."""
        if reading.grid is not Grid.UNKNOWN:
            self.since = self.wall()

    def note(self, reading: GridReading, decision: policy.Decision, *, outage_over: bool) -> None:
        """Take in one decision's reading: say and tell what changed, in that order, before
        the switching it causes. `outage_over`: on grid, and nothing left shed."""
        if reading.grid is Grid.UNKNOWN:
            lost_after = policy.UNKNOWN_POLLS * self.poll_s
            if decision.unknown_for_s >= lost_after and not self.powerwall_lost:
                self.powerwall_lost = True
                self.say(
                    f"Powerwall unreadable for {decision.unknown_for_s:.0f} s: {reading.detail}",
                    logging.WARNING,
                    event=True,
                )
                self.tell(EventKind.POWERWALL_LOST, reading.detail)
            return
        if self.powerwall_lost:
            self.powerwall_lost = False
            self.say("Powerwall readable again", event=True)
            self.tell(EventKind.POWERWALL_BACK, "")
        if self.since is None or decision.changed is not None:
            self.since = self.wall()
        if decision.changed is Grid.OFF:
            self.outage_since = self.wall()
            self.say(f"grid lost ({reading.raw}), battery {pct(reading)}", event=True)
            self.tell(EventKind.OFF_GRID, reading.raw)
        elif decision.changed is Grid.ON:
            self.say(f"grid back ({reading.raw}), battery {pct(reading)}", event=True)
            self.tell(EventKind.ON_GRID, reading.raw)
        if reading.grid is Grid.OFF and self.outage_since is None:
            self.outage_since = self.since
        if outage_over:
            self.outage_since = None


def pct(reading: GridReading) -> str:
    return "unknown" if reading.battery_pct is None else f"{reading.battery_pct:.0f} %"
