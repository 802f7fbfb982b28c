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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final

from loadshed.sim.base import Fault, Outlet, SimDevice, SiteState
from loadshed.sim.energy import EnergyModel
from loadshed.sim.kasa import kasa_plug, kasa_strip, klap_plug
from loadshed.sim.loop import LoopThread
from loadshed.sim.powerwall import PowerwallSim
from loadshed.sim.tuya import TuyaPlugSim

TICK_S: Final = 0.2  # real seconds between battery-model steps
KASA_USERNAME: Final = "owner@example.com"  # the simulated TP-Link account (KLAP plug)
POWERWALL_NAME: Final = "Powerwall"


@dataclass(frozen=True, slots=True)
class TuyaSpec:
    """How the house lists a Tuya plug in its config."""

    name: str
    dev_id: str
    key: str
    version: float
    sim: TuyaPlugSim


class SimHouse:
    """The standard simulated house. Use as a context manager, or start() and stop()."""

    def __init__(
        self,
        *,
        speed: float = 1.0,
        hour: float | None = None,
        battery_pct: float = 80.0,
        reconnect_s: float = 0.0,
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
        self.powerwall = PowerwallSim(self.site, self.password)
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
        self.shed_below = {"Router": 0, "Aquarium": 0, "Freezer": 30, "Dehumidifier": 50}
        now = dt.datetime.now()
        self.energy = EnergyModel(
            self.site,
            list(self.outlets.values()),
            hour=hour if hour is not None else now.hour + now.minute / 60,
            reconnect_s=reconnect_s,
        )
        self._loop: LoopThread | None = None
        self._ticker: asyncio.Task[None] | None = None

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
        self._ticker = asyncio.create_task(self._tick())

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(TICK_S)
            now = loop.time()
            self.energy.advance((now - last) * self.speed)
            last = now

    def stop(self) -> None:
        """Stop every device and the loop. Safe to call twice."""
        loop, self._loop = self._loop, None
        if loop is None:
            return

        async def _stop() -> None:
            if self._ticker is not None:
                self._ticker.cancel()
            await asyncio.gather(*(d.stop() for d in self.devices()), return_exceptions=True)

        try:
            loop.run(_stop(), timeout_s=10)
        finally:
            loop.close()

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

    def cut_grid(self) -> None:
        """The utility fails: the Powerwall reports SystemIslandedActive."""
        self._call(self.energy.cut_grid)

    def restore_grid(self) -> None:
        """The utility returns (through SystemTransitionToGrid when reconnect_s > 0)."""
        self._call(self.energy.restore_grid)

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
            f"PWPASS = {self.password!r}",
            f"KASA_HOSTS = {kasa!r}",
            f"KASA_USERNAME = {KASA_USERNAME!r}",
            f"KASA_PASSWORD = {self.kasa_password!r}",
            "TUYA_DEVICES = " + pprint.pformat(tuya, sort_dicts=False, width=100),
            f"SHED_BELOW = {self.shed_below!r}",
            "POLL_SECONDS = 1",
            "RESTORE_AFTER_SECONDS = 30",
        ]
        return "\n".join(lines) + "\n"

    def write_config(self, path: Path) -> Path:
        """Write config_text() to path, readable by its owner only."""
        path.touch(mode=0o600, exist_ok=True)
        path.chmod(0o600)
        path.write_text(self.config_text(), encoding="utf-8")
        return path

    def summary(self) -> str:
        plugs = sum(1 for name, sim in self._sim_of.items() if sim in self.kasa)
        return (
            f"a Powerwall at {self.powerwall.address}, {len(self.kasa)} Kasa devices with "
            f"{plugs} outlets, {len(self.tuya)} Tuya plugs"
        )
