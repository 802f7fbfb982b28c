"""TuyaPlug against TuyaPlugSim on loopback, through the real tinytuya, protocols 3.3 and 3.4.

Sims run on the `sim_loop` thread; driver coroutines run with `asyncio.run` in the test thread.
Timings are printed (run with -s to see them), never asserted: the `timeout` marks only stop a
hang. The concurrency test asserts outcomes, and prints how long the gather took.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from loadshed.drivers.tuya import KEY_HINT, KEY_LENGTH, TuyaPlug, TuyaPool
from loadshed.model import Kind, Outcome, Power, Status
from loadshed.sim.base import Fault, Outlet
from loadshed.sim.loop import LoopThread
from loadshed.sim.tuya import Cmd, TuyaPlugSim

pytestmark = pytest.mark.timeout(30)

T = TypeVar("T")
KEY = "a1b2c3d4e5f6g7h8"
DEV_ID = "bf0123456789abcdefgh"
HEALTHY_TIMEOUT_S = 2.0  # generous: a healthy sim answers in milliseconds
FAULT_TIMEOUT_S = 0.5  # short: a faulty sim costs about this much per call

SimFactory = Callable[..., TuyaPlugSim]
PlugFactory = Callable[..., TuyaPlug]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def timed(coro: Coroutine[Any, Any, T], label: str) -> T:
    started = time.monotonic()
    result = asyncio.run(coro)
    print(f"{label}: {time.monotonic() - started:.3f} s -> {result}")
    return result


@pytest.fixture(params=[3.3, 3.4], ids=["v3.3", "v3.4"])
def version(request: pytest.FixtureRequest) -> float:
    return float(request.param)


@pytest.fixture
def pool() -> Iterator[TuyaPool]:
    with TuyaPool(12) as tuya_pool:
        yield tuya_pool


@pytest.fixture
def make_sim(sim_loop: LoopThread, version: float) -> Iterator[SimFactory]:
    """Start simulated plugs on 127.0.0.1 (free ports); stop them after the test."""
    started: list[TuyaPlugSim] = []

    def make(outlets: list[Outlet] | None = None, **kwargs: Any) -> TuyaPlugSim:
        kwargs.setdefault("version", version)
        sim = TuyaPlugSim(DEV_ID, KEY, outlets or [Outlet("Heater", 1500.0)], **kwargs)
        sim_loop.run(sim.start())
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim_loop.run(sim.stop())


@pytest.fixture
def make_plug(pool: TuyaPool, version: float) -> Iterator[PlugFactory]:
    """Build TuyaPlugs for sims; close them after the test."""
    made: list[TuyaPlug] = []

    def make(sim: TuyaPlugSim, **kwargs: Any) -> TuyaPlug:
        kwargs.setdefault("timeout_s", HEALTHY_TIMEOUT_S)
        kwargs.setdefault("key", KEY)
        kwargs.setdefault("version", version)
        plug = TuyaPlug("Heater", DEV_ID, sim.host, port=sim.port, executor=pool.executor, **kwargs)
        made.append(plug)
        return plug

    yield make
    for plug in made:
        run(plug.close())


def set_fault(
    sim_loop: LoopThread, sim: TuyaPlugSim, fault: Fault, slow_s: float | None = None
) -> None:
    sim_loop.run(sim.set_fault(fault, slow_s))


def control_cmd(version: float) -> Cmd:
    return Cmd.CONTROL_NEW if version >= 3.4 else Cmd.CONTROL


def query_cmd(version: float) -> Cmd:
    return Cmd.DP_QUERY_NEW if version >= 3.4 else Cmd.DP_QUERY


def test_read_off_on_follow_the_outlet(
    make_sim: SimFactory, make_plug: PlugFactory, version: float
) -> None:
    outlet = Outlet("Heater", 1500.0, on=True)
    sim = make_sim([outlet])
    plug = make_plug(sim)

    assert plug.kind is Kind.TUYA
    assert plug.address == f"127.0.0.1:{sim.port}"
    assert run(plug.read()) == Outcome.ok(Power.ON)
    assert run(plug.off()) == Outcome.ok(Power.OFF)
    assert outlet.on is False
    assert run(plug.read()) == Outcome.ok(Power.OFF)
    assert run(plug.on()) == Outcome.ok(Power.ON)
    assert outlet.on is True
    assert sim.requests[control_cmd(version)] == 2
    assert sim.requests[query_cmd(version)] == 2  # the STATUS push confirmed both switches


def test_meter_reports_watts_of_the_outlet(make_sim: SimFactory, make_plug: PlugFactory) -> None:
    sim = make_sim([Outlet("Freezer", 46.0)], meter=True)
    plug = make_plug(sim)

    assert run(plug.read()) == Outcome.ok(Power.ON, watts=46.0)
    assert run(plug.off()).power is Power.OFF
    assert run(plug.read()) == Outcome.ok(Power.OFF, watts=0.0)


def test_two_outlet_device_switched_by_dp2_only(
    make_sim: SimFactory, make_plug: PlugFactory
) -> None:
    first, second = Outlet("Lamp", 40.0), Outlet("Kettle", 2000.0)
    sim = make_sim([first, second])
    plug = make_plug(sim, dps=2)

    assert run(plug.off()) == Outcome.ok(Power.OFF)
    assert (first.on, second.on) == (True, False)
    assert run(plug.read()) == Outcome.ok(Power.OFF)
    assert run(make_plug(sim, dps=1).read()) == Outcome.ok(Power.ON)


def test_both_outlets_of_one_device_switched_together(
    make_sim: SimFactory, make_plug: PlugFactory
) -> None:
    outlets = [Outlet("Lamp", 40.0), Outlet("Kettle", 2000.0)]
    sim = make_sim(outlets)
    plugs = [make_plug(sim, dps=1), make_plug(sim, dps=2)]

    async def both_off() -> list[Outcome]:
        return list(await asyncio.gather(*(plug.off() for plug in plugs)))

    assert run(both_off()) == [Outcome.ok(Power.OFF)] * 2
    assert [outlet.on for outlet in outlets] == [False, False]


def test_missing_dp_is_named(make_sim: SimFactory, make_plug: PlugFactory) -> None:
    plug = make_plug(make_sim([Outlet("Lamp", 40.0), Outlet("Kettle", 2000.0)]), dps=3)

    outcome = run(plug.read())

    assert outcome.status is Status.FAILED
    assert "no dp 3" in outcome.detail
    assert "1, 2, 9" in outcome.detail


def test_wrong_key_fails_with_the_key_hint(
    sim_loop: LoopThread, make_sim: SimFactory, make_plug: PlugFactory
) -> None:
    outlet = Outlet("Heater", 1500.0)
    sim = make_sim([outlet])
    set_fault(sim_loop, sim, Fault.BAD_AUTH)
    plug = make_plug(sim)

    assert timed(plug.read(), "wrong key read") == Outcome.failed(KEY_HINT)
    assert run(plug.off()) == Outcome.failed(KEY_HINT)
    assert outlet.on is True


@pytest.mark.parametrize("key", ["short", "", "0123456789abcdef0"], ids=["short", "empty", "17"])
def test_key_not_16_characters_fails_before_connecting(
    make_sim: SimFactory, make_plug: PlugFactory, key: str
) -> None:
    sim = make_sim()
    plug = make_plug(sim, key=key)

    assert run(plug.off()) == Outcome.failed(KEY_LENGTH)
    assert sim.connections == 0


def test_protocol_version_mismatch_fails_with_the_key_hint(
    make_sim: SimFactory, make_plug: PlugFactory, version: float
) -> None:
    other = 3.4 if version == 3.3 else 3.3
    plug = make_plug(make_sim(), version=other)

    assert timed(plug.read(), f"client {other} vs plug {version}") == Outcome.failed(KEY_HINT)


def test_down_is_unreachable_at_once(
    sim_loop: LoopThread, make_sim: SimFactory, make_plug: PlugFactory
) -> None:
    sim = make_sim()
    set_fault(sim_loop, sim, Fault.DOWN)
    plug = make_plug(sim, timeout_s=FAULT_TIMEOUT_S)

    outcome = timed(plug.off(), "down off")

    assert outcome.status is Status.UNREACHABLE
    assert "refused" in outcome.detail


@pytest.mark.timeout(10)
def test_hung_is_unreachable_after_the_timeout(
    sim_loop: LoopThread, make_sim: SimFactory, make_plug: PlugFactory
) -> None:
    outlet = Outlet("Heater", 1500.0)
    sim = make_sim([outlet])
    set_fault(sim_loop, sim, Fault.HUNG)
    plug = make_plug(sim, timeout_s=FAULT_TIMEOUT_S)

    assert timed(plug.read(), "hung read") == Outcome.unreachable("no answer in 0.5 s")
    assert timed(plug.off(), "hung off") == Outcome.unreachable("no answer in 0.5 s")
    assert outlet.on is True
    assert sum(sim.requests.values()) >= 2  # it did reach the plug


def test_slow_answer_within_the_timeout_is_ok(
    sim_loop: LoopThread, make_sim: SimFactory, make_plug: PlugFactory
) -> None:
    sim = make_sim()
    set_fault(sim_loop, sim, Fault.SLOW, slow_s=0.2)
    plug = make_plug(sim, timeout_s=HEALTHY_TIMEOUT_S)

    assert timed(plug.read(), "slow read") == Outcome.ok(Power.ON)
    assert timed(plug.off(), "slow off") == Outcome.ok(Power.OFF)


def test_ack_without_status_push_is_confirmed_by_a_read(
    make_sim: SimFactory, make_plug: PlugFactory, version: float
) -> None:
    outlet = Outlet("Heater", 1500.0)
    sim = make_sim([outlet])
    sim.ack_only = True
    plug = make_plug(sim, timeout_s=1.0)

    assert timed(plug.off(), "ack-only off") == Outcome.ok(Power.OFF)
    assert outlet.on is False
    assert sim.requests[query_cmd(version)] == 1  # the confirming read


@pytest.mark.timeout(20)
def test_hung_plugs_do_not_delay_healthy_ones(
    sim_loop: LoopThread, make_sim: SimFactory, make_plug: PlugFactory
) -> None:
    healthy = [Outlet(f"ok{i}", 100.0) for i in range(5)]
    hung = [Outlet(f"hung{i}", 100.0) for i in range(5)]
    healthy_sims = [make_sim([outlet]) for outlet in healthy]
    hung_sims = [make_sim([outlet]) for outlet in hung]
    for sim in hung_sims:
        set_fault(sim_loop, sim, Fault.HUNG)
    plugs = [make_plug(sim, timeout_s=FAULT_TIMEOUT_S) for sim in hung_sims + healthy_sims]

    async def all_off() -> list[Outcome]:
        return list(await asyncio.gather(*(plug.off() for plug in plugs)))

    outcomes = timed(all_off(), "5 hung + 5 healthy off, gathered")

    assert outcomes[5:] == [Outcome.ok(Power.OFF)] * 5
    assert [outlet.on for outlet in healthy] == [False] * 5
    assert {outcome.status for outcome in outcomes[:5]} == {Status.UNREACHABLE}
    assert [outlet.on for outlet in hung] == [True] * 5


@pytest.mark.timeout(10)
@pytest.mark.parametrize("fault", [Fault.DOWN, Fault.HUNG, Fault.BAD_AUTH, Fault.SLOW])
def test_plug_recovers_after_a_fault(
    sim_loop: LoopThread, make_sim: SimFactory, make_plug: PlugFactory, fault: Fault
) -> None:
    outlet = Outlet("Heater", 1500.0)
    sim = make_sim([outlet])
    plug = make_plug(sim, timeout_s=FAULT_TIMEOUT_S)
    port = sim.port

    set_fault(sim_loop, sim, fault, slow_s=1.0)  # SLOW beyond the timeout
    assert not timed(plug.off(), f"{fault.value} off").is_ok
    set_fault(sim_loop, sim, Fault.NONE)

    assert timed(plug.off(), "recovered off") == Outcome.ok(Power.OFF)
    assert outlet.on is False
    assert sim.port == port


def test_calls_on_one_plug_take_turns(make_sim: SimFactory, make_plug: PlugFactory) -> None:
    outlet = Outlet("Heater", 1500.0)
    plug = make_plug(make_sim([outlet]))

    async def many() -> list[Outcome]:
        return list(await asyncio.gather(plug.off(), plug.read(), plug.on(), plug.read()))

    assert [outcome.status for outcome in run(many())] == [Status.OK] * 4
    assert outlet.on is True


def test_the_key_is_never_logged(
    sim_loop: LoopThread,
    make_sim: SimFactory,
    make_plug: PlugFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sim = make_sim()
    plug = make_plug(sim)
    caplog.set_level(logging.DEBUG)

    run(plug.read())
    run(plug.off())
    set_fault(sim_loop, sim, Fault.BAD_AUTH)
    run(plug.read())

    assert KEY not in caplog.text
    assert KEY not in repr(plug)


def test_unknown_version_fails_without_connecting(
    make_sim: SimFactory, make_plug: PlugFactory
) -> None:
    sim = make_sim()
    outcome = run(make_plug(sim, version=2.0).read())

    assert outcome.status is Status.FAILED
    assert "version" in outcome.detail
    assert sim.connections == 0


def test_closed_pool_fails_instead_of_raising(make_sim: SimFactory) -> None:
    sim = make_sim()
    pool = TuyaPool(1)
    pool.close()
    plug = TuyaPlug(
        "Heater", DEV_ID, sim.host, KEY, sim.version, port=sim.port, executor=pool.executor
    )

    outcome = run(plug.read())

    assert outcome.status is Status.FAILED
    assert "RuntimeError" in outcome.detail


# --- multi-outlet devices: outlets take turns, each with its own budget -----------------------

SIX_OUTLETS = 6
SLOW_ANSWER_S = 0.2  # each of the strip's answers: an outlet's call fits its budget easily
STRIP_TIMEOUT_S = 1.0  # but six outlets in a row do not fit one


def test_slow_strip_switches_every_outlet_when_all_are_asked_at_once(
    sim_loop: LoopThread, make_sim: SimFactory, make_plug: PlugFactory
) -> None:
    outlets = [Outlet(f"Outlet {n}", 10.0 * n) for n in range(1, SIX_OUTLETS + 1)]
    sim = make_sim(outlets)
    set_fault(sim_loop, sim, Fault.SLOW, slow_s=SLOW_ANSWER_S)
    plugs = [make_plug(sim, dps=n, timeout_s=STRIP_TIMEOUT_S) for n in range(1, SIX_OUTLETS + 1)]

    async def all_off() -> list[Outcome]:
        return list(await asyncio.gather(*(plug.off() for plug in plugs)))

    assert timed(all_off(), "slow 6-outlet strip, all off") == [Outcome.ok(Power.OFF)] * SIX_OUTLETS
    assert [outlet.on for outlet in outlets] == [False] * SIX_OUTLETS


@pytest.mark.timeout(20)
def test_hung_strip_fails_its_waiting_outlets_with_the_first(
    sim_loop: LoopThread, make_sim: SimFactory, make_plug: PlugFactory
) -> None:
    outlets = [Outlet(f"Outlet {n}", 10.0 * n) for n in range(1, SIX_OUTLETS + 1)]
    sim = make_sim(outlets)
    set_fault(sim_loop, sim, Fault.HUNG)
    plugs = [make_plug(sim, dps=n, timeout_s=FAULT_TIMEOUT_S) for n in range(1, SIX_OUTLETS + 1)]

    async def all_off() -> tuple[list[Outcome], float]:
        started = time.monotonic()
        outcomes = list(await asyncio.gather(*(plug.off() for plug in plugs)))
        return outcomes, time.monotonic() - started

    outcomes, took_s = timed(all_off(), "hung 6-outlet strip, all off")
    assert {outcome.status for outcome in outcomes} == {Status.UNREACHABLE}
    assert [outlet.on for outlet in outlets] == [True] * SIX_OUTLETS
    # the outlets behind the first are told at once, not after a timeout each
    assert sum(1 for outcome in outcomes if "another outlet" in outcome.detail) == SIX_OUTLETS - 1
    assert took_s < SIX_OUTLETS * FAULT_TIMEOUT_S
