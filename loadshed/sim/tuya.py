"""A simulated Tuya Wi-Fi plug speaking the local protocol 3.3 or 3.4 on loopback.

Owns one asyncio TCP server per plug, the plug's data points (dps) and its crypto. The outlets
it switches are shared `Outlet` objects, so the battery model sees a load go when a client
switches it off. It must not bind outside 127.0.0.0/8, and it imports nothing from tinytuya:
framing and crypto are written here from the protocol, so the real library is checked against
an independent peer.

Wire format (tinytuya 1.20 core/message_helper.py, core/XenonDevice.py; LIBRARIES.md §3):

    000055AA | seqno | cmd | length | [retcode] | payload | CRC32 or HMAC-SHA256 | 0000AA55

Requests carry no retcode, replies always do; `length` counts everything after the 16-byte
header. Payloads are AES-128-ECB with PKCS7 padding, no base64.

- 3.3: the key is the device's 16-character local key; the trailer is a CRC32. CONTROL requests
  and STATUS pushes carry a clear `3.3` + 12 zero bytes header before the ciphertext.
- 3.4: a connection starts with a key exchange. The client sends SESS_KEY_NEG_START (3) with its
  16-byte nonce; the plug answers SESS_KEY_NEG_RESP (4) with its own nonce followed by
  HMAC-SHA256(local key, client nonce); the client sends SESS_KEY_NEG_FINISH (5) with
  HMAC-SHA256(local key, plug nonce). Both then use the session key
  AES-ECB(local key, client nonce XOR plug nonce) for the AES payloads and the HMAC-SHA256
  trailers. The `3.4` header, where present, is inside the encryption. tinytuya sends
  DP_QUERY_NEW (16) for a status and CONTROL_NEW (13) with `{"data": {"dps": ...}}` to switch.

Replies the real library accepts: a query gets one frame with `{"devId", "dps"}`; a control gets
an empty ack on its own command, then a STATUS (8) push with the dps it set (`ack_only` leaves the
push out, as some plugs do); a heartbeat gets an empty ack.

Faults (see `loadshed.sim.base`): DOWN refuses connections; HUNG reads requests and never
answers; SLOW answers every request after `slow_s`; LOST_REPLY carries every request out and sends
no reply; BAD_AUTH gives the plug another key than the
one the client was told (every key byte with its low bit flipped), so its replies cannot be
decrypted (tinytuya Err 904) and a 3.4 key exchange fails (Err 914).
"""

from __future__ import annotations

import asyncio
import binascii
import collections
import hashlib
import hmac
import json
import logging
import os
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from loadshed.sim.base import Closer, Fault, Outlet, SimDevice, TcpCloser

_LOG = logging.getLogger(__name__)

VERSIONS: Final = (3.3, 3.4)
KEY_BYTES: Final = 16  # AES-128: a Tuya local key is 16 characters
PREFIX: Final = 0x000055AA
SUFFIX: Final = 0x0000AA55
HEADER: Final = struct.Struct(">4I")  # prefix, seqno, cmd, length
RETCODE: Final = struct.Struct(">I")
CRC_END: Final = struct.Struct(">2I")  # crc32, suffix
HMAC_END: Final = struct.Struct(">32sI")  # hmac-sha256, suffix
VERSION_HEADER_PAD: Final = bytes(12)  # after "3.3"/"3.4": the clear or encrypted version header
MAX_FRAME_BYTES: Final = 4096  # tinytuya never sends more than a few hundred; longer is garbage
NONCE_BYTES: Final = 16
BAD_AUTH_FLIP: Final = 0x01  # BAD_AUTH key = local key with each byte's low bit flipped
UNREADABLE: Final = b"data format error"  # what the plug says to a request it cannot decrypt
ERROR_RETCODE: Final = 1

COUNTDOWN_DP: Final = "9"  # seconds until the countdown switches; 0 = none
CURRENT_DP: Final = "18"  # mA
POWER_DP: Final = "19"  # 0.1 W
VOLTAGE_DP: Final = "20"  # 0.1 V
VOLTS: Final = 230.0  # the mains voltage the meter reports (2300 in the real KOGAN capture)


class Cmd(IntEnum):
    """Tuya local command numbers the simulator knows (tinytuya core/command_types.py)."""

    SESS_KEY_NEG_START = 3
    SESS_KEY_NEG_RESP = 4
    SESS_KEY_NEG_FINISH = 5
    CONTROL = 7
    STATUS = 8
    HEART_BEAT = 9
    DP_QUERY = 10
    CONTROL_NEW = 13
    DP_QUERY_NEW = 16
    UPDATEDPS = 18


QUERIES: Final = frozenset({Cmd.DP_QUERY, Cmd.DP_QUERY_NEW})
CONTROLS: Final = frozenset({Cmd.CONTROL, Cmd.CONTROL_NEW})


@dataclass(frozen=True, slots=True)
class _Frame:
    """One request as read off the wire; `payload` is still encrypted."""

    seqno: int
    cmd: int
    payload: bytes
    intact: bool  # CRC or HMAC matched


@dataclass(slots=True)
class _Link:
    """One client connection: for 3.4, where its key exchange stands."""

    client_nonce: bytes = b""
    plug_nonce: bytes = b""
    session_key: bytes | None = None


class TuyaPlugSim(SimDevice):
    """A Tuya plug (one outlet) or multi-outlet device on 127.0.0.x, protocol 3.3 or 3.4.

    Data points: "1", "2", ... are the outlets' `on`; "9" the countdown (0) unless `dps` says
    otherwise; with `meter`, "18"/"19"/"20" are the current (mA), power (0.1 W) and voltage
    (0.1 V) of the outlets that are on. `dps` seeds the rest, e.g. a real plug's map from
    tests/fixtures/tuya; outlets and meter overwrite their own keys in it.

    Counters for tests: `connections` (TCP connections accepted), `requests` (frames received,
    by command number: `requests[Cmd.CONTROL]`), `bad_frames` (CRC or HMAC mismatch).
    """

    def __init__(
        self,
        dev_id: str,
        local_key: str,
        outlets: list[Outlet],
        *,
        version: float = 3.3,
        host: str = "127.0.0.1",
        port: int = 0,
        meter: bool = False,
        dps: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(host, port)
        if version not in VERSIONS:
            raise ValueError(f"TuyaPlugSim speaks protocol 3.3 or 3.4, not {version}")
        key = local_key.encode("latin1")
        if len(key) != KEY_BYTES:
            raise ValueError("a Tuya local key is 16 characters")
        if not outlets:
            raise ValueError("a plug has at least one outlet")
        self.dev_id = dev_id
        self.version = version
        self.outlets = outlets
        self.meter = meter
        self.ack_only = False  # answer CONTROL with the ack only, no STATUS push
        self.connections = 0
        self.requests: collections.Counter[int] = collections.Counter()
        self.bad_frames = 0
        self._key = key
        self._extra: dict[str, object] = dict(dps) if dps is not None else {COUNTDOWN_DP: 0}
        self._writers: set[asyncio.StreamWriter] = set()
        self._push_seqno = 0
        self._is_34 = version >= 3.4
        self._version_header = str(version).encode("ascii") + VERSION_HEADER_PAD
        self._end = HMAC_END if self._is_34 else CRC_END

    # -- state ---------------------------------------------------------------------------

    def set_key(self, local_key: str) -> None:
        """Pair the plug again (the Smart Life app does this): a new local key, the old one
        refused from now on."""
        key = local_key.encode("latin1")
        if len(key) != KEY_BYTES:
            raise ValueError("a Tuya local key is 16 characters")
        self._key = key

    def dps(self) -> dict[str, object]:
        """Return every data point as the plug reports it now, in dp order."""
        now = dict(self._extra)
        for index, outlet in enumerate(self.outlets, start=1):
            now[str(index)] = outlet.on
        if self.meter:
            watts = sum(outlet.watts for outlet in self.outlets if outlet.on)
            now[CURRENT_DP] = round(watts / VOLTS * 1000)
            now[POWER_DP] = round(watts * 10)
            now[VOLTAGE_DP] = round(VOLTS * 10)
        return dict(sorted(now.items(), key=lambda item: _dp_order(item[0])))

    def _apply(self, request: Mapping[str, object]) -> dict[str, object]:
        """Set the dps a CONTROL asks for; return those it knows, with their new values."""
        wanted = request.get("dps")
        data = request.get("data")
        if wanted is None and isinstance(data, Mapping):
            wanted = data.get("dps")  # 3.4: {"protocol": 5, "t": ..., "data": {"dps": {...}}}
        if not isinstance(wanted, Mapping):
            return {}
        changed: dict[str, object] = {}
        for dp, value in wanted.items():
            index = int(dp) if str(dp).isdigit() else 0
            if 1 <= index <= len(self.outlets) and isinstance(value, bool):
                self.outlets[index - 1].on = value
                changed[str(dp)] = value
            elif str(dp) in self._extra:
                self._extra[str(dp)] = value
                changed[str(dp)] = value
        return changed

    def _device_key(self) -> bytes:
        if self.fault is Fault.BAD_AUTH:
            return bytes(byte ^ BAD_AUTH_FLIP for byte in self._key)
        return self._key

    # -- server --------------------------------------------------------------------------

    async def _listen(self, host: str, port: int) -> Closer:
        server = await asyncio.start_server(self._serve, host, port)
        self.port = server.sockets[0].getsockname()[1]
        return TcpCloser(server, self._writers)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer one client, request after request, until it hangs up."""
        self.connections += 1
        self._writers.add(writer)
        link = _Link()
        try:
            while True:
                frame = await self._read_frame(reader, link)
                if frame is None:
                    break
                self.requests[frame.cmd] += 1
                if self.fault is Fault.HUNG:
                    continue  # read, never answered; the client's own timeout ends it
                if frame.cmd != Cmd.SESS_KEY_NEG_FINISH:  # the one request with no answer
                    await self.obey_fault()
                replies = self._answer(link, frame)
                if replies is None:
                    break
                if self.fault is Fault.LOST_REPLY:
                    continue  # done, but the replies are lost on the way
                for reply in replies:
                    writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client hung up, possibly mid-frame
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _read_frame(self, reader: asyncio.StreamReader, link: _Link) -> _Frame | None:
        """Read one request frame; None for anything that is not one (the plug hangs up)."""
        head = await reader.readexactly(HEADER.size)
        prefix, seqno, cmd, length = HEADER.unpack(head)
        if prefix != PREFIX or not self._end.size <= length <= MAX_FRAME_BYTES:
            _LOG.debug("tuya sim %s: not a 55AA frame, hanging up", self.address)
            return None
        body = await reader.readexactly(length)
        payload, trailer = body[: -self._end.size], body[-self._end.size :]
        check, suffix = self._end.unpack(trailer)
        if self._is_34:
            mac_key = link.session_key or self._device_key()
            expected: bytes | int = hmac.new(mac_key, head + payload, hashlib.sha256).digest()
        else:
            expected = binascii.crc32(head + payload) & 0xFFFFFFFF
        intact = suffix == SUFFIX and check == expected
        if not intact:
            self.bad_frames += 1  # another key (BAD_AUTH) or a corrupt frame: decrypting decides
        return _Frame(seqno, cmd, payload, intact)

    def _answer(self, link: _Link, frame: _Frame) -> list[bytes] | None:
        """Return the frames that answer one request; None to hang up."""
        if self._is_34:
            if frame.cmd == Cmd.SESS_KEY_NEG_START:
                return [self._negotiate(link, frame)]
            if frame.cmd == Cmd.SESS_KEY_NEG_FINISH:
                return [] if self._finish(link, frame) else None
            if link.session_key is None:
                return None  # a 3.4 plug talks only after the key exchange
        request = self._open(link, frame)
        if request is None:
            return [self._reply(link, frame.seqno, frame.cmd, UNREADABLE, ERROR_RETCODE)]
        ack = self._reply(link, frame.seqno, frame.cmd, b"")
        if frame.cmd in QUERIES:
            doc: dict[str, object] = {"dps": self.dps()}
            if not self._is_34:
                doc = {"devId": self.dev_id, **doc}
            return [self._reply(link, frame.seqno, frame.cmd, _json(doc))]
        if frame.cmd in CONTROLS:
            changed = self._apply(request)
            if changed and not self.ack_only:
                return [ack, self._push(link, changed)]
            return [ack]
        if frame.cmd == Cmd.UPDATEDPS:
            asked = request.get("dpId")
            wanted = {str(dp) for dp in asked} if isinstance(asked, list) else set()
            now = {dp: value for dp, value in self.dps().items() if dp in wanted}
            return [ack, self._push(link, now)] if now else [ack]
        return [ack]  # HEART_BEAT and anything else: an empty ack

    # -- 3.4 key exchange ------------------------------------------------------------------

    def _negotiate(self, link: _Link, frame: _Frame) -> bytes:
        """Answer SESS_KEY_NEG_START: the plug's nonce and proof that it knows the key."""
        key = self._device_key()
        # A client with another key sends garbage here; the plug answers all the same and the
        # client then fails to check the proof (tinytuya Err 914).
        link.client_nonce = _decrypt_blocks(key, frame.payload)[:NONCE_BYTES]
        link.plug_nonce = os.urandom(NONCE_BYTES // 2).hex().encode("ascii")  # hex, as real plugs
        link.session_key = None
        proof = hmac.new(key, link.client_nonce, hashlib.sha256).digest()
        body = _encrypt(key, link.plug_nonce + proof)
        return _pack(frame.seqno, Cmd.SESS_KEY_NEG_RESP, 0, body, key)

    def _finish(self, link: _Link, frame: _Frame) -> bool:
        """Check SESS_KEY_NEG_FINISH and derive the session key; False to hang up."""
        key = self._device_key()
        proof = _decrypt(key, frame.payload)
        expected = hmac.new(key, link.plug_nonce, hashlib.sha256).digest()
        if proof is None or not link.plug_nonce or not hmac.compare_digest(proof, expected):
            _LOG.debug("tuya sim %s: key exchange failed", self.address)
            return False
        mixed = bytes(a ^ b for a, b in zip(link.client_nonce, link.plug_nonce, strict=True))
        link.session_key = _encrypt(key, mixed, pad=False)
        return True

    # -- payloads --------------------------------------------------------------------------

    def _payload_key(self, link: _Link) -> bytes:
        if self._is_34 and link.session_key is not None:
            return link.session_key
        return self._device_key()

    def _open(self, link: _Link, frame: _Frame) -> dict[str, object] | None:
        """Decrypt a request's JSON; None when it cannot be read with this plug's key."""
        payload = frame.payload
        if not self._is_34 and payload.startswith(self._version_header[:3]):
            payload = payload[len(self._version_header) :]
        plain = _decrypt(self._payload_key(link), payload)
        if plain is None:
            return None
        if plain.startswith(self._version_header[:3]):
            plain = plain[len(self._version_header) :]
        try:
            request = json.loads(plain)
        except ValueError:
            return None
        return request if isinstance(request, dict) else None

    def _reply(
        self,
        link: _Link,
        seqno: int,
        cmd: int,
        plain: bytes,
        retcode: int = 0,
        *,
        head: bool = False,
    ) -> bytes:
        """Encrypt and frame one reply; an empty `plain` is an empty (null ack) payload."""
        key = self._payload_key(link)
        body = b""
        if plain and self._is_34:
            body = _encrypt(key, (self._version_header if head else b"") + plain)
        elif plain:
            body = (self._version_header if head else b"") + _encrypt(key, plain)
        return _pack(seqno, cmd, retcode, body, key if self._is_34 else None)

    def _push(self, link: _Link, dps: dict[str, object]) -> bytes:
        """A STATUS push reporting dps, as a plug sends after it switched."""
        self._push_seqno += 1
        stamp = int(time.time())
        doc: dict[str, object]
        if self._is_34:
            doc = {"protocol": 4, "t": stamp, "data": {"dps": dps}}
        else:
            doc = {"devId": self.dev_id, "dps": dps, "t": stamp}
        return self._reply(link, self._push_seqno, Cmd.STATUS, _json(doc), head=True)


def _dp_order(dp: str) -> tuple[int, str]:
    return (int(dp), "") if dp.isdigit() else (1 << 30, dp)


def _json(doc: Mapping[str, object]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


def _pack(seqno: int, cmd: int, retcode: int, payload: bytes, mac_key: bytes | None) -> bytes:
    """Frame a reply: header, retcode, payload, then CRC32 (3.3) or HMAC-SHA256 (3.4)."""
    end = HMAC_END if mac_key is not None else CRC_END
    body = RETCODE.pack(retcode) + payload
    data = HEADER.pack(PREFIX, seqno, cmd, len(body) + end.size) + body
    if mac_key is not None:
        return data + end.pack(hmac.new(mac_key, data, hashlib.sha256).digest(), SUFFIX)
    return data + end.pack(binascii.crc32(data) & 0xFFFFFFFF, SUFFIX)


def _encrypt(key: bytes, plain: bytes, *, pad: bool = True) -> bytes:
    if pad:
        size = 16 - len(plain) % 16
        plain += bytes([size]) * size
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return encryptor.update(plain) + encryptor.finalize()


def _decrypt_blocks(key: bytes, data: bytes) -> bytes:
    """Decrypt whole blocks, padding left in; b"" when data is not whole blocks."""
    if not data or len(data) % 16:
        return b""
    decryptor = Cipher(algorithms.AES(key), modes.ECB()).decryptor()
    return decryptor.update(data) + decryptor.finalize()


def _decrypt(key: bytes, data: bytes) -> bytes | None:
    """Decrypt and strip PKCS7 padding; None when it does not decrypt to valid padding."""
    plain = _decrypt_blocks(key, data)
    if not plain:
        return None
    size = plain[-1]
    if not 1 <= size <= 16 or plain[-size:] != bytes([size]) * size:
        return None
    return plain[:-size]
