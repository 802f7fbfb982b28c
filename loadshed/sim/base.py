"""What every simulated device shares: loopback only, an outlet it drives, fault switches.

A simulated device owns a listening server on a 127.0.0.0/8 address. Its `fault` can be
switched at run time from any thread through the house's loop:

- DOWN: the listener is closed and open connections dropped (connection refused);
- HUNG: connections are accepted and requests read, never answered;
- SLOW: every answer waits `slow_s` seconds first;
- LOST_REPLY: each request is carried out, but its reply never comes (Wi-Fi lost it): a
  switch goes through, and the client sees only silence (legacy Kasa and Tuya);
- BAD_AUTH: the device rejects the client's password, credentials or key the way the real
  one does (401, AuthenticationError, a reply the client cannot decrypt).
"""

from __future__ import annotations

import abc
import asyncio
import ipaddress
from dataclasses import dataclass
from enum import Enum
from typing import Final, Protocol

LOOPBACK: Final = ipaddress.ip_network("127.0.0.0/8")


class Fault(Enum):
    NONE = "none"
    DOWN = "down"
    HUNG = "hung"
    SLOW = "slow"
    LOST_REPLY = "lost-reply"
    BAD_AUTH = "bad-auth"


def check_loopback(host: str) -> str:
    """Return host if it is an address in 127.0.0.0/8; raise ValueError otherwise."""
    if ipaddress.ip_address(host) not in LOOPBACK:
        raise ValueError(f"simulators bind 127.0.0.0/8 only, not {host}")
    return host


@dataclass
class Outlet:
    """One switchable load in the simulated house (a plug, or one outlet of a strip)."""

    name: str
    watts: float
    on: bool = True


class SimDevice(abc.ABC):
    """Base of every simulated device: a loopback listener with run-time fault switches.

    Subclasses implement `_listen(host, port)` (bind and return an object with an async
    `aclose()`), and call `await self.obey_fault()` before each answer.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = check_loopback(host)
        self.port = port
        self.fault = Fault.NONE
        self.slow_s = 2.0
        self._closer: Closer | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        """Bind (port 0 picks a free port, kept across DOWN and back)."""
        self._closer = await self._listen(self.host, self.port)

    async def stop(self) -> None:
        if self._closer is not None:
            closer, self._closer = self._closer, None
            await closer.aclose()

    async def set_fault(self, fault: Fault, slow_s: float | None = None) -> None:
        """Switch the fault; DOWN closes the listener, leaving DOWN opens it on the same port."""
        if slow_s is not None:
            self.slow_s = slow_s
        was_down = self.fault is Fault.DOWN
        self.fault = fault
        if fault is Fault.DOWN and not was_down:
            await self.stop()
        elif was_down and fault is not Fault.DOWN:
            await self.start()

    async def obey_fault(self) -> None:
        """Hang forever when HUNG, wait slow_s when SLOW; return at once otherwise."""
        if self.fault is Fault.HUNG:
            await asyncio.Event().wait()  # cancelled when the connection or server goes
        elif self.fault is Fault.SLOW:
            await asyncio.sleep(self.slow_s)

    @abc.abstractmethod
    async def _listen(self, host: str, port: int) -> Closer:
        """Bind host:port (0: any free port), set self.port, return what closes it all."""


class Closer(Protocol):
    """Something `SimDevice.stop` can close: a server plus the connections it holds."""

    async def aclose(self) -> None: ...


class TcpCloser:
    """Close an asyncio server and every connection it accepted (a device switched off)."""

    def __init__(self, server: asyncio.Server, writers: set[asyncio.StreamWriter]) -> None:
        self.server = server
        self.writers = writers

    async def aclose(self) -> None:
        self.server.close()
        for writer in list(self.writers):
            writer.close()
        self.writers.clear()
        await self.server.wait_closed()


@dataclass
class SiteState:
    """What the simulated Powerwall reports; the house's battery model keeps it current.

    Powers in W with the gateway's signs: site + importing from the grid, battery + discharging,
    load always +, solar + producing.
    """

    grid_status: str = "SystemGridConnected"
    battery_pct: float = 80.0
    load_w: float = 0.0
    solar_w: float = 0.0
    site_w: float = 0.0
    battery_w: float = 0.0
