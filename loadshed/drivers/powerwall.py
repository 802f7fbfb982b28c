"""Read the house's grid state from a Tesla Powerwall gateway's local API (tesla_powerwall).

Owns one logged-in session for the life of a `PowerwallSource`: an aiohttp session (its cookie
jar holds the gateway's AuthCookie) and the library's `Powerwall` object, both made inside the
running loop on the first read and released by `close()`. One source belongs to one loop.

Reads only what restricted gateways (Powerwall 3, recent firmware) still serve: login,
`system_status/grid_status`, `system_status/soe` and `meters/aggregates`, through the library's
raw API (dicts), so values its typed parsers reject (`SystemMicroGridFaulted`, old firmware's
extra aggregate keys) still come through. Grid status decides; charge and meters are optional.

Every failure becomes a `GridReading` with `Grid.UNKNOWN` and a one-line `detail`; `read()`
never raises and returns within `timeout_s * READ_BUDGET_FACTOR`.

Must not: log in per poll; try a rejected password again, or call a gateway that asked us to
slow down, before the back-off has passed (repeated failed logins lock the owner out); put the
password in any log line, detail or repr.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import socket
import time
import traceback
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any, Final, TypeVar

import aiohttp
from tesla_powerwall.const import User
from tesla_powerwall.error import (
    AccessDeniedError,
    ApiError,
    PowerwallError,
    PowerwallUnreachableError,
)
from tesla_powerwall.powerwall import Powerwall

from loadshed.drivers.backoff import (
    LOGIN_FIRST_S,
    Backoff,
    LoginGuard,
)
from loadshed.model import Grid, GridReading, Status
from loadshed.trust import CertificateChanged, Trust

_LOG = logging.getLogger(__name__)

T = TypeVar("T")

GRID_FROM_STATUS: Final[dict[str, Grid]] = {  # raw grid_status values, DESIGN §6
    "SystemGridConnected": Grid.ON,
    "SystemIslandedActive": Grid.OFF,
    "SystemIslandedReady": Grid.OFF,
    "SystemWaitForUser": Grid.OFF,  # islanded, waiting for a manual reconnect
    "SystemTransitionToIsland": Grid.OFF,
    "SystemTransitionToGrid": Grid.OFF,  # still off until connected
    "SystemMicroGridFaulted": Grid.OFF,  # seen on real gateways; not in the library's enum
}

# A rejected login is tried again soon, then less often, never more than LOGIN_FAILURES_MAX
# times in any LOGIN_WINDOW_S (drivers/backoff.py): gateways answer 401 to a good password for
# a few seconds while they reboot, and lock the owner out after repeated failures.
LOGIN_BACKOFF_S: Final = LOGIN_FIRST_S
OPTIONAL_TIMEOUT_S: Final = 2.0  # charge and meters: their own short deadline, both at once
REFUSED_RETRY_S: Final = 3600.0  # an endpoint refused to this user is asked again this often
SLOWDOWN_FORGET_S: Final = 600.0  # good reads this long after a 429 before its back-off resets
SLOWDOWN_BACKOFF_S: Final = 30.0  # first pause after HTTP 429 or 503 (the gateway's rate limit)
SLOWDOWN_BACKOFF_MAX_S: Final = 300.0  # doubling up to pypowerwall's 5 min cool-down after a 429
READ_BUDGET_FACTOR: Final = 4  # a whole read (login, grid status, a re-login) gets timeout_s * this
SLOWDOWN_STATUSES: Final = frozenset({429, 503})  # "Too Many Requests", "Service Unavailable"
STOPPED_STATUS: Final = 502  # grid_status, soe, aggregates answer this while the system is stopped
NOT_FOUND_STATUS: Final = 404
FIRST_ERROR_STATUS: Final = 400  # HTTP 4xx and 5xx: the gateway answered, and said no
MAX_RAW_CHARS: Final = 80  # an unknown grid status is shown raw, but never a page of it
MIN_SECRET_LEN: Final = 3  # shorter passwords are not masked: that would mangle ordinary words
MASK: Final = "***"

WRONG_PASSWORD_DETAIL: Final = "Powerwall rejected the password: check PWPASS"
STOPPED_DETAIL: Final = "Powerwall reports its system is stopped (HTTP 502)"
GATEWAY_BAD_CREDENTIALS: Final = "bad credentials"  # the gateway's own "error" for a wrong password

GRID_STATUS_PATH: Final = "system_status/grid_status"
SOE_PATH: Final = "system_status/soe"
AGGREGATES_PATH: Final = "meters/aggregates"
LOGIN_PATH: Final = "login/Basic"

_REASON_FROM_ERRNO: Final[dict[int, str]] = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.EHOSTUNREACH: "no route to host",
    errno.ENETUNREACH: "network unreachable",
    errno.ETIMEDOUT: "connection timed out",
}


class PowerwallSource:
    """The grid state of one Powerwall gateway, polled through one kept session."""

    def __init__(
        self,
        endpoint: str,
        password: str,
        email: str = "",
        *,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        trust: Trust | None = None,
    ) -> None:
        self.endpoint = endpoint  # "192.168.1.50" or "host:port"; the library forces https
        self.trust = trust  # the gateway's certificate, pinned on first contact
        self._password = password
        self._email = email
        self.timeout_s = timeout_s
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._powerwall: Powerwall | None = None
        self._logged_in = False
        self._status: int | None = None  # HTTP status of the latest answer (a trace hook sets it)
        self._login_guard = LoginGuard()
        self._refused: dict[str, float] = {}  # optional endpoint -> when to ask it again
        self._optional_paused_until = -math.inf  # a 429 on an optional read: grid status only
        self._login_refusal = WRONG_PASSWORD_DETAIL
        self._slowdown = Backoff(SLOWDOWN_BACKOFF_S, SLOWDOWN_BACKOFF_MAX_S)
        self._slowdown_status = 0
        self._unknown_seen: set[str] = set()  # unknown grid statuses, each logged once
        self._odd_seen: set[str] = set()  # endpoints whose odd reply was logged once

    def __repr__(self) -> str:
        return f"PowerwallSource(endpoint={self.endpoint!r}, timeout_s={self.timeout_s:g})"

    @property
    def budget_s(self) -> float:
        """The longest one `read()` may take."""
        return self.timeout_s * READ_BUDGET_FACTOR

    async def read(self) -> GridReading:
        """Poll the gateway once: grid status, charge, load and solar. Never raises."""
        now = self._clock()
        if not self._login_guard.may_try(now):
            wait = self._login_guard.wait_s(now)
            return self._unknown(f"{self._login_refusal}; next login attempt in {wait} s")
        if self._slowdown.is_active(now):
            return self._unknown(self._slowdown_detail(now))
        try:
            async with asyncio.timeout(self.budget_s):
                reading = await self._read()
        except _LoginRejected as err:
            return self._rejected(err)
        except _SlowDown as err:
            return self._slow_down(err.status)
        except _Stopped:
            return self._unknown(STOPPED_DETAIL)
        except _NoAnswer:
            return self._unreachable(f"no answer from the Powerwall in {self.timeout_s:g} s")
        except TimeoutError:
            return self._unreachable(
                f"no complete answer from the Powerwall in {self.budget_s:g} s"
            )
        except PowerwallUnreachableError as err:
            reason = _unreachable_reason(err)
            return self._unreachable(f"cannot reach the Powerwall at {self.endpoint}: {reason}")
        except AccessDeniedError as err:
            why = err.message or err.error or "access denied"
            return self._unknown(f"Powerwall refused the grid status after a fresh login: {why}")
        except _HttpError as err:
            if err.status == NOT_FOUND_STATUS:
                return self._unknown(f"Powerwall does not serve {err.path} (HTTP 404)")
            return self._unknown(f"Powerwall answered HTTP {err.status} to {err.path}")
        except _BadEndpoint as err:
            return self._unknown(f"cannot use Powerwall address {self.endpoint!r}: {err}")
        except (_BadReply, PowerwallError, ValueError, KeyError, TypeError) as err:
            self._note_odd(GRID_STATUS_PATH, str(err))
            return self._unknown(f"unexpected reply: {err}")
        except aiohttp.ClientError as err:
            return self._unknown(f"unexpected reply: {err}")
        except Exception as err:
            trace = "".join(traceback.format_exception(err))
            _LOG.warning("Unexpected failure reading the Powerwall:\n%s", self._redact(trace))
            return self._unknown(f"unexpected reply: {err}")
        self._slowdown.succeeded(self._clock(), SLOWDOWN_FORGET_S)
        return reading

    async def close(self) -> None:
        """Drop the session and its connections. Never raises."""
        session, self._session, self._powerwall = self._session, None, None
        self._logged_in = False
        if session is None:
            return
        try:
            await session.close()
        except Exception as err:
            _LOG.debug("Closing the Powerwall session failed: %s", self._redact(str(err)))

    async def _read(self) -> GridReading:
        await self._connect()
        fresh = not self._logged_in
        if fresh:
            await self._login()
        try:
            return await self._read_endpoints(fresh=fresh)
        except AccessDeniedError:
            if fresh:
                raise
        # The cookie is no longer accepted (it lasts about a day): log in again, once.
        _LOG.info("Powerwall session at %s expired; logging in again", self.endpoint)
        self._logged_in = False
        await self._login()
        return await self._read_endpoints(fresh=True)

    async def _connect(self) -> Powerwall:
        """Return the library's Powerwall, made on first use inside the running loop."""
        if self._powerwall is not None:
            return self._powerwall
        trace = aiohttp.TraceConfig()
        trace.on_request_end.append(self._on_request_end)
        # unsafe=True keeps cookies for bare IP hosts, as the library's own session does.
        connector = _PinningConnector(self.trust, self.endpoint) if self.trust else None
        session = aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True), trace_configs=[trace], connector=connector
        )
        try:
            powerwall = Powerwall(
                self.endpoint,
                timeout=self.timeout_s,  # type: ignore[arg-type]  # annotated int; aiohttp takes float
                http_session=session,
                verify_ssl=False,  # gateways have self-signed certificates
            )
        except ValueError as err:
            await session.close()
            raise _BadEndpoint(str(err)) from err
        self._session, self._powerwall = session, powerwall
        return powerwall

    async def _on_request_end(
        self,
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestEndParams,
    ) -> None:
        # The library folds 429, 502, 503 ... into one ApiError; the status tells them apart.
        self._status = params.response.status

    async def _login(self) -> None:
        api = (await self._connect()).get_api()
        # The raw call: the library's LoginResponse parser would reject a reply with a role it
        # does not know, though the gateway has set the cookie, which is all we need.
        try:
            await self._call(
                LOGIN_PATH, api.login(User.CUSTOMER.value, self._email, self._password)
            )
        except AccessDeniedError as err:
            raise _LoginRejected(err.error) from err
        self._logged_in = True
        self._login_guard.accepted()
        _LOG.info("Logged in to the Powerwall at %s", self.endpoint)

    async def _read_endpoints(self, *, fresh: bool) -> GridReading:
        """Read grid status (required), charge and meters (optional) with the session."""
        doc = await self._get(GRID_STATUS_PATH)
        raw = doc.get("grid_status")
        if not isinstance(raw, str):
            raise _BadReply(f"no grid_status string in {_shorten(repr(doc))}")
        # The grid status is read: it decides, whatever happens to the optional reads.
        battery_pct, meters = await asyncio.gather(
            self._optional(SOE_PATH, _battery_pct, fresh=fresh),
            self._optional(AGGREGATES_PATH, _meters, fresh=fresh),
        )
        load_w, solar_w = meters if meters is not None else (None, None)
        grid = GRID_FROM_STATUS.get(raw)
        if grid is not None:
            return GridReading(grid, raw, battery_pct, load_w, solar_w)
        shown = _shorten(self._redact(raw))
        if raw not in self._unknown_seen:
            self._unknown_seen.add(raw)
            _LOG.warning(
                "Powerwall at %s reports grid status %r, which loadshed does not know; "
                "the grid counts as unknown while it lasts",
                self.endpoint,
                shown,
            )
        detail = f"Powerwall reports an unknown grid status: {shown}"
        return GridReading(Grid.UNKNOWN, shown, battery_pct, load_w, solar_w, detail)

    async def _optional(
        self, path: str, parse: Callable[[dict[str, Any]], T], *, fresh: bool
    ) -> T | None:
        """Read and parse path within OPTIONAL_TIMEOUT_S; None when it cannot be had now.

        Never raises. A 401/403 right after a fresh login is this endpoint refused to this user
        (some firmware does, for good): it is not asked again for REFUSED_RETRY_S. On an older
        session it may be the session expiring: the next read logs in again (not this one).
        """
        now = self._clock()
        if now < self._refused.get(path, -math.inf) or now < self._optional_paused_until:
            return None
        try:
            async with asyncio.timeout(min(OPTIONAL_TIMEOUT_S, self.timeout_s)):
                return parse(await self._get(path, timeout_s=math.inf))
        except AccessDeniedError as err:
            if not fresh:
                self._logged_in = False
                return None
            self._refused[path] = now + REFUSED_RETRY_S
            why = f"refused to this user ({err.message or err.error or 'access denied'})"
        except _SlowDown as err:
            self._optional_paused_until = now + SLOWDOWN_BACKOFF_S
            why = f"HTTP {err.status}: reading the grid status only for a while"
        except (_NoAnswer, TimeoutError):
            why = f"no answer in {min(OPTIONAL_TIMEOUT_S, self.timeout_s):g} s"
        except _Stopped:
            why = "HTTP 502"
        except _HttpError as err:
            why = f"HTTP {err.status}"
        except (PowerwallUnreachableError, aiohttp.ClientError) as err:
            why = (
                _unreachable_reason(err) if isinstance(err, PowerwallUnreachableError) else str(err)
            )
        except (_BadReply, PowerwallError, ValueError, KeyError, TypeError) as err:
            why = str(err)
        self._note_odd(path, why)
        return None

    async def _get(self, path: str, *, timeout_s: float | None = None) -> dict[str, Any]:
        api = (await self._connect()).get_api()
        doc = await self._call(path, api.get(path), timeout_s=timeout_s)
        if not isinstance(doc, dict):
            raise _BadReply(f"{path} is not a JSON object: {_shorten(repr(doc))}")
        return doc

    async def _call(self, path: str, call: Awaitable[T], *, timeout_s: float | None = None) -> T:
        """Await one request under timeout_s; sort the library's ApiError by HTTP status."""
        self._status = None
        try:
            async with asyncio.timeout(self.timeout_s if timeout_s is None else timeout_s):
                return await call
        except TimeoutError as err:  # ours, or the library's (aiohttp's total timeout)
            raise _NoAnswer(path) from err
        except ApiError as err:
            status = self._status
            if status is None:
                raise
            if status in SLOWDOWN_STATUSES:
                raise _SlowDown(status) from err
            if status == STOPPED_STATUS:
                raise _Stopped(path) from err
            if status >= FIRST_ERROR_STATUS:
                raise _HttpError(path, status) from err
            raise

    def _rejected(self, err: _LoginRejected) -> GridReading:
        detail = WRONG_PASSWORD_DETAIL
        if err.gateway_error and err.gateway_error != GATEWAY_BAD_CREDENTIALS:
            # e.g. "default password not supported" (late-2024 firmware): worth showing.
            detail += f" (the gateway says: {_shorten(err.gateway_error)})"
        self._login_refusal = self._redact(detail)
        pause_s = self._login_guard.rejected(self._clock())
        _LOG.warning(
            "Powerwall at %s rejected the password; next login attempt in %.0f s",
            self.endpoint,
            pause_s,
        )
        return self._unknown(f"{detail}; next login attempt in {math.ceil(pause_s)} s")

    def _slow_down(self, status: int) -> GridReading:
        now = self._clock()
        self._slowdown_status = status
        pause_s = self._slowdown.start(now)
        _LOG.warning(
            "Powerwall at %s answered HTTP %s; leaving it alone for %.0f s",
            self.endpoint,
            status,
            pause_s,
        )
        return self._unknown(self._slowdown_detail(now))

    def _slowdown_detail(self, now: float) -> str:
        return (
            f"Powerwall asked us to slow down (HTTP {self._slowdown_status}); "
            f"next try in {math.ceil(self._slowdown.remaining_s(now))} s"
        )

    def _note_odd(self, path: str, why: str) -> None:
        """Log once per endpoint that the gateway does not serve it as expected."""
        if path in self._odd_seen:
            return
        self._odd_seen.add(path)
        _LOG.warning(
            "Powerwall at %s: %s is not available or not as expected (API changed?): %s",
            self.endpoint,
            path,
            self._redact(_shorten(why)),
        )

    def _unknown(self, detail: str, status: Status = Status.FAILED) -> GridReading:
        """The gateway answered but gave no grid status we can use (or refused us)."""
        detail = self._redact(detail)
        _LOG.debug("Powerwall at %s unknown: %s", self.endpoint, detail)
        return GridReading(Grid.UNKNOWN, detail=detail, status=status)

    def _unreachable(self, detail: str) -> GridReading:
        """No answer at all: refused, hung, timed out."""
        return self._unknown(detail, Status.UNREACHABLE)

    def _redact(self, text: str) -> str:
        if len(self._password) < MIN_SECRET_LEN:
            return text
        return text.replace(self._password, MASK)


class _CertificateMismatch(aiohttp.ServerConnectionError):
    """The gateway's certificate is not the one pinned (an aiohttp connection error, so the
    library reports it as unreachable, before any request — the password — is sent)."""

    def __init__(self, changed: CertificateChanged) -> None:
        self.detail = (
            f"the Powerwall's certificate changed (SHA-256 {changed.got[:23]}…, pinned "
            f"{changed.pinned[:23]}…): nothing is sent to it. If you replaced the gateway, run "
            "`loadshed check --trust-powerwall`"
        )
        super().__init__(self.detail)


class _PinningConnector(aiohttp.TCPConnector):
    """Checks every new TLS connection's certificate against trust.json before it is used."""

    def __init__(self, trust: Trust, key: str) -> None:
        super().__init__()
        self._trust = trust
        self._key = key
        self._said: set[str] = set()  # changed certificates already logged (once each)

    async def _wrap_create_connection(
        self, *args: Any, **kwargs: Any
    ) -> tuple[asyncio.Transport, Any]:
        transport, protocol = await super()._wrap_create_connection(*args, **kwargs)
        sslobj = transport.get_extra_info("ssl_object")
        der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
        if der is not None:
            try:
                self._trust.check(self._key, der)
            except CertificateChanged as err:
                transport.close()
                mismatch = _CertificateMismatch(err)
                if err.got not in self._said:
                    self._said.add(err.got)
                    _LOG.error("Powerwall %s: %s", self._key, mismatch.detail)
                raise mismatch from None
        return transport, protocol


class _LoginRejected(Exception):
    def __init__(self, gateway_error: str | None) -> None:
        super().__init__(gateway_error or "login rejected")
        self.gateway_error = gateway_error


class _SlowDown(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class _Stopped(Exception):
    """The gateway answered 502: its sitemaster (the system) is stopped."""


class _NoAnswer(Exception):
    """One request got no answer within timeout_s."""


class _HttpError(Exception):
    def __init__(self, path: str, status: int) -> None:
        super().__init__(f"HTTP {status} from {path}")
        self.path = path
        self.status = status


class _BadReply(Exception):
    """The gateway answered, but not in the shape loadshed reads."""


class _BadEndpoint(Exception):
    """The configured address is not one the library can make a URL of."""


def _battery_pct(doc: dict[str, Any]) -> float:
    value = _number(doc["percentage"])
    if value is None:
        raise _BadReply(f"percentage is not a number: {_shorten(repr(doc['percentage']))}")
    return value


def _meters(doc: dict[str, Any]) -> tuple[float | None, float | None]:
    """Return (load W, solar W) from meters/aggregates; None for a meter it lacks.

    Picked by hand: old firmware adds top-level keys ("frequency") that make the library's
    MetersAggregatesResponse raise ValueError.
    """
    return _meter_w(doc, "load"), _meter_w(doc, "solar")


def _meter_w(doc: dict[str, Any], meter: str) -> float | None:
    """Return one meter's instant_power; None when the site has no such meter."""
    entry = doc.get(meter)
    if entry is None:
        return None
    value = _number(entry.get("instant_power")) if isinstance(entry, dict) else None
    if value is None:
        raise _BadReply(f"{meter} meter has no instant_power number: {_shorten(repr(entry))}")
    return value


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _shorten(text: str) -> str:
    return text if len(text) <= MAX_RAW_CHARS else text[: MAX_RAW_CHARS - 1] + "…"


def _unreachable_reason(err: PowerwallUnreachableError) -> str:
    """Say in a few words why the gateway could not be reached."""
    # The library raises PowerwallUnreachableError(str(e)) inside `except`: e is the context.
    cause = err.__cause__ or err.__context__
    if isinstance(cause, _CertificateMismatch):
        return cause.detail
    if isinstance(cause, aiohttp.ClientSSLError):
        return "TLS handshake failed"
    if isinstance(cause, aiohttp.ServerDisconnectedError):
        return "the gateway closed the connection"
    if isinstance(cause, aiohttp.ServerTimeoutError):
        return "timed out"
    if isinstance(cause, aiohttp.ClientConnectorError):
        os_error = cause.os_error
        if isinstance(os_error, socket.gaierror):
            return "cannot resolve the host name"
        if os_error.errno in _REASON_FROM_ERRNO:
            return _REASON_FROM_ERRNO[os_error.errno]
        return os_error.strerror or str(os_error)
    return err.reason or str(err)
