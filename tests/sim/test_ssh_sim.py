"""The simulated SSH host: the real sshd on loopback, driven here by the real `ssh` client.

These tests check the simulator itself (what it records, how it goes down and comes back, each
fault, its names in ssh_config), with plain `subprocess` calls to `ssh -F <its config>`, and the
ProxyCommand relay; the driver's own tests are in tests/drivers/test_ssh.py. They need
/usr/sbin/sshd and ssh (Debian: openssh-server).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadshed.model import Kind
from loadshed.sim.ssh import HostPower, SshHost, combined_ssh_config

pytestmark = pytest.mark.timeout(60)

SSH_TIMEOUT_S = 20  # a ceiling for one ssh call on a busy machine, not a measurement
HANG_WAIT_S = 1.0  # a hung command must still be running after this long
POWER_WAIT_S = 10.0  # a ceiling for a power state to come after a shutdown (0 s asked)
SILENT_S = 1.0  # a connect() unanswered this long: the port is silent
SHORT_REFUSE_S = 0.3  # refuse_s for the tests that wait it out
GONE_BY_S = 1.0  # past refuse_s, a fall to OFF that was coming would have come
POLL_S = 0.05


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


def reach(host: SshHost) -> str:
    """What a connection to the host's port meets: "answered", "refused" or "silent"."""
    try:
        socket.create_connection((host.host, host.port), timeout=SILENT_S).close()
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "silent"
    return "answered"


def wait_for(host: SshHost, power: HostPower) -> None:
    deadline = time.monotonic() + POWER_WAIT_S
    while host.power is not power and time.monotonic() < deadline:
        time.sleep(POLL_S)
    assert host.power is power, f"{host.power} after {POWER_WAIT_S} s:\n{host.sshd_log()}"


def sshd_watchers(host: SshHost) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"sshd-{host.port}"]


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
    assert host.power is HostPower.UP and reach(host) == "answered"


def test_a_shutdown_refuses_then_goes_silent_and_start_boots_it(host: SshHost) -> None:
    port = host.port
    started = time.monotonic()

    done = ssh(host, "sudo -n shutdown -h now")

    assert done.returncode == 0, done.stderr
    wait_for(host, HostPower.STOPPING)  # sshd gone, the kernel still up
    refused_s = time.monotonic() - started
    assert reach(host) == "refused"
    assert (host.is_up, host.is_powered, host.is_off) == (False, True, False)
    wait_for(host, HostPower.OFF)
    silent_s = time.monotonic() - started
    assert reach(host) == "silent"
    assert (host.is_up, host.is_powered, host.is_off) == (False, False, True)

    host.start()

    assert host.port == port and host.power is HostPower.UP and reach(host) == "answered"
    again = ssh(host, "true")
    assert again.returncode == 0, again.stderr
    assert host.shutdowns() == ["sudo -n shutdown -h now"]
    print(f"refused {refused_s:.2f} s after the command, silent after {silent_s:.2f} s")


def test_power_off_is_silent_at_once(host: SshHost) -> None:
    host.power_off()

    assert host.power is HostPower.OFF and not host.is_up
    assert reach(host) == "silent"
    host.start()
    assert host.power is HostPower.UP and ssh(host, "true").returncode == 0


def test_power_off_ends_a_session_under_way(host: SshHost) -> None:
    host.hang = True
    client = subprocess.Popen(
        ["ssh", "-F", str(host.ssh_config), "--", host.host, "sudo -n shutdown -h now"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + POWER_WAIT_S
        while not host.commands() and time.monotonic() < deadline:
            time.sleep(POLL_S)

        host.power_off()

        assert client.wait(SSH_TIMEOUT_S) == 255  # the session ended; the client was left be
        assert reach(host) == "silent"
    finally:
        client.kill()
        client.wait()


def test_start_while_stopping_cancels_the_fall_to_off(host: SshHost) -> None:
    host.refuse_s = SHORT_REFUSE_S
    assert ssh(host, "sudo -n shutdown -h now").returncode == 0
    wait_for(host, HostPower.STOPPING)

    host.start()  # a WoL, before the host is quite off

    time.sleep(SHORT_REFUSE_S + GONE_BY_S)  # a fall still pending would have come by now
    assert host.power is HostPower.UP and reach(host) == "answered"
    assert ssh(host, "true").returncode == 0


def test_start_as_it_falls_always_ends_up(host: SshHost) -> None:
    host.refuse_s = 0  # OFF the moment sshd has gone: start() races the watcher
    assert ssh(host, "sudo -n shutdown -h now").returncode == 0
    deadline = time.monotonic() + POWER_WAIT_S
    while host.is_up and time.monotonic() < deadline:
        time.sleep(0.001)

    host.start()

    assert host.power is HostPower.UP and reach(host) == "answered"
    assert ssh(host, "true").returncode == 0


def test_stop_sshd_refuses_for_good(host: SshHost) -> None:
    host.refuse_s = SHORT_REFUSE_S

    host.stop_sshd()

    time.sleep(SHORT_REFUSE_S + GONE_BY_S)  # no fall to OFF follows a stop of sshd alone
    assert host.power is HostPower.STOPPING and reach(host) == "refused"
    host.start()
    assert host.power is HostPower.UP


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


def test_close_while_off_or_falling_releases_the_port_and_its_threads() -> None:
    off, falling = SshHost(), SshHost(down_after_s=0)
    off.start()
    falling.start()
    off.power_off()
    assert ssh(falling, "sudo -n shutdown -h now").returncode == 0
    wait_for(falling, HostPower.STOPPING)

    for sim in (off, falling, off):  # twice is safe
        sim.close()

    assert (reach(off), reach(falling)) == ("refused", "refused")  # nothing of ours listens
    assert sshd_watchers(off) == sshd_watchers(falling) == []
    with pytest.raises(RuntimeError, match="closed"):
        off.start()


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


# -- names: aliases in ssh_config, and a name only ssh can reach ---------------------------------


def test_an_alias_is_the_name_ssh_and_computers_txt_use() -> None:
    with SshHost(alias="nas", down_after_s=0) as nas:
        done = subprocess.run(
            ["ssh", "-F", str(nas.ssh_config), "--", "nas", "true # by its alias"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=SSH_TIMEOUT_S,
        )
        computer = nas.computer(Kind.LINUX)

        assert done.returncode == 0, done.stderr
        assert nas.commands() == ["true # by its alias"]
    assert (computer.host, computer.port) == ("nas", None)  # ssh_config gives the port


def test_aliases_on_one_address_get_a_block_each(tmp_path: Path) -> None:
    with (
        SshHost(alias="nas") as nas,
        SshHost(alias="imac", client_key=nas.client_key) as imac,
        SshHost(client_key=nas.client_key) as plain,
    ):
        config = tmp_path / "ssh_config"
        text = combined_ssh_config([nas, imac, plain])
        config.write_text(text)

        for name, command in (("nas", "true # nas"), ("imac", "true # imac")):
            done = subprocess.run(
                ["ssh", "-F", str(config), "--", name, command],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=SSH_TIMEOUT_S,
            )
            assert done.returncode == 0, done.stderr

        assert (nas.commands(), imac.commands()) == (["true # nas"], ["true # imac"])
        assert [line for line in text.splitlines() if line.startswith("Host ")] == [
            "Host nas",
            "Host imac",
            f"Host {plain.host}",
        ]
        with pytest.raises(ValueError, match="called nas"):
            combined_ssh_config([nas, nas])


def test_an_alias_must_be_one_ssh_config_word() -> None:
    with pytest.raises(ValueError, match="Host name"):
        SshHost(alias="nas lan")


def relay_config(host: SshHost, tmp_path: Path) -> Path:
    """An ssh_config reaching host as `nas`, HostName nas.invalid, through the relay only."""
    key_type, key = host.known_hosts.read_text().split()[1:3]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"nas.invalid {key_type} {key}\n")  # port 22 is not written
    config = tmp_path / "ssh_config"
    config.write_text(
        "Host nas\n"
        "    HostName nas.invalid\n"
        f"    ProxyCommand {sys.executable} -m loadshed.sim.relay {host.host} {host.port}\n"
        f"    User {host.user}\n"
        f"    IdentityFile {host.client_key}\n"
        "    IdentitiesOnly yes\n"
        "    IdentityAgent none\n"
        f"    UserKnownHostsFile {known_hosts}\n"
        "    GlobalKnownHostsFile /dev/null\n"
        "    StrictHostKeyChecking yes\n"
        "    BatchMode yes\n"
    )
    return config


def test_the_relay_carries_a_login_to_a_name_only_ssh_can_reach(
    host: SshHost, tmp_path: Path
) -> None:
    config = relay_config(host, tmp_path)

    done = subprocess.run(
        ["ssh", "-F", str(config), "--", "nas", "sudo -n -l shutdown -h now"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=SSH_TIMEOUT_S,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout == "sudo -n -l shutdown -h now\n"
    assert host.commands() == ["sudo -n -l shutdown -h now"]


def test_the_relay_says_why_it_cannot_connect(host: SshHost, tmp_path: Path) -> None:
    config = relay_config(host, tmp_path)
    host.stop_sshd()

    done = subprocess.run(
        ["ssh", "-F", str(config), "--", "nas", "true"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=SSH_TIMEOUT_S,
    )

    assert done.returncode == 255
    assert f"relay: cannot connect to {host.address}: Connection refused" in done.stderr


def test_the_relay_reaches_loopback_only() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "loadshed.sim.relay", "192.0.2.1", "22"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=SSH_TIMEOUT_S,
    )

    assert done.returncode == 2
    assert "127.0.0.0/8" in done.stderr
