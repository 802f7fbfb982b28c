"""Shut computers down over the system's OpenSSH client (their going down is computer.py's).

Owns: the `ssh` argument list, the remote command line (built once, quoted for the remote
shell), running a command bounded in time (`run_bounded`, shared with the Windows driver), and
turning ssh's exit status and messages into an `Outcome` that names the fix. `preflight` is what
`loadshed check` runs: it proves the key login and the host key, then asks `sudo -n -l` (or
`command -v`) whether the shutdown would be allowed, without running it.

Must not: run a local shell, turn host-key checking off or let ssh ask about a key
(StrictHostKeyChecking=yes, always), let anything prompt (BatchMode=yes, stdin from /dev/null,
a session of its own without a terminal), or raise into its caller. Every process started here
is killed with its process group when its time runs out.

A key limited on the target with `command="sudo -n /sbin/shutdown -h now"` (the set-up FIELD.md
recommends) would shut the host down on *any* login, so `preflight` first logs in without
running anything (`ssh -N`) and reads the key options the server reports; when the key carries a
forced command it stops there.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import math
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from loadshed.computers import SSH_PORT, Computer
from loadshed.model import Kind, Outcome, Power

_LOG = logging.getLogger(__name__)

SSH_BINARY: Final = "ssh"  # the system OpenSSH client, found on PATH
# ssh gives up connecting this long before our own deadline, so that its own reason (refused,
# no route) is what the owner reads, rather than our "no answer".
CONNECT_MARGIN_S: Final = 1.0
MIN_CONNECT_TIMEOUT_S: Final = 1  # ConnectTimeout takes whole seconds, 1 at least
SERVER_ALIVE_INTERVAL_S: Final = 2  # a host that vanishes mid-command is noticed after
SERVER_ALIVE_COUNT: Final = 2  # 2 x 2 s without an answer, not after TCP's minutes
KILL_WAIT_S: Final = 2.0  # after SIGKILL, longest wait for the process to be reaped
KEY_OPTIONS_WAIT_S: Final = 2.0  # after login, longest wait for the server's key options
DETAIL_MAX_CHARS: Final = 160  # an Outcome's detail is one line in a table

KEY_REJECTED: Final = "SSH key not accepted: copy your key with ssh-copy-id {login}"
HOST_KEY: Final = (
    "host key unknown or changed: check ~/.ssh/known_hosts (ssh {login} once to accept it)"
)
SUDO_PASSWORD: Final = (
    "sudo needs a password: allow passwordless shutdown in sudoers"
    " ({user} ALL=(root) NOPASSWD: {path})"
)
SUDO_REFUSED: Final = (
    "sudo does not allow the shutdown: add to sudoers ({user} ALL=(root) NOPASSWD: {path})"
)
NO_SSH: Final = "ssh not found: install the OpenSSH client (openssh-client)"

# ssh's own messages, as OpenSSH prints them (exit status 255).
_HOST_KEY_TEXTS: Final = (
    "Host key verification failed",
    "REMOTE HOST IDENTIFICATION HAS CHANGED",
)
_KEY_TEXTS: Final = (
    "Permission denied (",
    "Too many authentication failures",
    "No more authentication methods",
)
_CONFIG_TEXTS: Final = (
    "Can't open user config file",
    "Bad configuration option",
    "bad configuration options",
    "no argument after keyword",
)
_UNREACHABLE_TEXTS: Final[tuple[tuple[str, str], ...]] = (
    ("Connection refused", "port {port} refused the connection (is sshd running?)"),
    ("Connection timed out", "no answer on port {port}"),
    ("Operation timed out", "no answer on port {port}"),
    ("No route to host", "no route to it (is it on the network?)"),
    ("Network is unreachable", "no route to it (is it on the network?)"),
    ("Host is down", "host is down (is it powered?)"),
    ("Could not resolve hostname", "cannot resolve the name {host}"),
    ("kex_exchange_identification", "the SSH server closed the connection before login"),
    ("Connection closed by", "the SSH server closed the connection before login"),
    ("Connection reset by", "the SSH server reset the connection before login"),
)
# After login, these mean the connection went away: a shutdown's usual way of ending.
_DROPPED_TEXTS: Final = (
    "closed by remote host",
    "Connection closed by",
    "Connection reset by",
    "Broken pipe",
    "not responding",  # "Timeout, server nas.lan not responding."
    "client_loop: send disconnect",
)
# sudo's answers, from the remote command's stderr.
_SUDO_PASSWORD_TEXTS: Final = (
    "a password is required",
    "a terminal is required",
    "no tty present",
    "no askpass program",
)
_SUDO_REFUSED_TEXTS: Final = (
    "is not in the sudoers file",
    "is not allowed to execute",
    "may not run sudo",
)
_AUTHENTICATED: Final = "Authenticated to"  # ssh -o LogLevel=VERBOSE, once the login worked
_KEY_OPTIONS_RE: Final = re.compile(r"Remote: .*key options:(.*)$")  # LogLevel=DEBUG1
_FORCED_RE: Final = re.compile(r"\bcommand\b|[Ff]orced command")
_NOISE: Final = ("debug", _AUTHENTICATED, "Transferred:", "Bytes per second:")
_SUDO_ARG_OPTIONS: Final = frozenset({"-u", "-g", "-p", "-C", "-D", "-r", "-t", "-T", "-U"})


@dataclass(frozen=True, slots=True)
class Finished:
    """How a bounded command ended: exit status and what it printed (decoded, replaced)."""

    returncode: int
    stdout: str
    stderr: str


def remote_line(computer: Computer, argv: Sequence[str] | None = None) -> str:
    """The one line the remote shell parses: argv (default: the shutdown command), quoted.

    POSIX targets get `shlex.join`; Windows' OpenSSH hands the line to cmd.exe, which does not
    know single quotes, so a Windows target gets the MS C runtime's quoting instead.
    """
    words = tuple(computer.shutdown_command if argv is None else argv)
    if computer.kind is Kind.WINDOWS:
        return subprocess.list2cmdline(words)
    return shlex.join(words)


def ssh_command(
    computer: Computer,
    remote: str | None,
    *,
    ssh_config: Path | None,
    timeout_s: float,
    log_level: str = "VERBOSE",
) -> list[str]:
    """The ssh argument list that runs `remote` on the computer (None: log in, run nothing)."""
    connect_s = max(MIN_CONNECT_TIMEOUT_S, math.floor(timeout_s - CONNECT_MARGIN_S))
    options = (
        ("BatchMode", "yes"),  # never a password, passphrase or host-key question
        ("StrictHostKeyChecking", "yes"),  # unknown or changed key: fail ("ask" would prompt)
        ("ConnectTimeout", str(connect_s)),
        ("ServerAliveInterval", str(SERVER_ALIVE_INTERVAL_S)),
        ("ServerAliveCountMax", str(SERVER_ALIVE_COUNT)),
        ("RequestTTY", "no"),
        ("RemoteCommand", "none"),  # a RemoteCommand in the owner's config would clash
        ("ControlMaster", "no"),  # a persisting master would outlive (and hold) our pipes
        ("ControlPath", "none"),
        ("ClearAllForwardings", "yes"),  # a forwarding in the config could fail the login
        ("ForwardAgent", "no"),
        ("ForwardX11", "no"),
        ("PermitLocalCommand", "no"),
        ("LogLevel", log_level),  # VERBOSE says "Authenticated to": we know the login worked
    )
    argv = [SSH_BINARY]
    if ssh_config is not None:
        argv += ["-F", str(ssh_config)]
    for key, value in options:
        argv += ["-o", f"{key}={value}"]
    if remote is None:
        argv.append("-N")
    if computer.port is not None:  # otherwise the ssh_config's Port (or 22) applies
        argv += ["-p", str(computer.port)]
    if computer.user:
        argv += ["-l", computer.user]
    argv += ["--", computer.host]  # the parser refused hosts starting with '-'; belt and braces
    if remote is not None:
        argv.append(remote)
    return argv


def preflight_command(computer: Computer) -> tuple[str, ...]:
    """What `preflight` runs to show the shutdown would be allowed, without running it."""
    argv = computer.shutdown_command
    if computer.kind is Kind.WINDOWS:
        return ("cmd", "/c", "ver")
    if argv[0] == "sudo":
        return ("sudo", "-n", "-l", *(a for a in argv[1:] if a != "-n"))
    return ("command", "-v", argv[0])


async def shutdown(computer: Computer, *, ssh_config: Path | None, timeout_s: float) -> Outcome:
    """Run the computer's shutdown command over ssh. Never raises.

    OK means the command was accepted (it exited 0, or the host dropped the connection after
    the login, as a host going down does); whether it is down is for
    `ComputerSwitch.wait_down` to see.
    """
    if not computer.uses_ssh:
        return Outcome.failed(f"{computer.name} is not shut down over SSH (add via=ssh)")
    argv = ssh_command(computer, remote_line(computer), ssh_config=ssh_config, timeout_s=timeout_s)
    try:
        done = await run_bounded(argv, timeout_s=timeout_s)
    except TimeoutError:
        return Outcome.unreachable(f"no answer in {timeout_s:g} s")
    except FileNotFoundError:
        return Outcome.failed(NO_SSH)
    except OSError as err:
        return Outcome.failed(f"cannot run ssh: {err.strerror or err}")
    outcome = shutdown_outcome(computer, done)
    _LOG.debug("ssh %s: shutdown: %s %s", computer.address, outcome.status.value, outcome.detail)
    return outcome


async def preflight(computer: Computer, *, ssh_config: Path | None, timeout_s: float) -> Outcome:
    """Show that `shutdown` would work: key login, host key, sudo. Never shuts down or raises.

    OK carries Power.ON (the host answered). A key limited to a forced command is reported OK
    after the login alone: any command sent would run the forced one. (A server-wide
    `ForceCommand` in the target's sshd_config cannot be seen from here.)
    """
    if not computer.uses_ssh:
        return Outcome.failed(f"{computer.name} is not shut down over SSH (add via=ssh)")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    login = await _login(computer, ssh_config=ssh_config, timeout_s=timeout_s)
    if login.outcome is not None:
        return login.outcome
    if login.forced_command:
        return Outcome.ok(
            Power.ON, detail="key login works; the key only runs its forced command (not run)"
        )
    if login.key_options is None:
        return Outcome.ok(
            Power.ON, detail="key login works; the server did not say whether the key is limited"
        )
    probe = preflight_command(computer)
    remaining = deadline - loop.time()
    argv = ssh_command(
        computer, remote_line(computer, probe), ssh_config=ssh_config, timeout_s=remaining
    )
    try:
        done = await run_bounded(argv, timeout_s=remaining)
    except TimeoutError:
        return Outcome.unreachable(f"no answer in {timeout_s:g} s")
    except OSError as err:
        return Outcome.failed(f"cannot run ssh: {err.strerror or err}")
    return preflight_outcome(computer, probe, done)


def child_env() -> dict[str, str]:
    """This process's environment for a child (ssh, its ProxyCommand, Samba's `net`), less
    loadshed's own secrets (the LOADSHED_* variables)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("LOADSHED_")}


async def run_bounded(
    argv: Sequence[str], *, timeout_s: float, env: Mapping[str, str] | None = None
) -> Finished:
    """Run argv (no shell, stdin from /dev/null, a session of its own) for at most timeout_s.

    Raises TimeoutError once it has been killed with its process group, OSError (such as
    FileNotFoundError) when it could not be started. `env` replaces the environment; it is never
    logged.
    """
    _LOG.debug("running %s", shlex.join(argv))
    proc = await _spawn(argv, env=env)
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout_s)
    finally:
        await _reap(proc)
    returncode = proc.returncode if proc.returncode is not None else -1
    return Finished(returncode, _decode(stdout), _decode(stderr))


def shutdown_outcome(computer: Computer, done: Finished) -> Outcome:
    """What a finished `ssh ... <shutdown command>` means, in words naming the fix. Pure."""
    if done.returncode == 0:
        return Outcome.ok(Power.OFF, detail="shutdown started")
    logged_in = _AUTHENTICATED in done.stderr
    if done.returncode == 255:
        if logged_in and _has(done.stderr, _DROPPED_TEXTS):
            return Outcome.ok(Power.OFF, detail="shutdown started (the host hung up)")
        failure = _ssh_failure(computer, done.stderr)
        if failure is not None:
            return failure
    return _remote_failure(computer, computer.shutdown_command, done, probing=False)


def preflight_outcome(computer: Computer, probe: Sequence[str], done: Finished) -> Outcome:
    """What a finished `ssh ... <preflight_command>` means, in words naming the fix. Pure."""
    if done.returncode == 0:
        allowed = "sudo allows the shutdown" if probe[0] == "sudo" else f"{probe[-1]} found"
        if computer.kind is Kind.WINDOWS:
            allowed = "Windows answers"
        return Outcome.ok(Power.ON, detail=f"key login works; {allowed}")
    if done.returncode == 255:
        if _AUTHENTICATED in done.stderr and _has(done.stderr, _DROPPED_TEXTS):
            return Outcome.unreachable(f"connection lost: {_last_line(done.stderr)}")
        failure = _ssh_failure(computer, done.stderr)
        if failure is not None:
            return failure
    return _remote_failure(computer, probe, done, probing=True)


# -- inside ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Login:
    outcome: Outcome | None  # set when the login failed
    key_options: str | None = None  # what the server said of the key; None: it did not say
    forced_command: bool = False


async def _spawn(
    argv: Sequence[str], *, env: Mapping[str, str] | None
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env) if env is not None else child_env(),
        start_new_session=True,  # no terminal to prompt on; one process group to kill
    )


async def _reap(proc: asyncio.subprocess.Process) -> None:
    """Kill proc and its process group if it still runs, and wait (bounded) until it is gone."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if sys.platform == "win32":
                proc.kill()
            else:
                os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), KILL_WAIT_S)


async def _login(computer: Computer, *, ssh_config: Path | None, timeout_s: float) -> _Login:
    """Log in without running anything (ssh -N) and read the key options the server reports."""
    argv = ssh_command(
        computer, None, ssh_config=ssh_config, timeout_s=timeout_s, log_level="DEBUG1"
    )
    _LOG.debug("running %s", shlex.join(argv))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    try:
        proc = await _spawn(argv, env=None)
    except FileNotFoundError:
        return _Login(Outcome.failed(NO_SSH))
    except OSError as err:
        return _Login(Outcome.failed(f"cannot run ssh: {err.strerror or err}"))
    assert proc.stderr is not None
    lines: list[str] = []
    options_by = math.inf  # after the login: how long we still wait for the key options
    try:
        while True:
            remaining = min(deadline, options_by) - loop.time()
            try:
                raw = await asyncio.wait_for(proc.stderr.readline(), max(remaining, 0))
            except TimeoutError:
                if options_by < math.inf:
                    return _Login(None)  # logged in; the server says nothing about the key
                return _Login(Outcome.unreachable(f"no answer in {timeout_s:g} s"))
            except ValueError:
                continue  # a line over the reader's limit (already dropped): not one we want
            if not raw:
                break  # ssh ended without getting in: its messages say why
            line = _decode(raw).rstrip()
            lines.append(line)
            if line.startswith(_AUTHENTICATED):
                options_by = loop.time() + KEY_OPTIONS_WAIT_S
            match = _KEY_OPTIONS_RE.search(line)
            if match:
                options = match.group(1).strip()
                return _Login(None, options, bool(_FORCED_RE.search(options)))
    finally:
        await _reap(proc)
    stderr = "\n".join(lines)
    outcome = _ssh_failure(computer, stderr) or Outcome.failed(f"ssh: {_last_line(stderr)}")
    return _Login(outcome)


def _ssh_failure(computer: Computer, stderr: str) -> Outcome | None:
    """ssh's own failure to connect or log in, in words naming the fix; None if not one."""
    login = (
        computer.target
        if computer.port in (None, SSH_PORT)
        else f"-p {computer.port} {computer.target}"
    )
    if _has(stderr, _CONFIG_TEXTS):
        return Outcome.failed(f"ssh config: {_last_line(stderr)}")
    if _has(stderr, _HOST_KEY_TEXTS):
        return Outcome.failed(HOST_KEY.format(login=login))
    if _AUTHENTICATED in stderr:
        return None
    if _has(stderr, _KEY_TEXTS):
        return Outcome.failed(KEY_REJECTED.format(login=login))
    for text, detail in _UNREACHABLE_TEXTS:
        if text in stderr:
            port = computer.port if computer.port is not None else "ssh"
            # Before the login nothing was asked of the host: no shutdown was sent.
            return Outcome.unreachable(detail.format(port=port, host=computer.host), sent=False)
    return None


def _remote_failure(
    computer: Computer, argv: Sequence[str], done: Finished, *, probing: bool
) -> Outcome:
    """The remote command ran and failed: sudo's answers first, then its exit status."""
    text = done.stderr + "\n" + done.stdout
    uses_sudo = computer.shutdown_command[0] == "sudo"
    user, path = _sudoers_user(computer), _sudoers_path(computer)
    if _has(text, _SUDO_PASSWORD_TEXTS):
        return Outcome.failed(SUDO_PASSWORD.format(user=user, path=path))
    if _has(text, _SUDO_REFUSED_TEXTS) or (probing and uses_sudo and done.returncode == 1):
        return Outcome.failed(SUDO_REFUSED.format(user=user, path=path))
    if done.returncode == 127 or "command not found" in text or "not recognized" in text:
        missing = "sudo" if uses_sudo and "sudo" in text else argv[0]
        return Outcome.failed(f"{missing} not found on {computer.host}")
    if probing and argv[0] == "command":
        return Outcome.failed(f"{argv[-1]} not found on {computer.host}")
    what = "check" if probing else "shutdown command"
    return Outcome.failed(f"{what} failed (exit {done.returncode}): {_last_line(done.stderr)}")


def _sudoers_user(computer: Computer) -> str:
    if computer.user:
        return computer.user
    try:
        return getpass.getuser()  # ssh logs in with the local name when none is given
    except (KeyError, OSError):
        return "user"


def _sudoers_path(computer: Computer) -> str:
    """The command sudoers must allow: the first word after sudo and its options."""
    words = iter(computer.shutdown_command[1:])
    command = "shutdown"
    for word in words:
        if word in _SUDO_ARG_OPTIONS:
            next(words, None)
        elif not word.startswith("-"):
            command = word
            break
    if command.startswith("/"):
        return command
    return f"/usr/sbin/{command}" if computer.kind is Kind.SOLARIS else f"/sbin/{command}"


def _has(text: str, needles: Sequence[str]) -> bool:
    return any(needle in text for needle in needles)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines()]
    useful = [ln for ln in lines if ln and not ln.startswith(_NOISE)]
    line = useful[-1] if useful else "no message"
    return line if len(line) <= DETAIL_MAX_CHARS else line[: DETAIL_MAX_CHARS - 1] + "…"


def _decode(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", "replace")
