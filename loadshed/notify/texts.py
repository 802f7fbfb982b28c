"""Message texts: each event said as an SMS-sized text and as a title with a full body.

Pure: no I/O. The outbox renders its letters with these, the channels send the `Note`s.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from loadshed.logs import redact
from loadshed.model import Event, EventKind

# --- policy numbers ------------------------------------------------------------------------------

SMS_MAX_CHARS: Final = 160  # one SMS segment of GSM-7 text; carriers split or cut longer ones
LATE_AFTER_S: Final = 120.0  # delivered later than this after the event: the text says so
SHORT_ID_LEN: Final = 6  # hex digits of the event reference shown in a message ("#3fa2c1")


# --- message texts -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Wording:
    """How one kind of event is said.

    Placeholders: {time} HH:MM local, {late} " (sent 37 min late)" or "", {battery} "81%",
    {outcome} "Shed 6 devices, 1 failed (Heater: no answer).", {failures} "Heater: no answer",
    {detail} the event's detail.
    """

    sms: str  # the short text, after "loadshed: "
    title: str  # the title of the full message
    severity: str  # Apprise notify type: info, success, warning, failure
    verb: str = ""  # "Shed" / "Restored": what the devices in `done` went through
    done_label: str = ""  # the full body's list heading for `done`
    detail_label: str = "Detail"


MESSAGES: Final[dict[EventKind, Wording]] = {
    EventKind.OFF_GRID: Wording(
        "grid lost {time}{late}, battery {battery}. {outcome}",
        "Grid lost at {time}",
        "warning",
        "Shed",
        "Switched off",
        "Gateway status",
    ),
    EventKind.ON_GRID: Wording(
        "grid back {time}{late}, battery {battery}. {outcome}",
        "Grid back at {time}",
        "success",
        "Restored",
        "Switched back on",
        "Gateway status",
    ),
    EventKind.POWERWALL_LOST: Wording(
        "cannot read the Powerwall since {time}{late}: {detail}. Nothing is shed or restored "
        "on its word until it answers.",
        "Powerwall unreachable since {time}",
        "warning",
        detail_label="Why",
    ),
    EventKind.POWERWALL_BACK: Wording(
        "Powerwall readable again {time}{late}, battery {battery}.",
        "Powerwall readable again at {time}",
        "success",
    ),
    EventKind.SHED_DONE: Wording(
        "off-grid, shed done {time}{late}, battery {battery}. {outcome}",
        "Load shed at {time}",
        "warning",
        "Shed",
        "Switched off",
    ),
    EventKind.TIER_SHED: Wording(
        "battery low {time}{late}: {battery}. {outcome}",
        "Battery low at {time}: more load shed",
        "warning",
        "Shed",
        "Switched off",
        "Rule",
    ),
    EventKind.TIER_RESTORED: Wording(
        "battery recovered {time}{late}: {battery}. {outcome}",
        "Battery recovered at {time}",
        "success",
        "Restored",
        "Switched back on",
        "Rule",
    ),
    EventKind.RESTORE_DONE: Wording(
        "grid back, restore done {time}{late}, battery {battery}. {outcome}",
        "Restore finished at {time}",
        "success",
        "Restored",
        "Switched back on",
    ),
    EventKind.DEVICE_FAILED: Wording(
        "device trouble {time}{late}: {failures}.",
        "Device trouble at {time}",
        "failure",
        done_label="Done",
    ),
    EventKind.SOURCES_DISAGREE: Wording(
        "grid sources disagree {time}{late}: {detail}. Acting on the Powerwall only after a "
        "longer wait.",
        "Grid sources disagree ({time})",
        "warning",
        detail_label="Who says what",
    ),
    EventKind.ATTENTION: Wording(
        "needs your attention {time}{late}: {detail}",
        "loadshed needs your attention ({time})",
        "failure",
        detail_label="What",
    ),
}

SUMMARY_SMS: Final = "{count} earlier alerts while offline: {items}"
SUMMARY_TITLE: Final = "{count} earlier alerts while offline"
SUMMARY_INTRO: Final = "These alerts waited while this channel could not be reached:"
SUMMARY_DROPPED: Final = "...and {count} older alerts, no longer kept."
TEST_SMS: Final = "test message {time} from {host}. Alerts reach you here."
TEST_TITLE: Final = "Test message"
TEST_BODY: Final = (
    "A test from loadshed on {host} at {time}. If you read this, loadshed's alerts reach you here."
)
PREFIX: Final = "loadshed: "
ELLIPSIS: Final = "..."  # ASCII: SMS gateways mangle anything outside GSM-7


@dataclass(frozen=True, slots=True)
class Note:
    """One message as the channels send it: the SMS-sized text, and a title with a full body."""

    sms: str  # at most SMS_MAX_CHARS
    title: str
    body: str
    severity: str
    ref: str  # the short event reference, also in the texts: "3fa2c1"


def short_id(event_id: str) -> str:
    """Return the short reference of an event id, the same every time ("3fa2c1")."""
    return hashlib.sha256(event_id.encode()).hexdigest()[:SHORT_ID_LEN]


def _hhmm(at: float) -> str:
    return time.strftime("%H:%M", time.localtime(at))


def _battery(pct: float | None) -> str:
    return "unknown" if pct is None else f"{round(pct)}%"


def _late(at: float, now: float) -> str:
    late_s = now - at
    if late_s < LATE_AFTER_S:
        return ""
    minutes = round(late_s / 60)
    if minutes < 60:
        said = f"{minutes} min"
    elif minutes < 48 * 60:
        said = f"{minutes // 60} h {minutes % 60:02d} min"
    else:
        said = f"{minutes // (24 * 60)} days"
    return f" (sent {said} late)"


def _count(n: int) -> str:
    return f"{n} device" if n == 1 else f"{n} devices"


def _failures(failed: Sequence[tuple[str, str]], level: int) -> str:
    """Name what failed: with reasons (level 0), names only (1), or nothing (2)."""
    if level == 0:
        return "; ".join(f"{name}: {why}" for name, why in failed)
    if level == 1:
        return ", ".join(name for name, _ in failed)
    return ""


def _outcome(event: Event, verb: str, level: int) -> str:
    if not (event.done or event.failed) or not verb:
        return ""
    text = f"{verb} {_count(len(event.done))}"
    if event.failed:
        names = _failures(event.failed, level)
        text += f", {len(event.failed)} failed" + (f" ({names})" if names else "")
    return text + "."


def _fill(template: str, values: dict[str, str]) -> str:
    return " ".join(template.format(**values).split())  # an empty {outcome} leaves no gap


def _fit(text: str, room: int) -> str:
    if len(text) <= room:
        return text
    return text[: max(0, room - len(ELLIPSIS))].rstrip(" ,;:") + ELLIPSIS


def _sms(core_for_level: Callable[[int], str], ref: str) -> str:
    """Prefix, core and reference in SMS_MAX_CHARS: drop reasons, then names, then cut the end.

    Templates put {time}{late} first, so a cut never loses when it happened or how late it is.
    """
    tail = f" #{ref}"
    room = SMS_MAX_CHARS - len(PREFIX) - len(tail)
    core = ""
    for level in range(3):
        core = core_for_level(level)
        if len(core) <= room:
            break
    return PREFIX + _fit(core, room) + tail


def render_event(event: Event, now: float) -> Note:
    """Say one event: the SMS text and the full title and body, as of `now`."""
    words = MESSAGES[event.kind]
    ref = short_id(event.id)
    late = _late(event.at, now)
    detail = event.detail.strip().rstrip(".") or "no answer"

    def values(level: int) -> dict[str, str]:
        return {
            "time": _hhmm(event.at),
            "late": late,
            "battery": _battery(event.battery_pct),
            "outcome": _outcome(event, words.verb, level),
            "failures": (
                (_failures(event.failed, level) or f"{_count(len(event.failed))} failed")
                if event.failed
                else detail
            ),
            "detail": detail,
        }

    sms = redact(_sms(lambda level: _fill(words.sms, values(level)), ref))
    title = PREFIX + _fill(words.title, values(0))
    first = _fill(words.title, values(0)) + late + "."
    if event.battery_pct is not None:
        first += f" Battery {_battery(event.battery_pct)}."
    lines = [first]
    outcome = _outcome(event, words.verb, 2)
    if outcome:
        lines.append(outcome)
    if event.done:
        lines.append(f"{words.done_label or 'Done'} ({len(event.done)}): " + ", ".join(event.done))
    if event.failed:
        lines.append(f"Failed ({len(event.failed)}):")
        lines.extend(f"  - {name}: {why}" for name, why in event.failed)
    if event.detail.strip():
        lines.append(f"{words.detail_label}: {event.detail.strip()}")
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event.at))
    lines.append(f"Event #{ref}, {stamp}.")
    return Note(sms, redact(title), redact("\n".join(lines)), words.severity, ref)


def render_summary(events: Sequence[Event], dropped: int, now: float) -> Note:
    """Say many waiting events as one message: "12 earlier alerts while offline: ..."."""
    count = len(events) + dropped
    ref = short_id("summary:" + ",".join(e.id for e in events))
    tail = f" #{ref}"
    head = PREFIX + SUMMARY_SMS.format(count=count, items="")
    room = SMS_MAX_CHARS - len(head) - len(tail)
    items = [f"{e.kind.value} {_hhmm(e.at)}" for e in events]
    shown: list[str] = [ELLIPSIS] if dropped else []
    for number, item in enumerate(items):
        more = number < len(items) - 1
        candidate = ", ".join([*shown, item, *([ELLIPSIS] if more else [])])
        if len(candidate) > room:
            shown.append(ELLIPSIS)
            break
        shown.append(item)
    sms = redact(_fit(head + ", ".join(shown), SMS_MAX_CHARS - len(tail)) + tail)
    title = PREFIX + SUMMARY_TITLE.format(count=count)
    lines = [SUMMARY_INTRO]
    if dropped:
        lines.append(SUMMARY_DROPPED.format(count=dropped))
    for event in events:
        one = render_event(event, event.at)  # as it would have read on time: the times tell
        lines.append("- " + one.sms.removeprefix(PREFIX))
    lines.append(f"Summary #{ref}, sent {time.strftime('%Y-%m-%d %H:%M', time.localtime(now))}.")
    worst = "warning" if any(MESSAGES[e.kind].severity != "success" for e in events) else "info"
    return Note(sms, redact(title), redact("\n".join(lines)), worst, ref)


def render_test(now: float, host: str) -> Note:
    """Say the `loadshed notify-test` message."""
    ref = short_id(f"test:{now}")
    values = {"time": _hhmm(now), "host": host}
    sms = _sms(lambda _level: TEST_SMS.format(**values), ref)
    body = TEST_BODY.format(**values) + f"\nTest #{ref}."
    return Note(redact(sms), PREFIX + TEST_TITLE, redact(body), "info", ref)
