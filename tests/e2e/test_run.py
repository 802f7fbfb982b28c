"""`loadshed run --no-ui` as a subprocess against the simulated house: shed, restore, survive."""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from loadshed.sim.base import Fault
from loadshed.sim.house import SimHouse
from tests.e2e.conftest import ESSENTIAL, RESTORE_S, SHEDDABLE, TIERS, Loadshed, wait_until

pytestmark = pytest.mark.timeout(120)

Start = Callable[..., Loadshed]


def all_off(house: SimHouse, names: tuple[str, ...]) -> Callable[[], bool]:
    return lambda: not any(house.is_on(n) for n in names)


def all_on(house: SimHouse, names: tuple[str, ...]) -> Callable[[], bool]:
    return lambda: all(house.is_on(n) for n in names)


def state(tmp_path: Path) -> dict[str, object]:
    doc: dict[str, object] = json.loads((tmp_path / "state" / "state.json").read_text())
    return doc


def all_confirmed(tmp_path: Path) -> bool:
    """Every entry of state.json was seen to go off."""
    shed = state(tmp_path)["shed"]
    assert isinstance(shed, dict)
    return all(entry["confirmed"] for entry in shed.values())


def test_outage_sheds_then_grid_back_restores_exactly_what_was_shed(
    house: SimHouse, start: Start, tmp_path: Path
) -> None:
    daemon = start()
    daemon.wait_for_line("ready: 9 devices (2 essential), on grid")
    house.cut_grid()
    wait_until("every sheddable plug off", all_off(house, SHEDDABLE))
    assert all_on(house, ESSENTIAL + TIERS)()  # essentials and tiers above their % untouched
    assert not house.is_on("Desk lamp")  # it was off before
    shed = state(tmp_path)["shed"]
    assert isinstance(shed, dict)
    wait_until(
        "every shed confirmed in state.json",
        lambda: all_confirmed(tmp_path),
    )
    assert set(shed) == set(SHEDDABLE)  # strip outlets one by one; the lamp never recorded
    daemon.wait_for_line("shed finished: 4 done")

    house.restore_grid()
    wait_until("every shed plug back on", all_on(house, SHEDDABLE))
    assert daemon.saw(f"grid back: restoring 4 devices in {RESTORE_S:.0f} s if it stays")
    assert not house.is_on("Desk lamp"), "a plug off before the outage was switched on"
    wait_until("state.json empty", lambda: state(tmp_path)["shed"] == {})
    daemon.wait_for_line("restore finished: 4 done")
    assert daemon.stop() == 0
    events = (tmp_path / "state" / "events.log").read_text()
    assert "grid lost (SystemIslandedActive)" in events and "grid back" in events
    assert "Space heater: off" in events and "Space heater: on" in events
    assert house.password not in daemon.output + events


def test_flicker_shorter_than_the_restore_delay_restores_nothing(
    house: SimHouse, start: Start
) -> None:
    daemon = start()
    daemon.wait_for_line("ready:")
    house.cut_grid()
    wait_until("shed", all_off(house, SHEDDABLE))
    house.restore_grid()
    daemon.wait_for_line("grid back")
    house.cut_grid()  # before RESTORE_AFTER_SECONDS has passed
    daemon.wait_for_line("grid lost", timeout_s=5)
    wait_until("a second 'grid lost'", lambda: daemon.count("grid lost") == 2)
    house.restore_grid()
    wait_until("a second 'grid back'", lambda: daemon.count("grid back") == 2)
    assert not daemon.saw("switching on"), "restored before the grid was back long enough"
    assert all_off(house, SHEDDABLE)()
    wait_until("restored after a stable grid", all_on(house, SHEDDABLE), RESTORE_S + 10)


@pytest.mark.parametrize("fault", [Fault.DOWN, Fault.HUNG])
def test_powerwall_down_or_hung_switches_nothing_and_keeps_running(
    house: SimHouse, start: Start, fault: Fault
) -> None:
    daemon = start()
    daemon.wait_for_line("ready:")
    house.set_fault("Powerwall", fault)
    house.cut_grid()  # the house is off-grid, but loadshed cannot know it
    daemon.wait_for_line("Powerwall unreadable")
    assert all_on(house, SHEDDABLE)(), "switched on an unknown grid"
    assert daemon.process.poll() is None
    house.set_fault("Powerwall", Fault.NONE)
    daemon.wait_for_line("Powerwall readable again")
    wait_until("shed once readable", all_off(house, SHEDDABLE))


def test_hung_kasa_and_dead_tuya_delay_nobody_else(house: SimHouse, start: Start) -> None:
    daemon = start()
    daemon.wait_for_line("ready:")
    house.set_fault("TV", Fault.HUNG)  # the KLAP plug
    house.set_fault("Space heater", Fault.DOWN)  # a Tuya plug
    house.cut_grid()
    wait_until("the healthy plugs off", all_off(house, ("Monitor", "Printer")))
    daemon.wait_for_line("TV: could not switch off")
    daemon.wait_for_line("Space heater: could not switch off")
    assert house.is_on("TV") and house.is_on("Space heater")
    house.set_fault("TV", Fault.NONE)
    house.set_fault("Space heater", Fault.NONE)
    wait_until("the failed plugs retried and off", all_off(house, ("TV", "Space heater")), 90)


def test_kill_9_mid_outage_then_restart_restores_exactly(
    house: SimHouse, start: Start, tmp_path: Path
) -> None:
    daemon = start()
    daemon.wait_for_line("ready:")
    house.cut_grid()
    wait_until("shed", all_off(house, SHEDDABLE))
    wait_until(
        "confirmed",
        lambda: all_confirmed(tmp_path),
    )
    daemon.stop(signal.SIGKILL)
    house.restore_grid()
    again = start()
    again.wait_for_line("loadshed had switched off Monitor, Printer, Space heater, TV")
    wait_until("restored after restart", all_on(house, SHEDDABLE))
    assert not house.is_on("Desk lamp")
    wait_until("state emptied", lambda: state(tmp_path)["shed"] == {})


def polls_pass(house: SimHouse, count: int) -> None:
    """Wait until loadshed has read the grid status count more times (a witness for 'nothing')."""
    requests = house.powerwall.requests
    seen = requests["system_status/grid_status"]
    wait_until(f"{count} more polls", lambda: requests["system_status/grid_status"] >= seen + count)


def test_battery_tiers_shed_and_come_back_with_hysteresis(house: SimHouse, start: Start) -> None:
    daemon = start()
    daemon.wait_for_line("ready:")
    house.cut_grid()
    wait_until("shed at outage", all_off(house, SHEDDABLE))
    assert house.is_on("Dehumidifier") and house.is_on("Freezer")
    house.set_battery(45)
    wait_until("Dehumidifier shed below 50 %", lambda: not house.is_on("Dehumidifier"))
    daemon.wait_for_line("switching off Dehumidifier (battery 4")  # 45 %, or a little less
    assert daemon.saw("% < 50 %)")
    assert house.is_on("Freezer")
    house.set_battery(29)
    wait_until("Freezer shed below 30 %", lambda: not house.is_on("Freezer"))
    house.set_battery(41)  # above 30 + 10: the Freezer comes back, the outage goes on
    wait_until("Freezer back above 40 %", lambda: house.is_on("Freezer"))
    daemon.wait_for_line("switching on Freezer (battery 4")  # 41 %, or a little less
    assert daemon.saw("% > 40 %)")
    house.set_battery(55)  # above 50 but not above 60: the Dehumidifier stays off
    polls_pass(house, 3)
    assert not house.is_on("Dehumidifier")
    house.set_battery(61)
    wait_until("Dehumidifier back above 60 %", lambda: house.is_on("Dehumidifier"))
    assert all_off(house, SHEDDABLE)()  # the outage goes on for the others


def test_dry_run_switches_nothing_and_writes_no_state(
    house: SimHouse, start: Start, tmp_path: Path
) -> None:
    daemon = start("--dry-run")
    daemon.wait_for_line("ready:")
    house.cut_grid()
    daemon.wait_for_line("would switch off Space heater (off-grid)")
    assert all_on(house, SHEDDABLE)()
    assert not (tmp_path / "state").exists()
    assert daemon.stop() == 0


def test_shed_and_restore_one_shot(house: SimHouse, start: Start) -> None:
    shed = start(verb="shed")
    assert shed.process.wait(60) == 0, shed.output
    assert all_off(house, (*SHEDDABLE, *TIERS))()
    assert all_on(house, ESSENTIAL)()
    assert "Router: essential, left on" in shed.output
    assert "Desk lamp: already off" in shed.output
    restore = start(verb="restore")
    assert restore.process.wait(60) == 0, restore.output
    assert all_on(house, (*SHEDDABLE, *TIERS))()
    assert not house.is_on("Desk lamp")
    assert "Space heater: on" in restore.output


def test_shed_with_a_dead_plug_is_exit_1_naming_it(house: SimHouse, start: Start) -> None:
    house.set_fault("Space heater", Fault.DOWN)
    shed = start(verb="shed")
    assert shed.process.wait(60) == 1
    assert "Space heater: unreachable: connection refused" in shed.output


def test_a_second_loadshed_on_the_same_state_dir_is_refused(start: Start, tmp_path: Path) -> None:
    first = start()
    first.wait_for_line("ready:")
    second = start()  # finds the house's daemon and names it
    assert second.process.wait(30) == 1
    assert f"another loadshed (pid {first.process.pid}" in second.output
    elsewhere = tmp_path / "run2"  # not finding the house's daemon, it meets the dir's lock
    elsewhere.mkdir(mode=0o700)
    third = start(env={"XDG_RUNTIME_DIR": str(elsewhere)})
    assert third.process.wait(30) == 1
    assert "another loadshed is running" in third.output


def test_corrupt_state_is_kept_aside_and_reported(start: Start, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700)
    (state_dir / "state.json").write_text("{not json")
    daemon = start()
    daemon.wait_for_line("could not be read")
    assert [p.name.startswith("state.json.corrupt-") for p in state_dir.iterdir()].count(True) == 1
    daemon.wait_for_line("ready:")


def test_a_damaged_state_costs_only_its_bad_entry_and_the_owner_is_told(
    house: SimHouse, start: Start, tmp_path: Path
) -> None:
    """One entry of state.json is damaged (a kind no loadshed knows): the TV it recorded is
    still restored when the grid is back, and the owner hears which devices to check."""
    house.set_fault("TV", Fault.NONE)
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700)
    entry = {"address": "x", "reason": "off-grid", "at": 1.0, "prior": "on", "confirmed": True}
    doc = {
        "version": 1,
        "hold": False,
        "paused": False,
        "pins": {},
        "shed": {"TV": {**entry, "kind": "kasa"}, "Heater": {**entry, "kind": "plug"}},
    }
    (state_dir / "state.json").write_text(json.dumps(doc))
    house.cut_grid()
    daemon = start()
    daemon.wait_for_line("It recorded Heater, TV as switched off")
    daemon.wait_for_line("loadshed had switched off TV")
    wait_until("the outage shed", all_off(house, SHEDDABLE))
    house.restore_grid()
    wait_until("the TV back with the rest", all_on(house, SHEDDABLE))
    assert [p.name.startswith("state.json.corrupt-") for p in state_dir.iterdir()].count(True) == 1


def test_a_state_from_a_newer_loadshed_refuses_to_start(start: Start, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700)
    (state_dir / "state.json").write_text('{"version": 99, "shed": {"TV": {}}}')
    daemon = start()
    assert daemon.process.wait(30) == 2, daemon.output
    assert "written by a newer loadshed (version 99; this one reads 1)" in daemon.output
    assert (state_dir / "state.json").read_text().startswith('{"version": 99')


def test_sigterm_stops_cleanly_and_the_state_dir_is_private(
    start: Start, tmp_path: Path, house: SimHouse
) -> None:
    daemon = start()
    daemon.wait_for_line("ready:")
    house.cut_grid()
    wait_until("shed", all_off(house, SHEDDABLE))
    assert daemon.stop(signal.SIGINT) == 0
    assert daemon.saw("stopping with 4 devices switched off (Monitor, Printer, Space heater, TV)")
    assert daemon.saw("the next `loadshed run` restores them once the grid is back")
    state_dir = tmp_path / "state"
    assert state_dir.stat().st_mode & 0o777 == 0o700
    assert (state_dir / "state.json").stat().st_mode & 0o777 == 0o600
    assert set(json.loads((state_dir / "state.json").read_text())["shed"]) == set(SHEDDABLE)
    assert sorted(p.name for p in state_dir.iterdir()) == ["events.log", "state.json", "trust.json"]
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in state_dir.iterdir())


def test_slow_is_not_absent_and_an_outage_at_start_waits_for_nobody(
    house: SimHouse, start: Start
) -> None:
    """A power strip that answers in 2 s is a working strip: it is reached and shed. And the
    house is already off grid when loadshed starts: the quick plugs are shed at once, not after
    the slow strip has been reached."""
    house.set_fault("Monitor", Fault.SLOW, slow_s=2.0)  # the strip: Monitor, Printer, Desk lamp
    house.cut_grid()
    daemon = start()
    daemon.wait_for_line("ready:")
    wait_until("the quick plugs off", lambda: not house.is_on("Space heater"))
    assert house.is_on("Monitor"), "the quick plugs waited for the slow strip"
    assert daemon.saw("still being reached")
    wait_until("the slow strip's outlets off too", all_off(house, ("Monitor", "Printer")), 60)
    assert not daemon.saw("Monitor: could not switch off")


def test_a_name_clash_never_moves_a_rule_and_a_typo_is_said_at_start(
    house: SimHouse, start: Start, config: Path, tmp_path: Path
) -> None:
    """A computer named like the essential Router plug: the plug keeps its rule (it stays on
    through the outage), and the owner hears of the clash; a SHED_BELOW typo is said too."""
    (tmp_path / "computers.txt").write_text("linux nas.invalid name=Router mac=02:00:00:00:00:01\n")
    rules = {**house.shed_below, "Freezr": 30}
    config.write_text(config.read_text() + f"SHED_BELOW = {rules!r}\n")
    daemon = start()
    daemon.wait_for_line("two devices are named 'Router'")
    daemon.wait_for_line("SHED_BELOW names 'Freezr', but no device is called that")
    house.cut_grid()
    wait_until("the outage shed", all_off(house, SHEDDABLE))
    assert house.is_on("Router")
    assert daemon.saw("ready: 10 devices (3 essential)")  # the plug and the computer alike


def test_a_state_dir_deleted_under_the_daemon_is_made_again_and_still_locked(
    house: SimHouse, start: Start, tmp_path: Path
) -> None:
    daemon = start()
    daemon.wait_for_line("ready:")
    state_dir = tmp_path / "state"
    shutil.rmtree(state_dir)  # a clean-up script, an owner tidying up
    house.cut_grid()
    wait_until("shed", all_off(house, SHEDDABLE))
    wait_until("state.json written anew", (state_dir / "state.json").exists)
    assert state_dir.stat().st_mode & 0o777 == 0o700
    assert set(json.loads((state_dir / "state.json").read_text())["shed"]) == set(SHEDDABLE)
    elsewhere = tmp_path / "run2"  # not finding the house's daemon, it meets the dir's lock
    elsewhere.mkdir(mode=0o700)
    second = start(env={"XDG_RUNTIME_DIR": str(elsewhere)})
    assert second.process.wait(30) == 1
    assert "another loadshed is running" in second.output


def test_an_outbox_that_cannot_be_used_never_stops_the_shedding(
    house: SimHouse, start: Start, config: Path, tmp_path: Path
) -> None:
    config.write_text(
        config.read_text() + "MAILNOTIF = 'owner@example.com'\nSMTP_HOST = '127.0.0.1'\n"
        "SMTP_PORT = 9\nSMTP_STARTTLS = False\n"
    )
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700)
    (state_dir / "outbox").write_text("a file where the outbox dir should be")
    daemon = start()
    daemon.wait_for_line("running without alerts")
    daemon.wait_for_line("ready:")
    house.cut_grid()
    wait_until("shed all the same", all_off(house, SHEDDABLE))


def test_an_ipv6_powerwall_address_is_watched(house: SimHouse, start: Start, config: Path) -> None:
    """PWIPNAME in IPv6 form. The address is 127.0.0.1 written as IPv6 (IPv4-mapped), so the
    gateway is reached over an IPv6 socket and the test still never leaves 127.0.0.0/8."""
    port = house.powerwall.address.rpartition(":")[2]
    address = f"[::ffff:127.0.0.1]:{port}"
    text = config.read_text().replace(repr(house.powerwall.address), repr(address))
    config.write_text(text)
    daemon = start()
    house.cut_grid()
    wait_until("the outage shed", all_off(house, SHEDDABLE))
    assert daemon.saw("[::ffff:127.0.0.1]")
    house.restore_grid()
    wait_until("the grid-back restore", all_on(house, SHEDDABLE))
