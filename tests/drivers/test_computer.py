"""A computer as a switch: reached where OpenSSH reaches it, and "down" only when it is silent.

Real `ssh` (and `ssh -G`) against the real sshd of `loadshed.sim.ssh.SshHost`, named by an
ssh_config `Host` alias as owners name their computers. The simulated host, after a shutdown,
refuses connections for `refuse_s` (sshd stopped, kernel flushing its disks), then goes silent.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from loadshed.drivers.computer import ComputerSwitch
from loadshed.drivers.route import Resolver
from loadshed.model import Power, Status
from loadshed.sim.ssh import HostPower, SshHost
from tests.sim.test_ssh_sim import relay_config

pytestmark = pytest.mark.timeout(60)

REFUSE_S = 1.5  # how long the simulated host refuses after its shutdown, before silence
POLL_S = 0.1
PROBE_S = 0.5  # a port unanswered this long is silent


@pytest.fixture
def host() -> Iterator[SshHost]:
    with SshHost(alias="nas", down_after_s=0, refuse_s=REFUSE_S) as sim:
        yield sim


def switch_for(host: SshHost, config: Path | None = None, **options: object) -> ComputerSwitch:
    computer = replace(host.computer(), name="NAS", **options)  # type: ignore[arg-type]
    return ComputerSwitch(
        computer,
        ssh_config=config or host.ssh_config,
        poll_s=POLL_S,
        probe_timeout_s=PROBE_S,
    )


def test_an_alias_is_probed_where_ssh_goes(host: SshHost) -> None:
    switch = switch_for(host)
    assert (switch.computer.host, switch.computer.port) == ("nas", None)

    reading = asyncio.run(switch.read())

    assert (reading.status, reading.power) == (Status.OK, Power.ON), reading.detail
    assert switch.address == host.address  # the screen shows where it really is


def test_port_in_computers_txt_wins_over_ssh_config(host: SshHost) -> None:
    other = SshHost(alias="other")
    try:
        other.start()
        switch = switch_for(host, port=other.port)
        route = asyncio.run(switch.resolver.route(switch.computer))
        assert route.port == other.port
    finally:
        other.close()


def test_a_changed_ssh_config_is_read_again(host: SshHost, tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(host.client_config())
    resolver = Resolver(config)
    computer = host.computer()

    async def routes() -> tuple[int, int]:
        before = await resolver.route(computer)
        config.write_text(host.client_config().replace(f"Port {host.port}", "Port 2202"))
        after = await resolver.route(computer)
        return before.port, after.port

    assert asyncio.run(routes()) == (host.port, 2202)


def test_refused_is_running_and_only_silence_is_down(host: SshHost) -> None:
    switch = switch_for(host)
    host.stop_sshd()  # sshd gone, the kernel still answers: refused

    refused = asyncio.run(switch.read())
    assert (refused.status, refused.power) == (Status.OK, Power.ON), refused.detail

    host.power_off()  # silent
    silent = asyncio.run(switch.read())
    assert (silent.status, silent.power) == (Status.UNREACHABLE, None)
    assert "cannot tell" in silent.detail


def test_off_returns_only_once_the_computer_is_silent(host: SshHost) -> None:
    switch = switch_for(host)
    started = time.monotonic()

    outcome = asyncio.run(switch.off())
    took = time.monotonic() - started

    assert (outcome.status, outcome.power) == (Status.OK, Power.OFF), outcome.detail
    assert host.shutdowns() == ["sudo -n shutdown -h now"]
    assert host.power is HostPower.OFF, "off() returned while the host still refused"
    assert outcome.detail.startswith("down after")
    assert took >= REFUSE_S
    print(f"shutdown sent and silent after {took:.2f} s")


def test_a_computer_still_answering_after_its_down_wait_is_said_so(host: SshHost) -> None:
    host.refuse_s = 60  # a RAID that takes its time
    switch = switch_for(host, down_wait_s=2)

    outcome = asyncio.run(switch.off())

    assert (outcome.status, outcome.power) == (Status.OK, Power.OFF)
    assert outcome.detail == "still answering after 2 s"
    assert host.power is HostPower.STOPPING


def test_a_shutdown_refused_by_sudo_fails_fast_and_says_why(host: SshHost) -> None:
    host.sudo_needs_password = True
    switch = switch_for(host)

    outcome = asyncio.run(switch.off())

    assert outcome.status is Status.FAILED
    assert "sudo needs a password" in outcome.detail
    assert host.power is HostPower.UP


def test_a_name_only_ssh_can_reach_is_shut_down_though_it_cannot_be_probed(
    host: SshHost, tmp_path: Path
) -> None:
    switch = switch_for(host, relay_config(host, tmp_path), down_wait_s=1)

    reading = asyncio.run(switch.read())
    assert (reading.status, reading.power) == (Status.UNREACHABLE, None)
    assert "ProxyCommand" in reading.detail
    outcome = asyncio.run(switch.off())

    assert host.shutdowns() == ["sudo -n shutdown -h now"]
    assert (outcome.status, outcome.power) == (Status.OK, Power.OFF)
    assert outcome.detail.startswith("cannot see it go down")


def test_an_unreachable_computer_was_sent_nothing(host: SshHost) -> None:
    host.power_off()
    switch = switch_for(host)

    outcome = asyncio.run(switch.off())

    assert outcome.status is Status.UNREACHABLE
    assert not outcome.sent


def test_on_waits_for_a_computer_powered_by_its_plug(host: SshHost) -> None:
    host.power_off()
    switch = switch_for(host, powered_by="NAS plug")
    threading.Timer(0.5, host.start).start()  # its plug came back: the BIOS boots it

    outcome = asyncio.run(switch.on())

    assert (outcome.status, outcome.power) == (Status.OK, Power.ON), outcome.detail
