"""The policy, one rule per case, and property tests over random sequences of readings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadshed.model import Action, Grid, GridReading, Pin, Power, Verb
from loadshed.policy import (
    DeviceView,
    Memory,
    Rules,
    ShedView,
    decide,
    force_restore,
    force_shed,
    observe,
    tier_of,
)

RULES = Rules(poll_s=2, outage_confirm_s=0, restore_after_s=60)
DEVICES = (
    DeviceView("Router", 0, Power.ON),
    DeviceView("Heater", 100, Power.ON),
    DeviceView("TV", 100, Power.ON),
    DeviceView("Lamp", 100, Power.OFF),  # off before the outage
    DeviceView("Freezer", 30, Power.ON),
)


def reading(grid: Grid, battery: float | None = 80.0, raw: str = "") -> GridReading:
    return GridReading(grid, raw, battery)


def names(actions: tuple[Action, ...], verb: Verb) -> set[str]:
    return {a.device for a in actions if a.verb is verb}


def on_grid_memory(since: float = 0.0) -> Memory:
    return Memory(grid=Grid.ON, since=since)


def test_outage_sheds_every_device_at_outage_rule_that_is_on() -> None:
    decision = decide(reading(Grid.OFF), 10, on_grid_memory(), {}, DEVICES, RULES)
    assert names(decision.actions, Verb.SHED) == {"Heater", "TV"}
    assert {a.reason for a in decision.actions} == {"off-grid"}
    assert decision.changed is Grid.OFF
    assert decision.memory.outage


def test_unknown_never_acts_and_counts_how_long() -> None:
    memory = on_grid_memory()
    shed = {"Heater": ShedView("off-grid")}
    first = decide(reading(Grid.UNKNOWN, None), 100, memory, shed, DEVICES, RULES)
    later = decide(reading(Grid.UNKNOWN, None), 107, first.memory, shed, DEVICES, RULES)
    assert first.actions == later.actions == ()
    assert later.unknown_for_s == 7
    assert later.memory.grid is Grid.ON  # the last known grid is kept


def test_first_reading_is_not_a_change() -> None:
    decision = decide(reading(Grid.OFF), 0, Memory(), {}, DEVICES, RULES)
    assert decision.changed is None
    assert names(decision.actions, Verb.SHED) == {"Heater", "TV"}  # still acts on it


def test_outage_waits_for_confirmation() -> None:
    rules = Rules(outage_confirm_s=30)
    first = decide(reading(Grid.OFF), 100, on_grid_memory(), {}, DEVICES, rules)
    assert first.actions == () and first.shed_at == 130
    early = decide(reading(Grid.OFF), 129, first.memory, {}, DEVICES, rules)
    assert early.actions == ()
    due = decide(reading(Grid.OFF), 130, early.memory, {}, DEVICES, rules)
    assert names(due.actions, Verb.SHED) == {"Heater", "TV"}


@pytest.mark.parametrize(
    ("battery", "shed", "expected"),
    [
        pytest.param(31.0, {}, set(), id="above-tier-keeps"),
        pytest.param(29.0, {}, {("shed", "Freezer")}, id="below-tier-sheds"),
        pytest.param(
            39.0,
            {"Freezer": ShedView("battery 29 % < 30 %", tier=30)},
            set(),
            id="hysteresis-holds",
        ),
        pytest.param(
            40.0,
            {"Freezer": ShedView("battery 29 % < 30 %", tier=30)},
            set(),
            id="at-band-edge-holds",
        ),
        pytest.param(
            41.0,
            {"Freezer": ShedView("battery 29 % < 30 %", tier=30)},
            {("restore", "Freezer")},
            id="above-band-restores",
        ),
        pytest.param(None, {}, set(), id="no-battery-no-tier"),
    ],
)
def test_battery_tier_with_hysteresis(
    battery: float | None, shed: Mapping[str, ShedView], expected: set[tuple[str, str]]
) -> None:
    freezer = (DeviceView("Freezer", 30, Power.OFF if shed else Power.ON),)
    memory = Memory(grid=Grid.OFF, since=0, outage=True)
    decision = decide(reading(Grid.OFF, battery), 50, memory, shed, freezer, RULES)
    assert {(a.verb.value, a.device) for a in decision.actions} == expected


def test_tier_reason_names_battery_and_threshold() -> None:
    memory = Memory(grid=Grid.OFF, since=0, outage=True)
    (action,) = decide(reading(Grid.OFF, 29.96), 5, memory, {}, DEVICES[4:], RULES).actions
    assert action.reason == "battery 29.9 % < 30 %"  # never "30 % < 30 %"
    (action,) = decide(reading(Grid.OFF, 28.0), 5, memory, {}, DEVICES[4:], RULES).actions
    assert action.reason == "battery 28 % < 30 %"
    assert tier_of(action.reason, 30) == 30
    assert tier_of("off-grid", 100) is None


def test_restore_waits_for_the_grid_to_be_back_long_enough() -> None:
    shed = {"Heater": ShedView("off-grid"), "TV": ShedView("off-grid")}
    memory = Memory(grid=Grid.OFF, since=0, outage=True)
    back = decide(reading(Grid.ON), 100, memory, shed, DEVICES, RULES)
    assert back.actions == () and back.restore_at == 160 and back.changed is Grid.ON
    early = decide(reading(Grid.ON), 159, back.memory, shed, DEVICES, RULES)
    assert early.actions == ()
    due = decide(reading(Grid.ON), 160, early.memory, shed, DEVICES, RULES)
    assert names(due.actions, Verb.RESTORE) == {"Heater", "TV"}
    assert due.actions[0].reason == "grid back for 60 s"


def test_transition_to_grid_and_flicker_restart_the_restore_clock() -> None:
    shed = {"Heater": ShedView("off-grid")}
    memory = Memory(grid=Grid.OFF, since=0, outage=True)
    d = decide(reading(Grid.ON), 100, memory, shed, DEVICES, RULES)
    d = decide(reading(Grid.OFF, raw="SystemTransitionToGrid"), 130, d.memory, shed, DEVICES, RULES)
    d = decide(reading(Grid.ON), 140, d.memory, shed, DEVICES, RULES)
    assert d.restore_at == 200
    assert decide(reading(Grid.ON), 199, d.memory, shed, DEVICES, RULES).actions == ()


def test_unknown_gap_neither_restarts_nor_completes_the_restore_clock() -> None:
    shed = {"Heater": ShedView("off-grid")}
    d = decide(
        reading(Grid.ON), 100, Memory(grid=Grid.OFF, since=0, outage=True), shed, DEVICES, RULES
    )
    d = decide(reading(Grid.UNKNOWN, None), 170, d.memory, shed, DEVICES, RULES)
    assert d.actions == ()
    d = decide(reading(Grid.ON), 171, d.memory, shed, DEVICES, RULES)
    assert names(d.actions, Verb.RESTORE) == {"Heater"}


def test_unconfirmed_shed_is_asked_for_again_even_when_power_unknown() -> None:
    devices = (DeviceView("Heater", 100, None),)
    memory = Memory(grid=Grid.OFF, since=0, outage=True)
    unconfirmed = {"Heater": ShedView("off-grid", confirmed=False)}
    assert names(
        decide(reading(Grid.OFF), 5, memory, unconfirmed, devices, RULES).actions, Verb.SHED
    ) == {"Heater"}
    confirmed = {"Heater": ShedView("off-grid")}
    assert decide(reading(Grid.OFF), 5, memory, confirmed, devices, RULES).actions == ()


def test_device_seen_on_again_during_the_outage_is_switched_off_again() -> None:
    memory = Memory(grid=Grid.OFF, since=0, outage=True)
    shed = {"Heater": ShedView("off-grid")}
    devices = (DeviceView("Heater", 100, Power.ON),)
    assert names(decide(reading(Grid.OFF), 5, memory, shed, devices, RULES).actions, Verb.SHED) == {
        "Heater"
    }


def test_force_shed_spares_essentials_and_holds_until_forced_restore() -> None:
    memory = on_grid_memory()
    forced = force_shed(memory, {}, DEVICES)
    assert names(forced.actions, Verb.SHED) == {"Heater", "TV", "Freezer"}
    assert forced.memory.hold
    shed = {n: ShedView("forced") for n in ("Heater", "TV", "Freezer")}
    after = tuple(replace(d, power=Power.OFF) if d.name in shed else d for d in DEVICES)
    later = decide(reading(Grid.ON), 10_000, forced.memory, shed, after, RULES)
    assert later.actions == ()
    back = force_restore(later.memory, shed)
    assert names(back.actions, Verb.RESTORE) == {"Heater", "TV", "Freezer"}
    assert not back.memory.hold


def test_forced_shed_hold_ends_with_the_next_outage() -> None:
    shed = {"Heater": ShedView("forced")}
    memory = force_shed(on_grid_memory(), {}, DEVICES).memory
    d = decide(reading(Grid.OFF), 10, memory, shed, DEVICES, RULES)
    assert not d.memory.hold
    d = decide(reading(Grid.ON), 20, d.memory, shed, DEVICES, RULES)
    d = decide(reading(Grid.ON), 80, d.memory, shed, DEVICES, RULES)
    assert names(d.actions, Verb.RESTORE) == {"Heater"}


def test_forced_restore_during_an_outage_pauses_shedding_until_the_grid_returns() -> None:
    memory = Memory(grid=Grid.OFF, since=0, outage=True)
    shed = {"Heater": ShedView("off-grid"), "TV": ShedView("off-grid")}
    restored = force_restore(memory, shed)
    assert names(restored.actions, Verb.RESTORE) == {"Heater", "TV"}
    assert restored.memory.paused
    assert decide(reading(Grid.OFF), 50, restored.memory, {}, DEVICES, RULES).actions == ()
    d = decide(reading(Grid.ON), 60, restored.memory, {}, DEVICES, RULES)
    assert not d.memory.paused
    d = decide(reading(Grid.OFF), 70, d.memory, {}, DEVICES, RULES)
    assert names(d.actions, Verb.SHED) == {"Heater", "TV"}


# --- properties --------------------------------------------------------------------------------

STEP = st.tuples(
    st.sampled_from([Grid.ON, Grid.OFF, Grid.UNKNOWN]),
    st.one_of(st.none(), st.floats(0, 100)),
    st.floats(0.5, 40),  # seconds since the previous reading
)
RULE_SETS = st.lists(st.sampled_from([0, 100, 20, 50, 90]), min_size=1, max_size=6)


def simulate(
    steps: list[tuple[Grid, float | None, float]],
    rules_pct: list[int],
    powers: list[bool],
    rules: Rules,
) -> None:
    """Run the policy with a perfect shedder and check the invariants at every step."""
    devices = {
        f"d{i}": (pct, Power.ON if on else Power.OFF)
        for i, (pct, on) in enumerate(zip(rules_pct, powers, strict=True))
    }
    was_off_before = {n for n, (_, p) in devices.items() if p is Power.OFF}
    shed: dict[str, ShedView] = {}
    memory, now = Memory(), 0.0
    on_streak_from: float | None = None
    # Then a stable grid: one reading to start the streak, one after the full delay.
    tail = [(Grid.ON, 50.0, rules.poll_s), (Grid.ON, 50.0, rules.restore_after_s + rules.poll_s)]
    all_steps = [*steps, *tail]
    for grid, battery, dt in all_steps:
        now += dt
        if grid is Grid.OFF:
            on_streak_from = None
        elif grid is Grid.ON and on_streak_from is None:
            on_streak_from = now
        views = [DeviceView(n, pct, p) for n, (pct, p) in devices.items()]
        decision = decide(GridReading(grid, "", battery), now, memory, shed, views, rules)
        memory = decision.memory
        if grid is Grid.UNKNOWN:
            assert decision.actions == ()
        for action in decision.actions:
            pct, power = devices[action.device]
            if action.verb is Verb.SHED:
                assert pct != 0, "an essential device was shed"
                assert power is Power.ON or action.device in shed
                devices[action.device] = (pct, Power.OFF)
                shed[action.device] = ShedView(action.reason, tier=tier_of(action.reason, pct))
            else:
                assert action.device in shed, "restored a device loadshed did not shed"
                assert action.device not in was_off_before or power is Power.OFF
                if action.reason.startswith("grid back"):
                    assert grid is Grid.ON and on_streak_from is not None
                    assert now - on_streak_from >= rules.restore_after_s
                devices[action.device] = (pct, Power.ON)
                del shed[action.device]
    assert shed == {}, "something shed was never restored once the grid was stable"
    for name in was_off_before:
        assert devices[name][1] is Power.OFF, "a device off before was switched on"


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(STEP, max_size=40),
    rules_pct=RULE_SETS,
    powers=st.lists(st.booleans(), min_size=6, max_size=6),
    confirm=st.sampled_from([0.0, 5.0, 30.0]),
    restore=st.sampled_from([0.0, 10.0, 60.0]),
)
def test_invariants_hold_over_random_readings(
    steps: list[tuple[Grid, float | None, float]],
    rules_pct: list[int],
    powers: list[bool],
    confirm: float,
    restore: float,
) -> None:
    simulate(steps, rules_pct, powers[: len(rules_pct)], Rules(2.0, confirm, restore))


def test_pins_win_whatever_the_grid() -> None:
    devices = (
        DeviceView("Heater", 100, Power.ON, Pin.ON),
        DeviceView("Router", 0, Power.ON, Pin.OFF),
        DeviceView("TV", 100, Power.ON),
    )
    outage = decide(reading(Grid.OFF), 10, on_grid_memory(), {}, devices, RULES)
    assert {(a.verb, a.device, a.reason) for a in outage.actions} == {
        (Verb.SHED, "Router", "pinned: keep off"),  # the owner's own choice, even if essential
        (Verb.SHED, "TV", "off-grid"),
    }
    unknown = decide(reading(Grid.UNKNOWN, None), 10, on_grid_memory(), {}, devices, RULES)
    assert names(unknown.actions, Verb.SHED) == {"Router"}
    shed = {"Heater": ShedView("off-grid"), "Router": ShedView("pinned: keep off")}
    devices = (
        DeviceView("Heater", 100, Power.OFF, Pin.ON),
        DeviceView("Router", 0, Power.OFF, Pin.OFF),
        DeviceView("TV", 100, Power.ON),
    )
    back = decide(reading(Grid.ON), 1000, Memory(grid=Grid.ON, since=0), shed, devices, RULES)
    assert {(a.verb, a.device) for a in back.actions} == {(Verb.RESTORE, "Heater")}
    assert back.actions[0].reason == "pinned: keep on"
    assert names(force_shed(on_grid_memory(), shed, devices).actions, Verb.SHED) == {"TV"}
    assert names(force_restore(on_grid_memory(), shed, devices).actions, Verb.RESTORE) == {"Heater"}


def test_the_reading_taken_at_start_makes_the_next_one_a_change() -> None:
    memory = observe(reading(Grid.ON), 0, Memory())
    decision = decide(reading(Grid.OFF), 1, memory, {}, DEVICES, RULES)
    assert decision.changed is Grid.OFF
    assert observe(reading(Grid.UNKNOWN, None), 2, memory) == memory


NAS_HOUSE = (
    DeviceView("NAS plug", 100, Power.ON, feeds=("NAS",)),
    DeviceView("NAS", 100, Power.ON, shed_unseen=True),
    DeviceView("Heater", 100, Power.ON),
)


def with_nas(**changes: object) -> tuple[DeviceView, ...]:
    return tuple(replace(d, **changes) if d.name == "NAS" else d for d in NAS_HOUSE)


def test_a_plug_is_held_on_until_the_computer_it_feeds_is_down() -> None:
    first = decide(reading(Grid.OFF), 10, on_grid_memory(), {}, NAS_HOUSE, RULES)
    assert names(first.actions, Verb.SHED) == {"NAS", "Heater"}
    assert first.held == (("NAS plug", "kept on: NAS is running"),)
    shutting = decide(
        reading(Grid.OFF),
        12,
        first.memory,
        {"NAS": ShedView("off-grid", confirmed=False)},
        with_nas(busy=True),
        RULES,
    )
    assert "NAS plug" not in names(shutting.actions, Verb.SHED)
    assert shutting.held == (("NAS plug", "kept on: NAS is switching"),)
    down = decide(
        reading(Grid.OFF),
        14,
        shutting.memory,
        {"NAS": ShedView("off-grid")},
        with_nas(power=Power.OFF),
        RULES,
    )
    assert names(down.actions, Verb.SHED) == {"NAS plug", "Heater"}
    assert down.held == ()


@pytest.mark.parametrize(
    ("entry", "changes", "why"),
    [
        pytest.param(
            ShedView("off-grid", confirmed=False), {}, "NAS has not shut down", id="failed-fast"
        ),
        pytest.param(None, {"pin": Pin.ON}, "NAS is pinned on", id="pinned"),
        pytest.param(None, {"shed_below": 0}, "NAS is running", id="essential"),
        pytest.param(
            ShedView("off-grid"), {"busy": True}, "NAS is switching", id="restoring-or-booting"
        ),
        pytest.param(None, {"power": None}, "NAS is running", id="cannot-be-seen"),
    ],
)
def test_a_plug_is_never_cut_under_a_computer_that_is_not_down(
    entry: ShedView | None, changes: dict[str, object], why: str
) -> None:
    shed = {"NAS": entry} if entry is not None else {}
    devices = with_nas(**changes)
    memory = Memory(grid=Grid.OFF, since=0, outage=True)
    for decision in (
        decide(reading(Grid.OFF, 5), 10, memory, shed, devices, RULES),
        force_shed(on_grid_memory(), shed, devices),
    ):
        assert "NAS plug" not in names(decision.actions, Verb.SHED)
        assert decision.held == (("NAS plug", f"kept on: {why}"),)


def test_a_computer_that_cannot_be_read_is_still_sent_its_shutdown() -> None:
    devices = with_nas(power=None)
    decision = decide(reading(Grid.OFF), 10, on_grid_memory(), {}, devices, RULES)
    assert "NAS" in names(decision.actions, Verb.SHED)
    plug_unknown = (DeviceView("Lamp", 100, None),)
    assert decide(reading(Grid.OFF), 10, on_grid_memory(), {}, plug_unknown, RULES).actions == ()


def test_a_forced_shed_keeps_asking_for_what_it_could_not_switch_yet() -> None:
    forced = force_shed(on_grid_memory(), {}, NAS_HOUSE)
    assert names(forced.actions, Verb.SHED) == {"NAS", "Heater"}
    shed = {"NAS": ShedView("forced"), "Heater": ShedView("forced")}
    after = tuple(replace(d, power=Power.OFF) if d.name in shed else d for d in NAS_HOUSE)
    later = decide(reading(Grid.ON), 100, forced.memory, shed, after, RULES)
    assert names(later.actions, Verb.SHED) == {"NAS plug"}


@pytest.mark.parametrize(
    ("rule", "battery", "back"),
    [
        pytest.param(0, 50.0, True, id="essential"),
        pytest.param(30, 50.0, True, id="tier-above"),
        pytest.param(30, 20.0, False, id="tier-below"),
        pytest.param(100, 50.0, False, id="at-outage"),
    ],
)
def test_unpinning_a_kept_off_device_hands_it_back_to_its_rule_at_once(
    rule: int, battery: float, back: bool
) -> None:
    memory = Memory(grid=Grid.OFF, since=0, outage=True)
    devices = (DeviceView("Aquarium", rule, Power.OFF),)  # pinned keep off, now automatic
    shed = {"Aquarium": ShedView("pinned: keep off")}
    decision = decide(reading(Grid.OFF, battery), 10, memory, shed, devices, RULES)
    assert names(decision.actions, Verb.RESTORE) == ({"Aquarium"} if back else set())
    assert not names(decision.actions, Verb.SHED)


def test_a_forced_shed_in_the_restore_delay_ends_with_the_next_outage() -> None:
    shed = {"Heater": ShedView("off-grid")}
    memory = Memory(grid=Grid.OFF, since=0, outage=True)
    d = decide(reading(Grid.ON), 100, memory, shed, DEVICES, RULES)  # grid back: delay runs
    assert d.memory.outage and d.restore_at == 160
    forced = force_shed(d.memory, shed, DEVICES)  # pressed during the restore delay
    assert forced.memory.hold
    shed = {n: ShedView("forced") for n in ("Heater", "TV", "Freezer")}
    d = decide(reading(Grid.OFF), 200, forced.memory, shed, DEVICES, RULES)  # the next outage
    assert not d.memory.hold
    d = decide(reading(Grid.ON), 300, d.memory, shed, DEVICES, RULES)
    d = decide(reading(Grid.ON), 360, d.memory, shed, DEVICES, RULES)
    assert names(d.actions, Verb.RESTORE) == {"Heater", "TV", "Freezer"}


def test_after_a_blind_spot_longer_than_the_delay_the_restore_clock_starts_again() -> None:
    shed = {"Heater": ShedView("off-grid")}
    memory = Memory(grid=Grid.OFF, since=0, outage=True)
    d = decide(reading(Grid.ON), 100, memory, shed, DEVICES, RULES)
    d = decide(reading(Grid.UNKNOWN, None), 110, d.memory, shed, DEVICES, RULES)
    d = decide(reading(Grid.ON), 200, d.memory, shed, DEVICES, RULES)  # blind for 90 s > 60 s
    assert d.actions == () and d.restore_at == 260
    d = decide(reading(Grid.ON), 260, d.memory, shed, DEVICES, RULES)
    assert names(d.actions, Verb.RESTORE) == {"Heater"}
    short = decide(reading(Grid.ON), 100, memory, shed, DEVICES, RULES)
    short = decide(reading(Grid.UNKNOWN, None), 110, short.memory, shed, DEVICES, RULES)
    short = decide(reading(Grid.ON), 130, short.memory, shed, DEVICES, RULES)  # blind 20 s
    assert short.restore_at == 160


# --- Rule 10: more than one grid source -------------------------------------------------------

SOURCES_RULES = Rules(
    outage_confirm_s=5, restore_after_s=60, disagree_wait_s=60, secondary_confirm_s=30
)
PW_UNREADABLE = GridReading(Grid.UNKNOWN, detail="login rejected")


def canary(grid: Grid) -> GridReading:
    return GridReading(grid, raw="silent" if grid is Grid.OFF else "answering", source="canary")


def ups(grid: Grid) -> GridReading:
    return GridReading(grid, raw="OB" if grid is Grid.OFF else "OL", source="UPS", battery_pct=3.0)


def run_sources(
    steps: list[tuple[float, list[GridReading]]],
    memory: Memory | None = None,
    shed: Mapping[str, ShedView] | None = None,
    rules: Rules = SOURCES_RULES,
) -> list[tuple[float, set[str], set[str], str]]:
    """Feed readings at times; say (time, shed, restored, disagreement) after each."""
    memory = memory or on_grid_memory()
    shed = dict(shed or {})
    seen = []
    for now, readings in steps:
        decision = decide(readings, now, memory, shed, DEVICES, rules)
        memory = decision.memory
        off, back = names(decision.actions, Verb.SHED), names(decision.actions, Verb.RESTORE)
        shed |= {name: ShedView("x") for name in off}
        for name in back:
            shed.pop(name, None)
        seen.append((now, off, back, decision.disagreement))
    return seen


def test_sources_that_agree_act_as_the_powerwall_alone() -> None:
    alone = run_sources([(10, [reading(Grid.OFF)]), (15, [reading(Grid.OFF)])])
    both = run_sources(
        [(10, [reading(Grid.OFF), canary(Grid.OFF)]), (15, [reading(Grid.OFF), canary(Grid.OFF)])]
    )
    assert [(t, off) for t, off, _, _ in both] == [(t, off) for t, off, _, _ in alone]
    assert both[-1][1] == {"Heater", "TV"}


def test_a_secondary_that_cannot_tell_changes_nothing() -> None:
    steps = [
        (10, [reading(Grid.OFF), canary(Grid.UNKNOWN)]),
        (15, [reading(Grid.OFF), canary(Grid.UNKNOWN)]),
    ]
    assert run_sources(steps)[-1][1] == {"Heater", "TV"}


def test_disagreeing_sources_wait_the_named_extra_then_the_powerwall_counts() -> None:
    steps = [(t, [reading(Grid.OFF), canary(Grid.ON)]) for t in (10, 40, 69, 70, 74, 75)]
    seen = run_sources(steps)
    assert all(s[3] == "Powerwall says off grid, canary says on grid" for s in seen)
    shed_at = [t for t, off, _, _ in seen if off]
    assert shed_at == [75]  # 10 + disagree_wait_s 60 + outage_confirm_s 5


def test_a_disagreement_while_on_grid_does_not_restore_early_or_shed() -> None:
    shed = {"Heater": ShedView("off-grid")}
    memory = Memory(grid=Grid.OFF, since=0, outage=True)
    steps = [(t, [reading(Grid.ON), canary(Grid.OFF)]) for t in (100, 159, 160, 219, 220)]
    seen = run_sources(steps, memory, shed)
    assert not any(off for _, off, _, _ in seen)
    assert [t for t, _, back, _ in seen if back] == [220]  # 100 + 60 wait + 60 restore delay


def test_powerwall_unreadable_a_secondary_alone_sheds_after_its_longer_confirm() -> None:
    steps = [(t, [PW_UNREADABLE, canary(Grid.OFF)]) for t in (10, 39, 40, 44, 45)]
    seen = run_sources(steps)
    assert [t for t, off, _, _ in seen if off] == [45]  # 10 + 30 secondary confirm + 5


def test_powerwall_unreadable_a_secondary_restores_only_after_the_whole_delay() -> None:
    shed = {"Heater": ShedView("off-grid"), "TV": ShedView("off-grid")}
    memory = Memory(grid=Grid.OFF, since=0, outage=True)
    steps = [(t, [PW_UNREADABLE, canary(Grid.ON)]) for t in (100, 130, 159, 160)]
    seen = run_sources(steps, memory, shed)
    assert [t for t, _, back, _ in seen if back] == [160]


def test_a_secondary_blip_restarts_its_clock() -> None:
    steps = [
        (10, [PW_UNREADABLE, canary(Grid.OFF)]),
        (30, [PW_UNREADABLE, canary(Grid.UNKNOWN)]),  # the canary's network blinked
        (31, [PW_UNREADABLE, canary(Grid.OFF)]),
        (45, [PW_UNREADABLE, canary(Grid.OFF)]),
        (66, [PW_UNREADABLE, canary(Grid.OFF)]),
    ]
    assert [t for t, off, _, _ in run_sources(steps) if off] == [66]  # 31 + 30 + 5


def test_secondaries_that_disagree_among_themselves_decide_nothing() -> None:
    steps = [(t, [PW_UNREADABLE, canary(Grid.OFF), ups(Grid.ON)]) for t in (10, 100, 500)]
    assert not any(off or back for _, off, back, _ in run_sources(steps))


def test_a_ups_battery_is_never_taken_for_the_powerwall_charge() -> None:
    steps = [(t, [PW_UNREADABLE, ups(Grid.OFF)]) for t in (10, 45)]
    seen = run_sources(steps)
    assert seen[-1][1] == {"Heater", "TV"}  # the Freezer's 30 % tier waits for the Powerwall


def test_the_powerwall_unreadable_is_counted_even_when_a_secondary_decides() -> None:
    memory = on_grid_memory()
    first = decide([PW_UNREADABLE, canary(Grid.ON)], 100, memory, {}, DEVICES, SOURCES_RULES)
    later = decide([PW_UNREADABLE, canary(Grid.ON)], 107, first.memory, {}, DEVICES, SOURCES_RULES)
    assert later.unknown_for_s == 7
    assert later.reading is not None and later.reading.source == "canary"
