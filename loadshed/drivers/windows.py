"""Shut Windows computers down remotely, by whichever path the monitor PC has.

Owns: the command for each path and the mapping of its answers to an `Outcome`:

- a Windows monitor: `shutdown /s /f /t 0 /m \\\\host` (the monitor's own logon is the
  credential);
- Linux or macOS: Samba's `net rpc shutdown`, over SMB (port 445). The password never goes on
  the command line, where any local user could read it in the process list: it is handed to the
  child in the `PASSWD` environment variable, which Samba's credential code reads when no
  password was given on the command line (`cli_credentials_guess`, the same variable as
  smbclient's). The child's environment is never logged;
- `via=ssh` in computers.txt: Windows' own OpenSSH server, through `loadshed.drivers.ssh`.

Must not: log or return the password (nor the environment that carries it), run a shell, or
raise into its caller. Every process is bounded by `timeout_s` and killed when it runs out.
"""

from __future__ import annotations

import ipaddress
import logging
import sys
from pathlib import Path
from typing import Final

from loadshed.computers import SMB_PORT, Computer
from loadshed.drivers import ssh
from loadshed.drivers.ssh import run_bounded
from loadshed.model import Kind, Outcome, Power

_LOG = logging.getLogger(__name__)

SHUTDOWN_COMMENT: Final = "loadshed: power outage"  # shown on the Windows screen as it goes
PASSWORD_VARIABLE: Final = "PASSWD"  # Samba's `net` takes the password from here, unprompted
DETAIL_MAX_CHARS: Final = 160  # an Outcome's detail is one line in a table
BUILD_TIMEOUT_S: Final = 10.0  # via=ssh: the ConnectTimeout basis when only building the command

NO_NET: Final = "install samba-common-bin (net) to shut down Windows from Linux"
NO_SHUTDOWN_EXE: Final = "shutdown.exe not found on this Windows monitor"
NO_PASSWORD: Final = (
    "WINDOWS_PASSWORD is not set: net rpc shutdown needs the Windows user's password"
)
NO_USER: Final = "no Windows user: write user@host in computers.txt"
LOGIN_REJECTED: Final = (
    "Windows rejected the login: check the user in computers.txt and WINDOWS_PASSWORD"
)
ACCESS_DENIED: Final = (
    "Windows refused the shutdown: the user must be an administrator allowed to shut down remotely"
)
IN_PROGRESS: Final = "already shutting down"

# Answers of `net rpc shutdown` (NTSTATUS / WERROR names) and of shutdown.exe (its messages).
_ANSWERS: Final[tuple[tuple[str, Outcome], ...]] = (
    ("SHUTDOWN_IN_PROGRESS", Outcome.ok(Power.OFF, detail=IN_PROGRESS)),
    ("shutdown is in progress", Outcome.ok(Power.OFF, detail=IN_PROGRESS)),
    ("(1115)", Outcome.ok(Power.OFF, detail=IN_PROGRESS)),
    ("NT_STATUS_LOGON_FAILURE", Outcome.failed(LOGIN_REJECTED)),
    ("NT_STATUS_WRONG_PASSWORD", Outcome.failed(LOGIN_REJECTED)),
    ("NT_STATUS_NO_SUCH_USER", Outcome.failed(LOGIN_REJECTED)),
    ("NT_STATUS_ACCOUNT_DISABLED", Outcome.failed(LOGIN_REJECTED)),
    ("NT_STATUS_PASSWORD_EXPIRED", Outcome.failed(LOGIN_REJECTED)),
    ("NT_STATUS_ACCESS_DENIED", Outcome.failed(ACCESS_DENIED)),
    ("WERR_ACCESS_DENIED", Outcome.failed(ACCESS_DENIED)),
    ("Access is denied", Outcome.failed(ACCESS_DENIED)),
    ("NT_STATUS_CONNECTION_REFUSED", Outcome.unreachable("SMB port refused the connection")),
    ("NT_STATUS_HOST_UNREACHABLE", Outcome.unreachable("no route to it (is it on the network?)")),
    (
        "NT_STATUS_NETWORK_UNREACHABLE",
        Outcome.unreachable("no route to it (is it on the network?)"),
    ),
    ("NT_STATUS_IO_TIMEOUT", Outcome.unreachable("no answer on the SMB port")),
    ("NT_STATUS_UNSUCCESSFUL", Outcome.unreachable("cannot reach it over SMB")),
    ("network path was not found", Outcome.unreachable("network path not found (is it on?)")),
    ("(53)", Outcome.unreachable("network path not found (is it on?)")),
    ("Connection refused", Outcome.unreachable("SMB port refused the connection")),
)


def build_command(
    computer: Computer,
    *,
    platform: str,
    password: str = "",
    ssh_config: Path | None = None,
    timeout_s: float = BUILD_TIMEOUT_S,
) -> tuple[list[str], dict[str, str]]:
    """The argument list for this computer's path, and what to add to the child's environment.

    Pure. The returned environment holds the password: never log it.
    """
    if computer.via_ssh:
        remote = ssh.remote_line(computer)
        return ssh.ssh_command(computer, remote, ssh_config=ssh_config, timeout_s=timeout_s), {}
    if platform == "win32":
        return ["shutdown", "/s", "/f", "/t", "0", "/m", f"\\\\{computer.host}"], {}
    argv = ["net", "rpc", "shutdown", "-f", "-t", "0", "-C", SHUTDOWN_COMMENT]
    argv += ["-I" if _is_ip(computer.host) else "-S", computer.host]
    if computer.port != SMB_PORT:
        argv += ["-p", str(computer.port)]
    if computer.user:
        argv += ["-U", computer.user]
    return argv, {PASSWORD_VARIABLE: password}


async def shutdown(
    computer: Computer,
    *,
    password: str,
    platform: str = sys.platform,
    timeout_s: float,
    ssh_config: Path | None = None,
) -> Outcome:
    """Shut the Windows computer down by this monitor's path. Never raises."""
    if computer.kind is not Kind.WINDOWS:
        return Outcome.failed(f"{computer.name} is not a Windows computer")
    if computer.via_ssh:
        return await ssh.shutdown(computer, ssh_config=ssh_config, timeout_s=timeout_s)
    samba = platform != "win32"
    if samba and not password:
        return Outcome.failed(NO_PASSWORD)
    if samba and not computer.user:
        return Outcome.failed(NO_USER)
    argv, extra_env = build_command(computer, platform=platform, password=password)
    env = {**ssh.child_env(), **extra_env}  # none of loadshed's own secrets but this one
    try:
        done = await run_bounded(argv, timeout_s=timeout_s, env=env)
    except TimeoutError:
        return Outcome.unreachable(f"no answer in {timeout_s:g} s")
    except FileNotFoundError:
        return Outcome.failed(NO_NET if samba else NO_SHUTDOWN_EXE)
    except OSError as err:
        return Outcome.failed(f"cannot run {argv[0]}: {err.strerror or err}")
    outcome = _outcome(done.returncode, done.stdout + "\n" + done.stderr, password)
    _LOG.debug(
        "windows %s: shutdown: %s %s", computer.address, outcome.status.value, outcome.detail
    )
    return outcome


def _outcome(returncode: int, output: str, password: str) -> Outcome:
    for text, outcome in _ANSWERS:
        if text in output:
            return outcome
    if returncode == 0:
        return Outcome.ok(Power.OFF, detail="shutdown started")
    return Outcome.failed(f"shutdown failed (exit {returncode}): {_last_line(output, password)}")


def _last_line(text: str, password: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    line = lines[-1] if lines else "no message"
    if password:
        line = line.replace(password, "***")  # a tool that echoes it must not pass it on
    return line if len(line) <= DETAIL_MAX_CHARS else line[: DETAIL_MAX_CHARS - 1] + "…"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
