"""The Windows driver: the command each path builds, and how its answers are read.

No Windows host can run here, and Samba's `net rpc shutdown` needs one to talk to, so the
commands are checked as built (`build_command`), and the running code is exercised against
small stand-in `net` and `shutdown` scripts put first on PATH: they record their arguments and
environment and answer the way the real tools do. The via=ssh path runs for real, against the
simulated SSH host.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadshed.computers import Computer
from loadshed.drivers.windows import (
    ACCESS_DENIED,
    LOGIN_REJECTED,
    NO_NET,
    NO_PASSWORD,
    build_command,
    shutdown,
)
from loadshed.model import Kind, Outcome, Power, Status
from loadshed.sim.ssh import SshHost

pytestmark = pytest.mark.timeout(30)

PASSWORD = "correct-horse-battery-staple"
GAMEPC = Computer(Kind.WINDOWS, host="192.0.2.40", name="Game PC", port=445, user="shutdownuser")
TIMEOUT_S = 5.0
HANG_TIMEOUT_S = 1.0
HANG_CEILING_S = HANG_TIMEOUT_S + 2.0  # kill and reap included
GONE_WAIT_S = 5.0  # a ceiling for a killed process to disappear


@pytest.fixture
def tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty directory that is the whole PATH: put stand-ins in it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    yield bin_dir


def stand_in(tools: Path, name: str, body: str) -> Path:
    """Write an executable stand-in that records argv and $PASSWD, then runs body."""
    record = tools.parent
    script = tools / name
    script.write_text(
        "#!/bin/sh\n"
        f"printf '%s\\n' \"$@\" > '{record}/argv'\n"
        f"printf '%s' \"$PASSWD\" > '{record}/passwd'\n" + body
    )
    script.chmod(0o755)
    return record


def run(computer: Computer = GAMEPC, **kwargs: object) -> Outcome:
    options: dict[str, object] = {"password": PASSWORD, "platform": "linux", "timeout_s": TIMEOUT_S}
    options.update(kwargs)
    return asyncio.run(shutdown(computer, **options))  # type: ignore[arg-type]


# -- what each path builds ---------------------------------------------------------------------


def test_from_a_windows_monitor() -> None:
    argv, env = build_command(GAMEPC, platform="win32", password=PASSWORD)

    assert argv == ["shutdown", "/s", "/f", "/t", "0", "/m", "\\\\192.0.2.40"]
    assert env == {}


def test_from_linux_the_password_goes_in_the_environment() -> None:
    argv, env = build_command(GAMEPC, platform="linux", password=PASSWORD)

    assert argv == [
        "net", "rpc", "shutdown", "-f", "-t", "0", "-C", "loadshed: power outage",
        "-I", "192.0.2.40", "-U", "shutdownuser",
    ]  # fmt: skip
    assert env == {"PASSWD": PASSWORD}
    assert not any(PASSWORD in word for word in argv)


def test_from_macos_by_name_and_port() -> None:
    computer = Computer(Kind.WINDOWS, host="gamepc", name="gamepc", port=4450, user="me")

    argv, _env = build_command(computer, platform="darwin", password=PASSWORD)

    assert argv[:8] == ["net", "rpc", "shutdown", "-f", "-t", "0", "-C", "loadshed: power outage"]
    assert argv[8:] == ["-S", "gamepc", "-p", "4450", "-U", "me"]


def test_via_ssh_builds_ssh() -> None:
    computer = Computer(
        Kind.WINDOWS, host="gamepc", name="gamepc", port=22, user="me", via_ssh=True
    )

    argv, env = build_command(computer, platform="linux", password=PASSWORD)

    assert argv[0] == "ssh"
    assert argv[-3:] == ["--", "gamepc", "shutdown /s /f /t 0"]
    assert "StrictHostKeyChecking=yes" in argv
    assert env == {}


# -- running it -------------------------------------------------------------------------------


def test_missing_net_says_what_to_install(tools: Path) -> None:
    outcome = run()

    assert outcome.status is Status.FAILED
    assert outcome.detail == NO_NET


def test_net_gets_the_password_only_through_its_environment(
    tools: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    record = stand_in(tools, "net", "echo 'Shutdown of remote machine succeeded'\n")

    outcome = run()

    assert (outcome.status, outcome.power) == (Status.OK, Power.OFF), outcome.detail
    assert (record / "passwd").read_text() == PASSWORD
    argv = (record / "argv").read_text().splitlines()
    assert argv == build_command(GAMEPC, platform="linux")[0][1:]  # after argv[0]
    assert PASSWORD not in caplog.text
    assert PASSWORD not in outcome.detail


def test_no_password_runs_nothing(tools: Path) -> None:
    record = stand_in(tools, "net", "exit 0\n")

    outcome = run(password="")

    assert outcome.status is Status.FAILED
    assert outcome.detail == NO_PASSWORD
    assert not (record / "argv").exists()


@pytest.mark.parametrize(
    ("answer", "status", "detail"),
    [
        pytest.param(
            "echo 'Could not connect to server 192.0.2.40' >&2\n"
            "echo 'Connection failed: NT_STATUS_LOGON_FAILURE' >&2\nexit 255\n",
            Status.FAILED,
            LOGIN_REJECTED,
            id="wrong-password",
        ),
        pytest.param(
            "echo 'Shutdown of remote machine failed' >&2\n"
            "echo 'result was: WERR_ACCESS_DENIED' >&2\nexit 255\n",
            Status.FAILED,
            ACCESS_DENIED,
            id="not-admin",
        ),
        pytest.param(
            "echo 'Connection failed: NT_STATUS_IO_TIMEOUT' >&2\nexit 255\n",
            Status.UNREACHABLE,
            "no answer on the SMB port",
            id="off",
        ),
        pytest.param(
            'echo "odd failure for $PASSWD" >&2\nexit 2\n',
            Status.FAILED,
            "shutdown failed (exit 2): odd failure for ***",
            id="echoes-the-password",
        ),
    ],
)
def test_net_answers(tools: Path, answer: str, status: Status, detail: str) -> None:
    stand_in(tools, "net", answer)

    outcome = run()

    assert (outcome.status, outcome.detail) == (status, detail)


def test_a_hung_net_is_killed_with_its_children(tools: Path) -> None:
    record = stand_in(tools, "net", f"/bin/sleep 30 &\necho $! > '{tools.parent}/child'\nwait\n")

    started = time.monotonic()
    outcome = run(timeout_s=HANG_TIMEOUT_S)
    elapsed = time.monotonic() - started

    assert outcome.status is Status.UNREACHABLE
    assert outcome.detail == f"no answer in {HANG_TIMEOUT_S:g} s"
    assert elapsed < HANG_CEILING_S
    child = int((record / "child").read_text())
    deadline = time.monotonic() + GONE_WAIT_S
    while is_running(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not is_running(child)


def test_from_a_windows_monitor_network_path_not_found(tools: Path) -> None:
    stand_in(tools, "shutdown", "echo '192.0.2.40: The network path was not found.(53)'\nexit 53\n")

    outcome = run(platform="win32")

    assert outcome.status is Status.UNREACHABLE
    assert "network path not found" in outcome.detail


def test_via_ssh_runs_over_ssh() -> None:
    with SshHost() as host:
        computer = host.computer(Kind.WINDOWS)

        outcome = run(computer, password="", ssh_config=host.ssh_config)

        assert outcome.status is Status.OK, outcome.detail
        assert host.commands() == ["shutdown /s /f /t 0"]


def is_running(pid: int) -> bool:
    """Whether pid is a live process (a zombie waiting to be reaped is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
