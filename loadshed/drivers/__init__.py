"""Drivers: one module per outside system, each a thin, bounded, never-raising wrapper.

Every switchable device (a Kasa plug or strip outlet, a Tuya plug, later a computer) is a
`Switch`. Every call returns an `Outcome` within the driver's own timeout; a driver never raises
into its caller.
"""

from __future__ import annotations

from typing import Protocol

from loadshed.model import Kind, Outcome


class Switch(Protocol):
    """One device loadshed can read and switch."""

    name: str  # unique, the owner's own name for it (Kasa alias, Tuya name)
    kind: Kind

    @property
    def address(self) -> str:
        """Where it is reached, shown in tables: "192.168.1.20:9999"."""
        ...

    async def read(self) -> Outcome:
        """Read whether it is on. Never raises."""
        ...

    async def off(self) -> Outcome:
        """Switch it off and report the state it is in after. Never raises."""
        ...

    async def on(self) -> Outcome:
        """Switch it on and report the state it is in after. Never raises."""
        ...

    async def close(self) -> None:
        """Release connections and threads. Never raises."""
        ...
