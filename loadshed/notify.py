"""Alerts that arrive: the message texts, the persisted outbox, and the SMTP and Apprise senders.

Owns `<state dir>/outbox/`: one JSON file per waiting message, written (atomically, 0600) before
any send is tried, named so they sort in event order, each recording which channels have taken
it; plus `delivered.json`, the ids of the last messages delivered, so an event is never queued
twice. A file goes only when every configured channel has taken it, so kill -9, a reboot or a
week without internet loses nothing: the next `Notifier` on the same directory sends what was
left, in order, saying how late it is.

The monitor calls `Notifier.submit(event)`, which only writes that file; `Notifier.run()` is the
sender loop, one independent retrier per channel, so a dead SMTP relay never holds back ntfy.

What this module must not do: send anything from `submit` (the monitor's loop never waits on the
network), raise into the monitor, let a send run unbounded (every send runs on its own daemon
thread under an outer deadline: Apprise has no overall timeout and smtplib's is per socket call),
put a secret in a message, a log line or a file name, or write anything outside `outbox/`.

With no channel configured (neither MAILNOTIF with SMTP_HOST nor NOTIFY_URLS), nothing is queued:
`submit` says so once in the log and the outbox stays empty, because nothing could ever drain it.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import ipaddress
import json
import logging
import os
import re
import smtplib
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Final, Protocol
from urllib.parse import unquote

import apprise

from loadshed.config import Config
from loadshed.errors import LoadshedError
from loadshed.logs import redact, redact_secrets
from loadshed.model import Event, EventKind

_LOG = logging.getLogger(__name__)

# --- policy numbers ------------------------------------------------------------------------------

SMS_MAX_CHARS: Final = 160  # one SMS segment of GSM-7 text; carriers split or cut longer ones
MAX_WAITING: Final = 20  # messages kept apart; older ones become one summary, not 200 texts
SUMMARY_ITEMS_MAX: Final = 100  # events a summary lists; older ones are only counted
DELIVERED_IDS_KEPT: Final = 500  # ids remembered after delivery, to refuse a duplicate submit
LATE_AFTER_S: Final = 120.0  # delivered later than this after the event: the text says so
RETRY_FIRST_S: Final = 30.0  # first wait after a failed send (the network is often down too)
RETRY_MAX_S: Final = 900.0  # the wait doubles up to this: 15 min between tries in a long outage
SMTP_TIMEOUT_S: Final = 15.0  # each SMTP connect and reply; a working relay answers in seconds
APPRISE_CALL_S: Final = 30.0  # Apprise's own limit on one notify() (each request has 4 s + 4 s)
SEND_DEADLINE_S: Final = 60.0  # outer bound on one send, whatever the library does (DNS included)
SHORT_ID_LEN: Final = 6  # hex digits of the event reference shown in a message ("#3fa2c1")
OUTBOX_VERSION: Final = 1

OUTBOX_DIR: Final = "outbox"
DELIVERED_FILE: Final = "delivered.json"
_LETTER_RE: Final = re.compile(r"^(\d{8,})-([a-z_]+)\.json$")
_SUMMARY_SLUG: Final = "summary"
_CREDENTIAL_HEADER_RE: Final = re.compile(
    r"(?i)key|token|auth|secret|pass|sign|cookie|session|credential"
)
_MIN_SECRET_LEN: Final = 3  # as loadshed.logs: shorter pieces would mask ordinary words

SMTP_IMPLICIT_TLS_PORT: Final = 465  # SMTPS: TLS from the first byte (RFC 8314)
SMTP_KEY: Final = "smtp"
SMTP_LOGIN_REJECTED: Final = "SMTP login rejected: check SMTP_USER/SMTP_PASSWORD"
NO_CHANNEL: Final = (
    "no alert channel configured (set MAILNOTIF with SMTP_HOST, or NOTIFY_URLS): "
    "alerts are only logged"
)

# Carrier email-to-SMS gateways (FIELD.md "Alerts"; several have closed, some silently). An
# address at one of these, or whose local part is a phone number, gets the short SMS text.
SMS_GATEWAY_DOMAINS: Final = frozenset(
    {
        "tmomail.net",
        "txt.att.net",
        "mms.att.net",
        "vtext.com",
        "vzwpix.com",
        "messaging.sprintpcs.com",
        "pm.sprint.com",
        "msg.fi.google.com",
        "mymetropcs.com",
        "sms.myboostmobile.com",
        "myboostmobile.com",
        "sms.cricketwireless.net",
        "mms.cricketwireless.net",
        "email.uscc.net",
        "mms.uscc.net",
        "vmobl.com",
        "text.republicwireless.com",
        "txt.bell.ca",
        "msg.telus.com",
        "pcs.rogers.com",
        "txt.freedommobile.ca",
    }
)
_PHONE_RE: Final = re.compile(r"^\+?\d{7,15}$")


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
        "until it answers.",
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


# --- the outbox ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Item:
    """One event waiting in a letter, and the channels that have taken it."""

    event: Event
    taken: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Letter:
    """One outbox file: a single event, or a summary of many (then `dropped` counts, per channel,
    older events no longer kept that the channel has not been told of)."""

    name: str
    items: tuple[Item, ...]
    is_summary: bool = False
    dropped: tuple[tuple[str, int], ...] = ()

    def waiting_for(self, channel: str) -> tuple[Event, ...]:
        """Return the events this channel has not taken yet."""
        return tuple(i.event for i in self.items if channel not in i.taken)

    def dropped_for(self, channel: str) -> int:
        return dict(self.dropped).get(channel, 0)

    def needs(self, channel: str) -> bool:
        return bool(self.waiting_for(channel)) or self.dropped_for(channel) > 0

    def render(self, channel: str, now: float) -> Note:
        """Say this letter as the channel should receive it."""
        events = self.waiting_for(channel)
        if len(events) == 1 and not self.dropped_for(channel):
            return render_event(events[0], now)  # a summary with one left is just that alert
        return render_summary(events, self.dropped_for(channel), now)


class Outbox:
    """The `outbox/` directory: messages waiting, in event order, with per-channel progress.

    Thread-safe: `add` runs on the monitor's thread, `taken` on send threads. Disk trouble after
    start is logged, never raised: a message that cannot be written is still sent from memory.
    """

    def __init__(self, directory: Path, channels: Iterable[str]) -> None:
        self.directory = directory
        self.channels: frozenset[str] = frozenset(channels)
        self._lock = threading.Lock()
        self._letters: list[Letter] = []  # sorted by name, which is event order
        self._queued: set[str] = set()
        self._delivered: deque[str] = deque(maxlen=DELIVERED_IDS_KEPT)
        self._seq = 0
        self._disk_ok = True
        try:
            directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            directory.mkdir(mode=0o700, exist_ok=True)
            os.chmod(directory, 0o700)  # mkdir's mode is reduced by the umask
        except OSError as err:
            raise LoadshedError(
                f"cannot create the alert outbox {directory}: {err.strerror or err}"
            ) from err
        self._load()

    # reading

    def __len__(self) -> int:
        with self._lock:
            return len(self._letters)

    def letters(self) -> tuple[Letter, ...]:
        """Return every waiting letter, oldest first."""
        with self._lock:
            return tuple(self._letters)

    def next_for(self, channel: str) -> Letter | None:
        """Return the oldest letter this channel still has to take, if any."""
        with self._lock:
            return next((letter for letter in self._letters if letter.needs(channel)), None)

    # changing

    def add(self, event: Event) -> bool:
        """Queue one event, on disk before anything is sent; False if its id was seen before."""
        event = _redacted(event)
        with self._lock:
            if event.id in self._queued or event.id in self._delivered:
                return False
            self._seq += 1
            letter = Letter(f"{self._seq:08d}-{event.kind.name.lower()}.json", (Item(event),))
            self._letters.append(letter)
            self._queued.add(event.id)
            self._save(letter)
            self._collapse()
        return True

    def taken(self, channel: str, letter: Letter) -> None:
        """Record that `channel` delivered `letter` as it rendered it; drop what all have taken."""
        ids = {e.id for e in letter.waiting_for(channel)}
        told = letter.dropped_for(channel)
        with self._lock:
            for current in list(self._letters):
                hit = any(i.event.id in ids for i in current.items)
                tells = told > 0 and current.is_summary and current.name == letter.name
                if not (hit or tells):
                    continue
                items = tuple(
                    replace(i, taken=i.taken | {channel}) if i.event.id in ids else i
                    for i in current.items
                )
                dropped = dict(current.dropped)
                if tells:
                    dropped[channel] = max(0, dropped.get(channel, 0) - told)
                changed = replace(current, items=items, dropped=_pairs(dropped))
                self._letters[self._letters.index(current)] = changed
                if self._is_done(changed):
                    self._finish(changed)
                else:
                    self._save(changed)

    # inside (callers hold the lock, except in __init__)

    def _is_done(self, letter: Letter) -> bool:
        return not any(letter.needs(c) for c in self.channels)

    def _finish(self, letter: Letter) -> None:
        self._letters.remove(letter)
        for item in letter.items:
            self._queued.discard(item.event.id)
            self._delivered.append(item.event.id)
        self._write(self.directory / DELIVERED_FILE, {"ids": list(self._delivered)})
        self._unlink(letter.name)

    def _collapse(self) -> None:
        """Fold the oldest letters into one summary until at most MAX_WAITING are left."""
        while len(self._letters) > MAX_WAITING:
            first, second = self._letters[0], self._letters[1]
            items = [*first.items, *second.items]
            dropped = dict(first.dropped)
            for channel, n in second.dropped:
                dropped[channel] = dropped.get(channel, 0) + n
            while len(items) > SUMMARY_ITEMS_MAX:
                gone = items.pop(0)
                for channel in self.channels - gone.taken:
                    dropped[channel] = dropped.get(channel, 0) + 1
                self._queued.discard(gone.event.id)
                self._delivered.append(gone.event.id)  # counted in the summary: never again
            seq = first.name.split("-", 1)[0]
            summary = Letter(f"{seq}-{_SUMMARY_SLUG}.json", tuple(items), True, _pairs(dropped))
            self._letters[0:2] = [summary]
            self._save(summary)  # written before the letters it replaces are removed
            for old in (first, second):
                if old.name != summary.name:
                    self._unlink(old.name)
            _LOG.log(
                logging.DEBUG if first.is_summary else logging.INFO,
                "alert outbox: over %d messages waiting; the oldest are folded into one summary",
                MAX_WAITING,
            )

    def _load(self) -> None:
        try:
            ids = _read_json(self.directory / DELIVERED_FILE)["ids"]
            self._delivered.extend(str(i) for i in ids)
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as err:
            _LOG.warning("alert outbox: %s unreadable (%s); starting afresh", DELIVERED_FILE, err)
        letters: list[Letter] = []
        found: list[tuple[int, str, Path]] = []
        try:
            entries = list(self.directory.iterdir())
        except OSError as err:
            _LOG.error("alert outbox %s cannot be read (%s): starting empty", self.directory, err)
            entries = []
        for path in entries:
            if path.name.endswith(".tmp"):
                self._unlink(path.name)  # a write that never finished: its letter is intact
            elif match := _LETTER_RE.match(path.name):
                found.append((int(match.group(1)), path.name, path))
        for seq, _, path in sorted(found):
            self._seq = max(self._seq, seq)
            try:
                letters.append(_decode_letter(path.name, _read_json(path)))
            except Exception as err:  # any shape at all: set aside, never a crash at start
                _LOG.warning("alert outbox: %s cannot be read (%s); set aside as .bad", path, err)
                with contextlib.suppress(OSError):
                    path.rename(path.with_name(path.name + ".bad"))
        in_summary = {i.event.id for letter in letters if letter.is_summary for i in letter.items}
        for letter in letters:
            if not letter.is_summary and letter.items[0].event.id in in_summary:
                self._unlink(letter.name)  # folded into the summary just before a crash
                continue
            self._letters.append(letter)
            self._queued.update(i.event.id for i in letter.items)
        for letter in list(self._letters):
            if self._is_done(letter):
                self._finish(letter)  # every channel configured now has taken it
        self._collapse()
        if self._letters:
            _LOG.info("alert outbox: %d messages waiting from before", len(self._letters))

    def _save(self, letter: Letter) -> None:
        self._write(self.directory / letter.name, _encode_letter(letter))

    def _write(self, path: Path, doc: dict[str, Any]) -> None:
        try:
            _write_json(path, {"version": OUTBOX_VERSION, **doc})
        except OSError as err:
            self._disk_trouble(path, err)
        else:
            self._disk_ok = True

    def _unlink(self, name: str) -> None:
        try:
            (self.directory / name).unlink(missing_ok=True)
        except OSError as err:
            self._disk_trouble(self.directory / name, err)

    def _disk_trouble(self, path: Path, err: OSError) -> None:
        if self._disk_ok:
            _LOG.error(
                "alert outbox: cannot write %s (%s); waiting alerts are kept in memory only "
                "and are lost if loadshed stops",
                path,
                err.strerror or err,
            )
        self._disk_ok = False


def _pairs(counts: dict[str, int]) -> tuple[tuple[str, int], ...]:
    return tuple(sorted((c, n) for c, n in counts.items() if n > 0))


def _redacted(event: Event) -> Event:
    return replace(
        event,
        detail=redact(event.detail),
        done=tuple(redact(n) for n in event.done),
        failed=tuple((redact(n), redact(why)) for n, why in event.failed),
    )


def _encode_event(event: Event) -> dict[str, Any]:
    return {
        "kind": event.kind.name,
        "at": event.at,
        "id": event.id,
        "battery_pct": event.battery_pct,
        "detail": event.detail,
        "done": list(event.done),
        "failed": [list(pair) for pair in event.failed],
    }


def _decode_event(doc: dict[str, Any]) -> Event:
    battery = doc["battery_pct"]
    return Event(
        kind=EventKind[doc["kind"]],
        at=float(doc["at"]),
        id=str(doc["id"]),
        battery_pct=None if battery is None else float(battery),
        detail=str(doc["detail"]),
        done=tuple(str(n) for n in doc["done"]),
        failed=tuple((str(n), str(why)) for n, why in doc["failed"]),
    )


def _encode_letter(letter: Letter) -> dict[str, Any]:
    return {
        "summary": letter.is_summary,
        "items": [
            {"event": _encode_event(i.event), "taken": sorted(i.taken)} for i in letter.items
        ],
        "dropped": dict(letter.dropped),
    }


def _decode_letter(name: str, doc: dict[str, Any]) -> Letter:
    items = tuple(
        Item(_decode_event(i["event"]), frozenset(str(c) for c in i["taken"])) for i in doc["items"]
    )
    if not items:
        raise ValueError("no events in it")
    dropped = {str(c): int(n) for c, n in doc["dropped"].items()}
    return Letter(name, items, bool(doc["summary"]), _pairs(dropped))


def _read_json(path: Path) -> dict[str, Any]:
    """Read an outbox document; ValueError unless it is one of OUTBOX_VERSION."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or doc.get("version") != OUTBOX_VERSION:
        raise ValueError(f"not an outbox document of version {OUTBOX_VERSION}")
    return doc


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    """Replace path with doc, all or nothing, readable only by the owner (STYLE §8)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# --- channels ------------------------------------------------------------------------------------


class SendError(Exception):
    """A send that did not go through; str() is one line for the owner, secrets removed."""


class Channel(Protocol):
    """One way to reach the owner. `send` blocks (it runs on its own thread) and raises
    SendError with a readable reason; it is bounded by its library's timeouts and, outside,
    by SEND_DEADLINE_S."""

    @property
    def key(self) -> str:
        """Stable and secret-free: recorded in outbox files as "taken by"."""
        ...

    @property
    def name(self) -> str:
        """What the owner sees: an address or a privacy URL, never a password or token."""
        ...

    def send(self, note: Note) -> None: ...


def is_sms_address(address: str) -> bool:
    """Whether an address looks like an email-to-SMS gateway (it then gets the short text)."""
    local, _, domain = address.strip().lower().rpartition("@")
    return domain in SMS_GATEWAY_DOMAINS or bool(_PHONE_RE.match(local))


def _ehlo_name() -> str:
    # smtplib would call socket.getfqdn(), a DNS lookup that hangs when the network is down.
    name = socket.gethostname()
    return name if re.fullmatch(r"[A-Za-z0-9.-]{1,253}", name) else "localhost"


@dataclass(frozen=True, slots=True)
class SmtpChannel:
    """Email to MAILNOTIF through an SMTP relay, with smtplib on a worker thread.

    smtplib (standard library) rather than aiosmtplib: the send runs on its own thread under an
    outer deadline anyway, and it is one dependency fewer. Port 465 is implicit TLS (SMTP_SSL);
    otherwise STARTTLS when SMTP_STARTTLS, with the system's certificate checks. MAILNOTIF at an
    SMS gateway (or a phone number) gets the SMS text alone, without a subject, since carriers
    put the subject in the text too; any other address gets the title as the subject and the
    full body. The sender is MAIL_FROM, else SMTP_USER when it is an address, else MAILNOTIF.
    """

    host: str
    port: int
    mail_from: str
    mail_to: str
    user: str = ""
    password: str = field(default="", repr=False)
    starttls: bool = True
    ssl: bool = False  # SMTP_SSL: implicit TLS on a port other than 465
    timeout_s: float = SMTP_TIMEOUT_S

    @classmethod
    def from_config(cls, config: Config) -> SmtpChannel:
        sender = config.mail_from or (config.smtp_user if "@" in config.smtp_user else "")
        return cls(
            host=config.smtp_host,
            port=config.smtp_port,
            mail_from=sender or config.mail_to,
            mail_to=config.mail_to,
            user=config.smtp_user,
            password=config.smtp_password,
            starttls=config.smtp_starttls,
            ssl=config.smtp_ssl,
        )

    @property
    def key(self) -> str:
        return SMTP_KEY

    @property
    def name(self) -> str:
        return f"{self.mail_to} via {self.host}:{self.port}"

    @property
    def is_sms(self) -> bool:
        return is_sms_address(self.mail_to)

    @property
    def implicit_tls(self) -> bool:
        return self.ssl or self.port == SMTP_IMPLICIT_TLS_PORT

    @property
    def cleartext_allowed(self) -> bool:
        """A login without TLS only to a relay on this very machine, asked for in so many
        words: SMTP_HOST a loopback address (not a name) and SMTP_STARTTLS = False."""
        try:
            loopback = ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False
        return loopback and not self.starttls

    def compose(self, note: Note) -> EmailMessage:
        """Build the email for a note."""
        msg = EmailMessage()
        msg["From"] = self.mail_from
        msg["To"] = self.mail_to
        msg["Date"] = email.utils.formatdate(localtime=True)
        domain = self.mail_from.rpartition("@")[2] or "loadshed.invalid"
        msg["Message-ID"] = email.utils.make_msgid("loadshed", domain=domain)
        msg["X-Loadshed-Event"] = note.ref
        if self.is_sms:
            msg.set_content(note.sms)
        else:
            msg["Subject"] = note.title
            msg.set_content(note.body)
        return msg

    def send(self, note: Note) -> None:
        msg = self.compose(note)
        try:
            self._deliver(msg)
        except SendError:
            raise
        except smtplib.SMTPAuthenticationError as err:
            raise SendError(SMTP_LOGIN_REJECTED) from err
        except UnicodeEncodeError as err:  # smtplib logs in with ASCII only
            raise SendError(
                "SMTP_USER or SMTP_PASSWORD has characters outside ASCII, which an SMTP login "
                "cannot carry: use an app password"
            ) from err
        except smtplib.SMTPRecipientsRefused as err:
            code, said = next(iter(err.recipients.values()), (0, b""))
            why = f"the server refused MAILNOTIF {self.mail_to}: {code} {_said(said)}"
            if self.is_sms:
                why += " (carriers have closed several email-to-SMS gateways; see the README)"
            raise SendError(redact(why)) from err
        except smtplib.SMTPSenderRefused as err:
            raise SendError(
                redact(
                    f"the server refused MAIL_FROM {self.mail_from}: {err.smtp_code} "
                    f"{_said(err.smtp_error)}"
                )
            ) from err
        except smtplib.SMTPResponseException as err:
            raise SendError(
                redact(f"the SMTP server said {err.smtp_code} {_said(err.smtp_error)}")
            ) from err
        except smtplib.SMTPServerDisconnected as err:
            raise SendError(f"{self.host}:{self.port} closed the connection") from err
        except smtplib.SMTPException as err:  # an OSError too: before the socket errors below
            raise SendError(redact(f"SMTP failed: {err}")) from err
        except ssl.SSLCertVerificationError as err:
            raise SendError(
                f"the TLS certificate of {self.host} is not trusted ({err.verify_message})"
            ) from err
        except ssl.SSLError as err:
            raise SendError(f"TLS with {self.host}:{self.port} failed ({err.reason})") from err
        except socket.gaierror as err:
            raise SendError(f"cannot resolve {self.host} (no DNS: is the network down?)") from err
        except ConnectionRefusedError as err:
            raise SendError(f"{self.host}:{self.port} refused the connection") from err
        except TimeoutError as err:
            raise SendError(
                f"no answer from {self.host}:{self.port} in {self.timeout_s:g} s"
            ) from err
        except OSError as err:
            raise SendError(
                f"cannot reach {self.host}:{self.port} ({err.strerror or err})"
            ) from err

    def _deliver(self, msg: EmailMessage) -> None:
        context = ssl.create_default_context()
        smtp: smtplib.SMTP
        if self.implicit_tls:
            smtp = smtplib.SMTP_SSL(
                self.host,
                self.port,
                local_hostname=_ehlo_name(),
                timeout=self.timeout_s,
                context=context,
            )
        else:
            smtp = smtplib.SMTP(
                self.host, self.port, local_hostname=_ehlo_name(), timeout=self.timeout_s
            )
        with smtp:
            smtp.ehlo()
            tls = self.implicit_tls
            if not tls and self.starttls:
                if not smtp.has_extn("starttls"):
                    raise SendError(
                        f"{self.host}:{self.port} does not offer STARTTLS: use its TLS port "
                        "(SMTP_PORT = 465, or SMTP_SSL = True for another port)"
                    )
                smtp.starttls(context=context)
                smtp.ehlo()
                tls = True
            if self.user and not tls and not self.cleartext_allowed:
                raise SendError(
                    f"refusing to send SMTP_PASSWORD to {self.host}:{self.port} without TLS: "
                    "use its TLS port (SMTP_PORT = 465, or SMTP_SSL = True)"
                )
            if self.user:
                if not smtp.has_extn("auth"):
                    raise SendError(
                        f"{self.host}:{self.port} offers no login (AUTH) on this connection: "
                        "check SMTP_STARTTLS and SMTP_PORT, or leave SMTP_USER empty"
                    )
                smtp.login(self.user, self.password)
            smtp.send_message(msg)


def _said(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return " ".join(text.split())


class AppriseChannel:
    """One NOTIFY_URLS entry, with its own Apprise object so only a failing one is retried.

    Apprise 2.x: notify() returns an AppriseResult (TIMEOUT distinct from FAILURE, per-service
    log lines that say why); `timeout=` bounds the call, and the outer deadline bounds the rest
    (DNS). Shown only as the plugin's privacy URL without its query string (header values given
    as `+Header=` are not masked by Apprise).
    """

    def __init__(self, url: str) -> None:
        """Load url; raise ValueError (without the URL in it) when Apprise cannot use it."""
        self._apprise = apprise.Apprise(asset=apprise.AppriseAsset(storage_mode="memory"))
        if not self._apprise.add(url) or len(self._apprise) != 1:
            scheme = url.partition("://")[0]
            raise ValueError(f"Apprise does not understand this {scheme}:// URL")
        privacy = str(self._apprise[0].url(privacy=True))  # type: ignore[no-untyped-call]
        redact_secrets(url_secrets(url, privacy))
        self._name = redact(privacy.partition("?")[0])
        self._key = "apprise-" + hashlib.sha256(url.encode()).hexdigest()[:12]

    @property
    def key(self) -> str:
        return self._key

    @property
    def name(self) -> str:
        return self._name

    def send(self, note: Note) -> None:
        result = self._apprise.notify(
            body=note.body, title=note.title, notify_type=note.severity, timeout=APPRISE_CALL_S
        )
        if result:
            return
        if result.status == apprise.AppriseResultStatus.TIMEOUT:
            raise SendError(f"no answer in {APPRISE_CALL_S:g} s")
        said = [
            entry.message
            for service in result.results
            for entry in service.logs()
            if entry.level in ("WARNING", "ERROR", "CRITICAL")
        ]
        raise SendError(redact(said[-1] if said else f"not delivered ({result.status.name})"))


def url_secrets(url: str, privacy_url: str) -> list[str]:
    """Return the pieces of url that its privacy form hides: tokens, passwords."""

    def pieces(text: str) -> set[str]:
        return {unquote(p) for p in re.split(r"[/:@?&=#,;]+", text) if p}

    hidden = pieces(url) - pieces(privacy_url)
    # Apprise leaves header values (`+X-Api-Key=...`) unmasked in its privacy form: those whose
    # name says credential are hidden here.
    query = url.partition("?")[2].partition("#")[0]
    for pair in query.split("&"):
        key, sep, value = pair.partition("=")
        if sep and key.startswith("+") and value and _CREDENTIAL_HEADER_RE.search(key):
            hidden.add(unquote(value))
    return [url, *sorted(p for p in hidden if len(p) >= _MIN_SECRET_LEN)]


def _channels(config: Config) -> tuple[list[Channel], list[tuple[str, str]]]:
    """Build the configured channels; also (name, problem) for the ones that cannot work."""
    channels: list[Channel] = []
    problems: list[tuple[str, str]] = []
    if config.mail_to and config.smtp_host:
        channels.append(SmtpChannel.from_config(config))
    elif config.mail_to:
        problems.append((config.mail_to, "SMTP_HOST is not set: no email can be sent"))
    elif config.smtp_host:
        problems.append((f"email via {config.smtp_host}", "MAILNOTIF is not set: no recipient"))
    seen: set[str] = set()
    for number, url in enumerate(config.notify_urls, start=1):
        if url in seen:
            continue
        seen.add(url)
        try:
            channels.append(AppriseChannel(url))
        except ValueError as err:
            problems.append((f"NOTIFY_URLS entry {number}", str(err)))
    return channels, problems


# --- the notifier --------------------------------------------------------------------------------


class _RedactRecords(logging.Filter):
    """Mask secrets in the records themselves: Apprise logs a URL it cannot parse whole, and
    urllib3 logs request paths (a Telegram bot token is one), whatever handler takes them."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


_REDACTED_LOGGERS: Final = ("apprise", "urllib3.connectionpool")


def _redact_library_logs() -> None:
    for name in _REDACTED_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RedactRecords) for f in logger.filters):
            logger.addFilter(_RedactRecords())


def waiting(state_dir: Path) -> int:
    """How many messages wait in state_dir's outbox, read without creating anything."""
    directory = state_dir / OUTBOX_DIR
    try:
        names = [p.name for p in directory.iterdir()]
    except OSError:
        return 0
    return sum(1 for n in names if n.endswith(".json") and n != DELIVERED_FILE)


class Notifier:
    """Queue events as messages and deliver them, in order, through every channel.

    Construction reads `outbox/` (raising LoadshedError only if it cannot be created) and loads
    Apprise's plugins (about half a second, once per process).
    """

    def __init__(
        self, state_dir: Path, config: Config, *, clock: Callable[[], float] = time.time
    ) -> None:
        redact_secrets(config.secrets())
        redact_secrets(s for url in config.notify_urls for s in (url, *_userinfo_secret(url)))
        _redact_library_logs()
        self._clock = clock
        channels, self._problems = _channels(config)
        self._channels: tuple[Channel, ...] = tuple(channels)
        for name, problem in self._problems:
            _LOG.warning("alerts: %s: %s", name, problem)
        self._outbox = (
            Outbox(state_dir / OUTBOX_DIR, [c.key for c in self._channels])
            if self._channels
            else None
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakes: dict[str, asyncio.Event] = {}
        # per channel: whether its last send is over, and when it started
        self._busy: dict[str, tuple[threading.Event, float]] = {}
        self._said_no_channel = False

    @property
    def channels(self) -> tuple[str, ...]:
        """The channels, by their privacy names."""
        return tuple(c.name for c in self._channels)

    def pending(self) -> int:
        """Return how many messages wait for at least one channel."""
        return 0 if self._outbox is None else len(self._outbox)

    def submit(self, event: Event) -> None:
        """Queue event for every channel: one file write, never a send. Thread-safe."""
        if self._outbox is None:
            if not self._said_no_channel:
                _LOG.warning("%s", NO_CHANNEL)
                self._said_no_channel = True
            return
        if not self._outbox.add(event):
            _LOG.debug("alert %s already queued or sent", short_id(event.id))
            return
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: run() is over
                loop.call_soon_threadsafe(self._wake_all)

    async def run(self) -> None:
        """Send waiting messages until cancelled; each channel retries on its own, backing off.

        Meant as a task on the monitor's loop. Returns only by cancellation (CancelledError is
        re-raised, as asyncio expects); with no channel it just waits to be cancelled.
        """
        self._loop = asyncio.get_running_loop()
        self._wakes = {c.key: asyncio.Event() for c in self._channels}
        outbox = self._outbox
        tasks = (
            [
                asyncio.create_task(self._drain(c, outbox), name=f"alerts to {c.name}")
                for c in self._channels
            ]
            if outbox is not None
            else []
        )
        try:
            if tasks:
                await asyncio.gather(*tasks)
            else:
                await asyncio.Event().wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._loop = None

    async def send_test(self) -> list[tuple[str, str]]:
        """Send a test message through every channel now; (privacy name, "sent" or the error).

        Channels that cannot work (a URL Apprise does not know, MAILNOTIF without SMTP_HOST) are
        listed with their problem. Empty when nothing at all is configured.
        """
        note = render_test(self._clock(), _ehlo_name())

        async def one(channel: Channel) -> tuple[str, str]:
            error = await self._attempt(channel, lambda: channel.send(note))
            return channel.name, error or "sent"

        results = await asyncio.gather(*(one(c) for c in self._channels))
        return [*results, *self._problems]

    def _wake_all(self) -> None:
        for wake in self._wakes.values():
            wake.set()

    async def _drain(self, channel: Channel, outbox: Outbox) -> None:
        wake = self._wakes[channel.key]
        failures = 0
        last_error = ""
        while True:
            wake.clear()
            letter = outbox.next_for(channel.key)
            if letter is None:
                await wake.wait()
                continue
            try:
                note = letter.render(channel.key, self._clock())
            except Exception:  # a bug in a text must not stop the alerts behind it for good
                _LOG.exception("alert outbox: cannot word %s", letter.name)
                said = f"{PREFIX}alert {letter.name} could not be worded (see the log)"
                note = Note(said, said, said, "warning", "")

            def work(letter: Letter = letter, note: Note = note) -> None:
                channel.send(note)
                outbox.taken(channel.key, letter)  # here, so a send that beat its deadline counts

            error = await self._attempt(channel, work)
            if error is None:
                _LOG.info("alert #%s sent to %s", note.ref, channel.name)
                if failures:
                    _LOG.info("alerts reach %s again after %d failed tries", channel.name, failures)
                failures, last_error = 0, ""
                continue
            failures += 1
            pause_s = min(RETRY_FIRST_S * 2 ** min(failures - 1, 16), RETRY_MAX_S)
            level = logging.WARNING if error != last_error else logging.DEBUG
            _LOG.log(
                level,
                "alerts to %s failing: %s (%d waiting; next try in %s s or at the next alert)",
                channel.name,
                error,
                _waiting_for(outbox, channel.key),
                f"{pause_s:g}",
            )
            last_error = error
            wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause_s):
                    await wake.wait()

    async def _attempt(self, channel: Channel, work: Callable[[], None]) -> str | None:
        """Run work on its own daemon thread within SEND_DEADLINE_S; None or the error."""
        previous = self._busy.get(channel.key)
        if previous is not None and not previous[0].is_set():
            running_s = time.monotonic() - previous[1]
            if running_s > SEND_DEADLINE_S:
                return f"stuck: the previous send has run {running_s:.0f} s"
            return "busy with the previous send"
        finished = threading.Event()  # set by the thread when work is over, before it says so
        loop = asyncio.get_running_loop()
        done: asyncio.Future[str | None] = loop.create_future()

        def settle(outcome: str | None) -> None:
            if not done.done():
                done.set_result(outcome)

        def target() -> None:
            outcome: str | None
            try:
                work()
                outcome = None
            except SendError as err:
                outcome = redact(str(err))
            except Exception as err:
                _LOG.warning("sending an alert to %s failed", channel.name, exc_info=True)
                outcome = redact(f"unexpected {type(err).__name__}: {err}")
            finished.set()
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                loop.call_soon_threadsafe(settle, outcome)

        self._busy[channel.key] = (finished, time.monotonic())
        threading.Thread(target=target, name=f"alert-{channel.key}", daemon=True).start()
        try:
            async with asyncio.timeout(SEND_DEADLINE_S):
                return await done
        except TimeoutError:
            return f"no answer in {SEND_DEADLINE_S:g} s"


def _waiting_for(outbox: Outbox, channel: str) -> int:
    """Return how many letters still wait for one channel."""
    return sum(1 for letter in outbox.letters() if letter.needs(channel))


def _userinfo_secret(url: str) -> list[str]:
    """The password part of scheme://user:password@host, found without Apprise."""
    match = re.match(r"^[A-Za-z0-9+.-]+://[^/@:]*:([^/@]+)@", url)
    return [unquote(match.group(1))] if match else []
