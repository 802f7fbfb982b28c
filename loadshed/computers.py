"""Parse computers.txt (DESIGN §5) into typed `Computer` values. Pure: text in, values out.

One computer a line: `kind [user@]host key=value ...`; `#` starts a comment; values may be
quoted (`powered_by="NAS plug"`). Every bad line is a ConfigError naming the file, the line and
the fix. Hosts and users are checked so that nothing here can become an ssh option or reach a
shell: a `command=` is split into an argument list once, here.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from loadshed.errors import ConfigError
from loadshed.model import Kind

KINDS: Final = {k.value: k for k in (Kind.LINUX, Kind.SOLARIS, Kind.MACOS, Kind.WINDOWS)}
OPTIONS: Final = (
    "name",
    "port",
    "mac",
    "shed_below",
    "powered_by",
    "command",
    "wake_to",
    "down_wait",
    "via",
)
SSH_PORT: Final = 22
HOST_DOWN_WAIT_S: Final = 120  # longest wait for a computer to go down before its plug is cut
HOST_DOWN_WAIT_MAX_S: Final = 3600  # a down_wait= beyond an hour is a typo, not a slow RAID
WOL_PORT: Final = 9  # the discard port, where Wake-on-LAN packets traditionally go
SMB_PORT: Final = 445  # `net rpc shutdown` and `shutdown /m` reach Windows over SMB
DEFAULT_COMMANDS: Final[dict[Kind, tuple[str, ...]]] = {
    Kind.LINUX: ("sudo", "-n", "shutdown", "-h", "now"),
    Kind.MACOS: ("sudo", "-n", "shutdown", "-h", "now"),
    Kind.SOLARIS: ("sudo", "-n", "shutdown", "-y", "-g0", "-i5"),
    Kind.WINDOWS: ("shutdown", "/s", "/f", "/t", "0"),  # over Windows' OpenSSH (via=ssh)
}


_USER_RE: Final = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
_HOST_RE: Final = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9._-]*[A-Za-z0-9_])?$")
_SCOPE_RE: Final = re.compile(r"^[A-Za-z0-9_.-]+$")
_MAC_RE: Final = re.compile(r"^[0-9A-Fa-f]{2}([:-]?)[0-9A-Fa-f]{2}(\1[0-9A-Fa-f]{2}){4}$")


@dataclass(frozen=True, slots=True)
class Computer:
    """One line of computers.txt."""

    kind: Kind
    host: str  # as written: an address, a DNS name or an ssh_config Host alias
    name: str
    port: int | None  # None: not given, so ssh (and its ssh_config) decides
    user: str | None = None
    mac: str | None = None  # normalised "aa:bb:cc:dd:ee:ff"
    shed_below: int | None = None  # None: SHED_BELOW / DEFAULT_SHED_BELOW decide
    powered_by: str | None = None
    command: tuple[str, ...] = ()  # empty: the kind's default
    wake_to: str | None = None  # None: the limited broadcast, 255.255.255.255
    wake_port: int = WOL_PORT
    via_ssh: bool = False
    down_wait_s: float = HOST_DOWN_WAIT_S
    line: int = 0

    @property
    def uses_ssh(self) -> bool:
        return self.kind is not Kind.WINDOWS or self.via_ssh

    @property
    def target(self) -> str:
        """user@host as ssh takes it."""
        return f"{self.user}@{self.host}" if self.user else self.host

    @property
    def address(self) -> str:
        """The host as written, with the port when computers.txt gives one."""
        return self.host if self.port is None else f"{self.host}:{self.port}"

    @property
    def shutdown_command(self) -> tuple[str, ...]:
        return self.command or DEFAULT_COMMANDS[self.kind]


def load_computers(path: Path, *, required: bool = False) -> tuple[Computer, ...]:
    """Read and parse computers.txt; a missing file is no computers unless required."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if required:
            raise ConfigError(path, None, "no such file", "check --computers") from None
        return ()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(path, None, f"cannot be read: {err}") from None
    return parse_computers(text, path)


def parse_computers(text: str, path: Path) -> tuple[Computer, ...]:
    """Parse the text of computers.txt; raise ConfigError for the first bad line."""
    computers: list[Computer] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        computer = _parse_line(raw, path, number)
        if computer is None:
            continue
        key = computer.name.casefold()
        if key in seen:
            raise ConfigError(
                path,
                number,
                f"duplicate name {computer.name!r} (also on line {seen[key]})",
                "give each computer its own name=",
            )
        seen[key] = number
        computers.append(computer)
    for computer in computers:
        fed_by = (computer.powered_by or "").casefold()
        if fed_by in seen:
            raise ConfigError(
                path,
                computer.line,
                f"powered_by={computer.powered_by!r} names a computer (line {seen[fed_by]})",
                "give the name of the plug that feeds it (a Kasa or Tuya plug)",
            )
    return tuple(computers)


def _parse_line(raw: str, path: Path, number: int) -> Computer | None:
    def fail(problem: str, fix: str = "") -> ConfigError:
        return ConfigError(path, number, problem, fix)

    try:
        words = shlex.split(raw, comments=True)
    except ValueError as err:
        raise fail(f"cannot split the line: {err}", "close the quote") from None
    if not words:
        return None
    kind_word, *rest = words
    kind = KINDS.get(kind_word.lower())
    if kind is None:
        raise fail(f"unknown kind {kind_word!r}", "expected linux, solaris, macos or windows")
    if not rest or rest[0].partition("=")[0] in OPTIONS:
        raise fail(f"{kind_word} needs a host after it", f"like: {kind_word} admin@host.lan")
    user, host = _split_target(rest[0], fail)

    options: dict[str, str] = {}
    for word in rest[1:]:
        key, sep, value = word.partition("=")
        if not sep:
            raise fail(f"{word!r} is not an option", "options are key=value, like port=2222")
        if key not in OPTIONS:
            raise fail(f"unknown option {key!r}", "known: " + ", ".join(f"{o}=" for o in OPTIONS))
        if key in options:
            raise fail(f"option {key}= given twice")
        options[key] = value
    return _build(kind, user, host, options, number, fail)


def _split_target(word: str, fail: Callable[..., ConfigError]) -> tuple[str | None, str]:
    user, at, host = word.rpartition("@")
    if not at:
        user = ""
    if user and not _USER_RE.match(user):
        raise fail(
            f"user {user!r} is not a plain user name",
            "use letters, digits, '.', '_' or '-', not starting with '-'",
        )
    if at and not user:
        raise fail(f"{word!r} has an empty user before @")
    if not _is_host(host):
        raise fail(
            f"host {host!r} is not a host name or IP address",
            "use letters, digits, '.', '-' (not first) or an IP address; no spaces or symbols",
        )
    return (user or None), host


def _is_host(host: str) -> bool:
    if _HOST_RE.match(host):
        return True
    scope = host.partition("%")[2]
    if scope and not _SCOPE_RE.match(scope):
        return False  # an IPv6 scope id is an interface name: nothing for a shell or ssh
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


def _build(
    kind: Kind,
    user: str | None,
    host: str,
    options: dict[str, str],
    number: int,
    fail: Callable[..., ConfigError],
) -> Computer:
    via = options.get("via")
    if via is not None and via != "ssh":
        raise fail(f"via={via!r} is not known", "the only choice is via=ssh (Windows' OpenSSH)")
    via_ssh = via == "ssh"
    # Over SSH the port is ssh's to choose (an ssh_config Port applies) unless given here.
    port = SMB_PORT if kind is Kind.WINDOWS and not via_ssh else None
    if "port" in options:
        text = options["port"]
        if not _is_number(text) or not 1 <= int(text) <= 65535:
            raise fail(f"port={text!r} is not a port", "expected a whole number from 1 to 65535")
        port = int(text)

    mac = None
    if "mac" in options:
        text = options["mac"]
        if not _MAC_RE.match(text):
            raise fail(
                f"mac={text!r} is not a MAC address", "expected six hex pairs: 00:11:22:33:44:55"
            )
        digits = re.sub(r"[:-]", "", text).lower()
        mac = ":".join(digits[i : i + 2] for i in range(0, 12, 2))

    shed_below = None
    if "shed_below" in options:
        text = options["shed_below"]
        if not _is_number(text) or not 0 <= int(text) <= 100:
            raise fail(
                f"shed_below={text!r} is not a percentage",
                "expected 0 (never shed) to 100 (shed at outage)",
            )
        shed_below = int(text)

    command: tuple[str, ...] = ()
    if "command" in options:
        try:
            command = tuple(shlex.split(options["command"]))
        except ValueError as err:
            raise fail(f"command= cannot be split: {err}") from None
        if not command:
            raise fail(
                "command= is empty", 'give the shutdown command, like command="sudo -n poweroff"'
            )
        if kind is Kind.WINDOWS and not via_ssh:
            raise fail("command= needs a shell on the target", "use it with via=ssh, or drop it")

    wake_to, wake_port = None, WOL_PORT
    if "wake_to" in options:
        address, _, port_text = options["wake_to"].partition(":")
        try:
            wake_to = str(ipaddress.IPv4Address(address))
            if port_text:
                wake_port = int(port_text)
                if not 1 <= wake_port <= 65535:
                    raise ValueError(port_text)
        except ValueError:
            raise fail(
                f"wake_to={options['wake_to']!r} is not an IPv4 address (and optional :port)",
                "give the broadcast address of the computer's network, like 192.168.1.255",
            ) from None
        if mac is None:
            raise fail("wake_to= without mac=", "Wake-on-LAN needs the computer's mac= too")

    down_wait_s: float = HOST_DOWN_WAIT_S
    if "down_wait" in options:
        text = options["down_wait"]
        if not _is_number(text) or not 1 <= int(text) <= HOST_DOWN_WAIT_MAX_S:
            raise fail(
                f"down_wait={text!r} is not a number of seconds",
                f"expected a whole number from 1 to {HOST_DOWN_WAIT_MAX_S} "
                f"(default {HOST_DOWN_WAIT_S})",
            )
        down_wait_s = int(text)

    name = options.get("name", host).strip()
    if not name:
        raise fail("name= is empty")
    powered_by = options.get("powered_by")
    if powered_by is not None and not powered_by.strip():
        raise fail("powered_by= is empty", "give the name of the plug that feeds this computer")
    if powered_by is not None and powered_by.strip().casefold() == name.casefold():
        raise fail(
            f"powered_by={powered_by.strip()!r} names this computer itself",
            "give the name of the plug that feeds it (a Kasa or Tuya plug)",
        )

    return Computer(
        kind=kind,
        host=host,
        name=name,
        port=port,
        user=user,
        mac=mac,
        shed_below=shed_below,
        powered_by=powered_by.strip() if powered_by else None,
        command=command,
        wake_to=wake_to,
        wake_port=wake_port,
        via_ssh=via_ssh,
        down_wait_s=down_wait_s,
        line=number,
    )


def _is_number(text: str) -> bool:
    """Plain ASCII digits: str.isdigit() also takes '²', which int() refuses."""
    return text.isascii() and text.isdigit() and len(text) <= 6


def check_power_rules(
    computers: Sequence[Computer], rule_for: Callable[[str], int], path: Path
) -> None:
    """Refuse a computer with its own shed_below behind a plug marked essential.

    The plug is never cut, so it could never power the computer back on after AC loss.
    """
    for computer in computers:
        if computer.powered_by is None or computer.shed_below in (None, 0):
            continue
        if rule_for(computer.powered_by) == 0:
            raise ConfigError(
                path,
                computer.line,
                f"{computer.name} has shed_below={computer.shed_below} but its plug "
                f"{computer.powered_by!r} is essential (SHED_BELOW 0)",
                "make the plug sheddable in SHED_BELOW, or drop shed_below= here",
            )
