"""Computers in an outage: graceful shutdown over a real sshd, ordered with their plugs, and back.

The simulated house's NAS runs on its own plug ("power on after AC loss" in its BIOS): it must
be shut down before the plug is cut, and comes back when the plug returns after 10 s off. The
Workstation comes back by Wake-on-LAN, sent to the house's loopback listener.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from loadshed.sim.house import SimHouse
from tests.e2e.conftest import POLL_S, RESTORE_S, SHEDDABLE, Loadshed, wait_until

pytestmark = pytest.mark.timeout(150)

COMPUTER_WAIT_S = 60.0  # a shutdown, a 10 s plug cycle and a boot, with room to spare
Start = Callable[..., Loadshed]


@pytest.fixture
def house() -> Iterator[SimHouse]:
    with SimHouse(computers=True) as simulated:
        yield simulated


def shed_names(tmp_path: Path) -> set[str]:
    return set(json.loads((tmp_path / "state" / "state.json").read_text())["shed"])


def test_computers_shut_down_before_their_plug_and_come_back(
    house: SimHouse, start: Start, tmp_path: Path
) -> None:
    nas, workstation = house.hosts["NAS"], house.hosts["Workstation"]
    daemon = start()
    daemon.wait_for_line("ready: 12 devices (2 essential)")
    house.cut_grid()
    wait_until("both computers down", lambda: not nas.is_up and not workstation.is_up)
    assert nas.shutdowns() == ["sudo -n shutdown -h now"]
    assert workstation.shutdowns() == ["sudo -n shutdown -h now"]
    wait_until("the NAS plug cut", lambda: not house.is_on("NAS plug"), COMPUTER_WAIT_S)
    assert house.hard_cuts == [], "the NAS lost power before it had shut down"
    daemon.wait_for_line("NAS plug: waiting for NAS")
    wait_until("every plug shed", lambda: not any(house.is_on(n) for n in SHEDDABLE))
    assert shed_names(tmp_path) >= {"NAS", "NAS plug", "Workstation"}

    house.restore_grid()
    wait_until("the Workstation woken", lambda: workstation.is_up, COMPUTER_WAIT_S)
    daemon.wait_for_line("NAS plug: keeping it off")
    wait_until("the NAS back after its plug", lambda: nas.is_up, COMPUTER_WAIT_S)
    wait_until("state empty", lambda: shed_names(tmp_path) == set(), COMPUTER_WAIT_S)
    assert not daemon.saw("did not come back")
    assert daemon.stop() == 0


def test_kill_9_mid_shutdown_then_restart_finishes_and_restores_exactly(
    house: SimHouse, start: Start, tmp_path: Path
) -> None:
    nas = house.hosts["NAS"]
    nas.hang = True  # its shutdown command never returns: loadshed is killed meanwhile
    daemon = start()
    daemon.wait_for_line("ready:")
    house.cut_grid()
    daemon.wait_for_line("switching off NAS (off-grid)")
    wait_until("the shutdown reached the NAS", lambda: len(nas.commands()) == 1)
    daemon.stop(signal.SIGKILL)
    assert house.is_on("NAS plug") and nas.is_up  # nothing cut under a running NAS
    assert {"NAS", "NAS plug"} <= shed_names(tmp_path)  # the intent was written first

    nas.hang = False
    again = start()
    again.wait_for_line("loadshed had switched off")
    wait_until("the NAS down", lambda: not nas.is_up)
    wait_until("its plug cut", lambda: not house.is_on("NAS plug"), COMPUTER_WAIT_S)
    assert house.hard_cuts == []
    house.restore_grid()
    wait_until("the NAS back", lambda: nas.is_up, COMPUTER_WAIT_S + RESTORE_S + POLL_S)
    wait_until("everything back", lambda: all(house.is_on(n) for n in SHEDDABLE))
    wait_until("state empty", lambda: shed_names(tmp_path) == set(), COMPUTER_WAIT_S)
    assert not house.is_on("Desk lamp")
