"""What the grid did, since when, and what to tell the owner: the engine's grid bookkeeping.

Transitions, not levels (NUT upsmon): a line and an alert when the grid is lost and when it is
back, when the Powerwall has been unreadable for `policy.UNKNOWN_POLLS` polls and when it is
readable again. It also keeps the wall-clock times the screen shows: since when the grid is as
it is, since when the house is on battery. It switches nothing; the engine does.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Final, Protocol

from loadshed import policy
from loadshed.model import EventKind, Grid, GridReading

DISAGREE_SAID_S: Final = 900.0  # "grid sources disagree" at most this often (a blinking canary)


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
        self.disagreement = ""  # the grid sources disagree: who says what
        self._disagree_said_at = -math.inf  # wall clock of the last "disagree" said
        self._disagreeing = False  # a disagreement was said and has not ended

    def start(self, reading: GridReading) -> None:
        """The reading taken at start: known since loadshed started, as far as it knows."""
        if reading.grid is not Grid.UNKNOWN:
            self.since = self.wall()

    def note(self, reading: GridReading, decision: policy.Decision, *, outage_over: bool) -> None:
        """Take in one decision: say and tell what changed, in that order, before the switching
        it causes. `reading` is the Powerwall's; `decision.reading` what the decision went by
        (the Powerwall's, or the secondary sources' while it cannot be read). `outage_over`: on
        grid, and nothing left shed."""
        self._powerwall(reading, decision)
        self._sources(decision)
        effective = decision.reading
        if effective is None:
            return
        if self.since is None or decision.changed is not None:
            self.since = self.wall()
        if decision.changed is Grid.OFF:
            self.outage_since = self.wall()
            self.say(f"grid lost ({effective.raw}), battery {pct(reading)}", event=True)
            self.tell(EventKind.OFF_GRID, effective.raw)
        elif decision.changed is Grid.ON:
            self.say(f"grid back ({effective.raw}), battery {pct(reading)}", event=True)
            self.tell(EventKind.ON_GRID, effective.raw)
        if effective.grid is Grid.OFF and self.outage_since is None:
            self.outage_since = self.since
        if outage_over:
            self.outage_since = None

    def _powerwall(self, reading: GridReading, decision: policy.Decision) -> None:
        """The Powerwall unreadable for UNKNOWN_POLLS polls, and readable again: once each."""
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
        elif self.powerwall_lost:
            self.powerwall_lost = False
            self.say("Powerwall readable again", event=True)
            self.tell(EventKind.POWERWALL_BACK, "")

    def _sources(self, decision: policy.Decision) -> None:
        """The grid sources begin to disagree, or agree again: a disagreement is said (and the
        owner told) at most once every DISAGREE_SAID_S, so a canary that blinks cannot flood
        either; its end is said when its beginning was."""
        was, says = self.disagreement, decision.disagreement
        self.disagreement = says
        if says and not was and self.wall() - self._disagree_said_at >= DISAGREE_SAID_S:
            self._disagree_said_at = self.wall()
            self._disagreeing = True
            self.say(f"grid sources disagree: {says}", logging.WARNING, event=True)
            self.tell(EventKind.SOURCES_DISAGREE, says)
        elif not says and self._disagreeing:
            self._disagreeing = False
            self.say("grid sources agree again", event=True)


def pct(reading: GridReading) -> str:
    return "unknown" if reading.battery_pct is None else f"{reading.battery_pct:.0f} %"
