"""The house's devices as the engine sees them: drivers by unique name, with what was last read.

Builds the drivers from the config (Kasa hosts, Tuya plugs), connects Kasa hosts (a strip
becomes one device per outlet), and keeps each device's last power, status and error. A Kasa
host that does not answer stays a placeholder, named by its address, until it does.

Runs on the engine's loop; never raises into it.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from loadshed.computers import Computer
from loadshed.config import Config, TuyaDevice
from loadshed.drivers import Switch
from loadshed.drivers.computer import ComputerSwitch
from loadshed.drivers.kasa import KasaHost
from loadshed.drivers.route import Resolver
from loadshed.drivers.tuya import TuyaPlug, tuya_executor
from loadshed.errors import ConfigError
from loadshed.model import Kind, Outcome, Power, Status, Verb

_LOG = logging.getLogger(__name__)

PLUG_KINDS: Final = (Kind.KASA, Kind.TUYA)
# One plug's call (a switch and its read-back: two round trips). A Wi-Fi plug that answers in
# 3 s is slow, not absent; KLAP needs 2 s or more (drivers/kasa.py). A hung plug holds only its
# own task this long.
DEVICE_TIMEOUT_S: Final = 8.0


@dataclass
class Device:
    """One switchable device and what the engine last learnt of it (loop thread only)."""

    switch: Switch
    rule: int  # SHED_BELOW that applies: 0 essential, 1-99 tier, 100 at outage
    power: Power | None = None
    status: Status | None = None  # None: not read yet
    detail: str = ""
    watts: float | None = None
    busy: Verb | None = None  # an action is in flight
    failures: int = 0  # failed actions in a row
    retry_at: float = 0.0  # monotonic time before which no new action is started
    epoch: int = 0  # bumped when a switch begins and ends: a read that spans one is stale
    read_at: float = -math.inf  # engine clock of the last read it answered

    @property
    def name(self) -> str:
        return self.switch.name

    def learn(self, outcome: Outcome) -> None:
        """Take in what a read or a switch said."""
        self.status = outcome.status
        self.detail = outcome.detail if not outcome.is_ok else ""
        if outcome.power is not None:
            self.power = outcome.power
        if outcome.is_ok:
            self.watts = outcome.watts if self.power is Power.ON else None


@dataclass(frozen=True, slots=True)
class Clash:
    """Two devices with one name (a plug renamed in its app, a computer named like a plug)."""

    name: str
    first_kind: Kind
    first_address: str
    second_kind: Kind
    second_address: str

    @property
    def second_name(self) -> str:
        return f"{self.name} @ {self.second_address}"

    def __str__(self) -> str:
        return (
            f"two devices are named {self.name!r}: the {self.first_kind.value} at "
            f"{self.first_address} and the {self.second_kind.value} at {self.second_address} "
            f"(shown as {self.second_name!r}); each keeps its own rule — give each its own name "
            "(in its app, or name= in computers.txt)"
        )


@dataclass
class _TuyaSlot:
    """A Tuya plug's device, its TUYA_DEVICES entry and the local key it uses now."""

    device: Device
    entry: TuyaDevice
    key: str = field(repr=False)


@dataclass
class Placeholder:
    """A Kasa host that has not answered yet: its outlets and their names are unknown."""

    host: KasaHost
    status: Status = Status.UNREACHABLE
    detail: str = "not reached yet"


class Registry:
    """Every device of the house, by unique name."""

    def __init__(
        self,
        config: Config,
        computers: Sequence[Computer] = (),
        *,
        computers_path: Path = Path("computers.txt"),
        timeout_s: float = DEVICE_TIMEOUT_S,
    ) -> None:
        self.config = config
        self.computers = {c.name: c for c in computers}
        self.computers_path = computers_path
        self.timeout_s = timeout_s
        self.devices: dict[str, Device] = {}
        self.clashes: list[Clash] = []  # two devices with one name: the second was renamed
        self.pending: list[Placeholder] = [
            Placeholder(
                KasaHost(
                    h.host,
                    h.port,
                    username=config.kasa_username,
                    password=config.kasa_password,
                    timeout_s=timeout_s,
                )
            )
            for h in config.kasa_hosts
        ]
        self._executor = tuya_executor(len(config.tuya_devices))
        self._tuya: list[_TuyaSlot] = []  # each Tuya plug, its TUYA_DEVICES entry, its key
        for d in config.tuya_devices:
            device = self._add(self._tuya_plug(d, d.key))
            self._tuya.append(_TuyaSlot(device, d, d.key))
        self.resolver = Resolver(config.ssh_config)  # one `ssh -G` cache for every computer
        for computer in computers:
            switch = ComputerSwitch(
                computer,
                resolver=self.resolver,
                ssh_config=config.ssh_config,
                windows_password=config.windows_password,
            )
            rule = computer.shed_below
            self._add(switch, config.rule_for(computer.name) if rule is None else rule)
        self._link_power()

    def _tuya_plug(self, entry: TuyaDevice, key: str) -> TuyaPlug:
        return TuyaPlug(
            entry.name,
            entry.id,
            entry.ip,
            key,
            entry.version,
            port=entry.port,
            dps=entry.dps,
            timeout_s=self.timeout_s,
            executor=self._executor,
        )

    def use_keys(self, keys: Mapping[str, str]) -> list[str]:
        """Give Tuya plugs other local keys, by device id: one fetched from the Tuya cloud (a
        plug paired again in its app gets a new key), or config.py's again. Return the names
        of the plugs that changed; a call in flight ends on the plug it started on."""
        changed = []
        for slot in self._tuya:
            key = keys.get(slot.entry.id)
            if key is None or key == slot.key:
                continue
            plug = self._tuya_plug(slot.entry, key)
            plug.name = slot.device.switch.name  # a clash may have renamed it
            slot.device.switch, slot.key = plug, key
            slot.device.epoch += 1  # a read begun on the old plug must not overwrite the next
            changed.append(plug.name)
            if key == slot.entry.key:
                _LOG.info("%s: using the local key in config.py again", plug.name)
            else:
                _LOG.info(
                    "%s: using the local key fetched from the Tuya cloud (cached in the state "
                    "dir), not the older one in config.py",
                    plug.name,
                )
        return changed

    def _add(self, switch: Switch, rule: int | None = None) -> Device:
        name = switch.name
        # The rule of its own name, before any renaming: a clash never moves a rule from one
        # device to another (a computer named "Router" must not make the Router plug sheddable).
        rule = self.config.rule_for(name) if rule is None else rule
        if name in self.devices:
            first = self.devices[name].switch
            clash = Clash(name, first.kind, first.address, switch.kind, switch.address)
            self.clashes.append(clash)
            _LOG.warning("%s", clash)
            name = clash.second_name
            switch.name = name
        device = Device(switch, rule)
        self.devices[name] = device
        return device

    def rule_typos(self) -> list[str]:
        """SHED_BELOW names that match no device (a typo falls silently to DEFAULT_SHED_BELOW),
        each with a did-you-mean; empty while a Kasa host is still being reached."""
        if self.pending:
            return []  # the name may be an outlet of a host not reached yet
        known = set(self.devices)
        typos = []
        for name in self.config.shed_below:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f" — did you mean {close[0]!r}?" if close else ""
                typos.append(
                    f"SHED_BELOW names {name!r}, but no device is called that: the device "
                    f"meant follows DEFAULT_SHED_BELOW{hint}"
                )
        plugs = {n for n, d in self.devices.items() if d.switch.kind in PLUG_KINDS}
        for name in self.config.grid_canary:
            if name not in plugs:
                close = difflib.get_close_matches(name, plugs, n=1)
                hint = f" — did you mean {close[0]!r}?" if close else ""
                typos.append(
                    f"GRID_CANARY names {name!r}, but no Kasa or Tuya plug is called that: "
                    f"it cannot tell the grid{hint}"
                )
        return typos

    async def connect_pending(self) -> list[str]:
        """Try every Kasa host not yet connected, concurrently; return the new device names."""
        added = await asyncio.gather(*(self.connect_one(p) for p in list(self.pending)))
        return [name for names in added for name in names]

    async def connect_one(self, placeholder: Placeholder) -> list[str]:
        """Try one Kasa host not yet connected; return its device names once it answers."""
        outcome = await placeholder.host.connect()
        if not outcome.is_ok:
            placeholder.status, placeholder.detail = outcome.status, outcome.detail
            return []
        if placeholder in self.pending:
            self.pending.remove(placeholder)
        added = [self._add(switch).name for switch in placeholder.host.switches]
        self._link_power()
        return added

    def _link_power(self) -> None:
        """A plug never cuts a computer's power before the computer's own rule shuts it down."""
        for computer in self.computers.values():
            plug = self.devices.get(computer.powered_by or "")
            if plug is not None:
                plug.rule = min(plug.rule, self.devices[computer.name].rule)

    def powered_by(self, plug: str) -> list[str]:
        """The computers the named plug feeds."""
        return [c.name for c in self.computers.values() if c.powered_by == plug]

    def link_error(self) -> ConfigError | None:
        """A powered_by that names no plug, once every Kasa host has answered."""
        for computer in self.computers.values():
            fed_by = self.devices.get(computer.powered_by or "")
            if fed_by is not None and fed_by.switch.kind not in PLUG_KINDS:
                return ConfigError(
                    self.computers_path,
                    computer.line,
                    f"powered_by={computer.powered_by!r} names a {fed_by.switch.kind.value} "
                    "device, not a plug",
                    "give the name of the Kasa or Tuya plug that feeds it",
                )
        if self.pending:
            return None  # the plug may be an outlet of a host not reached yet
        for computer in self.computers.values():
            if computer.powered_by is not None and computer.powered_by not in self.devices:
                plugs = sorted(n for n, d in self.devices.items() if d.switch.kind in PLUG_KINDS)
                close = difflib.get_close_matches(computer.powered_by, plugs, n=1)
                hint = f"did you mean {close[0]!r}?" if close else "plugs: " + ", ".join(plugs)
                return ConfigError(
                    self.computers_path,
                    computer.line,
                    f"powered_by={computer.powered_by!r} names no plug",
                    hint,
                )
        return None

    async def read(self, names: list[str]) -> None:
        """Read the named devices concurrently and learn what they say."""
        devices = [self.devices[n] for n in names if n in self.devices]
        epochs = [d.epoch for d in devices]
        outcomes = await asyncio.gather(*(d.switch.read() for d in devices))
        for device, epoch, outcome in zip(devices, epochs, outcomes, strict=True):
            if device.epoch == epoch and device.busy is None:
                device.learn(outcome)  # not a read that began before a switch and ended after

    async def close(self) -> None:
        await asyncio.gather(
            *(d.switch.close() for d in self.devices.values()),
            *(p.host.close() for p in self.pending),
            return_exceptions=True,
        )
        self._executor.shutdown(wait=False, cancel_futures=True)

    def kind_of(self, name: str) -> Kind:
        return self.devices[name].switch.kind
