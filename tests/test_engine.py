"""The engine in-process against the simulated house with its computers: commands mid-shed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadshed.computers import load_computers
from loadshed.config import load_config
from loadshed.engine import Command, CommandKind, Engine
from loadshed.model import Verb
from loadshed.sim.house import SimHouse
from loadshed.state import StateStore

pytestmark = pytest.mark.timeout(120)


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

    async def scenario() -> tuple[set[str], set[str]]:
        engine = Engine(config, store, computers=computers)
        await engine.start()
        house.cut_grid()
        await engine.poll()
        busy = {r.name for r in engine.snapshot.devices if r.busy is Verb.SHED}
        # The owner presses r while the computers are still going down and the NAS plug waits.
        engine.obey(Command(CommandKind.FORCE_RESTORE))
        await engine.settle()
        left = set(engine.state.shed)
        await engine.close()
        return busy, left

    try:
        busy, left = asyncio.run(scenario())
    finally:
        store.close()
    assert {"NAS", "Workstation", "NAS plug"} <= busy
    assert left == set(), "a forced restore left devices switched off"
    assert house.is_on("NAS plug") and house.hard_cuts == []
    assert all(h.is_up for h in house.hosts.values())
    assert all(house.is_on(n) for n in ("Monitor", "Printer", "TV", "Space heater"))
