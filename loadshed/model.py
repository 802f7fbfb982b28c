"""Values shared by every part of loadshed: grid readings, device outcomes, kinds.

Pure data: frozen dataclasses and enums, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


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

    @classmethod
    def ok(cls, power: Power | None, *, watts: float | None = None, detail: str = "") -> Outcome:
        return cls(Status.OK, power, detail, watts)

    @classmethod
    def failed(cls, detail: str) -> Outcome:
        return cls(Status.FAILED, None, detail)

    @classmethod
    def unreachable(cls, detail: str) -> Outcome:
        return cls(Status.UNREACHABLE, None, detail)

    @property
    def is_ok(self) -> bool:
        return self.status is Status.OK


@dataclass(frozen=True, slots=True)
class GridReading:
    """One poll of the Powerwall.

    `raw` is the gateway's own grid_status string ("SystemIslandedActive"), or "" when it could
    not be read; `detail` then says why, in words the owner understands, and `status` whether
    the gateway answered and refused (FAILED: wrong password, 429, 502) or gave no answer
    (UNREACHABLE).
    """

    grid: Grid
    raw: str = ""
    battery_pct: float | None = None
    load_w: float | None = None
    solar_w: float | None = None
    detail: str = ""
    status: Status = Status.OK
