"""The simulated house's battery model: loads drain it, solar refills it, the grid holds it."""

from __future__ import annotations

import pytest

from loadshed.sim.base import Outlet, SiteState
from loadshed.sim.energy import EnergyModel, solar_curve_w


def model(**kwargs: object) -> tuple[EnergyModel, list[Outlet]]:
    outlets = [Outlet("Heater", 1500.0), Outlet("Router", 50.0)]
    defaults: dict[str, object] = {"base_load_w": 450.0, "hour": 20.0, "capacity_wh": 10_000.0}
    defaults.update(kwargs)
    return EnergyModel(SiteState(battery_pct=80.0), outlets, **defaults), outlets  # type: ignore[arg-type]


def test_off_grid_loads_drain_the_battery_by_their_power() -> None:
    energy, _ = model()
    energy.cut_grid()
    assert energy.site.grid_status == "SystemIslandedActive"
    assert energy.site.load_w == 2000.0
    energy.advance(3600)  # one hour at 2 kW from a 10 kWh battery: 20 points
    assert energy.site.battery_pct == pytest.approx(60.0)


def test_shedding_a_load_stretches_the_time_left() -> None:
    energy, outlets = model()
    energy.cut_grid()
    before = energy.hours_left()
    outlets[0].on = False
    energy.advance(0)
    after = energy.hours_left()
    assert before is not None and after is not None
    assert after == pytest.approx(before * 2000 / 500)


def test_on_grid_the_battery_holds_and_the_grid_feeds_the_house() -> None:
    energy, _ = model()
    energy.advance(3600)
    assert energy.site.battery_pct == 80.0
    assert energy.site.site_w == 2000.0


def test_solar_refills_the_battery_during_an_outage() -> None:
    energy, outlets = model(hour=12.0, solar_peak_w=3000.0)
    outlets[0].on = False
    energy.cut_grid()
    energy.advance(600)
    assert energy.site.battery_w < 0
    assert energy.site.battery_pct > 80.0


def test_solar_curve_is_dark_at_night_and_peaks_at_noon() -> None:
    assert solar_curve_w(3.0, 3000) == 0.0
    assert solar_curve_w(12.0, 3000) == pytest.approx(3000.0)
    assert 0 < solar_curve_w(9.0, 3000) < 3000


def test_grid_return_passes_through_transition_to_grid() -> None:
    energy, _ = model(reconnect_s=300.0)
    energy.cut_grid()
    energy.restore_grid()
    assert energy.site.grid_status == "SystemTransitionToGrid"
    energy.advance(299)
    assert energy.site.grid_status == "SystemTransitionToGrid"
    energy.advance(2)
    assert energy.site.grid_status == "SystemGridConnected"


def test_a_flat_battery_stops_at_zero() -> None:
    energy, _ = model()
    energy.cut_grid()
    energy.advance(10 * 3600)
    assert energy.site.battery_pct == 0.0
