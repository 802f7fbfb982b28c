"""A computer as a `Switch`: shut down gracefully, seen going down, woken and seen coming back.

Every network step goes where OpenSSH goes (`route.Resolver`: `ssh -G`, so an ssh_config alias
is probed at its `HostName` and `Port`). What a probe means (`reach`): a port that answers or
refuses belongs to a running machine; only silence is "down".

`read()` says ON when the kernel answers, and *unknown* (no power) when the probe cannot tell:
a silent port (off, or a firewall), a name only ssh can resolve, a route through a ProxyJump.
The engine still sends an unknown computer its shutdown in an outage, and ssh's own answer
decides. `off()` sends the shutdown (SSH, or Windows' own way), then waits for the computer to
fall silent, bounded by its `down_wait=`: "down after 34 s", or "still answering after 120 s:
cutting its plug anyway". `on()` sends the Wake-on-LAN packet when a MAC is known and waits,
bounded, for the port to answer again (a computer behind a `powered_by` plug is powered on by
the plug: the engine handles the plug).

Never raises; every wait has a named bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Final

from loadshed.computers import Computer
from loadshed.drivers import ssh, windows, wol
from loadshed.drivers.reach import Liveness, Probe, probe
from loadshed.drivers.route import Resolver, Route
from loadshed.model import Kind, Outcome, Power, Status

SHUTDOWN_TIMEOUT_S: Final = 20.0  # the shutdown command itself: login and sudo
HOST_UP_WAIT_S: Final = 300.0  # longest wait for a woken computer to answer again (a slow boot)
PROBE_TIMEOUT_S: Final = 3.0  # one port probe: a machine that is off never answers
WAIT_POLL_S: Final = 1.0  # how often the port is probed while waiting
WOL_AGAIN_S: Final = 10.0  # while waiting for a woken computer, the magic packet again

CANNOT_WAKE: Final = (
    "cannot bring it back by itself: add mac= (Wake-on-LAN) or powered_by= to computers.txt"
)


class ComputerSwitch:
    """One line of computers.txt, switched by shutdown and wake."""

    def __init__(
        self,
        computer: Computer,
        *,
        resolver: Resolver | None = None,
        ssh_config: Path | None = None,
        windows_password: str = "",
        shutdown_timeout_s: float = SHUTDOWN_TIMEOUT_S,
        up_wait_s: float = HOST_UP_WAIT_S,
        poll_s: float = WAIT_POLL_S,
        probe_timeout_s: float = PROBE_TIMEOUT_S,
    ) -> None:
        self.computer = computer
        self.name = computer.name
        self.kind: Kind = computer.kind
        self.resolver = resolver or Resolver(ssh_config)
        self._ssh_config = ssh_config
        self._windows_password = windows_password
        self.down_wait_s = computer.down_wait_s
        self.shutdown_timeout_s = shutdown_timeout_s
        self.up_wait_s = up_wait_s
        self.poll_s = poll_s
        self.probe_timeout_s = probe_timeout_s

    def __repr__(self) -> str:
        return f"ComputerSwitch({self.name!r} at {self.address})"

    @property
    def route(self) -> Route | None:
        """Where ssh reaches it, as last asked (None: not asked yet)."""
        return self.resolver.cached(self.computer)

    @property
    def address(self) -> str:
        """Where ssh reaches it (an ssh_config alias resolved), once known; else as written."""
        route = self.route
        return route.describe() if route is not None else self.computer.address

    async def look(self) -> Probe:
        """One probe where ssh would connect; UNKNOWN when ssh goes another way."""
        route = await self.resolver.route(self.computer)
        if not route.direct:
            return Probe(Liveness.UNKNOWN, f"reached through {route.via}: cannot probe it")
        return await probe(route.host, route.port, self.probe_timeout_s)

    async def read(self) -> Outcome:
        seen = await self.look()
        if seen.running:
            return Outcome.ok(Power.ON, detail=seen.detail)
        return Outcome.unreachable(f"cannot tell whether it is on: {seen.detail}", sent=False)

    async def preflight(self) -> Outcome:
        """Show the shutdown would work, without running it (for `loadshed check`)."""
        if self.computer.uses_ssh:
            return await ssh.preflight(
                self.computer, ssh_config=self._ssh_config, timeout_s=SHUTDOWN_TIMEOUT_S
            )
        seen = await self.look()
        if seen.liveness is Liveness.ANSWERS:
            return Outcome.ok(Power.ON, detail=seen.detail)
        if seen.liveness is Liveness.REFUSED:
            return Outcome.unreachable(
                f"port {self.computer.port} refuses connections: it is on, but nothing listens "
                "for the shutdown (allow File and Printer Sharing, TCP 445, in its firewall)"
            )
        return Outcome.unreachable(seen.detail)

    async def off(self) -> Outcome:
        c = self.computer
        if c.uses_ssh:
            sent = await ssh.shutdown(
                c, ssh_config=self._ssh_config, timeout_s=self.shutdown_timeout_s
            )
        else:
            sent = await windows.shutdown(
                c,
                password=self._windows_password,
                timeout_s=self.shutdown_timeout_s,
                ssh_config=self._ssh_config,
            )
        if sent.status is not Status.OK:
            return sent
        return await self.wait_down()

    async def wait_down(self) -> Outcome:
        """Wait, bounded by down_wait=, for it to fall silent. Always OK/OFF: after the wait a
        shutdown that was sent counts as done, and the detail says which of the two it was."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        down, last = await self._until(lambda p: p.liveness is Liveness.SILENT, self.down_wait_s)
        if down:
            return Outcome.ok(Power.OFF, detail=f"down after {loop.time() - began:.0f} s")
        waited = f"{self.down_wait_s:g} s"
        if last is None or not last.running:
            why = last.detail if last is not None else "it cannot be probed from here"
            return Outcome.ok(Power.OFF, detail=f"cannot see it go down ({why}): waited {waited}")
        detail = f"still answering after {waited}"
        if self.computer.powered_by is not None:
            detail += ": cutting its plug anyway"
        return Outcome.ok(Power.OFF, detail=detail)

    async def on(self) -> Outcome:
        """Wake it (a magic packet now and every WOL_AGAIN_S: a packet is lost on the way, or
        arrives while it still flushes its disks and is not yet off to hear it), and wait,
        bounded, until its port answers (a boot is done when ssh would get in)."""
        c = self.computer
        if c.mac is None and c.powered_by is None:
            return Outcome.failed(CANNOT_WAKE)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.up_wait_s
        while True:
            if c.mac is not None:
                sent = await wol.wake(c.mac, to=c.wake_to or wol.BROADCAST, port=c.wake_port)
                if not sent.is_ok:
                    return sent
            route = await self.resolver.route(c)
            if not route.direct:
                return Outcome.ok(
                    Power.ON, detail=f"woken; cannot watch it come back through {route.via}"
                )
            remaining = deadline - loop.time()
            step = min(WOL_AGAIN_S, remaining) if c.mac is not None else remaining
            up, _ = await self._until(lambda p: p.liveness is Liveness.ANSWERS, step)
            if up:
                return Outcome.ok(Power.ON, detail="back up")
            if loop.time() >= deadline:
                break
        how = "Wake-on-LAN" if c.mac else f"power on after AC loss (plug {c.powered_by!r})"
        return Outcome.failed(f"did not come back in {self.up_wait_s:g} s: check {how} on it")

    async def _until(
        self, wanted: Callable[[Probe], bool], timeout_s: float
    ) -> tuple[bool, Probe | None]:
        """Probe every poll_s until wanted(probe) or timeout_s; whether it came, and the last
        probe (None: it could not be probed at all)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        last: Probe | None = None
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False, last
            route = await self.resolver.route(self.computer)
            if route.direct:
                # A full probe even near the deadline: a short one would take "slow" for silent.
                last = await probe(route.host, route.port, self.probe_timeout_s)
                if wanted(last):
                    return True, last
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False, last
            await asyncio.sleep(min(self.poll_s, remaining))

    async def close(self) -> None:
        return None
