"""Read the house's grid state from a Powerwall gateway's TEDAPI, through pypowerwall.

TEDAPI is the gateway's installer protocol (protobuf over HTTPS), which Powerwall 3 and recent
firmware still serve when the legacy /api is closed. Two ways in, as pypowerwall speaks them:

- "tedapi": HTTP Basic (`Tesla_Energy_Device` / the gateway password from the QR sticker) to
  `GET /tedapi/din` and `POST /tedapi/v1`; the gateway answers it on its own Wi-Fi, 192.168.91.1;
- "v1r" (a Powerwall 3 on the wired LAN, with an RSA key registered with the gateway by
  `python -m pypowerwall register`): `POST /api/login/Basic` with the customer password (the
  gateway password's last 5 characters, pypowerwall's rule), `GET /tedapi/din`, then
  `POST /tedapi/v1r` with RSA-signed messages.

One read is pypowerwall's `TEDAPI.get_status()`, the DeviceControllerQuery: one POST once
connected. Connecting, on a source's first read and after a failed connect, costs first
`GET /` (pypowerwall's Powerwall 3 probe) and `GET /tedapi/din`; v1r: a login, the DIN and a
config.json probe. The grid is `esCan.bus.ISLANDER.ISLAND_GridConnection.ISLAND_GridConnected`,
unless the gateway lists the `SystemConnectedToGrid` alert (`control.alerts.active`), which
pypowerwall lets win (solar-only gateways report "Island" while connected); the charge is
`control.systemStatus` remaining / full energy; load and solar `control.meterAggregates`.

pypowerwall blocks, retries for tens of seconds, caches, and hides failures (it logs them and
returns None). So a source:
- runs it on its own thread, one call at a time: `read()` waits at most `timeout_s`, and while
  a call it gave up on still runs, the next read answers UNREACHABLE at once;
- mounts its own adapter on pypowerwall's sessions: no urllib3 retries (pypowerwall's Retry
  makes a refused connection cost 30 s), `trust_env=False` (REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE
  would override verify=False and refuse every self-signed gateway), and a record of each HTTP
  exchange, which is how a wrong password, a refused connection and garbage are told apart;
- sets pypowerwall's cache to CACHE_S, under the poll interval, so each poll asks afresh;
- keeps pypowerwall's loggers quiet (LIBRARY_LOG_LEVEL) and reports outcomes itself.

Every failure is a `GridReading` with `Grid.UNKNOWN` and a one-line `detail`: FAILED when the
gateway answered and refused (wrong password, garbage, HTTP error, rate limit, RSA key trouble),
UNREACHABLE when it did not answer. A missing grid path is unknown, never islanded.

Must not: retry a rejected password before LoginGuard allows (gateways lock owners out);
have more than one call in flight; put the password in any log line, detail or repr; import
loadshed.engine or loadshed.config.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import logging
import math
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import requests
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pypowerwall.tedapi import TEDAPI  # type: ignore[import-untyped]
from pypowerwall.tedapi.tedapi_v1r import reregister_hint  # type: ignore[import-untyped]
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ReadTimeoutError
from urllib3.util.retry import Retry

from loadshed.drivers.backoff import LoginGuard
from loadshed.model import Grid, GridReading, Status

_LOG = logging.getLogger(__name__)

API_TEDAPI: Final = "tedapi"
API_V1R: Final = "v1r"

# pypowerwall logs every failed poll at ERROR, four lines or more while the gateway is down
# (an outage would write ~170,000 a day), and whole status and config.json documents at DEBUG.
LIBRARY_LOG_LEVEL: Final = logging.CRITICAL
logging.getLogger("pypowerwall").setLevel(LIBRARY_LOG_LEVEL)
# pypowerwall also warns (warnings.warn) about v1r key trouble; the reading's detail says it.
warnings.filterwarnings("ignore", category=UserWarning, module=r"pypowerwall(\.|$)")

CACHE_S: Final = 1  # pwcacheexpire and pwconfigexpire: under the 2 s poll, each poll asks afresh
SOCKET_SHARE: Final = 0.5  # pypowerwall's per-request timeout / timeout_s: a hung request ends
# (and frees the thread) well before read() gives up on the whole call
POOL_SIZE: Final = 1  # one call at a time: one kept connection is enough
# No retries: the next poll is the retry. read=False raises a read timeout as itself, not
# as "Max retries exceeded" (what requests' own default adapter does).
NO_RETRY: Final = Retry(total=0, read=False, raise_on_status=False)
CUSTOMER_PASSWORD_CHARS: Final = 5  # v1r logs in with the gateway password's last 5 characters
MAX_RAW_CHARS: Final = 80  # an unknown grid state is shown raw, but never a page of it
MIN_SECRET_LEN: Final = 3  # shorter passwords are not masked: that would mangle ordinary words
MASK: Final = "***"

GRID_PATH: Final = ("esCan", "bus", "ISLANDER", "ISLAND_GridConnection", "ISLAND_GridConnected")
ALERTS_PATH: Final = ("control", "alerts", "active")
SYSTEM_STATUS_PATH: Final = ("control", "systemStatus")
METERS_PATH: Final = ("control", "meterAggregates")
GRID_FROM_ISLANDER: Final[dict[str, Grid]] = {  # the gateway's own words; any other: unknown
    "ISLAND_GridConnected_Connected": Grid.ON,
    "ISLAND_GridConnected_Island": Grid.OFF,  # islanded (Powerwall-Dashboard#577 captures it)
}
# Listed in control.alerts.active while on grid; pypowerwall's extract_grid_status trusts it first.
CONNECTED_ALERT: Final = "SystemConnectedToGrid"

# Paths whose 401/403 means the password was refused, per api (v1r signs the rest with its key).
PASSWORD_PATHS: Final[dict[str, frozenset[str]]] = {
    API_TEDAPI: frozenset({"/tedapi/din", "/tedapi/v1"}),
    API_V1R: frozenset({"/api/login/Basic"}),
}
REFUSED_STATUSES: Final = frozenset({401, 403})
SLOWDOWN_STATUSES: Final = frozenset({429, 503})  # pypowerwall then pauses every call 5 min
HTTP_OK: Final = 200

WRONG_PASSWORD_DETAIL: Final = (
    "gateway password rejected: it is the password on the QR sticker of the gateway "
    "(Powerwall 3: behind the cover)"
)
PREVIOUS_CALL_DETAIL: Final = "the Powerwall has not answered the previous request yet"
GARBAGE_DETAIL: Final = "the Powerwall's answer could not be read (not a TEDAPI reply)"
NO_GRID_DETAIL: Final = (
    "the Powerwall's status has no grid state (esCan.bus.ISLANDER): has its TEDAPI changed?"
)
KEY_UNVERIFIED_DETAIL: Final = (
    "the Powerwall has not verified this computer's RSA key yet: within 10 minutes of "
    "registering it, switch the Powerwall 3 off for 15 s, then on"
)
WIFI_HINT: Final = " (TEDAPI answers on the gateway's own Wi-Fi: is this computer on it?)"

_REASON_FROM_ERRNO: Final[dict[int, str]] = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.EHOSTUNREACH: "no route to host",
    errno.ENETUNREACH: "network unreachable",
    errno.ETIMEDOUT: "connection timed out",
}


@dataclass(frozen=True, slots=True)
class _Call:
    """One HTTP exchange pypowerwall made: its answer's status, or the error instead."""

    method: str
    path: str
    status: int | None
    error: Exception | None
    elapsed_s: float

    def __str__(self) -> str:
        outcome = str(self.status) if self.error is None else type(self.error).__name__
        return f"{self.method} {self.path} {outcome} {self.elapsed_s * 1000:.0f} ms"


@dataclass(frozen=True, slots=True)
class _Fetched:
    """What one call into pypowerwall brought back, and how."""

    status: Any  # get_status(): the status document, or None when pypowerwall got none
    calls: tuple[_Call, ...]  # the HTTP exchanges it made, in order (none: served from cache)
    cooldown_s: float  # pypowerwall's rate-limit pause still to run
    key_unknown: bool  # v1r: the gateway does not know the RSA key
    key_unverified: bool  # v1r: the key is registered, not yet confirmed at the Powerwall


@dataclass(eq=False)
class _Link:
    """One life of a source, until close(): its thread, pypowerwall's client, the call in flight."""

    executor: concurrent.futures.ThreadPoolExecutor = field(
        default_factory=lambda: concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="tedapi"
        )
    )
    calls: list[_Call] = field(default_factory=list)  # filled by the adapter, on the thread
    client: Any = None  # the _Tedapi, made on the thread by the first call
    inflight: concurrent.futures.Future[_Fetched] | None = None


class TedapiSource:
    """The grid state of one Powerwall gateway, read over TEDAPI by pypowerwall."""

    def __init__(
        self,
        host: str,
        gateway_password: str,
        *,
        timeout_s: float = 5.0,
        rsa_key_path: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoint = host  # "192.168.91.1" or "host:port"; pypowerwall adds https://
        self.api = API_TEDAPI if rsa_key_path is None else API_V1R
        self.rsa_key_path = rsa_key_path
        self.timeout_s = timeout_s
        self._password = gateway_password
        self._clock = clock
        self._link: _Link | None = None
        self._login_guard = LoginGuard()
        self._said: set[str] = set()  # warnings already logged once (unknown states, key trouble)

    def __repr__(self) -> str:
        return (
            f"TedapiSource(endpoint={self.endpoint!r}, api={self.api!r}, "
            f"timeout_s={self.timeout_s:g})"
        )

    async def read(self) -> GridReading:
        """Poll the gateway once: grid state, charge, load and solar. Never raises."""
        now = self._clock()
        if not self._login_guard.may_try(now):
            wait_s = self._login_guard.wait_s(now)
            return self._failed(f"{WRONG_PASSWORD_DETAIL}; next attempt in {wait_s} s")
        if self._link is None:
            self._link = _Link()
        link = self._link
        if link.inflight is not None and not link.inflight.done():
            return self._unreachable(PREVIOUS_CALL_DETAIL)
        try:
            link.inflight = link.executor.submit(self._fetch, link)
            async with asyncio.timeout(self.timeout_s):
                fetched = await asyncio.wrap_future(link.inflight)
        except TimeoutError:
            return self._unreachable(f"no answer from the Powerwall in {self.timeout_s:g} s")
        except _Unusable as err:
            self._say_once(f"unusable:{err}", "Powerwall at %s: %s", self.endpoint, err)
            return self._failed(str(err))
        except Exception as err:
            trace = "".join(traceback.format_exception(err))
            _LOG.warning("Unexpected failure reading the Powerwall:\n%s", self._redact(trace))
            return self._failed(f"unexpected failure: {err}")
        if fetched.calls:
            _LOG.debug(
                "TEDAPI %s: %s", self.endpoint, "; ".join(str(call) for call in fetched.calls)
            )
        if isinstance(fetched.status, dict):
            self._login_guard.accepted()
            return self._reading(fetched.status)
        return self._no_status(fetched)

    async def close(self) -> None:
        """Let the thread go and close pypowerwall's sessions. Never raises, never waits.

        A call still in flight ends on its own socket timeout; the sessions close after it.
        A later read() starts afresh.
        """
        link, self._link = self._link, None
        if link is None:
            return
        try:
            link.executor.submit(_close_client, link)
            link.executor.shutdown(wait=False)
        except Exception as err:
            _LOG.debug("Closing the TEDAPI client failed: %s", self._redact(str(err)))

    # --- on the source's thread ---------------------------------------------------------------

    def _fetch(self, link: _Link) -> _Fetched:
        """Ask pypowerwall for the status (blocking); return it with the HTTP it took."""
        link.calls.clear()
        if link.client is None:
            link.client = self._client(link.calls)
        client = link.client
        status = client.get_status()
        transport = client.v1r_transport
        return _Fetched(
            status=status,
            calls=tuple(link.calls),
            cooldown_s=max(0.0, float(client.pwcooldown) - time.perf_counter()),
            key_unknown=bool(transport is not None and transport.key_unknown),
            key_unverified=bool(transport is not None and transport.pending_verification),
        )

    def _client(self, calls: list[_Call]) -> _Tedapi:
        """Make pypowerwall's TEDAPI client for this source (no I/O but reading the key)."""
        options: dict[str, Any] = {
            "host": self.endpoint,
            "timeout": self.timeout_s * SOCKET_SHARE,
            "pwcacheexpire": CACHE_S,
            "pwconfigexpire": CACHE_S,
            "poolmaxsize": POOL_SIZE,
            "failover": False,
        }
        if not self._password:
            raise _Unusable("no gateway password is set (the one on the gateway's QR sticker)")
        if self.rsa_key_path is None:
            return _Tedapi(calls, gw_pwd=self._password, **options)
        _check_key(self.rsa_key_path)
        return _Tedapi(
            calls,
            gw_pwd="",  # only for a Wi-Fi fallback host, which loadshed does not use
            v1r=True,
            password=self._password[-CUSTOMER_PASSWORD_CHARS:],
            rsa_key_path=str(self.rsa_key_path),
            **options,
        )

    # --- back on the loop ------------------------------------------------------------------

    def _reading(self, status: dict[str, Any]) -> GridReading:
        """Make the reading from pypowerwall's status document."""
        battery_pct = _battery_pct(status)
        meters = _meters(status)
        load_w, solar_w = meters.get("LOAD"), meters.get("SOLAR")
        value = _lookup(status, GRID_PATH)
        alerts = _lookup(status, ALERTS_PATH)
        alerted = isinstance(alerts, list) and CONNECTED_ALERT in alerts
        if not isinstance(value, str) or not value:
            if alerted:
                return GridReading(Grid.ON, CONNECTED_ALERT, battery_pct, load_w, solar_w)
            self._say_once("no-grid", "Powerwall at %s: %s", self.endpoint, NO_GRID_DETAIL)
            return GridReading(
                Grid.UNKNOWN,
                "",
                battery_pct,
                load_w,
                solar_w,
                NO_GRID_DETAIL,
                Status.FAILED,
            )
        shown = _shorten(self._redact(value))
        grid = GRID_FROM_ISLANDER.get(value)
        if alerted:
            detail = "" if grid is Grid.ON else f"the gateway reports {shown} and {CONNECTED_ALERT}"
            return GridReading(Grid.ON, shown, battery_pct, load_w, solar_w, detail)
        if grid is not None:
            return GridReading(grid, shown, battery_pct, load_w, solar_w)
        self._say_once(
            f"state:{value}",
            "Powerwall at %s reports grid state %r, which loadshed does not know; "
            "the grid counts as unknown while it lasts",
            self.endpoint,
            shown,
        )
        detail = f"Powerwall reports an unknown grid state: {shown}"
        return GridReading(Grid.UNKNOWN, shown, battery_pct, load_w, solar_w, detail)

    def _no_status(self, fetched: _Fetched) -> GridReading:
        """Say why pypowerwall came back empty-handed, from the HTTP it made."""
        if fetched.key_unknown:
            path = str(self.rsa_key_path)
            return self._failed(
                f"the Powerwall does not know the RSA key {path}: register it with "
                f"`{reregister_hint(path)}`"
            )
        if fetched.key_unverified:
            return self._failed(KEY_UNVERIFIED_DETAIL)
        password_paths = PASSWORD_PATHS[self.api]
        if any(c.status in REFUSED_STATUSES and c.path in password_paths for c in fetched.calls):
            return self._rejected()
        busy = [c.status for c in fetched.calls if c.status in SLOWDOWN_STATUSES]
        if busy or fetched.cooldown_s > 0:
            said = f" (HTTP {busy[-1]})" if busy else ""
            return self._failed(
                f"the Powerwall asked us to slow down{said}; "
                f"next try in {math.ceil(fetched.cooldown_s)} s"
            )
        if not fetched.calls:
            return self._failed("pypowerwall returned no status and sent nothing")
        last = fetched.calls[-1]
        if last.error is not None:
            return self._unreachable(self._why(last.error))
        if last.status == HTTP_OK:
            return self._failed(GARBAGE_DETAIL)
        return self._failed(f"the Powerwall answered HTTP {last.status} to {last.path}")

    def _rejected(self) -> GridReading:
        pause_s = self._login_guard.rejected(self._clock())
        _LOG.warning(
            "Powerwall at %s rejected the gateway password; next attempt in %.0f s",
            self.endpoint,
            pause_s,
        )
        return self._failed(f"{WRONG_PASSWORD_DETAIL}; next attempt in {math.ceil(pause_s)} s")

    def _why(self, error: Exception) -> str:
        """Say in a few words why a request got no answer."""
        causes = list(_causes(error))
        if any(isinstance(c, ReadTimeoutError) for c in causes):
            return f"no answer from the Powerwall in {self.timeout_s:g} s"
        hint = WIFI_HINT if self.api == API_TEDAPI else ""
        if isinstance(error, requests.exceptions.Timeout):
            return f"cannot reach the Powerwall at {self.endpoint}: connection timed out{hint}"
        if isinstance(error, requests.exceptions.SSLError):
            return f"cannot reach the Powerwall at {self.endpoint}: TLS handshake failed"
        for cause in causes:
            if isinstance(cause, OSError) and cause.errno in _REASON_FROM_ERRNO:
                reason = _REASON_FROM_ERRNO[cause.errno]
                return f"cannot reach the Powerwall at {self.endpoint}: {reason}{hint}"
        return f"cannot reach the Powerwall at {self.endpoint}: {_shorten(str(error))}"

    def _say_once(self, key: str, message: str, *args: object) -> None:
        if key in self._said:
            return
        self._said.add(key)
        _LOG.warning(message, *(self._redact(str(a)) for a in args))

    def _failed(self, detail: str) -> GridReading:
        """The gateway answered but gave no grid state we can use (or refused us)."""
        return self._unknown(detail, Status.FAILED)

    def _unreachable(self, detail: str) -> GridReading:
        """No answer at all: refused, hung, timed out."""
        return self._unknown(detail, Status.UNREACHABLE)

    def _unknown(self, detail: str, status: Status) -> GridReading:
        detail = self._redact(detail)
        _LOG.debug("Powerwall at %s unknown: %s", self.endpoint, detail)
        return GridReading(Grid.UNKNOWN, detail=detail, status=status)

    def _redact(self, text: str) -> str:
        if len(self._password) < MIN_SECRET_LEN:
            return text
        return text.replace(self._password, MASK)


class _Tedapi(TEDAPI):  # type: ignore[misc]  # pypowerwall has no type hints
    """pypowerwall's TEDAPI client on loadshed's sessions, connecting on its first call.

    TEDAPI.__init__ connects at once, and pypowerwall's getters connect again when that
    failed: held back here, the first get_status() connects, once, under read()'s deadline.
    """

    def __init__(self, calls: list[_Call], **options: Any) -> None:
        self._calls = calls
        self._may_connect = False
        super().__init__(**options)
        self._may_connect = True
        if self.v1r_transport is not None:  # made (with its session) by TEDAPI.__init__
            _tune(self.v1r_transport.session, calls)

    def _init_session(self) -> requests.Session:
        session: requests.Session = super()._init_session()
        _tune(session, self._calls)
        return session

    def connect(self, force: bool = False) -> Any:
        if not self._may_connect:
            return None
        return super().connect(force)


class _RecordingAdapter(HTTPAdapter):
    """requests' adapter without retries, noting each exchange in a list the source reads."""

    def __init__(self, calls: list[_Call]) -> None:
        super().__init__(max_retries=NO_RETRY, pool_connections=POOL_SIZE, pool_maxsize=POOL_SIZE)
        self._calls = calls

    def send(
        self, request: requests.PreparedRequest, *args: Any, **kwargs: Any
    ) -> requests.Response:
        started = time.monotonic()
        method, path = request.method or "", urlsplit(request.url or "").path
        try:
            response = super().send(request, *args, **kwargs)
        except Exception as err:
            self._calls.append(_Call(method, path, None, err, time.monotonic() - started))
            raise
        elapsed_s = time.monotonic() - started
        self._calls.append(_Call(method, path, response.status_code, None, elapsed_s))
        return response


class _Unusable(Exception):
    """The source's settings cannot work (no password, a bad key file); str() says why."""


def _tune(session: requests.Session, calls: list[_Call]) -> None:
    """Make one of pypowerwall's sessions loadshed's: no retries, no environment, recorded."""
    # With trust_env, REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE replace pypowerwall's verify=False
    # (the gateway's certificate is self-signed), and *_PROXY would route the gateway's traffic.
    session.trust_env = False
    for prefix in ("https://", "http://"):
        old = session.adapters.get(prefix)
        session.mount(prefix, _RecordingAdapter(calls))
        if old is not None:
            old.close()


def _check_key(path: Path) -> None:
    """Raise _Unusable unless path holds an unencrypted RSA private key in PEM."""
    where = f"cannot use the RSA key file {path}"
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        raise _Unusable(f"{where}: it does not exist") from None
    except PermissionError:
        raise _Unusable(f"{where}: permission denied") from None
    except OSError as err:
        raise _Unusable(f"{where}: {err.strerror or err}") from None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise _Unusable(f"{where}: it is protected by a passphrase") from None
    except (ValueError, UnsupportedAlgorithm):
        raise _Unusable(f"{where}: it is not a PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise _Unusable(f"{where}: it is not an RSA key")


def _close_client(link: _Link) -> None:
    if link.client is None:
        return
    try:
        link.client.close_session()
    except Exception as err:
        _LOG.debug("Closing pypowerwall's sessions failed: %s", err)


def _lookup(doc: object, path: tuple[str, ...]) -> object:
    """Return doc[path[0]][path[1]]...; None where a step is missing or not a mapping."""
    for key in path:
        if not isinstance(doc, Mapping):
            return None
        doc = doc.get(key)
    return doc


def _battery_pct(status: dict[str, Any]) -> float | None:
    """Charge in %: remaining / full pack energy (pypowerwall's battery_level(), but 0 % is 0)."""
    system = _lookup(status, SYSTEM_STATUS_PATH)
    if not isinstance(system, Mapping):
        return None
    remaining = _number(system.get("nominalEnergyRemainingWh"))
    full = _number(system.get("nominalFullPackEnergyWh"))
    if remaining is None or full is None or full <= 0:
        return None
    return remaining / full * 100


def _meters(status: dict[str, Any]) -> dict[str, float]:
    """Return realPowerW by location (LOAD, SOLAR, ...) from control.meterAggregates."""
    aggregates = _lookup(status, METERS_PATH)
    if not isinstance(aggregates, list):
        return {}
    meters: dict[str, float] = {}
    for meter in aggregates:
        if not isinstance(meter, Mapping) or not isinstance(meter.get("location"), str):
            continue
        watts = _number(meter.get("realPowerW"))
        if watts is not None:
            meters[meter["location"].upper()] = watts
    return meters


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _causes(error: BaseException) -> Iterator[BaseException]:
    """Yield error and what it wraps: causes, contexts, urllib3's `reason`, first args."""
    seen: set[int] = set()
    todo: list[BaseException] = [error]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        wrapped = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        wrapped += [arg for arg in current.args[:1]]
        todo += [w for w in wrapped if isinstance(w, BaseException)]


def _shorten(text: str) -> str:
    return text if len(text) <= MAX_RAW_CHARS else text[: MAX_RAW_CHARS - 1] + "…"
