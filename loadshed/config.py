"""Load config.py into a frozen, typed `Config`; every bad input is one clear `ConfigError`.

config.py is the owner's Python file (DESIGN §4). It is compiled and executed in a fresh
namespace, never imported, so nothing is written beside it: no __pycache__, whose bytecode would
hold the passwords. Each upper-case name it sets is checked against `VARIABLES`: unknown names
are errors with the closest known name, values are checked for type and range, and messages
never echo a secret. `LOADSHED_<NAME>` environment variables override the secrets.

Parse at the edge, once: nothing downstream re-checks these values.
"""

from __future__ import annotations

import ast
import difflib
import ipaddress
import math
import os
import re
import stat
import threading
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from loadshed.errors import ConfigError
from loadshed.policy import DISAGREE_WAIT_S, SECONDARY_CONFIRM_S

SECRETS: Final = frozenset(
    {
        "PWPASS",
        "PW_GATEWAY_PASSWORD",
        "SMTP_PASSWORD",
        "KASA_PASSWORD",
        "TUYAAPISECRET",
        "WINDOWS_PASSWORD",
        "NUT_PASSWORD",
        "WEB_TOKEN",
    }
)
POWERWALL_APIS: Final = ("legacy", "tedapi", "v1r")
NUT_PORT: Final = 3493
ENV_PREFIX: Final = "LOADSHED_"
TUYA_REGIONS: Final = ("us", "us-e", "eu", "eu-w", "in", "sg", "cn", "az", "ue", "we")
TUYA_VERSIONS: Final = (3.1, 3.2, 3.3, 3.4, 3.5)
KASA_PORT: Final = 9999
TUYA_PORT: Final = 6668
EXAMPLE: Final = "config.example.py"

MIN_SECRET_CHARS: Final = 3  # shorter secrets would mask ordinary words in messages
MIN_WEB_TOKEN_CHARS: Final = 16  # the phone page's commands: too long to guess over the LAN
EXEC_TIMEOUT_S: Final = 5.0  # running config.py: setting values takes milliseconds
_HOST_RE: Final = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9._-]*[A-Za-z0-9])?$")


@dataclass(frozen=True, slots=True)
class HostPort:
    """A device address from config: a host name or IP, and a port when one was given."""

    host: str
    port: int | None = None

    def __str__(self) -> str:
        """The address as a URL writes it: an IPv6 host in brackets, with or without a port."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" if self.port is not None else host


@dataclass(frozen=True, slots=True)
class TuyaDevice:
    """One entry of TUYA_DEVICES."""

    name: str
    id: str
    ip: str
    key: str = field(repr=False)
    version: float
    port: int = TUYA_PORT
    dps: int = 1


@dataclass(frozen=True, slots=True)
class NutTarget:
    """NUT_UPS: a UPS by its name on a NUT server."""

    ups: str
    host: str
    port: int = NUT_PORT

    def __str__(self) -> str:
        return f"{self.ups}@{HostPort(self.host, self.port)}"


@dataclass(frozen=True, slots=True)
class Config:
    """Everything config.py says, typed, with the defaults of DESIGN §4."""

    path: Path
    powerwall: HostPort
    powerwall_password: str = field(repr=False)
    powerwall_email: str = ""
    mail_to: str = ""
    tuya_region: str = "us"
    tuya_api_key: str = ""
    tuya_api_secret: str = field(default="", repr=False)
    tuya_api_device_id: str = ""
    poll_s: float = 2.0
    outage_confirm_s: float = 0.0
    restore_after_s: float = 60.0
    kasa_hosts: tuple[HostPort, ...] = ()
    kasa_username: str = ""
    kasa_password: str = field(default="", repr=False)
    tuya_devices: tuple[TuyaDevice, ...] = ()
    shed_below: Mapping[str, int] = field(default_factory=dict)
    default_shed_below: int = 100
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_user: str = ""
    smtp_password: str = field(default="", repr=False)
    smtp_starttls: bool = True
    smtp_ssl: bool = False  # implicit TLS on SMTP_PORT (always on port 465)
    mail_from: str = ""
    notify_urls: tuple[str, ...] = field(default=(), repr=False)  # URLs may carry tokens
    windows_password: str = field(default="", repr=False)
    powerwall_api: str = "legacy"  # legacy (tesla_powerwall), tedapi or v1r (pypowerwall)
    gateway_password: str = field(default="", repr=False)  # TEDAPI: the QR sticker's password
    rsa_key: Path | None = None  # v1r: the RSA key registered with the gateway
    grid_canary: tuple[str, ...] = ()  # plugs on circuits the Powerwall does not back up
    disagree_wait_s: float = DISAGREE_WAIT_S  # sources disagree: the Powerwall counts after
    secondary_confirm_s: float = SECONDARY_CONFIRM_S  # Powerwall unreadable: a secondary sheds
    nut_ups: NutTarget | None = None
    nut_user: str = ""
    nut_password: str = field(default="", repr=False)
    ssh_config: Path | None = None
    state_dir: Path | None = None
    web_listen: HostPort | None = None  # the phone page's address and port; None: no page
    web_token: str = field(default="", repr=False)  # the phone page's commands need it
    warnings: tuple[str, ...] = ()  # things worth fixing that do not stop loadshed

    def secrets(self) -> tuple[str, ...]:
        """Every secret value set, for redaction."""
        values = (
            self.powerwall_password,
            self.kasa_password,
            self.tuya_api_secret,
            self.smtp_password,
            self.windows_password,
            self.gateway_password,
            self.nut_password,
            self.web_token,
            *(d.key for d in self.tuya_devices),
        )
        return tuple(v for v in values if v)

    def rule_for(self, name: str) -> int:
        """The SHED_BELOW percentage that applies to the device called name (a canary plug is
        never switched: essential, whatever SHED_BELOW says)."""
        if name in self.grid_canary:
            return 0
        return self.shed_below.get(name, self.default_shed_below)


def describe_rule(shed_below: int) -> str:
    """Say a SHED_BELOW value in words: "essential", "shed at outage", "shed below 30 %"."""
    if shed_below <= 0:
        return "essential"
    if shed_below >= 100:
        return "shed at outage"
    return f"shed below {shed_below} %"


# --- the variables -----------------------------------------------------------------------------

Check = Callable[[Any, "_Where"], Any]


@dataclass(frozen=True, slots=True)
class _Var:
    check: Check
    default: Any
    expected: str  # said in an error: "a number of seconds, at least 0.5"
    required: bool = False


@dataclass(frozen=True, slots=True)
class _Where:
    """Where a value came from, for error messages."""

    path: Path
    name: str
    line: int | None
    secret: bool
    secrets: frozenset[str] = frozenset()  # every secret's text: never echoed, wherever it is

    def error(self, found: Any, expected: str, fix: str = "") -> ConfigError:
        text = repr(found)
        pasted = any(len(sec) >= MIN_SECRET_CHARS and sec in text for sec in self.secrets)
        shown = _describe(found, secret=self.secret or pasted)
        return ConfigError(
            self.path, self.line, f"{self.name} is {shown}, expected {expected}", fix
        )


def _describe(value: Any, *, secret: bool) -> str:
    """Name a found value for an error: its repr, or only its type when it is a secret."""
    kind = {
        str: "text",
        bool: "True/False",
        int: "a whole number",
        float: "a number",
        list: "a list",
        tuple: "a tuple",
        dict: "a dict",
        type(None): "None",
    }.get(type(value), type(value).__name__)
    if secret:
        return kind if isinstance(value, str) else f"{kind} (value hidden)"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({kind})" if not isinstance(value, str) else text


def _text(value: Any, where: _Where) -> str:
    if not isinstance(value, str):
        raise where.error(value, "text in quotes")
    return value.strip()


def _number(low: float, high: float, what: str) -> Check:
    def check(value: Any, where: _Where) -> float:
        expected = f"{what} from {low:g} to {high:g}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise where.error(value, expected)
        if not (math.isfinite(value) and low <= value <= high):
            raise where.error(value, expected)
        return float(value)

    return check


def _whole(low: int, high: int, what: str) -> Check:
    def check(value: Any, where: _Where) -> int:
        expected = f"{what} from {low} to {high}"
        if isinstance(value, bool) or not isinstance(value, int):
            raise where.error(value, expected)
        if not low <= value <= high:
            raise where.error(value, expected)
        return value

    return check


def _boolean(value: Any, where: _Where) -> bool:
    if not isinstance(value, bool):
        raise where.error(value, "True or False")
    return value


def _path(value: Any, where: _Where) -> Path | None:
    text = _text(value, where)
    return Path(text).expanduser() if text else None


def _region(value: Any, where: _Where) -> str:
    text = _text(value, where).lower()
    if text not in TUYA_REGIONS:
        # tinytuya silently falls back to China for a region it does not know.
        raise where.error(value, "one of " + ", ".join(TUYA_REGIONS))
    return text


def _api(value: Any, where: _Where) -> str:
    text = _text(value, where).lower()
    if text not in POWERWALL_APIS:
        raise where.error(value, 'one of "legacy", "tedapi" or "v1r"')
    return text


def _names(value: Any, where: _Where) -> tuple[str, ...]:
    expected = 'a list of device names in quotes, like ["Garage canary"]'
    if not isinstance(value, list | tuple):
        raise where.error(value, expected)
    names = []
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise where.error(item, expected)
        names.append(item.strip())
    return tuple(names)


def parse_nut_ups(text: str) -> NutTarget:
    """Split "ups@host", "ups@host:port" or "ups@[v6]:port"; raise ValueError with a reason."""
    ups, at, address = text.strip().partition("@")
    if not at or not ups or not address:
        raise ValueError("written ups@host or ups@host:port, the UPS's name as upsc shows it")
    if not _HOST_RE.match(ups):
        raise ValueError(f"{ups!r} is not a UPS name")
    where = parse_host_port(address, NUT_PORT)
    return NutTarget(ups, where.host, where.port or NUT_PORT)


def _nut_ups(value: Any, where: _Where) -> NutTarget | None:
    text = _text(value, where)
    if not text:
        return None
    try:
        return parse_nut_ups(text)
    except ValueError as err:
        raise where.error(value, f'"ups@host" or "ups@host:port" ({err})') from err


def parse_host_port(text: str, default_port: int | None = None) -> HostPort:
    """Split "host", "host:port" or "[v6]:port"; raise ValueError with a reason."""
    host, port_text = text.strip(), ""
    if host.startswith("["):
        inside, closed, rest = host[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            raise ValueError("an IPv6 address is written [address] or [address]:port")
        if ":" not in inside:
            raise ValueError("only an IPv6 address goes in brackets")
        host, port_text = inside, rest.removeprefix(":")
    elif host.count(":") == 1:
        host, port_text = host.split(":")
        if not port_text:
            raise ValueError("a ':' with no port after it")
    if not host:
        raise ValueError("no host")
    if ":" in host:
        ipaddress.IPv6Address(host)
    elif not _HOST_RE.match(host):
        raise ValueError(f"{host!r} is not a host name or IP address")
    if not port_text:
        return HostPort(host, default_port)
    if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"port {port_text!r} is not a number from 1 to 65535")
    return HostPort(host, int(port_text))


def _address(value: Any, where: _Where) -> HostPort:
    text = _text(value, where)
    try:
        return parse_host_port(text)
    except ValueError as err:
        raise where.error(value, f"a host or host:port ({err})") from err


def _listen(value: Any, where: _Where) -> HostPort | None:
    text = _text(value, where)
    if not text:
        return None
    expected = '"address:port", like "0.0.0.0:8470", "192.168.1.10:8470" or "[::]:8470"'
    if text.isdigit():
        raise where.error(value, f'{expected} (a port alone: "0.0.0.0:{text}" is every address)')
    try:
        address = parse_host_port(text)
    except ValueError as err:
        raise where.error(value, f"{expected} ({err})") from err
    if address.port is None:
        raise where.error(value, f"{expected} (no port)")
    return address


def _token(value: Any, where: _Where) -> str:
    text = _text(value, where)
    fine = all("!" <= c <= "~" for c in text)  # sent in an HTTP header: visible ASCII only
    if text and (len(text) < MIN_WEB_TOKEN_CHARS or not fine):
        raise ConfigError(
            where.path,
            where.line,
            f"{where.name} must be at least {MIN_WEB_TOKEN_CHARS} characters of visible ASCII, "
            "no spaces",
            "make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(24))'",
        )
    return text


def _kasa_hosts(value: Any, where: _Where) -> tuple[HostPort, ...]:
    expected = 'a list of "host" or "host:port" texts, like ["192.168.1.20", "192.168.1.21:9999"]'
    if not isinstance(value, list | tuple):
        raise where.error(value, expected)
    hosts = []
    for item in value:
        if not isinstance(item, str):
            raise where.error(item, expected)
        try:
            hosts.append(parse_host_port(item))
        except ValueError as err:
            raise ConfigError(where.path, where.line, f"KASA_HOSTS entry {item!r}: {err}") from err
    return tuple(hosts)


_TUYA_FIELDS: Final = {
    "name": "the name you give it, used in SHED_BELOW and on screen",
    "id": "the device id from the Tuya app or `loadshed discover`",
    "ip": "its IP address on your network",
    "key": "its 16-character local key",
    "version": "its protocol version, a number: 3.3 or 3.4",
}
_TUYA_OPTIONAL: Final = {"port", "dps"}


def _tuya_devices(value: Any, where: _Where) -> tuple[TuyaDevice, ...]:
    if not isinstance(value, list | tuple):
        raise where.error(value, "a list of dicts, one per plug")
    devices = []
    for number, entry in enumerate(value, start=1):
        at = f"TUYA_DEVICES entry {number}"
        if not isinstance(entry, dict):
            raise ConfigError(where.path, where.line, f"{at} is not a dict", "write it as {...}")
        label = entry.get("name") if isinstance(entry.get("name"), str) else None
        if label:
            at += f" ({label!r})"
        unknown = sorted(set(entry) - set(_TUYA_FIELDS) - _TUYA_OPTIONAL, key=str)
        if unknown:
            known = ", ".join([*_TUYA_FIELDS, *sorted(_TUYA_OPTIONAL)])
            raise ConfigError(
                where.path, where.line, f"{at} has unknown field {unknown[0]!r}", f"known: {known}"
            )
        for name, meaning in _TUYA_FIELDS.items():
            if name not in entry:
                raise ConfigError(
                    where.path, where.line, f'{at} is missing "{name}"', f"add {name}: {meaning}"
                )
        for name in ("name", "id", "ip", "key"):
            if not isinstance(entry[name], str) or not entry[name].strip():
                shown = "hidden" if name == "key" else repr(entry[name])
                raise ConfigError(
                    where.path, where.line, f'{at}: "{name}" must be non-empty text, found {shown}'
                )
        key = entry["key"]
        version = entry["version"]
        if isinstance(version, str):
            # tinytuya crashes on a string version (jasonacox/tinytuya#507).
            raise ConfigError(
                where.path,
                where.line,
                f'{at}: "version" is text {version!r}',
                f"write it as a number without quotes, like {version.strip()}",
            )
        if (
            isinstance(version, bool)
            or not isinstance(version, int | float)
            or (float(version) not in TUYA_VERSIONS)
        ):
            raise ConfigError(
                where.path,
                where.line,
                f'{at}: "version" is {version!r}',
                "expected one of " + ", ".join(str(v) for v in TUYA_VERSIONS),
            )
        if float(version) > 3.1 and len(key) != 16:
            raise ConfigError(
                where.path,
                where.line,
                f'{at}: "key" has {len(key)} characters, a local key has 16',
                "copy it again from `loadshed discover` or the Tuya IoT platform",
            )
        try:
            ip = parse_host_port(entry["ip"]).host
        except ValueError as err:
            raise ConfigError(where.path, where.line, f'{at}: "ip" {err}') from err
        port, dps = entry.get("port", TUYA_PORT), entry.get("dps", 1)
        for name, number_value, high in (("port", port, 65535), ("dps", dps, 255)):
            if (
                isinstance(number_value, bool)
                or not isinstance(number_value, int)
                or not (1 <= number_value <= high)
            ):
                raise ConfigError(
                    where.path,
                    where.line,
                    f'{at}: "{name}" is {number_value!r}',
                    f"expected a whole number from 1 to {high}",
                )
        devices.append(
            TuyaDevice(
                entry["name"].strip(), entry["id"].strip(), ip, key, float(version), port, dps
            )
        )
    names = [d.name for d in devices]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(
                where.path,
                where.line,
                f"TUYA_DEVICES names {name!r} twice",
                "give each plug its own name",
            )
    return tuple(devices)


def _shed_below(value: Any, where: _Where) -> dict[str, int]:
    expected = 'a dict of device name to percentage, like {"Freezer": 30, "Router": 0}'
    if not isinstance(value, dict):
        raise where.error(value, expected)
    rules = {}
    for name, pct in value.items():
        if not isinstance(name, str) or not name.strip():
            raise where.error(name, expected)
        if isinstance(pct, bool) or not isinstance(pct, int) or not 0 <= pct <= 100:
            raise ConfigError(
                where.path,
                where.line,
                f"SHED_BELOW[{name!r}] is {pct!r}",
                "expected a whole number from 0 (essential: never shed) to 100 (shed at outage)",
            )
        rules[name.strip()] = pct
    return rules


def _urls(value: Any, where: _Where) -> tuple[str, ...]:
    expected = 'a list of Apprise URLs in quotes, like ["ntfys://my-topic"]'
    if not isinstance(value, list | tuple) or not all(isinstance(u, str) for u in value):
        # By type only: a URL (or a string of one) carries tokens.
        kind = (
            "a list with something other than text in it"
            if isinstance(value, list | tuple)
            else (f"{type(value).__name__} (value hidden)")
        )
        raise ConfigError(where.path, where.line, f"NOTIFY_URLS is {kind}, expected {expected}")
    for url in value:
        if "://" not in url:
            # Never echo the URL: it may carry a token.
            raise ConfigError(
                where.path,
                where.line,
                "NOTIFY_URLS has an entry without a scheme",
                "each entry looks like ntfys://topic or pover://user@token",
            )
    return tuple(u.strip() for u in value)


VARIABLES: Final[dict[str, _Var]] = {
    # the seed's names first
    "PWIPNAME": _Var(_address, None, "the gateway's address, host or host:port", required=True),
    "PWPASS": _Var(_text, "", "the Powerwall customer password"),
    "PWEMAIL": _Var(_text, "", "text"),
    "MAILNOTIF": _Var(_text, "", "an email or SMS-by-email address"),
    "TUYAAPIREGION": _Var(_region, "us", "a Tuya region"),
    "TUYAAPIKEY": _Var(_text, "", "text"),
    "TUYAAPISECRET": _Var(_text, "", "text"),
    "TUYAAPIDEVICEID": _Var(_text, "", "text"),
    # extensions
    "POLL_SECONDS": _Var(_number(0.5, 3600, "a number of seconds"), 2.0, ""),
    "OUTAGE_CONFIRM_SECONDS": _Var(_number(0, 86400, "a number of seconds"), 0.0, ""),
    "RESTORE_AFTER_SECONDS": _Var(_number(0, 86400, "a number of seconds"), 60.0, ""),
    "KASA_HOSTS": _Var(_kasa_hosts, (), ""),
    "KASA_USERNAME": _Var(_text, "", "text"),
    "KASA_PASSWORD": _Var(_text, "", "text"),
    "TUYA_DEVICES": _Var(_tuya_devices, (), ""),
    "SHED_BELOW": _Var(_shed_below, {}, ""),
    "DEFAULT_SHED_BELOW": _Var(_whole(0, 100, "a whole number"), 100, ""),
    "SMTP_HOST": _Var(_text, "", "text"),
    "SMTP_PORT": _Var(_whole(1, 65535, "a port number"), 587, ""),
    "SMTP_USER": _Var(_text, "", "text"),
    "SMTP_PASSWORD": _Var(_text, "", "text"),
    "SMTP_STARTTLS": _Var(_boolean, True, ""),
    "SMTP_SSL": _Var(_boolean, False, ""),
    "MAIL_FROM": _Var(_text, "", "text"),
    "NOTIFY_URLS": _Var(_urls, (), ""),
    "WINDOWS_PASSWORD": _Var(_text, "", "text"),
    "POWERWALL_API": _Var(_api, "legacy", ""),
    "PW_GATEWAY_PASSWORD": _Var(_text, "", "text"),
    "PW_RSA_KEY": _Var(_path, None, ""),
    "GRID_CANARY": _Var(_names, (), ""),
    "SOURCES_DISAGREE_SECONDS": _Var(_number(0, 86400, "a number of seconds"), DISAGREE_WAIT_S, ""),
    "SECONDARY_CONFIRM_SECONDS": _Var(
        _number(0, 86400, "a number of seconds"), SECONDARY_CONFIRM_S, ""
    ),
    "NUT_UPS": _Var(_nut_ups, None, ""),
    "NUT_USER": _Var(_text, "", "text"),
    "NUT_PASSWORD": _Var(_text, "", "text"),
    "SSH_CONFIG": _Var(_path, None, ""),
    "STATE_DIR": _Var(_path, None, ""),
    "WEB_LISTEN": _Var(_listen, None, ""),
    "WEB_TOKEN": _Var(_token, "", "text"),
}

_FIX: Final = {
    "PWIPNAME": 'set PWIPNAME = "192.168.1.50" (the Powerwall gateway\'s address on your network)',
    "PWPASS": "set PWPASS in config.py or the LOADSHED_PWPASS environment variable "
    "(the customer password you log in to the gateway with)",
    "PW_GATEWAY_PASSWORD": 'POWERWALL_API = "tedapi" needs PW_GATEWAY_PASSWORD (or '
    "LOADSHED_PW_GATEWAY_PASSWORD): the password on the gateway's QR sticker",
    "PW_RSA_KEY": 'POWERWALL_API = "v1r" needs PW_RSA_KEY: the path of the RSA key you '
    "registered with the gateway",
}
_NEEDED_BY_API: Final = {
    "legacy": ("PWPASS",),
    "tedapi": ("PW_GATEWAY_PASSWORD",),
    "v1r": ("PW_RSA_KEY",),
}


# --- loading -----------------------------------------------------------------------------------


def load_config(path: Path, env: Mapping[str, str] | None = None) -> Config:
    """Read config.py at path; raise ConfigError naming the file, line and fix."""
    env = os.environ if env is None else env
    source = _read(path)
    _check_owner_and_mode(path)
    lines = _assignment_lines(source, path)
    namespace = _execute(source, path)
    values: dict[str, Any] = {}
    for name, value in namespace.items():
        if not name.isupper() or name.startswith("_"):
            continue
        if name not in VARIABLES:
            close = difflib.get_close_matches(name, VARIABLES, n=1, cutoff=0.6)
            hint = (
                f"did you mean {close[0]}?"
                if close
                else f"see {EXAMPLE} (in loadshed/examples/) for the known names"
            )
            raise ConfigError(path, lines.get(name), f"unknown setting {name}", hint)
        values[name] = value
    for name in SECRETS:
        if env.get(ENV_PREFIX + name):
            values[name] = env[ENV_PREFIX + name]

    # A secret pasted into the wrong setting (SMTP_PORT = "<the password>") is never echoed.
    secrets = frozenset(v for n in SECRETS if isinstance(v := values.get(n), str) and v)
    checked: dict[str, Any] = {}
    for name, var in VARIABLES.items():
        where = _Where(path, name, lines.get(name), name in SECRETS, secrets)
        if name not in values:
            checked[name] = var.default
        else:
            checked[name] = var.check(values[name], where)
        if var.required and not checked[name]:
            raise ConfigError(path, lines.get(name), f"{name} is not set", _FIX[name])
    for name in _NEEDED_BY_API[checked["POWERWALL_API"]]:
        if not checked[name]:
            line = lines.get(name, lines.get("POWERWALL_API"))
            raise ConfigError(path, line, f"{name} is not set", _FIX[name])

    return Config(
        path=path,
        powerwall=checked["PWIPNAME"],
        powerwall_password=checked["PWPASS"],
        powerwall_email=checked["PWEMAIL"],
        mail_to=checked["MAILNOTIF"],
        tuya_region=checked["TUYAAPIREGION"],
        tuya_api_key=checked["TUYAAPIKEY"],
        tuya_api_secret=checked["TUYAAPISECRET"],
        tuya_api_device_id=checked["TUYAAPIDEVICEID"],
        poll_s=checked["POLL_SECONDS"],
        outage_confirm_s=checked["OUTAGE_CONFIRM_SECONDS"],
        restore_after_s=checked["RESTORE_AFTER_SECONDS"],
        kasa_hosts=checked["KASA_HOSTS"],
        kasa_username=checked["KASA_USERNAME"],
        kasa_password=checked["KASA_PASSWORD"],
        tuya_devices=checked["TUYA_DEVICES"],
        shed_below=checked["SHED_BELOW"],
        default_shed_below=checked["DEFAULT_SHED_BELOW"],
        smtp_host=checked["SMTP_HOST"],
        smtp_port=checked["SMTP_PORT"],
        smtp_user=checked["SMTP_USER"],
        smtp_password=checked["SMTP_PASSWORD"],
        smtp_starttls=checked["SMTP_STARTTLS"],
        smtp_ssl=checked["SMTP_SSL"],
        mail_from=checked["MAIL_FROM"],
        notify_urls=checked["NOTIFY_URLS"],
        windows_password=checked["WINDOWS_PASSWORD"],
        powerwall_api=checked["POWERWALL_API"],
        gateway_password=checked["PW_GATEWAY_PASSWORD"],
        rsa_key=checked["PW_RSA_KEY"],
        grid_canary=checked["GRID_CANARY"],
        disagree_wait_s=checked["SOURCES_DISAGREE_SECONDS"],
        secondary_confirm_s=checked["SECONDARY_CONFIRM_SECONDS"],
        nut_ups=checked["NUT_UPS"],
        nut_user=checked["NUT_USER"],
        nut_password=checked["NUT_PASSWORD"],
        ssh_config=checked["SSH_CONFIG"],
        state_dir=checked["STATE_DIR"],
        web_listen=checked["WEB_LISTEN"],
        web_token=checked["WEB_TOKEN"],
        warnings=_permission_warnings(path),
    )


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        from loadshed.setup_files import how_to_create

        raise ConfigError(path, None, "no such file", how_to_create(path)) from None
    except IsADirectoryError:
        raise ConfigError(path, None, "is a directory, not a config file") from None
    except PermissionError:
        raise ConfigError(path, None, "cannot be read (permission denied)") from None
    except UnicodeDecodeError as err:
        raise ConfigError(path, None, f"is not UTF-8 text ({err.reason})") from None


def _assignment_lines(source: str, path: Path) -> dict[str, int]:
    """Map each top-level name to the line of its last assignment; SyntaxError → ConfigError."""
    try:
        tree = ast.parse(source, filename=str(path))
    except (RecursionError, MemoryError):
        raise ConfigError(
            path,
            None,
            "an expression nested too deep for Python to read",
            "config.py may only set values: simple strings, numbers, lists and dicts",
        ) from None
    except SyntaxError as err:
        raise ConfigError(
            path,
            err.lineno,
            f"Python syntax error: {err.msg}",
            "config.py is Python: check quotes, commas and brackets on this line or the one before",
        ) from None
    lines: dict[str, int] = {}
    for node in tree.body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AnnAssign | ast.AugAssign):
            targets = [node.target]
        for target in targets:
            for sub in ast.walk(target):
                if isinstance(sub, ast.Name):
                    lines[sub.id] = node.lineno  # the last one is the one in force
    return lines


def _execute(source: str, path: Path) -> dict[str, Any]:
    """Run config.py in a fresh namespace, bounded by EXEC_TIMEOUT_S. Compiled in memory: no
    bytecode file is written. A config that exits, raises or blocks is a ConfigError."""
    try:
        code = compile(source, str(path), "exec", dont_inherit=True)
    except (RecursionError, MemoryError, SyntaxError, ValueError):
        raise ConfigError(
            path, None, "Python cannot compile it", "config.py may only set simple values"
        ) from None
    namespace: dict[str, Any] = {"__file__": str(path), "__name__": "__loadshed_config__"}
    failure: list[BaseException] = []

    def run() -> None:
        try:
            exec(code, namespace)  # the owner's own config file, as the seed did
        except BaseException as err:  # SystemExit and KeyboardInterrupt too: never "all good"
            failure.append(err)

    worker = threading.Thread(target=run, name="config.py", daemon=True)
    worker.start()
    worker.join(EXEC_TIMEOUT_S)
    if worker.is_alive():
        raise ConfigError(
            path,
            None,
            f"running it took more than {EXEC_TIMEOUT_S:g} s",
            "config.py may only set values: no loops, waits or network calls",
        )
    if failure:
        err = failure[0]
        line = None
        for frame in traceback.extract_tb(err.__traceback__):
            if frame.filename == str(path):
                line = frame.lineno
        raise ConfigError(
            path,
            line,
            f"running it failed: {type(err).__name__}",
            "config.py may only set values; check this line",
        ) from None
    return namespace


def _check_owner_and_mode(path: Path) -> None:
    """config.py is executed with the owner's rights: refuse one another user could change."""
    try:
        st = path.stat()
    except OSError:
        return
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise ConfigError(
            path,
            None,
            f"is owned by another user (uid {st.st_uid}); it is executed as you",
            f"make it yours: chown $(id -u) {path} && chmod 600 {path}",
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(
            path,
            None,
            f"can be changed by other users (mode {stat.S_IMODE(st.st_mode):o}); it is executed",
            f"run chmod 600 {path}",
        )


def _permission_warnings(path: Path) -> tuple[str, ...]:
    try:
        mode = path.stat().st_mode
    except OSError:
        return ()
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return (
            f"{path} can be read by other users (mode {stat.S_IMODE(mode):o}): "
            f"run chmod 600 {path}; it holds passwords",
        )
    return ()
