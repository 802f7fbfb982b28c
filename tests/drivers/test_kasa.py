"""The Kasa driver, through the real python-kasa, against simulated plugs and strips on loopback.

Everything (simulators and driver) runs on the `sim_loop` thread's event loop; the test thread
calls in with `rig.run(...)`. Time bounds asserted here are generous ceilings that tell "our
deadline held" from "the library's retries ran" (4 x timeout + 3 s), not measurements.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web

from loadshed.drivers import Switch
from loadshed.drivers.kasa import (
    LOGIN_REJECTED,
    NOT_LEGACY,
    REFUSED,
    REFUSED_NO_LOGIN,
    KasaHost,
)
from loadshed.model import Kind, Outcome, Power, Status
from loadshed.sim.base import Closer, Fault, Outlet, SimDevice
from loadshed.sim.kasa import (
    IotResponder,
    KasaSim,
    KlapSim,
    kasa_plug,
    kasa_strip,
    klap_plug,
)
from loadshed.sim.loop import LoopThread

KASA_FIXTURES = Path(__file__).parents[1] / "fixtures" / "kasa"
FAST_S = 0.5  # the driver's timeout_s in these tests
HUNG_CALL_CEILING_S = 2.5  # one call on a hung device: our 0.5 s, never the library's 11 s
HUNG_CONNECT_CEILING_S = 3.0  # connect on a hung device: 2 x 0.5 s expected
REFUSED_CEILING_S = 0.4  # a refused connection is answered at once
KLAP_REFUSED_S = 1.5  # python-kasa takes 0.75 s to give up on a refused KLAP device
USER = "owner@example.com"
PASSWORD = "correct-horse-battery-staple"

T = TypeVar("T")
S = TypeVar("S", bound=SimDevice)


class Rig:
    """Start simulators and driver hosts on the sim loop; close every one afterwards."""

    def __init__(self, loop: LoopThread) -> None:
        self.loop = loop
        self.sims: list[SimDevice] = []
        self.hosts: list[KasaHost] = []

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run(coro)

    def timed(self, coro: Coroutine[Any, Any, T]) -> tuple[T, float]:
        start = time.monotonic()
        result = self.run(coro)
        return result, time.monotonic() - start

    def start(self, sim: S) -> S:
        self.run(sim.start())
        self.sims.append(sim)
        return sim

    def fault(self, sim: SimDevice, fault: Fault, slow_s: float | None = None) -> None:
        self.run(sim.set_fault(fault, slow_s))

    def host(self, sim: SimDevice, **options: Any) -> KasaHost:
        options.setdefault("timeout_s", FAST_S)
        host = KasaHost(sim.host, sim.port, **options)
        self.hosts.append(host)
        return host

    def connected(self, sim: SimDevice, **options: Any) -> KasaHost:
        host = self.host(sim, **options)
        outcome = self.run(host.connect())
        assert outcome.is_ok, outcome
        return host

    def close(self) -> None:
        for host in self.hosts:
            self.run(host.close())
        for sim in self.sims:
            self.run(sim.stop())


@pytest.fixture
def rig(sim_loop: LoopThread, caplog: pytest.LogCaptureFixture) -> Iterator[Rig]:
    r = Rig(sim_loop)
    yield r
    r.close()
    gc.collect()
    assert "Unclosed" not in caplog.text  # every aiohttp session (KLAP) was closed, not dropped


def legacy_plug(outlet: Outlet) -> KasaSim:
    return kasa_plug(outlet)


def klap(outlet: Outlet) -> KlapSim:
    return klap_plug(outlet, username=USER, password=PASSWORD)


CREDENTIALS = {"username": USER, "password": PASSWORD}
PROTOCOLS = [
    pytest.param(legacy_plug, {}, id="legacy"),
    pytest.param(klap, CREDENTIALS, id="klap"),
]


# --- plugs -----------------------------------------------------------------------------------


def test_plug_is_one_switch_named_by_alias_that_switches_off_and_on(rig: Rig) -> None:
    kettle = Outlet("Kettle", 1800.0, on=True)
    sim = rig.start(kasa_plug(kettle))
    host = rig.connected(sim)

    switch: Switch = host.switches[0]  # KasaSwitch is a Switch (checked by mypy)
    assert len(host.switches) == 1
    assert (switch.name, switch.kind, switch.address) == ("Kettle", Kind.KASA, sim.address)
    assert (host.address, host.via) == (sim.address, "XOR")
    assert rig.run(switch.read()) == Outcome.ok(Power.ON)
    assert rig.run(switch.off()) == Outcome.ok(Power.OFF)
    assert kettle.on is False
    assert rig.run(switch.on()) == Outcome.ok(Power.ON)
    assert kettle.on is True
    assert sim.calls["system.set_relay_state"] == 2
    assert sim.connections == 1  # one persistent connection carried everything


def test_read_sees_a_change_made_elsewhere(rig: Rig) -> None:
    lamp = Outlet("Lamp", 60.0, on=True)
    sim = rig.start(kasa_plug(lamp))
    [switch] = rig.connected(sim).switches

    lamp.on = False  # someone pressed the button on the plug
    assert rig.run(switch.read()) == Outcome.ok(Power.OFF)


def test_energy_plug_reports_its_watts(rig: Rig) -> None:
    heater = Outlet("Heater", 1500.0, on=True)
    sim = rig.start(kasa_plug(heater, meter=True))
    [switch] = rig.connected(sim).switches

    assert rig.run(switch.read()) == Outcome.ok(Power.ON, watts=1500.0)
    assert rig.run(switch.off()) == Outcome.ok(Power.OFF, watts=0.0)


# --- strips ----------------------------------------------------------------------------------


def test_strip_gives_one_switch_per_outlet_switched_alone(rig: Rig) -> None:
    outlets = [Outlet("Router", 12.0), Outlet("Fridge", 150.0), Outlet("Aquarium", 40.0)]
    sim = rig.start(kasa_strip(outlets, name="Kitchen strip"))
    host = rig.connected(sim)

    assert [s.name for s in host.switches] == ["Router", "Fridge", "Aquarium"]
    assert len({s.address for s in host.switches}) == 3
    router, fridge, aquarium = host.switches
    assert rig.run(fridge.off()) == Outcome.ok(Power.OFF, watts=0.0)
    assert [o.on for o in outlets] == [True, False, True]
    assert rig.run(router.read()) == Outcome.ok(Power.ON, watts=12.0)
    assert rig.run(aquarium.read()) == Outcome.ok(Power.ON, watts=40.0)
    assert rig.run(fridge.on()) == Outcome.ok(Power.ON, watts=150.0)
    assert [o.on for o in outlets] == [True, True, True]
    assert sim.calls["system.set_relay_state"] == 2  # one per outlet switched, never the strip


def test_strip_outlets_switched_off_at_once_all_succeed(rig: Rig) -> None:
    outlets = [Outlet(f"Outlet {n}", 10.0 * n) for n in range(1, 7)]
    sim = rig.start(kasa_strip(outlets))
    switches = rig.connected(sim).switches

    async def all_of(verb: str) -> list[Outcome]:
        return await asyncio.gather(*(s.off() if verb == "off" else s.on() for s in switches))

    assert rig.run(all_of("off")) == [Outcome.ok(Power.OFF, watts=0.0)] * 6
    assert not any(o.on for o in outlets)
    ons = rig.run(all_of("on"))
    assert [o.power for o in ons] == [Power.ON] * 6
    assert [o.watts for o in ons] == [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
    assert all(o.on for o in outlets)


# --- KLAP (newer firmware, TP-Link account) --------------------------------------------------


@pytest.mark.parametrize("login_version", [2, 1])
def test_klap_plug_with_right_credentials_switches(rig: Rig, login_version: int) -> None:
    freezer = Outlet("Freezer", 150.0)
    sim = rig.start(
        klap_plug(
            freezer, username=USER, password=PASSWORD, meter=True, login_version=login_version
        )
    )
    host = rig.connected(sim, **CREDENTIALS)

    assert host.via == f"KLAP v{login_version}"
    [switch] = host.switches
    assert switch.name == "Freezer"
    assert rig.run(switch.off()) == Outcome.ok(Power.OFF, watts=0.0)
    assert freezer.on is False
    assert rig.run(switch.on()) == Outcome.ok(Power.ON, watts=150.0)
    assert sim.requests >= 4


def test_klap_plug_with_wrong_password_is_a_login_failure(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sim = rig.start(klap(Outlet("Freezer", 150.0)))
    host = rig.host(sim, username=USER, password="not-" + PASSWORD)

    outcome = rig.run(host.connect())

    assert outcome.status is Status.FAILED
    assert outcome.detail.startswith(LOGIN_REJECTED)
    assert host.switches == ()
    assert "not-" + PASSWORD not in caplog.text + repr(host)


def test_a_rejected_tp_link_login_backs_off_and_never_locks_the_account(rig: Rig) -> None:
    """Every 30 s refresh used to cost two failed KLAP logins per plug. Now: retried after
    8 s, then less often, never more than 5 failed logins in any 15 minutes."""
    now = [0.0]
    sim = rig.start(klap(Outlet("Freezer", 150.0)))
    host = rig.host(sim, username=USER, password="not-" + PASSWORD, clock=lambda: now[0])
    attempts: list[float] = []
    for tick in range(120):  # an hour of refreshes every 30 s
        before = sim.handshakes
        outcome = rig.run(host.connect())
        assert outcome.detail.startswith(LOGIN_REJECTED)
        assert "next login attempt in" in outcome.detail
        if sim.handshakes > before:
            attempts.append(tick * 30.0)
        now[0] += 30
    for i, start in enumerate(attempts):
        assert len([t for t in attempts[i:] if t - start < 900]) <= 5
    assert 8 <= len(attempts) <= 12  # it still tries: a corrected password is found


def test_klap_plug_rejecting_credentials_later_is_a_login_failure(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    freezer = Outlet("Freezer", 150.0)
    sim = rig.start(klap(freezer))
    [switch] = rig.connected(sim, **CREDENTIALS).switches

    rig.fault(sim, Fault.BAD_AUTH)  # the account's password was changed
    assert rig.run(switch.off()) == Outcome.failed(LOGIN_REJECTED)
    assert freezer.on is True
    rig.fault(sim, Fault.NONE)
    assert rig.run(switch.off()) == Outcome.ok(Power.OFF)
    assert PASSWORD not in caplog.text


def test_klap_plug_without_credentials_says_they_are_needed(rig: Rig) -> None:
    sim = rig.start(klap(Outlet("Freezer", 150.0)))
    host = rig.host(sim)

    assert rig.run(host.connect()) == Outcome.failed(NOT_LEGACY)
    assert "KASA_USERNAME" in NOT_LEGACY


# --- faults ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("make", "login"), PROTOCOLS)
def test_plug_down_at_connect_is_unreachable_at_once(rig: Rig, make: Any, login: Any) -> None:
    sim = rig.start(make(Outlet("Heater", 1500.0)))
    # with a login, KLAP is tried too, and python-kasa retries a refused HTTP connect 3 x 0.25 s
    host = rig.host(sim, timeout_s=KLAP_REFUSED_S if login else FAST_S, **login)
    rig.fault(sim, Fault.DOWN)

    outcome, took_s = rig.timed(host.connect())

    assert outcome == Outcome.unreachable(REFUSED if login else REFUSED_NO_LOGIN)
    assert took_s < (KLAP_REFUSED_S if login else REFUSED_CEILING_S)


@pytest.mark.parametrize(("make", "login"), PROTOCOLS)
def test_plug_going_down_is_unreachable_then_recovers(rig: Rig, make: Any, login: Any) -> None:
    heater = Outlet("Heater", 1500.0)
    sim = rig.start(make(heater))
    # over KLAP, python-kasa retries a refused connect 3 times, 0.25 s apart, and then keeps
    # 0.25 s between requests: give it more than FAST_S so the refusal itself is reported
    timeout_s = KLAP_REFUSED_S if login else FAST_S
    [switch] = rig.connected(sim, timeout_s=timeout_s, **login).switches

    rig.fault(sim, Fault.DOWN)
    outcome, took_s = rig.timed(switch.off())
    assert outcome == Outcome.unreachable(REFUSED)
    assert took_s < timeout_s
    assert heater.on is True

    rig.fault(sim, Fault.NONE)
    assert rig.run(switch.off()) == Outcome.ok(Power.OFF)
    assert heater.on is False


@pytest.mark.timeout(20)
@pytest.mark.parametrize(("make", "login"), PROTOCOLS)
def test_hung_plug_costs_one_timeout_then_recovers(rig: Rig, make: Any, login: Any) -> None:
    heater = Outlet("Heater", 1500.0)
    sim = rig.start(make(heater))
    [switch] = rig.connected(sim, **login).switches

    rig.fault(sim, Fault.HUNG)
    outcome, took_s = rig.timed(switch.off())
    assert outcome == Outcome.unreachable(f"no answer in {FAST_S:g} s")
    assert FAST_S * 0.9 < took_s < HUNG_CALL_CEILING_S

    rig.fault(sim, Fault.NONE)
    assert rig.run(switch.off()) == Outcome.ok(Power.OFF)  # same host, same switch
    assert heater.on is False


@pytest.mark.timeout(20)
@pytest.mark.parametrize(("make", "login"), PROTOCOLS)
def test_hung_plug_at_connect_is_unreachable_within_bound(rig: Rig, make: Any, login: Any) -> None:
    sim = rig.start(make(Outlet("Heater", 1500.0)))
    host = rig.host(sim, **login)
    rig.fault(sim, Fault.HUNG)

    outcome, took_s = rig.timed(host.connect())

    assert outcome == Outcome.unreachable(f"no answer in {FAST_S:g} s")
    assert took_s < HUNG_CONNECT_CEILING_S
    rig.fault(sim, Fault.NONE)
    assert rig.run(host.connect()).is_ok


@pytest.mark.timeout(20)
def test_hung_strip_fails_all_outlets_within_one_bound(rig: Rig) -> None:
    sim = rig.start(kasa_strip([Outlet("A", 1.0), Outlet("B", 2.0), Outlet("C", 3.0)]))
    switches = rig.connected(sim).switches
    rig.fault(sim, Fault.HUNG)

    async def all_off() -> list[Outcome]:
        return await asyncio.gather(*(s.off() for s in switches))

    outcomes, took_s = rig.timed(all_off())
    assert {o.status for o in outcomes} == {Status.UNREACHABLE}
    assert took_s < HUNG_CALL_CEILING_S  # siblings wait for one bound, not one each


@pytest.mark.parametrize(("make", "login"), PROTOCOLS)
def test_slow_plug_within_timeout_is_ok(rig: Rig, make: Any, login: Any) -> None:
    heater = Outlet("Heater", 1500.0)
    sim = rig.start(make(heater))
    [switch] = rig.connected(sim, **login).switches

    rig.fault(sim, Fault.SLOW, slow_s=FAST_S / 10)  # switch + read back: 2 slow answers
    assert rig.run(switch.off()) == Outcome.ok(Power.OFF)
    assert heater.on is False


@pytest.mark.timeout(20)
def test_slow_plug_beyond_timeout_is_unreachable(rig: Rig) -> None:
    sim = rig.start(kasa_plug(Outlet("Heater", 1500.0)))
    [switch] = rig.connected(sim).switches

    rig.fault(sim, Fault.SLOW, slow_s=FAST_S * 4)
    outcome, took_s = rig.timed(switch.read())
    assert outcome == Outcome.unreachable(f"no answer in {FAST_S:g} s")
    assert took_s < HUNG_CALL_CEILING_S


def test_library_error_of_another_kind_is_failed_and_logged(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    # meter in `feature` but no emeter module: python-kasa raises a bare KeyError
    responder = IotResponder([Outlet("Odd", 5.0)], meter=True, refuse_modules={"emeter"})
    sim = rig.start(KasaSim(responder))

    outcome = rig.run(rig.host(sim).connect())

    assert outcome.status is Status.FAILED
    assert "KeyError" in outcome.detail
    assert any(r.exc_info for r in caplog.records if r.name == "loadshed.drivers.kasa")


class NotKasa(SimDevice):
    """An HTTP server that is no Kasa device: 404 to everything, 400 to the legacy protocol."""

    async def _listen(self, host: str, port: int) -> Closer:
        runner = web.AppRunner(web.Application(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        self.port = int(runner.addresses[0][1])
        return _Cleanup(runner)


class _Cleanup:
    def __init__(self, runner: web.AppRunner) -> None:
        self._runner = runner

    async def aclose(self) -> None:
        await self._runner.cleanup()


@pytest.mark.timeout(20)
def test_http_server_that_is_no_kasa_device_ends_bounded(rig: Rig) -> None:
    sim = rig.start(NotKasa())
    host = rig.host(sim, **CREDENTIALS)

    # XOR: garbage; KLAP: 404; unicast discovery: no answer in 1 s; then give up
    outcome, took_s = rig.timed(host.connect())

    assert outcome.status is Status.UNREACHABLE
    assert "404" in outcome.detail
    assert took_s < 3 * FAST_S + 1 + 0.5


# --- lifecycle -------------------------------------------------------------------------------


def test_closing_the_last_switch_hangs_up(rig: Rig) -> None:
    outlets = [Outlet("Router", 12.0), Outlet("Fridge", 150.0)]
    sim = rig.start(kasa_strip(outlets))
    host = rig.connected(sim)
    router, fridge = host.switches

    rig.run(router.close())
    assert rig.run(router.read()) == Outcome.failed("closed")
    assert rig.run(fridge.off()) == Outcome.ok(Power.OFF, watts=0.0)  # the sibling still works
    rig.run(fridge.close())

    assert host.switches == ()
    assert rig.run(fridge.read()) == Outcome.failed("closed")


def test_connect_again_takes_the_remembered_way(rig: Rig) -> None:
    sim = rig.start(klap(Outlet("Freezer", 150.0)))
    host = rig.connected(sim, **CREDENTIALS)
    [first] = host.switches

    assert rig.run(host.connect()).is_ok
    assert host.via == "KLAP v2"
    assert sim.handshakes == 2
    assert rig.run(first.read()) == Outcome.ok(Power.ON)  # old switch objects keep working


# --- every recorded real model ---------------------------------------------------------------


@pytest.mark.parametrize(
    "fixture", sorted(KASA_FIXTURES.glob("*.json")), ids=lambda p: p.stem.split("_")[0]
)
def test_recorded_model_is_switched(rig: Rig, fixture: Path) -> None:
    sysinfo = json.loads(fixture.read_text())["system"]["get_sysinfo"]
    has_meter = "ENE" in sysinfo["feature"]
    if "children" in sysinfo:
        outlets = [Outlet(f"Outlet {n}", 10.0 * n) for n in range(1, sysinfo["child_num"] + 1)]
        sim = rig.start(kasa_strip(outlets, sysinfo=sysinfo))
    else:
        outlets = [Outlet("Lamp", 60.0)]
        sim = rig.start(kasa_plug(outlets[0], sysinfo=sysinfo))
    host = rig.connected(sim)

    assert [s.name for s in host.switches] == [o.name for o in outlets]
    last, outlet = host.switches[-1], outlets[-1]
    off = rig.run(last.off())
    assert (off.status, off.power, outlet.on) == (Status.OK, Power.OFF, False)
    on = rig.run(last.on())
    assert (on.status, on.power, outlet.on) == (Status.OK, Power.ON, True)
    assert (on.watts == outlet.watts) if has_meter else (on.watts is None)
    assert all(o.on for o in outlets)
