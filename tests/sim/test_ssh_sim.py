"""The simulated SSH host: the real sshd on loopback, driven here by the real `ssh` client.

These tests check the simulator itself (what it records, how it goes down and comes back, each
fault), with plain `subprocess` calls to `ssh -F <its config>`; the driver's own tests are in
tests/drivers/test_ssh.py. They need /usr/sbin/sshd and ssh (Debian: openssh-server).
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadshed.model import Kind
from loadshed.sim.ssh import SshHost, combined_ssh_config

pytestmark = pytest.mark.timeout(60)

SSH_TIMEOUT_S = 20  # a ceiling for one ssh call on a busy machine, not a measurement
HANG_WAIT_S = 1.0  # a hung command must still be running after this long
DOWN_WAIT_S = 10.0  # a ceiling for the listener to go after a shutdown (0 s asked)


@pytest.fixture
def host() -> Iterator[SshHost]:
    with SshHost(down_after_s=0) as sim:
        yield sim


def ssh(
    host: SshHost, command: str, timeout_s: float = SSH_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ssh", "-F", str(host.ssh_config), "--", host.host, command],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def answers(host: SshHost) -> bool:
    try:
        socket.create_connection((host.host, host.port), timeout=2).close()
    except OSError:
        return False
    return True


def test_records_a_command_without_running_it(host: SshHost) -> None:
    done = ssh(host, "touch /nonexistent/ran && echo ran")

    assert done.returncode == 0, done.stderr
    assert host.commands() == ["touch /nonexistent/ran && echo ran"]
    assert host.parsed_commands() == [("touch", "/nonexistent/ran")]  # the shell split at &&
    assert host.shutdowns() == ["touch /nonexistent/ran && echo ran"]


def test_probes_answer_and_the_host_stays_up(host: SshHost) -> None:
    listed = ssh(host, "sudo -n -l shutdown -h now")
    found = ssh(host, "command -v poweroff")
    ver = ssh(host, "cmd /c ver")

    assert (listed.returncode, found.returncode, ver.returncode) == (0, 0, 0)
    assert "shutdown -h now" in listed.stdout
    assert "Windows" in ver.stdout
    assert host.shutdowns() == []
    assert host.is_up and answers(host)


def test_a_shutdown_takes_the_port_down_and_start_brings_it_back(host: SshHost) -> None:
    port = host.port

    done = ssh(host, "sudo -n shutdown -h now")

    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + DOWN_WAIT_S
    # The port goes quiet a moment before sshd's process has quite gone: wait for both.
    while (answers(host) or host.is_up) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not answers(host)
    assert not host.is_up
    host.start()
    assert host.port == port and host.is_up and answers(host)
    assert host.shutdowns() == ["sudo -n shutdown -h now"]


def test_a_dropping_shutdown_cuts_the_session(host: SshHost) -> None:
    host.drop_connection = True

    done = ssh(host, "sudo -n shutdown -h now")

    assert done.returncode == 255
    assert "closed by remote host" in done.stderr


def test_refuse_key(host: SshHost) -> None:
    host.refuse_key = True

    done = ssh(host, "true")

    assert done.returncode == 255
    assert "Permission denied (publickey" in done.stderr
    assert host.commands() == []


def test_change_host_key(host: SshHost) -> None:
    host.change_host_key()

    done = ssh(host, "true")

    assert done.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in done.stderr
    assert host.commands() == []


def test_sudo_needs_password(host: SshHost) -> None:
    host.sudo_needs_password = True

    done = ssh(host, "sudo -n shutdown -h now")

    assert done.returncode == 1
    assert "sudo: a password is required" in done.stderr
    assert host.shutdowns() == []


def test_hang_never_returns(host: SshHost) -> None:
    host.hang = True

    with pytest.raises(subprocess.TimeoutExpired):
        ssh(host, "sudo -n shutdown -h now", timeout_s=HANG_WAIT_S)
    assert host.commands() == ["sudo -n shutdown -h now"]


def test_restricted_key_runs_its_forced_command_whatever_is_asked(host: SshHost) -> None:
    host.restricted_key = True

    done = ssh(host, "sudo -n -l shutdown -h now")

    assert done.returncode == 0, done.stderr
    assert host.shutdowns() == ["sudo -n -l shutdown -h now"]


def test_computer_points_at_it(host: SshHost) -> None:
    computer = host.computer(Kind.WINDOWS, name="Gaming PC")

    assert (computer.host, computer.port, computer.user) == (host.host, host.port, host.user)
    assert computer.via_ssh and computer.name == "Gaming PC"


def test_only_loopback() -> None:
    with pytest.raises(ValueError, match=r"127\.0\.0\.0/8"):
        SshHost(host="192.0.2.1")


def test_close_removes_its_files() -> None:
    sim = SshHost()
    sim.start()
    config = sim.ssh_config

    sim.close()

    assert not config.parent.exists()
    assert not sim.is_up


def test_several_hosts_share_one_key_and_one_config(tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    with SshHost(client_key=key) as nas, SshHost(client_key=key) as imac:
        config = tmp_path / "ssh_config"
        config.write_text(combined_ssh_config([nas, imac]))

        for sim, command in ((nas, "true # nas"), (imac, "true # imac")):
            done = subprocess.run(
                ["ssh", "-F", str(config), "-p", str(sim.port), "--", sim.host, command],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=SSH_TIMEOUT_S,
            )
            assert done.returncode == 0, done.stderr

        assert (nas.commands(), imac.commands()) == (["true # nas"], ["true # imac"])
