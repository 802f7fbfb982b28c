"""`loadshed run --no-ui` as systemd runs it (Type=notify, WatchdogSec): READY=1 once it watches
the house, WATCHDOG=1 while its poll loop lives, STOPPING=1 on the way out — sent to a real
datagram socket standing in for systemd's — and lines without a timestamp under journald."""

from __future__ import annotations

import asyncio
import re
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from loadshed.sdnotify import Notifier
from tests.e2e.conftest import Loadshed

pytestmark = pytest.mark.timeout(60)

Start = Callable[..., Loadshed]
WATCHDOG_USEC = 1_000_000  # 1 s: pings every 0.5 s


@pytest.fixture
def systemd() -> Iterator[socket.socket]:
    """A datagram socket where the daemon's notifications arrive, as systemd's would."""
    with tempfile.TemporaryDirectory(prefix="ls-notify-") as where:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(Path(where) / "notify"))
        sock.settimeout(20)
        yield sock
        sock.close()


def messages(sock: socket.socket, until: str) -> list[str]:
    got = []
    while until not in got:
        got.extend(sock.recv(4096).decode().splitlines())
    return got


def test_ready_then_watchdog_pings_then_stopping(systemd: socket.socket, start: Start) -> None:
    env = {
        "NOTIFY_SOCKET": systemd.getsockname(),
        "WATCHDOG_USEC": str(WATCHDOG_USEC),
        "JOURNAL_STREAM": "8:12345",  # as systemd sets it when stdout is the journal
    }
    daemon = start(env=env)
    first = messages(systemd, "READY=1")
    assert daemon.saw("ready:")  # READY=1 comes once it watches the house, not at launch
    assert any(m.startswith("STATUS=watching the Powerwall") for m in first)
    assert messages(systemd, "WATCHDOG=1").count("WATCHDOG=1") >= 1
    assert messages(systemd, "WATCHDOG=1")  # and again: the loop is alive
    assert daemon.stop() == 0
    assert "STOPPING=1" in messages(systemd, "STOPPING=1")
    assert not any(re.match(r"\d{4}-\d\d-\d\d ", line) for line in daemon.lines)


def test_no_watchdog_ping_while_the_poll_loop_is_not_alive(systemd: socket.socket) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": systemd.getsockname(), "WATCHDOG_USEC": "200000"})
    systemd.settimeout(0.5)

    async def watch(alive: bool) -> None:
        task = asyncio.create_task(notifier.watch(lambda: alive))
        await asyncio.sleep(0.35)  # more than three pings' worth at 0.1 s
        task.cancel()

    asyncio.run(watch(alive=False))
    with pytest.raises(TimeoutError):
        systemd.recv(4096)
    asyncio.run(watch(alive=True))
    assert systemd.recv(4096) == b"WATCHDOG=1"
