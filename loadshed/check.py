"""`loadshed check`: reach the Powerwall, every plug and every computer once, in parallel.

It reads and never switches: every call is a read. The result is a list of `Row`s that
`format_table` lays out for the terminal.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

from loadshed import sources
from loadshed.canary import CanarySource, verdict
from loadshed.computers import Computer
from loadshed.config import Config, describe_rule
from loadshed.devices import DEVICE_TIMEOUT_S, PLUG_KINDS, Device, Registry
from loadshed.drivers.computer import ComputerSwitch
from loadshed.errors import ConfigError
from loadshed.model import Grid, GridReading, Kind, Outcome, Power, Status
from loadshed.state import default_state_dir
from loadshed.trust import Trust
from loadshed.tuyakeys import KeyCheck

HEADERS: Final = ("name", "kind", "address", "reachable", "state", "rule")


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the check table."""

    name: str
    kind: Kind
    address: str
    outcome: Outcome
    state: str
    rule: str

    @property
    def reachable(self) -> bool:
        return self.outcome.status is not Status.UNREACHABLE


@dataclass(frozen=True, slots=True)
class Report:
    rows: tuple[Row, ...]
    warnings: tuple[str, ...]
    problems: tuple[str, ...] = ()  # wrong, though everything answered: exit 1

    @property
    def all_reachable(self) -> bool:
        return all(r.reachable and r.outcome.is_ok for r in self.rows)


async def run_check(
    config: Config,
    computers: Sequence[Computer],
    computers_path: Path = Path("computers.txt"),
    *,
    trust: Trust | None = None,
    state_dir: Path | None = None,
) -> Report:
    """Reach everything once, concurrently; return one row per device.

    A Tuya plug with a wrong local key gets the Tuya cloud's current one when the TUYAAPI*
    values are set (kept in state_dir's tuya-keys.json), or a detail saying how to get it.
    Raises ConfigError when a computer's powered_by names no plug of the house.
    """
    registry = Registry(
        config, computers, computers_path=computers_path, timeout_s=DEVICE_TIMEOUT_S
    )
    keys = KeyCheck(registry, config, state_dir or config.state_dir or default_state_dir())
    powerwall = sources.primary(config, trust)
    others = [s for s in sources.secondaries(config, registry) if not isinstance(s, CanarySource)]
    try:
        grid_row, computer_rows, other_rows, _ = await asyncio.gather(
            _powerwall_row(powerwall, config, trust),
            asyncio.gather(*(_computer_row(registry.devices[c.name], c) for c in computers)),
            asyncio.gather(*(_source_row(s) for s in others)),
            _reach_plugs(registry, keys),
        )
        if config.grid_canary:
            other_rows = [_canary_row(CanarySource(config.grid_canary, registry)), *other_rows]
    finally:
        await asyncio.gather(powerwall.close(), registry.close(), *(s.close() for s in others))
    error = registry.link_error()
    if error is not None:
        raise error
    if registry.clashes:
        clash = registry.clashes[0]
        raise ConfigError(
            config.path,
            None,
            f"two devices are named {clash.name!r}: the {clash.first_kind.value} at "
            f"{clash.first_address} and the {clash.second_kind.value} at {clash.second_address}",
            "give each its own name: rename one in its app, or use name= in computers.txt",
        )
    plugs = [d for d in registry.devices.values() if d.switch.kind in PLUG_KINDS]
    rows = (
        grid_row,
        *other_rows,
        *(_switch_row(d) for d in plugs),
        *(
            Row(
                p.host.address,
                Kind.KASA,
                p.host.address,
                Outcome(p.status, detail=p.detail),
                "",
                "",
            )
            for p in registry.pending
        ),
        *computer_rows,
    )
    warnings = (
        *config.warnings,
        *keys.notes,
        *(
            f"{c.name} ({computers_path.name}:{c.line}) will not come back after an outage "
            "by itself: add mac= (Wake-on-LAN) or powered_by= (the plug that feeds it)"
            for c in computers
            if c.mac is None and c.powered_by is None
        ),
    )
    return Report(rows, warnings, tuple(registry.rule_typos()))


async def _reach_plugs(registry: Registry, keys: KeyCheck) -> None:
    await registry.connect_pending()
    await registry.read([n for n, d in registry.devices.items() if d.switch.kind in PLUG_KINDS])
    await keys.mend()  # a Tuya plug with a wrong local key: the cloud's current one


API_NAMES: Final = {"legacy": "legacy API", "tedapi": "TEDAPI", "v1r": "TEDAPI v1r"}


async def _powerwall_row(source: sources.GridSource, config: Config, trust: Trust | None) -> Row:
    address = str(config.powerwall)
    reading = await source.read()
    outcome = _reading_outcome(reading)
    state = _grid_state(reading) if reading.status is Status.OK else ""
    pinned = trust.pinned(address) if trust is not None else None
    if pinned is not None and reading.status is Status.OK and config.powerwall_api == "legacy":
        state += f", certificate SHA-256 {pinned[:23]}…"
    api = API_NAMES[config.powerwall_api]  # which API it used, with what the gateway said
    if outcome.is_ok:
        state = f"{state}, {api}"
    else:
        outcome = replace(outcome, detail=f"{api}: {outcome.detail}")
    return Row("Powerwall", Kind.POWERWALL, address, outcome, state, "primary")


def _reading_outcome(reading: GridReading) -> Outcome:
    if reading.status is not Status.OK:
        return Outcome(reading.status, detail=reading.detail)
    if reading.grid is Grid.UNKNOWN:
        # It answered, with a state loadshed will not act on: the owner must know.
        return Outcome.failed(reading.detail or f"unknown grid state {reading.raw}")
    return Outcome.ok(None)


async def _source_row(source: sources.GridSource) -> Row:
    """A secondary source that reads on its own (a UPS through NUT)."""
    reading = await source.read()
    state = _grid_state(reading) if reading.status is Status.OK else ""
    return Row(
        reading.source, Kind.UPS, source.endpoint, _reading_outcome(reading), state, "second"
    )


def _canary_row(canary: CanarySource) -> Row:
    """The canaries' verdict from the plugs just read (the canary plugs have rows of their own)."""
    reading = verdict(canary.canaries(), canary.witnesses())
    if reading.grid is Grid.UNKNOWN:
        outcome = Outcome(Status.FAILED, detail=reading.detail or "cannot tell")
    else:
        outcome = Outcome.ok(None)
    state = f"{reading.grid.value} ({reading.raw})" if reading.grid is not Grid.UNKNOWN else ""
    return Row("canary", Kind.CANARY, canary.endpoint, outcome, state, "second")


def _grid_state(reading: GridReading) -> str:
    if reading.grid is Grid.UNKNOWN and not reading.raw:
        return "unknown"
    grid = reading.grid.value if reading.grid is not Grid.UNKNOWN else "unknown"
    parts = [f"{grid} ({reading.raw})" if reading.raw else grid]
    if reading.battery_pct is not None:
        parts.append(f"battery {reading.battery_pct:.0f} %")
    if reading.load_w is not None:
        parts.append(f"load {reading.load_w / 1000:.1f} kW")
    return ", ".join(parts)


def _switch_row(device: Device) -> Row:
    outcome = Outcome(device.status or Status.UNREACHABLE, device.power, device.detail)
    state = device.power.value if device.power is not None and outcome.is_ok else ""
    if device.watts is not None and device.power is Power.ON:
        state += f", {device.watts:.0f} W"
    switch = device.switch
    return Row(switch.name, switch.kind, switch.address, outcome, state, describe_rule(device.rule))


async def _computer_row(device: Device, computer: Computer) -> Row:
    """Not only reachable: the shutdown would work (key login, host key, sudo), unrun."""
    assert isinstance(device.switch, ComputerSwitch)
    route, outcome = await asyncio.gather(
        device.switch.resolver.route(computer), device.switch.preflight()
    )
    if outcome.is_ok:
        state = "up, shutdown allowed" if computer.uses_ssh else f"up (port {route.port})"
    else:
        state = ""
    address = route.describe()
    if route.address != computer.address:  # an ssh_config alias: say where it leads
        address = f"{computer.address} → {address}"
    return Row(computer.name, computer.kind, address, outcome, state, describe_rule(device.rule))


def format_table(rows: Sequence[Row]) -> str:
    """Lay the rows out in aligned columns, with the reason under each problem."""
    cells = [
        (
            r.name,
            r.kind.value,
            r.address,
            "yes" if r.reachable else "NO",
            r.state if r.outcome.is_ok else (r.state or r.outcome.status.value),
            r.rule,
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(HEADERS)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    out = [line(HEADERS), line(["-" * w for w in widths])]
    for row, values in zip(rows, cells, strict=True):
        out.append(line(values))
        if not row.outcome.is_ok and row.outcome.detail:
            out.append(f"    └ {row.outcome.detail}")
    return "\n".join(out)
