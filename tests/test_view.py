"""The screen as a pure function: each state of the house rendered, and what each key does."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadshed.engine import Command, CommandKind, DeviceRow, Snapshot, SourceRow
from loadshed.model import Grid, GridReading, Kind, Pin, Power, Status, Verb
from loadshed.view import (
    KEYS,
    MIN_HEIGHT,
    MIN_WIDTH,
    POWERWALL_2_WH,
    Confirm,
    Demo,
    KeyResult,
    Line,
    Span,
    Style,
    UiState,
    ascii_only,
    duration,
    estimate,
    follow,
    handle_key,
    render,
    segments,
    wants_colour,
)

NOW = time.mktime((2024, 1, 15, 14, 30, 0, 0, 0, -1))  # 14:30 local time
MIN = 60.0


def row(name: str, rule: int = 100, power: Power | None = Power.ON, **kw: object) -> DeviceRow:
    kind = kw.pop("kind", Kind.KASA)
    status = kw.pop("status", Status.OK)
    return DeviceRow(name, kind, f"192.0.2.{len(name)}:9999", rule, power, status, **kw)  # type: ignore[arg-type]


HOUSE = (
    row("Router", 0),
    row("Freezer", 30, watts=150.0),
    row("Space heater", kind=Kind.TUYA, watts=1500.0),
    row("TV"),
    row("Desk lamp", power=Power.OFF),
    row("Aquarium", 0),
)


def snapshot(grid: Grid = Grid.ON, **kw: object) -> Snapshot:
    reading = kw.pop("reading", None) or GridReading(
        grid,
        "SystemGridConnected" if grid is Grid.ON else "SystemIslandedActive",
        54.0,
        2700.0,
        0.0,
    )
    defaults: dict[str, object] = {
        "taken_at": NOW,
        "reading": reading,
        "devices": HOUSE,
        "grid_since": NOW - 30 * MIN,
        "started": True,
        "events": ("14:00 ready: 6 devices (2 essential), on grid, battery 54 %",),
    }
    defaults.update(kw)
    return Snapshot(**defaults)  # type: ignore[arg-type]


def off_grid(**kw: object) -> Snapshot:
    shed = {"Space heater", "TV"}
    devices = tuple(
        replace(r, power=Power.OFF, shed_reason="off-grid", watts=None) if r.name in shed else r
        for r in HOUSE
    )
    defaults: dict[str, object] = {
        "devices": devices,
        "grid_since": NOW - 12 * MIN,
        "outage_since": NOW - 12 * MIN,
        "events": ("14:18 grid lost (SystemIslandedActive), battery 60 %", "14:18 TV: off"),
    }
    defaults.update(kw)
    return snapshot(Grid.OFF, **defaults)


def text(lines: list[Line]) -> str:
    return "\n".join(line.text for line in lines)


def line_with(lines: list[Line], needle: str) -> str:
    found = [line.text for line in lines if needle in line.text]
    assert found, f"no line with {needle!r} in:\n{text(lines)}"
    return found[0]


def assert_fits(lines: list[Line], width: int, height: int) -> None:
    assert len(lines) == height
    for line in lines:
        assert len(line.text) <= width, line.text
        for span in line.spans:
            assert 0 <= span.start < span.end <= len(line.text), (span, line.text)


# --- each state of the house --------------------------------------------------------------------


def test_on_grid_says_so_in_words_and_colour() -> None:
    lines = render(snapshot(), UiState(), 100, 30)
    assert_fits(lines, 100, 30)
    grid = next(line for line in lines if "on grid" in line.text)
    assert grid.text.startswith("● on grid since 14:00")
    assert any(s.style is Style.OK for s in grid.spans)
    assert "battery [███████████░░░░░░░░░]  54 %   load 2.7 kW   solar 0.0 kW" in text(lines)
    assert "  on battery ≈ 2 h 42 min at 2.7 kW" in text(lines)
    assert "nothing shed" in text(lines)
    assert "SHED" not in text(lines)
    assert line_with(lines, "Space heater").split()[2:6] == [
        "tuya",
        "192.0.2.12:9999",
        "on,",
        "1500",
    ]
    assert line_with(lines, "Router").rstrip().endswith("essential")
    assert "shed below 30 %" in line_with(lines, "Freezer")
    assert lines[-1].text.startswith(" s shed  r restore")


def test_off_grid_shows_the_outage_what_is_shed_and_why() -> None:
    lines = render(off_grid(), UiState(), 100, 30)
    assert_fits(lines, 100, 30)
    grid = line_with(lines, "OFF GRID")
    assert grid == "● OFF GRID — on battery for 12 min, since 14:18"
    assert next(line for line in lines if "OFF GRID" in line.text).spans[0].style is Style.BAD
    heater = line_with(lines, "Space heater")
    assert " off " in heater and heater.rstrip().endswith("SHED off-grid")
    assert "SHED" not in line_with(lines, "Desk lamp")  # off before the outage: not ours
    assert "2 switched off by loadshed" in text(lines)
    assert "time left ≈ 2 h 42 min at 2.7 kW" in text(lines)
    assert "14:18 TV: off" in text(lines)


def test_a_shed_device_says_shed_in_words_not_only_in_colour() -> None:
    lines = render(off_grid(), UiState(), 100, 30)
    heater = next(line for line in lines if "Space heater" in line.text)
    shed = [s for s in heater.spans if s.style is Style.SHED]
    assert [heater.text[s.start : s.end] for s in shed] == ["SHED off-grid"]


@pytest.mark.parametrize(
    ("snap", "expected"),
    [
        pytest.param(
            snapshot(restore_at=NOW + 42, outage_since=NOW - 40 * MIN),
            "restoring in 42 s",
            id="restore-countdown",
        ),
        pytest.param(
            off_grid(shed_at=NOW + 11.2), "shedding in 12 s", id="outage-confirm-rounds-up"
        ),
        pytest.param(snapshot(hold=True), "held off by a forced shed: r restores", id="hold"),
        pytest.param(
            off_grid(paused=True),
            "shedding paused by a forced restore until the grid is back",
            id="paused",
        ),
        pytest.param(snapshot(dry_run=True), "DRY RUN: nothing is switched", id="dry-run"),
        pytest.param(snapshot(started=False), "starting: reading the Powerwall", id="starting"),
    ],
)
def test_timers_and_modes_are_said(snap: Snapshot, expected: str) -> None:
    lines = render(snap, UiState(), 100, 30)
    assert_fits(lines, 100, 30)
    assert expected in text(lines)


def test_the_countdown_follows_now_not_the_snapshot() -> None:
    snap = snapshot(restore_at=NOW + 42)
    assert "restoring in 30 s" in text(render(snap, UiState(), 100, 30, now=NOW + 12))


def test_unknown_says_since_when_and_why_and_that_nothing_is_done() -> None:
    reading = GridReading(Grid.UNKNOWN, detail="no answer in 5 s", status=Status.UNREACHABLE)
    lines = render(snapshot(reading=reading, unknown_since=NOW - 5 * MIN), UiState(), 100, 30)
    assert_fits(lines, 100, 30)
    grid = line_with(lines, "unknown")
    assert grid.startswith("? unknown: Powerwall unreachable since 14:25 — no answer in 5 s")
    assert "nothing is shed or restored while the grid is unknown" in text(lines)
    assert "battery unknown" in text(lines)
    assert "unknown (no battery or load reading)" in text(lines)


def test_an_unknown_grid_state_is_shown_raw() -> None:
    reading = GridReading(Grid.UNKNOWN, "SystemSomethingNew", 70.0, 900.0, 0.0)
    lines = render(snapshot(reading=reading, unknown_since=NOW - MIN), UiState(), 100, 30)
    assert "unknown: the Powerwall says SystemSomethingNew since 14:29" in text(lines)


def test_a_refusing_powerwall_is_not_called_unreachable() -> None:
    reading = GridReading(Grid.UNKNOWN, detail="wrong password", status=Status.FAILED)
    lines = render(snapshot(reading=reading, unknown_since=NOW), UiState(), 100, 30)
    assert "unknown: Powerwall refused since 14:30 — wrong password" in text(lines)


def test_failed_and_unreachable_devices_say_why() -> None:
    devices = (
        row("Heater", status=Status.FAILED, detail="wrong local key", kind=Kind.TUYA),
        row("TV", status=Status.UNREACHABLE, detail="no answer in 3 s"),
        row("NAS", kind=Kind.LINUX, busy=Verb.SHED),
        row("iMac", kind=Kind.MACOS, power=Power.OFF, busy=Verb.RESTORE),
        row("Plug", busy=Verb.SHED),
        row("New", power=None, status=None),
    )
    lines = render(snapshot(devices=devices), UiState(), 100, 30)
    assert_fits(lines, 100, 30)
    assert "failed: wrong local key" in line_with(lines, "Heater")
    assert "unreachable: no answer in 3 s" in line_with(lines, "TV ")
    assert "shutting down" in line_with(lines, "NAS")
    assert "waking" in line_with(lines, "iMac")
    assert "switching off" in line_with(lines, "Plug")
    assert "not read yet" in line_with(lines, "New")
    failed = next(line for line in lines if "Heater" in line.text)
    assert any(s.style is Style.BAD for s in failed.spans)


def test_the_selected_device_gets_a_detail_line_with_what_its_cells_cut() -> None:
    long = "no answer in 3 s; the plug may be off its Wi-Fi or on another subnet"
    devices = (row("Router", 0), row("Heater", status=Status.UNREACHABLE, detail=long))
    lines = render(snapshot(devices=devices), UiState(selected="Heater"), 200, 30)
    assert line_with(lines, "▸ Heater:").startswith(
        f"  ▸ Heater: kasa at 192.0.2.6:9999 · unreachable: {long}"
    )
    selected = next(line for line in lines if line.text.startswith("▸ Heater"))
    assert selected.style is Style.SELECTED and len(selected.text) == 200


def test_pinned_devices_show_their_pin() -> None:
    devices = (row("Router", 0, pin=Pin.OFF), row("Heater", pin=Pin.ON), row("TV"))
    lines = render(snapshot(devices=devices), UiState(selected="Heater"), 100, 30)
    assert "pin: keep off" in line_with(lines, "Router")
    assert "pin: keep on" in line_with(lines, "Heater ")
    assert "shed at outage" in line_with(lines, "TV")
    assert "pinned: keep on" in line_with(lines, "▸ Heater:")


# --- sizes -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height"), [(80, 24), (100, 30), (MIN_WIDTH, MIN_HEIGHT)])
def test_every_size_from_the_least_up_fits_and_shows_the_essentials(
    width: int, height: int
) -> None:
    snap = off_grid(restore_at=None, shed_at=None)
    lines = render(snap, UiState(selected="TV"), width, height)
    assert_fits(lines, width, height)
    screen = text(lines)
    assert "OFF GRID" in screen and "56 %" not in screen and "54 %" in screen
    assert "SHED off-grid" in line_with(lines, "▸ TV")
    assert lines[-1].text.startswith(" s shed")
    assert "q quit" in lines[-1].text


def test_80_columns_keep_every_device_and_its_shed_mark() -> None:
    lines = render(off_grid(), UiState(), 80, 24)
    for device in HOUSE:
        assert device.name in text(lines)
    assert line_with(lines, "Space heater").rstrip().endswith("SHED off-grid")


def test_too_many_devices_scroll_to_keep_the_selection_in_view() -> None:
    devices = tuple(row(f"Plug {n:02d}") for n in range(30))
    lines = render(snapshot(devices=devices), UiState(selected="Plug 25"), 80, 24)
    assert_fits(lines, 80, 24)
    assert "▸ Plug 25" in text(lines)
    assert "Plug 00" not in text(lines)
    assert "devices " in line_with(lines, "─ events")


@pytest.mark.parametrize(("width", "height"), [(60, 20), (80, 10), (20, 3)])
def test_too_small_says_so_and_still_says_the_grid(width: int, height: int) -> None:
    lines = render(off_grid(), UiState(), width, height)
    assert len(lines) <= height
    assert all(len(line.text) <= width for line in lines)
    if width >= 60:
        assert lines[0].text.startswith("loadshed: OFF GRID")
        assert f"The window is {width}x{height}; the screen needs 70x14." in text(lines)


def test_too_small_still_shows_a_question_waiting() -> None:
    lines = render(off_grid(), UiState(confirm=Confirm.QUIT), 60, 20)
    assert "Quit?" in lines[-1].text and lines[-1].style is Style.PROMPT


# --- colour, glyphs ------------------------------------------------------------------------------


def test_no_color_turns_colour_off_but_keeps_bold_and_reverse() -> None:
    assert not wants_colour({"NO_COLOR": "1"})
    assert wants_colour({"NO_COLOR": ""})  # set but empty: colour (no-color.org)
    assert wants_colour({})
    lines = render(off_grid(), UiState(selected="TV"), 100, 30)
    for line in lines:
        for _, _, look in segments(line, colour=False):
            assert look.colour is None
    looks = {
        line.text[x : x + len(part)]: look
        for line in lines
        for x, part, look in segments(line, colour=False)
    }
    assert looks["● OFF GRID — on battery for 12 min, since 14:18"].bold
    assert any(look.reverse for part, look in looks.items() if part.startswith("▸ TV"))
    coloured = {part: look for line in lines for _, part, look in segments(line, colour=True)}
    assert coloured["● OFF GRID — on battery for 12 min, since 14:18"].colour == "red"


def test_segments_lay_spans_over_the_line() -> None:
    line = Line("ab SHED cd", Style.SELECTED, (Span(3, 7, Style.SHED),))
    runs = segments(line, colour=True)
    assert [(x, part) for x, part, _ in runs] == [(0, "ab "), (3, "SHED"), (7, " cd")]
    assert runs[1][2].colour == "magenta" and runs[1][2].reverse and runs[1][2].bold
    assert not runs[0][2].bold and runs[0][2].reverse


def test_ascii_terminals_get_ascii_only() -> None:
    lines = render(off_grid(), UiState(unicode=False, demo=Demo(60, 18.5)), 100, 30)
    assert all(line.text.isascii() for line in lines)
    assert "* OFF GRID - on battery" in text(lines)
    assert "[###########.........]" in text(lines)
    assert ascii_only("ANSI_X3.4-1968") and not ascii_only("UTF-8") and not ascii_only("utf8")


def test_render_is_pure() -> None:
    snap, ui = off_grid(restore_at=NOW + 42), UiState(selected="TV", message="hello")
    assert render(snap, ui, 100, 30) == render(snap, ui, 100, 30)


# --- time left -----------------------------------------------------------------------------


def test_time_left_is_charge_over_drain_and_counts_what_a_shed_would_save() -> None:
    reading = GridReading(Grid.OFF, "SystemIslandedActive", 50.0, 2700.0, 0.0)
    devices = (row("Router", 0, watts=15.0), row("Heater", watts=1350.0), row("Lamp"))
    guess = estimate(snapshot(reading=reading, devices=devices), 13_500.0)
    assert guess is not None
    assert guess.hours == pytest.approx(2.5)
    assert guess.shed_hours == pytest.approx(5.0)  # 2700 - 1350 W; the router is essential
    assert (guess.sheddable, guess.unmetered) == (2, 1)  # the lamp's draw is not known


def test_solar_reduces_the_drain_and_covering_the_load_is_not_draining() -> None:
    cloudy = GridReading(Grid.OFF, "SystemIslandedActive", 50.0, 2700.0, 1350.0)
    guess = estimate(snapshot(reading=cloudy, devices=()), 13_500.0)
    assert guess is not None and guess.hours == pytest.approx(5.0) and guess.shed_hours is None
    sunny = replace(cloudy, solar_w=3000.0)
    lines = render(snapshot(reading=sunny), UiState(), 100, 30)
    assert "as long as the sun lasts: solar covers the load" in text(lines)


def test_time_left_says_its_assumption_unless_the_capacity_is_known() -> None:
    assumed = render(off_grid(), UiState(), 100, 30)
    assert f"({POWERWALL_2_WH / 1000:g} kWh assumed)" in text(assumed)
    known = render(off_grid(), UiState(capacity_wh=27_000.0), 100, 30)
    assert "kWh assumed" not in text(known)
    assert "time left ≈ 5 h 24 min at 2.7 kW" in text(known)


def test_unmetered_sheddable_devices_make_the_estimate_a_lower_bound() -> None:
    lines = render(snapshot(), UiState(capacity_wh=13_500.0), 100, 30)
    assert "≥ " in line_with(lines, "with all sheddable off")  # the TV reports no watts


@pytest.mark.parametrize(
    ("seconds", "said"),
    [
        (0, "0 s"),
        (42, "42 s"),
        (60, "1 min"),
        (3599, "59 min"),
        (3600, "1 h"),
        (9900, "2 h 45 min"),
        (50 * 3600, "2 d 2 h"),
    ],
)
def test_durations_read_at_a_glance(seconds: float, said: str) -> None:
    assert duration(seconds) == said


# --- the demo, help, prompts ---------------------------------------------------------------------


def test_the_demo_says_it_is_a_demo_with_its_clock_and_speed() -> None:
    ui = UiState(demo=Demo(speed=60, hour=18.5, solar_w=2000.0), capacity_wh=13_500)
    lines = render(snapshot(), ui, 100, 30)
    title = lines[0]
    assert title.text.startswith(" loadshed  DEMO  house clock 18:30 · 60x real time")
    assert title.text.rstrip().endswith("solar fixed 2.0 kW")  # one clock: no wall clock too
    assert any(title.text[s.start : s.end] == "DEMO" for s in title.spans)
    assert "g grid" in lines[-1].text and "+- solar" in lines[-1].text
    assert "g grid" not in render(snapshot(), UiState(), 100, 30)[-1].text


def test_help_is_generated_from_the_keys_table() -> None:
    plain = text(render(snapshot(), UiState(help=True), 100, 30))
    demo = text(render(snapshot(), UiState(help=True, demo=Demo(60, 18)), 100, 30))
    for key in KEYS:
        assert (key.does in demo) and ((key.does in plain) is not key.demo)
    assert "time left: charge x 13.5 kWh assumed (one Powerwall 2) / (load - solar)" in plain


@pytest.mark.parametrize(
    ("question", "words"),
    [
        (Confirm.SHED, "Force a shed now?"),
        (Confirm.RESTORE, "Force a restore now?"),
        (Confirm.QUIT, "quitting does not restore"),
    ],
)
def test_a_question_waits_above_the_keys(question: Confirm, words: str) -> None:
    lines = render(off_grid(), UiState(confirm=question), 80, 24)
    assert_fits(lines, 80, 24)
    assert words in lines[-2].text and "y/n" in lines[-2].text
    assert lines[-2].style is Style.PROMPT


def test_quitting_says_switches_may_finish() -> None:
    lines = render(off_grid(), UiState(quitting=True), 80, 24)
    assert "stopping: switches in flight may finish (at most 10 s)" in lines[-2].text


# --- keys ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "question", "kind", "snap"),
    [
        ("s", Confirm.SHED, CommandKind.FORCE_SHED, snapshot()),
        ("r", Confirm.RESTORE, CommandKind.FORCE_RESTORE, off_grid()),
    ],
)
def test_shed_and_restore_ask_first_and_y_does_it(
    key: str, question: Confirm, kind: CommandKind, snap: Snapshot
) -> None:
    asked = handle_key(key, UiState(), snap)
    assert asked.ui.confirm is question and asked.command is None
    done = handle_key("y", asked.ui, snap)
    assert done.command == Command(kind) and done.ui.confirm is None
    assert done.ui.forced is not None and done.ui.forced.kind is kind
    assert render(snap, done.ui, 100, 30)[-2].text == f" {kind.value}: asked…"


def test_a_forced_command_with_nothing_to_switch_says_so_and_is_still_sent() -> None:
    done = handle_key("y", UiState(confirm=Confirm.RESTORE), snapshot())  # nothing is shed
    assert done.command == Command(CommandKind.FORCE_RESTORE) and done.ui.forced is None
    assert done.ui.message == "force restore: nothing to switch back on"


@pytest.mark.parametrize("answer", ["n", "escape", "q", " "])
def test_anything_but_y_is_no(answer: str) -> None:
    result = handle_key(answer, UiState(confirm=Confirm.SHED), snapshot())
    assert result.command is None and not result.quit and result.ui.confirm is None
    assert result.ui.message == "shed: not done"


def test_q_quits_at_once_when_nothing_is_shed() -> None:
    result = handle_key("q", UiState(), snapshot())
    assert result.quit and result.ui.quitting


def test_q_asks_when_something_is_shed_because_quitting_does_not_restore() -> None:
    asked = handle_key("q", UiState(), off_grid())
    assert not asked.quit and asked.ui.confirm is Confirm.QUIT
    assert handle_key("y", asked.ui, off_grid()).quit
    assert not handle_key("n", asked.ui, off_grid()).quit


def test_arrows_and_jk_move_the_selection_within_the_table() -> None:
    ui, snap = UiState(), snapshot()
    for key in ("down", "j", "j"):
        ui = handle_key(key, ui, snap).ui
    assert ui.selected == "TV"
    ui = handle_key("k", ui, snap).ui
    assert ui.selected == "Space heater"
    assert handle_key("end", ui, snap).ui.selected == "Aquarium"
    assert handle_key("up", UiState(), snap).ui.selected == "Router"  # clamps at the top
    assert handle_key("down", UiState(selected="Aquarium"), snap).ui.selected == "Aquarium"


def test_the_selection_follows_its_device_when_rows_move() -> None:
    ui = UiState(selected="TV")
    moved = snapshot(devices=tuple(reversed(HOUSE)))
    assert handle_key("j", ui, moved).ui.selected == "Space heater"


# --- pins: no single press switches a device off without asking -----------------------------------


def pins(pin: Pin | None, rule: int = 100, snap: Snapshot | None = None) -> Snapshot:
    """The house with one more device, the NAS, pinned as given and under the given rule."""
    snap = snap if snap is not None else snapshot()
    return replace(snap, devices=(row("Router", 0), row("NAS", rule, pin=pin), row("TV")))


def press(keys: str, snap: Snapshot, ui: UiState | None = None) -> list[KeyResult]:
    """Press each key in turn on the NAS; every result."""
    ui = ui if ui is not None else UiState(selected="NAS")
    results = []
    for key in keys:
        results.append(handle_key(key, ui, snap))
        ui = results[-1].ui
    return results


def nas(pin: Pin | None) -> Command:
    return Command(CommandKind.PIN, device="NAS", pin=pin)


@pytest.mark.parametrize("pin", [None, Pin.OFF])
@pytest.mark.parametrize(
    "snap",
    [snapshot(), off_grid(), snapshot(hold=True)],
    ids=["on-grid", "off-grid", "hold"],
)
def test_space_pins_keep_on_without_asking(pin: Pin | None, snap: Snapshot) -> None:
    [result] = press(" ", pins(pin, snap=snap))
    assert result.command == nas(Pin.ON) and result.ui.confirm is None
    assert result.ui.message == "NAS: keep on"


@pytest.mark.parametrize(
    ("snap", "rule"),
    [
        pytest.param(snapshot(), 100, id="on-grid"),
        pytest.param(off_grid(), 0, id="essential-off-grid"),
        pytest.param(off_grid(), 30, id="tier-above-its-pct"),
        pytest.param(off_grid(paused=True), 100, id="shedding-paused-by-a-forced-restore"),
        pytest.param(snapshot(hold=True), 0, id="essential-under-a-forced-shed"),
    ],
)
def test_space_on_keep_on_unpins_without_asking_when_its_rule_keeps_it_on(
    snap: Snapshot, rule: int
) -> None:
    [result] = press(" ", pins(Pin.ON, rule, snap))
    assert result.command == nas(None) and result.ui.confirm is None
    assert result.ui.message == "NAS: automatic (its rule)"


@pytest.mark.parametrize(
    ("snap", "rule", "question"),
    [
        pytest.param(
            off_grid(),
            100,
            "NAS back to its rule (shed at outage): it is switched off now. y/n",
            id="off-grid",
        ),
        pytest.param(
            snapshot(hold=True),
            30,
            "NAS back to its rule (shed below 30 %): it is switched off now (forced shed). y/n",
            id="forced-shed-holds",
        ),
        pytest.param(
            off_grid(),
            60,
            "NAS back to its rule (shed below 60 %): it is switched off now (battery 54 %). y/n",
            id="tier-below-its-pct",
        ),
        pytest.param(
            off_grid(reading=GridReading(Grid.OFF, "SystemIslandedActive")),
            30,
            "it may be switched off now (battery unknown). y/n",
            id="tier-battery-unknown",
        ),
        pytest.param(
            off_grid(shed_at=NOW + 5),
            100,
            "it is switched off once the outage is confirmed. y/n",
            id="outage-not-confirmed-yet",
        ),
    ],
)
def test_space_on_keep_on_asks_before_its_rule_switches_it_off(
    snap: Snapshot, rule: int, question: str
) -> None:
    snap = pins(Pin.ON, rule, snap)
    [asked] = press(" ", snap)
    assert asked.ui.confirm is Confirm.UNPIN and asked.command is None
    lines = render(snap, asked.ui, 100, 30)
    assert question in lines[-2].text and lines[-2].style is Style.PROMPT
    assert lines[-2].text.startswith(" NAS back to its rule (")
    kept = handle_key("n", asked.ui, snap)
    assert kept.command is None and kept.ui.confirm is None
    assert kept.ui.message == "NAS: not changed, still keep on"
    done = handle_key("y", asked.ui, snap)
    assert done.command == nas(None) and done.ui.message == "NAS: automatic (its rule)"


def test_the_unpin_question_names_the_device_its_rule_and_the_consequence() -> None:
    snap = pins(Pin.ON, 100, off_grid())
    [asked] = press(" ", snap)
    assert render(snap, asked.ui, 100, 30)[-2].text == (
        " NAS back to its rule (shed at outage): it is switched off now. y/n  n keeps the pin. "
    )
    assert render(snap, asked.ui, MIN_WIDTH, MIN_HEIGHT)[-2].text.startswith(
        " NAS back to its rule (shed at outage): it is switched off now. y/n"
    )


@pytest.mark.parametrize("pin", [None, Pin.ON])
@pytest.mark.parametrize("snap", [snapshot(), off_grid()], ids=["on-grid", "off-grid"])
def test_x_asks_before_switching_off_and_y_keeps_it_off(pin: Pin | None, snap: Snapshot) -> None:
    snap = pins(pin, 0, snap)  # even an essential device: the owner may want it off
    [asked] = press("x", snap)
    assert asked.ui.confirm is Confirm.KEEP_OFF and asked.command is None
    prompt = render(snap, asked.ui, 100, 30)[-2]
    assert prompt.text.startswith(" Switch NAS off and keep it off? y/n  ")
    assert "Its rule (essential) is set aside until x again." in prompt.text
    assert prompt.style is Style.PROMPT
    kept = handle_key("n", asked.ui, snap)
    assert kept.command is None and kept.ui.message.startswith("NAS: not changed, still ")
    done = handle_key("y", asked.ui, snap)
    assert done.command == nas(Pin.OFF) and done.ui.message == "NAS: keep off"


@pytest.mark.parametrize("snap", [snapshot(), off_grid()], ids=["on-grid", "off-grid"])
def test_x_on_keep_off_goes_back_to_its_rule_without_asking(snap: Snapshot) -> None:
    [result] = press("x", pins(Pin.OFF, 100, snap))
    assert result.command == nas(None) and result.ui.confirm is None


def test_a_pin_question_is_about_the_device_selected_when_asked() -> None:
    snap = pins(None, snap=off_grid())
    asked = handle_key("x", UiState(), snap)  # nothing selected yet: the first row
    assert asked.ui.selected == "Router"
    moved = replace(snap, devices=tuple(reversed(snap.devices)))
    assert "Switch Router off" in render(moved, asked.ui, 100, 30)[-2].text
    done = handle_key("y", asked.ui, moved)
    assert done.command == Command(CommandKind.PIN, device="Router", pin=Pin.OFF)


@pytest.mark.parametrize("demo", [None, Demo(60, 18)], ids=["run", "demo"])
@pytest.mark.parametrize("width", [MIN_WIDTH, 80, 100])
def test_the_key_bar_names_both_pin_keys_at_every_width(demo: Demo | None, width: int) -> None:
    bar = render(snapshot(), UiState(demo=demo), width, 24)[-1].text
    assert "space keep on  x keep off" in bar and bar.endswith("q quit")


PIN_DEVICES = (
    row("Router", 0),
    row("NAS", pin=Pin.ON),
    row("Freezer", 30),
    row("Dehumidifier", 60, pin=Pin.ON),
    row("Lamp", pin=Pin.OFF),
)
PRESSES = sorted({name for key in KEYS for name in key.names} | {"n", "N", "escape", "enter", "Z"})


def sheds_now(device: DeviceRow, snap: Snapshot) -> bool:
    """The issue's test of "its rule could switch it off now", written apart from view.py."""
    if device.rule <= 0:
        return False
    battery = snap.reading.battery_pct
    tier_sheds = device.rule >= 100 or battery is None or battery < device.rule
    return snap.hold or (snap.reading.grid is Grid.OFF and tier_sheds)


@settings(max_examples=300, deadline=None)
@given(
    keys=st.lists(st.sampled_from(PRESSES), max_size=30),
    snap=st.sampled_from(
        [
            snapshot(devices=PIN_DEVICES),
            off_grid(devices=PIN_DEVICES),
            snapshot(devices=PIN_DEVICES, hold=True),
            off_grid(devices=PIN_DEVICES, reading=GridReading(Grid.OFF, "SystemIslandedActive")),
        ]
    ),
    demo=st.booleans(),
)
def test_no_press_without_y_switches_a_device_off(
    keys: list[str], snap: Snapshot, demo: bool
) -> None:
    """Whatever the order, without a y no key pins keep off, nor unpins into a shed."""
    ui = UiState(demo=Demo(60, 18) if demo else None)
    for key in keys:
        result = handle_key(key, ui, snap)
        ui, command = result.ui, result.command
        if command is None or command.kind is not CommandKind.PIN:
            continue
        device = next(d for d in snap.devices if d.name == command.device)
        assert command.pin is not Pin.OFF, (key, device)
        if command.pin is None and device.pin is Pin.ON:
            assert not sheds_now(device, snap), (key, device)
        devices = tuple(replace(d, pin=command.pin) if d is device else d for d in snap.devices)
        snap = replace(snap, devices=devices)


def test_help_opens_and_any_key_closes_it_without_acting() -> None:
    opened = handle_key("?", UiState(), snapshot()).ui
    assert opened.help
    closed = handle_key("s", opened, snapshot())
    assert not closed.ui.help and closed.ui.confirm is None and closed.command is None


def test_demo_keys_only_in_the_demo() -> None:
    assert handle_key("g", UiState(), snapshot()).demo is None
    demo = UiState(demo=Demo(60, 18))
    assert [handle_key(k, demo, snapshot()).demo for k in ("g", "+", "=", "-")] == [
        "g",
        "+",
        "+",
        "-",
    ]


def test_unknown_keys_do_nothing_but_clear_the_message() -> None:
    result = handle_key("Z", UiState(message="old news"), snapshot())
    assert result == type(result)(UiState())


def test_no_key_acts_while_quitting() -> None:
    result = handle_key("s", UiState(quitting=True), snapshot())
    assert result.command is None and result.ui.confirm is None


def test_plain_mode_never_imports_curses() -> None:
    """Only ui.py imports curses, and only the screen's code paths import ui.py."""
    code = (
        "import sys\n"
        "import loadshed.cli, loadshed.daemon, loadshed.demo, loadshed.view\n"
        "print(sorted(m for m in sys.modules if 'curses' in m or m == 'loadshed.ui'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"


def test_loadshed_s_own_trouble_is_on_screen() -> None:
    problem = "cannot write state.json: No space left on device; shedding without a safety net"
    lines = render(snapshot(problems=(problem,)), UiState(), 100, 30)
    (line,) = [ln for ln in lines if "state.json" in ln.text]
    assert line.text.strip() == f"! {problem}"


# --- more than one grid source ---------------------------------------------------------------


def test_each_secondary_source_has_a_line_with_its_reading_and_age() -> None:
    canary = GridReading(Grid.ON, raw="Garage canary answers", source="canary")
    ups = GridReading(Grid.OFF, raw="OB DISCHRG", source="UPS")
    snap = snapshot(
        sources=(
            SourceRow("canary", "Garage canary", canary, 1.2),
            SourceRow("UPS", "ups@192.0.2.9:3493", ups, 0.4),
        ),
        disagreement="Powerwall says on grid, UPS says off grid",
    )
    lines = render(snap, UiState(), 100, 30)
    assert "on grid (Garage canary answers) · 1 s ago" in line_with(lines, "canary ")
    assert "off grid (OB DISCHRG) · 0 s ago" in line_with(lines, "UPS ")
    assert "Powerwall says on grid, UPS says off grid" in line_with(lines, "sources disagree")
    assert_fits(lines, 100, 30)


def test_the_grid_line_says_when_a_secondary_source_decides() -> None:
    unreadable = GridReading(Grid.UNKNOWN, detail="login rejected", status=Status.FAILED)
    decided = GridReading(Grid.OFF, raw="canary: Garage canary silent", source="canary")
    snap = off_grid(reading=unreadable, decided_by=decided)
    grid = line_with(render(snap, UiState(), 100, 30), "OFF GRID")
    assert "(the canary says; the Powerwall cannot)" in grid


# --- one clock -------------------------------------------------------------------------------


def timed(**kw: object) -> Snapshot:
    """Off grid for 30 s, an outage confirmed in 10 s, two events, a UPS read 2 s ago."""
    ups = GridReading(Grid.OFF, raw="OB", source="UPS")
    defaults: dict[str, object] = {
        "grid_since": NOW - 30,
        "outage_since": NOW - 30,
        "shed_at": NOW + 10,
        "events": (
            "14:29 grid lost (SystemIslandedActive), battery 60 %",
            "14:29 Workstation: off (down after 6 s)",
        ),
        "event_times": (NOW - 30, NOW - 1),
        "sources": (SourceRow("UPS", "ups@192.0.2.9:3493", ups, 2.0),),
    }
    defaults.update(kw)
    return off_grid(**defaults)


def test_every_time_in_the_demo_is_the_house_s() -> None:
    """The house runs 60x: 30 s of the wall clock are 30 min of the house's."""
    lines = render(timed(), UiState(demo=Demo(speed=60, hour=18.5)), 100, 30, now=NOW)
    screen = text(lines)
    assert "14:" not in screen  # not one time by the wall clock (14:30)
    assert lines[0].text.rstrip().endswith("solar by time of day")
    assert line_with(lines, "OFF GRID") == "● OFF GRID — on battery for 30 min, since 18:00"
    assert "shedding in 10 min" in screen
    assert "off grid (OB) · 2 min ago" in line_with(lines, "UPS ")
    assert "─ events (house clock) ─" in screen
    assert "  18:00 grid lost (SystemIslandedActive), battery 60 %" in screen
    assert "  18:29 Workstation: off (down after 6 min)" in screen


def test_without_the_demo_every_time_is_the_wall_clock() -> None:
    lines = render(timed(), UiState(), 100, 30, now=NOW)
    screen = text(lines)
    assert lines[0].text.endswith("14:30 ")
    assert line_with(lines, "OFF GRID") == "● OFF GRID — on battery for 30 s, since 14:29"
    assert "shedding in 10 s" in screen and "off grid (OB) · 2 s ago" in screen
    assert "  14:29 Workstation: off (down after 6 s)" in screen
    assert "house" not in screen


# --- time left while devices switch ------------------------------------------------------------


def switching(stage: str) -> Snapshot:
    """Half a battery, the heater (1.5 kW) and a lamp (100 W) sheddable, 1.1 kW besides them,
    at each stage of the heater's shed and restore, as the engine publishes them: the load
    settled before the switch (2.7 kW) until a reading with nothing switching shows 1.2 kW."""
    heater = row("Heater", watts=1500.0, draw_w=1500.0, in_load=True)
    off = replace(heater, power=Power.OFF, watts=None, shed_reason="off-grid")
    stages: dict[str, tuple[DeviceRow, float, float]] = {
        "on": (heater, 2700.0, 2700.0),
        "switching off": (replace(heater, busy=Verb.SHED), 2700.0, 2700.0),
        "off, load not read": (off, 2700.0, 2700.0),
        "off, load read": (off, 1200.0, 2700.0),
        "off, settled": (replace(off, in_load=False), 1200.0, 1200.0),
        "back on, unmetered yet": (
            replace(heater, watts=None, in_load=False, busy=None),
            1200.0,
            1200.0,
        ),
        "back on, settled": (replace(heater, watts=None), 2700.0, 2700.0),
    }
    device, load_w, settled_w = stages[stage]
    reading = GridReading(Grid.OFF, "SystemIslandedActive", 50.0, load_w, 0.0)
    lamp = row("Lamp", watts=100.0, draw_w=100.0, in_load=True)
    return snapshot(reading=reading, devices=(device, lamp), load_settled_w=settled_w)


def test_the_shed_estimate_holds_still_while_devices_switch() -> None:
    stages = (
        "on",
        "switching off",
        "off, load not read",
        "off, load read",
        "off, settled",
        "back on, unmetered yet",
        "back on, settled",
    )
    said = {
        stage: line_with(render(switching(stage), UiState(), 100, 30), "time left")
        for stage in stages
    }
    assert {s.split(", ", 1)[1] for s in said.values()} == {
        "≈ 6 h 8 min with all sheddable off (13.5 kWh assumed)"
    }
    assert "≈ 2 h 30 min at 2.7 kW" in said["on"]  # the figure for now does follow the load
    assert "≈ 5 h 37 min at 1.2 kW" in said["off, settled"]


def test_solar_covering_the_load_with_sheddable_off_is_said_not_dropped() -> None:
    reading = GridReading(Grid.OFF, "SystemIslandedActive", 50.0, 2700.0, 1500.0)
    heater = row("Heater", watts=1500.0)
    lines = render(
        snapshot(reading=reading, devices=(row("Router", 0), heater)), UiState(), 100, 30
    )
    assert line_with(lines, "time left").endswith(
        "at 1.2 kW, with all sheddable off solar covers the load (13.5 kWh assumed)"
    )


def test_with_everything_sheddable_off_the_estimate_says_so() -> None:
    devices = (row("Router", 0), row("Heater", power=Power.OFF, shed_reason="off-grid"))
    lines = render(off_grid(devices=devices), UiState(capacity_wh=13_500.0), 100, 30)
    assert line_with(lines, "time left").endswith(", every sheddable device is off")


def test_with_all_sheddable_off_is_never_shorter_than_now() -> None:
    """Devices that report no draw stay in the settled load: while they switch off, the load
    now may fall below it. Shedding only takes load away: the figure is at least now's."""
    reading = GridReading(Grid.OFF, "SystemIslandedActive", 50.0, 900.0, 0.0)
    devices = (row("TV", power=Power.OFF, shed_reason="off-grid", in_load=True),)
    lines = render(
        snapshot(reading=reading, devices=devices, load_settled_w=2700.0), UiState(), 100, 30
    )
    assert "≈ 7 h 30 min at 0.9 kW, ≥ 7 h 30 min with all sheddable off" in text(lines)


# --- the events pane -------------------------------------------------------------------------

GRID_LOST = "14:18 grid lost (SystemIslandedActive), battery 60 %"


def said_at(at: float, words: str) -> str:
    """An events line as the engine says it: its wall-clock HH:MM, then the words."""
    return f"{time.strftime('%H:%M', time.localtime(at))} {words}"


def outage_with_events(count: int) -> Snapshot:
    """Off grid since 14:18, the grid lost line followed by `count` more, 3 s apart."""
    times = [NOW - 11 * MIN + 3 * n for n in range(count)]
    return off_grid(
        events=(GRID_LOST, *(said_at(at, f"TV: event {n}") for n, at in enumerate(times))),
        event_times=(NOW - 12 * MIN, *times),
        outage_event=GRID_LOST,
        outage_event_at=NOW - 12 * MIN,
    )


@pytest.mark.parametrize(("count", "height"), [(3, 30), (40, 30), (40, 50), (200, 24)])
def test_the_change_that_began_the_outage_stays_pinned_above_the_events(
    count: int, height: int
) -> None:
    lines = render(outage_with_events(count), UiState(), 100, height, now=NOW)
    assert_fits(lines, 100, height)
    rule = next(i for i, line in enumerate(lines) if "─ events " in line.text)
    pinned = lines[rule + 1]
    assert pinned.text == f"  {GRID_LOST}" and pinned.style is Style.BAD
    assert sum("grid lost" in line.text for line in lines) == 1  # not again below
    shown = [line.text for line in lines[rule + 2 : -1]]
    newest = f"  {said_at(NOW - 11 * MIN + 3 * (count - 1), f'TV: event {count - 1}')}"
    assert [line for line in shown if line][-1] == newest
    if count > len(shown):
        assert "" not in shown  # every row the pane has is used


def test_no_pin_when_no_outage() -> None:
    lines = render(snapshot(), UiState(), 100, 30)
    rule = next(i for i, line in enumerate(lines) if "─ events " in line.text)
    assert lines[rule + 1].text == "  14:00 ready: 6 devices (2 essential), on grid, battery 54 %"


# --- counts ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dry_run", "said"),
    [
        (False, "1 switched off by loadshed · 2 switching · 1 still on: switching off failed"),
        (True, "2 would be switched off · 2 switching"),
    ],
)
def test_counts_say_each_device_once_as_it_is_now(dry_run: bool, said: str) -> None:
    devices = (
        row("Off", power=Power.OFF, shed_reason="off-grid"),
        row("Going", shed_reason="off-grid", busy=Verb.SHED),  # its intent is written first
        row("Coming", power=Power.OFF, shed_reason="off-grid", busy=Verb.RESTORE),
        row("Failed", shed_reason="off-grid", status=Status.UNREACHABLE, detail="no answer"),
    )
    lines = render(off_grid(devices=devices, dry_run=dry_run), UiState(), 100, 30)
    assert line_with(lines, "switching").strip() == said


# --- forced commands ------------------------------------------------------------------------

FORCE_SHED_SAID = "14:30 force shed (forced from keyboard): 3 devices"


def after_force(snap: Snapshot, at: float = NOW + 0.1, **states: object) -> Snapshot:
    """The snapshot after the engine took a forced shed: its line, and devices as given."""
    devices = tuple(
        replace(r, **states[r.name]) if r.name in states else r  # type: ignore[arg-type]
        for r in snap.devices
    )
    return replace(
        snap,
        taken_at=at,
        devices=devices,
        events=(*snap.events, FORCE_SHED_SAID),
        event_times=(*([NOW - 30 * MIN] * len(snap.events)), at),
    )


def test_a_forced_shed_says_what_is_happening_and_clears_when_done() -> None:
    before = snapshot()
    ui = handle_key("y", handle_key("s", UiState(), before).ui, before).ui
    assert ui.forced is not None and ui.forced.devices == ("Freezer", "Space heater", "TV")
    ui = follow(ui, replace(before, taken_at=NOW + 1))  # not taken yet
    assert render(before, ui, 100, 30)[-2].text == " force shed: asked…"

    going = {"busy": Verb.SHED, "shed_reason": "forced from keyboard"}
    gone = {"power": Power.OFF, "watts": None, "shed_reason": "forced from keyboard"}
    steps = [
        (dict.fromkeys(("Freezer", "Space heater", "TV"), going), "0 off, 3 switching…"),
        ({"Freezer": gone, "Space heater": gone, "TV": going}, "2 off, 1 switching…"),
    ]
    for states, said in steps:
        snap = after_force(before, **states)
        ui = follow(ui, snap)
        lines = render(snap, ui, 100, 30)
        assert lines[-2].text == f" force shed: {said}"
    assert "2 switched off by loadshed · 1 switching" in text(lines)  # the header agrees

    done = after_force(before, **dict.fromkeys(("Freezer", "Space heater", "TV"), gone))
    ui = follow(ui, done)
    assert ui.forced is None and ui.message == ""
    lines = render(done, ui, 100, 30)
    assert not lines[-2].text.startswith(" force") and lines[-2].style is not Style.WARN


def test_a_forced_restore_is_reported_once_and_clears() -> None:
    before = off_grid()  # the heater and the TV shed
    ui = handle_key("y", UiState(confirm=Confirm.RESTORE), before).ui
    coming = {"busy": Verb.RESTORE}
    back = {"power": Power.ON, "shed_reason": None}
    said = []
    for states in (
        {"Space heater": coming, "TV": coming},
        {"Space heater": back, "TV": coming},
        {"Space heater": back, "TV": back},
    ):
        snap = after_force(before, **states)
        ui = follow(ui, snap)
        said.append(render(snap, ui, 100, 30)[-2].text)
    assert said[:2] == [
        " force restore: 0 back on, 2 switching…",
        " force restore: 1 back on, 1 switching…",
    ]
    assert ui.forced is None and "force restore" not in said[2]


def test_what_a_forced_command_could_not_switch_is_named_once_it_is_done() -> None:
    before = snapshot()
    ui = handle_key("y", UiState(confirm=Confirm.SHED), before).ui
    gone = {"power": Power.OFF, "shed_reason": "forced from keyboard"}
    failed = {"status": Status.UNREACHABLE, "detail": "no answer", "shed_reason": "forced"}
    ui = follow(ui, after_force(before, Freezer=gone, TV=gone, **{"Space heater": failed}))
    assert ui.forced is None
    assert ui.message == "force shed: not switched: Space heater (see the table)"


def test_a_forced_command_the_engine_never_answers_is_let_go() -> None:
    before = snapshot()
    ui = handle_key("y", UiState(confirm=Confirm.SHED), before).ui
    assert follow(ui, replace(before, taken_at=NOW + 4)).forced is not None
    later = follow(ui, replace(before, taken_at=NOW + 6))
    assert later.forced is None and later.message.startswith("force shed: not switched: Freezer")


# --- attached to a loadshed running elsewhere ----------------------------------------------


def test_attached_q_asks_and_says_loadshed_keeps_running() -> None:
    ui = UiState(attached=True)
    asked = handle_key("q", ui, snapshot())  # nothing is shed: asked all the same
    assert asked.ui.confirm is Confirm.QUIT and not asked.quit
    prompt = render(snapshot(), asked.ui, 100, 30)[-2]
    assert prompt.text == " Leave this screen? loadshed keeps running. y/n"
    assert prompt.style is Style.PROMPT
    left = handle_key("y", asked.ui, snapshot())
    assert left.quit
    assert render(snapshot(), left.ui, 100, 30)[-2].text.startswith(
        " leaving this screen; loadshed keeps running"
    )
    assert not handle_key("n", asked.ui, snapshot()).quit
    assert "leave this screen (y/n); loadshed keeps running" in text(
        render(snapshot(), UiState(attached=True, help=True), 100, 30)
    )


def test_not_attached_the_quit_question_is_about_stopping() -> None:
    asked = handle_key("q", UiState(), off_grid())
    assert (
        "Quit? y/n  What loadshed switched off stays off"
        in render(off_grid(), asked.ui, 100, 30)[-2].text
    )
