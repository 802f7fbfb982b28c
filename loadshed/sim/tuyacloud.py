"""A loopback stand-in for the Tuya cloud's OpenAPI (iot.tuya.com), over HTTPS.

Owns an aiohttp HTTPS server on 127.0.0.x, a certificate authority made at construction (its
PEM written to `ca_file`, for `REQUESTS_CA_BUNDLE` of the one process that talks to it) and a
server certificate it signed for the loopback address. It serves the devices of one Smart Life
account — ids, names, local keys — and can give a device a new local key, as pairing a plug
again in the app does. It imports nothing from tinytuya: the flow and the signature are written
here from Tuya's documentation and LIBRARIES.md §3, so the real client is checked against an
independent peer.

Requests it answers (all GET; what `tinytuya.Cloud.getdevices()` sends with an apiDeviceID):

- `/v1.0/token?grant_type=1` → an access token (`{"success": true, "t", "result":
  {"access_token", "expire_time", "refresh_token", "uid"}}`);
- `/v1.0/devices/{id}` → the device's record, whose `uid` names the account;
- `/v1.0/users/{uid}/devices` → every device of the account, local keys included;
- `/v1.0/devices/factory-infos?device_ids=a,b` → `id`, `mac`, `uuid`, `sn` of each.

Every request is checked as the real cloud checks it, and refused with the real cloud's code:
`client_id` must be the project's Access ID (2009 "clientId is invalid"); `t` within 15 minutes
of now (1013 "request time is invalid"); `sign_method` HMAC-SHA256 and `sign` =
HMAC-SHA256(secret, client_id [+ access_token] + t + "GET\\n" + SHA256(body) + "\\n" +
signed headers + "\\n" + path?query), upper-case hex (1004 "sign invalid"); `access_token` one
it issued and did not expire (1010 "token invalid", which makes tinytuya fetch a new one); the
device and the user in the account (1106 "permission deny"); any other path 1108 "uri path
invalid". Error replies are HTTP 200 with `{"code", "msg", "success": false, "t"}`, as the real
cloud sends them.

Faults (see `loadshed.sim.base`): DOWN refuses connections; HUNG accepts and never answers;
SLOW answers after `slow_s`. It must not bind outside 127.0.0.0/8 or log a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import ipaddress
import secrets
import shutil
import ssl
import tempfile
import time
import weakref
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from loadshed.sim.base import Closer, SimDevice

if TYPE_CHECKING:
    from loadshed.sim.house import SimHouse

CA_FILE: Final = "tuya-cloud-ca.pem"
CERT_VALID_DAYS: Final = 30
TOKEN_LIFE_S: Final = 7200  # what the real cloud grants
CLOCK_SKEW_S: Final = 15 * 60  # the real cloud refuses a `t` further from its clock
HTTP_SHUTDOWN_S: Final = 0.1  # a hung handler is cancelled this soon when the sim stops
EMPTY_SHA256: Final = hashlib.sha256(b"").hexdigest()

SIGN_INVALID: Final = (1004, "sign invalid")
TOKEN_INVALID: Final = (1010, "token invalid")
TIME_INVALID: Final = (1013, "request time is invalid")
PERMISSION_DENY: Final = (1106, "permission deny")
PATH_INVALID: Final = (1108, "uri path invalid")
CLIENT_INVALID: Final = (2009, "clientId is invalid")

PRODUCTS: Final = {"cz": "Smart Plug", "pc": "Power Strip", "wsdcg": "Temperature Sensor"}

# The shape of one device record of /v1.0/users/{uid}/devices, after the real reply kept in
# tests/fixtures/tuya/cloud_v1.0_users_devices_record_cz.json (a "cz" socket).
RECORD_TEMPLATE: Final[dict[str, Any]] = {
    "active_time": 1623229189,
    "biz_type": 18,
    "category": "cz",
    "create_time": 1560491945,
    "icon": "smart/product_icon/cz.png",
    "lat": "30.30",
    "lon": "120.06",
    "model": "",
    "online": True,
    "owner_id": "34794909",
    "product_id": "yfemiswbgjhddhcf",
    "product_name": "Switch Product",
    "status": [{"code": "switch", "value": True}, {"code": "countdown_1", "value": 0}],
    "sub": False,
    "time_zone": "+00:00",
    "update_time": 1625101929,
}


class TuyaCloudSim(SimDevice):
    """The Tuya cloud of one project linked to one app account, on 127.0.0.x over HTTPS.

    Counters for tests: `requests` (each request's path and query, in order), `refused`
    (replies refused, by the reason's code), `tokens_issued`.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        api_secret: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        ca_dir: Path | None = None,
    ) -> None:
        super().__init__(host, port)
        self.api_key = api_key or secrets.token_hex(10)  # an Access ID: 20 characters
        self.api_secret = api_secret or secrets.token_hex(16)  # an Access Secret: 32
        self.uid = "az" + secrets.token_hex(9)
        self.devices: dict[str, dict[str, Any]] = {}  # by id, as the cloud keeps them
        self.requests: list[str] = []
        self.refused: Counter[int] = Counter()
        self.tokens_issued = 0
        self._tokens: dict[str, float] = {}  # access token → monotonic expiry
        self._waiting: set[asyncio.Task[Any]] = set()
        self._dir = ca_dir if ca_dir is not None else Path(tempfile.mkdtemp(prefix="tuya-cloud-"))
        if ca_dir is None:  # kept while DOWN: the client's REQUESTS_CA_BUNDLE names it
            weakref.finalize(self, shutil.rmtree, self._dir, True)
        self.ssl_context, ca_pem = _tls(host)
        self.ca_file = self._dir / CA_FILE
        self.ca_file.write_bytes(ca_pem)

    # -- the account -------------------------------------------------------------------------

    def add_device(
        self,
        dev_id: str,
        name: str,
        local_key: str,
        *,
        category: str = "cz",
        product_name: str = "Switch Product",
        sub: bool = False,
    ) -> None:
        """Put a device in the account (as pairing it in the Smart Life app does)."""
        record = {
            **RECORD_TEMPLATE,
            "id": dev_id,
            "name": name,
            "local_key": local_key,
            "uid": self.uid,
            "ip": "203.0.113.7",  # the house's public address, as the cloud sees it
            "uuid": secrets.token_hex(8),
            "category": category,
            "product_name": product_name,
            "sub": sub,
        }
        self.devices[dev_id] = record

    def set_key(self, dev_id: str, local_key: str) -> None:
        """Give a device a new local key (it was paired again in the app)."""
        self.devices[dev_id]["local_key"] = local_key

    def expire_tokens(self) -> None:
        """Forget every access token issued: the next request is answered "token invalid"."""
        self._tokens.clear()

    @property
    def urlhost(self) -> str:
        """What replaces the region's API host in the client: "127.0.0.1:PORT"."""
        return self.address

    # -- server ------------------------------------------------------------------------------

    async def _listen(self, host: str, port: int) -> Closer:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=HTTP_SHUTDOWN_S)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port, ssl_context=self.ssl_context).start()
        except BaseException:
            await runner.cleanup()
            raise
        self.port = int(runner.addresses[0][1])
        return _Closer(runner, self._waiting)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()
        if task is not None:
            self._waiting.add(task)
        try:
            await self.obey_fault()
        finally:
            if task is not None:
                self._waiting.discard(task)
        self.requests.append(request.raw_path)
        body = await request.read()
        refusal = self._check(request, body)
        if refusal is not None:
            self.refused[refusal[0]] += 1
            return _error(refusal)
        return web.json_response(self._answer(request))

    def _check(self, request: web.Request, body: bytes) -> tuple[int, str] | None:
        """Refuse a request the real cloud would refuse; None when it may be answered."""
        headers = request.headers
        if headers.get("client_id") != self.api_key:
            return CLIENT_INVALID
        try:
            t_ms = int(headers.get("t", ""))
        except ValueError:
            return TIME_INVALID
        if abs(t_ms / 1000 - time.time()) > CLOCK_SKEW_S:
            return TIME_INVALID
        is_token = request.path == "/v1.0/token"
        token = "" if is_token else headers.get("access_token", "")
        expected = sign(self.api_secret, self.api_key, token, str(t_ms), request, body)
        if headers.get("sign_method") != "HMAC-SHA256" or not hmac.compare_digest(
            headers.get("sign", ""), expected
        ):
            return SIGN_INVALID
        if not is_token and self._tokens.get(token, -1.0) < time.monotonic():
            return TOKEN_INVALID
        return None

    def _answer(self, request: web.Request) -> dict[str, Any]:
        parts = request.path.strip("/").split("/")
        now_ms = int(time.time() * 1000)
        if parts == ["v1.0", "token"] and request.query.get("grant_type") == "1":
            token = secrets.token_hex(16)
            self._tokens[token] = time.monotonic() + TOKEN_LIFE_S
            self.tokens_issued += 1
            result: Any = {
                "access_token": token,
                "expire_time": TOKEN_LIFE_S,
                "refresh_token": secrets.token_hex(16),
                "uid": "bay" + secrets.token_hex(8),  # the project's own user, not the app's
            }
        elif parts[:2] == ["v1.0", "devices"] and parts[2:] == ["factory-infos"]:
            wanted = request.query.get("device_ids", "").split(",")
            result = [
                {"id": i, "mac": _mac(i), "uuid": self.devices[i]["uuid"], "sn": ""}
                for i in wanted
                if i in self.devices
            ]
        elif parts[:2] == ["v1.0", "devices"] and len(parts) == 3:
            record = self.devices.get(parts[2])
            if record is None:
                return _refusal(PERMISSION_DENY, now_ms, self.refused)
            result = dict(record)
        elif parts[:2] == ["v1.0", "users"] and parts[3:] == ["devices"] and len(parts) == 4:
            if parts[2] != self.uid:
                return _refusal(PERMISSION_DENY, now_ms, self.refused)
            result = [dict(record) for record in self.devices.values()]
        else:
            return _refusal(PATH_INVALID, now_ms, self.refused)
        return {"result": result, "success": True, "t": now_ms, "tid": secrets.token_hex(16)}

    def __repr__(self) -> str:
        return f"TuyaCloudSim({len(self.devices)} devices at {self.address})"


def sign(secret: str, client_id: str, token: str, t: str, request: web.Request, body: bytes) -> str:
    """The signature Tuya's OpenAPI expects for request (its "new" algorithm, 2021)."""
    signed_names = request.headers.get("Signature-Headers", "")
    signed = "".join(
        f"{name}:{request.headers[name]}\n"
        for name in signed_names.split(":")
        if name and name in request.headers
    )
    string_to_sign = "\n".join(
        (request.method, hashlib.sha256(body).hexdigest(), signed, request.raw_path)
    )
    message = client_id + token + t + string_to_sign
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest().upper()


def _error(refusal: tuple[int, str]) -> web.Response:
    code, msg = refusal
    body = {"code": code, "msg": msg, "success": False, "t": int(time.time() * 1000)}
    return web.json_response(body)


def _refusal(refusal: tuple[int, str], now_ms: int, counter: Counter[int]) -> dict[str, Any]:
    counter[refusal[0]] += 1
    return {"code": refusal[0], "msg": refusal[1], "success": False, "t": now_ms}


def _mac(dev_id: str) -> str:
    digest = hashlib.sha256(dev_id.encode()).digest()
    return ":".join(f"{b:02x}" for b in (b"\x02" + digest[:5]))


class _Closer:
    def __init__(self, runner: web.AppRunner, waiting: set[asyncio.Task[Any]]) -> None:
        self._runner = runner
        self._waiting = waiting

    async def aclose(self) -> None:
        for task in list(self._waiting):
            task.cancel()  # a HUNG handler waits forever otherwise
        with contextlib.suppress(Exception):
            await self._runner.cleanup()


def _tls(host: str) -> tuple[ssl.SSLContext, bytes]:
    """Make a CA and a server certificate it signs for host; return the server context and
    the CA's PEM (what the client trusts)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "loadshed simulated Tuya CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CERT_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "openapi.tuya.loopback")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CERT_VALID_DAYS))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # ssl loads a certificate chain from files only: a private directory, removed at once.
    with tempfile.TemporaryDirectory(prefix="loadshed-tuya-") as tmp:
        cert_path, key_path = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.touch(mode=0o600)
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        context.load_cert_chain(cert_path, key_path)
    return context, ca_cert.public_bytes(serialization.Encoding.PEM)


# --- the simulated house's account -------------------------------------------------------------


def for_house(house: SimHouse, *, extra: Iterable[tuple[str, str]] = ()) -> TuyaCloudSim:
    """A cloud holding the house's Tuya plugs (their ids, names and local keys), plus `extra`
    (name, category) devices of the same account that its config.py does not list."""
    cloud = TuyaCloudSim()
    for spec in house.tuya:
        cloud.add_device(spec.dev_id, spec.name, spec.key)
    for name, category in extra:
        cloud.add_device(
            "bf" + secrets.token_hex(9),
            name,
            secrets.token_hex(8),
            category=category,
            product_name=PRODUCTS.get(category, "Smart Device"),
        )
    return cloud


def pair_again(house: SimHouse, cloud: TuyaCloudSim, name: str) -> str:
    """Pair the house's Tuya plug `name` again in the app: the plug and the cloud get a new
    local key, and the old one (still in the house's config.py) stops working. Returns it."""
    spec = next(t for t in house.tuya if t.name == name)
    key = secrets.token_hex(8)
    spec.sim.set_key(key)
    cloud.set_key(spec.dev_id, key)
    return key
