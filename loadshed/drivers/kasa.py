"""TP-Link Kasa plugs and power strips, through python-kasa.

A `KasaHost` is one device on the network (one address, one connection). After `connect()` its
`switches` are what loadshed switches: a plug is one `KasaSwitch` named by its alias; a power
strip gives one `KasaSwitch` per outlet, named by the outlet's own alias and switched on its own
(never the whole strip). Siblings share the strip's connection; the host runs one call at a time
so a switch and its read-back are never interleaved with a sibling's.

Every call is bounded by `asyncio.timeout` and returns an `Outcome`; nothing here raises. The
bound matters: python-kasa retries internally, so a hung plug would cost 4 x timeout + 3 s per
call (LIBRARIES.md section 2). A switch call (switch and read back) takes at most `timeout_s`;
`connect()` at most 2 x `timeout_s` per way tried and 3 x `timeout_s` + the discovery wait in
all. Errors are mapped once, into words the owner can act on.

KLAP devices want `timeout_s` of 2 s or more: after one failed HTTP connection python-kasa
keeps 0.25 s between all later requests to that device, and the first call after a device
restart also redoes the handshake (about 1.25 s on loopback).

How a host is reached, first way that works (and remembered for the next `connect()`):
1. the legacy XOR protocol on the given port, or 9999;
2. if that port refused or spoke something else, and a username is set: KLAP over HTTP on the
   given port, or 80, carrying the legacy JSON (login v2, then v1);
3. if an HTTP server answered there but not as such a device: a unicast discovery of that one
   address, which tells SMART from IOT devices and their port. Never a broadcast.
A timeout stops the search: a device that swallows requests would swallow the others too.
This module never logs or returns the password.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import math
import time
from collections.abc import Callable, Iterator
from typing import Final, TypeVar

from kasa import (
    AuthenticationError,
    Credentials,
    Device,
    DeviceConfig,
    Discover,
    KasaException,
    Module,
    UnsupportedDeviceError,
)
from kasa.deviceconfig import (
    DeviceConnectionParameters,
    DeviceEncryptionType,
    DeviceFamily,
)

from loadshed.drivers.backoff import LoginGuard
from loadshed.model import Kind, Outcome, Power, Status

_LOG = logging.getLogger(__name__)
_E = TypeVar("_E", bound=BaseException)

LEGACY_PORT: Final = 9999  # XOR protocol, every Kasa plug before 2023 firmware
KLAP_PORT: Final = 80  # KLAP over plain HTTP, newer firmware
CONNECT_STEP_CALLS: Final = 2  # one way of connecting: 2 (plug) to 8 (strip) round trips
CONNECT_CALLS: Final = 3  # all ways together, in units of timeout_s, plus the discovery wait
CLOSE_TIMEOUT_S: Final = 2.0  # longest a close may wait for the device to hang up
DETAIL_MAX_CHARS: Final = 120  # an Outcome's detail is one line in a table

LOGIN_REJECTED: Final = "TP-Link login rejected: check KASA_USERNAME and KASA_PASSWORD"
REFUSED: Final = "connection refused (is it powered and on the network?)"
REFUSED_NO_LOGIN: Final = (
    "connection refused (is it powered and on the network? newer firmware needs KASA_USERNAME)"
)
NOT_LEGACY: Final = "not a legacy Kasa plug; newer firmware needs KASA_USERNAME and KASA_PASSWORD"
UNREACHABLE_ERRNOS: Final = {
    errno.EHOSTUNREACH: "no route to it (is it on the network?)",
    errno.ENETUNREACH: "no route to it (is it on the network?)",
    errno.EHOSTDOWN: "host is down (is it powered?)",
}


class _NotLegacy(KasaException):
    """Something answered on the legacy port, not in the legacy protocol; no login to try."""


class KasaHost:
    """One Kasa device at host[:port]; after `connect()`, its outlets as `switches`."""

    def __init__(
        self,
        host: str,
        port: int | None = None,
        *,
        username: str = "",
        password: str = "",
        timeout_s: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self._clock = clock
        self._login_guard = LoginGuard()
        self.port = port
        self.timeout_s = timeout_s
        self.switches: tuple[KasaSwitch, ...] = ()
        self._username = username
        self._password = password
        self._device: Device | None = None
        self._way: DeviceConfig | None = None  # the config that worked last time
        self._way_name = ""
        self._tried_port: int | None = None  # the port of the last way tried
        self._lock = asyncio.Lock()
        self._open_switches = 0

    @property
    def address(self) -> str:
        """Return "host:port" of the way that worked, else of the last tried, else legacy."""
        if self._way is not None:
            return f"{self.host}:{_port_of(self._way)}"
        return f"{self.host}:{self._tried_port or self.port or LEGACY_PORT}"

    @property
    def via(self) -> str:
        """Return how the device was reached: "XOR", "KLAP v2", "discovery", or ""."""
        return self._way_name

    def __repr__(self) -> str:
        return f"KasaHost({self.address}, via={self._way_name or '-'})"

    async def connect(self) -> Outcome:
        """Find the device and its outlets; fill `switches`. Never raises.

        After a rejected TP-Link login it does not try again before the guard allows
        (drivers/backoff.py): repeated failed logins lock the account's owner out.
        """
        now = self._clock()
        if not self._login_guard.may_try(now):
            return Outcome.failed(
                f"{LOGIN_REJECTED}; next login attempt in {self._login_guard.wait_s(now)} s"
            )
        budget_s = CONNECT_CALLS * self.timeout_s + self._discovery_s
        try:
            async with asyncio.timeout(budget_s), self._lock:
                await self._drop()
                device = await self._reach()
        except Exception as err:
            outcome = self._outcome_of(err)
            if outcome.detail == REFUSED and not self._username:
                outcome = Outcome.unreachable(REFUSED_NO_LOGIN)
            if outcome.detail == LOGIN_REJECTED:
                pause_s = self._login_guard.rejected(self._clock())
                outcome = Outcome.failed(f"{LOGIN_REJECTED}; next login attempt in {pause_s:.0f} s")
            _LOG.debug("kasa %s: cannot connect: %s", self.address, outcome.detail)
            return outcome
        self._login_guard.accepted()
        self._device = device
        self.switches = self._make_switches(device)
        self._open_switches = len(self.switches)
        _LOG.info(
            "kasa %s: %s %r via %s, %d switch(es)",
            self.address,
            device.model,
            device.alias,
            self._way_name,
            len(self.switches),
        )
        detail = f"{device.model} via {self._way_name}"
        if device.children:
            return Outcome.ok(None, detail=f"{detail}, {len(device.children)} outlets")
        return Outcome.ok(_power(device), watts=_watts(device), detail=detail)

    async def close(self) -> None:
        """Hang up. Never raises."""
        self.switches = ()
        await self._drop()

    async def _drop(self) -> None:
        device, self._device = self._device, None
        if device is None:
            return
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await device.disconnect()
        except Exception as err:
            _LOG.debug("kasa %s: error while hanging up: %r", self.address, err)

    # --- finding the device -----------------------------------------------------------------

    async def _reach(self) -> Device:
        if self._way is not None:
            try:
                return await self._try(dataclasses.replace(self._way), self._way_name)
            except Exception as err:
                if _is_timeout(err) or _find(err, AuthenticationError) is not None:
                    raise
                _LOG.debug("kasa %s: the remembered way failed: %r", self.address, err)
        try:
            return await self._try(self._legacy_config(), "XOR")
        except KasaException as err:
            if _is_timeout(err) or isinstance(err, UnsupportedDeviceError):
                raise
            if not self._username and _is_connection(err):
                raise
            if not self._username:
                raise _NotLegacy(_reason(err)) from err
            _LOG.debug("kasa %s: not a legacy device (%r), trying KLAP", self.address, err)
        try:
            return await self._try_klap()
        except KasaException as err:
            if _is_timeout(err) or _find(err, AuthenticationError) or _is_connection(err):
                raise
            klap_error = err
        _LOG.debug(
            "kasa %s: HTTP but not IOT-over-KLAP (%r), discovering", self.address, klap_error
        )
        try:
            return await self._discover()
        except KasaException as err:
            if _find(err, AuthenticationError) or isinstance(err, UnsupportedDeviceError):
                raise
            _LOG.debug("kasa %s: discovery failed too: %r", self.address, err)
            raise klap_error from None

    async def _try(self, config: DeviceConfig, name: str) -> Device:
        self._tried_port = _port_of(config)
        async with asyncio.timeout(CONNECT_STEP_CALLS * self.timeout_s):
            device = await Device.connect(config=config)
        self._way, self._way_name = config, name
        return device

    async def _try_klap(self) -> Device:
        """Log in with v2 hashes (current firmware), then v1 (early KLAP firmware).

        A device expecting the other version rejects the login exactly as a wrong password
        does, so only a rejection leads to the second try.
        """
        try:
            return await self._try(self._klap_config(2), "KLAP v2")
        except KasaException as err:
            if _find(err, AuthenticationError) is None:
                raise
        return await self._try(self._klap_config(1), "KLAP v1")

    async def _discover(self) -> Device:
        async with asyncio.timeout(self._discovery_s + CONNECT_STEP_CALLS * self.timeout_s):
            device = await Discover.discover_single(
                self.host,
                port=self.port,
                discovery_timeout=self._discovery_s,
                timeout=self._library_timeout,
                credentials=self._credentials,
            )
            if device is None:
                raise KasaException("discovery found an unsupported device")
            try:
                await device.update()
            except BaseException:
                await device.disconnect()
                raise
        self._way, self._way_name = device.config, "discovery"
        return device

    @property
    def _library_timeout(self) -> int:
        """Return python-kasa's own per-request timeout: longer than any deadline of ours.

        Only our asyncio.timeout may fire. When the library's timer (aiohttp's, for KLAP) fires
        at the same moment, it can swallow our cancellation and retry past our deadline (seen:
        1.5 s instead of 1.0 s). A device that does not answer within our deadline is given up
        on; the library's retry-after-timeout (4 x timeout + 3 s) never starts.
        """
        return math.ceil(CONNECT_STEP_CALLS * self.timeout_s) + 1

    @property
    def _discovery_s(self) -> int:
        """Return how long a unicast discovery waits for its answer (whole seconds)."""
        return max(1, math.ceil(self.timeout_s))

    @property
    def _credentials(self) -> Credentials | None:
        if not self._username:
            return None
        return Credentials(self._username, self._password)

    def _legacy_config(self) -> DeviceConfig:
        return DeviceConfig(host=self.host, port_override=self.port, timeout=self._library_timeout)

    def _klap_config(self, login_version: int) -> DeviceConfig:
        return DeviceConfig(
            host=self.host,
            port_override=self.port or KLAP_PORT,
            timeout=self._library_timeout,
            credentials=self._credentials,
            connection_type=DeviceConnectionParameters(
                DeviceFamily.IotSmartPlugSwitch,
                DeviceEncryptionType.Klap,
                login_version=login_version,
            ),
        )

    def _make_switches(self, device: Device) -> tuple[KasaSwitch, ...]:
        if not device.children:
            return (KasaSwitch(self, None, device.alias or self.address, self.address),)
        return tuple(
            KasaSwitch(
                self, child.device_id, child.alias or f"{device.alias} {n}", f"{self.address}/{n}"
            )
            for n, child in enumerate(device.children, start=1)
        )

    # --- calls from the switches ------------------------------------------------------------

    async def _call(self, switch: KasaSwitch, turn_on: bool | None) -> Outcome:
        """Switch (unless turn_on is None), then read back; bounded by timeout_s in all."""
        try:
            # A strip serialises its outlets: each call's budget starts when it gets the
            # device, not while it waits behind its siblings (each of them bounded too).
            async with asyncio.timeout(self.timeout_s * max(1, self._open_switches)):
                await self._lock.acquire()
        except TimeoutError:
            return Outcome.unreachable(f"no answer in {self.timeout_s:g} s (busy)")
        try:
            async with asyncio.timeout(self.timeout_s):
                device = self._device
                if device is None:
                    return Outcome.unreachable("not connected")
                target = _find_target(device, switch.child_id)
                if turn_on is True:
                    await target.turn_on()
                elif turn_on is False:
                    await target.turn_off()
                await _refresh(device, target)
                power, watts = _power(target), _watts(target)
        except Exception as err:
            outcome = self._outcome_of(err)
            _LOG.debug("kasa %s: %s: %s", switch.address, switch.name, outcome.detail)
            return outcome
        finally:
            self._lock.release()
        if turn_on is not None and power is not (Power.ON if turn_on else Power.OFF):
            asked = "on" if turn_on else "off"
            return Outcome(Status.FAILED, power, f"switched {asked}, but it reads {power.value}")
        return Outcome.ok(power, watts=watts)

    async def _release(self) -> None:
        """One switch is closed; hang up when the last one is."""
        self._open_switches -= 1
        if self._open_switches <= 0:
            await self.close()

    def _outcome_of(self, err: BaseException) -> Outcome:
        """Map an error from python-kasa (or our own deadline) to an Outcome, once."""
        if _find(err, AuthenticationError) is not None:
            return Outcome.failed(LOGIN_REJECTED)
        if _find(err, _NotLegacy) is not None:
            return Outcome.failed(NOT_LEGACY)
        if isinstance(err, UnsupportedDeviceError):
            return Outcome.failed(_clip(f"not a plug or strip loadshed can switch: {err}"))
        if _is_timeout(err):
            return Outcome.unreachable(f"no answer in {self.timeout_s:g} s")
        for link in _chain(err):
            if isinstance(link, OSError) and link.errno == errno.ECONNREFUSED:
                return Outcome.unreachable(REFUSED)
            if isinstance(link, OSError) and link.errno in UNREACHABLE_ERRNOS:
                return Outcome.unreachable(UNREACHABLE_ERRNOS[link.errno])
        if _find(err, KasaException) is not None:
            return Outcome.unreachable(_reason(err))
        _LOG.warning("kasa %s: unexpected error from python-kasa", self.address, exc_info=err)
        return Outcome.failed(_clip(f"unexpected reply ({type(err).__name__}: {err})"))


class KasaSwitch:
    """One plug, or one outlet of a strip, on a `KasaHost`. Implements `Switch`."""

    def __init__(self, host: KasaHost, child_id: str | None, name: str, address: str) -> None:
        self.name = name
        self.kind = Kind.KASA
        self.address = address
        self.child_id = child_id  # None: the plug itself
        self._host = host
        self._closed = False

    def __repr__(self) -> str:
        return f"KasaSwitch({self.name!r} at {self.address})"

    async def read(self) -> Outcome:
        """Read whether it is on (and its watts if it has a meter). Never raises."""
        return await self._do(None)

    async def off(self) -> Outcome:
        """Switch it off, read it back, report that. Never raises."""
        return await self._do(False)

    async def on(self) -> Outcome:
        """Switch it on, read it back, report that. Never raises."""
        return await self._do(True)

    async def close(self) -> None:
        """Let go of the host; the last switch of a host to close hangs up. Never raises."""
        if not self._closed:
            self._closed = True
            await self._host._release()

    async def _do(self, turn_on: bool | None) -> Outcome:
        if self._closed:
            return Outcome.failed("closed")
        return await self._host._call(self, turn_on)


def _find_target(device: Device, child_id: str | None) -> Device:
    if child_id is None:
        return device
    for child in device.children:
        if child.device_id == child_id:
            return child
    raise KasaException(f"the strip no longer has outlet {child_id}")


async def _refresh(device: Device, target: Device) -> None:
    """Read the target's state: a strip outlet needs the strip's sysinfo, then its own meter."""
    if target is device:
        await device.update()
    else:
        # the strip's own update would also query every sibling's meter; one is enough here
        await device.update(update_children=False)
        await target.update()


def _power(device: Device) -> Power:
    return Power.ON if device.is_on else Power.OFF


def _watts(device: Device) -> float | None:
    energy = device.modules.get(Module.Energy)
    if energy is None:
        return None
    watts = energy.current_consumption
    return None if watts is None else float(watts)


def _port_of(config: DeviceConfig) -> int:
    if config.port_override:
        return config.port_override
    if config.connection_type.http_port:
        return config.connection_type.http_port
    return KLAP_PORT if config.uses_http else LEGACY_PORT


def _chain(err: BaseException) -> Iterator[BaseException]:
    """Yield err and its causes (python-kasa wraps: "Communication error" from the real one)."""
    seen: set[int] = set()
    link: BaseException | None = err
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ or (None if link.__suppress_context__ else link.__context__)


def _find(err: BaseException, kind: type[_E]) -> _E | None:
    return next((link for link in _chain(err) if isinstance(link, kind)), None)


def _is_timeout(err: BaseException) -> bool:
    # kasa.TimeoutError subclasses the builtin, as does our own asyncio.timeout's
    return _find(err, TimeoutError) is not None


def _is_connection(err: BaseException) -> bool:
    """Did the connection itself fail (refused, reset, no route), rather than the protocol?"""
    return _find(err, OSError) is not None


def _reason(err: BaseException) -> str:
    """Return the most telling message in the chain, skipping python-kasa's generic wrappers."""
    for link in _chain(err):
        text = str(link)
        if text and not text.startswith("Communication error on"):
            return _clip(text)
    return _clip(type(err).__name__)


def _clip(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= DETAIL_MAX_CHARS else line[: DETAIL_MAX_CHARS - 1] + "…"
