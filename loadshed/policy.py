"""Decide what to shed and restore. Pure: no I/O, no clock, no globals.

Everything arrives as arguments — the latest grid reading, the time, what the policy remembers,
what is shed now and why, every device's rule and last known power — and a `Decision` comes back:
the actions, each with its reason, and the new memory.

Rule 1: never shed or restore while the grid is UNKNOWN; keep what is.
Rule 2: an essential device (rule 0) is never switched off, not even when forced.
Rule 3: off-grid for `outage_confirm_s` → shed every device whose rule is 100 ("shed at
        outage"), and every device whose rule is 1-99 once the battery is below that %.
Rule 4: during the same outage, a device shed for low battery comes back once the battery
        climbs above its % + TIER_HYSTERESIS_PCT (solar).
Rule 5: on-grid continuously for `restore_after_s` → restore everything loadshed shed. A
        SystemTransitionToGrid reading is off-grid, so it (like any drop) restarts the clock.
        UNKNOWN readings in between neither restart nor complete it — unless they last longer
        than `restore_after_s`: then the clock starts again at the first on-grid reading.
Rule 6: a device is switched off only when it was seen on (a device already off before the
        outage is never recorded, so never switched on); a shed whose switch was not confirmed
        is asked for again (the engine spaces the retries). A computer whose state cannot be
        read (`shed_unseen`) is still sent its shutdown: ssh's own answer then decides.
Rule 7: forced shed sheds every non-essential device and holds them off — no automatic restore
        — until a forced restore or the end of the next outage. Forced restore brings back
        everything loadshed shed; during an outage it also pauses automatic shedding until the
        grid is back.
Rule 8: the owner's pins win over every rule above, whatever the grid: a device pinned "keep
        on" is never shed and is brought back now if it was; one pinned "keep off" is switched
        off now and never brought back until unpinned. Unpinned, it goes back to its rule at
        once: brought back now unless that rule has it off now.
Rule 9: a plug that feeds computers (`feeds`) is switched off only once every one of them is
        down: its shutdown confirmed (seen silent, or its bounded wait over), or seen off
        without one. Never while one is switching or booting, pinned "keep on", failed its
        shutdown, or was never sent one. Until then the plug is `held`, and says why.
Rule 10: the Powerwall is the primary grid source; canary plugs and a UPS are secondary ones.
        The first reading given is the primary's. When the sources agree (or the others cannot
        tell), the Powerwall decides as above. When a secondary that can tell disagrees with a
        Powerwall that can, nothing changes for `disagree_wait_s`, then the Powerwall's word
        counts (so a shed waits `disagree_wait_s` + `outage_confirm_s`), and the decision says
        who says what. When the Powerwall cannot be read, the secondaries decide only if every
        one that can tell agrees: off grid once they have said so for `secondary_confirm_s`
        (then `outage_confirm_s` as usual), on grid counted from when they first saw it (so a
        restore needs them to have seen the grid back for the whole `restore_after_s`). A
        secondary's own battery is never the Powerwall's: battery tiers wait for the Powerwall.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Final

from loadshed.model import Action, Grid, GridReading, Pin, Power, Verb

ESSENTIAL: Final = 0
AT_OUTAGE: Final = 100
TIER_HYSTERESIS_PCT: Final = 10  # a tier device comes back only this far above its threshold
UNKNOWN_POLLS: Final = 3  # unreadable this many polls in a row: tell the owner
DISAGREE_WAIT_S: Final = 60.0  # sources disagree: the Powerwall's word counts only after this
SECONDARY_CONFIRM_S: Final = 30.0  # the Powerwall unreadable: a secondary alone sheds after this

OFF_GRID: Final = "off-grid"
FORCED: Final = "forced"
PINNED_ON: Final = "pinned: keep on"
PINNED_OFF: Final = "pinned: keep off"


@dataclass(frozen=True, slots=True)
class Rules:
    """The timings the policy needs from the config."""

    poll_s: float = 2.0
    outage_confirm_s: float = 0.0
    restore_after_s: float = 60.0
    disagree_wait_s: float = DISAGREE_WAIT_S
    secondary_confirm_s: float = SECONDARY_CONFIRM_S


@dataclass(frozen=True, slots=True)
class DeviceView:
    """What the policy knows of one device."""

    name: str
    shed_below: int  # 0 essential, 1-99 shed below that battery %, 100 shed at outage
    power: Power | None  # last power read; None: never read, or cannot be read
    pin: Pin | None = None  # the owner's override
    shed_unseen: bool = False  # a computer: sent its shutdown even when power is unknown
    feeds: tuple[str, ...] = ()  # a plug: the computers it powers (computers.txt powered_by=)
    busy: bool = False  # an action is in flight on it


@dataclass(frozen=True, slots=True)
class ShedView:
    """A device loadshed switched off (or began to): from the state store."""

    reason: str
    confirmed: bool = True  # the switch was seen to go off
    tier: int | None = None  # shed for low battery at this %, so it may return during the outage


@dataclass(frozen=True, slots=True)
class Memory:
    """What the policy carries from one call to the next. Start with `Memory()`.

    `grid` and `since` are the last known grid state and when it began (the caller's clock);
    `unknown_since` is when the grid became unknown (every source unreadable or undecided),
    `primary_unknown_since` when the Powerwall became unreadable. `sources` holds each source's
    last reading and when it began; `disagree_since` when the sources began to disagree.
    `hold` and `paused` come from forced commands and outlive restarts (the engine persists
    them).
    """

    grid: Grid = Grid.UNKNOWN
    since: float | None = None
    unknown_since: float | None = None
    outage: bool = False  # an outage was confirmed and the grid has not been back for long
    hold: bool = False
    paused: bool = False
    primary_unknown_since: float | None = None
    sources: tuple[tuple[str, Grid, float], ...] = ()  # (source, its reading, since when)
    disagree_since: float | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    actions: tuple[Action, ...]
    memory: Memory
    restore_at: float | None = None  # when the pending grid-back restore is due
    shed_at: float | None = None  # when the pending outage confirmation is due
    unknown_for_s: float = 0.0  # how long the Powerwall has been unreadable
    changed: Grid | None = None  # the grid changed to this (not on the first reading)
    held: tuple[tuple[str, str], ...] = ()  # plugs kept on for their computers, and why
    reading: GridReading | None = None  # what the decision went by (Rule 10), None: unknown
    disagreement: str = ""  # the sources disagree: who says what (Rule 10)
    disagree_until: float | None = None  # when the Powerwall's word counts again


def decide(
    readings: GridReading | Sequence[GridReading],
    now: float,
    memory: Memory,
    shed: Mapping[str, ShedView],
    devices: Sequence[DeviceView],
    rules: Rules,
) -> Decision:
    """Return the actions to take now, with reasons, and the memory to pass next time.

    `readings`: the Powerwall's reading, or the Powerwall's then the secondary sources' (Rule
    10)."""
    primary, others = _split(readings)
    memory = _track(primary, others, now, memory)
    agreed = _agree(primary, others, now, memory, rules)
    memory = agreed.memory
    if agreed.waiting:
        decision = Decision((), memory)
    else:
        decision = _decide(agreed.reading, now, memory, shed, devices, rules, agreed.since)
        if agreed.reading.grid is not Grid.UNKNOWN:
            decision = _unpinned(decision, agreed.reading, shed, devices)
    primary_unknown = decision.memory.primary_unknown_since
    decision = replace(
        decision,
        reading=agreed.reading if agreed.reading.grid is not Grid.UNKNOWN else None,
        disagreement=agreed.disagreement,
        disagree_until=agreed.until,
        unknown_for_s=now - primary_unknown if primary_unknown is not None else 0.0,
    )
    return _hold_plugs(_with_pins(decision, shed, devices), shed, devices)


@dataclass(frozen=True, slots=True)
class _Agreed:
    """What the sources add up to (Rule 10)."""

    reading: GridReading  # the reading to decide by
    memory: Memory
    since: float | None = None  # when its grid state began, if not now
    waiting: bool = False  # the sources disagree: keep what is
    disagreement: str = ""
    until: float | None = None


def _split(readings: GridReading | Sequence[GridReading]) -> tuple[GridReading, list[GridReading]]:
    if isinstance(readings, GridReading):
        return readings, []
    primary, *others = readings
    return primary, others


def _track(
    primary: GridReading, others: Sequence[GridReading], now: float, memory: Memory
) -> Memory:
    """Note since when each source has said what it says now."""
    before = {name: (grid, since) for name, grid, since in memory.sources}
    sources = []
    for reading in others:
        grid, since = before.get(reading.source, (None, now))
        sources.append((reading.source, reading.grid, since if grid is reading.grid else now))
    primary_unknown = None
    if primary.grid is Grid.UNKNOWN:
        primary_unknown = memory.primary_unknown_since
        primary_unknown = now if primary_unknown is None else primary_unknown
    return replace(memory, sources=tuple(sources), primary_unknown_since=primary_unknown)


def _agree(
    primary: GridReading,
    others: Sequence[GridReading],
    now: float,
    memory: Memory,
    rules: Rules,
) -> _Agreed:
    """Rule 10: the reading to decide by, from the Powerwall's and the secondaries'."""
    telling = [r for r in others if r.grid is not Grid.UNKNOWN]
    if primary.grid is not Grid.UNKNOWN:
        against = [r for r in telling if r.grid is not primary.grid]
        if not against:
            return _Agreed(primary, replace(memory, disagree_since=None))
        started = memory.disagree_since if memory.disagree_since is not None else now
        memory = replace(memory, disagree_since=started)
        says = ", ".join(f"{r.source} says {_words(r.grid)}" for r in against)
        disagreement = f"{primary.source} says {_words(primary.grid)}, {says}"
        until = started + rules.disagree_wait_s
        waiting = now < until
        return _Agreed(primary, memory, None, waiting, disagreement, until)
    memory = replace(memory, disagree_since=None)
    grids = {r.grid for r in telling}
    if len(grids) != 1:
        return _Agreed(primary, memory)  # none can tell, or they disagree among themselves
    (grid,) = grids
    since_of = {name: since for name, _, since in memory.sources}
    since = max(since_of.get(r.source, now) for r in telling)
    names = " and ".join(r.source for r in telling)
    raw = "; ".join(f"{r.source}: {r.raw}" for r in telling)
    secondary = GridReading(grid, raw=raw, detail=f"the Powerwall cannot be read; {names} decide")
    secondary = replace(secondary, source=names)
    if grid is Grid.OFF:
        confirmed_at = since + rules.secondary_confirm_s
        if now < confirmed_at:
            return _Agreed(primary, memory)
        return _Agreed(secondary, memory, confirmed_at)
    return _Agreed(secondary, memory, since)


def _words(grid: Grid) -> str:
    return {Grid.ON: "on grid", Grid.OFF: "off grid"}.get(grid, "unknown")


def _unpinned(
    decision: Decision,
    reading: GridReading,
    shed: Mapping[str, ShedView],
    devices: Sequence[DeviceView],
) -> Decision:
    """Rule 8, unpinning: a device its "keep off" pin switched off goes back to its rule at
    once — on now, unless that rule would have it off now."""
    asked = {a.device for a in decision.actions}
    memory = decision.memory
    actions = list(decision.actions)
    for device in devices:
        entry = shed.get(device.name)
        if device.pin is not None or entry is None or entry.reason != PINNED_OFF:
            continue
        if device.name in asked or _rule_wants_off(device, reading.battery_pct, memory):
            continue
        actions.append(Action(Verb.RESTORE, device.name, "unpinned: back to its rule"))
    return replace(decision, actions=tuple(actions))


def _rule_wants_off(device: DeviceView, battery: float | None, memory: Memory) -> bool:
    """Whether the device's own rule has it off now (an outage confirmed, or a forced shed)."""
    if device.shed_below <= ESSENTIAL:
        return False
    if memory.hold:
        return True
    if not (memory.grid is Grid.OFF and memory.outage) or memory.paused:
        return False
    if device.shed_below >= AT_OUTAGE:
        return True
    return battery is None or battery < device.shed_below


def _hold_plugs(
    decision: Decision, shed: Mapping[str, ShedView], devices: Sequence[DeviceView]
) -> Decision:
    """Rule 9: no plug is cut under a computer that is not down."""
    views = {d.name: d for d in devices}
    held: list[tuple[str, str]] = []
    actions: list[Action] = []
    for action in decision.actions:
        device = views.get(action.device)
        if action.verb is Verb.SHED and device is not None and device.feeds:
            waiting = [n for n in device.feeds if not _is_down(views.get(n), shed.get(n))]
            if waiting:
                held.append((action.device, _why_held(waiting, views, shed)))
                continue
        actions.append(action)
    return replace(decision, actions=tuple(actions), held=tuple(held))


def _is_down(computer: DeviceView | None, entry: ShedView | None) -> bool:
    if computer is None:
        return True  # not a device loadshed knows: nothing of its to protect
    if computer.busy or computer.pin is Pin.ON:
        return False
    if entry is not None:
        return entry.confirmed
    return computer.power is Power.OFF


def _why_held(
    waiting: Sequence[str], views: Mapping[str, DeviceView], shed: Mapping[str, ShedView]
) -> str:
    parts = []
    for name in waiting:
        view, entry = views.get(name), shed.get(name)
        if view is not None and view.pin is Pin.ON:
            parts.append(f"{name} is pinned on")
        elif view is not None and view.busy:
            parts.append(f"{name} is switching")
        elif entry is not None:
            parts.append(f"{name} has not shut down")
        else:
            parts.append(f"{name} is running")
    return "kept on: " + ", ".join(parts)


def _with_pins(
    decision: Decision, shed: Mapping[str, ShedView], devices: Sequence[DeviceView]
) -> Decision:
    """Rule 8: drop automatic actions on pinned devices; add what the pins ask for."""
    pins = {d.name: d.pin for d in devices if d.pin is not None}
    if not pins:
        return decision
    actions = [a for a in decision.actions if a.device not in pins]
    for device in devices:
        entry = shed.get(device.name)
        if device.pin is Pin.ON and entry is not None:
            actions.append(Action(Verb.RESTORE, device.name, PINNED_ON))
        elif device.pin is Pin.OFF and _wants_switching_off(device, entry):
            actions.append(Action(Verb.SHED, device.name, PINNED_OFF))
    return replace(decision, actions=tuple(actions))


def _decide(
    reading: GridReading,
    now: float,
    memory: Memory,
    shed: Mapping[str, ShedView],
    devices: Sequence[DeviceView],
    rules: Rules,
    began: float | None = None,
) -> Decision:
    if reading.grid is Grid.UNKNOWN:
        unknown_since = memory.unknown_since if memory.unknown_since is not None else now
        memory = replace(memory, unknown_since=unknown_since)
        return Decision((), memory)

    changed = None
    if reading.grid is not memory.grid:
        if memory.grid is not Grid.UNKNOWN:
            changed = reading.grid
        since_then = began if began is not None else now
        memory = replace(memory, grid=reading.grid, since=since_then, unknown_since=None)
    elif (
        reading.grid is Grid.ON
        and memory.unknown_since is not None
        and now - memory.unknown_since > rules.restore_after_s
    ):
        # Blind for longer than the restore delay: the grid may have dropped and come back
        # meanwhile. The restore clock starts again from this reading (Rule 5).
        memory = replace(memory, since=now, unknown_since=None)
    else:
        memory = replace(memory, unknown_since=None)
    since = memory.since if memory.since is not None else now

    if reading.grid is Grid.OFF:
        return _off_grid(reading, now, since, memory, shed, devices, rules, changed)
    return _on_grid(now, since, memory, shed, devices, rules, changed)


def _off_grid(
    reading: GridReading,
    now: float,
    since: float,
    memory: Memory,
    shed: Mapping[str, ShedView],
    devices: Sequence[DeviceView],
    rules: Rules,
    changed: Grid | None,
) -> Decision:
    confirm_at = since + rules.outage_confirm_s
    if now < confirm_at:
        return Decision((), memory, shed_at=confirm_at, changed=changed)
    # A confirmed outage ends any hold from a forced shed (even one pressed during the last
    # restore delay, before `outage` was cleared): its restore is the grid's (Rule 7).
    memory = replace(memory, outage=True, hold=False)
    if memory.paused:
        return Decision((), memory, changed=changed)

    battery = reading.battery_pct
    actions: list[Action] = []
    for device in devices:
        rule = device.shed_below
        entry = shed.get(device.name)
        if rule <= ESSENTIAL:
            continue
        if rule >= AT_OUTAGE:
            if _wants_switching_off(device, entry):
                actions.append(Action(Verb.SHED, device.name, OFF_GRID))
            continue
        if battery is None:
            continue  # a tier needs the charge; keep what is until it can be read
        if battery < rule:
            if _wants_switching_off(device, entry):
                actions.append(
                    Action(
                        Verb.SHED, device.name, f"battery {_pct(battery, math.floor)} % < {rule} %"
                    )
                )
        elif entry is not None and entry.tier is not None:
            back_above = entry.tier + TIER_HYSTERESIS_PCT
            if battery > back_above:
                reason = f"battery {_pct(battery, math.ceil)} % > {back_above} %"
                actions.append(Action(Verb.RESTORE, device.name, reason))
    return Decision(tuple(actions), memory, changed=changed)


def _wants_switching_off(device: DeviceView, entry: ShedView | None) -> bool:
    """Rule 6: switch off what is seen on, and retry a switch not seen to go off."""
    if device.power is Power.ON or (device.power is None and device.shed_unseen):
        return True
    return entry is not None and not entry.confirmed


def _on_grid(
    now: float,
    since: float,
    memory: Memory,
    shed: Mapping[str, ShedView],
    devices: Sequence[DeviceView],
    rules: Rules,
    changed: Grid | None,
) -> Decision:
    memory = replace(memory, paused=False)
    if memory.hold:
        # A forced shed holds: what it could not switch yet (a plug waiting for its computer,
        # a failed switch) is asked for again, as in an outage.
        return Decision(_forced_sheds(shed, devices, FORCED), memory, changed=changed)
    if not shed:
        return Decision((), replace(memory, outage=False), changed=changed)
    restore_at = since + rules.restore_after_s
    if now < restore_at:
        return Decision((), memory, restore_at=restore_at, changed=changed)
    reason = f"grid back for {rules.restore_after_s:g} s"
    actions = tuple(Action(Verb.RESTORE, name, reason) for name in sorted(shed))
    return Decision(actions, replace(memory, outage=False), changed=changed)


def observe(readings: GridReading | Sequence[GridReading], now: float, memory: Memory) -> Memory:
    """Take in a reading without acting on it (loadshed's first, at start): so the next
    reading that differs is a change, and says so. Only the Powerwall's sets the grid."""
    primary, others = _split(readings)
    sources = _track(primary, others, now, memory).sources
    memory = replace(memory, sources=sources) if sources != memory.sources else memory
    if primary.grid is Grid.UNKNOWN or primary.grid is memory.grid:
        return memory
    return replace(memory, grid=primary.grid, since=now, unknown_since=None)


def force_shed(
    memory: Memory,
    shed: Mapping[str, ShedView],
    devices: Sequence[DeviceView],
    reason: str = FORCED,
) -> Decision:
    """Shed every non-essential device now, whatever the grid, and hold them off."""
    held = memory.grid is not Grid.OFF or not memory.outage
    decision = Decision(
        _forced_sheds(shed, devices, reason),
        replace(memory, hold=held or memory.hold, paused=False),
    )
    return _hold_plugs(_with_pins(decision, shed, devices), shed, devices)


def _forced_sheds(
    shed: Mapping[str, ShedView], devices: Sequence[DeviceView], reason: str
) -> tuple[Action, ...]:
    return tuple(
        Action(Verb.SHED, d.name, reason)
        for d in devices
        if d.shed_below > ESSENTIAL and _wants_switching_off(d, shed.get(d.name))
    )


def force_restore(
    memory: Memory,
    shed: Mapping[str, ShedView],
    devices: Sequence[DeviceView] = (),
    reason: str = FORCED,
) -> Decision:
    """Bring back everything loadshed shed; during an outage, pause automatic shedding."""
    actions = tuple(Action(Verb.RESTORE, name, reason) for name in sorted(shed))
    paused = memory.grid is Grid.OFF and memory.outage
    decision = Decision(actions, replace(memory, hold=False, paused=paused))
    return _hold_plugs(_with_pins(decision, shed, devices), shed, devices)


def _pct(battery: float, towards: Callable[[float], int]) -> str:
    """A battery % for a reason, to one decimal rounded away from the threshold, never "30 < 30"."""
    return f"{towards(battery * 10) / 10:g}"


def tier_of(reason: str, shed_below: int) -> int | None:
    """The tier a shed belongs to: its % when shed for low battery, else None."""
    return (
        shed_below if ESSENTIAL < shed_below < AT_OUTAGE and reason.startswith("battery") else None
    )
