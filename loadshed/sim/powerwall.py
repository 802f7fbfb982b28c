"""The simulated Powerwall gateway: the local HTTPS API that tesla_powerwall reads, on loopback.

Owns an aiohttp HTTPS server on 127.0.0.x with a self-signed certificate made at construction
(the key and certificate touch the disk only in a private temporary directory, long enough for
`ssl` to load them). It answers what the real gateway answers to the library:

- `POST /api/login/Basic`: checks the password; 200 + the login reply + `AuthCookie` and
  `UserRecord` cookies, or 401 `{"code":401,"error":"bad credentials","message":"Login Error"}`;
- cookie-checked GETs: `system_status/grid_status`, `system_status/soe`, `meters/aggregates`
  (values from the `SiteState`, read at each request), `site_info`, `sitemaster`,
  `system_status` (and `operation`, `powerwalls`, `meters/site` when a fixture directory has
  them); `status` needs no cookie. A request without a cookie gets 403, a stale cookie 401.

Run-time switches (plain attributes; set them from any thread between requests, or through the
sim loop) on top of the `SimDevice` faults (DOWN, HUNG, SLOW, BAD_AUTH = every login gets 401):
`expire_after_calls`, `expire_after_s`, `expire_sessions()`, `rate_limit_login`,
`rate_limit_reads` (429), `sitemaster_stopped` (502 with an empty body), `unavailable` (503),
`restricted` (only login, grid_status, soe and meters/aggregates; the rest 404),
`old_firmware_aggregates` (extra top-level `busway`, `frequency`, `generator` keys),
`replies` (canned answers per path), `hang_paths` (never answered) and `reset_paths` (the
connection reset). Counters: `logins`, `failed_logins`, `requests`.

With `responses_dir` (a captured firmware directory such as tests/fixtures/powerwall/fw-21.44),
static endpoints are served verbatim from its files, and the dynamic ones use its files as
templates: the captured shape, with the grid status, charge and meter powers of the SiteState.

Must not: bind anything outside 127.0.0.0/8, log or echo the password.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import copy
import datetime as dt
import hmac
import ipaddress
import json
import logging
import secrets
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from loadshed.sim.base import Closer, Fault, SimDevice, SiteState

_LOG = logging.getLogger(__name__)

CERT_VALID_DAYS: Final = 30  # the certificate outlives any test run or demo session
SHUTDOWN_GRACE_S: Final = 0.2  # DOWN or stop: how long answers in flight may finish first
AUTH_COOKIE: Final = "AuthCookie"  # the only cookie tesla_powerwall checks (API.is_authenticated)
USER_RECORD_COOKIE: Final = "UserRecord"  # the real gateway also sets this one

LOGIN_PATH: Final = "login/Basic"
GRID_STATUS_PATH: Final = "system_status/grid_status"
SOE_PATH: Final = "system_status/soe"
AGGREGATES_PATH: Final = "meters/aggregates"
STATUS_PATH: Final = "status"
SITEMASTER_PATH: Final = "sitemaster"
SYSTEM_STATUS_PATH: Final = "system_status"
SITE_INFO_PATH: Final = "site_info"

# Powerwall 3 and recent firmware serve only these; everything else answers 404 (FIELD.md).
RESTRICTED_PATHS: Final = frozenset({LOGIN_PATH, GRID_STATUS_PATH, SOE_PATH, AGGREGATES_PATH})
# What answers 502 with an empty body while the sitemaster is stopped (fw-21.44 capture).
STOPPED_PATHS: Final = frozenset({GRID_STATUS_PATH, SOE_PATH, AGGREGATES_PATH, SYSTEM_STATUS_PATH})
# Fixture file per endpoint, in a captured firmware directory.
FIXTURE_FILES: Final[dict[str, str]] = {
    LOGIN_PATH: "login_basic.json",
    GRID_STATUS_PATH: "grid_status.json",
    SOE_PATH: "soe.json",
    AGGREGATES_PATH: "meters_aggregates.json",
    STATUS_PATH: "status.json",
    SITEMASTER_PATH: "sitemaster.json",
    SYSTEM_STATUS_PATH: "system_status.json",
    SITE_INFO_PATH: "site_info.json",
    "operation": "operation.json",
    "powerwalls": "powerwalls.json",
    "meters/site": "meter_site.json",
}
STOPPED_SITEMASTER_FILE: Final = "stopped_sitemaster.json"
# Keys tesla_powerwall requires in every meter of meters/aggregates (responses.py).
METER_KEYS: Final = (
    "instant_power",
    "last_communication_time",
    "frequency",
    "energy_exported",
    "energy_imported",
    "instant_total_current",
    "instant_average_voltage",
)
OLD_FIRMWARE_EXTRA_METERS: Final = ("busway", "frequency", "generator")  # 2018-2019 aggregates
NOMINAL_VOLTS: Final = 240.0
NOMINAL_HZ: Final = 60.0
FULL_PACK_WH: Final = 14_000.0  # one Powerwall 2: 13.5 kWh usable

# Bodies the real gateway sends (captured in issue threads; see LIBRARIES.md §1 and addendum).
BAD_CREDENTIALS: Final = "bad credentials"
LOGIN_ERROR: Final = "Login Error"
NO_RIGHTS: Final = {
    "code": 403,
    "error": "Unable to GET to resource",
    "message": "User does not have adequate access rights",
}
RATE_LIMITED: Final = {
    "code": 429,
    "error": "Api Limit reached for this endpoint",
    "message": "API Limit Reached",
}
NOT_FOUND_TEXT: Final = "404 page not found\n"  # the gateway is a Go server: net/http's 404 body
NO_CACHE: Final = {"Cache-Control": "no-cache, no-store"}

_BUILTIN_LOGIN: Final = {
    "email": "",
    "firstname": "Tesla",
    "lastname": "Energy",
    "roles": ["Home_Owner"],
    "token": "",
    "provider": "Basic",
    "loginTime": "",
}
_BUILTIN_STATUS: Final = {
    "din": "1232100-00-E--TG000000000000",
    "start_time": "2024-01-01 00:00:00 +0000",
    "up_time_seconds": "100h0m0.0s",
    "is_new": False,
    "version": "24.44.0 510adfd5",
    "git_hash": "510adfd5",
    "commission_count": 1,
    "device_type": "teg",
    "sync_type": "v2.1",
    "leader": "",
    "followers": None,
    "cellular_disabled": False,
}
_BUILTIN_SITE_INFO: Final = {
    "max_system_energy_kWh": 13.5,
    "max_system_power_kW": 5,
    "site_name": "loadshed simulated house",
    "timezone": "UTC",
    "nominal_system_energy_kWh": 13.5,
    "nominal_system_power_kW": 5,
}
_BUILTIN_SITEMASTER: Final = {
    "status": "StatusUp",
    "running": True,
    "connected_to_tesla": True,
    "power_supply_mode": False,
    "can_reboot": "Yes",
}
_STOPPED_SITEMASTER: Final = {
    "status": "StatusDown",
    "running": False,
    "connected_to_tesla": True,
    "power_supply_mode": False,
    "can_reboot": "",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class _Session:
    """One issued AuthCookie token: when it was issued and how many reads it served."""

    issued_at: float
    calls: int = 0


class PowerwallSim(SimDevice):
    """A Tesla Backup Gateway's local API on loopback HTTPS, with run-time fault switches."""

    def __init__(
        self,
        site: SiteState,
        password: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        responses_dir: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(host, port)
        self.site = site
        self._password = password
        self.responses_dir = responses_dir
        self._clock = clock
        self.ssl_context, self.cert_pem = self_signed_context(self.host)
        # Powerwall-specific switches: see the module docstring.
        self.expire_after_calls: int | None = None  # a session serves this many reads, then 401
        self.expire_after_s: float | None = None  # a session lives this long (by `clock`)
        self.rate_limit_login = False  # login answers 429
        self.rate_limit_reads = False  # every other request answers 429
        self.sitemaster_stopped = False  # grid_status, soe, aggregates, system_status: 502
        self.unavailable = False  # every request answers 503
        self.restricted = False  # only RESTRICTED_PATHS answer; the rest 404
        self.old_firmware_aggregates = False
        self.bad_auth_error = BAD_CREDENTIALS  # the "error" of a rejected login's 401
        # Canned answers, path (as in `requests`) -> (HTTP status, JSON body or None for an
        # empty body); served after faults and the cookie check, before anything else.
        self.replies: dict[str, tuple[int, object]] = {}
        # Paths that never answer (the connection stays open), or whose connection is reset.
        self.hang_paths: set[str] = set()
        self.reset_paths: set[str] = set()
        # Counters.
        self.logins = 0  # successful logins (tokens issued)
        self.failed_logins = 0  # logins answered 401
        self.requests: collections.Counter[str] = collections.Counter()  # arrivals per path
        self._sessions: dict[str, _Session] = {}
        self._files: dict[str, Any] = {}
        self._routes: dict[str, Handler] = {
            GRID_STATUS_PATH: self._grid_status,
            SOE_PATH: self._soe,
            AGGREGATES_PATH: self._aggregates,
            STATUS_PATH: self._static,  # the one endpoint served without a cookie
            SITEMASTER_PATH: self._sitemaster,
            SYSTEM_STATUS_PATH: self._system_status,
            SITE_INFO_PATH: self._static,
            "operation": self._static,
            "powerwalls": self._static,
            "meters/site": self._static,
        }

    def __repr__(self) -> str:
        return f"PowerwallSim({self.address}, fault={self.fault.value})"

    @property
    def endpoint(self) -> str:
        """What a client is configured with: host:port (PWIPNAME)."""
        host = f"[{self.host}]" if ipaddress.ip_address(self.host).version == 6 else self.host
        return f"{host}:{self.port}"

    def expire_sessions(self) -> None:
        """Invalidate every issued token: the next read with one gets 401 until a new login."""
        self._sessions.clear()

    async def _listen(self, host: str, port: int) -> Closer:
        closer, self.port = await serve_https(self._handle, host, port, self.ssl_context)
        _LOG.debug("Simulated Powerwall listening on https://%s", self.endpoint)
        return closer

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path.removeprefix("/api/")
        self.requests[path] += 1
        await self.obey_fault()
        if path in self.hang_paths:
            await asyncio.Event().wait()  # cancelled when the client or the server goes
        if path in self.reset_paths and request.transport is not None:
            request.transport.abort()  # RST: the client sees "connection reset"
            return web.Response(status=500)
        if self.restricted and path not in RESTRICTED_PATHS:
            return _not_found()
        if self.unavailable:
            return web.Response(status=503, text="Service Unavailable", headers=NO_CACHE)
        if path == LOGIN_PATH:
            return await self._login(request) if request.method == "POST" else _not_found()
        handler = self._routes.get(path)
        canned = self.replies.get(path)
        if request.method != "GET" or (handler is None and canned is None):
            return _not_found()
        if path == STATUS_PATH and canned is None:
            return await self._static(request)
        if self.rate_limit_reads:
            return web.json_response(RATE_LIMITED, status=429)
        denied = self._check_session(request)
        if denied is not None:
            return denied
        if canned is not None:
            status, body = canned
            if body is None:
                return web.Response(status=status, headers=NO_CACHE)
            return web.json_response(body, status=status)
        if self.sitemaster_stopped and path in STOPPED_PATHS:
            return web.Response(status=502, headers=NO_CACHE)
        return await handler(request) if handler is not None else _not_found()

    def _check_session(self, request: web.Request) -> web.Response | None:
        """Return the refusal for a missing or stale AuthCookie, or None and count the call."""
        token = request.cookies.get(AUTH_COOKIE)
        if token is None:
            return web.json_response(NO_RIGHTS, status=403)
        session = self._sessions.get(token)
        if session is not None and self._has_expired(session):
            del self._sessions[token]
            session = None
        if session is None:
            body = {"code": 401, "error": "Unable to GET to resource", "message": LOGIN_ERROR}
            return web.json_response(body, status=401)
        session.calls += 1
        return None

    def _has_expired(self, session: _Session) -> bool:
        if self.expire_after_calls is not None and session.calls >= self.expire_after_calls:
            return True
        return self.expire_after_s is not None and (
            self._clock() - session.issued_at >= self.expire_after_s
        )

    async def _login(self, request: web.Request) -> web.Response:
        if self.rate_limit_login:
            return web.json_response(RATE_LIMITED, status=429)
        try:
            payload = await request.json()
            password = payload["password"]
        except (ValueError, KeyError, TypeError):
            return web.json_response({"code": 400, "error": "bad request"}, status=400)
        good = isinstance(password, str) and hmac.compare_digest(
            password.encode(), self._password.encode()
        )
        if self.fault is Fault.BAD_AUTH or not good:
            self.failed_logins += 1
            body = {"code": 401, "error": self.bad_auth_error, "message": LOGIN_ERROR}
            return web.json_response(body, status=401)
        token = secrets.token_urlsafe(32)
        self._sessions[token] = _Session(self._clock())
        self.logins += 1
        reply = self._fixture(LOGIN_PATH, _BUILTIN_LOGIN)
        email = payload.get("email")
        reply.update(token=token, loginTime=_now_iso())
        reply["email"] = email if isinstance(email, str) else ""
        record = base64.urlsafe_b64encode(json.dumps(reply).encode()).decode().rstrip("=")
        response = web.json_response(reply)
        response.set_cookie(AUTH_COOKIE, token, path="/")
        response.set_cookie(USER_RECORD_COOKIE, record, path="/")
        return response

    async def _grid_status(self, request: web.Request) -> web.Response:
        doc = self._fixture(GRID_STATUS_PATH, {"grid_services_active": False})
        doc["grid_status"] = self.site.grid_status
        return web.json_response(doc)

    async def _soe(self, request: web.Request) -> web.Response:
        doc = self._fixture(SOE_PATH, {})
        doc["percentage"] = self.site.battery_pct
        return web.json_response(doc)

    async def _aggregates(self, request: web.Request) -> web.Response:
        doc = self._fixture(AGGREGATES_PATH, {})
        powers = {
            "site": self.site.site_w,
            "battery": self.site.battery_w,
            "load": self.site.load_w,
            "solar": self.site.solar_w,
        }
        for name, watts in powers.items():
            meter = doc.get(name)
            doc[name] = _meter(watts, meter if isinstance(meter, dict) else None)
        if self.old_firmware_aggregates:
            for name in OLD_FIRMWARE_EXTRA_METERS:
                doc.setdefault(name, _meter(0.0, None))
        return web.json_response(doc)

    async def _sitemaster(self, request: web.Request) -> web.Response:
        if self.sitemaster_stopped:
            stopped = self._file(STOPPED_SITEMASTER_FILE)
            return web.json_response(stopped if stopped is not None else _STOPPED_SITEMASTER)
        return web.json_response(self._fixture(SITEMASTER_PATH, _BUILTIN_SITEMASTER))

    async def _system_status(self, request: web.Request) -> web.Response:
        captured = self._file(FIXTURE_FILES[SYSTEM_STATUS_PATH])
        if captured is not None:
            return web.json_response(captured)
        remaining = round(FULL_PACK_WH * self.site.battery_pct / 100)
        block = {
            "PackagePartNumber": "3012170-05-B",
            "PackageSerialNumber": "TG000000000001",
            "energy_charged": 0,
            "energy_discharged": 0,
            "nominal_energy_remaining": remaining,
            "nominal_full_pack_energy": FULL_PACK_WH,
            "wobble_detected": False,
            "p_out": self.site.battery_w,
            "q_out": 0,
            "v_out": NOMINAL_VOLTS,
            "f_out": NOMINAL_HZ,
            "i_out": self.site.battery_w / NOMINAL_VOLTS,
            "pinv_grid_state": "Grid_Compliant",
            "disabled_reasons": [],
        }
        return web.json_response(
            {
                "nominal_full_pack_energy": FULL_PACK_WH,
                "nominal_energy_remaining": remaining,
                "system_island_state": self.site.grid_status,
                "available_blocks": 1,
                "battery_blocks": [block],
            }
        )

    async def _static(self, request: web.Request) -> web.Response:
        path = request.path.removeprefix("/api/")
        builtin = {STATUS_PATH: _BUILTIN_STATUS, SITE_INFO_PATH: _BUILTIN_SITE_INFO}.get(path)
        captured = self._file(FIXTURE_FILES[path])
        if captured is not None:
            return web.json_response(captured)
        if builtin is None:
            return _not_found()
        return web.json_response(builtin)

    def _fixture(self, path: str, builtin: dict[str, Any]) -> dict[str, Any]:
        """Return a fresh copy of the captured reply for path, or of builtin without one."""
        captured = self._file(FIXTURE_FILES[path])
        return captured if isinstance(captured, dict) else copy.deepcopy(builtin)

    def _file(self, name: str) -> Any:
        """Return the parsed fixture file name from responses_dir, or None."""
        if self.responses_dir is None:
            return None
        if name not in self._files:
            path = self.responses_dir / name
            self._files[name] = (
                json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
            )
        return copy.deepcopy(self._files[name])


async def serve_https(
    handle: Handler, host: str, port: int, ssl_context: ssl.SSLContext
) -> tuple[RunnerCloser, int]:
    """Serve every path of host:port over HTTPS with handle; the closer and the bound port."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(
        app, handler_cancellation=True, access_log=None, shutdown_timeout=SHUTDOWN_GRACE_S
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return RunnerCloser(runner), runner.addresses[0][1]


class RunnerCloser:
    """Stop an aiohttp runner: the listener, then every connection (a gateway switched off)."""

    def __init__(self, runner: web.AppRunner) -> None:
        self.runner = runner

    async def aclose(self) -> None:
        await self.runner.cleanup()


def _meter(watts: float, captured: dict[str, Any] | None) -> dict[str, Any]:
    """Return one meter of meters/aggregates at watts: the captured meter's keys, or ours."""
    amps = abs(watts) / NOMINAL_VOLTS
    ours: dict[str, Any] = {
        "last_communication_time": _now_iso(),
        "instant_power": watts,
        "instant_reactive_power": 0.0,
        "instant_apparent_power": abs(watts),
        "frequency": NOMINAL_HZ,
        "energy_exported": 0.0,
        "energy_imported": 0.0,
        "instant_average_voltage": NOMINAL_VOLTS,
        "instant_average_current": amps,
        "instant_total_current": amps,
        "timeout": 1_500_000_000,
    }
    if captured is None:
        return ours
    meter = dict(captured)
    for key in METER_KEYS:  # what the library requires, should a capture lack it
        meter.setdefault(key, ours[key])
    meter["instant_power"] = watts
    return meter


def _not_found() -> web.Response:
    return web.Response(status=404, text=NOT_FOUND_TEXT, headers=NO_CACHE)


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).astimezone().isoformat()


def self_signed_context(host: str) -> tuple[ssl.SSLContext, bytes]:
    """Make a key and a self-signed certificate for host; return a server context and the PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "loadshed simulated Powerwall")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CERT_VALID_DAYS))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # ssl loads a certificate chain from files only: a private directory (0700, mkdtemp),
    # removed as soon as the context holds them.
    with tempfile.TemporaryDirectory(prefix="loadshed-pw-") as tmp:
        cert_path, key_path = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
        cert_path.write_bytes(cert_pem)
        key_path.touch(mode=0o600)
        key_path.write_bytes(key_pem)
        context.load_cert_chain(cert_path, key_path)
    return context, cert_pem
