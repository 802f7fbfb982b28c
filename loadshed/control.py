"""The daemon's control socket: every screen, `status`, `shed`, `restore` and `pin` is a client.

The daemon listens on `control.sock` in its state dir, and on a per-user runtime socket named
after the house (its Powerwall), so a client aimed at the house by another state dir still
finds the one daemon. Both are mode 0600, and each connecting peer's uid is checked with the
kernel's peer credentials (SO_PEERCRED): the daemon's own user or root, nobody else.

The protocol is JSON, one object a line, versioned (`PROTOCOL`). The daemon speaks first:

    {"type": "hello", "v": 1, "pid": 4242, "state_dir": "...", "house": "192.168.1.50"}

then answers requests:

    {"op": "status"}                         → {"type": "snapshot", "snapshot": {...}}
    {"op": "subscribe"}                      → a snapshot now, and one on every change
    {"op": "shed", "id": "x"}                → {"type": "accepted", "id": "x", "actions": [...]}
    {"op": "restore", "id": "x"}               then {"type": "outcome", "id": "x", ...} per action
    {"op": "pin", "id": "x", "device": "TV", "pin": "on"|"off"|"auto"}
                                               then {"type": "done", "id": "x", "waiting": [...]}

A client that sends garbage, a line longer than MAX_LINE, or half a line and then nothing for
PARTIAL_LINE_S is told why and disconnected; one that stops reading is disconnected once its
unsent data has waited STALL_S. The daemon never waits on a client: snapshots are sent latest
first (a slow screen skips the ones it missed), and the engine only sets a flag per client.

Running a command and reporting its outcomes (`command_of`, `run_command`) is shared with the
phone page (web.py), which answers over HTTP what this socket sends as lines.

Must not: block the engine's loop, accept a peer of another uid, or put a secret on the wire
(snapshots never hold one).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import socket
import struct
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from loadshed.engine import Command, CommandKind, Engine, Snapshot
from loadshed.errors import LoadshedError
from loadshed.model import Action, Outcome, Pin
from loadshed.wire import WireError, decode, encode

_LOG = logging.getLogger(__name__)

PROTOCOL: Final = 1
SOCKET_NAME: Final = "control.sock"
MAX_LINE: Final = 64 * 1024  # a request is a few hundred bytes; a snapshot a few kB
PARTIAL_LINE_S: Final = 5.0  # half a request, then silence: disconnected
STALL_S: Final = 10.0  # a client that reads nothing for this long is disconnected
COMMAND_WAIT_S: Final = 600.0  # a command's outcomes are awaited this long (a NAS shutdown)
CONNECT_TIMEOUT_S: Final = 3.0  # a client: the daemon's hello must come within this
PINS: Final = {"on": Pin.ON, "off": Pin.OFF, "auto": None}  # a pin as the owner words it
PIN_WORDS: Final = {pin: word for word, pin in PINS.items()}
SUN_PATH_BYTES: Final = 108  # a Unix socket address holds a path this long, its NUL included
PROC_FD: Final = Path("/proc/self/fd")  # Linux: a directory's open descriptor names it, short
_PEERCRED: Final = struct.Struct("3i")  # struct ucred: pid, uid, gid


class NoDaemon(LoadshedError):
    """No daemon answers on the socket(s) tried."""


# --- where the sockets are --------------------------------------------------------------------


def runtime_dir() -> Path:
    """The per-user runtime dir: $XDG_RUNTIME_DIR/loadshed, else a private one in /tmp."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    root = Path(base) if base else Path(tempfile.gettempdir()) / f"loadshed-{os.getuid()}"
    return root / "loadshed" if base else root


def house_socket(house: str) -> Path:
    """The runtime socket of the daemon watching the Powerwall at `house`."""
    digest = hashlib.sha256(house.encode()).hexdigest()[:16]
    return runtime_dir() / f"house-{digest}.sock"


# --- the server (in the daemon, on the engine's loop) -----------------------------------------


@dataclass(eq=False)
class _Client:
    writer: asyncio.StreamWriter
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    feeding: asyncio.Task[None] | None = None


class ControlServer:
    """Serves one engine's snapshots and takes its commands, on one or more Unix sockets."""

    def __init__(self, engine: Engine, paths: list[Path], info: dict[str, Any]) -> None:
        self.engine = engine
        self.paths = paths
        self.info = {"type": "hello", "v": PROTOCOL, "pid": os.getpid(), **info}
        self._servers: list[asyncio.AbstractServer] = []
        self._clients: set[_Client] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._latest: Snapshot | None = None
        self._encoded: tuple[Snapshot, bytes] | None = None

    async def start(self) -> None:
        for path in self.paths:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # a dead daemon's: the caller made sure none answers there
            with reachable(path) as name:
                server = await asyncio.start_unix_server(self._serve, path=name, limit=MAX_LINE)
            path.chmod(0o600)
            self._servers.append(server)
        _LOG.info("control socket: %s", self.paths[0])

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for client in list(self._clients):
            client.writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        for path in self.paths:
            with contextlib.suppress(OSError):
                path.unlink()

    def publish(self, snapshot: Snapshot) -> None:
        """A new snapshot (on the engine's loop): each subscriber gets it when it can."""
        self._latest = snapshot
        for client in self._clients:
            client.changed.set()

    # --- one connection ---------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        client = _Client(writer)
        try:
            refusal = _peer_refused(writer)
            if refusal is not None:
                _LOG.warning("control socket: %s", refusal)
                await self._send(client, {"type": "error", "error": refusal})
                return
            self._clients.add(client)
            await self._send(client, self.info)
            async for request in _requests(reader):
                await self._answer(client, request)
        except _Goodbye as bye:
            with contextlib.suppress(ConnectionError, TimeoutError):
                await self._send(client, {"type": "error", "error": str(bye)})
        except (ConnectionError, TimeoutError):
            pass
        finally:
            self._clients.discard(client)
            if client.feeding is not None:
                client.feeding.cancel()
            writer.close()
            if task is not None:
                self._tasks.discard(task)

    async def _answer(self, client: _Client, request: dict[str, Any]) -> None:
        op = request.get("op")
        if op == "status":
            await self._send_raw(client, self._snapshot_line())
        elif op == "subscribe":
            if client.feeding is None:
                client.changed.set()
                client.feeding = asyncio.create_task(self._feed(client))
        elif op in ("shed", "restore", "pin"):
            command = _command(request)
            task = asyncio.create_task(
                self._run_command(client, str(request.get("id", "")), command)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            raise _Goodbye(f"unknown op {op!r}: expected status, subscribe, shed, restore or pin")

    async def _feed(self, client: _Client) -> None:
        """Send the latest snapshot whenever there is a new one; drop a client that stalls."""
        try:
            while True:
                await client.changed.wait()
                client.changed.clear()
                await self._send_raw(client, self._snapshot_line())
        except (ConnectionError, TimeoutError):
            client.writer.transport.abort()

    async def _run_command(self, client: _Client, request_id: str, command: Command) -> None:
        """Obey, say what was asked, then each outcome as it comes, then done."""

        async def report(doc: dict[str, Any]) -> None:
            await self._send(client, {"type": doc["type"], "id": request_id, **doc})

        try:
            await run_command(self.engine, command, report)
        except (ConnectionError, TimeoutError):
            client.writer.transport.abort()

    def _snapshot_line(self) -> bytes:
        snapshot = self._latest or self.engine.snapshot
        if self._encoded is None or self._encoded[0] is not snapshot:
            doc = {"type": "snapshot", "snapshot": encode(snapshot)}
            self._encoded = (snapshot, _line(doc))
        return self._encoded[1]

    async def _send(self, client: _Client, doc: dict[str, Any]) -> None:
        await self._send_raw(client, _line(doc))

    async def _send_raw(self, client: _Client, line: bytes) -> None:
        client.writer.write(line)
        async with asyncio.timeout(STALL_S):
            await client.writer.drain()


class _Goodbye(Exception):
    """The client broke the protocol: tell it why, and hang up."""


def _peer_refused(writer: asyncio.StreamWriter) -> str | None:
    """Why this peer may not talk to the daemon, or None: same uid as the daemon, or root."""
    sock = writer.get_extra_info("socket")
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    except (OSError, AttributeError) as err:
        return f"cannot tell who is connecting ({err}): refused"
    pid, uid, _ = _PEERCRED.unpack(raw)
    if uid in (os.getuid(), 0):
        return None
    return f"refused a connection from uid {uid} (pid {pid}): only uid {os.getuid()} and root"


async def _requests(reader: asyncio.StreamReader) -> AsyncIterator[dict[str, Any]]:
    """Each request line as an object; _Goodbye for garbage, too much, or too slow."""
    while True:
        try:
            first = await reader.read(1)  # idle as long as it likes between requests
            if not first:
                return
            async with asyncio.timeout(PARTIAL_LINE_S):
                rest = await reader.readuntil(b"\n") if first != b"\n" else b""
        except TimeoutError:
            raise _Goodbye(f"half a request, then nothing for {PARTIAL_LINE_S:g} s") from None
        except asyncio.LimitOverrunError:
            raise _Goodbye(f"a request longer than {MAX_LINE} bytes") from None
        except asyncio.IncompleteReadError:
            return
        line = (first + rest).strip()
        if not line:
            continue
        try:
            request = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise _Goodbye("not a JSON line") from None
        if not isinstance(request, dict):
            raise _Goodbye("a request is a JSON object")
        yield request


def _command(request: dict[str, Any]) -> Command:
    op = request["op"]
    try:
        return command_of(op, request.get("device"), request.get("pin"), origin=f"loadshed {op}")
    except ValueError as err:
        raise _Goodbye(str(err)) from None


# --- commands, shared with the phone page (web.py) ------------------------------------------

Report = Callable[[dict[str, Any]], Awaitable[None]]


def command_of(op: str, device: object, pin: object, *, origin: str) -> Command:
    """The Command for op "shed", "restore" or "pin" (with device and pin); ValueError if the
    pin's fields are not a name and "on", "off" or "auto"."""
    if op == "shed":
        return Command(CommandKind.FORCE_SHED, origin=origin)
    if op == "restore":
        return Command(CommandKind.FORCE_RESTORE, origin=origin)
    if op != "pin":
        raise ValueError(f"unknown command {op!r}: expected shed, restore or pin")
    if not isinstance(device, str) or not isinstance(pin, str) or pin not in PINS:
        raise ValueError('pin needs "device" (a name) and "pin": "on", "off" or "auto"')
    return Command(CommandKind.PIN, origin=origin, device=device, pin=PINS[pin])


async def run_command(
    engine: Engine, command: Command, report: Report, wait_s: float = COMMAND_WAIT_S
) -> None:
    """Obey command (on the engine's loop) and report, in order: what was asked
    ({"type": "accepted", "actions": [...]}), each outcome as it comes ({"type": "outcome",
    "action": ..., "outcome": ...}), then {"type": "done", "waiting": [...]}: the devices
    still switching after wait_s. What report raises ends it; the engine carries on."""
    asked: dict[int, Action] = {}
    outcomes: asyncio.Queue[tuple[Action, Outcome]] = asyncio.Queue()

    def listen(action: Action, outcome: Outcome) -> None:
        if id(action) in asked:
            outcomes.put_nowait((action, outcome))

    engine.result_listeners.add(listen)
    try:
        actions = engine.obey(command)
        asked.update((id(a), a) for a in actions)
        await report({"type": "accepted", "actions": [encode(a) for a in actions]})
        waiting = dict(asked)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                while waiting:
                    action, outcome = await outcomes.get()
                    waiting.pop(id(action), None)
                    await report(
                        {"type": "outcome", "action": encode(action), "outcome": encode(outcome)}
                    )
        await report({"type": "done", "waiting": [a.device for a in waiting.values()]})
    finally:
        engine.result_listeners.discard(listen)


@contextlib.contextmanager
def reachable(path: Path) -> Iterator[str]:
    """A name for the socket at path that fits a Unix socket address (108 bytes): the path
    itself, or on Linux the same file through an open descriptor of its directory — a state dir
    deep in a long home directory must not leave the daemon without its control socket."""
    name = str(path)
    if len(os.fsencode(name)) < SUN_PATH_BYTES or not PROC_FD.is_dir():
        yield name
        return
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"{PROC_FD}/{directory}/{path.name}"
    finally:
        os.close(directory)


def _line(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"


# --- the client (status, attach, shed, restore, pin) ------------------------------------------


class Connection:
    """One blocking connection to a daemon (the CLI's side)."""

    def __init__(self, path: Path, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout_s)
        try:
            with reachable(path) as name:
                self._sock.connect(name)
        except OSError as err:
            self._sock.close()
            raise NoDaemon(f"no loadshed answers at {path} ({err.strerror or err})") from None
        self._file = self._sock.makefile("rb")
        try:
            self.hello = self.receive()
        except (OSError, ValueError, NoDaemon) as err:
            self.close()
            raise NoDaemon(f"no loadshed answers at {path} ({err})") from None
        if self.hello.get("type") == "error":
            self.close()
            raise LoadshedError(f"the daemon refused: {self.hello.get('error')}")
        if self.hello.get("type") != "hello" or self.hello.get("v") != PROTOCOL:
            self.close()
            raise LoadshedError(f"the daemon at {path} speaks another protocol: {self.hello}")

    def send(self, doc: dict[str, Any]) -> None:
        self._sock.sendall(_line(doc))

    def receive(self, timeout_s: float | None = CONNECT_TIMEOUT_S) -> dict[str, Any]:
        self._sock.settimeout(timeout_s)
        line = self._file.readline(MAX_LINE * 64)
        if not line:
            raise NoDaemon("the daemon hung up")
        doc = json.loads(line)
        if not isinstance(doc, dict):
            raise ValueError(f"not an object: {line[:80]!r}")
        return doc

    def snapshot(self) -> Snapshot:
        self.send({"op": "status"})
        return read_snapshot(self.receive())

    def command(self, op: str, **fields: str) -> Iterator[dict[str, Any]]:
        """Send one command; yield the daemon's accepted, outcome... and done messages."""
        request_id = uuid.uuid4().hex
        self.send({"op": op, "id": request_id, **fields})
        while True:
            doc = self.receive(timeout_s=COMMAND_WAIT_S + CONNECT_TIMEOUT_S)
            if doc.get("type") == "error":
                raise LoadshedError(f"the daemon refused: {doc.get('error')}")
            if doc.get("id") != request_id:
                continue  # a snapshot, if subscribed
            yield doc
            if doc.get("type") == "done":
                return

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(OSError):
            self._sock.close()


def read_snapshot(doc: dict[str, Any]) -> Snapshot:
    if doc.get("type") != "snapshot":
        raise LoadshedError(f"expected a snapshot from the daemon, got {doc.get('type')!r}")
    try:
        return decode(Snapshot, doc.get("snapshot"))
    except WireError as err:
        raise LoadshedError(f"the daemon's snapshot could not be read: {err}") from None


def connect_any(paths: list[Path]) -> Connection:
    """The first daemon that answers on one of paths; NoDaemon naming them all if none."""
    tried = []
    for path in paths:
        try:
            return Connection(path)
        except NoDaemon as err:
            tried.append(str(err))
    raise NoDaemon("; ".join(tried) or "no socket to try")


def answers(path: Path) -> dict[str, Any] | None:
    """The hello of the daemon listening at path, or None if none does."""
    try:
        connection = Connection(path)
    except LoadshedError:
        return None
    connection.close()
    return connection.hello
