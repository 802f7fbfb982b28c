"""The outbox: messages waiting to be sent, kept on disk until every channel has taken them.

Owns `<state dir>/outbox/`: one JSON file per waiting message, written (atomically, 0600) before
any send is tried, named so they sort in event order, each recording which channels have taken
it; plus `delivered.json`, the ids of the last messages delivered, so an event is never queued
twice. A file goes only when every configured channel has taken it, so kill -9, a reboot or a
week without internet loses nothing: the next `Notifier` on the same directory sends what was
left, in order, saying how late it is.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from loadshed.errors import LoadshedError
from loadshed.logs import redact
from loadshed.model import Event, EventKind
from loadshed.notify.texts import Note, render_event, render_summary

_LOG = logging.getLogger(__name__)

# --- policy numbers ------------------------------------------------------------------------------

MAX_WAITING: Final = 20  # messages kept apart; older ones become one summary, not 200 texts
SUMMARY_ITEMS_MAX: Final = 100  # events a summary lists; older ones are only counted
DELIVERED_IDS_KEPT: Final = 500  # ids remembered after delivery, to refuse a duplicate submit
OUTBOX_VERSION: Final = 1

OUTBOX_DIR: Final = "outbox"
DELIVERED_FILE: Final = "delivered.json"
_LETTER_RE: Final = re.compile(r"^(\d{8,})-([a-z_]+)\.json$")
_SUMMARY_SLUG: Final = "summary"


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


def waiting(state_dir: Path) -> int:
    """How many messages wait in state_dir's outbox, read without creating anything."""
    directory = state_dir / OUTBOX_DIR
    try:
        names = [p.name for p in directory.iterdir()]
    except OSError:
        return 0
    return sum(1 for n in names if n.endswith(".json") and n != DELIVERED_FILE)
