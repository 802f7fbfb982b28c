"""Every Powerwall, and more than one grid source, end to end: a gateway read through its
TEDAPI (pypowerwall), a canary plug on a circuit the Powerwall does not back up, a UPS through
the real NUT server, and the Powerwall disagreeing with them or unreadable.

The simulated house's "Garage canary" (a Kasa plug) loses power with the grid: it stops
answering, as a plug without power does. Its witnesses are the house's essential plugs (the
Router, the Aquarium), on backed-up circuits.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from loadshed.devices import DEVICE_TIMEOUT_S
from loadshed.sim.base import Fault
from loadshed.sim.house import SimHouse
from tests.e2e.conftest import ESSENTIAL, SHEDDABLE, Loadshed, wait_until
from tests.nut import PASSWORD as NUT_PASSWORD
from tests.nut import USER as NUT_USER
from tests.nut import NutServer, nut_server_fixture  # noqa: F401  (the nut_server fixture)

pytestmark = pytest.mark.timeout(120)

Start = Callable[..., Loadshed]
SECONDARY_CONFIRM_S = 3.0
DISAGREE_S = 3.0
CANARY_WAIT_S = 40.0  # a silent canary costs a device timeout (8 s) per read


@pytest.fixture
def house(request: pytest.FixtureRequest) -> Iterator[SimHouse]:
    """The house with its garage canary; parametrize indirectly with other SimHouse options."""
    with SimHouse(**getattr(request, "param", {"canary": True})) as simulated:
        yield simulated


@pytest.fixture
def sources_config(config: Path) -> Path:
    with config.open("a") as f:
        f.write(
            f"SECONDARY_CONFIRM_SECONDS = {SECONDARY_CONFIRM_S}\n"
            f"SOURCES_DISAGREE_SECONDS = {DISAGREE_S}\n"
        )
    return config


def anything_off(house: SimHouse) -> bool:
    return any(not house.is_on(n) for n in (*SHEDDABLE, *ESSENTIAL, "Garage canary"))


def test_powerwall_refusing_every_login_the_canary_alone_sheds_and_restores(
    house: SimHouse, sources_config: Path, start: Start
) -> None:
    house.set_fault("Powerwall", Fault.BAD_AUTH)  # 401 forever
    daemon = start()
    daemon.wait_for_line("ready:")
    house.cut_grid()
    wait_until(
        "the canary's shed", lambda: not any(house.is_on(n) for n in SHEDDABLE), CANARY_WAIT_S
    )
    assert daemon.saw("grid lost (canary: Garage canary silent)")
    assert house.is_on("Garage canary")  # a canary is never switched
    assert all(house.is_on(n) for n in ESSENTIAL)
    house.restore_grid()
    wait_until("the restore", lambda: all(house.is_on(n) for n in SHEDDABLE), CANARY_WAIT_S)
    assert daemon.saw("grid back (canary: Garage canary answers)")
    assert daemon.stop() == 0


def test_canary_and_backed_up_plugs_silent_together_is_the_network_not_the_grid(
    house: SimHouse, sources_config: Path, start: Start
) -> None:
    house.set_fault("Powerwall", Fault.BAD_AUTH)
    daemon = start()
    daemon.wait_for_line("canary: on grid")
    for name in ("Garage canary", *ESSENTIAL):  # the Wi-Fi drops, not the grid
        house.set_fault(name, Fault.HUNG)
    daemon.wait_for_line("canary: cannot tell", CANARY_WAIT_S)
    # Nothing to wait for but time: the canary's own confirm and two more of its reads pass,
    # and nothing may have been switched on a network outage.
    time.sleep(SECONDARY_CONFIRM_S + 2 * DEVICE_TIMEOUT_S)
    assert not anything_off(house)
    assert not daemon.saw("grid lost") and not daemon.saw("canary: off grid")
    assert daemon.stop() == 0


def test_the_powerwall_and_the_canary_disagree_alert_then_act_on_the_powerwall_once(
    house: SimHouse, sources_config: Path, start: Start
) -> None:
    """The Powerwall says off grid; the canary (wired, by mistake, to a backed-up circuit) goes
    on answering. The owner is told who says what; the shed waits the extra time and happens
    once, nothing flaps."""
    daemon = start()
    # The canary's first reading, not just "ready:": until it has one it cannot tell, and the
    # Powerwall alone decides (a loaded machine once cut the grid before that first reading).
    daemon.wait_for_line("canary: on grid")
    house.cut_grid(canaries=False)  # the canary still has power
    daemon.wait_for_line("grid sources disagree: Powerwall says off grid, canary says on grid")
    assert all(house.is_on(n) for n in SHEDDABLE)  # not yet: the extra wait
    wait_until("the shed", lambda: not any(house.is_on(n) for n in SHEDDABLE))
    house.restore_grid()
    wait_until("the restore", lambda: all(house.is_on(n) for n in SHEDDABLE))
    daemon.wait_for_line("grid sources agree again")
    assert daemon.count("grid sources disagree") == 1
    assert daemon.count("grid lost (") == 1 and daemon.count("grid back (") == 1
    assert daemon.stop(signal.SIGTERM) == 0


@pytest.mark.parametrize("house", [{}], indirect=True, ids=["no canary"])
def test_a_ups_through_the_real_nut_server_goes_on_battery_and_back(
    house: SimHouse, sources_config: Path, start: Start, nut_server: NutServer
) -> None:
    """The Powerwall refuses every login; the UPS (read from Debian's upsd, changed with
    upsrw) alone sheds after its longer confirm and restores after the whole delay."""
    house.set_fault("Powerwall", Fault.BAD_AUTH)
    with sources_config.open("a") as f:
        f.write(f"NUT_UPS = {nut_server.target!r}\nNUT_USER = {NUT_USER!r}\n")
        f.write(f"NUT_PASSWORD = {NUT_PASSWORD!r}\n")
    daemon = start()
    daemon.wait_for_line("UPS: on grid (OL")
    nut_server.set_status("OB DISCHRG")
    daemon.wait_for_line("UPS: off grid (OB DISCHRG)")
    wait_until("the UPS's shed", lambda: not any(house.is_on(n) for n in SHEDDABLE))
    assert daemon.saw("grid lost (UPS: OB DISCHRG)")
    assert all(house.is_on(n) for n in ESSENTIAL)
    nut_server.set_status("OL")
    wait_until("the restore", lambda: all(house.is_on(n) for n in SHEDDABLE))
    assert NUT_PASSWORD not in daemon.output
    assert daemon.stop() == 0


@pytest.mark.parametrize("house", [{"tedapi": True}], indirect=True, ids=["TEDAPI gateway"])
def test_a_tedapi_gateway_through_an_outage_and_a_restore(house: SimHouse, start: Start) -> None:
    """POWERWALL_API = "tedapi": the real pypowerwall against the simulated gateway's TEDAPI,
    built from pypowerwall's own protobuf definitions."""
    daemon = start()
    daemon.wait_for_line("ready:")
    assert daemon.saw("on grid, battery 80 %")
    house.cut_grid()
    wait_until("the shed", lambda: not any(house.is_on(n) for n in SHEDDABLE))
    assert daemon.saw("grid lost (ISLAND_GridConnected_Island)")
    house.restore_grid()
    wait_until("the restore", lambda: all(house.is_on(n) for n in SHEDDABLE))
    assert daemon.saw("grid back (ISLAND_GridConnected_Connected)")
    assert house.password not in daemon.output
    assert daemon.stop() == 0
