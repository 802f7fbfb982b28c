"""The state dir: state.json (what loadshed switched off, written before the switch) and events.log.

state.json is replaced atomically (temporary file, fsync, rename, fsync of the directory) and
readable by its owner only; every document carries a `version`. A failed write raises OSError and
leaves the old state.json whole and no temporary file behind.

A file that cannot be read whole is kept aside as `state.json.corrupt-<time>` and never silently
dropped: what could be read of it is loaded (one bad entry costs that entry, not the others), and
`StateStore.problems` says what the owner must check, naming every device it recorded as switched
off. A file written by a newer loadshed is left where it is and refused (ConfigError), so a
downgrade cannot forget what is shed.

The directory is created 0700 and locked (flock on the directory itself) so two loadsheds never
share it; deleted or replaced while loadshed runs, it is recreated and locked again by the next
write. events.log and its rotated copies are 0600 whatever the umask.

Must not: write anything outside the state dir; write a secret; copy a damaged file into a message.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import logging.handlers
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from io import TextIOWrapper
from pathlib import Path
from typing import Any, Final

import platformdirs

from loadshed.errors import ConfigError, LoadshedError
from loadshed.logs import RedactingFormatter
from loadshed.model import Kind, Pin, Power

_LOG = logging.getLogger(__name__)

STATE_VERSION: Final = 1
STATE_FILE: Final = "state.json"
EVENTS_FILE: Final = "events.log"
EVENTS_MAX_BYTES: Final = 1_000_000  # a year of outages fits in one file; three are kept
EVENTS_BACKUPS: Final = 3
EVENTS_LOGGER: Final = "loadshed.events"
PRIOR_UNKNOWN: Final = "unknown"  # a computer sent its shutdown without being seen on

PRIVATE_DIR: Final = 0o700
PRIVATE_FILE: Final = 0o600
LATEST_WALL_S: Final = 253_402_300_799  # 9999-12-31: later times cannot be shown as dates
MOST_ATTEMPTS: Final = 1_000_000  # far beyond any real retry count: a bigger one is damage
SHOWN_CHARS: Final = 40  # of a value quoted from a damaged file: enough to recognise it
SHOWN_REASONS: Final = 3  # reasons in one problem line; the rest are counted
SHOWN_NAMES: Final = 30  # more devices than a house has; the rest are counted


@dataclass(frozen=True, slots=True)
class ShedEntry:
    """One device loadshed switched off, or began to: recorded before the switch is thrown."""

    name: str
    kind: Kind
    address: str
    reason: str
    at: float  # wall-clock time of the decision
    prior: Power | None = Power.ON  # seen on; None: a computer the probe could not see
    confirmed: bool = False  # the device was seen to go off
    attempts: int = 0
    last_error: str = ""
    off_at: float | None = None  # wall-clock time it was seen off


@dataclass(frozen=True, slots=True)
class State:
    """Everything that must outlive the process."""

    shed: Mapping[str, ShedEntry] = field(default_factory=dict)
    hold: bool = False  # a forced shed holds devices off until forced restore or an outage ends
    paused: bool = False  # a forced restore paused automatic shedding until the grid is back
    pins: Mapping[str, Pin] = field(default_factory=dict)  # the owner's keep on / keep off


def write_private(path: Path, text: str, tmp: Path) -> None:
    """Replace path with text, all or nothing (through tmp, fsynced, then renamed), readable
    only by the owner. OSError leaves path as it was and no temporary file."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    try:
        with open(fd, "w", encoding="utf-8") as f:
            os.fchmod(fd, PRIVATE_FILE)  # a temporary file left by a crash keeps its mode
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def default_state_dir() -> Path:
    return Path(platformdirs.user_state_dir("loadshed", appauthor=False))


class StateStore:
    """Owns the state dir for one process."""

    def __init__(self, state_dir: Path, *, wall: Callable[[], float] = time.time) -> None:
        self.dir = state_dir
        self.path = state_dir / STATE_FILE
        self.problems: list[str] = []  # from the last load(): one line each, for the owner
        self._wall = wall  # names the copy of a damaged file
        self._lock_fd: int | None = None
        self._locked: tuple[int, int] | None = None  # (st_dev, st_ino) of the dir locked
        self._is_open = False
        self._dir_guard = threading.Lock()  # save() and the events handler may race

    def open(self) -> None:
        """Create the dir (0700) and lock it; LoadshedError if another loadshed holds it."""
        try:
            make_private_dir(self.dir)
            self.dir.chmod(PRIVATE_DIR)
            fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as err:
            raise LoadshedError(f"cannot use state dir {self.dir}: {err.strerror or err}") from err
        if not _try_lock(fd):
            raise LoadshedError(
                f"another loadshed is running with state dir {self.dir}: "
                "stop it first, or use its screen's keys to shed or restore"
            )
        self._hold_lock(fd)
        self._is_open = True

    def close(self) -> None:
        self._is_open = False
        self._locked = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None

    def load(self) -> State:
        """Read state.json: all of it, or what can be read of it, with `problems` saying what not.

        A file that is not whole is renamed aside; a newer loadshed's file raises ConfigError.
        """
        self.problems = []
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return State()
        except OSError as err:
            raise LoadshedError(f"cannot read {self.path}: {err.strerror or err}") from err
        reasons: list[str] = []
        utf8_damaged = False
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("utf-8", errors="replace")
            utf8_damaged = True
            reasons.append("invalid UTF-8")
        doc, partial, why = _parse(text)
        if why:
            reasons.append(why)
        self._refuse_newer(doc)
        reading = _decode(doc, partial=partial, salvaged=bool(why), utf8_damaged=utf8_damaged)
        reasons += reading.reasons
        if reasons:
            self.problems.append(self._set_aside(reasons, reading))  # the engine says it
        return reading.state

    def save(self, state: State) -> None:
        """Replace state.json with state, all or nothing, readable only by the owner.

        OSError (disk full, read-only) leaves state.json as it was and no temporary file.
        """
        text = json.dumps(_encode(state), indent=2, sort_keys=True) + "\n"
        self._ensure_dir()
        write_private(self.path, text, self.path.with_name(STATE_FILE + ".tmp"))

    def events_handler(self) -> logging.handlers.RotatingFileHandler:
        """A rotating handler for events.log (one line per event), private to the owner."""
        self._ensure_dir()
        path = self.dir / EVENTS_FILE
        for old in [path, *(Path(f"{path}.{n}") for n in range(1, EVENTS_BACKUPS + 1))]:
            with contextlib.suppress(FileNotFoundError):
                old.chmod(PRIVATE_FILE)  # one made by an older loadshed under the umask
        handler = _EventsHandler(path, self._ensure_dir)
        handler.setFormatter(RedactingFormatter("%(asctime)s %(message)s"))
        return handler

    # --- the dir and its lock ------------------------------------------------------------------

    def _hold_lock(self, fd: int) -> None:
        st = os.fstat(fd)
        old, self._lock_fd, self._locked = self._lock_fd, fd, (st.st_dev, st.st_ino)
        if old is not None:
            os.close(old)

    def _ensure_dir(self) -> None:
        """Recreate (0700) and lock again the dir if it was deleted or replaced since open().

        OSError if it cannot be made, or if another loadshed locked the new one first.
        """
        with self._dir_guard:
            try:
                st = os.stat(self.dir)
            except FileNotFoundError:
                st = None
            if not self._is_open:  # a store nobody locked: only make sure there is a dir
                if st is None:
                    make_private_dir(self.dir)
                return
            if st is not None and (st.st_dev, st.st_ino) == self._locked:
                return
            make_private_dir(self.dir)
            self.dir.chmod(PRIVATE_DIR)  # one put in its place by hand, as open() would
            fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
            if not _try_lock(fd):
                raise OSError(
                    errno.EWOULDBLOCK,
                    f"state dir {self.dir} was deleted, and another loadshed locked the new one",
                )
            self._hold_lock(fd)
        _LOG.warning("state dir %s was deleted or replaced: made it again and locked it", self.dir)

    # --- a file that cannot be read whole --------------------------------------------------------

    def _refuse_newer(self, doc: Mapping[str, object]) -> None:
        version = doc.get("version")
        if type(version) is int and version > STATE_VERSION:
            raise ConfigError(
                self.path,
                None,
                f"written by a newer loadshed (version {_quoted(version)}; "
                f"this one reads {STATE_VERSION})",
                "upgrade loadshed, or restore by hand and move state.json aside",
            )

    def _set_aside(self, reasons: list[str], reading: _Reading) -> str:
        """Rename the file aside; return the line that tells the owner what to check."""
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(self._wall()))
        aside = self.path.with_name(f"{STATE_FILE}.corrupt-{stamp}")
        n = 1
        while os.path.lexists(aside):  # the dir is locked: nobody else takes the name meanwhile
            aside = self.path.with_name(f"{STATE_FILE}.corrupt-{stamp}-{n}")
            n += 1
        try:
            os.replace(self.path, aside)
            kept = f"kept it as {aside.name}"
        except OSError as err:
            kept = f"could not keep it aside ({err.strerror or err}): the next save replaces it"
        shown = "; ".join(reasons[:SHOWN_REASONS])
        if len(reasons) > SHOWN_REASONS:
            shown += f"; {len(reasons) - SHOWN_REASONS} more"
        names = [_shown_name(n) for n in sorted(set(reading.names))]
        if len(names) > SHOWN_NAMES:
            names[SHOWN_NAMES:] = [f"{len(names) - SHOWN_NAMES} more"]
        check = "check them, a manual `loadshed restore` may be needed"
        if names and reading.shed_whole:
            told = f"It recorded {', '.join(names)} as switched off: {check}"
        elif names:
            told = (
                f"It recorded {', '.join(names)} and perhaps more that could not be read "
                f"as switched off: {check}"
            )
        elif reading.shed_whole:
            told = "It recorded nothing as switched off"
        else:
            told = (
                "Nothing could be read of what it recorded as switched off: check every device "
                "loadshed controls, a manual `loadshed restore` may be needed"
            )
        fully = " fully" if reading.anything else ""
        return f"{STATE_FILE} could not be read{fully} ({shown}); {kept}. {told}"


class _EventsHandler(logging.handlers.RotatingFileHandler):
    """events.log and its rotated copies, 0600 whatever the umask; follows a recreated dir."""

    def __init__(self, path: Path, ensure_dir: Callable[[], None]) -> None:
        self._ensure_dir = ensure_dir
        super().__init__(
            path, maxBytes=EVENTS_MAX_BYTES, backupCount=EVENTS_BACKUPS, encoding="utf-8"
        )
        self.rotator = _rotate_private

    def _open(self) -> TextIOWrapper:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE)
        try:
            os.fchmod(fd, PRIVATE_FILE)  # the umask may have taken less than 0600 off
        except OSError:
            os.close(fd)
            raise
        return open(fd, "a", encoding=self.encoding, errors=self.errors)

    def emit(self, record: logging.LogRecord) -> None:
        if self.stream is not None and self._moved():
            try:
                self._ensure_dir()
            except OSError:
                pass  # keep writing to the old file; save() reports what is wrong with the dir
            else:
                self.stream.close()
                self.stream = None  # FileHandler.emit opens events.log in the dir as it is now
        super().emit(record)

    def _moved(self) -> bool:
        assert self.stream is not None
        try:
            st = os.stat(self.baseFilename)
        except OSError:
            return True
        open_st = os.fstat(self.stream.fileno())
        return (st.st_dev, st.st_ino) != (open_st.st_dev, open_st.st_ino)


def _rotate_private(source: str, dest: str) -> None:
    if os.path.exists(source):
        os.replace(source, dest)
        os.chmod(dest, PRIVATE_FILE)


def make_private_dir(path: Path) -> None:
    """Create path and any missing parents 0700; chmod the ones made, whatever the umask."""
    missing: list[Path] = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    for made in reversed(missing):
        with contextlib.suppress(FileExistsError):
            made.mkdir(mode=PRIVATE_DIR)
        made.chmod(PRIVATE_DIR)


def _try_lock(fd: int) -> bool:
    """Lock the dir open as fd, or close fd and say another process holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    return True


def _encode(state: State) -> dict[str, Any]:
    return {
        "version": STATE_VERSION,
        "hold": state.hold,
        "paused": state.paused,
        "pins": {name: pin.name.lower() for name, pin in sorted(state.pins.items())},
        "shed": {
            name: {
                "kind": e.kind.value,
                "address": e.address,
                "reason": e.reason,
                "at": e.at,
                "prior": e.prior.value if e.prior is not None else PRIOR_UNKNOWN,
                "confirmed": e.confirmed,
                "attempts": e.attempts,
                "last_error": e.last_error,
                "off_at": e.off_at,
            }
            for name, e in sorted(state.shed.items())
        },
    }


# --- reading: parse whole, or what can be read, then check every part on its own -----------------

_DECODER: Final = json.JSONDecoder()
_SPACE: Final = re.compile(r"[ \t\n\r]*")
_OPENS: Final = {key: re.compile(rf'"{key}"[ \t\n\r]*:[ \t\n\r]*\{{') for key in ("shed", "pins")}
_FLAG: Final = re.compile(r'"(hold|paused)"[ \t\n\r]*:[ \t\n\r]*(true|false)\b')
_VERSION: Final = re.compile(r'"version"[ \t\n\r]*:[ \t\n\r]*(-?[0-9]{1,9})\b')
_MISSING: Final = object()
_KINDS: Final = {kind.value: kind for kind in Kind}
_PRIORS: Final[dict[str, Power | None]] = {PRIOR_UNKNOWN: None} | {p.value: p for p in Power}
_UNREADABLE: Final = object()  # a member whose name was read but not its value


class _Bad(Exception):
    """One part of state.json is not what loadshed writes; str() is the short reason."""


@dataclass(frozen=True, slots=True)
class _Reading:
    state: State
    reasons: list[str]  # what was wrong with the parts, short, nothing copied whole
    names: list[str]  # every device the file recorded as switched off, read well or not
    shed_whole: bool  # names is all of them
    anything: bool  # some part of the file could be read


def _parse(text: str) -> tuple[dict[str, object], frozenset[str], str]:
    """Return the document, the objects in it known to be cut short, and why it is not whole."""
    try:
        doc = json.loads(text)
    except RecursionError:
        why = "nested too deeply"
    except json.JSONDecodeError as err:
        why = f"not JSON: {err.msg} at line {err.lineno}"
    except ValueError as err:  # an integer with too many digits
        why = f"not JSON: {str(err)[:SHOWN_CHARS]}"
    else:
        if isinstance(doc, dict):
            return doc, frozenset(), ""
        why = f"the document is {_kind_of(doc)}, not an object"
    salvaged, partial = _salvage(text)
    return salvaged, partial, why


def _salvage(text: str) -> tuple[dict[str, object], frozenset[str]]:
    """Read what can be read of a document json.loads refused, in the shape it would have given.

    Finds the objects `shed` and `pins` and reads their members one by one up to the first that
    cannot be read; `hold`, `paused` and `version` where they are plain literals.
    """
    doc: dict[str, object] = {}
    partial: set[str] = set()
    for key, opens in _OPENS.items():
        found = opens.search(text)
        if found is not None:
            members, whole = _members(text, found.end())
            doc[key] = members
            if not whole:
                partial.add(key)
    for flag in _FLAG.finditer(text):
        doc.setdefault(flag[1], flag[2] == "true")
    version = _VERSION.search(text)
    if version is not None:
        doc["version"] = int(version[1])
    return doc, frozenset(partial)


def _members(text: str, pos: int) -> tuple[dict[str, object], bool]:
    """Read the members of the object that starts just before pos; say if it was read to `}`.

    A member whose name could be read but not its value is kept as _UNREADABLE and ends it.
    """
    members: dict[str, object] = {}
    pos = _skip(text, pos)
    if text.startswith("}", pos):
        return members, True
    while True:
        try:
            name, pos = _DECODER.raw_decode(text, pos)
        except (ValueError, RecursionError):
            return members, False
        if not isinstance(name, str):
            return members, False
        pos = _skip(text, pos)
        if not text.startswith(":", pos):
            members[name] = _UNREADABLE
            return members, False
        try:
            members[name], pos = _DECODER.raw_decode(text, _skip(text, pos + 1))
        except (ValueError, RecursionError):
            members[name] = _UNREADABLE
            return members, False
        pos = _skip(text, pos)
        if text.startswith("}", pos):
            return members, True
        if not text.startswith(",", pos):
            return members, False
        pos = _skip(text, pos + 1)


def _skip(text: str, pos: int) -> int:
    space = _SPACE.match(text, pos)
    assert space is not None  # it matches the empty string
    return space.end()


def _decode(
    doc: Mapping[str, object], *, partial: frozenset[str], salvaged: bool, utf8_damaged: bool
) -> _Reading:
    """Check each part of doc on its own: a bad one is a reason, and the rest still count.

    salvaged: doc is what _salvage found, so a part it lacks needs no reason of its own.
    """
    reasons: list[str] = []

    def missing(key: str) -> None:
        if not salvaged:
            reasons.append(f"{key} is missing")

    version = doc.get("version", _MISSING)
    if version is _MISSING:
        missing("version")
    elif type(version) is not int or version != STATE_VERSION:
        reasons.append(f"version {_quoted(version)} is not one loadshed writes")

    names: list[str] = []
    shed: dict[str, ShedEntry] = {}
    raw_shed = doc.get("shed", _MISSING)
    if raw_shed is _MISSING:
        missing("shed")
    elif not isinstance(raw_shed, dict):
        reasons.append(f"shed is {_kind_of(raw_shed)}, not an object")
    else:
        for name, value in raw_shed.items():
            names.append(name)
            try:
                shed[name] = _entry(name, value, utf8_damaged)
            except _Bad as err:
                reasons.append(f"entry {_quoted(name)}: {err}")

    pins: dict[str, Pin] = {}
    raw_pins = doc.get("pins", {})  # older files have none
    if not isinstance(raw_pins, dict):
        reasons.append(f"pins is {_kind_of(raw_pins)}, not an object")
    else:
        for name, value in raw_pins.items():
            try:
                pins[name] = _pin(name, value, utf8_damaged)
            except _Bad as err:
                reasons.append(f"pin {_quoted(name)}: {err}")

    flags: dict[str, bool] = {}
    for key in ("hold", "paused"):
        value = doc.get(key, _MISSING)
        if isinstance(value, bool):
            flags[key] = value
        elif value is _MISSING:
            missing(key)
        else:
            reasons.append(f"{key} is {_kind_of(value)}, not true or false")

    for key in sorted(partial):
        reasons.append(f"{key} is cut short")
    return _Reading(
        state=State(
            shed=shed, hold=flags.get("hold", False), paused=flags.get("paused", False), pins=pins
        ),
        reasons=reasons,
        names=names,
        shed_whole=isinstance(raw_shed, dict) and "shed" not in partial,
        anything=bool(names or pins or flags),
    )


def _entry(name: str, e: object, utf8_damaged: bool) -> ShedEntry:
    if e is _UNREADABLE:
        raise _Bad("cut off or unreadable")
    if not isinstance(e, dict):
        raise _Bad(f"is {_kind_of(e)}, not an object")
    if utf8_damaged and _has_replacement([name, *e.values()]):
        raise _Bad("invalid UTF-8")  # the damage is here: a name or address may be wrong
    kind = _text(e, "kind")
    if kind not in _KINDS:
        raise _Bad(f"unknown kind {_quoted(kind)}")
    prior = _text(e, "prior")
    if prior not in _PRIORS:
        raise _Bad(f"unknown prior {_quoted(prior)}")
    off_at = _field(e, "off_at", None)
    return ShedEntry(
        name=name,
        kind=_KINDS[kind],
        address=_text(e, "address"),
        reason=_text(e, "reason"),
        at=_wall(e, "at"),
        prior=_PRIORS[prior],
        confirmed=_flag(e, "confirmed"),
        attempts=_count(e, "attempts"),
        last_error=_text(e, "last_error", ""),
        off_at=None if off_at is None else _wall(e, "off_at"),
    )


def _pin(name: str, value: object, utf8_damaged: bool) -> Pin:
    if utf8_damaged and _has_replacement([name, value]):
        raise _Bad("invalid UTF-8")
    if value is _UNREADABLE:
        raise _Bad("cut off or unreadable")
    if not isinstance(value, str):
        raise _Bad(f"is {_kind_of(value)}, not text")
    try:
        return Pin[value.upper()]
    except KeyError:
        raise _Bad(f"unknown pin {_quoted(value)}") from None


def _field(e: Mapping[str, object], key: str, default: object) -> object:
    if key in e:
        return e[key]
    if default is _MISSING:
        raise _Bad(f"{key} is missing")
    return default


def _text(e: Mapping[str, object], key: str, default: object = _MISSING) -> str:
    value = _field(e, key, default)
    if not isinstance(value, str):
        raise _Bad(f"{key} is {_kind_of(value)}, not text")
    return value


def _flag(e: Mapping[str, object], key: str) -> bool:
    value = _field(e, key, _MISSING)
    if not isinstance(value, bool):
        raise _Bad(f"{key} is {_kind_of(value)}, not true or false")
    return value


def _count(e: Mapping[str, object], key: str) -> int:
    value = _field(e, key, 0)
    if type(value) is not int:
        raise _Bad(f"{key} is {_kind_of(value)}, not a whole number")
    if not 0 <= value <= MOST_ATTEMPTS:
        raise _Bad(f"{key} {_quoted(value)} is out of range")
    return value


def _wall(e: Mapping[str, object], key: str) -> float:
    value = _field(e, key, _MISSING)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Bad(f"{key} is {_kind_of(value)}, not a number")
    if not 0 <= value <= LATEST_WALL_S:  # NaN fails this too
        raise _Bad(f"{key} {_quoted(value)} is out of range")
    return float(value)


def _has_replacement(values: list[object]) -> bool:
    """Whether U+FFFD, put where the bytes were not UTF-8, is in any text among values."""
    for value in values:
        if isinstance(value, str) and "\ufffd" in value:
            return True
        if isinstance(value, dict) and _has_replacement([*value.keys(), *value.values()]):
            return True
        if isinstance(value, list) and _has_replacement(value):
            return True
    return False


def _kind_of(value: object) -> str:
    """Name the JSON type of value, without showing it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if value is _MISSING:
        return "missing"
    if value is _UNREADABLE:
        return "unreadable"
    return "an object"


def _quoted(value: object) -> str:
    """Show a short value from the file, escaped and cut to SHOWN_CHARS; name a long one's type."""
    if isinstance(value, str):
        return repr(value if len(value) <= SHOWN_CHARS else value[:SHOWN_CHARS] + "…")
    if value is None or isinstance(value, bool | int | float):
        shown = repr(value)
        return shown if len(shown) <= SHOWN_CHARS else shown[:SHOWN_CHARS] + "…"
    return _kind_of(value)


def _shown_name(name: str) -> str:
    """A device name as one printable line, cut to SHOWN_CHARS."""
    shown = name if name.isprintable() else repr(name)[1:-1]
    return shown if len(shown) <= SHOWN_CHARS else shown[:SHOWN_CHARS] + "…"
