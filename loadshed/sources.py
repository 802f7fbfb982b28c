"""The grid sources the config asks for: the Powerwall (primary, by one of its three APIs) and
the secondary ones (canary plugs, a UPS through NUT).

Each source has `endpoint`, `async read() -> GridReading` (never raises) and `async close()`.
Secondary sources are polled on their own, every poll, so a slow one (a silent canary costs a
device timeout) never delays the Powerwall's reading; `Latest` keeps each one's last reading
and its age, and a reading too old to mean anything is unknown.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final, Protocol

from loadshed.canary import CanarySource
from loadshed.config import Config
from loadshed.devices import DEVICE_TIMEOUT_S, Registry
from loadshed.drivers.nut import NutSource
from loadshed.drivers.powerwall import PowerwallSource
from loadshed.model import Grid, GridReading, Status
from loadshed.trust import Trust

POWERWALL_TIMEOUT_S: Final = 5.0  # one Powerwall read, whichever API
NUT_TIMEOUT_S: Final = 5.0
SECONDARY_TIMEOUT_S: Final = max(DEVICE_TIMEOUT_S, NUT_TIMEOUT_S)  # the longest a read may take
STALE_POLLS: Final = 3  # a secondary reading older than this many polls (plus its timeout) is
# unknown: its source has stopped answering without saying so


class GridSource(Protocol):
    endpoint: str

    async def read(self) -> GridReading: ...

    async def close(self) -> None: ...


def primary(
    config: Config, trust: Trust | None, clock: Callable[[], float] = time.monotonic
) -> GridSource:
    """The Powerwall, through the API the config names."""
    if config.powerwall_api == "legacy":
        return PowerwallSource(
            str(config.powerwall),
            config.powerwall_password,
            config.powerwall_email,
            timeout_s=POWERWALL_TIMEOUT_S,
            clock=clock,
            trust=trust,
        )
    # pypowerwall is a heavy import (requests, httpx, protobuf): only for those who use it
    from loadshed.drivers.tedapi import TedapiSource

    return TedapiSource(
        str(config.powerwall),
        config.gateway_password,
        timeout_s=POWERWALL_TIMEOUT_S,
        rsa_key_path=config.rsa_key if config.powerwall_api == "v1r" else None,
        clock=clock,
    )


def secondaries(config: Config, registry: Registry) -> list[GridSource]:
    """The canary plugs and the UPS, those the config names."""
    found: list[GridSource] = []
    if config.grid_canary:
        found.append(CanarySource(config.grid_canary, registry))
    if config.nut_ups is not None:
        target = config.nut_ups
        found.append(
            NutSource(
                target.ups,
                target.host,
                target.port,
                username=config.nut_user,
                password=config.nut_password,
                timeout_s=NUT_TIMEOUT_S,
            )
        )
    return found


@dataclass(frozen=True, slots=True)
class Latest:
    """A source's last reading and when it was taken (the engine's clock)."""

    reading: GridReading
    at: float

    def now(self, now: float, poll_s: float, timeout_s: float) -> GridReading:
        """The reading as it stands now: unknown once it is too old to trust."""
        age = now - self.at
        if age <= STALE_POLLS * poll_s + timeout_s:
            return self.reading
        return replace(
            self.reading,
            grid=Grid.UNKNOWN,
            detail=f"no reading for {age:.0f} s",
            status=Status.UNREACHABLE,
        )
