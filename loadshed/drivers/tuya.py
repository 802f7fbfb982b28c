"""Tuya Wi-Fi plugs over the local protocol (3.1 to 3.5), through tinytuya.

A `TuyaPlug` is one switch: one plug, or one outlet (data point) of a multi-outlet device. It
owns the translation of tinytuya's error dicts into Outcomes worded for the owner. A `TuyaPool`
owns the threads tinytuya's blocking calls run on, one per plug.

This module must not block the event loop, let tinytuya scan the network (an address is always
given: without one it broadcasts for 18 s), log the local key, or raise into its caller.

Timing. Each call runs in the pool under `asyncio.timeout(timeout_s)`. tinytuya retries a
timed-out request once even at connection_retry_limit=1 (its minimum), and a 3.4 key exchange
reads twice, so a plug that accepts and never answers costs two socket timeouts: the socket
timeout is half of timeout_s, and the worker thread ends about when the caller gives up. A plug
must therefore answer each request within timeout_s / 2. A refused connection costs nothing
(connection_retry_delay=0; tinytuya's default makes it 20 s). A plug runs one call at a time,
so a hung plug holds one thread, its own. Outlets of one device take turns on its connection;
an outlet's timeout_s starts when it gets the device, its wait for the device is bounded by its
siblings' budgets, and when the device has just failed to answer one outlet the outlets waiting
behind it are answered "unreachable" at once.

Errors (tinytuya returns dicts, never raises): 901/902/905 unreachable; 900/904 wrong key or
protocol version; 914 a key that is not 16 characters or, on 3.4, a failed key exchange — which
is a wrong key when the plug answered, and no answer when it took a socket timeout.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import socket
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Final

import tinytuya  # type: ignore[import-untyped]

from loadshed.model import Kind, Outcome, Power, Status

_LOG = logging.getLogger(__name__)

DEFAULT_PORT: Final = 6668
DEFAULT_TIMEOUT_S: Final = 3.0
SOCKET_SHARE: Final = 0.5  # socket timeout / call budget: tinytuya waits out two socket timeouts
RETRY_LIMIT: Final = 1  # tinytuya's minimum: one connect, one resend after a timeout
RETRY_DELAY_S: Final = 0  # tinytuya's default sleeps 5 s between connects (a refused plug: 20 s)
KEY_CHARS: Final = 16  # AES-128 local key
VERSIONS: Final = (3.1, 3.2, 3.3, 3.4, 3.5)  # what tinytuya 1.20 speaks
POWER_DP: Final = "19"  # present power in 0.1 W, on plugs with a meter
DECIWATTS_PER_WATT: Final = 10.0
LIBRARY_LOG_LEVEL: Final = logging.INFO  # tinytuya's DEBUG lines print local and session keys

KEY_HINT: Final = "wrong local key or protocol version (check key and version in TUYA_DEVICES)"
KEY_LENGTH: Final = "local key must be 16 characters"
REFUSED: Final = "connection refused (is it powered and on the network?)"
SIBLING_SILENT: Final = "no answer: its device did not answer another outlet just now"

# Keep tinytuya's DEBUG output (keys, session keys, raw payloads) out of every log.
logging.getLogger("tinytuya").setLevel(LIBRARY_LOG_LEVEL)


class _Endpoint:
    """What one device's outlets share: its connection, taken in turn, and its last silence.

    Plugs allow few connections at a time, so outlets of one device take turns. Each outlet's
    budget starts when it gets the device, not while it waits behind its siblings; and when the
    device has just failed to answer one outlet, the outlets that were waiting behind it are told
    at once instead of each waiting out its own timeout on a device that is not answering.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.outlets: weakref.WeakSet[TuyaPlug] = weakref.WeakSet()
        self.silent_at = -math.inf  # monotonic time the device last failed to answer

    def queue_bound_s(self, timeout_s: float) -> float:
        """The longest an outlet waits for the device: one budget per sibling ahead of it."""
        return timeout_s * max(1, len(self.outlets) - 1)


_ENDPOINTS: dict[str, _Endpoint] = {}
_ENDPOINTS_GUARD = threading.Lock()


def _endpoint(address: str) -> _Endpoint:
    with _ENDPOINTS_GUARD:
        return _ENDPOINTS.setdefault(address, _Endpoint())


class TuyaPool:
    """The threads tinytuya calls run on: one per plug, so a hung plug blocks only itself."""

    def __init__(self, n_devices: int) -> None:
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, n_devices), thread_name_prefix="tuya"
        )

    def close(self) -> None:
        """Drop queued calls and let running ones end on their own socket timeouts."""
        self.executor.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> TuyaPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def tuya_executor(n_devices: int) -> concurrent.futures.ThreadPoolExecutor:
    """Return a thread pool with one thread per plug (the caller shuts it down)."""
    return TuyaPool(n_devices).executor


class TuyaPlug:
    """One Tuya plug, or one outlet (data point `dps`) of a multi-outlet Tuya device."""

    def __init__(
        self,
        name: str,
        dev_id: str,
        host: str,
        key: str,
        version: float,
        *,
        port: int = DEFAULT_PORT,
        dps: int = 1,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        executor: concurrent.futures.Executor,
    ) -> None:
        self.name = name
        self.kind = Kind.TUYA
        self.address = f"{host}:{port}"
        self.dev_id = dev_id
        self.host = host
        self.port = port
        self.version = float(version)  # a string version crashes tinytuya (jasonacox/tinytuya#507)
        self.dps = dps
        self.timeout_s = timeout_s
        self._key = key  # never logged, never in repr
        self._dp = str(dps)
        self._socket_timeout_s = timeout_s * SOCKET_SHARE
        self._executor = executor
        self._endpoint = _endpoint(self.address)
        self._endpoint.outlets.add(self)
        self._device: Any = None  # tinytuya.OutletDevice, built in the worker on first use
        self._inflight: concurrent.futures.Future[Outcome] | None = None

    def __repr__(self) -> str:
        return f"TuyaPlug({self.name!r}, {self.address}, dp {self.dps}, v{self.version:g})"

    async def read(self) -> Outcome:
        """Read whether the outlet is on (and its power, if the plug meters). Never raises."""
        return await self._call(self._read_now, "read")

    async def off(self) -> Outcome:
        """Switch the outlet off and report the state it is in after. Never raises."""
        return await self._call(lambda device: self._switch_now(device, on=False), "off")

    async def on(self) -> Outcome:
        """Switch the outlet on and report the state it is in after. Never raises."""
        return await self._call(lambda device: self._switch_now(device, on=True), "on")

    async def close(self) -> None:
        """Cut a call still in flight and close the plug's socket. Never raises."""
        try:
            self._abort()
            if self._device is not None and not self._busy():
                self._device.close()
        except Exception:
            _LOG.warning("%s: closing the Tuya connection failed", self.name, exc_info=True)

    # -- event loop side ---------------------------------------------------------------------

    async def _call(self, work: Callable[[Any], Outcome], what: str) -> Outcome:
        """Run work(device) on this plug's thread within timeout_s; map every failure."""
        problem = self._config_problem()
        if problem is not None:
            return Outcome.failed(problem)
        loop = asyncio.get_running_loop()
        got_device: asyncio.Future[None] = loop.create_future()
        queued: _Turn | None = None
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._wait_idle()
            # queued only now: this outlet's own previous call is not a sibling's silence
            queued = _Turn(loop, got_device, self._endpoint.queue_bound_s(self.timeout_s))
            future = self._executor.submit(self._exclusive, work, queued)
            self._inflight = future
            result = asyncio.wrap_future(future)
            try:
                async with asyncio.timeout(queued.bound_s):
                    waiting: list[asyncio.Future[Any]] = [got_device, result]
                    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            except TimeoutError:
                queued.given_up.set()
                return Outcome.unreachable(f"busy with its other outlets for {queued.bound_s:g} s")
            async with asyncio.timeout(self.timeout_s):  # starts when it has the device
                outcome = await result
        except TimeoutError:
            if (
                queued is not None and queued.had_device
            ):  # before the abort lets the next outlet take the device
                self._endpoint.silent_at = time.monotonic()
            self._abort()
            return Outcome.unreachable(f"no answer in {self.timeout_s:g} s")
        except asyncio.CancelledError:
            if queued is not None:
                queued.given_up.set()
            self._abort()
            raise
        except Exception as err:
            _LOG.warning("%s: Tuya %s failed unexpectedly", self.name, what, exc_info=True)
            return Outcome.failed(f"unexpected {type(err).__name__} during {what}: {err}")
        return outcome

    def _config_problem(self) -> str | None:
        """Say what is wrong with the plug's settings before anything reaches the network."""
        try:
            key_chars = len(self._key.encode("latin1"))
        except UnicodeEncodeError:
            key_chars = 0
        if key_chars != KEY_CHARS:
            return KEY_LENGTH  # an empty key would also make tinytuya read ./devices.json
        if self.version not in VERSIONS:
            return f"protocol version {self.version:g} unknown (3.1, 3.3, 3.4 or 3.5)"
        return None

    def _busy(self) -> bool:
        return self._inflight is not None and not self._inflight.done()

    async def _wait_idle(self) -> None:
        """Wait for this plug's previous call if its thread still runs (one thread per plug)."""
        previous = self._inflight
        if previous is not None and not previous.done():
            await asyncio.wait([asyncio.wrap_future(previous)])

    def _abort(self) -> None:
        """Shut the socket a timed-out call waits on, so its thread ends now. Best effort."""
        sock = getattr(self._device, "socket", None)
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    # -- worker thread side ------------------------------------------------------------------

    def _exclusive(self, work: Callable[[Any], Outcome], turn: _Turn) -> Outcome:
        """Take the device's connection in turn with its other outlets, then run work."""
        lock = self._endpoint.lock
        if not lock.acquire(timeout=turn.bound_s):
            return Outcome.unreachable(f"busy with its other outlets for {turn.bound_s:g} s")
        try:
            if turn.given_up.is_set():
                return Outcome.unreachable(f"busy with its other outlets for {turn.bound_s:g} s")
            if self._endpoint.silent_at > turn.queued_at:
                return Outcome.unreachable(SIBLING_SILENT)
            turn.start()
            outcome = work(self._device_now())
            if outcome.status is Status.UNREACHABLE:
                self._endpoint.silent_at = time.monotonic()
            return outcome
        finally:
            lock.release()

    def _device_now(self) -> Any:
        if self._device is None:
            self._device = tinytuya.OutletDevice(
                dev_id=self.dev_id,
                address=self.host,  # never None or "Auto": that broadcasts to find the plug
                local_key=self._key,
                version=self.version,
                port=self.port,
                connection_timeout=self._socket_timeout_s,
                connection_retry_limit=RETRY_LIMIT,
                connection_retry_delay=RETRY_DELAY_S,
            )
        return self._device

    def _read_now(self, device: Any) -> Outcome:
        started = time.monotonic()
        reply = device.status()
        return self._from_status(reply, time.monotonic() - started)

    def _switch_now(self, device: Any, *, on: bool) -> Outcome:
        wanted = Power.ON if on else Power.OFF
        started = time.monotonic()
        reply = device.set_status(on, self.dps)
        elapsed_s = time.monotonic() - started
        if isinstance(reply, Mapping) and "Err" in reply:
            return self._from_error(reply, elapsed_s)
        reported = reply.get("dps") if isinstance(reply, Mapping) else None
        if isinstance(reported, Mapping) and isinstance(reported.get(self._dp), bool):
            outcome = Outcome.ok(Power.ON if reported[self._dp] else Power.OFF)
        else:
            # None: the plug acknowledged but reported nothing (or other dps) before the socket
            # timeout. Ask it.
            _LOG.debug("%s: %s not confirmed by the plug, reading it", self.name, wanted.value)
            outcome = self._read_now(device)
        power = outcome.power
        if outcome.is_ok and power is not None and power is not wanted:
            return Outcome(
                Status.FAILED, power, f"asked to switch {wanted.value}, it reports {power.value}"
            )
        return outcome

    def _from_status(self, reply: object, elapsed_s: float) -> Outcome:
        if not isinstance(reply, Mapping):
            return Outcome.failed("empty answer to a status query")
        if "Err" in reply:
            return self._from_error(reply, elapsed_s)
        dps = reply.get("dps")
        if not isinstance(dps, Mapping) or self._dp not in dps:
            have = ", ".join(str(dp) for dp in dps) if isinstance(dps, Mapping) else "none"
            return Outcome.failed(f"no dp {self.dps} on this device (it reports dps {have})")
        value = dps[self._dp]
        if not isinstance(value, bool):
            return Outcome.failed(f"dp {self.dps} is {value!r}, not an on/off switch")
        return Outcome.ok(Power.ON if value else Power.OFF, watts=_watts(dps))

    def _from_error(self, reply: Mapping[str, object], elapsed_s: float) -> Outcome:
        """Map one of tinytuya's error dicts to an Outcome the owner can act on."""
        code = str(reply.get("Err"))
        if code == "901":
            return Outcome.unreachable(REFUSED)
        if code == "902":
            return Outcome.unreachable(f"no answer in {self.timeout_s:g} s")
        if code == "905":
            return Outcome.unreachable(f"no connection in {self._socket_timeout_s:g} s")
        if code == "914" and elapsed_s >= self._socket_timeout_s:
            # 3.4: the key exchange got no answer before the socket timeout
            return Outcome.unreachable(f"no answer in {self.timeout_s:g} s")
        if code in ("900", "904", "914"):
            return Outcome.failed(KEY_HINT)
        return Outcome.failed(f"tinytuya error {code}: {reply.get('Error')}")


class _Turn:
    """One call's place in its device's queue, seen from both the event loop and the worker."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, got_device: asyncio.Future[None], bound_s: float
    ) -> None:
        self.queued_at = time.monotonic()
        self.bound_s = bound_s
        self.given_up = threading.Event()  # the caller stopped waiting for the device
        self.had_device = False
        self._loop = loop
        self._got_device = got_device

    def start(self) -> None:
        """The worker has the device: the call's own budget starts now (worker thread)."""
        self.had_device = True
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
            self._loop.call_soon_threadsafe(_settle, self._got_device)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _watts(dps: Mapping[str, object]) -> float | None:
    raw = dps.get(POWER_DP)
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return raw / DECIWATTS_PER_WATT
    return None
