"""The state dir: state.json (what loadshed switched off, written before the switch) and events.log.

state.json is replaced atomically (temporary file, fsync, rename, fsync of the directory) and
readable by its owner only; every document carries a `version`. A file that cannot be read is
kept aside as `state.json.corrupt-<time>` and reported, never silently dropped. The directory is
created 0700 and locked (flock on the directory itself) so two loadsheds never share it.

Must not: write anything outside the state dir; write a secret.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import logging.handlers
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import platformdirs

from loadshed.errors import LoadshedError
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


def default_state_dir() -> Path:
    return Path(platformdirs.user_state_dir("loadshed", appauthor=False))


class StateStore:
    """Owns the state dir for one process."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        self.path = state_dir / STATE_FILE
        self._lock_fd: int | None = None

    def open(self) -> None:
        """Create the dir (0700) and lock it; LoadshedError if another loadshed holds it."""
        try:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.dir.chmod(0o700)
            fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as err:
            raise LoadshedError(f"cannot use state dir {self.dir}: {err.strerror or err}") from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LoadshedError(
                f"another loadshed is running with state dir {self.dir}: "
                "stop it first, or use its screen's keys to shed or restore"
            ) from None
        self._lock_fd = fd

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None

    def load(self) -> State:
        """Read state.json; an unreadable one is renamed aside and reported: start empty."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return State()
        except OSError as err:
            raise LoadshedError(f"cannot read {self.path}: {err.strerror or err}") from err
        try:
            return _decode(json.loads(text))
        except (ValueError, KeyError, TypeError) as err:
            aside = self.path.with_name(f"{STATE_FILE}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
            os.replace(self.path, aside)
            _LOG.error(
                "%s could not be read (%s); kept it as %s. Check what it says was switched off: "
                "loadshed starts with nothing shed",
                self.path,
                err,
                aside.name,
            )
            return State()

    def save(self, state: State) -> None:
        """Replace state.json with state, all or nothing, readable only by the owner."""
        doc = _encode(state)
        tmp = self.path.with_name(STATE_FILE + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def events_handler(self) -> logging.Handler:
        """A rotating handler for events.log (one line per event), private to the owner."""
        path = self.dir / EVENTS_FILE
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=EVENTS_MAX_BYTES, backupCount=EVENTS_BACKUPS, encoding="utf-8"
        )
        handler.setFormatter(RedactingFormatter("%(asctime)s %(message)s"))
        return handler


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


def _decode(doc: Any) -> State:
    if not isinstance(doc, dict):
        raise TypeError("not a JSON object")
    version = doc["version"]
    if version != STATE_VERSION:
        raise ValueError(f"version {version!r}, this loadshed reads version {STATE_VERSION}")
    shed = {
        str(name): ShedEntry(
            name=str(name),
            kind=Kind(e["kind"]),
            address=str(e["address"]),
            reason=str(e["reason"]),
            at=float(e["at"]),
            prior=None if e["prior"] == PRIOR_UNKNOWN else Power(e["prior"]),
            confirmed=bool(e["confirmed"]),
            attempts=int(e.get("attempts", 0)),
            last_error=str(e.get("last_error", "")),
            off_at=None if e.get("off_at") is None else float(e["off_at"]),
        )
        for name, e in doc["shed"].items()
    }
    pins = {str(name): Pin[str(pin).upper()] for name, pin in doc.get("pins", {}).items()}
    return State(shed=shed, hold=bool(doc["hold"]), paused=bool(doc["paused"]), pins=pins)
