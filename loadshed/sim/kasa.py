"""Simulated TP-Link Kasa plugs and power strips, speaking the real protocols on loopback.

Two wire protocols carry the same IOT JSON (`{"system": {"get_sysinfo": {}}}`):

- the legacy one (`KasaSim`): TCP, each message a 4-byte big-endian length and the JSON
  XOR-"autokeyed" from 171; one connection carries many requests. The same port number also
  answers UDP discovery (the same XOR, no length prefix), so `Discover.discover_single` works;
- KLAP (`KlapSim`): HTTP `POST /app/handshake1`, `/app/handshake2`, `/app/request?seq=N`, AES
  under keys derived from both seeds and the TP-Link account's username and password, as newer
  firmware does it.

`IotResponder` answers the JSON for either: a plain plug (no meter), an energy plug (its
`emeter.get_realtime` is the outlet's watts while on) or a strip whose children are switched one
by one through `context.child_ids`. A device's relay state *is* its `Outlet.on`, so whatever
models the house sees loads come and go. Aliases are the outlets' names. The built-in device
data (models, firmware strings, MACs, ids) is our own; a recorded `get_sysinfo` may be served
instead (tests use the captured fixtures that way).

Faults (see `loadshed.sim.base`): DOWN refuses connections (and discovery), HUNG reads requests
and never answers, SLOW answers after `slow_s`, LOST_REPLY (legacy TCP) carries a request out and
never answers it. BAD_AUTH means nothing to a legacy device (it
has no login; it answers as usual); a KLAP device under BAD_AUTH behaves as if the account's
password had been changed: its handshake proof no longer matches the client's credentials, so
python-kasa raises `AuthenticationError`, and sessions opened before are refused (403).

Nothing here may bind or send outside 127.0.0.0/8 (`check_loopback` in the base class).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import secrets
import struct
import time
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

from aiohttp import web
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from loadshed.sim.base import Closer, Fault, Outlet, SimDevice, TcpCloser

_LOG = logging.getLogger(__name__)

Json = dict[str, Any]

XOR_FIRST_KEY: Final = 171  # the protocol's fixed starting key
_LENGTH: Final = struct.Struct(">I")
_SEQ: Final = struct.Struct(">l")  # KLAP sequence numbers are signed 32-bit, big-endian
MAX_FRAME_BYTES: Final = 64 * 1024  # real requests are under 2 kB; a larger length is garbage
BIND_ATTEMPTS: Final = 5  # port 0 may pick a TCP port whose UDP twin is taken; try a few
MAX_KLAP_SESSIONS: Final = 32  # a real plug keeps a handful; old ones are forgotten
KLAP_SESSION_S: Final = 86400  # the TIMEOUT cookie real devices send with handshake1
HTTP_SHUTDOWN_S: Final = 0.1  # a hung handler is cancelled this soon when the device goes DOWN
US_MAINS_MV: Final = 120_000  # the built-in models are US ones

NOT_SUPPORTED: Final[Mapping[str, Any]] = {"err_code": -1, "err_msg": "module not support"}
NO_MEMBER: Final[Mapping[str, Any]] = {"err_code": -2, "err_msg": "member not support"}
BAD_ARGUMENT: Final[Mapping[str, Any]] = {"err_code": -3, "err_msg": "invalid argument"}
NO_ENTRY: Final[Mapping[str, Any]] = {"err_code": -14, "err_msg": "entry not exist"}

_serials = itertools.count(1)  # every simulated device gets its own MAC and ids


def xor_encrypt(plain: bytes) -> bytes:
    """Encrypt with the legacy autokey XOR (no length prefix: the discovery form)."""
    key = XOR_FIRST_KEY
    out = bytearray()
    for byte in plain:
        key ^= byte
        out.append(key)
    return bytes(out)


def xor_decrypt(cipher: bytes) -> bytes:
    """Undo `xor_encrypt`."""
    key = XOR_FIRST_KEY
    out = bytearray()
    for byte in cipher:
        out.append(key ^ byte)
        key = byte
    return bytes(out)


def xor_frame(message: Mapping[str, Any]) -> bytes:
    """Encode one TCP message: the plaintext's length, then the XOR-encrypted JSON."""
    plain = json.dumps(message, separators=(",", ":")).encode()
    return _LENGTH.pack(len(plain)) + xor_encrypt(plain)


# --- IOT JSON --------------------------------------------------------------------------------


class IotResponder:
    """Answer IOT JSON requests for one plug or strip; the relays are the outlets' `on`.

    `sysinfo` (a recorded `get_sysinfo` reply) replaces the built-in description; the alias and
    relay states are still taken from the outlets, and its `feature` ("TIM:ENE") decides whether
    there is an energy meter. A strip's recorded `children` must number as many as `outlets`.
    `refuse_modules` are answered "module not support" whatever else is said (a firmware quirk:
    a meter in `feature` but no `emeter` module makes python-kasa raise a bare KeyError).
    """

    def __init__(
        self,
        outlets: Sequence[Outlet],
        *,
        strip: bool = False,
        meter: bool = False,
        name: str = "",
        sysinfo: Mapping[str, Any] | None = None,
        refuse_modules: Collection[str] = (),
    ) -> None:
        if not outlets:
            raise ValueError("a simulated Kasa device needs at least one outlet")
        if not strip and len(outlets) != 1:
            raise ValueError("a plug has exactly one outlet; use a strip for more")
        self.outlets: tuple[Outlet, ...] = tuple(outlets)
        self.is_strip = strip
        self.name = name or (self.outlets[0].name if not strip else "Power strip")
        serial = next(_serials)
        base = dict(sysinfo) if sysinfo is not None else _builtin_sysinfo(serial, strip, meter)
        if strip:
            recorded = base.get("children")
            if isinstance(recorded, list) and recorded:
                if len(recorded) != len(self.outlets):
                    raise ValueError(
                        f"the recorded strip has {len(recorded)} outlets, not {len(self.outlets)}"
                    )
                self.child_ids = tuple(str(child["id"]) for child in recorded)
            else:
                device_id = str(base["deviceId"])
                self.child_ids = tuple(f"{device_id}{i:02d}" for i in range(len(self.outlets)))
        else:
            base.pop("children", None)
            self.child_ids = ()
        self.has_meter = "ENE" in str(base.get("feature", ""))
        self._refused = frozenset(refuse_modules)
        self._base = base
        self._on_since: dict[int, float] = {}
        self.calls: Counter[str] = Counter()  # "system.set_relay_state" -> how often asked

    @property
    def mac(self) -> str:
        return str(self._base.get("mac", ""))

    def sysinfo(self) -> Json:
        """Return `get_sysinfo` as the device would answer it now."""
        info = dict(self._base)
        info["alias"] = self.name if self.is_strip else self.outlets[0].name
        if self.is_strip:
            info["child_num"] = len(self.outlets)
            info["children"] = [
                {
                    "id": child_id,
                    "state": int(outlet.on),
                    "alias": outlet.name,
                    "on_time": self._on_time(i),
                    "next_action": {"type": -1},
                }
                for i, (child_id, outlet) in enumerate(
                    zip(self.child_ids, self.outlets, strict=True)
                )
            ]
        else:
            info["relay_state"] = int(self.outlets[0].on)
            info["on_time"] = self._on_time(0)
        info["err_code"] = 0
        return info

    def answer(self, request: Mapping[str, Any]) -> Json:
        """Answer one request: every module asked, every method in it."""
        context = request.get("context")
        child_ids = context.get("child_ids") if isinstance(context, dict) else None
        reply: Json = {}
        for module, methods in request.items():
            if module == "context":
                continue
            if not isinstance(methods, dict) or not self._supports(module):
                reply[module] = dict(NOT_SUPPORTED)
                continue
            answers: Json = {}
            for method, args in methods.items():
                self.calls[f"{module}.{method}"] += 1
                answers[method] = self._call(module, method, args, child_ids)
            reply[module] = answers
        return reply

    def _supports(self, module: str) -> bool:
        if module in self._refused:
            return False
        return module == "system" or (module == "emeter" and self.has_meter)

    def _call(self, module: str, method: str, args: Any, child_ids: Any) -> Json:
        targets = self._targets(child_ids)
        if targets is None:
            return dict(NO_ENTRY)
        if module == "system":
            if method == "get_sysinfo":
                return self.sysinfo()
            if method == "set_relay_state":
                return self._set_relay(args, targets)
        elif module == "emeter":
            if method == "get_realtime":
                return self._realtime(targets, child_ids is not None)
            if method == "get_daystat":
                return {"day_list": [], "err_code": 0}
            if method == "get_monthstat":
                return {"month_list": [], "err_code": 0}
        return dict(NO_MEMBER)

    def _targets(self, child_ids: Any) -> list[int] | None:
        """Return the outlet indexes a request is about, or None if it names an unknown child."""
        if not self.is_strip or child_ids is None:
            return list(range(len(self.outlets)))
        if not isinstance(child_ids, list):
            return None
        indexes = [self.child_ids.index(c) for c in child_ids if c in self.child_ids]
        return indexes if indexes and len(indexes) == len(child_ids) else None

    def _set_relay(self, args: Any, targets: list[int]) -> Json:
        state = args.get("state") if isinstance(args, dict) else None
        if state not in (0, 1) or isinstance(state, bool):
            return dict(BAD_ARGUMENT)
        for i in targets:
            outlet = self.outlets[i]
            if outlet.on != bool(state):
                _LOG.debug("%s: relay %s -> %s", outlet.name, outlet.on, bool(state))
            outlet.on = bool(state)
        return {"err_code": 0}

    def _realtime(self, targets: list[int], one_child: bool) -> Json:
        power_mw = sum(round(self.outlets[i].watts * 1000) for i in targets if self.outlets[i].on)
        reading: Json = {
            "voltage_mv": US_MAINS_MV,
            "current_ma": round(power_mw * 1000 / US_MAINS_MV),
            "power_mw": power_mw,
            "total_wh": 0,
            "err_code": 0,
        }
        if self.is_strip and one_child:
            reading["slot_id"] = targets[0]
        return reading

    def _on_time(self, i: int) -> int:
        """Seconds the outlet has been on, as far as this device saw it (0 when off)."""
        if not self.outlets[i].on:
            self._on_since.pop(i, None)
            return 0
        since = self._on_since.setdefault(i, time.monotonic())
        return int(time.monotonic() - since)


def _builtin_sysinfo(serial: int, strip: bool, meter: bool) -> Json:
    """Describe a device of our own making, shaped like the real HS103 / KP115 / HS300."""
    mac = "02:4C:53:{:02X}:{:02X}:{:02X}".format(*serial.to_bytes(3, "big"))  # locally administered
    device_id = hashlib.sha1(f"loadshed-sim-{serial}".encode()).hexdigest().upper()
    if strip:
        model, dev_name, feature = "HS300(US)", "Simulated Smart Power Strip", "TIM:ENE"
    elif meter:
        model, dev_name, feature = "KP115(US)", "Simulated Smart Plug with Meter", "TIM:ENE"
    else:
        model, dev_name, feature = "HS103(US)", "Simulated Smart Plug", "TIM"
    info: Json = {
        "sw_ver": "1.0.0 Build 250101 Rel.000001",
        "hw_ver": "1.0",
        "model": model,
        "dev_name": dev_name,
        "mic_type": "IOT.SMARTPLUGSWITCH",
        "feature": feature,
        "mac": mac,
        "deviceId": device_id,
        "hwId": hashlib.md5(f"hw-{model}".encode()).hexdigest().upper(),
        "oemId": hashlib.md5(f"oem-{model}".encode()).hexdigest().upper(),
        "rssi": -50,
        "led_off": 0,
        "latitude_i": 0,
        "longitude_i": 0,
        "status": "new",
        "updating": 0,
    }
    if not strip:
        info["active_mode"] = "none"
        info["next_action"] = {"type": -1}
    return info


# --- legacy XOR over TCP, discovery over UDP -------------------------------------------------


class KasaSim(SimDevice):
    """A legacy Kasa device: XOR-framed JSON on TCP, discovery on UDP, same port number.

    Counters for tests: `connections` (TCP accepts), `requests` (frames received),
    `discoveries` (UDP probes answered or ignored), `calls` (per "module.method").
    """

    def __init__(self, responder: IotResponder, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.responder = responder
        self.connections = 0
        self.requests = 0
        self.discoveries = 0
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def outlets(self) -> tuple[Outlet, ...]:
        return self.responder.outlets

    @property
    def calls(self) -> Counter[str]:
        return self.responder.calls

    async def _listen(self, host: str, port: int) -> Closer:
        loop = asyncio.get_running_loop()
        for _attempt in range(BIND_ATTEMPTS):
            writers: set[asyncio.StreamWriter] = set()

            async def serve(
                reader: asyncio.StreamReader,
                writer: asyncio.StreamWriter,
                writers: set[asyncio.StreamWriter] = writers,
            ) -> None:
                await self._serve(reader, writer, writers)

            server = await asyncio.start_server(serve, host, port)
            bound = int(server.sockets[0].getsockname()[1])
            try:
                datagrams, _ = await loop.create_datagram_endpoint(
                    lambda: _Discovery(self), local_addr=(host, bound)
                )
            except OSError:
                server.close()
                await server.wait_closed()
                if port:
                    raise
                continue
            self.port = bound
            return _LegacyCloser(TcpCloser(server, writers), datagrams, self._tasks)
        raise OSError(f"no port on {host} free for both TCP and UDP after {BIND_ATTEMPTS} tries")

    async def _serve(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        writers: set[asyncio.StreamWriter],
    ) -> None:
        """Answer frames on one connection until the client closes it."""
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        writers.add(writer)
        self.connections += 1
        try:
            while True:
                try:
                    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
                    if length > MAX_FRAME_BYTES:
                        _LOG.debug("%s: frame of %s bytes, dropping the connection", self, length)
                        return
                    body = await reader.readexactly(length)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                self.requests += 1
                request = _parse(xor_decrypt(body))
                if request is None:
                    return  # a real plug drops a connection that sends garbage
                await self.obey_fault()
                reply = self.responder.answer(request)
                if self.fault is Fault.LOST_REPLY:
                    await asyncio.Event().wait()  # done, but the reply is lost on the way
                writer.write(xor_frame(reply))
                await writer.drain()
        except ConnectionError:
            return
        except asyncio.CancelledError:
            # the device is going DOWN (or the loop is closing). Ending normally, not as
            # cancelled: Python 3.11's stream server logs every cancelled handler as an error.
            return
        finally:
            writers.discard(writer)
            if task is not None:
                self._tasks.discard(task)
            writer.close()

    def __repr__(self) -> str:
        return f"KasaSim({self.responder.name!r} at {self.address})"


def _parse(plain: bytes) -> Json | None:
    try:
        message = json.loads(plain)
    except (UnicodeDecodeError, ValueError):
        return None
    return message if isinstance(message, dict) else None


class _Discovery(asyncio.DatagramProtocol):
    """Answer the legacy UDP discovery probe with the device's sysinfo."""

    def __init__(self, sim: KasaSim) -> None:
        self._sim = sim
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        request = _parse(xor_decrypt(data))
        if request is None:
            return
        self._sim.discoveries += 1
        if self._sim.fault is Fault.HUNG:
            return
        reply = xor_encrypt(json.dumps(self._sim.responder.answer(request)).encode())
        if self._sim.fault is Fault.SLOW:
            asyncio.get_running_loop().call_later(self._sim.slow_s, self._send, reply, addr)
        else:
            self._send(reply, addr)

    def _send(self, reply: bytes, addr: tuple[str | Any, int]) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(reply, addr)


class _LegacyCloser:
    """Close the TCP server, its connections, their handlers and the discovery socket."""

    def __init__(
        self,
        tcp: TcpCloser,
        datagrams: asyncio.DatagramTransport,
        tasks: set[asyncio.Task[Any]],
    ) -> None:
        self._tcp = tcp
        self._datagrams = datagrams
        self._tasks = tasks

    async def aclose(self) -> None:
        self._datagrams.close()
        handlers = list(self._tasks)
        for task in handlers:
            task.cancel()  # a HUNG handler waits forever otherwise
        await asyncio.gather(*handlers, return_exceptions=True)
        await self._tcp.aclose()


# --- KLAP over HTTP --------------------------------------------------------------------------


def klap_auth_hash(username: str, password: str, login_version: int = 2) -> bytes:
    """Return the device's secret for an account: v2 sha256(sha1(u)+sha1(p)), v1 md5(md5+md5)."""
    if login_version >= 2:
        return _sha256(_sha1(username.encode()) + _sha1(password.encode()))
    return _md5(_md5(username.encode()) + _md5(password.encode()))


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _sha1(data: bytes) -> bytes:
    return hashlib.sha1(data).digest()


def _md5(data: bytes) -> bytes:
    return hashlib.md5(data).digest()


@dataclass
class _KlapSession:
    """One client's handshake: the seeds, the secret it was made with, and derived keys."""

    local_seed: bytes
    remote_seed: bytes
    auth_hash: bytes
    confirmed: bool = False

    def _derive(self, label: bytes) -> bytes:
        return _sha256(label + self.local_seed + self.remote_seed + self.auth_hash)

    @property
    def key(self) -> bytes:
        return self._derive(b"lsk")[:16]

    @property
    def iv(self) -> bytes:
        return self._derive(b"iv")[:12]

    @property
    def signing_key(self) -> bytes:
        return self._derive(b"ldk")[:28]

    def _cipher(self, seq: int) -> Cipher[modes.CBC]:
        return Cipher(algorithms.AES(self.key), modes.CBC(self.iv + _SEQ.pack(seq)))

    def signature(self, seq: int, ciphertext: bytes) -> bytes:
        return _sha256(self.signing_key + _SEQ.pack(seq) + ciphertext)

    def decrypt(self, seq: int, body: bytes) -> bytes | None:
        """Return the plaintext of a signed request, or None if it does not check out."""
        signature, ciphertext = body[:32], body[32:]
        if not ciphertext or len(ciphertext) % 16 or signature != self.signature(seq, ciphertext):
            return None
        decryptor = self._cipher(seq).decryptor()
        unpadder = padding.PKCS7(128).unpadder()
        try:
            padded = decryptor.update(ciphertext) + decryptor.finalize()
            return unpadder.update(padded) + unpadder.finalize()
        except ValueError:
            return None

    def encrypt(self, seq: int, plain: bytes) -> bytes:
        padder = padding.PKCS7(128).padder()
        encryptor = self._cipher(seq).encryptor()
        padded = padder.update(plain) + padder.finalize()
        ciphertext = encryptor.update(padded) + encryptor.finalize()
        return self.signature(seq, ciphertext) + ciphertext


class KlapSim(SimDevice):
    """A newer-firmware Kasa device: IOT JSON over KLAP (HTTP + AES), login v2 by default.

    Counters for tests: `handshakes` (handshake1 received), `requests` (`/app/request`
    received), `rejected` (handshake2 or requests refused), `calls` (per "module.method").
    """

    SESSION_COOKIE: Final = "TP_SESSIONID"

    def __init__(
        self,
        responder: IotResponder,
        *,
        username: str,
        password: str,
        login_version: int = 2,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host, port)
        self.responder = responder
        self.login_version = login_version
        self._auth_hash = klap_auth_hash(username, password, login_version)
        # BAD_AUTH: the account's password was changed since the client last knew it
        self._changed_hash = klap_auth_hash(username, secrets.token_hex(16), login_version)
        self._sessions: dict[str, _KlapSession] = {}
        self._waiting: set[asyncio.Task[Any]] = set()  # handlers held by HUNG or SLOW
        self.handshakes = 0
        self.requests = 0
        self.rejected = 0

    @property
    def outlets(self) -> tuple[Outlet, ...]:
        return self.responder.outlets

    @property
    def calls(self) -> Counter[str]:
        return self.responder.calls

    async def _obey_fault_tracked(self) -> None:
        """Obey the fault; a handler waiting here is cancelled when the device goes DOWN."""
        task = asyncio.current_task()
        if task is not None:
            self._waiting.add(task)
        try:
            await self.obey_fault()
        finally:
            if task is not None:
                self._waiting.discard(task)

    def _device_secret(self) -> bytes:
        return self._changed_hash if self.fault is Fault.BAD_AUTH else self._auth_hash

    def _proofs(self, session: _KlapSession) -> tuple[bytes, bytes]:
        """Return (handshake1 proof the device sends, handshake2 proof it expects)."""
        local, remote, secret = session.local_seed, session.remote_seed, session.auth_hash
        if self.login_version >= 2:
            return _sha256(local + remote + secret), _sha256(remote + local + secret)
        return _sha256(local + secret), _sha256(remote + secret)

    async def _listen(self, host: str, port: int) -> Closer:
        self._sessions.clear()  # a device that was off has forgotten every session
        app = web.Application()
        app.router.add_post("/app/handshake1", self._handshake1)
        app.router.add_post("/app/handshake2", self._handshake2)
        app.router.add_post("/app/request", self._request)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=HTTP_SHUTDOWN_S)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self.port = int(runner.addresses[0][1])
        return _HttpCloser(runner, self._waiting)

    async def _handshake1(self, request: web.Request) -> web.StreamResponse:
        await self._obey_fault_tracked()
        self.handshakes += 1
        local_seed = await request.read()
        if len(local_seed) != 16:
            return web.Response(status=400)
        session = _KlapSession(local_seed, secrets.token_bytes(16), self._device_secret())
        session_id = secrets.token_hex(16).upper()
        self._sessions[session_id] = session
        while len(self._sessions) > MAX_KLAP_SESSIONS:
            del self._sessions[next(iter(self._sessions))]
        proof, _ = self._proofs(session)
        response = web.Response(body=session.remote_seed + proof)
        response.set_cookie(self.SESSION_COOKIE, session_id)
        response.set_cookie("TIMEOUT", str(KLAP_SESSION_S))
        return response

    async def _handshake2(self, request: web.Request) -> web.StreamResponse:
        await self._obey_fault_tracked()
        session = self._sessions.get(request.cookies.get(self.SESSION_COOKIE, ""))
        body = await request.read()
        if session is None or body != self._proofs(session)[1]:
            self.rejected += 1
            return web.Response(status=403)
        session.confirmed = True
        return web.Response()

    async def _request(self, request: web.Request) -> web.StreamResponse:
        await self._obey_fault_tracked()
        self.requests += 1
        session = self._sessions.get(request.cookies.get(self.SESSION_COOKIE, ""))
        body = await request.read()
        try:
            seq = int(request.query["seq"])
        except (KeyError, ValueError):
            return web.Response(status=400)
        if session is None or not session.confirmed or session.auth_hash != self._device_secret():
            self.rejected += 1
            return web.Response(status=403)  # the client does a new handshake and tries again
        plain = session.decrypt(seq, body)
        message = _parse(plain) if plain is not None else None
        if message is None:
            self.rejected += 1
            return web.Response(status=400)
        reply = json.dumps(self.responder.answer(message)).encode()
        return web.Response(body=session.encrypt(seq, reply))

    def __repr__(self) -> str:
        return f"KlapSim({self.responder.name!r} at {self.address})"


class _HttpCloser:
    """Stop the HTTP server; cancel handlers held by a fault first (else they linger)."""

    def __init__(self, runner: web.AppRunner, waiting: set[asyncio.Task[Any]]) -> None:
        self._runner = runner
        self._waiting = waiting

    async def aclose(self) -> None:
        for task in list(self._waiting):
            task.cancel()
        with contextlib.suppress(Exception):
            await self._runner.cleanup()


# --- factories -------------------------------------------------------------------------------


def kasa_plug(
    outlet: Outlet,
    *,
    meter: bool = False,
    sysinfo: Mapping[str, Any] | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
) -> KasaSim:
    """Make a legacy plug (HS103-like, or KP115-like with `meter`); `await sim.start()` it."""
    return KasaSim(IotResponder([outlet], meter=meter, sysinfo=sysinfo), host, port)


def kasa_strip(
    outlets: Sequence[Outlet],
    *,
    name: str = "Power strip",
    sysinfo: Mapping[str, Any] | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
) -> KasaSim:
    """Make a legacy strip (HS300-like, a meter per outlet), one child per outlet."""
    responder = IotResponder(outlets, strip=True, meter=True, name=name, sysinfo=sysinfo)
    return KasaSim(responder, host, port)


def klap_plug(
    outlet: Outlet,
    *,
    username: str,
    password: str,
    meter: bool = False,
    login_version: int = 2,
    sysinfo: Mapping[str, Any] | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
) -> KlapSim:
    """Make a plug on newer firmware: the same IOT JSON, over KLAP, behind an account login."""
    responder = IotResponder([outlet], meter=meter, sysinfo=sysinfo)
    return KlapSim(
        responder,
        username=username,
        password=password,
        login_version=login_version,
        host=host,
        port=port,
    )
