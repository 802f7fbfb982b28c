"""The simulated Powerwall gateway, read by the real tesla_powerwall library's typed facade.

These check that the simulator answers as a gateway does (shapes the library parses, the
cookie, the faults); tests/drivers/test_powerwall.py checks loadshed's driver against it.
"""

from __future__ import annotations

import json
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import aiohttp
import pytest
from tesla_powerwall.const import GridStatus, MeterType
from tesla_powerwall.error import AccessDeniedError, ApiError
from tesla_powerwall.powerwall import Powerwall

from loadshed.sim.base import Fault, SiteState
from loadshed.sim.loop import LoopThread
from loadshed.sim.powerwall import GRID_STATUS_PATH, PowerwallSim

PASSWORD: Final = "sim-Secret-41"
FIRMWARE_DIRS: Final = sorted((Path(__file__).parents[1] / "fixtures" / "powerwall").glob("fw-*"))


@pytest.fixture
def site() -> SiteState:
    return SiteState(
        grid_status="SystemIslandedActive",
        battery_pct=55.0,
        load_w=900.0,
        solar_w=300.0,
        site_w=0.0,
        battery_w=600.0,
    )


@pytest.fixture
def sim(sim_loop: LoopThread, site: SiteState) -> Iterator[PowerwallSim]:
    sim = PowerwallSim(site, PASSWORD)
    sim_loop.run(sim.start())
    yield sim
    sim_loop.run(sim.stop())


def test_refuses_to_bind_outside_loopback(site: SiteState) -> None:
    with pytest.raises(ValueError, match=r"127\.0\.0\.0/8"):
        PowerwallSim(site, PASSWORD, host="192.0.2.50")


def test_certificate_files_do_not_outlive_construction(
    site: SiteState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    sim = PowerwallSim(site, PASSWORD)
    assert list(tmp_path.iterdir()) == []
    assert b"BEGIN CERTIFICATE" in sim.cert_pem


def test_library_facade_parses_every_served_endpoint(
    sim_loop: LoopThread, sim: PowerwallSim
) -> None:
    async def scenario() -> None:
        async with Powerwall(sim.endpoint) as pw:
            status = await pw.get_status()  # no login needed
            assert status.device_type.value == "teg"
            await pw.login(PASSWORD)
            assert pw.is_authenticated()
            assert await pw.get_grid_status() is GridStatus.ISLANDED
            assert await pw.get_charge() == 55.0
            meters = await pw.get_meters()
            assert meters.get_meter(MeterType.LOAD).instant_power == 900.0  # type: ignore[union-attr]
            assert meters.get_meter(MeterType.BATTERY).instant_power == 600.0  # type: ignore[union-attr]
            assert (await pw.get_site_info()).site_name
            assert (await pw.get_sitemaster()).is_running
            assert await pw.get_energy() == 7_700
            assert len(await pw.get_batteries()) == 1

    sim_loop.run(scenario())
    assert sim.logins == 1


@pytest.mark.parametrize("firmware", FIRMWARE_DIRS, ids=lambda p: p.name)
def test_serves_captured_firmware(sim_loop: LoopThread, site: SiteState, firmware: Path) -> None:
    sim = PowerwallSim(site, PASSWORD, responses_dir=firmware)

    async def scenario() -> None:
        await sim.start()
        try:
            async with Powerwall(sim.endpoint) as pw:
                await pw.login(PASSWORD)
                captured = json.loads((firmware / "site_info.json").read_text())
                assert await pw.get_api().get_site_info() == captured  # static: verbatim
                assert await pw.get_grid_status() is GridStatus.ISLANDED  # dynamic: the site's
                meters = await pw.get_meters()
                assert meters.get_meter(MeterType.SOLAR).instant_power == 300.0  # type: ignore[union-attr]
                raw = await pw.get_api().get_meters_aggregates()
                shape = json.loads((firmware / "meters_aggregates.json").read_text())
                assert set(raw["load"]) == set(shape["load"])  # the captured keys, our values
                assert await pw.get_charge() == 55.0
        finally:
            await sim.stop()

    sim_loop.run(scenario())


def test_reads_need_the_auth_cookie(sim_loop: LoopThread, sim: PowerwallSim) -> None:
    async def scenario() -> None:
        async with Powerwall(sim.endpoint) as pw:
            with pytest.raises(AccessDeniedError, match="adequate access rights"):
                await pw.get_grid_status()
            with pytest.raises(AccessDeniedError, match="bad credentials: Login Error"):
                await pw.login("wrong")
            assert not pw.is_authenticated()

    sim_loop.run(scenario())
    assert (sim.logins, sim.failed_logins) == (0, 1)
    assert sim.requests == {GRID_STATUS_PATH: 1, "login/Basic": 1}


def test_bad_auth_refuses_the_right_password(sim_loop: LoopThread, sim: PowerwallSim) -> None:
    async def scenario() -> None:
        await sim.set_fault(Fault.BAD_AUTH)
        async with Powerwall(sim.endpoint) as pw:
            with pytest.raises(AccessDeniedError, match="bad credentials"):
                await pw.login(PASSWORD)

    sim_loop.run(scenario())


def test_session_expires_after_calls_until_a_new_login(
    sim_loop: LoopThread, sim: PowerwallSim
) -> None:
    sim.expire_after_calls = 2

    async def scenario() -> None:
        async with Powerwall(sim.endpoint) as pw:
            await pw.login(PASSWORD)
            await pw.get_charge()
            await pw.get_charge()
            with pytest.raises(AccessDeniedError):
                await pw.get_charge()
            with pytest.raises(AccessDeniedError):
                await pw.get_charge()  # the old token stays refused
            await pw.login(PASSWORD)
            assert await pw.get_charge() == 55.0

    sim_loop.run(scenario())
    assert sim.logins == 2


def test_stopped_restricted_and_old_firmware(sim_loop: LoopThread, sim: PowerwallSim) -> None:
    async def scenario() -> None:
        async with Powerwall(sim.endpoint) as pw:
            await pw.login(PASSWORD)
            sim.sitemaster_stopped = True
            with pytest.raises(ApiError, match=r"502: Bad Gateway' $"):
                await pw.get_grid_status()
            assert not (await pw.get_sitemaster()).is_running
            sim.sitemaster_stopped = False
            sim.restricted = True
            with pytest.raises(ApiError, match="404"):
                await pw.get_status()
            with pytest.raises(ApiError, match="404"):
                await pw.get_site_info()
            assert await pw.get_charge() == 55.0
            sim.old_firmware_aggregates = True
            with pytest.raises(ValueError, match="frequency"):
                await pw.get_meters()  # the library's own parser trips, as on real 2018 gateways
            sim.rate_limit_reads = True
            with pytest.raises(ApiError, match="429"):
                await pw.get_charge()

    sim_loop.run(scenario())


def test_port_is_kept_across_down_and_back(sim_loop: LoopThread, sim: PowerwallSim) -> None:
    port = sim.port

    async def scenario() -> None:
        await sim.set_fault(Fault.DOWN)
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.ClientConnectorError):
                await http.get(f"https://{sim.endpoint}/api/status", ssl=False)
        await sim.set_fault(Fault.NONE)
        async with Powerwall(sim.endpoint) as pw:
            await pw.get_status()

    sim_loop.run(scenario())
    assert sim.port == port


def test_certificate_verifies_for_the_loopback_address(
    sim_loop: LoopThread, sim: PowerwallSim
) -> None:
    trust = ssl.create_default_context(cadata=sim.cert_pem.decode())

    async def scenario() -> int:
        async with aiohttp.ClientSession() as http:
            response = await http.get(f"https://{sim.endpoint}/api/status", ssl=trust)
            return response.status

    assert sim_loop.run(scenario()) == 200
