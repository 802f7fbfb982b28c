"""Shared test fixtures.

The test run may only reach 127.0.0.0/8: pytest-socket blocks every other connect()
(`--allow-hosts=127.0.0.0/8` in pyproject.toml), and `_loopback_sendto` below blocks UDP
datagrams to anything else (discovery and Wake-on-LAN send with sendto, not connect). Unix
sockets (the daemon's control socket) are allowed: they never leave the machine.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loadshed.sim.loop import LoopThread

FIXTURES = Path(__file__).parent / "fixtures"
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")

_real_sendto = socket.socket.sendto


def _loopback_sendto(self: socket.socket, data: Any, *args: Any) -> int:
    address = args[-1]
    host = address[0] if isinstance(address, tuple) else None
    if host is not None and ipaddress.ip_address(socket.gethostbyname(host)) not in LOOPBACK:
        raise RuntimeError(f"test tried to send a datagram to {host}: only 127.0.0.0/8 is allowed")
    return _real_sendto(self, data, *args)


socket.socket.sendto = _loopback_sendto  # type: ignore[method-assign,assignment]

# The default state dir (check's trust.json and outbox) is a private temporary one: the test
# run never writes into the real ~/.local/state/loadshed.
os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="loadshed-test-state-")
# And the config dir an installed loadshed looks in when there is no ./config.py.
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="loadshed-test-config-")
# So is the runtime dir where daemons claim their house (short: a socket path fits 107 bytes).
os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="ls-run-")


@pytest.fixture
def sim_loop() -> Iterator[LoopThread]:
    """A background asyncio loop for simulators; closed (every server stopped) after the test."""
    loop = LoopThread()
    yield loop
    loop.close()
