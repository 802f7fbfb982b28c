"""The engine: poll the Powerwall, ask the policy, switch, remember, publish. One asyncio loop.

Each poll feeds the latest reading to `policy.decide`; the actions go to the shedder part of
this module, which runs them concurrently, each bounded by its driver's timeout, and never in
the poll's way: a hung plug holds its own task and nobody else. A failed device is tried again
on later polls, spaced by a growing back-off.

State before switches: the intent to switch a device off is written to state.json before the
switch is thrown; the outcome (confirmed off, or failed) follows. A restart reads it back and
carries on. Commands (force shed, force restore, quit) arrive on a queue.Queue; the published
`Snapshot` is immutable and replaced whole, the only thing the UI reads.

Must not: block the loop on a device; act on an unknown grid; raise out of `run`.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import queue
import time
import traceback
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any, Final

from loadshed import policy, sources
from loadshed.canary import CanarySource
from loadshed.computers import Computer
from loadshed.config import Config
from loadshed.devices import Device, Placeholder, Registry
from loadshed.drivers.computer import ComputerSwitch
from loadshed.drivers.reach import Liveness
from loadshed.errors import ConfigError
from loadshed.gridlog import GridLog, pct
from loadshed.model import (
    CANARY,
    UPS,
    Action,
    Event,
    EventKind,
    Grid,
    GridReading,
    Kind,
    Outcome,
    Pin,
    Power,
    Status,
    Verb,
)
from loadshed.state import EVENTS_LOGGER, ShedEntry, State, StateStore
from loadshed.trust import TRUST_FILE, Trust

_LOG = logging.getLogger(__name__)
_EVENTS = logging.getLogger(EVENTS_LOGGER)

DEVICE_REFRESH_S: Final = 30.0  # re-read every device this often, to see hand switching
RETRY_FIRST_S: Final = 2.0  # a failed device is tried again after this, doubling ...
RETRY_MAX_S: Final = 60.0  # ... up to once a minute: a plug back on the network is found soon
RETRY_DOUBLINGS_MAX: Final = 16  # the exponent's cap: far past RETRY_MAX_S already
RESULTS_KEPT: Final = 1000  # outcomes kept for one-shot commands' reports; a daemon drops older
ALIVE_POLLS: Final = 3  # the poll loop counts as alive while its last round is this recent
ALREADY_OFF: Final = "already off (by hand?): left off, and not restored after the outage"
FRESH_READ_S: Final = 5.0  # a plug read longer ago than this is read again before its shed
PLUG_CYCLE_S: Final = 10.0  # a plug feeding a computer stays off this long, so the BIOS's
# "power on after AC loss" sees a real power loss when it comes back on
QUIT_WAIT_S: Final = 10.0  # on quit, how long switches in flight may take to finish
RECENT_EVENTS: Final = 8  # lines kept for the screen
FAILURES_BEFORE_ALERT: Final = 3  # a device failing this many times in a row is worth a text


class CommandKind(Enum):
    FORCE_SHED = "force shed"
    FORCE_RESTORE = "force restore"
    PIN = "pin"
    QUIT = "quit"


@dataclass(frozen=True, slots=True)
class Command:
    kind: CommandKind
    origin: str = "keyboard"  # said in the reason: "forced from keyboard"
    device: str = ""  # PIN: which device
    pin: Pin | None = None  # PIN: keep on, keep off, or None for automatic


@dataclass(frozen=True, slots=True)
class DeviceRow:
    """One device on the screen."""

    name: str
    kind: Kind
    address: str
    rule: int
    power: Power | None
    status: Status | None
    detail: str = ""
    watts: float | None = None
    shed_reason: str | None = None  # loadshed switched it off, and why
    busy: Verb | None = None
    pin: Pin | None = None
    note: str = ""  # what keeps it as it is: "kept on: NAS is running"
    # Its draw as last measured while on: kept while it switches and while it is off, so an
    # estimate need not wait for the next read. None: never measured.
    draw_w: float | None = None
    # Whether it was on at the last settled reading, so its draw is in Snapshot.load_settled_w.
    # None: not known; take its power now.
    in_load: bool | None = None
    power_since: float | None = None  # wall clock it was last seen switched on or off; None: not

    LOAD_LAG_S = 2.0  # a Powerwall reading this soon after a switch may not show it yet


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The whole house at one moment, for the screen. Immutable; replaced whole."""

    taken_at: float  # wall clock
    reading: GridReading
    devices: tuple[DeviceRow, ...] = ()
    grid_since: float | None = None  # wall clock when the present grid state began
    outage_since: float | None = None  # wall clock when the outage began
    unknown_since: float | None = None  # wall clock since the Powerwall became unreadable
    restore_at: float | None = None  # wall clock when the grid-back restore is due
    shed_at: float | None = None  # wall clock when an outage will be confirmed
    hold: bool = False
    paused: bool = False
    dry_run: bool = False
    events: tuple[str, ...] = ()  # "HH:MM what happened", oldest first, the last EVENTS_KEPT
    started: bool = False  # the first reads are done
    problems: tuple[str, ...] = ()  # loadshed's own trouble, for the owner: "cannot write ..."
    sources: tuple[SourceRow, ...] = ()  # the secondary grid sources (the Powerwall is `reading`)
    decided_by: GridReading | None = None  # the reading decisions go by, when not `reading`
    disagreement: str = ""  # the grid sources disagree: who says what
    event_times: tuple[float, ...] = ()  # wall clock each line of `events` was said
    outage_event: str = ""  # the line of `events` that began the present outage ("grid lost")
    outage_event_at: float | None = None  # wall clock it was said
    # The Powerwall's load at the last reading taken with no device switching, nor switched in
    # the DeviceRow.LOAD_LAG_S before: the load each device's `in_load` and draw belong to.
    load_settled_w: float | None = None

    EVENTS_KEPT = 100  # lines for the screen's events pane: enough to fill a tall terminal


@dataclass(frozen=True, slots=True)
class SourceRow:
    """A secondary grid source as the screen shows it: its last reading and how old it is."""

    name: str
    endpoint: str
    reading: GridReading
    age_s: float | None  # None: not read yet


@dataclass
class _Batch:
    """One shed or restore as the owner hears of it: the actions of one grid change or command,
    those started late included (a plug cut after its computer is down, a computer restored
    after its shutdown); one event when the last of them ends."""

    verb: Verb
    kind: EventKind | None  # None: retries, which are logged but not announced
    battery_pct: float | None
    left: int = 0
    done: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    def succeeded(self, name: str) -> None:
        """One action ended well: a retry's success replaces its earlier failure."""
        self.left -= 1
        self.failed = [(n, why) for n, why in self.failed if n != name]
        self.done.append(name)

    def failed_on(self, name: str, why: str) -> None:
        self.left -= 1
        self.failed = [(n, was) for n, was in self.failed if n != name] + [(name, why)]


class Engine:
    """The loop's work. Everything here runs on one event loop."""

    def __init__(
        self,
        config: Config,
        store: StateStore | None,
        *,
        computers: Sequence[Computer] = (),
        computers_path: Path = Path("computers.txt"),
        dry_run: bool = False,
        on_event: Callable[[Event], None] | None = None,
        on_snapshot: Callable[[Snapshot], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.dry_run = dry_run
        self.clock = clock
        self.wall = wall
        self._on_event = on_event
        self._on_snapshot = on_snapshot
        self.rules = policy.Rules(
            config.poll_s,
            config.outage_confirm_s,
            config.restore_after_s,
            config.disagree_wait_s,
            config.secondary_confirm_s,
        )
        self.registry = Registry(config, computers, computers_path=computers_path)
        trust = Trust(store.dir / TRUST_FILE) if store is not None else None
        self.grid = sources.primary(config, trust, clock)
        self.secondaries = sources.secondaries(config, self.registry)
        self.latest: dict[int, sources.Latest] = {}  # by index in secondaries
        self.state = State()
        self.memory = policy.Memory()
        self.reading = GridReading(Grid.UNKNOWN, detail="not read yet", status=Status.UNREACHABLE)
        self.snapshot = Snapshot(taken_at=wall(), reading=self.reading, dry_run=dry_run)
        self._decision = policy.Decision((), self.memory)
        self._tasks: set[asyncio.Task[None]] = set()
        self._inflight: dict[str, tuple[Action, asyncio.Task[None]]] = {}
        self._started_switching: set[str] = set()  # in flight and past their dependencies
        self._deferred: dict[str, Action] = {}  # forced actions waiting for a busy device
        self._held: dict[str, str] = {}  # plugs kept on for their computers (policy Rule 9)
        self._open: dict[EventKind, _Batch] = {}  # announced batches not yet told
        self._closing = False
        self._reaching: asyncio.Task[ConfigError | None] | None = None  # devices still joining
        self._recent: list[str] = []
        self.gridlog = GridLog(config.poll_s, wall=wall, say=self._say, tell=self._emit_kind)
        self._save_pending = False
        self._dirty = False  # the state in memory is newer than state.json (a failed write)
        self.disk_problem: str | None = None
        self._name_problems: list[str] = []  # said once each: name clashes, SHED_BELOW typos
        self._started = False
        self._polled_at = clock()  # the poll loop's last round (the systemd watchdog asks)
        self.result_listeners: set[Callable[[Action, Outcome], None]] = set()  # control clients
        # every action's outcome, in order (the last RESULTS_KEPT: a daemon runs for years)
        self.results: collections.deque[tuple[Action, Outcome]] = collections.deque(
            maxlen=RESULTS_KEPT
        )

    # --- start and stop -----------------------------------------------------------------------

    async def start(self, *, first_decision_s: float | None = None) -> None:
        """Load the state, read the grid, reach every device and read its real state.

        With `first_decision_s` (the daemon), the first decision waits for the Powerwall, not
        for every device: devices still being reached after that long (one poll when the house
        is already off grid) join as they answer, each with a decision of its own. Without it
        (one-shot commands), every device is reached first.
        """
        if self.store is not None:
            self.state = self.store.load()
            for problem in self.store.problems:  # state.json was damaged: set aside, said here
                self._say(problem, logging.ERROR, event=True)
                self._emit_kind(EventKind.ATTENTION, problem)
            if self.state.shed:
                names = ", ".join(sorted(self.state.shed))
                self._say(f"state.json: loadshed had switched off {names}")
        self.memory = replace(self.memory, hold=self.state.hold, paused=self.state.paused)
        reach = asyncio.create_task(self._reach_all())
        self.reading = await self.grid.read()
        if first_decision_s is None:
            await reach
        else:
            bound = first_decision_s if self.reading.grid is Grid.ON else self.config.poll_s
            await asyncio.wait([reach], timeout=bound)
        if reach.done():
            error = reach.result()
            if error is not None:
                raise error
            self._check_names()
        else:
            self._reaching = reach
            reach.add_done_callback(self._reached)
        self._started = True
        self.memory = policy.observe(self.reading, self.clock(), self.memory)
        self.gridlog.start(self.reading)
        devices = self.registry.devices.values()
        essential = sum(d.rule <= policy.ESSENTIAL for d in devices)
        grid = self.reading.grid.value if self.reading.status is Status.OK else self.reading.detail
        waiting = len(self.registry.pending) + sum(d.status is None for d in devices)
        self._say(
            f"ready: {len(devices)} devices ({essential} essential), {grid}, "
            f"battery {pct(self.reading)}" + (f"; {waiting} still being reached" if waiting else "")
        )
        self._publish()

    async def _reach_all(self) -> ConfigError | None:
        """Connect every Kasa host and read every device, each as soon as it answers; the
        first config error found on the way (a powered_by naming no plug), if any."""

        async def read(names: Sequence[str]) -> None:
            await self.registry.read(list(names))
            self._read_now(names)
            self._reconcile_reads(names)
            for name in names:
                device = self.registry.devices[name]
                if device.status is not Status.OK and name not in self.registry.computers:
                    self._say(f"{name}: {device.detail}", logging.WARNING)
            if self._started and not self._closing:
                self.decide()  # a device that joins late is decided on at once

        async def connect(placeholder: Placeholder) -> None:
            added = await self.registry.connect_one(placeholder)
            self._rekey_state()
            if placeholder in self.registry.pending:
                self._say(f"Kasa {placeholder.host.address}: {placeholder.detail}", logging.WARNING)
            await read(added)

        await asyncio.gather(
            *(read([name]) for name in list(self.registry.devices)),
            *(connect(p) for p in list(self.registry.pending)),
        )
        return self.registry.link_error()

    def _reached(self, task: asyncio.Task[ConfigError | None]) -> None:
        """The devices reached after the first decision: a late config error is said loudly."""
        self._reaching = None
        if task.cancelled():
            return
        error = task.exception() or task.result()
        if error is not None:
            self._say(str(error), logging.ERROR, event=True)
            self._emit_kind(EventKind.ATTENTION, str(error))
        self._check_names()
        self._publish()

    def _rekey_state(self) -> None:
        """Match state.json's entries on name *and* address: when two devices share a name, an
        entry belongs to the one at the address it recorded, whichever answered first."""
        entries = dict(self.state.shed)
        moved = False
        for name, entry in list(entries.items()):
            device = self.registry.devices.get(name)
            if device is not None and device.switch.address == entry.address:
                continue
            owner = next(
                (
                    n
                    for n, d in self.registry.devices.items()
                    if d.switch.address == entry.address and d.switch.kind is entry.kind
                ),
                None,
            )
            if owner is not None and owner != name and owner not in entries:
                entries[owner] = replace(entries.pop(name), name=owner)
                moved = True
        if moved:
            self._set_state(replace(self.state, shed=entries))

    def _check_names(self) -> None:
        """Say, once each, what makes a name mean the wrong device: two devices with one name
        (each keeps its own rule), a SHED_BELOW name no device has (it falls to the default)."""
        for said in (*map(str, self.registry.clashes), *self.registry.rule_typos()):
            if said not in self._name_problems:
                self._name_problems.append(said)
                self._say(said, logging.WARNING, event=True)
                self._emit_kind(EventKind.ATTENTION, said)

    async def close(self) -> None:
        """Let switches in flight finish (bounded), write the state, release everything."""
        self._closing = True
        if self._reaching is not None:
            self._reaching.cancel()
            await asyncio.gather(self._reaching, return_exceptions=True)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=QUIT_WAIT_S)
        self._flush()
        if self.state.shed and self._started and not self.dry_run:
            names = ", ".join(sorted(self.state.shed))
            until = (
                "until `loadshed restore`"
                if self.memory.hold
                else "and the next `loadshed run` restores them once the grid is back"
            )
            self._say(
                f"stopping with {len(self.state.shed)} devices switched off ({names}): they "
                f"stay off, {until}"
            )
        await asyncio.gather(
            self.registry.close(),
            self.grid.close(),
            *(source.close() for source in self.secondaries),
            return_exceptions=True,
        )

    # --- the loop -----------------------------------------------------------------------------

    async def run(self, commands: queue.Queue[Command], wake: asyncio.Event) -> None:
        """Poll every POLL_SECONDS and obey commands until QUIT."""
        poller = asyncio.create_task(self._poll_loop())
        refresher = asyncio.create_task(self._refresh_loop())
        watchers = [
            asyncio.create_task(self._secondary_loop(n, s)) for n, s in enumerate(self.secondaries)
        ]
        try:
            while True:
                await wake.wait()
                wake.clear()
                while True:
                    try:
                        command = commands.get_nowait()
                    except queue.Empty:
                        break
                    if command.kind is CommandKind.QUIT:
                        return
                    try:
                        self.obey(command)
                    except Exception:  # a key press must never end the monitor
                        _LOG.exception("loadshed hit a bug obeying %s; carrying on", command.kind)
        finally:
            for task in (poller, refresher, *watchers):
                task.cancel()
            await asyncio.gather(poller, refresher, *watchers, return_exceptions=True)

    async def _poll_loop(self) -> None:
        while True:
            started = self.clock()
            await _survive(self.poll(), "polling")
            self._polled_at = self.clock()
            await asyncio.sleep(max(0.0, self.config.poll_s - (self.clock() - started)))

    def polling(self) -> bool:
        """Whether the poll loop is alive: its last round ended within a few polls (a round
        includes a Powerwall read that may take its whole timeout)."""
        bound = ALIVE_POLLS * self.config.poll_s + sources.POWERWALL_TIMEOUT_S * ALIVE_POLLS
        return self.clock() - self._polled_at <= bound

    async def _secondary_loop(self, index: int, source: sources.GridSource) -> None:
        """Read one secondary source every poll, on its own: a slow one delays nobody."""
        while True:
            started = self.clock()
            try:
                reading = await source.read()
            except Exception:  # a source never raises; if one does, it is a bug, not the grid
                _LOG.exception("loadshed hit a bug reading %s; carrying on", source.endpoint)
                reading = GridReading(Grid.UNKNOWN, detail="could not be read (a bug)")
            before = self.latest.get(index)
            self.latest[index] = sources.Latest(reading, self.clock())
            if before is None or before.reading.grid is not reading.grid:
                self._say(f"{reading.source}: {_grid_words(reading)}")
            await asyncio.sleep(max(0.0, self.config.poll_s - (self.clock() - started)))

    def _readings(self) -> list[GridReading]:
        """The Powerwall's reading first, then each secondary source's as it stands now."""
        now = self.clock()
        found = [self.reading]
        for index in range(len(self.secondaries)):
            latest = self.latest.get(index)
            if latest is not None:
                found.append(latest.now(now, self.config.poll_s, sources.SECONDARY_TIMEOUT_S))
        return found

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(DEVICE_REFRESH_S)
            await _survive(self.refresh(), "reading the devices")

    async def poll(self) -> None:
        """Read the grid once, decide, dispatch, publish (and retry a failed state write)."""
        self.reading = await self.grid.read()
        if self._dirty:
            self._flush()
        self.decide()

    async def refresh(self) -> None:
        """Reach Kasa hosts still missing and re-read every device not busy."""
        added = await self.registry.connect_pending()
        for name in added:
            self._say(f"{name}: reachable")
        if added:
            self._rekey_state()
            self._check_names()
        idle = [n for n, d in self.registry.devices.items() if d.busy is None]
        await self.registry.read(idle)
        self._read_now(idle)
        self._reconcile_reads(idle)
        self.decide()

    def decide(self) -> policy.Decision:
        """Decide on the readings as they stand, start what the decision asks, publish."""
        now = self.clock()
        decision = policy.decide(
            self._readings(),
            now,
            self.memory,
            self._shed_views(),
            self._device_views(),
            self.rules,
        )
        effective = decision.reading
        if (
            self.memory.grid is Grid.UNKNOWN
            and effective is not None
            and effective.grid is Grid.OFF
        ):
            # The grid could not be read at start; its first answer is an outage: that is
            # news (a reading at start that is already off-grid is not: a restart mid-outage).
            decision = replace(decision, changed=Grid.OFF)
        on_grid = effective is not None and effective.grid is Grid.ON
        over = on_grid and not self.memory.outage and not self.state.shed
        self.gridlog.note(self.reading, decision, outage_over=over)  # said before switching
        if decision.changed is Grid.ON:
            self._grid_back()
        self._take(decision, self.reading.battery_pct)
        self._publish()
        return decision

    def obey(self, command: Command) -> tuple[Action, ...]:
        """Force a shed or a restore now, whatever the grid; or set a device's pin. Returns
        the actions it asked for (their outcomes reach the result listeners)."""
        if command.kind is CommandKind.PIN:
            return self._pin(command.device, command.pin)
        reason = f"forced from {command.origin}"
        if command.kind is CommandKind.FORCE_SHED:
            decision = policy.force_shed(
                self.memory, self._shed_views(), self._device_views(), reason
            )
        else:
            decision = policy.force_restore(
                self.memory, self._shed_views(), self._device_views(), reason
            )
        self._say(f"{command.kind.value} ({reason}): {len(decision.actions)} devices")
        self._take(decision, self.reading.battery_pct, forced=True)
        self._publish()
        return decision.actions

    def _pin(self, name: str, pin: Pin | None) -> tuple[Action, ...]:
        # A device not reached yet (a Kasa host still silent after a restart) that loadshed
        # knows of keeps its pin, or loses it, all the same: the pin applies once it answers.
        known = name in self.registry.devices or name in self.state.pins or name in self.state.shed
        if not known:
            self._say(f"cannot pin {name!r}: no such device", logging.WARNING)
            return ()
        pins = {n: p for n, p in self.state.pins.items() if n != name}
        if pin is not None:
            pins[name] = pin
        self._set_state(replace(self.state, pins=pins))
        self._say(f"{name}: {pin.value if pin is not None else 'automatic'}", event=True)
        return tuple(a for a in self.decide().actions if a.device == name)

    async def settle(self) -> None:
        """Wait until no switch is in flight (for one-shot commands and tests)."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    # --- policy in, actions out ---------------------------------------------------------------

    def _device_views(self) -> list[policy.DeviceView]:
        views = []
        for name, d in self.registry.devices.items():
            feeds = tuple(self.registry.powered_by(name))
            pin = Pin.ON if self._kept_on_by(name) else self.state.pins.get(name)
            computer = name in self.registry.computers
            power = d.power
            if computer and d.status is not Status.OK and d.power is Power.ON:
                power = None  # it answered once, cannot be seen now: unknown, not on
            views.append(
                policy.DeviceView(
                    name,
                    d.rule,
                    power,
                    pin,
                    shed_unseen=computer,
                    feeds=feeds,
                    busy=d.busy is not None,
                )
            )
        return views

    def _kept_on_by(self, plug: str) -> str | None:
        """A computer pinned "keep on" keeps its plug on too: the first such, if any."""
        return next(
            (c for c in self.registry.powered_by(plug) if self.state.pins.get(c) is Pin.ON), None
        )

    def _note(self, name: str) -> str:
        """What keeps a device as it is, for the screen."""
        keeper = self._kept_on_by(name)
        if keeper is not None:
            return f"kept on: {keeper} is pinned on"
        if name in self.config.grid_canary:
            return "grid canary: read every poll, never switched"
        return self._held.get(name, "")

    def _decided_by(self) -> GridReading | None:
        """The secondary sources' reading when they decide (the Powerwall cannot be read)."""
        effective = self._decision.reading
        if effective is None or effective.source == self.reading.source:
            return None
        return effective

    def _source_rows(self, now: float) -> tuple[SourceRow, ...]:
        rows = []
        for index, source in enumerate(self.secondaries):
            latest = self.latest.get(index)
            if latest is None:
                reading = GridReading(Grid.UNKNOWN, detail="not read yet")
                rows.append(SourceRow(_source_name(source), source.endpoint, reading, None))
                continue
            reading = latest.now(now, self.config.poll_s, sources.SECONDARY_TIMEOUT_S)
            rows.append(SourceRow(reading.source, source.endpoint, reading, now - latest.at))
        return tuple(rows)

    def _shed_views(self) -> dict[str, policy.ShedView]:
        views = {}
        for name, entry in self.state.shed.items():
            device = self.registry.devices.get(name)
            rule = device.rule if device is not None else self.config.rule_for(name)
            views[name] = policy.ShedView(
                entry.reason, entry.confirmed, policy.tier_of(entry.reason, rule)
            )
        return views

    def _say_waits(self, before: policy.Decision, now: policy.Decision) -> None:
        """Say what loadshed is waiting for, once, when a wait begins: a plain log has no
        countdown on screen."""
        clock = self.clock()
        if now.restore_at is not None and before.restore_at is None and self.state.shed:
            self._say(
                f"grid back: restoring {len(self.state.shed)} devices in "
                f"{now.restore_at - clock:.0f} s if it stays"
            )
        if now.shed_at is not None and before.shed_at is None:
            self._say(f"off grid: shedding in {now.shed_at - clock:.0f} s unless the grid returns")
        if now.disagree_until is not None and before.disagree_until is None:
            self._say(
                f"acting on the Powerwall in {now.disagree_until - clock:.0f} s if the "
                "sources still disagree"
            )

    def _take(
        self, decision: policy.Decision, battery_pct: float | None, *, forced: bool = False
    ) -> None:
        """Adopt the decision's memory and start its actions."""
        self._say_waits(self._decision, decision)
        self._decision = decision
        held = dict(decision.held)
        for name, why in held.items():
            if self._held.get(name) != why:
                self._say(f"{name}: {why}")
        self._held = held
        if decision.memory.hold != self.state.hold or decision.memory.paused != self.state.paused:
            self._set_state(
                replace(self.state, hold=decision.memory.hold, paused=decision.memory.paused)
            )
        self.memory = decision.memory
        self._start(decision.actions, battery_pct, forced=forced)
        self._settle()

    def _start(self, actions: Sequence[Action], battery_pct: float | None, *, forced: bool) -> None:
        """Start the actions whose device is free (and, unless forced, past its back-off)."""
        now = self.clock()
        ready: list[tuple[Action, Device]] = []
        for action in actions:
            device = self.registry.devices.get(action.device)
            if device is None:
                continue
            if device.busy is not None:
                if forced and device.busy is not action.verb:
                    self._defer(action)
                continue
            if now < device.retry_at and not forced:
                continue
            entry = self.state.shed.get(action.device)
            if self.dry_run and action.verb is Verb.SHED and entry is not None and entry.confirmed:
                continue  # said once already: "would switch off X"
            ready.append((action, device))
        if not ready:
            return
        self._write_intent([(a, d) for a, d in ready if a.verb is Verb.SHED])
        for verb in (Verb.SHED, Verb.RESTORE):
            group = [(a, d) for a, d in ready if a.verb is verb]
            if not group:
                continue
            batch = self._batch_for(verb, group, battery_pct)
            batch.left += len(group)
            for action, device in group:
                device.busy = verb
                device.epoch += 1
                self._say(f"{_would(self.dry_run, verb)} {action.device} ({action.reason})")
                task = asyncio.create_task(self._act(action, device, batch))
                self._tasks.add(task)
                self._inflight[action.device] = (action, task)
                task.add_done_callback(functools.partial(self._ended, action, device, batch))

    def _batch_for(
        self, verb: Verb, group: Sequence[tuple[Action, Device]], battery_pct: float | None
    ) -> _Batch:
        """The open batch these actions belong to, or a new one. Retries join an open batch of
        their verb (a success there replaces the failure told); alone, they are not announced."""
        if all(d.failures > 0 for _, d in group):
            joined = next((b for b in self._open.values() if b.verb is verb), None)
            return joined if joined is not None else _Batch(verb, None, battery_pct)
        kind = _event_kind(verb, group[0][0].reason)
        batch = self._open.get(kind)
        if batch is None:
            batch = self._open[kind] = _Batch(verb, kind, battery_pct)
        return batch

    def _still_to_start(self, verb: Verb) -> bool:
        """Whether actions of this verb wait for a device that is switching: a forced action
        deferred, one the policy asks for on a device still doing the other verb, a plug held
        until its computer is down. They belong to the batch open now."""
        if any(action.verb is verb for action in self._deferred.values()):
            return True
        devices = self.registry.devices
        for action in self._decision.actions:
            device = devices.get(action.device)
            if action.verb is verb and device is not None and device.busy not in (None, verb):
                return True
        if verb is not Verb.SHED:
            return False
        return any(
            devices[name].busy is not None
            for plug in self._held
            for name in self.registry.powered_by(plug)
            if name in devices
        )

    def _settle(self) -> None:
        """Tell each open batch that is over: none of its actions left, none still to start."""
        for kind, batch in list(self._open.items()):
            if batch.left == 0 and not self._still_to_start(batch.verb):
                del self._open[kind]
                self._batch_done(batch)

    def _defer(self, action: Action) -> None:
        """A forced action on a busy device: after what it is doing (cancelled if not begun).

        The policy asks again every poll, but a forced command is said once: without this, a
        restore pressed while a computer is still shutting down would leave it off.
        """
        self._deferred[action.device] = action
        inflight = self._inflight.get(action.device)
        if inflight is not None and action.device not in self._started_switching:
            inflight[1].cancel()

    def _run_deferred(self, name: str) -> None:
        action = self._deferred.pop(name, None)
        if action is not None and not self._closing:
            self._start((action,), self.reading.battery_pct, forced=True)

    def _write_intent(self, sheds: Sequence[tuple[Action, Device]]) -> None:
        """Record, before any switch is thrown, what is about to be switched off."""
        if not sheds:
            return
        entries = dict(self.state.shed)
        for action, device in sheds:
            old = entries.get(action.device)
            entries[action.device] = ShedEntry(
                name=action.device,
                kind=device.switch.kind,
                address=device.switch.address,
                reason=old.reason if old is not None and old.confirmed else action.reason,
                at=old.at if old is not None else self.wall(),
                prior=old.prior if old is not None else device.power,
                confirmed=False,
                attempts=(old.attempts if old is not None else 0) + 1,
                last_error=old.last_error if old is not None else "",
            )
        self.state = replace(self.state, shed=entries)
        self._save_now()

    def _save_now(self) -> None:
        """Write the state before the switch it announces: the switch waits for the disk —
        but never on a disk that fails: then it goes ahead with the state in memory."""
        if self.dry_run or self.store is None:
            return
        try:
            self.store.save(self.state)
        except OSError as err:
            self._unsaved(err)
        else:
            self._saved()

    def _unsaved(self, err: OSError) -> None:
        """state.json cannot be written (disk full, SD card read-only): keep the state in
        memory, write it again on every poll, tell the owner once."""
        self._dirty = True
        if self.disk_problem is not None:
            return
        assert self.store is not None
        self.disk_problem = (
            f"cannot write {self.store.path.name}: {err.strerror or err}; "
            "shedding without a safety net"
        )
        self._say(self.disk_problem, logging.ERROR, event=True)
        self._emit_kind(EventKind.ATTENTION, self.disk_problem)

    def _saved(self) -> None:
        self._dirty = False
        if self.disk_problem is not None:
            self.disk_problem = None
            self._say("state.json written again", event=True)

    async def _act(self, action: Action, device: Device, batch: _Batch) -> None:
        """Run one action after its dependencies; its end is handled by `_ended`."""
        cycled = await self._dependencies(action)
        self._started_switching.add(action.device)
        try:
            if self.dry_run:
                wanted = Power.OFF if action.verb is Verb.SHED else Power.ON
                outcome = Outcome.ok(wanted, detail="dry run")
            elif action.verb is Verb.SHED:
                outcome = await self._switch_off(action, device)
            elif cycled is not None:
                outcome = cycled
            else:
                outcome = await device.switch.on()
        except asyncio.CancelledError:
            raise
        except Exception as err:  # a driver bug must not stop the shed
            _LOG.error("%s: %s", action.device, "".join(traceback.format_exception(err)))
            outcome = Outcome.failed(f"internal error: {type(err).__name__}: {err}")
        device.busy = None
        device.epoch += 1  # a read begun before this switch must not overwrite it
        if not self.dry_run:  # a dry run learns nothing: the device is as it was read
            device.learn(outcome)
        self.results.append((action, outcome))
        for listener in list(self.result_listeners):
            listener(action, outcome)
        wanted = Power.OFF if action.verb is Verb.SHED else Power.ON
        if outcome.is_ok and outcome.power is wanted:
            self._succeeded(action, device, batch, outcome)
        elif self._unseen_and_unreached(action, outcome):
            self._not_reached(action, device, batch, outcome)
        else:
            self._failed(action, device, batch, outcome)
        if action.device in self.registry.computers and action.verb is Verb.SHED:
            self.decide()  # its plug may be waiting for it (policy Rule 9): the same batch

    async def _switch_off(self, action: Action, device: Device) -> Outcome:
        """Switch a device off; a plug last read a while ago is read first, so that "it was on
        before" is true now: one switched off by hand since is left off, and not "restored"."""
        created = (entry := self.state.shed.get(action.device)) is not None and entry.attempts <= 1
        stale = self.clock() - device.read_at > FRESH_READ_S
        if created and stale and action.device not in self.registry.computers:
            now = await device.switch.read()
            if now.is_ok and now.power is Power.OFF:
                device.learn(now)
                entries = dict(self.state.shed)
                entries.pop(action.device, None)
                self._set_state(replace(self.state, shed=entries))
                return Outcome.ok(Power.OFF, detail=ALREADY_OFF)
        return await device.switch.off()

    def _read_now(self, names: Sequence[str]) -> None:
        now = self.clock()
        for name in names:
            device = self.registry.devices.get(name)
            if device is not None and device.status is not None:
                device.read_at = now

    def _unseen_and_unreached(self, action: Action, outcome: Outcome) -> bool:
        """A computer the probe could not see, and ssh could not reach either: nothing was
        sent, and nothing says it was on. That is ssh's answer (DESIGN §2: a shed records only
        what was on)."""
        entry = self.state.shed.get(action.device)
        return (
            action.verb is Verb.SHED
            and outcome.status is Status.UNREACHABLE
            and not outcome.sent
            and entry is not None
            and entry.prior is None
            and not entry.confirmed
        )

    def _not_reached(self, action: Action, device: Device, batch: _Batch, outcome: Outcome) -> None:
        device.power, device.failures, device.retry_at = Power.OFF, 0, 0.0
        entries = dict(self.state.shed)
        entries.pop(action.device, None)
        self._set_state(replace(self.state, shed=entries))
        self._say(
            f"{action.device}: not shut down: {outcome.detail} — taken as off "
            "(it is not restored after the outage)",
            logging.WARNING,
            event=True,
        )
        batch.failed_on(action.device, f"not reached: {outcome.detail}")

    def _ended(
        self, action: Action, device: Device, batch: _Batch, task: asyncio.Task[None]
    ) -> None:
        """After an action's task, however it ended (a done callback: runs even when the task
        was cancelled before its first step, when no code of its own ever ran)."""
        self._tasks.discard(task)
        if self._inflight.get(action.device, (None, None))[1] is task:
            del self._inflight[action.device]
        device.busy = None
        started = action.device in self._started_switching
        self._started_switching.discard(action.device)
        if task.cancelled():
            # The grid came back, a forced command overrode it, or loadshed is quitting.
            # Not started: nothing was switched, nothing to remember. Started: the intent
            # stays, erring toward remembering.
            if action.verb is Verb.SHED and not started:
                entries = dict(self.state.shed)
                entry = entries.get(action.device)
                # Only an entry this very action created may go: an earlier attempt may have
                # switched the device off though its reply was lost.
                if entry is not None and not entry.confirmed and entry.attempts <= 1:
                    del entries[action.device]
                    self._set_state(replace(self.state, shed=entries))
            if started:
                self._say(f"{action.device}: stopped waiting for it", logging.WARNING)
            else:
                self._say(f"{action.device}: not switched (cancelled before it started)")
            batch.left -= 1
        elif task.exception() is not None:
            _LOG.error("%s: %s", action.device, task.exception())
        self._run_deferred(action.device)
        self._settle()
        self._publish()

    async def _dependencies(self, action: Action) -> Outcome | None:
        """Order on restore: a plug stays off PLUG_CYCLE_S, and comes on before its computers.

        (On shed the policy orders: a plug is not asked to go off before its computers are
        down, Rule 9.) A computer whose plug never went off is brought back by a power cycle:
        its outcome is returned, and the caller does not wake it again.
        """
        if action.verb is Verb.SHED:
            return None
        entry = self.state.shed.get(action.device)
        if self.registry.powered_by(action.device) and entry is not None and entry.confirmed:
            await self._keep_off(action.device, entry)
            return None
        computer = self.registry.computers.get(action.device)
        plug = computer.powered_by if computer is not None else None
        if plug is None or plug not in self.registry.devices:
            return None
        inflight = self._inflight.get(plug)
        if inflight is not None and inflight[0].verb is Verb.RESTORE:
            self._say(f"{action.device}: waiting for {plug}")
            await asyncio.wait([inflight[1]])
            return None
        plug_entry = self.state.shed.get(plug)
        if plug_entry is not None and plug_entry.confirmed:
            return None  # off, and the policy brings it back (a retry, if it failed)
        return await self._power_cycle(action.device, plug)

    async def _keep_off(self, plug: str, entry: ShedEntry) -> None:
        """Hold a plug off until it has been off PLUG_CYCLE_S, so the computer behind it sees a
        power loss. Measured from a wall time in state.json, so clamped: a clock stepped back
        at boot must not keep it off for an hour."""
        off_for = self.wall() - (entry.off_at if entry.off_at is not None else self.wall())
        pause = min(PLUG_CYCLE_S, max(0.0, PLUG_CYCLE_S - off_for))
        if pause > 0:
            self._say(
                f"{plug}: keeping it off {pause:.0f} s more, so the computer behind it "
                "sees a power loss"
            )
            await asyncio.sleep(pause)

    async def _power_cycle(self, name: str, plug: str) -> Outcome:
        """Bring back a computer whose plug never went off (the grid came back while it shut
        down, or loadshed was stopped in between): its BIOS powers it on only after a real
        power loss. Wait until it is down, cycle the plug (recorded before it is switched, like
        any shed), then wake it."""
        switch = self.registry.devices[name].switch
        plug_device = self.registry.devices[plug]
        if not isinstance(switch, ComputerSwitch):
            return await switch.on()
        seen = await switch.look()
        if seen.liveness is Liveness.ANSWERS:
            return Outcome.ok(Power.ON, detail="already up")
        self._say(
            f"{name}: {plug} never went off; waiting for {name} to be down, then switching "
            f"{plug} off for {PLUG_CYCLE_S:g} s so it powers on again"
        )
        down = await switch.wait_down()
        self._say(f"{name}: {down.detail}")
        if plug_device.busy is not None:
            return Outcome.failed(f"{plug} is busy; trying again")
        plug_device.busy = Verb.SHED
        try:
            entries = dict(self.state.shed)
            entries[plug] = ShedEntry(
                name=plug,
                kind=plug_device.switch.kind,
                address=plug_device.switch.address,
                reason=f"power cycle for {name}",
                at=self.wall(),
                attempts=1,
            )
            self.state = replace(self.state, shed=entries)
            self._save_now()
            cut = await plug_device.switch.off()
            plug_device.learn(cut)
            if not (cut.is_ok and cut.power is Power.OFF):
                return Outcome.failed(
                    f"could not switch {plug} off to power-cycle it: {cut.detail}"
                )
            entries = dict(self.state.shed)
            entries[plug] = replace(entries[plug], confirmed=True, off_at=self.wall())
            self._set_state(replace(self.state, shed=entries))
            await asyncio.sleep(PLUG_CYCLE_S)
            back = await plug_device.switch.on()
            plug_device.learn(back)
            if not (back.is_ok and back.power is Power.ON):
                return Outcome.failed(f"could not switch {plug} back on: {back.detail}")
            entries = dict(self.state.shed)
            entries.pop(plug, None)
            self._set_state(replace(self.state, shed=entries))
            self._say(f"{plug}: on (power-cycled for {name})", event=True)
        finally:
            plug_device.busy = None
        return await switch.on()

    def _succeeded(self, action: Action, device: Device, batch: _Batch, outcome: Outcome) -> None:
        device.failures, device.retry_at = 0, 0.0
        entries = dict(self.state.shed)
        said = f" ({outcome.detail})" if outcome.detail else ""
        if action.verb is Verb.SHED:
            if action.device in entries:
                entries[action.device] = replace(
                    entries[action.device],
                    confirmed=True,
                    last_error="",
                    off_at=self.wall(),
                    prior=Power.ON,  # it took the shutdown: it was on
                )
            if outcome.detail == ALREADY_OFF:
                self._say(f"{action.device}: {ALREADY_OFF}", event=True)
            elif not self.dry_run:  # "would switch off X" said it all
                self._say(f"{action.device}: off{said}", event=True)
        else:
            entries.pop(action.device, None)
            if not self.dry_run:
                self._say(f"{action.device}: on{said}", event=True)
        self._set_state(replace(self.state, shed=entries))
        batch.succeeded(action.device)

    def _failed(self, action: Action, device: Device, batch: _Batch, outcome: Outcome) -> None:
        device.failures += 1
        doublings = min(device.failures - 1, RETRY_DOUBLINGS_MAX)  # 2**1024 overflows a float
        pause = min(RETRY_FIRST_S * 2**doublings, RETRY_MAX_S)
        device.retry_at = self.clock() + pause
        why = outcome.detail or f"it reports {outcome.power.value if outcome.power else 'nothing'}"
        entries = dict(self.state.shed)
        if action.device in entries:
            entries[action.device] = replace(entries[action.device], last_error=why)
            self._set_state(replace(self.state, shed=entries))
        if device.failures == FAILURES_BEFORE_ALERT:
            self._emit(
                Event(
                    EventKind.DEVICE_FAILED,
                    self.wall(),
                    uuid.uuid4().hex[:12],
                    self.reading.battery_pct,
                    detail=f"{action.device}: {why}",
                    failed=((action.device, why),),
                )
            )
        verb = "switch off" if action.verb is Verb.SHED else "switch on"
        self._say(
            f"{action.device}: could not {verb}: {why}; trying again in {pause:g} s",
            logging.WARNING,
            event=True,
        )
        batch.failed_on(action.device, why)

    def _batch_done(self, batch: _Batch) -> None:
        if batch.kind is None or self.dry_run:
            return
        summary = f"{batch.kind.value}: {len(batch.done)} done"
        if batch.failed:
            summary += ", failed: " + ", ".join(f"{n} ({why})" for n, why in batch.failed)
        self._say(summary)
        self._emit(
            Event(
                batch.kind,
                self.wall(),
                uuid.uuid4().hex[:12],
                battery_pct=batch.battery_pct,
                done=tuple(batch.done),
                failed=tuple(batch.failed),
            )
        )

    def _reconcile_reads(self, names: Sequence[str]) -> None:
        """A shed not confirmed, now read off: it did go off (errs toward remembering)."""
        entries = dict(self.state.shed)
        changed = False
        for name in names:
            entry, device = entries.get(name), self.registry.devices.get(name)
            off = device is not None and device.power is Power.OFF
            if entry is not None and off and not entry.confirmed:
                # When it went off is not known: from now, so a plug cycle is never cut short.
                entries[name] = replace(entry, confirmed=True, off_at=self.wall())
                changed = True
        if changed:
            self._set_state(replace(self.state, shed=entries))

    # --- grid transitions, state, output -------------------------------------------------------

    def _grid_back(self) -> None:
        """The grid is back: sheds not begun are cancelled; computers taken as off are
        unknown again (that was ssh's answer for this outage only)."""
        for name, (action, task) in list(self._inflight.items()):
            if action.verb is Verb.SHED and name not in self._started_switching:
                task.cancel()
        for name in self.registry.computers:
            device = self.registry.devices.get(name)
            if device is not None and device.status is not Status.OK and device.busy is None:
                device.power = None

    def _emit_kind(self, kind: EventKind, detail: str = "") -> None:
        self._emit(
            Event(kind, self.wall(), uuid.uuid4().hex[:12], self.reading.battery_pct, detail)
        )

    def _emit(self, event: Event) -> None:
        if self._on_event is not None and not self.dry_run:
            try:
                self._on_event(event)
            except Exception:
                _LOG.exception("passing on an event failed")

    def _set_state(self, state: State) -> None:
        """Adopt state; write it soon (writes within one loop turn are one write)."""
        self.state = state
        if self.dry_run or self.store is None or self._save_pending:
            return
        self._save_pending = True
        asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        if self._save_pending or self._dirty:
            self._save_pending = False
            self._save_now()

    def _say(self, text: str, level: int = logging.INFO, *, event: bool = False) -> None:
        (_EVENTS if event else _LOG).log(level, "%s", text)
        self._recent = [*self._recent[-(RECENT_EVENTS - 1) :], f"{time.strftime('%H:%M')} {text}"]

    def _publish(self) -> None:
        now_mono, now_wall = self.clock(), self.wall()
        # The last snapshot is the screen's memory: what each device drew, when each line was
        # said, which line began this outage.
        before = self.snapshot
        earlier = {row.name: row for row in before.devices}
        fresh = self.reading is not before.reading  # the Powerwall was read since

        def wall_of(mono: float | None) -> float | None:
            return None if mono is None else now_wall + (mono - now_mono)

        def draw_of(name: str, power: Power | None, watts: float | None) -> float | None:
            if power is Power.ON and watts is not None:
                return watts
            row = earlier.get(name)
            return row.draw_w if row is not None else None

        def since(name: str, power: Power | None) -> float | None:
            row = earlier.get(name)
            if row is None:
                return None
            if row.power is None or power is None or row.power is power:
                return row.power_since  # a first read, or one lost, is not a switch
            return now_wall

        def lately(name: str, power: Power | None) -> bool:
            at = since(name, power)
            return at is not None and now_wall - at < DeviceRow.LOAD_LAG_S

        # A reading that shows every device as it is (none switching, none switched in the
        # last LOAD_LAG_S) is the load their draws are taken from, until the next such reading.
        settled = (
            fresh
            and self.reading.load_w is not None
            and all(
                d.busy is None and not lately(name, d.power)
                for name, d in self.registry.devices.items()
            )
        )

        def in_load(name: str, power: Power | None) -> bool | None:
            row = earlier.get(name)
            if settled:
                return power is Power.ON
            return row.in_load if row is not None else None

        # A forced action waiting for the device's present one to end is switching already.
        deferred = {name: action.verb for name, action in self._deferred.items()}
        rows = [
            DeviceRow(
                name,
                d.switch.kind,
                d.switch.address,
                d.rule,
                d.power,
                d.status,
                d.detail,
                d.watts,
                self.state.shed[name].reason if name in self.state.shed else None,
                d.busy if d.busy is not None else deferred.get(name),
                self.state.pins.get(name),
                self._note(name),
                draw_w=draw_of(name, d.power, d.watts),
                in_load=in_load(name, d.power),
                power_since=since(name, d.power),
            )
            for name, d in self.registry.devices.items()
        ]
        for p in self.registry.pending:
            rows.append(
                DeviceRow(p.host.address, Kind.KASA, p.host.address, 100, None, p.status, p.detail)
            )
        for name, entry in self.state.shed.items():
            if name not in self.registry.devices:
                rows.append(
                    DeviceRow(
                        name,
                        entry.kind,
                        entry.address,
                        self.config.rule_for(name),
                        None,
                        Status.UNREACHABLE,
                        "not reached yet",
                        None,
                        entry.reason,
                        draw_w=draw_of(name, None, None),
                        in_load=in_load(name, None),
                        power_since=since(name, None),
                    )
                )
        # Every line is published in the loop turn that says it: a line the last snapshot did
        # not have was said now. More are kept than RECENT_EVENTS, to fill a tall window.
        stamps = {id(line): at for line, at in zip(before.events, before.event_times, strict=False)}
        said = [line for line in self._recent if id(line) not in stamps]
        kept = Snapshot.EVENTS_KEPT
        events = (*before.events, *said)[-kept:]
        event_times = (*before.event_times, *(now_wall for _ in said))[-kept:]
        outage_since = self.gridlog.outage_since
        began: tuple[str, float | None] = ("", None)
        if outage_since is not None and outage_since == before.outage_since:
            began = (before.outage_event, before.outage_event_at)
        if outage_since is not None and not began[0]:
            # gridlog's "grid lost" line, said as it set outage_since; said again here when
            # more lines than RECENT_EVENTS followed it before this publish. None after a
            # restart mid-outage (not a change).
            effective = self._decision.reading
            lost = (
                f"{time.strftime('%H:%M')} grid lost ({effective.raw}), battery {pct(self.reading)}"
                if self._decision.changed is Grid.OFF and effective is not None
                else ""
            )
            began = next(
                (
                    (line, at)
                    for line, at in zip(reversed(events), reversed(event_times), strict=False)
                    if at >= outage_since and line.partition(" ")[2].startswith("grid lost")
                ),
                (lost, now_wall if lost else None),
            )
        unknown_since = self.memory.unknown_since
        self.snapshot = Snapshot(
            taken_at=now_wall,
            reading=self.reading,
            devices=tuple(rows),
            grid_since=self.gridlog.since,
            outage_since=self.gridlog.outage_since,
            unknown_since=wall_of(unknown_since),
            restore_at=wall_of(self._decision.restore_at),
            shed_at=wall_of(self._decision.shed_at),
            hold=self.memory.hold,
            paused=self.memory.paused,
            dry_run=self.dry_run,
            events=events,
            started=self._started,
            problems=(
                *(p for p in (self.disk_problem,) if p is not None),
                *self._name_problems,
            ),
            sources=self._source_rows(now_mono),
            decided_by=self._decided_by(),
            disagreement=self._decision.disagreement,
            event_times=event_times,
            outage_event=began[0],
            outage_event_at=began[1],
            load_settled_w=self.reading.load_w if settled else before.load_settled_w,
        )
        if self._on_snapshot is not None:
            self._on_snapshot(self.snapshot)


def _grid_words(reading: GridReading) -> str:
    """A source's reading in a line: "off grid (Garage canary silent)"."""
    words = {Grid.ON: "on grid", Grid.OFF: "off grid"}.get(reading.grid, "cannot tell")
    why = reading.detail if reading.grid is Grid.UNKNOWN else reading.raw
    return f"{words} ({why})" if why else words


def _source_name(source: sources.GridSource) -> str:
    return CANARY if isinstance(source, CanarySource) else UPS


async def _survive(step: Coroutine[Any, Any, None], what: str) -> None:
    """Run one step of a loop; a bug in it is logged, and the loop goes on (never stops)."""
    try:
        await step
    except Exception:
        _LOG.exception("loadshed hit a bug while %s; carrying on", what)


def _event_kind(verb: Verb, reason: str) -> EventKind:
    if verb is Verb.SHED:
        return EventKind.TIER_SHED if reason.startswith("battery") else EventKind.SHED_DONE
    return EventKind.TIER_RESTORED if reason.startswith("battery") else EventKind.RESTORE_DONE


def _would(dry_run: bool, verb: Verb) -> str:
    doing = {Verb.SHED: "switching off", Verb.RESTORE: "switching on"}
    would = {Verb.SHED: "would switch off", Verb.RESTORE: "would switch on"}
    return (would if dry_run else doing)[verb]
