"""Computers in an outage, as owners set them up: named by ssh_config `Host` aliases, on real
sshd, shut down before their plug is cut, and brought back whatever happened in between.

The simulated house's NAS lives on its own plug ("power on after AC loss" in its BIOS); the
Workstation comes back by Wake-on-LAN, sent to the house's loopback listener. After a shutdown
command each simulated computer first refuses connections (sshd stopped, the kernel flushing its
disks) for `refuse_s`, then goes silent, like a machine that is off. A plug cut before that is
a hard cut, and `house.hard_cuts` says so.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from loadshed.engine import PLUG_CYCLE_S
from loadshed.sim.house import AC_LOSS_S, SimHouse
from loadshed.sim.ssh import HostPower
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


def computers_txt(house: SimHouse, tmp_path: Path, **extra: str) -> None:
    (tmp_path / "computers.txt").write_text(house.computers_text(extra))


def test_computers_named_by_alias_shut_down_before_their_plug_and_come_back(
    house: SimHouse, start: Start, tmp_path: Path
) -> None:
    nas, workstation = house.hosts["NAS"], house.hosts["Workstation"]
    lines = (tmp_path / "computers.txt").read_text().splitlines()
    hosts = [line.split()[1] for line in lines if line and not line.startswith("#")]
    assert hosts == ["nas", "workstation"]  # ssh_config aliases, as owners write them
    daemon = start()
    daemon.wait_for_line("ready: 12 devices (2 essential)")
    house.cut_grid()
    daemon.wait_for_line("NAS plug: kept on: NAS is")
    wait_until("both computers off", lambda: nas.is_off and workstation.is_off, COMPUTER_WAIT_S)
    assert nas.shutdowns() == ["sudo -n shutdown -h now"]
    assert workstation.shutdowns() == ["sudo -n shutdown -h now"]
    wait_until("the NAS plug cut", lambda: not house.is_on("NAS plug"), COMPUTER_WAIT_S)
    assert house.hard_cuts == [], "the NAS lost power while it was still flushing its disks"
    daemon.wait_for_line("NAS: off (down after")
    wait_until("every plug shed", lambda: not any(house.is_on(n) for n in SHEDDABLE))
    assert shed_names(tmp_path) >= {"NAS", "NAS plug", "Workstation"}

    house.restore_grid()
    wait_until("the Workstation woken", lambda: workstation.is_up, COMPUTER_WAIT_S)
    daemon.wait_for_line("NAS plug: keeping it off")
    wait_until("the NAS back after its plug", lambda: nas.is_up, COMPUTER_WAIT_S)
    wait_until("state empty", lambda: shed_names(tmp_path) == set(), COMPUTER_WAIT_S)
    assert not daemon.saw("did not come back")
    assert [off for plug, off in house.plug_cycles if plug == "NAS plug"][-1] >= AC_LOSS_S
    assert daemon.stop() == 0
    # One outage, one shed and one restore told: the NAS plug, cut after the computers, is
    # part of the shed, not a second "shed finished".
    (shed,) = (line for line in daemon.lines if "shed finished:" in line)
    assert "7 done" in shed, shed
    (restored,) = (line for line in daemon.lines if "restore finished:" in line)
    assert "7 done" in restored, restored


def test_check_shows_where_an_alias_leads(house: SimHouse, config: Path, tmp_path: Path) -> None:
    checked = Loadshed(["check", "--config", str(config)], tmp_path)
    assert checked.process.wait(60) == 0, checked.output
    checked.stop()
    nas = house.hosts["NAS"]
    (row,) = (line for line in checked.lines if line.split()[:2] == ["NAS", "linux"])
    assert f"nas → {nas.address}" in row


def test_a_name_only_ssh_can_reach_still_gets_its_shutdown_and_comes_back(
    house: SimHouse, start: Start, tmp_path: Path
) -> None:
    """The Workstation's name resolves only for ssh (a ProxyCommand): the probe cannot see it,
    so it is sent its shutdown on ssh's word, and woken after the outage."""
    workstation = house.hosts["Workstation"]
    key_type, key = workstation.known_hosts.read_text().split()[1:3]
    (tmp_path / "ws_known_hosts").write_text(f"[ws.invalid]:{workstation.port} {key_type} {key}\n")
    house.ssh_config.write_text(
        "Host workstation\n"  # ssh takes the first value it meets: these win
        "    HostName ws.invalid\n"
        f"    ProxyCommand {sys.executable} -m loadshed.sim.relay 127.0.0.1 {workstation.port}\n"
        f"    UserKnownHostsFile {tmp_path / 'ws_known_hosts'}\n\n" + house.ssh_config.read_text()
    )
    computers_txt(house, tmp_path, Workstation="down_wait=3")
    daemon = start()
    daemon.wait_for_line("ready:")
    house.cut_grid()
    wait_until("its shutdown", lambda: workstation.shutdowns() != [])
    daemon.wait_for_line("Workstation: off (cannot see it go down")
    wait_until("it is off", lambda: workstation.is_off, COMPUTER_WAIT_S)
    assert "Workstation" in shed_names(tmp_path)

    house.restore_grid()
    wait_until("the Workstation woken", lambda: workstation.is_up, COMPUTER_WAIT_S)
    wait_until("state empty", lambda: shed_names(tmp_path) == set(), COMPUTER_WAIT_S)


def test_a_shutdown_that_fails_fast_keeps_the_plug_on_and_says_why(
    house: SimHouse, start: Start, tmp_path: Path
) -> None:
    nas = house.hosts["NAS"]
    nas.sudo_needs_password = True
    daemon = start()
    daemon.wait_for_line("ready:")
    house.cut_grid()
    daemon.wait_for_line("NAS: could not switch off: sudo needs a password")
    wait_until("every other plug shed", lambda: not any(house.is_on(n) for n in SHEDDABLE))
    daemon.wait_for_line("NAS plug: kept on: NAS has not shut down")
    assert house.is_on("NAS plug") and nas.is_up and house.hard_cuts == []

    house.restore_grid()
    wait_until("the rest back", lambda: all(house.is_on(n) for n in SHEDDABLE))
    wait_until("state empty", lambda: shed_names(tmp_path) == set(), COMPUTER_WAIT_S)
    assert nas.is_up and house.is_on("NAS plug") and house.hard_cuts == []


def test_down_wait_bounds_the_wait_for_a_slow_computer(
    house: SimHouse, start: Start, tmp_path: Path
) -> None:
    nas = house.hosts["NAS"]
    nas.refuse_s = 600  # its RAID takes longer than the owner is willing to wait
    computers_txt(house, tmp_path, NAS="down_wait=3")
    daemon = start()
    daemon.wait_for_line("ready:")
    house.cut_grid()
    daemon.wait_for_line("NAS: off (still answering after 3 s: cutting its plug anyway)")
    # what down_wait=3 asked for: the house sees the cut on its next tick
    wait_until("its plug cut under it", lambda: house.hard_cuts == ["NAS"])


def test_grid_lost_again_while_a_computer_boots_shuts_it_down_first(
    house: SimHouse, start: Start, tmp_path: Path
) -> None:
    nas = house.hosts["NAS"]
    house.boot_s = 6.0
    daemon = start()
    daemon.wait_for_line("ready:")
    house.cut_grid()
    wait_until("the NAS plug cut", lambda: not house.is_on("NAS plug"), COMPUTER_WAIT_S)
    house.restore_grid()
    wait_until("the NAS plug back on", lambda: house.is_on("NAS plug"), COMPUTER_WAIT_S)
    assert nas.is_off  # booting
    house.cut_grid()  # a storm: the grid drops again while the NAS boots
    wait_until("the NAS up, then down again", lambda: len(nas.shutdowns()) == 2, COMPUTER_WAIT_S)
    wait_until("the NAS plug cut again", lambda: not house.is_on("NAS plug"), COMPUTER_WAIT_S)
    assert house.hard_cuts == [], "the NAS plug was cut while the NAS booted or shut down"
    assert nas.power is HostPower.OFF


@pytest.mark.parametrize("kill", [False, True], ids=["running", "killed-and-restarted"])
def test_grid_back_while_the_nas_shuts_down_brings_it_back(
    house: SimHouse, start: Start, tmp_path: Path, kill: bool
) -> None:
    """The grid returns while the NAS flushes its disks: its plug was never cut, so its BIOS
    would never power it on. It must be seen down, its plug cycled, and it must come back —
    also when loadshed is killed -9 then, and again in the middle of the plug's pause."""
    nas = house.hosts["NAS"]
    nas.refuse_s = 4.0
    daemon = start()
    daemon.wait_for_line("ready:")
    house.cut_grid()
    wait_until("the NAS shutting down", lambda: nas.power is HostPower.STOPPING)
    house.restore_grid()
    if kill:
        daemon.stop(signal.SIGKILL)
        assert house.is_on("NAS plug")
        daemon = start()
    daemon.wait_for_line("NAS plug never went off", COMPUTER_WAIT_S)
    wait_until("the plug cycled off", lambda: not house.is_on("NAS plug"), COMPUTER_WAIT_S)
    assert house.hard_cuts == []
    if kill:
        daemon.stop(signal.SIGKILL)  # in the middle of the plug's pause
        assert not house.is_on("NAS plug")
        daemon = start()
    wait_until("the NAS back", lambda: nas.is_up, COMPUTER_WAIT_S + RESTORE_S + POLL_S)
    (cycle,) = [off for plug, off in house.plug_cycles if plug == "NAS plug"]
    assert cycle >= PLUG_CYCLE_S - 0.5  # the BIOS saw a real power loss (0.5: sim's tick)
    wait_until("state empty", lambda: shed_names(tmp_path) == set(), COMPUTER_WAIT_S)
    assert house.hard_cuts == []


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
    assert "NAS" in shed_names(tmp_path)  # the intent was written first

    nas.hang = False
    again = start()
    again.wait_for_line("loadshed had switched off")
    wait_until("the NAS off", lambda: nas.is_off, COMPUTER_WAIT_S)
    wait_until("its plug cut", lambda: not house.is_on("NAS plug"), COMPUTER_WAIT_S)
    assert house.hard_cuts == []
    house.restore_grid()
    wait_until("the NAS back", lambda: nas.is_up, COMPUTER_WAIT_S + RESTORE_S + POLL_S)
    wait_until("everything back", lambda: all(house.is_on(n) for n in SHEDDABLE))
    wait_until("state empty", lambda: shed_names(tmp_path) == set(), COMPUTER_WAIT_S)
    assert not house.is_on("Desk lamp")
