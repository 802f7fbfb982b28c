"""Where a computer really is: the address and port OpenSSH itself would connect to.

Owners name computers by their ssh_config `Host` aliases (with `HostName`, `Port`, `User`,
`ProxyJump`, `Match`), so the name in computers.txt is often no address at all. `ssh -G` prints
the configuration ssh would use for a name, after every `Host` and `Match` block; the probe that
watches a computer go down and come back connects where that says (DESIGN §5: "a `Host` alias
from the ssh_config works everywhere"). A `port=` in computers.txt wins, as it does for ssh.

Answers are cached and asked again when a config file changes, or after `RESOLVE_TTL_S` (an
`Include`d file, or a `Match exec`, may change what a name means without touching the main file).
A computer reached through a `ProxyJump` or a `ProxyCommand` cannot be probed from here: its
route says so, and the caller treats it as one it cannot see.

Never raises.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from loadshed.computers import SSH_PORT, Computer
from loadshed.drivers import ssh

_LOG = logging.getLogger(__name__)

RESOLVE_TIMEOUT_S: Final = 5.0  # `ssh -G` reads files; a `Match exec` may run a command
RESOLVE_TTL_S: Final = 600.0  # ask again this often even when no file changed
SYSTEM_CONFIG: Final = Path("/etc/ssh/ssh_config")


@dataclass(frozen=True, slots=True)
class Route:
    """Where ssh connects for one computer."""

    host: str  # ssh -G's `hostname`: an address, or a name for the resolver
    port: int
    via: str = ""  # "ProxyJump gw" / "ProxyCommand": ssh goes another way; no direct probe

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def direct(self) -> bool:
        return not self.via

    def describe(self) -> str:
        """For a table: "127.0.0.1:2222", or "nas.lan:22 via ProxyJump gw"."""
        return f"{self.address} via {self.via}" if self.via else self.address


class Resolver:
    """`ssh -G` for each computer, cached until the ssh configuration changes."""

    def __init__(
        self,
        ssh_config: Path | None,
        *,
        timeout_s: float = RESOLVE_TIMEOUT_S,
        ttl_s: float = RESOLVE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ssh_config = ssh_config
        self.timeout_s = timeout_s
        self.ttl_s = ttl_s
        self.clock = clock
        self._cache: dict[tuple[str, int | None], tuple[object, float, Route]] = {}
        self._lock = asyncio.Lock()

    def cached(self, computer: Computer) -> Route | None:
        """The last route found for this computer, without asking again (for the screen)."""
        entry = self._cache.get((computer.target, computer.port))
        return entry[2] if entry is not None else None

    async def route(self, computer: Computer) -> Route:
        """Where ssh would connect for this computer; asked of `ssh -G` when needed."""
        if not computer.uses_ssh:
            return Route(computer.host, computer.port or SSH_PORT)  # SMB: no ssh involved
        key = (computer.target, computer.port)
        signature = self._signature()
        entry = self._cache.get(key)
        if entry is not None and entry[0] == signature and self.clock() < entry[1]:
            return entry[2]
        async with self._lock:  # one `ssh -G` at a time: cheap, and no storm at start
            entry = self._cache.get(key)
            if entry is not None and entry[0] == signature and self.clock() < entry[1]:
                return entry[2]
            route = await self._ask(computer)
            old = entry[2] if entry is not None else None
            if route != old:
                _LOG.info("%s: ssh reaches it at %s", computer.name, route.describe())
            self._cache[key] = (signature, self.clock() + self.ttl_s, route)
            return route

    async def _ask(self, computer: Computer) -> Route:
        argv = [ssh.SSH_BINARY, "-G"]
        if self.ssh_config is not None:
            argv += ["-F", str(self.ssh_config)]
        if computer.port is not None:
            argv += ["-p", str(computer.port)]
        if computer.user:
            argv += ["-l", computer.user]
        argv += ["--", computer.host]
        guess = Route(computer.host, computer.port or SSH_PORT)
        try:
            done = await ssh.run_bounded(argv, timeout_s=self.timeout_s, env=ssh.child_env())
        except TimeoutError:
            return _guess(guess, f"ssh -G gave no answer in {self.timeout_s:g} s")
        except OSError as err:
            return _guess(guess, f"cannot run ssh: {err.strerror or err}")
        if done.returncode != 0:
            lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
            return _guess(guess, f"ssh -G: {lines[-1] if lines else f'exit {done.returncode}'}")
        return parse_config_dump(done.stdout, guess)

    def _signature(self) -> object:
        """What the answer depends on that can change on disk: the config files' stat."""
        paths = (
            [self.ssh_config] if self.ssh_config is not None else [_user_config(), SYSTEM_CONFIG]
        )
        signature: list[tuple[int, int, int] | None] = []
        for path in paths:
            try:
                st = path.stat()
            except OSError:
                signature.append(None)
            else:
                signature.append((st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(signature)


def parse_config_dump(text: str, fallback: Route) -> Route:
    """Read `ssh -G` output: its `hostname`, `port`, `proxyjump` and `proxycommand`. Pure."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        values.setdefault(key.lower(), value.strip())
    host = values.get("hostname") or fallback.host
    try:
        port = int(values.get("port", ""))
    except ValueError:
        port = fallback.port
    via = ""
    if values.get("proxyjump", "none").lower() != "none":
        via = f"ProxyJump {values['proxyjump']}"
    elif values.get("proxycommand", "none").lower() != "none":
        via = "ProxyCommand"
    return Route(host, port, via)


def _guess(route: Route, why: str) -> Route:
    _LOG.warning("cannot ask ssh where %s is (%s): probing it as written", route.host, why)
    return route


def _user_config() -> Path:
    """~/.ssh/config as OpenSSH finds it: from the password file's home, not $HOME."""
    try:
        home = pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        home = os.path.expanduser("~")
    return Path(home) / ".ssh" / "config"
