"""A computer as a `Switch`: shut down gracefully, seen going down, woken and seen coming back.

`off()` runs the shutdown (SSH, or Windows' own way) and then waits, bounded, for the
computer's port to stop answering — so a plug that feeds it is cut only once it is down.
`on()` sends the Wake-on-LAN packet when a MAC is known, and waits, bounded, for the port to
answer again (a computer behind a `powered_by` plug is powered on by the plug: the engine
switches the plug on first). `read()` is a port probe: answering is on, silent is off.

Never raises; every wait has a named bound.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from loadshed.computers import Computer
from loadshed.drivers import ssh, windows, wol
from loadshed.drivers.reach import probe_port
from loadshed.model import Kind, Outcome, Power, Status

SHUTDOWN_TIMEOUT_S: Final = 20.0  # the shutdown command itself: login and sudo
HOST_DOWN_WAIT_S: Final = 120.0  # longest wait for a computer to go down before its plug is cut
HOST_UP_WAIT_S: Final = 300.0  # longest wait for a woken computer to answer again (a slow boot)
PROBE_TIMEOUT_S: Final = 3.0  # one port probe
WAIT_POLL_S: Final = 1.0  # how often the port is probed while waiting

CANNOT_WAKE: Final = (
    "cannot bring it back by itself: add mac= (Wake-on-LAN) or powered_by= to computers.txt"
)


class ComputerSwitch:
    """One line of computers.txt, switched by shutdown and wake."""

    def __init__(
        self,
        computer: Computer,
        *,
        ssh_config: Path | None = None,
        windows_password: str = "",
        down_wait_s: float = HOST_DOWN_WAIT_S,
        up_wait_s: float = HOST_UP_WAIT_S,
        poll_s: float = WAIT_POLL_S,
    ) -> None:
        self.computer = computer
        self.name = computer.name
        self.kind: Kind = computer.kind
        self.address = computer.address
        self._ssh_config = ssh_config
        self._windows_password = windows_password
        self.down_wait_s = down_wait_s
        self.up_wait_s = up_wait_s
        self.poll_s = poll_s

    def __repr__(self) -> str:
        return f"ComputerSwitch({self.name!r} at {self.address})"

    async def read(self) -> Outcome:
        answer = await probe_port(self.computer.host, self.computer.port, PROBE_TIMEOUT_S)
        if answer.is_ok:
            return Outcome.ok(Power.ON)
        return Outcome.ok(Power.OFF, detail=answer.detail)

    async def preflight(self) -> Outcome:
        """Show the shutdown would work, without running it (for `loadshed check`)."""
        if self.computer.uses_ssh:
            return await ssh.preflight(
                self.computer, ssh_config=self._ssh_config, timeout_s=SHUTDOWN_TIMEOUT_S
            )
        answer = await probe_port(self.computer.host, self.computer.port, PROBE_TIMEOUT_S)
        return Outcome.ok(Power.ON) if answer.is_ok else answer

    async def off(self) -> Outcome:
        c = self.computer
        if c.uses_ssh:
            sent = await ssh.shutdown(c, ssh_config=self._ssh_config, timeout_s=SHUTDOWN_TIMEOUT_S)
        else:
            sent = await windows.shutdown(
                c,
                password=self._windows_password,
                timeout_s=SHUTDOWN_TIMEOUT_S,
                ssh_config=self._ssh_config,
            )
        if sent.status is not Status.OK:
            return sent
        if await ssh.wait_down(c.host, c.port, timeout_s=self.down_wait_s, poll_s=self.poll_s):
            return Outcome.ok(Power.OFF, detail="shut down")
        return Outcome.failed(f"still answering {self.down_wait_s:g} s after the shutdown")

    async def on(self) -> Outcome:
        c = self.computer
        if c.mac is not None:
            sent = await wol.wake(c.mac, to=c.wake_to or wol.BROADCAST, port=c.wake_port)
            if not sent.is_ok:
                return sent
        elif c.powered_by is None:
            return Outcome.failed(CANNOT_WAKE)
        if await ssh.wait_up(c.host, c.port, timeout_s=self.up_wait_s, poll_s=self.poll_s):
            return Outcome.ok(Power.ON, detail="back up")
        how = "Wake-on-LAN" if c.mac else f"power on after AC loss (plug {c.powered_by!r})"
        return Outcome.failed(f"did not come back in {self.up_wait_s:g} s: check {how} on it")

    async def close(self) -> None:
        return None
