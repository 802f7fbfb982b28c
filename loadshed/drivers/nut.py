"""Read the grid state from a UPS through a NUT server (Network UPS Tools' upsd), with aionut.

A UPS plugged into the mains is a grid sensor: its `ups.status` holds OL (on line) while the
grid is up and OB (on battery) when it is not, with other words beside them ("OB LB", "OL
CHRG"). `battery.charge` is read too, as information only: it is the UPS's battery, not the
house's.

Owns one kept connection per `NutSource` (aionut's persistent client), made on the first read
inside the running loop and released by `close()`. aionut reconnects by itself once per call
when the server closed the connection (an upsd restart); a connection that timed out, was
cancelled or failed in any other way is closed here, so the next read starts a fresh one and a
half-read reply is never mistaken for the next answer.

With a user name set, each new connection logs in to the UPS as upsmon does (`LOGIN <ups>`):
upsd checks a password only then (USERNAME and PASSWORD are always answered OK, and reading
variables needs no login). The user needs `upsmon secondary` in upsd.users. Like any logged-in
secondary, the connection is counted by upsd, so on a forced shutdown the primary upsmon waits
for it up to its HOSTSYNC (15 s by default) before powering off.

Every failure becomes a `GridReading` with `Grid.UNKNOWN` and a one-line `detail`; `read()`
never raises and returns within `timeout_s`.

Must not: try a refused login again before the back-off has passed; put the password in any
log line (aionut logs every line it sends at DEBUG, PASSWORD included: a filter masks it),
detail or repr; reuse a connection after a timeout or an unexpected error.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import re
import socket
import time
import traceback
from collections.abc import Callable
from typing import Any, Final

from aionut import (
    AIONUTClient,
    NUTCommandError,
    NUTConnectionClosedError,
    NUTError,
    NUTLoginError,
    NUTOSError,
    NUTTimeoutError,
)

from loadshed.drivers.backoff import LoginGuard
from loadshed.model import UPS, Grid, GridReading, Status

_LOG = logging.getLogger(__name__)

DEFAULT_PORT: Final = 3493  # upsd's registered port
STATUS_VAR: Final = "ups.status"
CHARGE_VAR: Final = "battery.charge"

GRID_FROM_WORD: Final[dict[str, Grid]] = {  # ups.status words that say where power comes from
    "OL": Grid.ON,  # on line: the UPS runs from the mains
    "OB": Grid.OFF,  # on battery: the mains are gone ("OB LB", "OB DISCHRG", "FSD OB LB")
}
# Any other status ("", "WAIT", "OFF", "BYPASS", both OL and OB at once) says nothing sure about
# the grid: it is Grid.UNKNOWN, shown raw and logged once.

MAX_RAW_CHARS: Final = 80  # a status is shown raw, but never a page of it
MIN_SECRET_LEN: Final = 3  # shorter passwords are not masked: that would mangle ordinary words
MASK: Final = "***"
CLOSE_TIMEOUT_S: Final = 1.0  # close() waits this long for the socket to shut, then leaves it
AIONUT_LOGGER: Final = "aionut.client"  # the logger aionut's client writes its wire log to

_ERR_CODE: Final = re.compile(r"\bERR ([A-Z-]+)")

_REASON_FROM_ERRNO: Final[dict[int, str]] = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.EPIPE: "connection broken",
    errno.EHOSTUNREACH: "no route to host",
    errno.ENETUNREACH: "network unreachable",
    errno.ETIMEDOUT: "connection timed out",
}


def grid_from_status(raw: str) -> Grid:
    """Return what a ups.status value says of the grid: OL on, OB off, anything else unknown."""
    found = {GRID_FROM_WORD[word] for word in raw.split() if word in GRID_FROM_WORD}
    return found.pop() if len(found) == 1 else Grid.UNKNOWN


def netloc(host: str, port: int) -> str:
    """Return "host:port", with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class NutSource:
    """The grid state as one UPS on a NUT server sees it, polled through one kept connection."""

    def __init__(
        self,
        ups: str,
        host: str,
        port: int = DEFAULT_PORT,
        *,
        username: str = "",
        password: str = "",
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ups = ups
        self.host = host
        self.port = port
        self.server = netloc(host, port)  # "host:port", as details name it
        self.endpoint = f"{ups}@{self.server}"
        self.username = username
        self._password = password
        self.timeout_s = timeout_s
        self._clock = clock
        self._client: _Client | None = None
        self._login_guard = LoginGuard()
        self._login_refusal = ""
        self._unknown_seen: set[str] = set()  # statuses that say nothing of the grid, logged once
        _hide_passwords_in_aionut_log()

    def __repr__(self) -> str:
        return (
            f"NutSource(endpoint={self.endpoint!r}, username={self.username!r}, "
            f"timeout_s={self.timeout_s:g})"
        )

    async def read(self) -> GridReading:
        """Poll the UPS once: its status and charge. Never raises."""
        now = self._clock()
        if not self._login_guard.may_try(now):
            wait_s = self._login_guard.wait_s(now)
            return self._failed(f"{self._login_refusal}; next login attempt in {wait_s} s")
        client = self._connect()
        try:
            async with asyncio.timeout(self.timeout_s):
                variables = await client.list_vars(self.ups)
        except asyncio.CancelledError:
            client.abandon()
            raise
        except (TimeoutError, NUTTimeoutError):
            client.abandon()
            return self._unreachable(f"no answer from the NUT server in {self.timeout_s:g} s")
        except NUTLoginError:
            client.abandon()
            return self._rejected()
        except NUTCommandError as err:  # upsd answered ERR; the connection is still good
            return self._failed(self._refusal(err))
        except NUTOSError as err:
            client.abandon()
            why = _os_reason(err.__cause__)
            return self._unreachable(f"cannot reach the NUT server at {self.server}: {why}")
        except NUTConnectionClosedError:
            client.abandon()
            return self._unreachable(f"the NUT server at {self.server} closed the connection")
        except NUTError as err:  # NUTProtocolError, NUTValueError: an answer we cannot read
            client.abandon()
            why = _shorten(" ".join(str(err).split()))
            return self._failed(f"unexpected reply from the NUT server at {self.server}: {why}")
        except Exception as err:
            client.abandon()
            trace = "".join(traceback.format_exception(err))
            _LOG.warning(
                "Unexpected failure reading NUT at %s:\n%s", self.endpoint, self._redact(trace)
            )
            why = _shorten(" ".join(str(err).split()))
            return self._failed(f"unexpected failure reading the NUT server: {why}")
        if self.username:
            self._login_guard.accepted()
        return self._reading(variables)

    async def close(self) -> None:
        """Drop the connection. Never raises."""
        client, self._client = self._client, None
        if client is None:
            return
        try:
            await client.aclose()
        except Exception as err:
            _LOG.debug("Closing the NUT connection failed: %s", self._redact(str(err)))

    def _connect(self) -> _Client:
        """Return the kept client; it opens its connection on its first call."""
        if self._client is None:
            self._client = _Client(
                self.host,
                self.port,
                username=self.username or None,
                password=self._password if self.username else None,
                timeout=self.timeout_s,
                login_ups=self.ups if self.username else None,
            )
        return self._client

    def _reading(self, variables: dict[str, str]) -> GridReading:
        battery_pct = _percent(variables.get(CHARGE_VAR))
        raw = variables.get(STATUS_VAR)
        if raw is None:
            detail = f"UPS '{self.ups}' on the NUT server at {self.server} has no {STATUS_VAR}"
            _LOG.debug("NUT %s: %s", self.endpoint, detail)
            return GridReading(
                Grid.UNKNOWN,
                battery_pct=battery_pct,
                detail=detail,
                status=Status.FAILED,
                source=UPS,
            )
        shown = _shorten(self._redact(raw))
        grid = grid_from_status(raw)
        if grid is not Grid.UNKNOWN:
            return GridReading(grid, shown, battery_pct, source=UPS)
        if raw not in self._unknown_seen:
            self._unknown_seen.add(raw)
            _LOG.warning(
                "UPS %s reports status %r, which says neither on line (OL) nor on battery (OB); "
                "the grid counts as unknown while it lasts",
                self.endpoint,
                shown,
            )
        detail = f"UPS '{self.ups}' reports status {shown!r}: neither on line nor on battery"
        return GridReading(Grid.UNKNOWN, shown, battery_pct, detail=detail, source=UPS)

    def _refusal(self, err: NUTCommandError) -> str:
        """Say in a homeowner's words why upsd answered ERR."""
        match = _ERR_CODE.search(str(err))
        code = match.group(1) if match else _shorten(" ".join(str(err).split()))
        if code == "UNKNOWN-UPS":
            return f"no UPS named '{self.ups}' on the NUT server at {self.server}"
        if code == "DATA-STALE":
            return (
                f"the NUT server at {self.server} has no fresh data from UPS '{self.ups}': "
                "its driver cannot reach the UPS"
            )
        if code == "DRIVER-NOT-CONNECTED":
            return f"the NUT server at {self.server} has lost the driver of UPS '{self.ups}'"
        if code == "USERNAME-REQUIRED":
            return f"the NUT server at {self.server} wants a password for user '{self.username}'"
        return f"the NUT server at {self.server} answered {code}"

    def _rejected(self) -> GridReading:
        self._login_refusal = (
            f"NUT server at {self.server} refused the login for user '{self.username}' "
            f"(wrong password, or upsd.users gives it no `upsmon secondary`)"
        )
        pause_s = self._login_guard.rejected(self._clock())
        _LOG.warning(
            "NUT server at %s refused the login for user %r; next login attempt in %.0f s",
            self.server,
            self.username,
            pause_s,
        )
        return self._failed(f"{self._login_refusal}; next login attempt in {math.ceil(pause_s)} s")

    def _failed(self, detail: str) -> GridReading:
        """The server answered, but gave no status we can use (or refused us)."""
        return self._unknown(detail, Status.FAILED)

    def _unreachable(self, detail: str) -> GridReading:
        """No answer at all: refused, hung, timed out."""
        return self._unknown(detail, Status.UNREACHABLE)

    def _unknown(self, detail: str, status: Status) -> GridReading:
        detail = self._redact(detail)
        _LOG.debug("NUT %s unknown: %s", self.endpoint, detail)
        return GridReading(Grid.UNKNOWN, detail=detail, status=status, source=UPS)

    def _redact(self, text: str) -> str:
        if len(self._password) < MIN_SECRET_LEN:
            return text
        return text.replace(self._password, MASK)


class _Client(AIONUTClient):
    """aionut's client, plus upsmon's LOGIN on each new connection when a user is set, and
    closing what is left of a connection whatever stopped it.

    aionut's disconnect() closes only a connection it finished making, so a login that failed
    or timed out would leave its socket open; and a call cancelled from outside leaves the
    connection marked good with a reply half-read. abandon() closes either.
    """

    def __init__(self, *args: Any, login_ups: str | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.login_ups = login_ups

    async def _connect(self) -> None:
        try:
            await super()._connect()
            if self.login_ups is not None:
                await self._write_command_or_raise(f"LOGIN {self.login_ups}\n", "OK")
        except BaseException:
            self.abandon()  # a connection that is not logged in must not be kept
            raise

    def abandon(self) -> asyncio.StreamWriter | None:
        """Close the connection now, made or half-made; return its writer, if there was one."""
        writer, self._writer, self._reader = self._writer, None, None
        self._connected = False
        if writer is not None:
            writer.close()
        return writer

    async def aclose(self) -> None:
        """Close the connection and wait briefly for the socket to shut; then refuse calls."""
        writer = self.abandon()
        self.shutdown()
        if writer is None:
            return
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await writer.wait_closed()
        except (TimeoutError, OSError):
            pass


class _HidePasswords(logging.Filter):
    """Mask the argument of PASSWORD in aionut's DEBUG wire log, which logs each line it sends."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(map(_is_password_line, record.args)):
            record.args = tuple(
                f"PASSWORD {MASK}" if _is_password_line(arg) else arg for arg in record.args
            )
        return True


_HIDE_PASSWORDS: Final = _HidePasswords()


def _hide_passwords_in_aionut_log() -> None:
    logger = logging.getLogger(AIONUT_LOGGER)
    if _HIDE_PASSWORDS not in logger.filters:
        logger.addFilter(_HIDE_PASSWORDS)


def _is_password_line(arg: object) -> bool:
    if isinstance(arg, bytes | bytearray):
        return bytes(arg).lstrip().upper().startswith(b"PASSWORD")
    return isinstance(arg, str) and arg.lstrip().upper().startswith("PASSWORD")


def _percent(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _shorten(text: str) -> str:
    return text if len(text) <= MAX_RAW_CHARS else text[: MAX_RAW_CHARS - 1] + "…"


def _os_reason(err: BaseException | None) -> str:
    """Say in a few words why the server could not be reached."""
    if isinstance(err, socket.gaierror):
        return "cannot resolve the host name"
    if isinstance(err, OSError):
        if err.errno in _REASON_FROM_ERRNO:
            return _REASON_FROM_ERRNO[err.errno]
        return err.strerror or str(err)
    return str(err) if err is not None else "connection failed"
