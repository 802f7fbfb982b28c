"""The SSH driver: the real OpenSSH client against the real sshd of `loadshed.sim.ssh.SshHost`.

Each test gets its own simulated host on 127.0.0.1 with a generated client config (`ssh -F`),
so neither ~/.ssh nor the system sshd is touched. Time bounds asserted here are generous
ceilings that tell "our deadline held" from "it hung", not measurements.
"""

from __future__ import annotations

import asyncio
import shlex
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadshed.computers import Computer
from loadshed.drivers import ssh
from loadshed.drivers.ssh import (
    HOST_KEY,
    KEY_REJECTED,
    NO_SSH,
    SUDO_PASSWORD,
    Finished,
    preflight,
    shutdown,
)
from loadshed.model import Kind, Outcome, Power, Status
from loadshed.sim.ssh import SshHost

pytestmark = pytest.mark.timeout(60)

TIMEOUT_S = 5.0  # the driver's timeout_s for calls that should finish
HANG_TIMEOUT_S = 1.5  # the driver's timeout_s against a hung command
HANG_CEILING_S = HANG_TIMEOUT_S + 2.0  # kill and reap included
POLL_S = 0.05


@pytest.fixture
def host() -> Iterator[SshHost]:
    with SshHost() as sim:
        yield sim


def run_shutdown(host: SshHost, computer: Computer, timeout_s: float = TIMEOUT_S) -> Outcome:
    return asyncio.run(shutdown(computer, ssh_config=host.ssh_config, timeout_s=timeout_s))


def run_preflight(host: SshHost, computer: Computer, timeout_s: float = TIMEOUT_S) -> Outcome:
    return asyncio.run(preflight(computer, ssh_config=host.ssh_config, timeout_s=timeout_s))


def login(host: SshHost) -> str:
    return f"-p {host.port} {host.user}@{host.host}"


# -- shutdown ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        pytest.param(Kind.LINUX, "sudo -n shutdown -h now", id="linux"),
        pytest.param(Kind.SOLARIS, "sudo -n shutdown -y -g0 -i5", id="solaris"),
        pytest.param(Kind.MACOS, "sudo -n shutdown -h now", id="macos"),
        pytest.param(Kind.WINDOWS, "shutdown /s /f /t 0", id="windows-via-ssh"),
    ],
)
def test_shutdown_sends_the_kinds_command(host: SshHost, kind: Kind, expected: str) -> None:
    outcome = run_shutdown(host, host.computer(kind))

    assert (outcome.status, outcome.power) == (Status.OK, Power.OFF), outcome.detail
    assert host.commands() == [expected]
    assert host.parsed_commands() == [tuple(expected.split())]


def test_custom_command_arrives_whole_and_cannot_inject(host: SshHost, tmp_path: Path) -> None:
    words = (
        "/opt/power tools/off",
        "--reason",
        'it\'s a "power cut"; touch {0}/semicolon',
        "$(touch {0}/subshell)",
        "`touch {0}/backtick`",
        "| touch {0}/pipe",
        "",
        "*",
    )
    argv = tuple(word.format(tmp_path) for word in words)

    outcome = run_shutdown(host, host.computer(Kind.LINUX, command=argv))

    assert outcome.status is Status.OK, outcome.detail
    assert host.commands() == [shlex.join(argv)]
    assert host.parsed_commands() == [argv]  # the remote shell split it back exactly
    assert list(tmp_path.iterdir()) == []  # and ran none of it


def test_a_host_that_hangs_up_while_going_down_is_ok(host: SshHost) -> None:
    host.drop_connection = True

    outcome = run_shutdown(host, host.computer())

    assert (outcome.status, outcome.power) == (Status.OK, Power.OFF), outcome.detail
    assert "hung up" in outcome.detail


def test_changed_host_key_is_refused(host: SshHost) -> None:
    host.change_host_key()

    outcome = run_shutdown(host, host.computer())

    assert outcome.status is Status.FAILED
    assert outcome.detail == HOST_KEY.format(login=login(host))
    assert "known_hosts" in outcome.detail
    assert host.commands() == []


def test_unknown_host_key_is_refused(host: SshHost) -> None:
    (host.ssh_config.parent / "known_hosts").write_text("")

    outcome = run_shutdown(host, host.computer())

    assert outcome.status is Status.FAILED
    assert outcome.detail == HOST_KEY.format(login=login(host))
    assert host.commands() == []


def test_refused_key_names_ssh_copy_id(host: SshHost) -> None:
    host.refuse_key = True

    outcome = run_shutdown(host, host.computer())

    assert outcome.status is Status.FAILED
    assert outcome.detail == KEY_REJECTED.format(login=login(host))
    assert "ssh-copy-id" in outcome.detail


def test_sudo_password_names_sudoers(host: SshHost) -> None:
    host.sudo_needs_password = True

    outcome = run_shutdown(host, host.computer())

    assert outcome.status is Status.FAILED
    assert outcome.detail == SUDO_PASSWORD.format(user=host.user, path="/sbin/shutdown")
    assert host.is_up and host.shutdowns() == []


def test_hung_command_is_unreachable_within_the_bound(host: SshHost) -> None:
    host.hang = True

    started = time.monotonic()
    outcome = run_shutdown(host, host.computer(), timeout_s=HANG_TIMEOUT_S)
    elapsed = time.monotonic() - started

    assert outcome.status is Status.UNREACHABLE
    assert outcome.detail == f"no answer in {HANG_TIMEOUT_S:g} s"
    assert elapsed < HANG_CEILING_S


def test_a_host_that_is_off_is_unreachable(host: SshHost) -> None:
    computer = host.computer()
    host.stop()

    outcome = run_shutdown(host, computer)

    assert outcome.status is Status.UNREACHABLE
    assert "refused" in outcome.detail


def test_missing_ssh_is_a_clear_failure(
    host: SshHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))

    outcome = run_shutdown(host, host.computer())

    assert outcome.status is Status.FAILED
    assert outcome.detail == NO_SSH


# -- preflight -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "command", "probe"),
    [
        pytest.param(Kind.LINUX, (), "sudo -n -l shutdown -h now", id="linux"),
        pytest.param(Kind.SOLARIS, (), "sudo -n -l shutdown -y -g0 -i5", id="solaris"),
        pytest.param(Kind.WINDOWS, (), "cmd /c ver", id="windows-via-ssh"),
        pytest.param(
            Kind.LINUX,
            ("/usr/bin/systemctl", "poweroff"),
            "command -v /usr/bin/systemctl",
            id="custom",
        ),
        pytest.param(
            Kind.LINUX, ("sudo", "/sbin/poweroff"), "sudo -n -l /sbin/poweroff", id="custom-sudo"
        ),
    ],
)
def test_preflight_ok_never_shuts_down(
    host: SshHost, kind: Kind, command: tuple[str, ...], probe: str
) -> None:
    outcome = run_preflight(host, host.computer(kind, command=command))

    assert (outcome.status, outcome.power) == (Status.OK, Power.ON), outcome.detail
    assert host.commands() == [probe]
    assert host.shutdowns() == []
    assert host.is_up


def test_preflight_with_a_key_limited_to_a_forced_command_runs_nothing(host: SshHost) -> None:
    host.restricted_key = True

    outcome = run_preflight(host, host.computer())

    assert outcome.status is Status.OK, outcome.detail
    assert "forced command" in outcome.detail
    assert host.commands() == []
    assert host.is_up


def test_shutdown_with_a_key_limited_to_a_forced_command(host: SshHost) -> None:
    host.restricted_key = True

    outcome = run_shutdown(host, host.computer())

    assert outcome.is_ok, outcome.detail
    assert host.shutdowns() == ["sudo -n shutdown -h now"]


@pytest.mark.parametrize(
    ("fault", "status", "expected"),
    [
        pytest.param("refuse_key", Status.FAILED, "SSH key not accepted: copy your key", id="key"),
        pytest.param(
            "change_host_key", Status.FAILED, "host key unknown or changed", id="host-key"
        ),
        pytest.param("sudo_needs_password", Status.FAILED, "sudo needs a password", id="sudo"),
        pytest.param("hang", Status.UNREACHABLE, f"no answer in {HANG_TIMEOUT_S:g} s", id="hang"),
        pytest.param("stop", Status.UNREACHABLE, "refused the connection", id="off"),
    ],
)
def test_preflight_names_the_fix(host: SshHost, fault: str, status: Status, expected: str) -> None:
    computer = host.computer()
    if fault in ("change_host_key", "stop"):
        getattr(host, fault)()
    else:
        setattr(host, fault, True)

    started = time.monotonic()
    outcome = run_preflight(
        host, computer, timeout_s=HANG_TIMEOUT_S if fault == "hang" else TIMEOUT_S
    )
    elapsed = time.monotonic() - started

    assert outcome.status is status
    assert expected in outcome.detail
    assert host.shutdowns() == []
    if fault == "hang":
        assert elapsed < HANG_CEILING_S


def test_preflight_sudo_refused_without_a_message() -> None:
    """sudo -l for a command the policy does not allow exits 1 and prints nothing."""
    computer = Computer(Kind.SOLARIS, host="sunbox", name="sunbox", port=22, user="root")
    done = Finished(1, "", 'Authenticated to sunbox ([192.0.2.5]:22) using "publickey".\n')

    outcome = ssh.preflight_outcome(computer, ssh.preflight_command(computer), done)

    assert outcome.status is Status.FAILED
    assert outcome.detail == ssh.SUDO_REFUSED.format(user="root", path="/usr/sbin/shutdown")


# -- the argument list and ssh's messages (pure) -----------------------------------------------


COMPUTER = Computer(Kind.LINUX, host="nas.lan", name="NAS", port=2222, user="admin")


def test_ssh_command_is_batch_strict_and_ends_options_before_the_host() -> None:
    argv = ssh.ssh_command(
        COMPUTER,
        "sudo -n shutdown -h now",
        ssh_config=Path("/etc/loadshed/ssh_config"),
        timeout_s=5,
    )

    assert argv[:3] == ["ssh", "-F", "/etc/loadshed/ssh_config"]
    options = [argv[i + 1] for i, word in enumerate(argv) if word == "-o"]
    assert "BatchMode=yes" in options
    assert "StrictHostKeyChecking=yes" in options
    assert "ConnectTimeout=4" in options
    assert not any(o.startswith("StrictHostKeyChecking=no") for o in options)
    assert argv[-7:] == ["-p", "2222", "-l", "admin", "--", "nas.lan", "sudo -n shutdown -h now"]


def test_ssh_command_without_config_or_user() -> None:
    computer = Computer(Kind.LINUX, host="nas.lan", name="NAS", port=22)

    argv = ssh.ssh_command(computer, "true", ssh_config=None, timeout_s=0.5)

    assert "-F" not in argv and "-l" not in argv
    assert "ConnectTimeout=1" in argv
    assert argv[-3:] == ["--", "nas.lan", "true"]


def test_windows_remote_line_is_quoted_for_cmd() -> None:
    computer = Computer(
        Kind.WINDOWS,
        host="pc",
        name="PC",
        port=22,
        via_ssh=True,
        command=("C:\\My Tools\\off.exe", "/now"),
    )

    assert ssh.remote_line(computer) == '"C:\\My Tools\\off.exe" /now'


@pytest.mark.parametrize(
    ("returncode", "stderr", "status", "detail"),
    [
        pytest.param(
            255,
            "ssh: connect to host nas.lan port 2222: No route to host",
            Status.UNREACHABLE,
            "no route to it (is it on the network?)",
            id="no-route",
        ),
        pytest.param(
            255,
            "ssh: connect to host nas.lan port 2222: Connection timed out",
            Status.UNREACHABLE,
            "no answer on port 2222",
            id="timed-out",
        ),
        pytest.param(
            255,
            "ssh: Could not resolve hostname nas.lan: Name or service not known",
            Status.UNREACHABLE,
            "cannot resolve the name nas.lan",
            id="dns",
        ),
        pytest.param(
            255,
            "admin@nas.lan: Permission denied (publickey,password).",
            Status.FAILED,
            KEY_REJECTED.format(login="-p 2222 admin@nas.lan"),
            id="password-only",
        ),
        pytest.param(
            255,
            "Can't open user config file /nope: No such file or directory",
            Status.FAILED,
            "ssh config: Can't open user config file /nope: No such file or directory",
            id="config",
        ),
        pytest.param(
            1,
            "Authenticated to nas.lan.\nsudo: a terminal is required to read the password",
            Status.FAILED,
            SUDO_PASSWORD.format(user="admin", path="/sbin/shutdown"),
            id="sudo-tty",
        ),
        pytest.param(
            1,
            "Authenticated to nas.lan.\nadmin is not in the sudoers file.",
            Status.FAILED,
            ssh.SUDO_REFUSED.format(user="admin", path="/sbin/shutdown"),
            id="sudoers",
        ),
        pytest.param(
            127,
            "Authenticated to nas.lan.\nbash: line 1: sudo: command not found",
            Status.FAILED,
            "sudo not found on nas.lan",
            id="no-sudo",
        ),
        pytest.param(
            255,
            "Authenticated to nas.lan.\nTimeout, server nas.lan not responding.",
            Status.OK,
            "shutdown started (the host hung up)",
            id="went-quiet",
        ),
    ],
)
def test_shutdown_outcome(returncode: int, stderr: str, status: Status, detail: str) -> None:
    outcome = ssh.shutdown_outcome(COMPUTER, Finished(returncode, "", stderr))

    assert (outcome.status, outcome.detail) == (status, detail)
