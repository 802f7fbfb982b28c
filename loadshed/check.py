"""`loadshed check`: reach the Powerwall, every plug and every computer once, in parallel.

It reads and never switches: every call is a read. The result is a list of `Row`s that
`format_table` lays out for the terminal.
"""

from __future__ import annotations

import asyncio
import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from loadshed.computers import Computer
from loadshed.config import Config, describe_rule
from loadshed.drivers import Switch
from loadshed.drivers.kasa import KasaHost
from loadshed.drivers.powerwall import PowerwallSource
from loadshed.drivers.reach import probe_port
from loadshed.drivers.tuya import TuyaPlug, tuya_executor
from loadshed.model import Grid, GridReading, Kind, Outcome, Power, Status

DEVICE_TIMEOUT_S: Final = 3.0  # one plug's answer; a hung plug is reported, not waited on
POWERWALL_TIMEOUT_S: Final = 5.0  # the gateway is slower than a plug, and matters more
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

    @property
    def all_reachable(self) -> bool:
        return all(r.reachable and r.outcome.is_ok for r in self.rows)


async def run_check(config: Config, computers: Sequence[Computer]) -> Report:
    """Reach everything once, concurrently; return one row per device."""
    kasa_hosts = [
        KasaHost(
            h.host,
            h.port,
            username=config.kasa_username,
            password=config.kasa_password,
            timeout_s=DEVICE_TIMEOUT_S,
        )
        for h in config.kasa_hosts
    ]
    executor = tuya_executor(len(config.tuya_devices))
    tuya = [
        TuyaPlug(
            d.name,
            d.id,
            d.ip,
            d.key,
            d.version,
            port=d.port,
            dps=d.dps,
            timeout_s=DEVICE_TIMEOUT_S,
            executor=executor,
        )
        for d in config.tuya_devices
    ]
    powerwall = PowerwallSource(
        str(config.powerwall),
        config.powerwall_password,
        config.powerwall_email,
        timeout_s=POWERWALL_TIMEOUT_S,
    )
    try:
        grid_row, kasa_rows, tuya_rows, computer_rows = await asyncio.gather(
            _powerwall_row(powerwall, str(config.powerwall)),
            asyncio.gather(*(_kasa_rows(h, config) for h in kasa_hosts)),
            asyncio.gather(*(_switch_row(p, config) for p in tuya)),
            asyncio.gather(*(_computer_row(c, config) for c in computers)),
        )
    finally:
        await asyncio.gather(
            powerwall.close(), *(h.close() for h in kasa_hosts), *(p.close() for p in tuya)
        )
        executor.shutdown(wait=False, cancel_futures=True)
    rows = (grid_row, *(r for rs in kasa_rows for r in rs), *tuya_rows, *computer_rows)
    return Report(rows, (*config.warnings, *_name_warnings(rows, config, computers)))


async def _powerwall_row(source: PowerwallSource, address: str) -> Row:
    reading = await source.read()
    if reading.status is not Status.OK:
        outcome = Outcome(reading.status, detail=reading.detail)
    elif reading.grid is Grid.UNKNOWN:
        # It answered, with a state loadshed will not act on: the owner must know.
        outcome = Outcome.failed(reading.detail or f"unknown grid state {reading.raw}")
    else:
        outcome = Outcome.ok(None)
    state = _grid_state(reading) if reading.status is Status.OK else ""
    return Row("Powerwall", Kind.POWERWALL, address, outcome, state, "")


def _grid_state(reading: GridReading) -> str:
    if reading.grid is Grid.UNKNOWN and not reading.raw:
        return "unknown"
    parts = [reading.grid.value if reading.grid is not Grid.UNKNOWN else f"unknown ({reading.raw})"]
    if reading.battery_pct is not None:
        parts.append(f"battery {reading.battery_pct:.0f} %")
    if reading.load_w is not None:
        parts.append(f"load {reading.load_w / 1000:.1f} kW")
    return ", ".join(parts)


async def _kasa_rows(host: KasaHost, config: Config) -> list[Row]:
    outcome = await host.connect()
    if not outcome.is_ok:
        return [Row(host.address, Kind.KASA, host.address, outcome, "", "")]
    return list(await asyncio.gather(*(_switch_row(s, config) for s in host.switches)))


async def _switch_row(switch: Switch, config: Config) -> Row:
    outcome = await switch.read()
    state = outcome.power.value if outcome.power is not None else ""
    if outcome.watts is not None and outcome.power is Power.ON:
        state += f", {outcome.watts:.0f} W"
    rule = describe_rule(config.rule_for(switch.name))
    return Row(switch.name, switch.kind, switch.address, outcome, state, rule)


async def _computer_row(computer: Computer, config: Config) -> Row:
    outcome = await probe_port(computer.host, computer.port, DEVICE_TIMEOUT_S)
    state = "up" if outcome.is_ok else ""
    rule = (
        computer.shed_below if computer.shed_below is not None else config.rule_for(computer.name)
    )
    return Row(computer.name, computer.kind, computer.address, outcome, state, describe_rule(rule))


def _name_warnings(rows: Sequence[Row], config: Config, computers: Sequence[Computer]) -> list[str]:
    """Warn about names the owner will trip over: duplicates, and rules that name nothing."""
    names = [r.name for r in rows if r.kind is not Kind.POWERWALL and r.outcome.is_ok]
    warnings = [
        f"two devices are named {name!r}: SHED_BELOW and the screen cannot tell them apart; "
        "rename one in its app or with name="
        for name in sorted({n for n in names if names.count(n) > 1})
    ]
    everything_answered = all(r.reachable for r in rows if r.kind is Kind.KASA)
    known = set(names) | {c.name for c in computers}
    for name in config.shed_below:
        if name in known or not everything_answered:
            continue
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" — did you mean {close[0]!r}?" if close else ""
        warnings.append(f"SHED_BELOW names {name!r}, but no device is called that{hint}")
    return warnings


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
