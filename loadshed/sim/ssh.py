"""A simulated computer: the real OpenSSH server on loopback, recording what it is asked to run.

`SshHost` owns a private temporary directory holding throw-away host and client keys (made by
`ssh-keygen`), an `sshd_config`, a client `ssh_config` and a forced command. It runs
`/usr/sbin/sshd -D -e -f <config>` as a child process bound to one 127.0.0.0/8 address, so the
real `ssh` client logs in with the real protocol. The forced command never runs anything: it
appends `$SSH_ORIGINAL_COMMAND` to a log, parses it with the shell exactly as a real host would
(so a badly quoted command would split, or run `$(...)`, here too), and answers:

- a read-only probe (`sudo -n -l ...`, `command -v ...`, `cmd /c ver`, `true`) like the real
  thing, and the host stays up;
- anything else is a shutdown: recorded, then the host goes down in two phases, as a real one
  does. `down_after_s` later the sshd listener stops (systemd stops sshd early): the kernel is
  still up and the port *refuses* connections. `refuse_s` later the host is off: the port is
  *silent* (a connect() times out) until `start()` boots it again on the same port. With
  `drop_connection`, the session is cut before the exit status is sent, as a real shutdown often
  does.

Its power is a `HostPower`: UP (sshd listens), STOPPING (refused) or OFF (silent). Silence on
loopback is a listener of our own on the port with `listen(0)` and a full accept queue (a few
connections made to it and never accepted): the kernel drops every new SYN. The forced command
runs in sshd's processes, so the fall from STOPPING to OFF is made here, by a daemon thread per
boot that sees sshd exit without `stop_sshd()`, `power_off()` or `close()` having asked it to.
`power_off()` is a power cut (OFF at once); `stop_sshd()` stops sshd alone (STOPPING, for good);
`start()` from either, from any thread, cancels a pending fall and boots. A lock keeps them apart.

Faults, switchable at any time: `refuse_key` (the client key is not authorized: "Permission
denied (publickey)"), `change_host_key()` (a new host key the client's known_hosts does not
have), `sudo_needs_password` (sudo answers "a password is required", exit 1) and `hang` (the
login works, the command never returns; it ends itself once the client has gone). And one
set-up rather than a fault: `restricted_key` authorizes the client key with
`restrict,command="..."`, as FIELD.md recommends, so every login runs the forced command,
whatever was asked: any command is a shutdown.

Several hosts (the demo's house) can share one client key (`client_key=`) and one client config
(`combined_ssh_config`). A host may have an `alias`: ssh_config then names it (`Host nas`,
`HostName 127.0.0.1`, its `Port`), and its `computer()` says `nas` with no port, as an owner's
computers.txt leaning on ~/.ssh/config would. Plain synchronous code (subprocesses and threads,
no event loop), for tests and the demo; a context manager. It must not bind anything outside
127.0.0.0/8, nor touch the system's sshd, its config, keys or pid file.
"""

from __future__ import annotations

import dataclasses
import getpass
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from loadshed.computers import Computer
from loadshed.model import Kind
from loadshed.sim.base import check_loopback

SSHD_PATH: Final = Path("/usr/sbin/sshd")  # sshd insists on being started by absolute path
PRIVSEP_DIR: Final = Path("/run/sshd")  # sshd (as root) refuses to start without it
START_TIMEOUT_S: Final = 10.0  # longest sshd may take to say it is listening
STOP_TIMEOUT_S: Final = 5.0  # longest sshd may take to exit on SIGTERM before SIGKILL
KEYGEN_TIMEOUT_S: Final = 30.0  # ssh-keygen of one ed25519 key takes milliseconds
POLL_S: Final = 0.01  # how often start() looks for the "listening" line
PORT_TRIES: Final = 5  # free ports tried when another process takes the one picked
DOWN_AFTER_S: Final = 0.3  # a shutdown stops the sshd listener this long after the command
# then the kernel refuses connections this long before the host is off and silent (a real one:
# tens of seconds, flushing disks; short here, for the tests)
REFUSE_S: Final = 2.0
SILENCE_FILLERS: Final = 2  # connections never accepted that keep a listen(0) queue full
ALIAS_RE: Final = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9._-]*[A-Za-z0-9_])?$")  # an ssh_config Host
HANG_TICK_S: Final = 0.2  # a hung command writes a byte this often, to notice the client left
HANG_MAX_S: Final = 300  # and gives up after this long, so nothing outlives a test run by much
WINDOWS_VER: Final = "Microsoft Windows [Version 10.0.19045.3803]"

_SCRIPT: Final = r"""#!/bin/sh
# The forced command of a simulated host: record what was asked, never run it.
dir={dir}
cd "$dir" || exit 1
printf '%s\0' "$SSH_ORIGINAL_COMMAND" >> "$dir/commands"
# Parse it as the host's shell would; a wrongly quoted command would split (or run) here.
( eval "set -- $SSH_ORIGINAL_COMMAND" && printf '%s\0' "$#" "$@" >> "$dir/argv" ) \
    || printf '%s\0' -1 >> "$dir/argv"
eval "set -- $SSH_ORIGINAL_COMMAND" 2>/dev/null || set --
if [ {hang} = 1 ]; then
    i=0
    while [ "$i" -lt {hang_ticks} ]; do
        printf . >&2 || exit 1
        sleep {hang_tick}
        i=$((i + 1))
    done
    exit 1
fi
if [ "$1" = sudo ] && [ {sudo_password} = 1 ]; then
    echo "sudo: a password is required" >&2
    exit 1
fi
[ {restricted} = 1 ] && set -- forced  # a key limited to a command: every login shuts down
case "$1" in
    sudo)
        for arg in "$@"; do
            if [ "$arg" = -l ]; then
                echo "$*"
                exit 0
            fi
        done ;;
    command)
        if [ "$2" = -v ]; then
            case "$3" in /*) echo "$3" ;; *) echo "/usr/sbin/$3" ;; esac
            exit 0
        fi ;;
    cmd)
        if [ "$2 $3" = "/c ver" ]; then echo '{windows_ver}'; exit 0; fi ;;
    true | '')
        exit 0 ;;
esac
printf '%s\0' "$SSH_ORIGINAL_COMMAND" >> "$dir/shutdowns"
listener=$(cat "$dir/listener.pid")
# Only the sshd that took the command: SshHost.stop() removes the file, start() writes anew.
( sleep {down_after}
  [ "$(cat "$dir/listener.pid" 2>/dev/null)" = "$listener" ] && kill -TERM "$listener"
) < /dev/null > /dev/null 2>&1 &
if [ {drop} = 1 ]; then
    kill -TERM "$PPID"
fi
exit 0
"""


class HostPower(Enum):
    """What a connection to the host's port meets."""

    UP = "up"  # sshd listens
    STOPPING = "stopping"  # sshd gone, the kernel alive: connections refused
    OFF = "off"  # no power: connections go unanswered, connect() times out


class SshHost:
    """A real sshd on loopback that records commands instead of running them.

    ```
    with SshHost() as host:
        computer = host.computer(Kind.LINUX)
        outcome = asyncio.run(ssh.shutdown(computer, ssh_config=host.ssh_config, timeout_s=5))
        assert host.commands() == ["sudo -n shutdown -h now"]
    ```
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        refuse_key: bool = False,
        sudo_needs_password: bool = False,
        hang: bool = False,
        drop_connection: bool = False,
        restricted_key: bool = False,
        down_after_s: float = DOWN_AFTER_S,
        refuse_s: float = REFUSE_S,
        alias: str | None = None,
        client_key: Path | None = None,
        sshd: Path = SSHD_PATH,
    ) -> None:
        self.host = check_loopback(host)
        if alias is not None and not ALIAS_RE.match(alias):
            raise ValueError(f"an ssh_config Host name is letters, digits, . _ -: not {alias!r}")
        self.alias = alias
        self.refuse_s = refuse_s  # read when sshd goes: a test may change it before then
        self.user = getpass.getuser()
        self._port = port
        self._sshd = sshd
        self._refuse_key = refuse_key
        self._sudo_needs_password = sudo_needs_password
        self._hang = hang
        self._drop_connection = drop_connection
        self._restricted_key = restricted_key
        self._down_after_s = down_after_s
        self._proc: subprocess.Popen[bytes] | None = None
        # Power changes come from the test, a WoL or BIOS thread and the watcher: one at a time.
        # start() holds the lock while sshd boots; readers (is_up, power) do not take it.
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._boot = 0  # counts power changes: a watcher acts only if none came after its boot
        self._silence: list[socket.socket] = []  # listener first, then its fillers; OFF if any
        self._watchers: list[threading.Thread] = []
        self._closed = False
        self._dir = Path(tempfile.mkdtemp(prefix="loadshed-sshd-"))
        self.client_key = client_key or self._dir / "client_ed25519"  # its public half: + ".pub"
        self._extra_options = ["PerSourcePenalties no"]  # OpenSSH >= 9.8 would shun our faults
        try:
            if any(c.isspace() or c in "'\"\\$`" for c in str(self._dir)):
                raise RuntimeError(f"temporary directory {self._dir} is unusable in sshd_config")
            if client_key is None:
                self._keygen(self.client_key)
            self._keygen(self._dir / "host_ed25519")
            self._known_key = (self._dir / "host_ed25519.pub").read_text().split()[:2]
            self._write_script()
            self._write_authorized_keys()
        except BaseException:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise

    # -- what tests and the demo read ----------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> str:
        return f"{self.host}:{self._port}"

    @property
    def ssh_config(self) -> Path:
        """A client config for `ssh -F`: this host's key, known_hosts, user and port."""
        return self._dir / "ssh_config"

    @property
    def power(self) -> HostPower:
        """UP, STOPPING or OFF (before the first start() and after close(): STOPPING)."""
        if self.is_up:
            return HostPower.UP
        return HostPower.OFF if self._silence else HostPower.STOPPING

    @property
    def is_up(self) -> bool:
        """sshd is running (its listener may already be closing, a moment before it exits)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def is_off(self) -> bool:
        """Off: the port is silent."""
        return bool(self._silence)

    @property
    def is_powered(self) -> bool:
        """On, whether sshd runs or not: the port answers, if only to refuse."""
        return not self._silence

    def computer(self, kind: Kind = Kind.LINUX, **options: Any) -> Computer:
        """A computers.txt entry for this host (any other Computer field may be given).

        With an alias, the entry names the alias and no port: ssh_config gives both.
        """
        computer = Computer(
            kind=kind,
            host=self.alias or self.host,
            name=f"sim-{kind.value}",
            port=None if self.alias else self._port,
            user=self.user,
            via_ssh=kind is Kind.WINDOWS,
        )
        return dataclasses.replace(computer, **options)

    @property
    def known_hosts(self) -> Path:
        """The client's known_hosts: the key this host had when it first started."""
        return self._dir / "known_hosts"

    def client_config(self) -> str:
        """The `Host` block of ssh_config for this host alone."""
        return combined_ssh_config([self])

    def commands(self) -> list[str]:
        """Every command line it was asked to run, as received, oldest first."""
        return self._records("commands")

    def shutdowns(self) -> list[str]:
        """The command lines it took as a shutdown (and went down for)."""
        return self._records("shutdowns")

    def parsed_commands(self) -> list[tuple[str, ...] | None]:
        """Each command as the host's shell split it (None: the shell could not parse it)."""
        words = self._records("argv")
        parsed: list[tuple[str, ...] | None] = []
        i = 0
        while i < len(words):
            count = int(words[i])
            if count < 0:
                parsed.append(None)
                i += 1
            else:
                parsed.append(tuple(words[i + 1 : i + 1 + count]))
                i += 1 + count
        return parsed

    def sshd_log(self) -> str:
        """What sshd wrote to stderr (-e), for a failing test's message."""
        path = self._dir / "sshd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- faults ------------------------------------------------------------------------------

    @property
    def refuse_key(self) -> bool:
        return self._refuse_key

    @refuse_key.setter
    def refuse_key(self, value: bool) -> None:
        self._refuse_key = value
        self._write_authorized_keys()

    @property
    def sudo_needs_password(self) -> bool:
        return self._sudo_needs_password

    @sudo_needs_password.setter
    def sudo_needs_password(self, value: bool) -> None:
        self._sudo_needs_password = value
        self._write_script()

    @property
    def hang(self) -> bool:
        return self._hang

    @hang.setter
    def hang(self, value: bool) -> None:
        self._hang = value
        self._write_script()

    @property
    def drop_connection(self) -> bool:
        return self._drop_connection

    @drop_connection.setter
    def drop_connection(self, value: bool) -> None:
        self._drop_connection = value
        self._write_script()

    @property
    def restricted_key(self) -> bool:
        return self._restricted_key

    @restricted_key.setter
    def restricted_key(self, value: bool) -> None:
        self._restricted_key = value
        self._write_script()
        self._write_authorized_keys()

    def change_host_key(self) -> None:
        """Give the host a new key (as after a reinstall); clients still know the old one."""
        for name in ("host_ed25519", "host_ed25519.pub"):
            (self._dir / name).unlink()
        self._keygen(self._dir / "host_ed25519")
        if self.is_up:
            self.stop_sshd()
            self.start()

    # -- power -------------------------------------------------------------------------------

    def start(self) -> None:
        """Power on: run sshd and return once it listens (same port as before, if any).

        From STOPPING or OFF alike, from any thread: a pending fall to OFF is cancelled, the
        silence ends, sshd starts. Nothing happens if sshd runs already.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError(f"SshHost {self.address} is closed")
            if self.is_up:
                return
            self._cancel()
            self._end_silence()
            self._watch(self._start_sshd())

    def stop_sshd(self) -> None:
        """Stop sshd, the kernel staying up: the port refuses connections (STOPPING) for good.

        A pending fall to OFF is cancelled; a host already OFF stays OFF. Sessions under way
        are sshd's other processes, left to end by themselves.
        """
        with self._lock:
            self._cancel()
            self._stop_sshd()

    def stop(self) -> None:
        """The same as stop_sshd(), for callers that predate power states."""
        self.stop_sshd()

    def power_off(self) -> None:
        """Cut the power: sshd and its sessions killed, the port silent (OFF) at once."""
        with self._lock:
            self._cancel()
            self._stop_sshd(signal.SIGKILL)
            self._end_sessions(clients=False)
            if self._port and not self._silence:
                self._silence = _silence(self.host, self._port)

    def close(self) -> None:
        """Stop sshd, end its sessions and silence, and remove every file made for it.

        Its threads are ended too. Safe to call twice; start() cannot follow.
        """
        with self._lock:
            self._closed = True
            self._cancel()
            self._stop_sshd()
            self._end_silence()
            watchers, self._watchers = self._watchers, []
        for watcher in watchers:
            watcher.join(STOP_TIMEOUT_S)
        self._end_sessions()
        shutil.rmtree(self._dir, ignore_errors=True)

    def _end_sessions(self, *, clients: bool = True) -> None:
        """Kill forced commands still running (a hung one whose client was kill -9'd).

        sshd's per-session processes outlive the listener, as on a real host; in a test they
        would linger until the hang gives up. Ending the command ends its session. With
        clients, ssh clients run with a file of ours (`-F <ssh_config>`) are killed too; a power
        cut leaves them be, to see the session end from their side.
        """
        marker = str(self._dir if clients else self._dir / "forced.sh").encode()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                if marker in (proc / "cmdline").read_bytes():
                    os.kill(int(proc.name), signal.SIGKILL)
            except (OSError, ValueError):
                continue  # gone already, or not ours to read

    def __enter__(self) -> SshHost:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- inside --------------------------------------------------------------------------------

    _last_log = ""

    def _cancel(self) -> None:
        """Tell the watchers a power change came (the lock held): none of them acts any more."""
        self._boot += 1
        self._changed.notify_all()

    def _watch(self, proc: subprocess.Popen[bytes]) -> None:
        """Start a thread that turns this sshd exiting by itself into STOPPING, then OFF."""
        self._watchers = [w for w in self._watchers if w.is_alive()]
        watcher = threading.Thread(
            target=self._fall, args=(proc, self._boot), name=f"sshd-{self._port}", daemon=True
        )
        self._watchers.append(watcher)
        watcher.start()

    def _fall(self, proc: subprocess.Popen[bytes], boot: int) -> None:
        """Wait for proc to exit; unless a power change came since boot, go OFF refuse_s later."""
        proc.wait()
        with self._lock:
            if self._boot != boot:
                return  # stopped on purpose, powered off, booted again or closed
            deadline = time.monotonic() + self.refuse_s
            while self._boot == boot and (left := deadline - time.monotonic()) > 0:
                self._changed.wait(left)
            if self._boot == boot:
                self._silence = _silence(self.host, self._port)

    def _end_silence(self) -> None:
        silence, self._silence = self._silence, []
        for sock in silence:  # the listener first: its queued connection is reset, not kept
            sock.close()

    def _start_sshd(self) -> subprocess.Popen[bytes]:
        _ensure_privsep_dir()
        pick_port = self._port == 0
        for _ in range(PORT_TRIES):
            if pick_port:
                self._port = _free_port(self.host)
            if proc := self._try_start():
                return proc
            if not pick_port or "Address already in use" not in self._last_log:
                break
        raise RuntimeError(f"sshd did not start on {self.address}:\n{self._last_log}")

    def _stop_sshd(self, how: signal.Signals = signal.SIGTERM) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        # The forced command's delayed kill is for the sshd that took the shutdown: not a new one.
        (self._dir / "listener.pid").unlink(missing_ok=True)
        if proc.poll() is None:
            proc.send_signal(how)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT_S)
        else:
            proc.wait()

    def _try_start(self) -> subprocess.Popen[bytes] | None:
        """Run sshd; return it once it listens, None if it could not."""
        config = self._write_sshd_config()
        log_path = self._dir / "sshd.log"
        offset = log_path.stat().st_size if log_path.exists() else 0
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [str(self._sshd), "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # our own signals only; never the test's terminal
            )
        (self._dir / "listener.pid").write_text(f"{proc.pid}\n")
        listening = f"Server listening on {self.host} port {self._port}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            text = _read_from(log_path, offset)
            if listening in text:
                self._proc = proc
                self._write_client_files()
                return proc
            if proc.poll() is not None:
                self._last_log = _read_from(log_path, offset)
                if "PerSourcePenalties" in self._last_log and self._extra_options:
                    self._extra_options = []  # an OpenSSH older than 9.8: no such option
                    return self._try_start()
                return None
            time.sleep(POLL_S)
        proc.kill()
        proc.wait()
        self._last_log = _read_from(log_path, offset) + "\n(no 'listening' line in time)"
        return None

    def _write_sshd_config(self) -> Path:
        d = self._dir
        lines = [
            f"ListenAddress {self.host}",
            f"Port {self._port}",
            f"HostKey {d / 'host_ed25519'}",
            f"PidFile {d / 'sshd.pid'}",
            f"AuthorizedKeysFile {d / 'authorized_keys'}",
            "AuthenticationMethods publickey",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "StrictModes no",
            "UsePAM no",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            "X11Forwarding no",
            "AllowTcpForwarding no",
            "AllowAgentForwarding no",
            "PermitTunnel no",
            "LogLevel INFO",
            # The post-quantum default costs a busy machine 0.1 s a login; the tests are about
            # the login, not the key exchange.
            "KexAlgorithms curve25519-sha256,curve25519-sha256@libssh.org",
            f"ForceCommand exec /bin/sh {d / 'forced.sh'}",
            *self._extra_options,
            "",
        ]
        path = d / "sshd_config"
        path.write_text("\n".join(lines))
        return path

    def _write_client_files(self) -> None:
        key_type, key = self._known_key
        name = self.host if self._port == 22 else f"[{self.host}]:{self._port}"
        self.known_hosts.write_text(f"{name} {key_type} {key}\n")
        self.ssh_config.write_text(self.client_config())

    def _write_script(self) -> None:
        script = _SCRIPT.format(
            dir=shlex.quote(str(self._dir)),
            hang=int(self._hang),
            hang_ticks=int(HANG_MAX_S / HANG_TICK_S),
            hang_tick=HANG_TICK_S,
            sudo_password=int(self._sudo_needs_password),
            windows_ver=WINDOWS_VER,
            down_after=f"{self._down_after_s:g}",
            drop=int(self._drop_connection),
            restricted=int(self._restricted_key),
        )
        path = self._dir / "forced.sh"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(script)
        tmp.chmod(0o755)
        os.replace(tmp, path)  # a login under way reads the old or the new, never half

    def _write_authorized_keys(self) -> None:
        key = Path(f"{self.client_key}.pub").read_text().strip()
        options = "restrict"
        if self._restricted_key:  # FIELD.md's set-up: restrict,command="sudo -n shutdown ..."
            options += f',command="exec /bin/sh {self._dir / "forced.sh"}"'
        text = "" if self._refuse_key else f"{options} {key}\n"
        (self._dir / "authorized_keys").write_text(text)

    def _records(self, name: str) -> list[str]:
        path = self._dir / name
        if not path.exists():
            return []
        return path.read_bytes().decode("utf-8", "surrogateescape").split("\0")[:-1]

    @staticmethod
    def _keygen(path: Path) -> None:
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "loadshed-sim", "-f", str(path)],
            check=True,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=KEYGEN_TIMEOUT_S,
        )


def combined_ssh_config(hosts: Sequence[SshHost]) -> str:
    """One ssh_config for several simulated hosts, such as the demo's house.

    A host with an alias gets a `Host <alias>` block of its own, with `HostName` its address and
    its `Port`. Hosts without one share a `Host <address>` block per address, naming every client
    key and known_hosts file of the hosts there (known_hosts entries carry the port). Give the
    hosts one `client_key`, so that a login offers a single key instead of running into sshd's
    MaxAuthTries.
    """
    names: dict[str, list[SshHost]] = {}
    for host in hosts:
        names.setdefault(host.alias or host.host, []).append(host)
    blocks: list[str] = []
    for name, here in names.items():
        if len(here) > 1 and any(h.alias for h in here):
            raise ValueError(f"{len(here)} simulated hosts are called {name} in ssh_config")
        lines = [f"Host {name}", f"    HostName {here[0].host}"]
        if len(here) == 1:
            lines.append(f"    Port {here[0].port}")
        lines.append(f"    User {here[0].user}")
        lines += [f"    IdentityFile {key}" for key in dict.fromkeys(h.client_key for h in here)]
        lines += [
            "    IdentitiesOnly yes",
            "    IdentityAgent none",
            "    UserKnownHostsFile " + " ".join(str(h.known_hosts) for h in here),
            "    GlobalKnownHostsFile /dev/null",
            "    StrictHostKeyChecking yes",
            "    UpdateHostKeys no",
            "    CheckHostIP no",
            "    BatchMode yes",
        ]
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def _silence(host: str, port: int) -> list[socket.socket]:
    """Make host:port silent: our listener, its accept queue full, so the kernel drops SYNs.

    listen(0) queues one connection; the fillers take that place (and one more waits), and are
    never accepted. SO_REUSEADDR binds over sshd's connections, in TIME_WAIT or still open.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    socks = [listener]
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(0)
        for _ in range(SILENCE_FILLERS):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(filler)
            filler.setblocking(False)
            filler.connect_ex((host, port))  # in progress, or queued: never accepted either way
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _read_from(path: Path, offset: int) -> str:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode("utf-8", "replace")


def _ensure_privsep_dir() -> None:
    if os.geteuid() == 0 and not PRIVSEP_DIR.is_dir():
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
