"""The simulated house's energy: battery charge, solar by time of day, loads, the grid.

Pure arithmetic over sim time: `EnergyModel.advance(dt_s)` moves the clock and the charge;
it reads the outlets' `on` flags (the simulated plugs switch those) and writes the `SiteState`
the simulated Powerwall reports. No I/O, no real clock.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from loadshed.sim.base import Outlet, SiteState

ON_GRID: Final = "SystemGridConnected"
ISLANDED: Final = "SystemIslandedActive"
RECONNECTING: Final = "SystemTransitionToGrid"
MAX_BATTERY_W: Final = 5000.0  # one Powerwall 2's continuous power
SUNRISE_H: Final = 7.0
SUNSET_H: Final = 17.0  # a winter day: ten hours of weak sun


def solar_curve_w(hour: float, peak_w: float) -> float:
    """Solar output at a time of day: a half sine between sunrise and sunset."""
    if not SUNRISE_H < hour < SUNSET_H:
        return 0.0
    return peak_w * math.sin(math.pi * (hour - SUNRISE_H) / (SUNSET_H - SUNRISE_H))


@dataclass
class EnergyModel:
    """Battery, solar, loads and grid of the simulated house, advanced in sim seconds."""

    site: SiteState
    outlets: Sequence[Outlet]
    capacity_wh: float = 13_500.0  # one Powerwall 2
    base_load_w: float = 450.0  # what no plug feeds: furnace fan, fridge, lights
    solar_peak_w: float = 2_500.0
    hour: float = 18.0  # time of day, 0-24
    reconnect_s: float = 0.0  # SystemTransitionToGrid this long after the grid returns
    solar_override_w: float | None = None
    _reconnect_left_s: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self._settle()

    @property
    def grid_up(self) -> bool:
        return self.site.grid_status == ON_GRID

    def cut_grid(self) -> None:
        """The utility fails: the Powerwall islands the house."""
        self._reconnect_left_s = 0.0
        self.site.grid_status = ISLANDED
        self._settle()

    def restore_grid(self) -> None:
        """The utility returns: the gateway syncs for reconnect_s, then connects."""
        if self.reconnect_s > 0:
            self.site.grid_status = RECONNECTING
            self._reconnect_left_s = self.reconnect_s
        else:
            self.site.grid_status = ON_GRID
        self._settle()

    def load_w(self) -> float:
        return self.base_load_w + sum(o.watts for o in self.outlets if o.on)

    def solar_w(self) -> float:
        if self.solar_override_w is not None:
            return self.solar_override_w
        return solar_curve_w(self.hour, self.solar_peak_w)

    def advance(self, dt_s: float) -> None:
        """Move sim time on by dt_s seconds: drain or charge the battery, tick the clock."""
        self._settle()
        self.site.battery_pct = min(
            100.0,
            max(
                0.0,
                self.site.battery_pct - self.site.battery_w * dt_s / 3600 / self.capacity_wh * 100,
            ),
        )
        self.hour = (self.hour + dt_s / 3600) % 24
        if self._reconnect_left_s > 0:
            self._reconnect_left_s -= dt_s
            if self._reconnect_left_s <= 0:
                self.site.grid_status = ON_GRID
        self._settle()

    def hours_left(self) -> float | None:
        """Hours of charge left at the present drain; None while not draining."""
        if self.site.battery_w <= 0:
            return None
        return self.site.battery_pct / 100 * self.capacity_wh / self.site.battery_w

    def _settle(self) -> None:
        """Recompute the power flows for the present loads, sun and grid."""
        load, solar = self.load_w(), self.solar_w()
        self.site.load_w, self.site.solar_w = load, solar
        if self.grid_up:
            surplus = solar - load
            charging = surplus > 0 and self.site.battery_pct < 100
            self.site.battery_w = -min(surplus, MAX_BATTERY_W) if charging else 0.0
            self.site.site_w = load - solar - self.site.battery_w
            return
        self.site.site_w = 0.0
        if self.site.battery_pct <= 0 and load > solar:
            self.site.battery_w = 0.0  # flat: a real Powerwall would now shut the house down
        else:
            self.site.battery_w = max(-MAX_BATTERY_W, min(MAX_BATTERY_W, load - solar))
