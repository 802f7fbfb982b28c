"""A whole simulated house on loopback: one object starts it and writes its config.py.

`SimHouse` runs every simulated device on one background event loop (`LoopThread`): a Powerwall
gateway, Kasa plugs and a strip (legacy TCP and KLAP), Tuya plugs (3.3 and 3.4), and the battery
model, advanced on a sim clock `speed` times faster than real time. The plugs switch `Outlet`s;
the battery model sums the outlets that are on; the Powerwall reports the result.

Calls from other threads (tests, the demo, the CLI) go through the house's methods, which run
on its loop. Everything binds 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import pprint
import secrets
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from loadshed.sim.base import Fault, Outlet, SimDevice, SiteState
from loadshed.sim.energy import EnergyModel
from loadshed.sim.kasa import kasa_plug, kasa_strip, klap_plug
from loadshed.sim.loop import LoopThread
from loadshed.sim.powerwall import PowerwallSim
from loadshed.sim.ssh import SSHD_PATH, SshHost, combined_ssh_config
from loadshed.sim.tedapi import TedapiSim
from loadshed.sim.tuya import TuyaPlugSim

TICK_S: Final = 0.2  # real seconds between battery-model steps
AC_LOSS_S: Final = 5.0  # a BIOS powers the computer on when its plug returns after this long
MACS: Final = {"NAS": "02:4c:53:00:00:01", "Workstation": "02:4c:53:00:00:02"}
ALIASES: Final = {"NAS": "nas", "Workstation": "workstation"}  # the ssh_config Host names
PLUGS: Final = {"NAS": "NAS plug"}  # computer → the plug it lives on (BIOS: on after AC loss)
KASA_USERNAME: Final = "owner@example.com"  # the simulated TP-Link account (KLAP plug)
POWERWALL_NAME: Final = "Powerwall"
CANARY_NAME: Final = "Garage canary"  # SimHouse(canary=True): a plug on an unbacked circuit


@dataclass(frozen=True, slots=True)
class TuyaSpec:
    """How the house lists a Tuya plug in its config."""

    name: str
    dev_id: str
    key: str
    version: float
    sim: TuyaPlugSim


def sshd_available() -> bool:
    """Whether this machine can play computers (OpenSSH's sshd and ssh-keygen are installed)."""
    return (
        SSHD_PATH.exists() and shutil.which("ssh-keygen") is not None and bool(shutil.which("ssh"))
    )


class SimHouse:
    """The standard simulated house. Use as a context manager, or start() and stop()."""

    def __init__(
        self,
        *,
        speed: float = 1.0,
        hour: float | None = None,
        battery_pct: float = 80.0,
        reconnect_s: float = 0.0,
        computers: bool = False,
        canary: bool = False,
        tedapi: bool = False,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be above 0")
        self.speed = speed
        self.password = secrets.token_urlsafe(12)  # the simulated Powerwall's customer password
        self.kasa_password = secrets.token_urlsafe(12)
        self.site = SiteState(battery_pct=battery_pct)
        self.outlets: dict[str, Outlet] = {
            o.name: o
            for o in (
                Outlet("Router", 15.0),
                Outlet("Freezer", 150.0),
                Outlet("Monitor", 40.0),
                Outlet("Printer", 25.0),
                Outlet("Desk lamp", 12.0, on=False),  # off before any outage: stays off
                Outlet("TV", 110.0),
                Outlet("Space heater", 1500.0),
                Outlet("Dehumidifier", 280.0),
                Outlet("Aquarium", 60.0),
            )
        }
        o = self.outlets
        # The gateway: its legacy API (customer password) or its TEDAPI (the QR sticker's).
        self.tedapi = tedapi
        self.powerwall: PowerwallSim | TedapiSim = (
            TedapiSim(self.site, self.password)
            if tedapi
            else PowerwallSim(self.site, self.password)
        )
        self.kasa: list[SimDevice] = [
            kasa_plug(o["Router"]),
            kasa_plug(o["Freezer"], meter=True),
            kasa_strip([o["Monitor"], o["Printer"], o["Desk lamp"]], name="Office strip"),
            klap_plug(o["TV"], username=KASA_USERNAME, password=self.kasa_password),
        ]
        self.tuya = [
            self._tuya("Space heater", 3.3, meter=True),
            self._tuya("Dehumidifier", 3.4),
            self._tuya("Aquarium", 3.3),
        ]
        self._sim_of: dict[str, SimDevice] = {POWERWALL_NAME: self.powerwall}
        for sim, names in (
            (self.kasa[0], ["Router"]),
            (self.kasa[1], ["Freezer"]),
            (self.kasa[2], ["Monitor", "Printer", "Desk lamp"]),
            (self.kasa[3], ["TV"]),
            *((t.sim, [t.name]) for t in self.tuya),
        ):
            self._sim_of.update(dict.fromkeys(names, sim))
        self.canaries: list[str] = []  # plugs on a circuit the Powerwall does not back up
        if canary:
            self._add_canary()
        self.shed_below = {"Router": 0, "Aquarium": 0, "Freezer": 30, "Dehumidifier": 50}
        self.hosts: dict[str, SshHost] = {}
        self.hard_cuts: list[str] = []  # computers whose plug went off while they were running
        self.plug_cycles: list[tuple[str, float]] = []  # a fed plug back on: (name, s it was off)
        self.boot_s = 0.0  # a computer powered on answers on its port this long after
        self._plug_off_since: dict[str, float] = {}
        self._wol: asyncio.DatagramTransport | None = None
        self.wol_port = 0

        if computers:
            self._add_computers()
        now = dt.datetime.now()
        self.energy = EnergyModel(
            self.site,
            list(self.outlets.values()),
            hour=hour if hour is not None else now.hour + now.minute / 60,
            reconnect_s=reconnect_s,
        )
        self._loop: LoopThread | None = None
        self._ticker: asyncio.Task[None] | None = None

    def _add_canary(self) -> None:
        """A Kasa plug on the garage circuit, which the Powerwall does not back up: it goes
        silent when the grid is cut, and answers again when the grid is back."""
        outlet = Outlet(CANARY_NAME, 2.0)
        self.outlets[CANARY_NAME] = outlet
        sim = kasa_plug(outlet)
        self.kasa.append(sim)
        self._sim_of[CANARY_NAME] = sim
        self.canaries.append(CANARY_NAME)

    def _add_computers(self) -> None:
        """Two computers on a real sshd each: a NAS fed by its own plug, a Workstation (WoL)."""
        self.outlets["NAS plug"] = Outlet("NAS plug", 35.0)
        nas_plug = kasa_plug(self.outlets["NAS plug"])
        self.kasa.append(nas_plug)
        self._sim_of["NAS plug"] = nas_plug
        nas = SshHost(alias=ALIASES["NAS"])
        self.hosts = {
            "NAS": nas,
            "Workstation": SshHost(alias=ALIASES["Workstation"], client_key=nas.client_key),
        }
        self._ssh_dir = Path(tempfile.mkdtemp(prefix="loadshed-sim-ssh-"))

    def computers_text(self, extra: dict[str, str] | None = None) -> str:
        """A computers.txt for the house's computers (empty without them), naming each by its
        ssh_config Host alias, as owners do; `extra` adds options to a computer's line."""
        if not self.hosts:
            return ""
        extra = extra or {}
        return (
            "# the simulated house's computers: real sshd on 127.0.0.1, recording shutdowns\n"
            f'linux  {ALIASES["NAS"]}  name=NAS powered_by="NAS plug" {extra.get("NAS", "")}\n'
            f"macos  {ALIASES['Workstation']}  name=Workstation mac={MACS['Workstation']} "
            f"wake_to=127.0.0.1:{self.wol_port} {extra.get('Workstation', '')}\n"
        )

    def _tuya(self, name: str, version: float, *, meter: bool = False) -> TuyaSpec:
        dev_id = "bf" + secrets.token_hex(9)
        key = secrets.token_hex(8)  # 16 characters, as a real local key
        sim = TuyaPlugSim(dev_id, key, [self.outlets[name]], version=version, meter=meter)
        return TuyaSpec(name, dev_id, key, version, sim)

    # --- life cycle --------------------------------------------------------------------------

    def devices(self) -> list[SimDevice]:
        return [self.powerwall, *self.kasa, *(t.sim for t in self.tuya)]

    def start(self) -> SimHouse:
        """Bind every device on 127.0.0.1 and start the battery clock."""
        self._loop = LoopThread("sim-house")
        try:
            self._loop.run(self._start())
        except BaseException:
            self.stop()
            raise
        return self

    async def _start(self) -> None:
        await asyncio.gather(*(d.start() for d in self.devices()))
        if self.hosts:
            await asyncio.gather(*(asyncio.to_thread(h.start) for h in self.hosts.values()))
            loop = asyncio.get_running_loop()
            self._wol, _ = await loop.create_datagram_endpoint(
                lambda: _WakeOnLan(self), local_addr=("127.0.0.1", 0)
            )
            self.wol_port = self._wol.get_extra_info("sockname")[1]
        self._ticker = asyncio.create_task(self._tick())

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(TICK_S)
            now = loop.time()
            self.energy.advance((now - last) * self.speed)
            last = now
            if self.hosts:
                await self._watch_plugs(now)

    async def _watch_plugs(self, now: float) -> None:
        """A computer lives on its plug: cut while it runs (even while it flushes its disks,
        refusing connections), it dies — a hard cut; back after AC_LOSS_S, its BIOS boots it."""
        for name, plug_name in PLUGS.items():
            host, plug = self.hosts[name], self.outlets[plug_name]
            if not plug.on:
                if plug_name not in self._plug_off_since:
                    self._plug_off_since[plug_name] = now
                    if host.is_powered:
                        self.hard_cuts.append(name)
                        await asyncio.to_thread(host.power_off)
                continue
            off_since = self._plug_off_since.pop(plug_name, None)
            if off_since is None:
                continue
            self.plug_cycles.append((plug_name, now - off_since))
            if now - off_since >= AC_LOSS_S and host.is_off:
                self._boot(host)

    def wake(self, mac: str) -> None:
        """A magic packet arrived for mac: power that computer on, if it is off."""
        for name, host in self.hosts.items():
            if MACS[name] == mac and host.is_off:
                self._boot(host)

    def _boot(self, host: SshHost) -> None:
        """Power host on: silent while it boots (boot_s), then its sshd answers."""
        loop = asyncio.get_running_loop()
        loop.call_later(self.boot_s, loop.run_in_executor, None, host.start)

    @property
    def ssh_config(self) -> Path:
        """The house's client ssh_config (SSH_CONFIG in its config.py): one Host per computer."""
        return self._ssh_dir / "ssh_config"

    def stop(self) -> None:
        """Stop every device and the loop. Safe to call twice."""
        loop, self._loop = self._loop, None
        if loop is None:
            return

        async def _stop() -> None:
            if self._ticker is not None:
                self._ticker.cancel()
            if self._wol is not None:
                self._wol.close()
            await asyncio.gather(*(d.stop() for d in self.devices()), return_exceptions=True)

        try:
            loop.run(_stop(), timeout_s=10)
        finally:
            loop.close()
            for host in reversed(list(self.hosts.values())):  # the NAS holds the shared key
                host.close()
            if self.hosts:
                shutil.rmtree(self._ssh_dir, ignore_errors=True)

    def __enter__(self) -> SimHouse:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- what a test or the demo does to the house -------------------------------------------

    def _call(self, action: Callable[[], None]) -> None:
        """Run action on the house's loop, where the devices and the battery model live."""
        if self._loop is None:
            raise RuntimeError("the house is not running")

        async def _on_loop() -> None:
            action()

        self._loop.run(_on_loop())

    def cut_grid(self, *, canaries: bool = True) -> None:
        """The utility fails: the Powerwall reports SystemIslandedActive, and the canary plugs,
        on circuits it does not back up, lose power (`canaries=False`: a canary wired by
        mistake to a backed-up circuit keeps it)."""
        self._call(self.energy.cut_grid)
        if canaries:
            self.power_canaries(False)

    def restore_grid(self) -> None:
        """The utility returns (through SystemTransitionToGrid when reconnect_s > 0), and with
        it the canaries."""
        self._call(self.energy.restore_grid)
        self.power_canaries(True)

    def power_canaries(self, powered: bool) -> None:
        """Power the unbacked circuit on or off by itself (a tripped breaker, or a test)."""
        for name in self.canaries:  # a plug without power never answers: nothing refuses
            self.set_fault(name, Fault.NONE if powered else Fault.HUNG)

    def set_grid_status(self, raw: str) -> None:
        """Make the Powerwall report any grid_status string, known or not."""

        def _set() -> None:
            self.site.grid_status = raw

        self._call(_set)

    def set_battery(self, pct: float) -> None:
        """Set the battery's charge, as if it had drained (or filled) to pct."""

        def _set() -> None:
            self.site.battery_pct = pct
            self.energy.advance(0)

        self._call(_set)

    def set_solar(self, watts: float | None) -> None:
        """Fix the solar output in W; None follows the time of day again."""

        def _set() -> None:
            self.energy.solar_override_w = watts
            self.energy.advance(0)

        self._call(_set)

    def switch_by_hand(self, name: str, on: bool) -> None:
        """Someone presses the button on the plug (or flips the outlet in its app)."""

        def _set() -> None:
            self.outlets[name].on = on

        self._call(_set)

    def device(self, name: str) -> SimDevice:
        """The simulated device behind an outlet name, or the Powerwall by "Powerwall"."""
        return self._sim_of[name]

    def set_fault(self, name: str, fault: Fault, slow_s: float | None = None) -> None:
        """Switch a fault on the device behind name (a strip's outlet: the whole strip)."""
        if self._loop is None:
            raise RuntimeError("the house is not running")
        self._loop.run(self.device(name).set_fault(fault, slow_s))

    def is_on(self, name: str) -> bool:
        return self.outlets[name].on

    # --- its config ---------------------------------------------------------------------------

    def config_text(self) -> str:
        """A config.py that points loadshed at this house."""
        tuya = [
            {
                "name": t.name,
                "id": t.dev_id,
                "ip": t.sim.host,
                "key": t.key,
                "version": t.version,
                "port": t.sim.port,
            }
            for t in self.tuya
        ]
        kasa = [sim.address for sim in self.kasa]
        lines = [
            "# A simulated house on 127.0.0.1, written by loadshed.sim; valid while it runs.",
            f"PWIPNAME = {self.powerwall.address!r}",
            *(
                ['POWERWALL_API = "tedapi"', f"PW_GATEWAY_PASSWORD = {self.password!r}"]
                if self.tedapi
                else [f"PWPASS = {self.password!r}"]
            ),
            f"KASA_HOSTS = {kasa!r}",
            f"KASA_USERNAME = {KASA_USERNAME!r}",
            f"KASA_PASSWORD = {self.kasa_password!r}",
            "TUYA_DEVICES = " + pprint.pformat(tuya, sort_dicts=False, width=100),
            f"SHED_BELOW = {self.shed_below!r}",
            *([f"GRID_CANARY = {self.canaries!r}"] if self.canaries else []),
            "POLL_SECONDS = 1",
            "RESTORE_AFTER_SECONDS = 30",
        ]
        if self.hosts:
            self.ssh_config.write_text(combined_ssh_config(list(self.hosts.values())))
            lines.append(f"SSH_CONFIG = {str(self.ssh_config)!r}")
        return "\n".join(lines) + "\n"

    def write_config(self, path: Path) -> Path:
        """Write config_text() to path, readable by its owner only (and computers.txt beside)."""
        path.touch(mode=0o600, exist_ok=True)
        path.chmod(0o600)
        path.write_text(self.config_text(), encoding="utf-8")
        if self.hosts:
            (path.parent / "computers.txt").write_text(self.computers_text(), encoding="utf-8")
        return path

    def summary(self) -> str:
        plugs = sum(1 for name, sim in self._sim_of.items() if sim in self.kasa)
        computers = f", {len(self.hosts)} computers on sshd" if self.hosts else ""
        return (
            f"a Powerwall at {self.powerwall.address}, {len(self.kasa)} Kasa devices with "
            f"{plugs} outlets, {len(self.tuya)} Tuya plugs{computers}"
        )


class _WakeOnLan(asyncio.DatagramProtocol):
    """The house's LAN, as far as magic packets go: a UDP listener on 127.0.0.1."""

    def __init__(self, house: SimHouse) -> None:
        self.house = house

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if len(data) == 102 and data[:6] == b"\xff" * 6:
            mac = ":".join(f"{b:02x}" for b in data[6:12])
            self.house.wake(mac)
