"""The engine in-process against the simulated house with its computers: commands mid-shed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from loadshed.computers import load_computers
from loadshed.config import load_config
from loadshed.drivers.computer import ComputerSwitch
from loadshed.engine import Command, CommandKind, Engine
from loadshed.model import Event, EventKind, Pin, Power, Verb
from loadshed.sim.house import SimHouse
from loadshed.state import StateStore

pytestmark = pytest.mark.timeout(120)

WAIT_S = 30.0  # the longest a step may take before the test fails


@pytest.fixture
def house() -> Iterator[SimHouse]:
    with SimHouse(computers=True) as simulated:
        yield simulated


def test_forced_restore_while_computers_shut_down_brings_everything_back(
    house: SimHouse, tmp_path: Path
) -> None:
    config_path = house.write_config(tmp_path / "config.py")
    config = load_config(config_path, {})
    computers = load_computers(tmp_path / "computers.txt")
    store = StateStore(tmp_path / "state")
    store.open()

    events: list[Event] = []

    async def scenario() -> tuple[set[str], set[str], str]:
        engine = Engine(config, store, computers=computers, on_event=events.append)
        await engine.start()
        house.cut_grid()
        await engine.poll()
        busy = {r.name for r in engine.snapshot.devices if r.busy is Verb.SHED}
        (plug,) = (r for r in engine.snapshot.devices if r.name == "NAS plug")
        # The owner presses r while the computers are still going down and the NAS plug waits.
        engine.obey(Command(CommandKind.FORCE_RESTORE))
        await engine.settle()
        left = set(engine.state.shed)
        await engine.close()
        return busy, left, plug.note

    try:
        busy, left, plug_note = asyncio.run(scenario())
    finally:
        store.close()
    assert {"NAS", "Workstation"} <= busy
    assert "NAS plug" not in busy and plug_note == "kept on: NAS is running"
    assert left == set(), "a forced restore left devices switched off"
    assert house.is_on("NAS plug") and house.hard_cuts == []
    assert all(h.is_up for h in house.hosts.values())
    assert all(house.is_on(n) for n in ("Monitor", "Printer", "TV", "Space heater"))
    # The computers restored after their shutdowns are part of the one restore the owner
    # asked for: one message, not one per device that started late.
    (restored,) = (e for e in events if e.kind is EventKind.RESTORE_DONE)
    assert {"NAS", "Workstation"} <= set(restored.done) and restored.failed == ()


async def _poll_until(engine: Engine, done: Callable[[], bool], what: str) -> None:
    """Poll the engine (as its loop would) until done(); fail naming what did not happen."""
    deadline = time.monotonic() + WAIT_S
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        await engine.poll()
        await asyncio.sleep(0.1)


def _engine(house: SimHouse, tmp_path: Path) -> tuple[Engine, StateStore]:
    config_path = house.write_config(tmp_path / "config.py")
    config = load_config(config_path, {})
    store = StateStore(tmp_path / "state")
    store.open()
    engine = Engine(config, store, computers=load_computers(tmp_path / "computers.txt"))
    engine.rules = replace(engine.rules, restore_after_s=0)
    return engine, store


def test_a_computer_pinned_on_keeps_its_plug_on_and_the_screen_says_so(
    house: SimHouse, tmp_path: Path
) -> None:
    engine, store = _engine(house, tmp_path)
    nas, workstation = house.hosts["NAS"], house.hosts["Workstation"]

    async def scenario() -> str:
        await engine.start()
        engine.obey(Command(CommandKind.PIN, device="NAS", pin=Pin.ON))
        house.cut_grid()
        await _poll_until(engine, lambda: "Workstation" in engine.state.shed, "a shed")
        await engine.settle()
        await engine.poll()
        await engine.settle()
        (plug,) = (r for r in engine.snapshot.devices if r.name == "NAS plug")
        await engine.close()
        return plug.note

    try:
        note = asyncio.run(scenario())
    finally:
        store.close()
    assert workstation.shutdowns() == ["sudo -n shutdown -h now"]
    assert nas.shutdowns() == [] and nas.is_up
    assert house.is_on("NAS plug")
    assert note == "kept on: NAS is pinned on"


def test_a_computer_neither_seen_nor_reached_is_taken_as_off_and_stays_off(
    house: SimHouse, tmp_path: Path
) -> None:
    """Off before the outage: the probe cannot tell (silent), so its shutdown is tried; ssh
    cannot reach it either, and that answer is recorded: not shed, not woken afterwards."""
    workstation = house.hosts["Workstation"]
    workstation.power_off()
    engine, store = _engine(house, tmp_path)
    switch = engine.registry.devices["Workstation"].switch
    assert isinstance(switch, ComputerSwitch)
    switch.shutdown_timeout_s = 3.0

    async def scenario() -> None:
        await engine.start()
        house.cut_grid()
        await engine.poll()
        assert "Workstation" in engine.state.shed  # the intent, written before ssh is tried
        await engine.settle()
        assert "Workstation" not in engine.state.shed
        assert engine.registry.devices["Workstation"].power is Power.OFF
        house.restore_grid()
        await _poll_until(engine, lambda: not engine.state.shed, "everything restored")
        await engine.settle()
        await engine.close()

    try:
        asyncio.run(scenario())
    finally:
        store.close()
    assert workstation.commands() == [] and workstation.is_off
    assert house.is_on("TV")
