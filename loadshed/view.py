"""The screen as data: `render(snapshot, ui, width, height) -> list[Line]`, and what keys do.

Owns the layout of the live screen — a header (grid, battery, time left, timers), the device
table, the latest events (the one that began an outage pinned above them), the keys — the words
and styles of each part, the time-left estimate, and the keys (`KEYS`, `handle_key`, `follow`):
all pure functions of the latest engine `Snapshot` and a frozen `UiState`. ui.py paints the lines
and feeds the keys; the tests render without a terminal.

One clock: every time on the screen — the clock, "since", the events' times, countdowns and
durations — is said by `_Clock`: the wall clock, or in the demo the simulated house's, which runs
`speed` times faster (the title says so).

Must not: import curses, do I/O, read a clock (the time comes in as `now`), keep state. Colour is
a hint, never the only signal: every coloured state also says itself in words (a shed device
says SHED), and `NO_COLOR` turns colour off.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from typing import Final

from loadshed.config import describe_rule
from loadshed.engine import QUIT_WAIT_S, Command, CommandKind, DeviceRow, Snapshot
from loadshed.model import Grid, Kind, Pin, Power, Status, Verb
from loadshed.policy import AT_OUTAGE, ESSENTIAL

MIN_WIDTH: Final = 70  # the device table's columns, shrunk to their least, fit in this
MIN_HEIGHT: Final = 14  # header, three device rows, one event line and the keys
POWERWALL_2_WH: Final = 13_500.0  # one Powerwall 2: the time-left assumption when none is given
BAR_WIDTH: Final = 20  # the battery bar, in cells
LOW_BATTERY_PCT: Final = 20.0  # below this the battery is shown as a warning
COMPUTER_KINDS: Final = frozenset({Kind.LINUX, Kind.SOLARIS, Kind.MACOS, Kind.WINDOWS})
OBEY_WAIT_S: Final = 5.0  # the engine takes a command within a loop turn: past this, its work
# is on the table, if it did any

# Every glyph the screen uses, and its stand-in on a terminal that cannot show it. One
# character for one, so the spans' columns stay right.
ASCII: Final = str.maketrans(
    {
        "█": "#",
        "░": ".",
        "—": "-",
        "─": "-",
        "…": "~",
        "●": "*",
        "·": "|",
        "≈": "~",
        "≥": ">",
        "→": ">",
        "↑": "^",
        "↓": "v",
        "▸": ">",
    }
)


# --- lines and styles ---------------------------------------------------------------------------


class Style(Enum):
    """What a stretch of text is; ui.py turns each into curses attributes (`LOOKS`)."""

    NORMAL = "normal"
    TITLE = "title"  # the top bar
    HEADING = "heading"  # column heads, the events rule, the keys
    DIM = "dim"  # off, not read yet, old news
    OK = "ok"  # on grid, on
    WARN = "warn"  # unknown, unreachable, switching, timers, low battery
    BAD = "bad"  # OFF GRID, failed
    SHED = "shed"  # switched off by loadshed
    PIN = "pin"  # the owner's keep on / keep off
    SELECTED = "selected"  # the selected device's row
    PROMPT = "prompt"  # a y/n question, "stopping"
    DEMO = "demo"  # the DEMO mark in the title


@dataclass(frozen=True, slots=True)
class Span:
    """Columns [start, end) of a line drawn in a style other than the line's."""

    start: int
    end: int
    style: Style


@dataclass(frozen=True, slots=True)
class Line:
    """One screen row: its text (at most the screen's width) and styles."""

    text: str
    style: Style = Style.NORMAL
    spans: tuple[Span, ...] = ()


@dataclass(frozen=True, slots=True)
class Look:
    """How a style looks: a colour (a curses colour name) and attributes that need none."""

    colour: str | None = None
    bold: bool = False
    reverse: bool = False
    underline: bool = False
    dim: bool = False


LOOKS: Final[Mapping[Style, Look]] = {
    Style.NORMAL: Look(),
    Style.TITLE: Look(bold=True, reverse=True),
    Style.HEADING: Look(bold=True),
    Style.DIM: Look(dim=True),
    Style.OK: Look("green"),
    Style.WARN: Look("yellow", bold=True),
    Style.BAD: Look("red", bold=True),
    Style.SHED: Look("magenta", bold=True),
    Style.PIN: Look("cyan", bold=True),
    Style.SELECTED: Look(reverse=True),
    Style.PROMPT: Look("yellow", bold=True, reverse=True),
    Style.DEMO: Look("cyan", bold=True),
}


def wants_colour(env: Mapping[str, str]) -> bool:
    """Colour unless NO_COLOR is set to anything (no-color.org)."""
    return not env.get("NO_COLOR")


def look(style: Style, colour: bool) -> Look:
    """The look of a style, without its colour when colour is off."""
    found = LOOKS[style]
    return found if colour else replace(found, colour=None)


def segments(line: Line, colour: bool) -> list[tuple[int, str, Look]]:
    """Cut a line into (column, text, look) runs, each span's look laid over the line's."""
    base = look(line.style, colour)
    runs: list[tuple[int, str, Look]] = []
    at = 0
    for span in sorted(line.spans, key=lambda s: s.start):
        start, end = max(span.start, at), min(span.end, len(line.text))
        if start >= end:
            continue
        if start > at:
            runs.append((at, line.text[at:start], base))
        runs.append((start, line.text[start:end], _over(base, look(span.style, colour))))
        at = end
    if at < len(line.text):
        runs.append((at, line.text[at:], base))
    return runs


def _over(base: Look, top: Look) -> Look:
    return Look(
        top.colour or base.colour,
        base.bold or top.bold,
        base.reverse != top.reverse,  # reverse on a reversed line reads as normal again
        base.underline or top.underline,
        top.dim and not base.reverse,
    )


class _Text:
    """A line being built from pieces, each in its own style."""

    def __init__(self, style: Style = Style.NORMAL) -> None:
        self.style = style
        self.text = ""
        self.spans: list[Span] = []

    def add(self, text: str, style: Style | None = None) -> _Text:
        if style is not None and style is not self.style and text:
            self.spans.append(Span(len(self.text), len(self.text) + len(text), style))
        self.text += text
        return self

    def line(self, width: int, *, pad: bool = False) -> Line:
        return _fit(Line(self.text, self.style, tuple(self.spans)), width, pad=pad)


def _fit(line: Line, width: int, *, pad: bool = False) -> Line:
    """Cut a line to width (ending in …), or pad it with spaces to width."""
    text = line.text
    if len(text) > width:
        text = text[: max(0, width - 1)] + "…" if width > 0 else ""
    elif pad:
        text = text.ljust(width)
    spans = tuple(
        Span(s.start, min(s.end, len(text)), s.style) for s in line.spans if s.start < len(text)
    )
    return Line(text, line.style, spans)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


# --- the UI's own state, and the keys ---------------------------------------------------------


class Confirm(Enum):
    """A question on screen, waiting for y or n."""

    SHED = "shed"
    RESTORE = "restore"
    QUIT = "quit"
    UNPIN = "unpin"  # keep on → automatic, when its rule could switch the selected device off
    KEEP_OFF = "keep off"  # switch the selected device off and keep it off


@dataclass(frozen=True, slots=True)
class Demo:
    """What the header says in the demo: the simulated house's clock, speed and sun."""

    speed: float
    hour: float  # the house's time of day, 0-24
    solar_w: float | None = None  # solar fixed by the + and - keys; None: by the time of day


@dataclass(frozen=True, slots=True)
class Forced:
    """A forced shed or restore asked from this screen, followed above the keys until done."""

    kind: CommandKind  # FORCE_SHED or FORCE_RESTORE
    devices: tuple[str, ...]  # what it switches, as the table stood when it was asked
    asked_at: float  # the snapshot's time then: the engine's line on taking it comes later
    obeyed: bool = False  # the engine has taken it (`_obeyed`)


@dataclass(frozen=True, slots=True)
class UiState:
    """Everything on screen that is not in the snapshot. Frozen; replaced by `handle_key` and
    `follow`."""

    selected: str | None = None  # a device name: the selection follows it if rows move
    help: bool = False
    confirm: Confirm | None = None  # UNPIN and KEEP_OFF ask about the selected device
    message: str = ""  # what the last key did, until the next key
    quitting: bool = False
    demo: Demo | None = None
    capacity_wh: float | None = None  # the battery's energy; None: assume POWERWALL_2_WH
    unicode: bool = True  # False: ASCII stand-ins for every glyph
    attached: bool = False  # the screen of a loadshed running elsewhere: q leaves it running
    forced: Forced | None = None  # a forced command still switching


class Act(Enum):
    SHED = "shed"
    RESTORE = "restore"
    UP = "up"
    DOWN = "down"
    FIRST = "first"
    LAST = "last"
    PIN = "pin"
    KEEP_OFF = "keep off"
    HELP = "help"
    QUIT = "quit"
    GRID = "grid"
    SOLAR_UP = "solar up"
    SOLAR_DOWN = "solar down"


@dataclass(frozen=True, slots=True)
class Key:
    """One row of the keys table: the footer and the help are generated from these."""

    names: tuple[str, ...]  # as ui.py reports them: "s", "up", " ", "home"
    act: Act
    shown: str  # in the help's key column
    footer: str  # in the footer ("" for none)
    does: str  # in the help
    demo: bool = False  # only in `loadshed demo`


KEYS: Final[tuple[Key, ...]] = (
    Key(("s",), Act.SHED, "s", "s shed", "force a shed: every device not essential off (y/n)"),
    Key(("r",), Act.RESTORE, "r", "r restore", "force a restore: what loadshed shed back on (y/n)"),
    Key(("up", "k"), Act.UP, "↑ k", "↑↓ select", "select the device above"),
    Key(("down", "j"), Act.DOWN, "↓ j", "", "select the device below"),
    Key(("home",), Act.FIRST, "Home", "", "select the first device"),
    Key(("end",), Act.LAST, "End", "", "select the last device"),
    Key(
        (" ",),
        Act.PIN,
        "space",
        "space keep on",
        "keep it on; again: back to its rule (y/n if it would go off)",
    ),
    Key(
        ("x",),
        Act.KEEP_OFF,
        "x",
        "x keep off",
        "switch it off and keep it off (y/n); again: back to its rule",
    ),
    Key(("g",), Act.GRID, "g", "g grid", "cut or restore the simulated grid", demo=True),
    Key(("+", "="), Act.SOLAR_UP, "+", "+- solar", "add 1 kW of solar", demo=True),
    Key(("-", "_"), Act.SOLAR_DOWN, "-", "", "remove 1 kW of solar (0: by time of day)", demo=True),
    Key(("?", "h"), Act.HELP, "?", "? help", "show this help; any key closes it"),
    Key(("q",), Act.QUIT, "q", "q quit", "quit; asks when something is shed (it stays off)"),
)
_BY_NAME: Final[Mapping[str, Key]] = {name: key for key in KEYS for name in key.names}
# What a pin key makes of the selected device's pin. No press sends Pin.OFF without a y, nor
# hands a device pinned keep on back to a rule that would switch it off now (`_rule_switches_off`).
PIN_NEXT: Final[Mapping[tuple[Act, Pin | None], Pin | None]] = {
    (Act.PIN, None): Pin.ON,
    (Act.PIN, Pin.ON): None,
    (Act.PIN, Pin.OFF): Pin.ON,
    (Act.KEEP_OFF, None): Pin.OFF,
    (Act.KEEP_OFF, Pin.ON): Pin.OFF,
    (Act.KEEP_OFF, Pin.OFF): None,
}
PIN_ASKED: Final[Mapping[Confirm, Pin | None]] = {Confirm.UNPIN: None, Confirm.KEEP_OFF: Pin.OFF}
YES: Final = frozenset({"y", "Y"})


@dataclass(frozen=True, slots=True)
class KeyResult:
    """What a key did: the new UI state, and at most one thing for ui.py to do."""

    ui: UiState
    command: Command | None = None  # for the monitor
    demo: str | None = None  # a demo key's first name ("g", "+", "-"), for the demo's handler
    quit: bool = False


def handle_key(key: str, ui: UiState, snap: Snapshot) -> KeyResult:
    """Return what key does on this screen. Unknown keys do nothing."""
    ui = replace(ui, message="")
    if ui.quitting:
        return KeyResult(ui)
    if ui.confirm is not None:
        return _answer(key in YES, replace(ui, confirm=None), ui.confirm, snap)
    if ui.help:
        return KeyResult(replace(ui, help=False))
    found = _BY_NAME.get(key)
    if found is None or (found.demo and ui.demo is None):
        return KeyResult(ui)
    act, rows = found.act, snap.devices
    if act is Act.SHED:
        return KeyResult(replace(ui, confirm=Confirm.SHED))
    if act is Act.RESTORE:
        return KeyResult(replace(ui, confirm=Confirm.RESTORE))
    if act is Act.QUIT:
        # Attached, q only leaves this screen: asked anyway, to say loadshed keeps running.
        if ui.attached or any(r.shed_reason is not None or r.busy is Verb.SHED for r in rows):
            return KeyResult(replace(ui, confirm=Confirm.QUIT))
        return KeyResult(replace(ui, quitting=True), quit=True)
    if act is Act.HELP:
        return KeyResult(replace(ui, help=True))
    if act in (Act.UP, Act.DOWN, Act.FIRST, Act.LAST):
        return KeyResult(_move(ui, rows, act))
    if act in (Act.PIN, Act.KEEP_OFF):
        return _pin_key(act, ui, snap)
    return KeyResult(ui, demo=found.names[0])


def _pin_key(act: Act, ui: UiState, snap: Snapshot) -> KeyResult:
    """Pin the selected device; ask first when that could switch it off."""
    index = selected_index(snap.devices, ui)
    if index is None:
        return KeyResult(replace(ui, message="no device to pin"))
    row = snap.devices[index]
    ui = replace(ui, selected=row.name)
    pin = PIN_NEXT[act, row.pin]
    if pin is Pin.OFF:
        return KeyResult(replace(ui, confirm=Confirm.KEEP_OFF))
    if pin is None and row.pin is Pin.ON and _rule_switches_off(row, snap) is not None:
        return KeyResult(replace(ui, confirm=Confirm.UNPIN))
    return _pinned(ui, row.name, pin)


def _pinned(ui: UiState, device: str, pin: Pin | None) -> KeyResult:
    said = pin.value if pin is not None else "automatic (its rule)"
    return KeyResult(
        replace(ui, message=f"{device}: {said}"), Command(CommandKind.PIN, device=device, pin=pin)
    )


def _rule_switches_off(row: DeviceRow, snap: Snapshot) -> str | None:
    """Why the device's own rule would have it off now, in words; None when it would not.

    Read from the snapshot as policy.py reads its memory: a forced shed holds every device that
    is not essential off; off grid (the outage confirmed or about to be, and shedding not paused
    by a forced restore) a rule of 100 sheds, and a tier 1-99 sheds below its battery % — or may,
    when the battery cannot be read.
    """
    if row.rule <= ESSENTIAL:
        return None
    if snap.hold:
        return "it is switched off now (forced shed)"
    if snap.reading.grid is not Grid.OFF or snap.paused:
        return None
    when = "once the outage is confirmed" if snap.shed_at is not None else "now"
    if row.rule >= AT_OUTAGE:
        return f"it is switched off {when}"
    battery = snap.reading.battery_pct
    if battery is None:
        return f"it may be switched off {when} (battery unknown)"
    if battery < row.rule:
        return f"it is switched off {when} (battery {math.floor(battery)} %)"
    return None


def _asked_row(ui: UiState, snap: Snapshot) -> DeviceRow | None:
    """The device a pin question is about: the selected one, by name."""
    return next((r for r in snap.devices if r.name == ui.selected), None)


def _answer(yes: bool, ui: UiState, question: Confirm, snap: Snapshot) -> KeyResult:
    if question in PIN_ASKED:
        row = _asked_row(ui, snap)
        if row is None:
            return KeyResult(replace(ui, message=f"{ui.selected}: no such device now"))
        if not yes:
            now = row.pin.value if row.pin is not None else "automatic"
            return KeyResult(replace(ui, message=f"{row.name}: not changed, still {now}"))
        return _pinned(ui, row.name, PIN_ASKED[question])
    if not yes:
        return KeyResult(replace(ui, message=f"{question.value}: not done"))
    if question is Confirm.QUIT:
        return KeyResult(replace(ui, quitting=True), quit=True)
    kind = CommandKind.FORCE_SHED if question is Confirm.SHED else CommandKind.FORCE_RESTORE
    devices = forced_devices(kind, snap.devices)
    if not devices:
        nothing = "off" if kind is CommandKind.FORCE_SHED else "back on"
        return KeyResult(
            replace(ui, message=f"{kind.value}: nothing to switch {nothing}"), Command(kind)
        )
    return KeyResult(replace(ui, forced=Forced(kind, devices, snap.taken_at)), Command(kind))


def forced_devices(kind: CommandKind, rows: Sequence[DeviceRow]) -> tuple[str, ...]:
    """What a forced command switches, chosen as policy.force_shed and force_restore choose.

    A shed: every device not essential nor pinned, seen on (a computer: not seen off), or shed
    but not seen off yet. A restore: everything loadshed switched off, but what is kept off.
    """
    if kind is CommandKind.FORCE_RESTORE:
        return tuple(r.name for r in rows if r.shed_reason is not None and r.pin is not Pin.OFF)
    return tuple(
        r.name
        for r in rows
        if r.rule > ESSENTIAL
        and r.pin is None
        and (
            r.power is Power.ON
            or (r.power is None and r.kind in COMPUTER_KINDS)
            or (r.shed_reason is not None and r.power is not Power.OFF)
        )
    )


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a forced command's devices stand now."""

    done: tuple[str, ...]  # off (a shed) or back on (a restore)
    switching: tuple[str, ...]
    waiting: tuple[str, ...]  # neither: for another device (a plug for its computer), or failed


def progress(forced: Forced, rows: Sequence[DeviceRow]) -> Progress:
    """Sort a forced command's devices by where they stand in these rows."""
    by_name = {r.name: r for r in rows}
    done: list[str] = []
    switching: list[str] = []
    waiting: list[str] = []
    for name in forced.devices:
        row = by_name.get(name)
        if row is not None and row.busy is not None:
            switching.append(name)
        elif row is not None and (
            row.power is Power.OFF
            if forced.kind is CommandKind.FORCE_SHED
            else row.shed_reason is None
        ):
            done.append(name)
        else:
            waiting.append(name)
    return Progress(tuple(done), tuple(switching), tuple(waiting))


def follow(ui: UiState, snap: Snapshot) -> UiState:
    """Bring the screen's own state up to date with a new snapshot (ui.py calls it before each
    draw): a forced command is followed until none of its devices is switching any more, then
    its line goes — leaving a message only for what was not switched."""
    forced = ui.forced
    if forced is None:
        return ui
    if not forced.obeyed:
        if not _obeyed(forced, snap):
            return ui
        forced = replace(forced, obeyed=True)
    now = progress(forced, snap.devices)
    if now.switching:
        return replace(ui, forced=forced)
    left = ""
    if now.waiting:
        left = f"{forced.kind.value}: not switched: {', '.join(now.waiting)} (see the table)"
    return replace(ui, forced=None, message=left or ui.message)


def _obeyed(forced: Forced, snap: Snapshot) -> bool:
    """Whether the engine has taken the command: one of its devices switching its way, or the
    engine's line on it ("force shed (forced from keyboard): 7 devices") said since it was
    asked; or, with neither, OBEY_WAIT_S since."""
    verb = Verb.SHED if forced.kind is CommandKind.FORCE_SHED else Verb.RESTORE
    if any(r.busy is verb for r in snap.devices if r.name in forced.devices):
        return True
    said = f"{forced.kind.value} ("
    return snap.taken_at - forced.asked_at > OBEY_WAIT_S or any(
        at > forced.asked_at and line.partition(" ")[2].startswith(said)
        for line, at in zip(snap.events, snap.event_times, strict=False)
    )


def selected_index(rows: Sequence[DeviceRow], ui: UiState) -> int | None:
    """The selected row: the one named, else the first; None without rows."""
    if not rows:
        return None
    for index, row in enumerate(rows):
        if row.name == ui.selected:
            return index
    return 0


def _move(ui: UiState, rows: Sequence[DeviceRow], act: Act) -> UiState:
    index = selected_index(rows, ui)
    if index is None:
        return ui
    step = {Act.UP: index - 1, Act.DOWN: index + 1, Act.FIRST: 0, Act.LAST: len(rows) - 1}
    return replace(ui, selected=rows[min(max(step[act], 0), len(rows) - 1)].name)


# --- time left ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Estimate:
    """Hours the battery lasts at the present load, and with every sheddable device off."""

    drain_w: float  # load minus solar
    hours: float | None  # None: not draining (solar covers the load)
    shed_hours: float | None  # every sheddable device off; None: not draining, or nothing to shed
    sheddable: int  # devices in the load that a shed would switch off
    unmetered: int  # of those, how many never reported a draw: shed_hours is then at least this
    shed_drain_w: float = 0.0  # load minus their draw, minus solar: 0 or less, solar covers it


def estimate(snap: Snapshot, capacity_wh: float) -> Estimate | None:
    """Estimate time left from battery % x capacity / (load - solar); None without readings.

    With every sheddable device off: the load less what they draw, taken from the last reading
    with nothing switching (`Snapshot.load_settled_w`, with the devices on then: `in_load`),
    each device at its last measured draw (`draw_w`). So the figure holds still while devices
    switch and the Powerwall's reading catches up, and moves only once they have settled.
    """
    reading = snap.reading
    if reading.battery_pct is None or reading.load_w is None:
        return None
    solar = reading.solar_w or 0.0
    drain = reading.load_w - solar
    energy_wh = reading.battery_pct / 100 * capacity_wh
    draws = [
        _draw_w(r)
        for r in snap.devices
        if r.rule > ESSENTIAL and r.pin is not Pin.ON and _in_load(r)
    ]
    metered = sum(w for w in draws if w is not None)
    load_w = snap.load_settled_w if snap.load_settled_w is not None else reading.load_w
    # Never more than now: a shed only takes load away (the draws of devices that report none
    # are still in it, so it may look so while they switch).
    shed_drain = min(max(load_w - metered, 0.0) - solar, drain)
    return Estimate(
        drain,
        energy_wh / drain if drain > 0 else None,
        energy_wh / shed_drain if draws and shed_drain > 0 else None,
        len(draws),
        sum(w is None for w in draws),
        shed_drain,
    )


def _in_load(row: DeviceRow) -> bool:
    return row.in_load if row.in_load is not None else row.power is Power.ON


def _draw_w(row: DeviceRow) -> float | None:
    return row.draw_w if row.draw_w is not None else row.watts


def duration(seconds: float) -> str:
    """Say a duration the way a person glances at it: 40 s, 12 min, 2 h 5 min, 3 d 4 h."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def _countdown(seconds: float) -> str:
    """A countdown, rounded up: it never says 0 s while something is still pending."""
    return duration(math.ceil(max(seconds, 0.0)))


_SAID_AT: Final = re.compile(r"\d\d:\d\d")  # the engine's stamp on each events line
_SECONDS: Final = re.compile(r"\b(\d+(?:\.\d+)?) s\b")  # "down after 6 s", in an events line


@dataclass(frozen=True, slots=True)
class _Clock:
    """Every time on the screen, by one clock: the wall clock, or in the demo the house's,
    which reads `demo.hour` at `now` and runs `demo.speed` times faster."""

    now: float  # wall clock
    demo: Demo | None = None

    def at(self, wall: float) -> str:
        """A moment, as HH:MM."""
        if self.demo is None:
            return time.strftime("%H:%M", time.localtime(wall))
        return _hour(self.demo.hour + (wall - self.now) * self.demo.speed / 3600)

    def span(self, seconds: float) -> str:
        """A duration of wall seconds."""
        return duration(seconds * self._speed())

    def countdown(self, seconds: float) -> str:
        """Wall seconds still to wait, rounded up."""
        return _countdown(seconds * self._speed())

    def said(self, line: str, at: float | None) -> str:
        """An events line: the engine's stamp replaced by the moment it was said; in the demo,
        the seconds in its words (the engine's, real) in the house's time too."""
        stamp, _, words = line.partition(" ")
        if at is None or not _SAID_AT.fullmatch(stamp):
            return line
        if self.demo is not None:
            words = _SECONDS.sub(lambda m: self.span(float(m.group(1))), words)
        return f"{self.at(at)} {words}"

    def _speed(self) -> float:
        return self.demo.speed if self.demo is not None else 1.0


def _hour(hour: float) -> str:
    minutes = math.floor(hour * 60) % (24 * 60)
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _kw(watts: float) -> str:
    return f"{watts / 1000:.1f} kW"


# --- render -------------------------------------------------------------------------------------


def render(
    snap: Snapshot, ui: UiState, width: int, height: int, *, now: float | None = None
) -> list[Line]:
    """Lay out the whole screen. Pure: same snapshot, state, size and now, same lines.

    `now` is the wall clock for countdowns and durations (default: when the snapshot was taken);
    in the demo, `ui.demo` turns every time into the house's. The result has exactly `height`
    lines, each at most `width` long, unless the window is too small, when it is a short message
    saying so (and still the grid and battery).
    """
    clock = _Clock(snap.taken_at if now is None else now, ui.demo)
    if width < MIN_WIDTH or height < MIN_HEIGHT:
        lines = _too_small(snap, ui, width, height, clock)
    else:
        header = _header(snap, ui, width, clock)
        bottom = _bottom(snap, ui, width)
        room = height - len(header) - len(bottom)
        middle = _help(ui, width, room) if ui.help else _body(snap, ui, width, room, clock)
        lines = header + middle + bottom
    if not ui.unicode:
        lines = [replace(line, text=line.text.translate(ASCII)) for line in lines]
    return lines


def _too_small(snap: Snapshot, ui: UiState, width: int, height: int, clock: _Clock) -> list[Line]:
    words, style = _grid_words(snap, clock)
    battery = snap.reading.battery_pct
    first = _Text().add("loadshed: ").add(words, style)
    if battery is not None:
        first.add(f", battery {battery:.0f} %")
    lines = [
        first.line(width),
        _fit(
            Line(f"The window is {width}x{height}; the screen needs {MIN_WIDTH}x{MIN_HEIGHT}."),
            width,
        ),
        _fit(Line("Make it larger, or press q to quit."), width),
    ]
    if ui.confirm is not None or ui.quitting:
        lines[-1] = _bottom(snap, ui, width)[0]
    return lines[: max(height, 0)]


def _header(snap: Snapshot, ui: UiState, width: int, clock: _Clock) -> list[Line]:
    return [
        _title(snap, ui, width, clock),
        _grid_line(snap, width, clock),
        *_source_lines(snap, width, clock),
        _battery_line(snap, width),
        _time_left_line(snap, ui, width),
        _status_line(snap, width, clock),
        *(_Text(Style.BAD).add(f"  ! {problem}").line(width) for problem in snap.problems),
    ]


def _title(snap: Snapshot, ui: UiState, width: int, clock: _Clock) -> Line:
    title = _Text(Style.TITLE).add(" loadshed")
    right = f"{clock.at(clock.now)} "
    if ui.demo is not None:
        demo = ui.demo
        solar = "by time of day" if demo.solar_w is None else f"fixed {_kw(demo.solar_w)}"
        title.add("  ").add("DEMO", Style.DEMO)
        title.add(f"  house clock {_hour(demo.hour)} · {demo.speed:g}x real time · solar {solar}")
        right = ""  # the house clock is the only clock: every time below is the house's
    if snap.dry_run:
        title.add("  ").add("DRY RUN: nothing is switched", Style.WARN)
    text = _cut(title.text, width - len(right) - (1 if right else 0))
    spans = tuple(s for s in title.spans if s.start < len(text))
    return _fit(Line(text.ljust(width - len(right)) + right, Style.TITLE, spans), width)


def _grid_words(snap: Snapshot, clock: _Clock) -> tuple[str, Style]:
    reading = snap.reading
    if not snap.started:
        return "starting: reading the Powerwall and every device…", Style.DIM
    decided = snap.decided_by if snap.decided_by is not None else reading
    by = "" if decided is reading else f" (the {decided.source} says; the Powerwall cannot)"
    if decided.grid is Grid.ON:
        since = f" since {clock.at(snap.grid_since)}" if snap.grid_since is not None else ""
        return f"on grid{since}{by}", Style.OK
    if decided.grid is Grid.OFF:
        began = snap.outage_since if snap.outage_since is not None else snap.grid_since
        since = (
            f" for {clock.span(clock.now - began)}, since {clock.at(began)}"
            if began is not None
            else ""
        )
        return f"OFF GRID — on battery{since}{by}", Style.BAD
    since = f" since {clock.at(snap.unknown_since)}" if snap.unknown_since is not None else ""
    if reading.status is Status.OK:
        what = f"unknown: the Powerwall says {reading.raw or 'nothing'}{since}"
    elif reading.status is Status.FAILED:
        what = f"unknown: Powerwall refused{since}"
    else:
        what = f"unknown: Powerwall unreachable{since}"
    return what, Style.WARN


def _grid_line(snap: Snapshot, width: int, clock: _Clock) -> Line:
    words, style = _grid_words(snap, clock)
    mark = {Style.OK: "● ", Style.BAD: "● ", Style.WARN: "? "}.get(style, "  ")
    text = _Text().add(mark + words, style)
    reading = snap.reading
    if snap.started and reading.grid is Grid.UNKNOWN and reading.detail:
        text.add(f" — {reading.detail}")
    return text.line(width)


def _source_lines(snap: Snapshot, width: int, clock: _Clock) -> list[Line]:
    """One line per secondary grid source (canary plugs, a UPS): what it says, and how old
    that is; then who disagrees with whom, if anyone does."""
    lines = []
    for row in snap.sources:
        reading = row.reading
        words = {Grid.ON: "on grid", Grid.OFF: "off grid"}.get(reading.grid, "cannot tell")
        style = {Grid.ON: Style.OK, Grid.OFF: Style.BAD}.get(reading.grid, Style.WARN)
        why = reading.raw if reading.grid is not Grid.UNKNOWN else reading.detail
        age = "not read yet" if row.age_s is None else f"{clock.span(row.age_s)} ago"
        text = _Text().add(f"  {row.name:<7} ").add(words, style)
        text.add(f" ({why})" if why else "").add(f" · {age}", Style.DIM)
        lines.append(text.line(width))
    if snap.disagreement:
        lines.append(
            _Text(Style.WARN).add(f"  ! sources disagree: {snap.disagreement}").line(width)
        )
    return lines


def _battery_line(snap: Snapshot, width: int) -> Line:
    reading = snap.reading
    text = _Text().add("  battery ")
    pct = reading.battery_pct
    if pct is None:
        text.add("unknown", Style.WARN)
    else:
        full = round(min(max(pct, 0.0), 100.0) / 100 * BAR_WIDTH)
        low = pct < LOW_BATTERY_PCT
        text.add("[").add("█" * full, Style.BAD if low else Style.OK).add("░" * (BAR_WIDTH - full))
        text.add("] ").add(f"{pct:3.0f} %", Style.BAD if low else None)
    if reading.load_w is not None:
        text.add(f"   load {_kw(reading.load_w)}")
    if reading.solar_w is not None:
        text.add(f"   solar {_kw(reading.solar_w)}")
    return text.line(width)


def _time_left_line(snap: Snapshot, ui: UiState, width: int) -> Line:
    capacity = ui.capacity_wh if ui.capacity_wh is not None else POWERWALL_2_WH
    guess = estimate(snap, capacity)
    off_grid = snap.reading.grid is Grid.OFF
    lead = "  time left " if off_grid else "  on battery "
    if guess is None:
        return _Text().add(lead).add("unknown (no battery or load reading)", Style.DIM).line(width)
    if guess.hours is None:
        return _Text().add(lead).add("as long as the sun lasts: solar covers the load").line(width)
    now = f"≈ {duration(guess.hours * 3600)}"
    at = f" at {_kw(guess.drain_w)}"
    shed_long = shed_short = assumed = ""
    if guess.shed_hours is not None:
        shed = f", {'≥' if guess.unmetered else '≈'} {duration(guess.shed_hours * 3600)}"
        shed_long, shed_short = f"{shed} with all sheddable off", f"{shed} all shed"
    elif guess.sheddable:  # draining now, but not with them off
        shed_long = ", with all sheddable off solar covers the load"
        shed_short = ", all shed: solar covers it"
    elif any(r.shed_reason is not None for r in snap.devices):
        shed_long, shed_short = ", every sheddable device is off", ", all shed"
    if ui.capacity_wh is None:
        assumed = f" ({POWERWALL_2_WH / 1000:g} kWh assumed)"
    # The most said that fits: every figure, then shorter words, then fewer figures.
    for tail in (shed_long + assumed, shed_short + assumed, shed_short, ""):
        if len(lead) + len(now) + len(at) + len(tail) <= width:
            break
    text = _Text().add(lead).add(now, Style.WARN if off_grid else None)
    return text.add(at + tail).line(width)


def _status_line(snap: Snapshot, width: int, clock: _Clock) -> Line:
    text = _Text().add("  ")
    items: list[tuple[str, Style | None]] = []
    if snap.started and snap.reading.grid is Grid.UNKNOWN:
        items.append(("nothing is shed or restored while the grid is unknown", Style.WARN))
    if snap.shed_at is not None:
        items.append((f"shedding in {clock.countdown(snap.shed_at - clock.now)}", Style.WARN))
    if snap.restore_at is not None:
        items.append((f"restoring in {clock.countdown(snap.restore_at - clock.now)}", Style.WARN))
    if snap.hold:
        items.append(("held off by a forced shed: r restores", Style.WARN))
    if snap.paused:
        items.append(("shedding paused by a forced restore until the grid is back", Style.WARN))
    # Each device counted once, as it is now: a device switching is not yet off (nor on).
    idle = [r for r in snap.devices if r.busy is None and r.shed_reason is not None]
    off = sum(snap.dry_run or r.power is not Power.ON for r in idle)
    stuck = len(idle) - off  # loadshed switched it off, yet it is seen on: a failed switch
    busy = sum(r.busy is not None for r in snap.devices)
    if off:
        done = "would be switched off" if snap.dry_run else "switched off by loadshed"
        items.append((f"{off} {done}", Style.SHED))
    if busy:
        items.append((f"{busy} switching", Style.WARN))
    if stuck:
        items.append((f"{stuck} still on: switching off failed", Style.BAD))
    if snap.started and not items:
        items.append(("nothing shed", Style.DIM))
    for index, (words, style) in enumerate(items):
        text.add(" · " if index else "").add(words, style)
    return text.line(width)


# --- the device table ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Col:
    head: str
    cap: int  # never wider than this
    least: int  # shrunk no further than this


_COLS: Final = (
    _Col("name", 20, 10),
    _Col("kind", 7, 4),
    _Col("address", 21, 21),  # an address cut short is no address: dropped instead
    _Col("state", 30, 13),
    _Col("rule", 16, 15),
    _Col("loadshed", 36, 13),
)
_SHRINK: Final = ("state", "loadshed", "name")  # in this order, down to their least
_DROP: Final = ("address", "kind")  # then these go, one by one, until the rest fits
_GAP: Final = 1
_MARK: Final = 2  # "▸ " before the selected row


def _cells(row: DeviceRow) -> Mapping[str, tuple[str, Style | None]]:
    pin = row.pin
    rule = (f"pin: {pin.value}", Style.PIN) if pin is not None else (describe_rule(row.rule), None)
    shed = (f"SHED {row.shed_reason}", Style.SHED) if row.shed_reason is not None else ("", None)
    if row.note and row.shed_reason is None:
        shed = (row.note, Style.WARN)
    return {
        "name": (row.name, None),
        "kind": (row.kind.value, None),
        "address": (row.address, None),
        "state": device_state(row),
        "rule": rule,
        "loadshed": shed,
    }


def device_state(row: DeviceRow) -> tuple[str, Style | None]:
    """A device's state in words: on, off, shutting down, waking, unreachable, failed: why."""
    computer = row.kind in COMPUTER_KINDS
    if row.busy is Verb.SHED:
        return ("shutting down" if computer else "switching off"), Style.WARN
    if row.busy is Verb.RESTORE:
        return ("waking" if computer else "switching on"), Style.WARN
    if row.status is None:
        return "not read yet", Style.DIM
    if computer and row.status is Status.UNREACHABLE and row.power is not Power.ON:
        # A computer that is off is silent: that is not an error.
        return ("off" if row.power is Power.OFF else "unknown: not answering"), Style.DIM
    if row.status is Status.UNREACHABLE:
        return (f"unreachable: {row.detail}" if row.detail else "unreachable"), Style.WARN
    if row.status is Status.FAILED:
        return (f"failed: {row.detail}" if row.detail else "failed"), Style.BAD
    if row.power is Power.ON:
        return ("on" if row.watts is None else f"on, {row.watts:.0f} W"), Style.OK
    if row.power is Power.OFF:
        return "off", Style.DIM
    return "unknown", Style.WARN


def _widths(rows: Sequence[Mapping[str, tuple[str, Style | None]]], width: int) -> dict[str, int]:
    """Each column's width: natural, shrunk to fit, columns dropped if need be; the rest to SHED."""
    natural = {
        c.head: min(c.cap, max([len(c.head), *(len(r[c.head][0]) for r in rows)])) for c in _COLS
    }
    least = {c.head: min(c.least, natural[c.head]) for c in _COLS}
    dropped: list[str] = []
    for drop in (None, *_DROP):
        if drop is not None:
            dropped.append(drop)
        widths = {h: w for h, w in natural.items() if h not in dropped}
        over = _MARK + sum(widths.values()) + _GAP * (len(widths) - 1) - width
        for head in _SHRINK:
            take = min(max(over, 0), widths[head] - least[head])
            widths[head] -= take
            over -= take
        if over <= 0:
            break
    widths["loadshed"] -= min(over, 0)  # the last column takes what is left
    return widths


def _row_line(
    cells: Mapping[str, tuple[str, Style | None]],
    widths: Mapping[str, int],
    width: int,
    selected: bool,
) -> Line:
    text = _Text(Style.SELECTED if selected else Style.NORMAL).add("▸ " if selected else "  ")
    for index, (head, cell_width) in enumerate(widths.items()):
        words, style = cells[head]
        text.add(" " * _GAP if index else "")
        text.add(_cut(words, cell_width), style)
        text.add(" " * (cell_width - min(len(words), cell_width)))
    return text.line(width, pad=selected)


def _body(snap: Snapshot, ui: UiState, width: int, room: int, clock: _Clock) -> list[Line]:
    rows = snap.devices
    cells = [_cells(r) for r in rows]
    widths = _widths(cells, width)
    heads = {h: (h, None) for h in widths}
    pinned = 1 if snap.outage_event else 0
    # less the column heads, the detail, the rule, the outage's line, one event
    table_room = max(room - 4 - pinned, 1)
    index = selected_index(rows, ui)
    start = 0
    if index is not None and len(rows) > table_room:
        start = min(max(index - table_room // 2, 0), len(rows) - table_room)
    shown = range(start, min(start + table_room, len(rows)))
    lines = [replace(_row_line(heads, widths, width, selected=False), style=Style.HEADING)]
    if not rows:
        lines.append(_fit(Line("  no devices yet", Style.DIM), width))
    lines += [_row_line(cells[i], widths, width, selected=i == index) for i in shown]
    lines.append(_detail(rows[index] if index is not None else None, width))
    more = (
        f"─ devices {shown.start + 1}-{shown.stop} of {len(rows)} "
        if len(shown) < len(rows)
        else ""
    )
    rule = f"{more}─ events{' (house clock)' if ui.demo is not None else ''} "
    lines.append(Line(rule + "─" * max(width - len(rule), 0), Style.HEADING))
    times: Sequence[float | None] = snap.event_times
    if len(times) != len(snap.events):
        times = [None] * len(snap.events)
    said = list(zip(snap.events, times, strict=True))
    if pinned:
        # The change that began the outage stays in sight however many lines follow it.
        began = (snap.outage_event, snap.outage_event_at)
        said = [line for line in said if line != began]
        lines.append(_fit(Line(f"  {clock.said(*began)}", Style.BAD), width))
    events = room - len(lines)
    if events > 0:
        lines += [_fit(Line(f"  {clock.said(*line)}"), width) for line in said[-events:]]
    return lines + [Line("")] * (room - len(lines))


def _detail(row: DeviceRow | None, width: int) -> Line:
    """Everything about the selected device, for what its cells had to cut."""
    if row is None:
        return Line("")
    text = _Text(Style.DIM).add(f"  ▸ {row.name}: {row.kind.value} at {row.address} · ")
    state, style = device_state(row)
    text.add(state, style).add(f" · {describe_rule(row.rule)}")
    if row.pin is not None:
        text.add(" · ").add(f"pinned: {row.pin.value}", Style.PIN)
    if row.shed_reason is not None:
        text.add(" · ").add(f"SHED: {row.shed_reason}", Style.SHED)
    if row.note:
        text.add(" · ").add(row.note, Style.WARN)
    return text.line(width)


# --- help, prompts, keys -------------------------------------------------------------------------


def _help(ui: UiState, width: int, room: int) -> list[Line]:
    capacity = (
        f"{ui.capacity_wh / 1000:g} kWh"
        if ui.capacity_wh is not None
        else f"{POWERWALL_2_WH / 1000:g} kWh assumed (one Powerwall 2)"
    )
    lines = [Line(""), Line("Keys", Style.HEADING)]
    for key in KEYS:
        if key.demo and ui.demo is None:
            continue
        does = LEAVE_DOES if key.act is Act.QUIT and ui.attached else key.does
        lines.append(Line(f"  {key.shown:<6} {'demo: ' if key.demo else ''}{does}"))
    lines += [
        Line(""),
        Line("Reading the table", Style.HEADING),
        Line("  rule: essential (never shed), shed at outage, shed below N % (back above N+10)"),
        Line("  SHED: loadshed switched it off, and why; it restores exactly those"),
        Line("  pin: your keep on / keep off wins over the rule, and survives a restart"),
        Line(f"  time left: charge x {capacity} / (load - solar)"),
        Line(""),
        Line("Any key closes this help.", Style.DIM),
    ]
    lines = [_fit(line, width) for line in lines[:room]]
    return lines + [Line("")] * (room - len(lines))


PROMPTS: Final[Mapping[Confirm, tuple[str, str]]] = {
    Confirm.SHED: ("Force a shed now?", "Every device not essential goes off, held off until r."),
    Confirm.RESTORE: ("Force a restore now?", "What loadshed switched off comes back on."),
    Confirm.QUIT: ("Quit?", "What loadshed switched off stays off: quitting does not restore."),
    # Filled in with the selected device's {device}, {rule} and what that rule does now, {why}.
    Confirm.UNPIN: ("{device} back to its rule ({rule}): {why}.", "n keeps the pin."),
    Confirm.KEEP_OFF: (
        "Switch {device} off and keep it off?",
        "Its rule ({rule}) is set aside until x again.",
    ),
}
# Attached to a loadshed running elsewhere, q leaves this screen only: the question says so.
LEAVE: Final = ("Leave this screen? loadshed keeps running.", "")
LEAVE_DOES: Final = "leave this screen (y/n); loadshed keeps running"


def _prompt(question: Confirm, ui: UiState, snap: Snapshot) -> tuple[str, str]:
    """A question's words, about the selected device when it is a pin's."""
    asked, meaning = LEAVE if question is Confirm.QUIT and ui.attached else PROMPTS[question]
    row = _asked_row(ui, snap) if question in PIN_ASKED else None
    if row is None:
        return asked, meaning
    why = _rule_switches_off(row, snap) or "nothing is switched off now"
    words = {"device": row.name, "rule": describe_rule(row.rule), "why": why}
    return asked.format_map(words), meaning.format_map(words)


def _bottom(snap: Snapshot, ui: UiState, width: int) -> list[Line]:
    lines = []
    if ui.quitting and ui.attached:
        lines.append(Line(" leaving this screen; loadshed keeps running…", Style.PROMPT))
    elif ui.quitting:
        wait = f"{QUIT_WAIT_S:g} s"
        lines.append(
            Line(f" stopping: switches in flight may finish (at most {wait})…", Style.PROMPT)
        )
    elif ui.confirm is not None:
        question, meaning = _prompt(ui.confirm, ui, snap)
        lines.append(Line(f" {question} y/n" + (f"  {meaning} " if meaning else ""), Style.PROMPT))
    elif ui.forced is not None:
        said = _forced_words(ui.forced, snap)
        lines.append(Line(f" {said}" + (f" · {ui.message}" if ui.message else ""), Style.WARN))
    elif ui.message:
        lines.append(Line(f" {ui.message}", Style.WARN))
    return [_fit(line, width) for line in lines] + [_footer(ui, width)]


def _forced_words(forced: Forced, snap: Snapshot) -> str:
    """What a forced command is doing: "force shed: 4 off, 3 switching…"."""
    if not forced.obeyed:
        return f"{forced.kind.value}: asked…"
    now = progress(forced, snap.devices)
    done = "off" if forced.kind is CommandKind.FORCE_SHED else "back on"
    said = f"{forced.kind.value}: {len(now.done)} {done}, {len(now.switching)} switching"
    return said + (f", {len(now.waiting)} waiting" if now.waiting else "") + "…"


def _footer(ui: UiState, width: int) -> Line:
    items = [k.footer for k in KEYS if k.footer and (ui.demo is not None or not k.demo)]
    optional = ["+- solar", "↑↓ select"]  # dropped in this order when too narrow
    while len("  ".join(items)) + 1 > width and optional:
        drop = optional.pop(0)
        if drop in items:
            items.remove(drop)
    text = _Text(Style.HEADING)
    for index, item in enumerate(items):
        key, _, label = item.partition(" ")
        text.add("  " if index else " ").add(key, Style.TITLE).add(f" {label}")
    return text.line(width)


def ascii_only(encoding: str) -> bool:
    """Whether a terminal with this encoding needs ASCII stand-ins for the glyphs."""
    return "utf" not in encoding.lower().replace("-", "")
