"""Values shared by every part of loadshed: grid readings, device outcomes, kinds.

Pure data: frozen dataclasses and enums, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final


class Grid(Enum):
    """What the house is connected to, as far as loadshed knows."""

    ON = "on grid"
    OFF = "off grid"
    UNKNOWN = "unknown"


class Power(Enum):
    """Whether a device is switched on."""

    ON = "on"
    OFF = "off"


class Status(Enum):
    """How a call to a device ended."""

    OK = "ok"
    FAILED = "failed"  # the device answered but refused or could not do it (wrong key, login)
    UNREACHABLE = "unreachable"  # no answer: refused, timed out, network down


class Kind(Enum):
    """What sort of device a row is."""

    POWERWALL = "powerwall"
    CANARY = "canary"  # GRID_CANARY: a grid source made of plugs
    UPS = "ups"  # NUT_UPS: a grid source
    KASA = "kasa"
    TUYA = "tuya"
    LINUX = "linux"
    SOLARIS = "solaris"
    MACOS = "macos"
    WINDOWS = "windows"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one call to a device did. Drivers return these; they never raise."""

    status: Status
    power: Power | None = None
    detail: str = ""  # one human line: "no answer in 3 s", "wrong local key"
    watts: float | None = None  # present power draw when the device measures it
    sent: bool = True  # False: the device was never reached, so nothing was asked of it

    @classmethod
    def ok(cls, power: Power | None, *, watts: float | None = None, detail: str = "") -> Outcome:
        return cls(Status.OK, power, detail, watts)

    @classmethod
    def failed(cls, detail: str) -> Outcome:
        return cls(Status.FAILED, None, detail)

    @classmethod
    def unreachable(cls, detail: str, *, sent: bool = True) -> Outcome:
        return cls(Status.UNREACHABLE, None, detail, sent=sent)

    @property
    def is_ok(self) -> bool:
        return self.status is Status.OK


POWERWALL: Final = "Powerwall"  # the primary grid source's name
CANARY: Final = "canary"  # GRID_CANARY plugs on circuits the Powerwall does not back up
UPS: Final = "UPS"  # a UPS read through NUT


@dataclass(frozen=True, slots=True)
class GridReading:
    """One poll of a grid source: the Powerwall (primary), the canary plugs or a UPS.

    `raw` is the source's own words for the grid ("SystemIslandedActive", "OB"), or "" when it
    could not be read; `detail` then says why, in words the owner understands, and `status`
    whether the source answered and refused (FAILED: wrong password, 429, 502) or gave no
    answer (UNREACHABLE).
    """

    grid: Grid
    raw: str = ""
    battery_pct: float | None = None
    load_w: float | None = None
    solar_w: float | None = None
    detail: str = ""
    status: Status = Status.OK
    source: str = POWERWALL  # which source read it: the Powerwall, a canary plug, a UPS


class Pin(Enum):
    """The owner's override for one device, set from the screen."""

    ON = "keep on"  # never shed; brought back now if shed
    OFF = "keep off"  # switched off now; never brought back automatically


class Verb(Enum):
    """What an action does to a device."""

    SHED = "shed"  # switch off / shut down
    RESTORE = "restore"  # switch on / wake


@dataclass(frozen=True, slots=True)
class Action:
    """One thing the policy wants done, and why."""

    verb: Verb
    device: str  # unique device name
    reason: str  # "off-grid", "battery 28 % < 30 %", "forced from keyboard"


class EventKind(Enum):
    """Transitions worth a line in events.log and a message to the owner (NUT's notify types)."""

    OFF_GRID = "grid lost"
    ON_GRID = "grid back"
    POWERWALL_LOST = "Powerwall unreachable"
    POWERWALL_BACK = "Powerwall reachable again"
    SHED_DONE = "shed finished"
    TIER_SHED = "low-battery shed"
    TIER_RESTORED = "battery recovered"
    RESTORE_DONE = "restore finished"
    DEVICE_FAILED = "device failed"
    SOURCES_DISAGREE = "grid sources disagree"  # the Powerwall and a canary or UPS differ
    ATTENTION = "needs attention"  # loadshed itself: state.json unwritable, a name clash...


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened, as the owner should hear of it.

    `done` names the devices the event's action succeeded on; `failed` pairs each device that
    did not with why, in words ("no answer in 3 s"). `id` is unique and stable, so a message
    sent twice can be recognised.
    """

    kind: EventKind
    at: float  # wall-clock time.time() when it happened
    id: str
    battery_pct: float | None = None
    detail: str = ""
    done: tuple[str, ...] = ()
    failed: tuple[tuple[str, str], ...] = ()
