"""GRID_CANARY plugs as a grid source: plugs on circuits the Powerwall does not back up.

In an outage the Powerwall keeps the backed-up circuits alive, so their plugs keep answering on
the LAN; a canary plug on an unprotected circuit loses power and falls silent. So:

- a canary that answers (any answer: it has power) says the grid is up;
- every canary silent while a backed-up plug ("witness") still answers says the grid is down;
- canaries and witnesses silent together say nothing about the grid: it is the network
  (the Wi-Fi, the router): unknown.

The canaries are read every poll, never switched. Witnesses are a few backed-up plugs read with
them (an essential one first: it is on, and stays on, through an outage). The reading is a pure
function of the reads (`verdict`); `CanarySource` does the reading, through the registry, so the
engine sees the same devices.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from loadshed.devices import PLUG_KINDS, Device, Registry
from loadshed.model import CANARY, Grid, GridReading, Status

WITNESSES: Final = 2  # backed-up plugs read with the canaries, every poll
ANSWERED: Final = (Status.OK, Status.FAILED)  # a refusal is an answer: the plug has power


def verdict(canaries: Sequence[Device], witnesses: Sequence[Device]) -> GridReading:
    """The grid, from what the canaries and their witnesses answered just now."""
    if not canaries:
        return GridReading(Grid.UNKNOWN, detail="no canary plug reached yet", source=CANARY)
    answering = [d.name for d in canaries if d.status in ANSWERED]
    if answering:
        return GridReading(Grid.ON, raw=f"{answering[0]} answers", source=CANARY)
    silent = ", ".join(d.name for d in canaries)
    witness = next((d.name for d in witnesses if d.status in ANSWERED), None)
    if witness is not None:
        return GridReading(
            Grid.OFF,
            raw=f"{silent} silent",
            detail=f"{silent} silent while {witness} (backed up) answers",
            source=CANARY,
        )
    return GridReading(
        Grid.UNKNOWN,
        raw=f"{silent} silent",
        detail=f"{silent} and the backed-up plugs are all silent: the network, not the grid",
        status=Status.UNREACHABLE,
        source=CANARY,
    )


class CanarySource:
    """Reads the canary plugs and a few witnesses through the engine's registry."""

    def __init__(self, names: Sequence[str], registry: Registry) -> None:
        self.names = tuple(names)
        self.registry = registry
        self.endpoint = ", ".join(self.names)

    def canaries(self) -> list[Device]:
        return [self.registry.devices[n] for n in self.names if n in self.registry.devices]

    def witnesses(self) -> list[Device]:
        """Backed-up plugs not busy switching: essential ones first, then those that answered
        last time."""
        plugs = [
            d
            for d in self.registry.devices.values()
            if d.switch.kind in PLUG_KINDS and d.name not in self.names and d.busy is None
        ]
        plugs.sort(key=lambda d: (d.rule != 0, d.status not in ANSWERED, d.name))
        return plugs[:WITNESSES]

    async def read(self) -> GridReading:
        canaries, witnesses = self.canaries(), self.witnesses()
        await self.registry.read([d.name for d in (*canaries, *witnesses)])
        return verdict(canaries, witnesses)

    async def close(self) -> None:
        """The plugs belong to the registry, which closes them."""
