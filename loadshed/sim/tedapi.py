"""The simulated Powerwall gateway's TEDAPI: what pypowerwall reads, on loopback HTTPS.

Owns an aiohttp HTTPS server on 127.0.0.x with a self-signed certificate (made by the legacy
simulator's helper, loadshed.sim.powerwall). Requests are parsed, and replies built, with
pypowerwall's own generated protobuf modules, so the real pypowerwall client runs end to end:

- `GET /` answers 404, as a Powerwall 3 does (it has no web portal; pypowerwall only probes it);
- `GET /tedapi/din` (HTTP Basic `Tesla_Energy_Device` / the gateway password, or a v1r Bearer
  token): the gateway's DIN as text;
- `POST /tedapi/v1` (HTTP Basic): a `tedapi.Message`. A query (`payload.send`) is answered with
  its JSON in `payload.recv.text`: the status query pypowerwall's `get_status()` sends
  (DeviceControllerQuery), made from the `SiteState` at each request; `config.send` for
  config.json gets `config.recv.file.text`; `firmware.request` gets `firmware.system`;
- `POST /api/login/Basic` (the customer password: the gateway password's last 5 characters, as
  pypowerwall derives it) returns a token, for v1r and pypowerwall's local-API merge;
- `POST /tedapi/v1r`: a `RoutableMessage` signed with an RSA key (PKCS#1 v1.5, SHA-512, over
  pypowerwall's TLV). Keys are registered with `register_key`; an unknown key gets the
  `UNKNOWN_KEY_ID` fault, a registered but unverified one (`key_verified = False`) the gateway's
  "authorization not verified" text. The inner envelope is answered as on `/tedapi/v1`.

A wrong password gets 401 with an empty body. Switches (plain attributes) on top of the
`SimDevice` faults (DOWN, HUNG, SLOW, BAD_AUTH = every request 401): `garbage` (200 with bytes
that are neither protobuf nor text), `rate_limited` (429), `status_text` (the exact JSON text
the status query answers, for shapes the SiteState cannot make: a missing grid path, an
unknown value, broken JSON). Counters: `requests` ("GET /tedapi/din", "POST /tedapi/v1" ...),
`queries` ("status", "config", "firmware", "unknown"), `failed_logins` (requests refused for a
wrong password, key or token).

Must not: bind anything outside 127.0.0.0/8, log or echo the password.
"""

from __future__ import annotations

import base64
import binascii
import collections
import datetime as dt
import hmac
import ipaddress
import json
import logging
import secrets
import struct
import time
from collections.abc import Callable
from typing import Any, Final

from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from pypowerwall.tedapi.protobuf.V2024_06 import (  # type: ignore[import-untyped]
    tedapi_combined_pb2,
    tedapi_pb2,
)
from pypowerwall.tedapi.queries import QueryRole, get_query  # type: ignore[import-untyped]

from loadshed.sim.base import Closer, Fault, SimDevice, SiteState
from loadshed.sim.powerwall import (
    FULL_PACK_WH,
    NOMINAL_HZ,
    NOMINAL_VOLTS,
    NOT_FOUND_TEXT,
    self_signed_context,
    serve_https,
)

_LOG = logging.getLogger(__name__)

BASIC_USER: Final = "Tesla_Energy_Device"  # the HTTP Basic user of /tedapi/v1 (QR sticker login)
CUSTOMER_PASSWORD_CHARS: Final = 5  # the customer password is the gateway password's tail
DEFAULT_DIN: Final = "1707000-11-J--TG0000000000LS"  # a Powerwall 3 leader's DIN shape
FIRMWARE_VERSION: Final = "25.10.1 7d5ee4bc"
SIGNATURE_TYPE_RSA: Final = 7  # pypowerwall's TLV: signature type and domain (ENERGY_DEVICE)
TLV_END: Final = 0xFF
SIGNATURE_SLACK_S: Final = 60  # a signature may expire at most this far in the future

CONNECTED_STATUS: Final = "SystemGridConnected"  # the only SiteState status that is on grid
GRID_CONNECTED: Final = "ISLAND_GridConnected_Connected"
GRID_ISLANDED: Final = "ISLAND_GridConnected_Island"  # what islanded gateways report
CONNECTED_ALERT: Final = "SystemConnectedToGrid"  # control.alerts.active while on grid
NOT_VERIFIED_TEXT: Final = b"v1r: client authorization not verified"

# 200 with bytes no protobuf parser accepts (a varint that never ends) and no UTF-8 either.
GARBAGE: Final = b"\xff" * 16
OCTETS: Final = "application/octet-stream"

STATUS_QUERIES: Final = frozenset(
    get_query(role).text
    for role in (QueryRole.DEVICE_CONTROLLER_BASIC, QueryRole.DEVICE_CONTROLLER_FULL)
)


class TedapiSim(SimDevice):
    """A Tesla gateway's TEDAPI (Wi-Fi `/tedapi/v1` and LAN `/tedapi/v1r`) on loopback HTTPS."""

    def __init__(
        self,
        site: SiteState,
        gateway_password: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        din: str = DEFAULT_DIN,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(host, port)
        self.site = site
        self._password = gateway_password
        self.din = din
        self._clock = clock  # wall clock: v1r signatures carry an expiry in Unix time
        self.ssl_context, self.cert_pem = self_signed_context(self.host)
        # Switches: see the module docstring.
        self.garbage = False
        self.rate_limited = False
        self.status_text: str | None = None
        self.key_verified = True
        self._keys: set[bytes] = set()  # registered v1r public keys, DER PKCS#1
        self._tokens: set[str] = set()  # Bearer tokens issued by /api/login/Basic
        # Counters.
        self.requests: collections.Counter[str] = collections.Counter()
        self.queries: collections.Counter[str] = collections.Counter()
        self.failed_logins = 0

    def __repr__(self) -> str:
        return f"TedapiSim({self.address}, fault={self.fault.value})"

    @property
    def endpoint(self) -> str:
        """What a client is configured with: host:port (pypowerwall builds https://{host}/...)."""
        host = f"[{self.host}]" if ipaddress.ip_address(self.host).version == 6 else self.host
        return f"{host}:{self.port}"

    def register_key(self, public_key: rsa.RSAPublicKey) -> None:
        """Accept v1r requests signed by this key (what `pypowerwall register` arranges)."""
        self._keys.add(
            public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
        )

    def status_doc(self) -> dict[str, Any]:
        """Return the status query's answer for the site as it is now."""
        site = self.site
        connected = site.grid_status == CONNECTED_STATUS
        remaining = round(FULL_PACK_WH * site.battery_pct / 100)
        meters = {
            "BATTERY": site.battery_w,
            "SITE": site.site_w,
            "LOAD": site.load_w,
            "SOLAR": site.solar_w,
            "SOLAR_RGM": 0,
            "GENERATOR": 0,
            "CONDUCTOR": 0,
        }
        volts = NOMINAL_VOLTS / 2
        return {
            "control": {
                "alerts": {"active": [CONNECTED_ALERT] if connected else []},
                "batteryBlocks": [{"din": "1707000-11-J--TG0000000000PW", "disableReasons": []}],
                "islanding": {
                    "contactorClosed": connected,
                    "customerIslandMode": "BACKUP",
                    "gridOK": connected,
                    "microGridOK": True,
                },
                "meterAggregates": [
                    {"location": name, "realPowerW": watts} for name, watts in meters.items()
                ],
                "pvInverters": [],
                "siteShutdown": {"isShutDown": False, "reasons": []},
                "systemStatus": {
                    "nominalEnergyRemainingWh": remaining,
                    "nominalFullPackEnergyWh": FULL_PACK_WH,
                },
            },
            "esCan": {
                "bus": {
                    "ISLANDER": {
                        "ISLAND_AcMeasurements": {
                            "ISLAND_FreqL1_Main": NOMINAL_HZ if connected else 0,
                            "ISLAND_VL1N_Main": volts if connected else 0,
                            "ISLAND_VL2N_Main": volts if connected else 0,
                            "ISLAND_VL1N_Load": volts,
                            "ISLAND_VL2N_Load": volts,
                            "isMIA": False,
                        },
                        "ISLAND_GridConnection": {
                            "ISLAND_GridConnected": GRID_CONNECTED if connected else GRID_ISLANDED,
                            "isComplete": True,
                        },
                    },
                },
            },
            "neurio": {"isDetectingWiredMeters": False, "pairings": [], "readings": []},
            "pw3Can": {"firmwareUpdate": {"isUpdating": False}},
            "system": {
                "time": dt.datetime.now(dt.UTC).isoformat(),
                "sitemanagerStatus": {"isRunning": True},
            },
        }

    def config_doc(self) -> dict[str, Any]:
        """Return config.json as the gateway stores it (the parts pypowerwall reads)."""
        return {
            "vin": self.din,
            "battery_blocks": [],
            "meters": [],
            "site_info": {
                "site_name": "loadshed simulated house",
                "timezone": "UTC",
                "nominal_system_energy_ac": FULL_PACK_WH / 1000,
                "nominal_system_power_ac": 11.5,
                "backup_reserve_percent": 20,
            },
        }

    async def _listen(self, host: str, port: int) -> Closer:
        closer, self.port = await serve_https(self._handle, host, port, self.ssl_context)
        _LOG.debug("Simulated TEDAPI gateway listening on https://%s", self.endpoint)
        return closer

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests[f"{request.method} {request.path}"] += 1
        await self.obey_fault()
        if self.fault is Fault.BAD_AUTH:
            return self._refused()
        if self.rate_limited:
            return web.Response(status=429, text="Too Many Requests")
        route = (request.method, request.path)
        if route == ("GET", "/tedapi/din"):
            if not (self._basic_ok(request) or self._bearer_ok(request)):
                return self._refused()
            return self._octets(self.din.encode())
        if route == ("POST", "/tedapi/v1"):
            if not self._basic_ok(request):
                return self._refused()
            return await self._v1(request)
        if route == ("POST", "/api/login/Basic"):
            return await self._login(request)
        if route == ("POST", "/tedapi/v1r"):
            return await self._v1r(request)
        return web.Response(status=404, text=NOT_FOUND_TEXT)

    def _refused(self) -> web.Response:
        self.failed_logins += 1
        return web.Response(status=401)

    def _octets(self, body: bytes) -> web.Response:
        return web.Response(body=GARBAGE if self.garbage else body, content_type=OCTETS)

    def _basic_ok(self, request: web.Request) -> bool:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return user == BASIC_USER and hmac.compare_digest(
            password.encode(), self._password.encode()
        )

    def _bearer_ok(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and token in self._tokens

    async def _v1(self, request: web.Request) -> web.Response:
        message = tedapi_pb2.Message()
        try:
            message.ParseFromString(await request.read())
        except DecodeError:
            return web.Response(status=400)
        reply = tedapi_pb2.Message()
        reply.message.CopyFrom(self._answer(message.message))
        reply.tail.value = 1
        return self._octets(reply.SerializeToString())

    def _answer(self, envelope: Any) -> Any:
        """Return the tedapi.MessageEnvelope answering envelope (a query, config or firmware)."""
        reply = tedapi_pb2.MessageEnvelope()
        reply.deliveryChannel = 1
        reply.sender.din = self.din
        reply.recipient.local = 1
        if envelope.HasField("config"):
            self.queries["config"] += 1
            reply.config.recv.file.name = envelope.config.send.file
            reply.config.recv.file.text = json.dumps(self.config_doc())
        elif envelope.HasField("firmware"):
            self.queries["firmware"] += 1
            system = reply.firmware.system
            part_number, _, serial_number = self.din.partition("--")
            system.gateway.partNumber = part_number
            system.gateway.serialNumber = serial_number
            system.din = self.din
            system.version.text = FIRMWARE_VERSION
            system.version.githash = FIRMWARE_VERSION.split()[-1].encode()
        elif envelope.payload.send.payload.text in STATUS_QUERIES:
            self.queries["status"] += 1
            text = self.status_text
            reply.payload.recv.text = json.dumps(self.status_doc()) if text is None else text
        else:
            self.queries["unknown"] += 1
            reply.payload.recv.text = json.dumps({"errors": [{"message": "unknown query"}]})
        return reply

    async def _login(self, request: web.Request) -> web.Response:
        """The local API's customer login (JSON from v1r, a form from pypowerwall's merge)."""
        body = await request.read()
        try:
            doc = json.loads(body)
        except ValueError:
            doc = dict(await request.post())
        password = doc.get("password") if isinstance(doc, dict) else None
        expected = self._password[-CUSTOMER_PASSWORD_CHARS:]
        if not isinstance(password, str) or not hmac.compare_digest(
            password.encode(), expected.encode()
        ):
            self.failed_logins += 1
            error = {"code": 401, "error": "bad credentials", "message": "Login Error"}
            return web.json_response(error, status=401)
        token = secrets.token_urlsafe(32)
        self._tokens.add(token)
        return web.json_response({"email": "", "roles": ["Home_Owner"], "token": token})

    async def _v1r(self, request: web.Request) -> web.Response:
        routable = tedapi_combined_pb2.RoutableMessage()
        try:
            routable.ParseFromString(await request.read())
        except DecodeError:
            return web.Response(status=400)
        reply = tedapi_combined_pb2.RoutableMessage()
        reply.from_destination.domain = tedapi_combined_pb2.DOMAIN_ENERGY_DEVICE
        reply.request_uuid = routable.uuid
        fault = self._check_signature(routable)
        if fault != tedapi_combined_pb2.MESSAGEFAULT_ERROR_NONE:
            self.failed_logins += 1
            reply.signed_message_status.message_fault = fault
            return self._octets(reply.SerializeToString())
        if self.key_verified:
            reply.protobuf_message_as_bytes = self._answer_v1r(routable.protobuf_message_as_bytes)
        else:  # a registered key before its on/off-switch check: no fault, this text instead
            reply.protobuf_message_as_bytes = NOT_VERIFIED_TEXT
        return self._octets(reply.SerializeToString())

    def _check_signature(self, routable: Any) -> int:
        """Return the message fault for routable's signature (MESSAGEFAULT_ERROR_NONE if good)."""
        der = routable.signature_data.signer_identity.public_key
        if der not in self._keys:
            return int(tedapi_combined_pb2.MESSAGEFAULT_ERROR_UNKNOWN_KEY_ID)
        expires_at = routable.signature_data.rsa_data.expires_at
        now = self._clock()
        if not now <= expires_at <= now + SIGNATURE_SLACK_S:
            return int(tedapi_combined_pb2.MESSAGEFAULT_ERROR_TIME_EXPIRED)
        key = serialization.load_der_public_key(der)
        if not isinstance(key, rsa.RSAPublicKey):
            return int(tedapi_combined_pb2.MESSAGEFAULT_ERROR_INVALID_SIGNATURE)
        signed = _tlv(self.din, expires_at, routable.protobuf_message_as_bytes)
        try:
            key.verify(
                routable.signature_data.rsa_data.signature,
                signed,
                padding.PKCS1v15(),
                hashes.SHA512(),
            )
        except InvalidSignature:
            return int(tedapi_combined_pb2.MESSAGEFAULT_ERROR_INVALID_SIGNATURE)
        return int(tedapi_combined_pb2.MESSAGEFAULT_ERROR_NONE)

    def _answer_v1r(self, inner: bytes) -> bytes:
        """Answer a v1r MessageEnvelope: config.json from the file store, or as /tedapi/v1."""
        combined = tedapi_combined_pb2.MessageEnvelope()
        combined.ParseFromString(inner)
        if combined.HasField("filestore"):
            self.queries["config"] += 1
            reply = tedapi_combined_pb2.MessageEnvelope()
            reply.deliveryChannel = combined.deliveryChannel
            reply.recipient.din = self.din
            blob = json.dumps(self.config_doc()).encode()
            reply.filestore.readFileResponse.file.blob = blob
            return bytes(reply.SerializeToString())
        envelope = tedapi_pb2.MessageEnvelope()
        envelope.ParseFromString(inner)
        return bytes(self._answer(envelope).SerializeToString())


def _tlv(din: str, expires_at: int, inner: bytes) -> bytes:
    """Return what a v1r signature covers (pypowerwall's TEDAPIv1r._build_tlv_payload)."""

    def entry(tag: int, value: bytes) -> bytes:
        return bytes([tag, len(value)]) + value

    return b"".join(
        [
            entry(0, bytes([SIGNATURE_TYPE_RSA])),
            entry(1, bytes([SIGNATURE_TYPE_RSA])),
            entry(2, din.encode()),
            entry(4, struct.pack(">I", expires_at)),
            bytes([TLV_END]),
            inner,
        ]
    )
