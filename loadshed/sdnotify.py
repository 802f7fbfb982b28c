"""systemd's service notifications: READY=1 once loadshed watches the house, WATCHDOG=1 while its
poll loop is really alive, STOPPING=1 on the way out.

Only when systemd asks for them: `$NOTIFY_SOCKET` set (a unit with `Type=notify`), and the
watchdog only with `$WATCHDOG_USEC` (its `WatchdogSec=`). The watchdog is fed at half the
interval, and only while the engine's last poll is recent: a poll loop that hangs stops the
pings, and systemd restarts the daemon (`Restart=on-failure`). Never raises: a notification
that cannot be sent is logged once, and loadshed goes on shedding.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping
from typing import Final

_LOG = logging.getLogger(__name__)

USEC_PER_S: Final = 1_000_000


class Notifier:
    """Sends sd_notify datagrams to `$NOTIFY_SOCKET`, if there is one."""

    def __init__(self, env: Mapping[str, str] = os.environ) -> None:
        path = env.get("NOTIFY_SOCKET", "")
        # "@name" is an abstract socket: a leading NUL byte on the wire.
        self.address = "\0" + path[1:] if path.startswith("@") else path
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        self.watchdog_s = int(usec) / USEC_PER_S if usec.isdigit() and mine else None
        self._failed = False

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, message: str) -> None:
        if not self.address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(message.encode(), self.address)
        except OSError as err:
            if not self._failed:
                self._failed = True
                _LOG.warning("cannot notify systemd at %s: %s", self.address, err)

    async def watch(self, alive: Callable[[], bool]) -> None:
        """Feed the watchdog every half interval while alive() says the poll loop runs."""
        if self.watchdog_s is None or not self.address:
            return
        while True:
            await asyncio.sleep(self.watchdog_s / 2)
            if alive():
                self.send("WATCHDOG=1")
