"""`loadshed discover`: find the Kasa and Tuya plugs, and print the config lines to paste.

Where it looks — all at once, each bounded:

- Kasa: python-kasa's discovery. On the LAN by default (a broadcast to UDP 9999, and 20002 for
  newer firmware); with `--target ADDRESS` each address alone, unicast, never a broadcast. A
  target that does not answer discovery is tried with a direct connection (the legacy protocol,
  then KLAP with KASA_USERNAME/KASA_PASSWORD), as `loadshed run` reaches it.
- Tuya on the LAN: plugs announce themselves by UDP broadcast — 3.1 on 6666 in clear, 3.3 and
  3.4 on 6667 encrypted with a key all Tuya devices share, 3.5 on 6667 or 7000 after an app's
  request, which is sent once at the start (tinytuya's, a broadcast). It listens LISTEN_S
  seconds with a progress line. `Listen` says where: tests listen on loopback ports, send no
  request and feed it datagrams themselves; LOADSHED_TUYA_LISTEN=off turns it off (the CLI
  tests: nothing is ever sent to, or heard from, the LAN).
- The Tuya cloud, when the four TUYAAPI* values are set: ids, names and local keys
  (loadshed/tuyacloud.py; LOADSHED_TUYA_CLOUD_HOST points it elsewhere).

It prints what it found, marks what config.py already has, and ready-to-paste KASA_HOSTS and
TUYA_DEVICES lines; local keys only with --show-keys. It exits 0 even when it finds nothing,
saying where it looked. It switches nothing, writes no file, and never prints the API secret.
`loadshed init` looks the same way (`look`) and writes the same lines (`config_lines`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

import tinytuya  # type: ignore[import-untyped]
from kasa import Credentials, Device, Discover

from loadshed.config import (
    KASA_PORT,
    TUYA_PORT,
    TUYA_VERSIONS,
    Config,
    HostPort,
    TuyaDevice,
    load_config,
    parse_host_port,
)
from loadshed.drivers.kasa import KasaHost
from loadshed.errors import ConfigError, ExitCode
from loadshed.logs import redact_secrets
from loadshed.tuyacloud import MISSING_CREDENTIALS, CloudDevice, CloudError, TuyaCloud, in_thread

_LOG = logging.getLogger(__name__)

KASA_WAIT_S: Final = 3  # python-kasa waits this long for discovery answers (it wants an int)
KASA_TIMEOUT_S: Final = 3  # each query to a device found (its alias, a strip's outlets)
TUYA_PORTS: Final = (6666, 6667, 7000)  # 3.1 clear; 3.3-3.5 encrypted; 3.5 answers to an app
LISTEN_S: Final = 8.0  # plugs announce themselves every few seconds (tinytuya listens 18 s)
SOLICIT_S: Final = 5.0  # sending the 3.5 request: a look at the interfaces and one datagram
LOOK_S: Final = 10  # about how long a look takes, said before it: LISTEN_S, and Kasa meanwhile
LISTEN_ENV: Final = "LOADSHED_TUYA_LISTEN"  # "off": no listen on the LAN (tests)
KEY_HIDDEN: Final = "<hidden: add --show-keys>"
KEY_UNKNOWN: Final = "<not in the Tuya cloud: tinytuya's wizard finds it>"
KEY_NO_CLOUD: Final = "<from the Tuya cloud: see above>"  # it was not asked, or failed
KEYS_FROM_CLOUD: Final = (  # above TUYA_DEVICES, when plugs heard on the LAN have no key
    "# Plugs heard on the LAN are commented out until their local key is known: set TUYAAPIKEY,",
    "# TUYAAPISECRET and TUYAAPIDEVICEID (and TUYAAPIREGION) in config.py, then",
    "# `loadshed discover --show-keys` prints their lines with the keys.",
)
GUESSED_VERSION: Final = 3.3  # the commonest; `loadshed check` says when it is wrong
# Tuya categories loadshed can switch (the cloud's "category"): anything else is listed, not
# offered for TUYA_DEVICES.
PLUG_CATEGORIES: Final = {"cz": "socket", "pc": "power strip", "kg": "switch", "tdq": "breaker"}


@dataclass(frozen=True, slots=True)
class Listen:
    """Where the Tuya listen listens (tests: loopback, port 0, no request sent)."""

    host: str = "0.0.0.0"  # every interface: broadcasts arrive on the LAN's
    ports: tuple[int, ...] = TUYA_PORTS
    seconds: float = LISTEN_S
    solicit: bool = True  # send the request 3.5 plugs answer (a broadcast)
    on_ready: Callable[[list[tuple[str, int]]], None] | None = None  # (host, port) bound


@dataclass(frozen=True, slots=True)
class KasaFound:
    """A Kasa device that answered."""

    address: HostPort  # as KASA_HOSTS writes it: no port when it is 9999
    alias: str
    model: str
    outlets: tuple[str, ...] = ()  # a strip's outlets, each a device of its own in loadshed
    via: str = ""  # "" discovery; else how the direct connection got it


@dataclass(frozen=True, slots=True)
class Heard:
    """A Tuya plug's broadcast on the LAN."""

    id: str
    ip: str
    version: float | None


@dataclass
class Findings:
    kasa: list[KasaFound] = field(default_factory=list)
    kasa_missed: list[tuple[HostPort, str]] = field(default_factory=list)
    heard: dict[str, Heard] = field(default_factory=dict)
    cloud: list[CloudDevice] | None = None  # None: not asked, or it failed
    looked: dict[str, str] = field(default_factory=dict)  # where it looked: what it saw


# --- the verb ----------------------------------------------------------------------------------


def main(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    """`loadshed discover`: look, print, exit 0 (2 for a bad config or --target)."""
    config = _config(args.config, env, out)
    targets = parse_targets(args.target)
    findings = look(config, targets, env, out)
    print(render(findings, config, show_keys=args.show_keys), file=out)
    return ExitCode.OK


def parse_targets(texts: Sequence[str]) -> list[HostPort]:
    """The --target addresses; a ConfigError names the one that is not host or host:port."""
    targets = []
    for text in texts:
        try:
            targets.append(parse_host_port(text))
        except ValueError as err:
            raise ConfigError(None, None, f"--target {text!r}: {err}", "host or host:port") from err
    return targets


def look(
    config: Config | None, targets: Sequence[HostPort], env: Mapping[str, str], out: TextIO
) -> Findings:
    """Look everywhere `loadshed discover` looks, saying so on out (`init` looks this way too)."""
    off = env.get(LISTEN_ENV, "").strip().lower() in ("off", "0", "no")
    listen = None if off else Listen()
    cloud = TuyaCloud.from_config(config, env) if config is not None else None
    progress = _Progress(out)
    findings = asyncio.run(find(config, targets, listen, cloud, progress=progress))
    progress.done()
    return findings


def _config(path: Path, env: Mapping[str, str], out: TextIO) -> Config | None:
    if not path.exists():
        print(
            f"no config at {path}: nothing can be marked as already there, and the Tuya cloud "
            "is not asked (its TUYAAPI* values live in config.py)",
            file=out,
        )
        return None
    config = load_config(path, env)
    redact_secrets(config.secrets())
    return config


async def find(
    config: Config | None,
    targets: Sequence[HostPort],
    listen: Listen | None,
    cloud: TuyaCloud | None,
    *,
    progress: _Progress | None = None,
) -> Findings:
    """Look everywhere at once; every part is bounded and none raises."""
    findings = Findings()
    if progress is not None:
        progress.start(_plan(targets, listen, cloud))
    await asyncio.gather(
        _kasa(findings, config, targets),
        _tuya_lan(findings, listen, progress),
        _tuya_cloud(findings, cloud, config),
    )
    return findings


def _plan(targets: Sequence[HostPort], listen: Listen | None, cloud: TuyaCloud | None) -> str:
    kasa = "Kasa at " + ", ".join(map(str, targets)) if targets else "Kasa by broadcast on the LAN"
    parts = [kasa]
    if listen is not None:
        parts.append(f"Tuya broadcasts on UDP {_ports(listen.ports)} for {listen.seconds:g} s")
    if cloud is not None:
        parts.append(f"the Tuya cloud ({cloud.where})")
    return "looking for " + "; ".join(parts) + " …"


# --- Kasa --------------------------------------------------------------------------------------


async def _kasa(findings: Findings, config: Config | None, targets: Sequence[HostPort]) -> None:
    username = config.kasa_username if config is not None else ""
    password = config.kasa_password if config is not None else ""
    credentials = Credentials(username, password) if username and password else None
    if targets:
        results = await asyncio.gather(
            *(_kasa_target(t, credentials, username, password) for t in targets)
        )
        for result in results:
            if isinstance(result, KasaFound):
                findings.kasa.append(result)
            else:
                findings.kasa_missed.append(result)
        where = ", ".join(map(str, targets))
        findings.looked["kasa"] = f"Kasa: asked {where} (--target): {len(findings.kasa)} answered"
        return
    try:
        async with asyncio.timeout(KASA_WAIT_S + 2 * KASA_TIMEOUT_S):
            devices = await Discover.discover(
                discovery_timeout=KASA_WAIT_S, credentials=credentials, timeout=KASA_TIMEOUT_S
            )
    except (Exception, asyncio.CancelledError) as err:
        _reraise_if_cancelled(err)
        findings.looked["kasa"] = f"Kasa: the broadcast on the LAN failed ({_short(err)})"
        return
    found = await asyncio.gather(*(_describe(d, HostPort(ip)) for ip, d in devices.items()))
    findings.kasa.extend(sorted(found, key=lambda k: k.address.host))
    answered = {k.address.host for k in found}
    for host in config.kasa_hosts if config is not None else ():
        if host.host not in answered:  # a name, or a plug that answers only at its address
            findings.kasa_missed.append((host, "did not answer the broadcast (try --target)"))
    findings.looked["kasa"] = (
        f"Kasa: a broadcast on the LAN (UDP {KASA_PORT} and 20002), {KASA_WAIT_S} s: "
        f"{len(found)} answered"
    )


async def _kasa_target(
    target: HostPort, credentials: Credentials | None, username: str, password: str
) -> KasaFound | tuple[HostPort, str]:
    """One --target: unicast discovery, then a direct connection."""
    try:
        async with asyncio.timeout(KASA_WAIT_S + 2 * KASA_TIMEOUT_S):
            device = await Discover.discover_single(
                target.host,
                port=target.port,
                discovery_timeout=KASA_WAIT_S,
                timeout=KASA_TIMEOUT_S,
                credentials=credentials,
            )
    except (Exception, asyncio.CancelledError) as err:
        _reraise_if_cancelled(err)
        _LOG.debug("Kasa discovery of %s: %s", target, err)
        device = None
    if device is not None:
        return await _describe(device, target)
    host = KasaHost(
        target.host, target.port, username=username, password=password, timeout_s=KASA_TIMEOUT_S
    )
    try:
        outcome = await host.connect()
        if not outcome.is_ok:
            return target, f"no answer to discovery; {outcome.detail}"
        names = tuple(s.name for s in host.switches)
        model = outcome.detail.split(" via ")[0].split(",")[0]
        alias = names[0] if len(names) == 1 else ""
        outlets = names if len(names) > 1 else ()
        return KasaFound(_kasa_address(target), alias, model, outlets, via=host.via)
    finally:
        await host.close()


def _reraise_if_cancelled(err: BaseException) -> None:
    """Re-raise a cancellation meant for this task. python-kasa's discovery task is cancelled
    when the network refuses its datagram (no route, a firewall): that one is a failure."""
    task = asyncio.current_task()
    if isinstance(err, asyncio.CancelledError) and task is not None and task.cancelling():
        raise err


async def _describe(device: Device, address: HostPort) -> KasaFound:
    """What a discovered device is: its alias, model, and a strip's outlets."""
    try:
        async with asyncio.timeout(2 * KASA_TIMEOUT_S):
            await device.update()
    except Exception as err:  # a newer plug without KASA_USERNAME: only what discovery said
        _LOG.debug("Kasa %s: %s", address, err)
    try:
        alias = device.alias or ""
        model = device.model or ""
        outlets = tuple(child.alias or "" for child in device.children)
    except Exception:
        alias, model, outlets = "", "", ()
    with contextlib.suppress(Exception):
        await device.disconnect()
    return KasaFound(_kasa_address(address), alias, model, outlets)


def _kasa_address(address: HostPort) -> HostPort:
    return HostPort(address.host, None if address.port == KASA_PORT else address.port)


# --- Tuya on the LAN ---------------------------------------------------------------------------


async def _tuya_lan(findings: Findings, listen: Listen | None, progress: _Progress | None) -> None:
    if listen is None:
        findings.looked["lan"] = f"Tuya on the LAN: not listened ({LISTEN_ENV}=off)"
        return
    tick = progress.tick if progress is not None else None
    heard, problems = await listen_for_tuya(listen, tick)
    findings.heard.update(heard)
    said = f": {'; '.join(problems)}" if problems else ""
    findings.looked["lan"] = (
        f"Tuya on the LAN: listened for broadcasts on UDP {_ports(listen.ports)} for "
        f"{listen.seconds:g} s: {len(heard)} heard{said}"
    )


async def listen_for_tuya(
    listen: Listen, tick: Callable[[float, int], None] | None = None
) -> tuple[dict[str, Heard], list[str]]:
    """Listen for Tuya broadcasts; return what was heard by device id, and the problems."""
    loop = asyncio.get_running_loop()
    heard: dict[str, Heard] = {}
    problems: list[str] = []
    transports: list[asyncio.BaseTransport] = []
    bound: list[tuple[str, int]] = []
    try:
        for port in listen.ports:
            try:
                sock = _udp_socket(listen.host, port)
            except OSError as err:
                problems.append(f"cannot listen on UDP {port} ({err.strerror or err})")
                continue
            endpoint, _ = await loop.create_datagram_endpoint(lambda: _Broadcasts(heard), sock=sock)
            transports.append(endpoint)
            bound.append(sock.getsockname()[:2])
        if not transports:
            return heard, problems
        if listen.on_ready is not None:
            listen.on_ready(bound)
        if listen.solicit:
            try:
                await in_thread(_solicit, SOLICIT_S, "tuya-ask")
            except Exception as err:
                problems.append(f"the request 3.5 plugs answer was not sent ({_short(err)})")
        deadline = loop.time() + listen.seconds
        while (left := deadline - loop.time()) > 0:
            if tick is not None:
                tick(left, len(heard))
            await asyncio.sleep(min(1.0, left))
    finally:
        for transport in transports:
            transport.close()
    return heard, problems


def _solicit() -> None:
    """Send tinytuya's request that 3.5 plugs answer (a broadcast on every interface)."""
    from tinytuya import scanner

    scanner.send_discovery_request()


def _udp_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        # Shared: a Home Assistant or tinytuya on this computer may listen on them too.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class _Broadcasts(asyncio.DatagramProtocol):
    def __init__(self, heard: dict[str, Heard]) -> None:
        self.heard = heard

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        plug = parse_broadcast(data, str(addr[0]))
        if plug is not None:
            self.heard[plug.id] = plug


def parse_broadcast(data: bytes, sender: str) -> Heard | None:
    """A Tuya plug's announcement (any version), or None for anything else."""
    try:
        text = tinytuya.decrypt_udp(data)
        doc = json.loads(text)
    except Exception:
        return None
    if not isinstance(doc, dict):
        return None
    dev_id = doc.get("gwId") or doc.get("devId")
    if not isinstance(dev_id, str) or not dev_id:
        return None
    ip = doc.get("ip") if isinstance(doc.get("ip"), str) and doc.get("ip") else sender
    try:
        version: float | None = float(doc.get("version", ""))
    except (TypeError, ValueError):
        version = None
    if version not in TUYA_VERSIONS:
        version = None
    return Heard(dev_id, str(ip), version)


# --- the Tuya cloud ----------------------------------------------------------------------------


async def _tuya_cloud(findings: Findings, cloud: TuyaCloud | None, config: Config | None) -> None:
    if cloud is None:
        why = MISSING_CREDENTIALS if config is not None else "no config.py"
        findings.looked["cloud"] = f"Tuya cloud: not asked ({why})"
        return
    try:
        findings.cloud = await cloud.fetch()
    except CloudError as err:
        findings.looked["cloud"] = str(err)
        return
    findings.looked["cloud"] = f"Tuya cloud ({cloud.where}): {len(findings.cloud)} devices"


# --- what the owner sees -----------------------------------------------------------------------


class _Progress:
    """The line that says what is being looked at; on a terminal, a countdown."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.live = _isatty(out)
        self.started = time.monotonic()
        self._ticked = False

    def start(self, plan: str) -> None:
        print(plan, file=self.out, flush=True)

    def tick(self, left_s: float, heard: int) -> None:
        if self.live:
            self._ticked = True
            self.out.write(f"\r  {math.ceil(left_s):3d} s left, {heard} Tuya plugs heard so far ")
            self.out.flush()

    def done(self) -> None:
        if self._ticked:
            self.out.write("\n")
        print(f"done in {time.monotonic() - self.started:.1f} s\n", file=self.out)


def _isatty(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False


def render(findings: Findings, config: Config | None, *, show_keys: bool) -> str:
    """Everything found, marked against config.py, the lines to paste, and where it looked."""
    lines: list[str] = []
    lines += _kasa_lines(findings, config)
    tuya = _tuya_rows(findings, config)
    lines += _tuya_lines(tuya, findings, show_keys)
    if not findings.kasa and not tuya:
        lines.append("Nothing found.")
    written = config_lines(findings, config, show_keys=show_keys)
    paste = [*written.kasa_hosts, *written.tuya_devices]
    if paste:
        if lines and lines[-1]:
            lines.append("")
        lines += ["To paste into config.py, in place of the lines there:", "", *paste]
    looked = [findings.looked[k] for k in ("kasa", "lan", "cloud") if k in findings.looked]
    lines += ["", "Where it looked:", *(f"  {line}" for line in looked)]
    return "\n".join(lines)


def _kasa_lines(findings: Findings, config: Config | None) -> list[str]:
    if not findings.kasa and not findings.kasa_missed:
        return []
    lines = [f"Kasa: {len(findings.kasa)} found"]
    for found in findings.kasa:
        mark = "in config.py" if _kasa_known(found.address, config) else "new"
        what = found.alias or ("(a strip)" if found.outlets else "?")
        model = found.model + (f" via {found.via}" if found.via else "")
        text = f"  {what:<24} {model:<18} {found.address!s:<22} {mark}"
        if found.outlets:
            text += f"; outlets: {', '.join(found.outlets)}"
        lines.append(text)
    for address, reason in findings.kasa_missed:
        mark = " (in config.py)" if _kasa_known(address, config) else ""
        lines.append(f"  not found at {address}{mark}: {reason}")
    return [*lines, ""]


def _kasa_known(address: HostPort, config: Config | None) -> bool:
    if config is None:
        return False
    port = address.port or KASA_PORT
    return any(h.host == address.host and (h.port or KASA_PORT) == port for h in config.kasa_hosts)


@dataclass(frozen=True, slots=True)
class _TuyaRow:
    id: str
    name: str
    ip: str
    version: float | None
    cloud: CloudDevice | None
    configured: tuple[TuyaDevice, ...]  # its TUYA_DEVICES entries (one per outlet)
    heard: bool


def _tuya_rows(findings: Findings, config: Config | None) -> list[_TuyaRow]:
    """One row per Tuya device found (in the cloud or on the LAN), by id."""
    cloud = {d.id: d for d in findings.cloud or ()}
    configured = config.tuya_devices if config is not None else ()
    rows = []
    for dev_id in [*cloud, *(i for i in findings.heard if i not in cloud)]:
        entries = tuple(d for d in configured if d.id == dev_id)
        heard = findings.heard.get(dev_id)
        name = entries[0].name if entries else cloud[dev_id].name if dev_id in cloud else ""
        ip = heard.ip if heard is not None else entries[0].ip if entries else ""
        version = heard.version if heard is not None and heard.version else None
        if version is None and entries:
            version = entries[0].version
        rows.append(
            _TuyaRow(
                dev_id,
                name or f"Tuya {dev_id[-6:]}",
                ip,
                version,
                cloud.get(dev_id),
                entries,
                heard is not None,
            )
        )
    return sorted(rows, key=lambda r: (not r.configured, r.name.lower()))


def _tuya_lines(rows: list[_TuyaRow], findings: Findings, show_keys: bool) -> list[str]:
    if not rows:
        return []
    in_cloud = sum(r.cloud is not None for r in rows)
    heard = len(findings.heard)
    lines = [f"Tuya: {len(rows)} found ({in_cloud} in the Tuya cloud, {heard} heard on the LAN)"]
    for row in rows:
        ip = row.ip or "IP unknown"
        version = f"v{row.version:g}" if row.version else "v?"
        marks = []
        if row.configured:
            named = row.configured[0].name
            cloud_name = row.cloud.name if row.cloud is not None else named
            marks.append(
                "in config.py"
                + (f" (the app calls it {cloud_name!r})" if cloud_name != named else "")
            )
            if row.cloud is not None and row.cloud.key and row.cloud.key != row.configured[0].key:
                marks.append("its local key changed: config.py has an old one")
        else:
            marks.append("new")
        if row.cloud is not None and row.cloud.sub:
            marks.append("behind a gateway (not switchable on its own IP)")
        if _not_a_plug(row):
            marks.append(_not_a_plug(row))
        if row.cloud is None:
            marks.append("key: unknown (not in the Tuya cloud)")
        elif show_keys:
            marks.append(f"key: {row.cloud.key}")
        else:
            marks.append("key: hidden, add --show-keys")
        lines.append(f"  {row.name:<24} {row.id:<24} {ip:<16} {version:<5} {'; '.join(marks)}")
    return [*lines, ""]


@dataclass(frozen=True, slots=True)
class ConfigLines:
    """What was found, as config.py lines: `discover` prints them, `init` writes them."""

    kasa_hosts: tuple[str, ...] = ()  # the KASA_HOSTS line, or none
    tuya_devices: tuple[str, ...] = ()  # comments, then the TUYA_DEVICES block, or none
    kasa_new: int = 0  # addresses not in config.py yet
    tuya_new: int = 0  # entries not in config.py yet, written to be used
    tuya_commented: int = 0  # entries written commented out, each with why


def config_lines(findings: Findings, config: Config | None, *, show_keys: bool) -> ConfigLines:
    """KASA_HOSTS and TUYA_DEVICES: what config.py has, and what was found that it has not.

    A Tuya entry loadshed cannot use yet (no local key, no IP, behind a gateway, not a plug)
    is written commented out, with why, so the lines always load."""
    hosts = [str(h) for h in config.kasa_hosts] if config is not None else []
    new_hosts = [str(f.address) for f in findings.kasa if not _kasa_known(f.address, config)]
    kasa_hosts = [f"KASA_HOSTS = {json.dumps([*hosts, *new_hosts])}"] if hosts or new_hosts else []
    rows = _tuya_rows(findings, config)
    entries: list[str] = []
    by_id = {r.id: r for r in rows}
    for entry in config.tuya_devices if config is not None else ():
        row = by_id.get(entry.id)
        key = row.cloud.key if row is not None and row.cloud is not None else entry.key
        entries.append(
            "    "
            + _tuya_entry(
                entry.name,
                entry.id,
                row.ip if row is not None and row.ip else entry.ip,
                key if show_keys else KEY_HIDDEN,
                row.version if row is not None and row.version else entry.version,
                entry.port,
                entry.dps,
            )
            + ","
        )
    usable = commented = 0
    no_cloud = findings.cloud is None  # not asked, or it failed: no key is known
    for row in rows:
        if row.configured:
            continue
        if row.cloud is None:
            key = KEY_NO_CLOUD if no_cloud else KEY_UNKNOWN
        else:
            key = row.cloud.key if show_keys else KEY_HIDDEN
        text = _tuya_entry(row.name, row.id, row.ip, key, row.version or GUESSED_VERSION)
        unusable = []  # the entry is written commented out, with why
        if row.cloud is not None and row.cloud.sub:
            unusable.append("behind a gateway: loadshed cannot switch it on its own")
        if _not_a_plug(row):
            unusable.append(_not_a_plug(row))
        if not row.ip:
            unusable.append('IP unknown: not heard on the LAN (find it in your router: "ip")')
        if row.cloud is None:
            unusable.append("local key unknown")
        guessed = "" if row.version else f"version {GUESSED_VERSION:g} guessed: check tells"
        if unusable:
            commented += 1
            why = "; ".join([*unusable, guessed] if guessed else unusable)
            entries.append(f"    # {text},  # {why}")
        else:
            usable += 1
            entries.append(f"    {text}," + (f"  # {guessed}" if guessed else ""))
    tuya_devices: list[str] = []
    if entries:
        if not show_keys:
            tuya_devices.append("# local keys hidden: `loadshed discover --show-keys` prints them")
        if no_cloud and any(not r.configured for r in rows):
            tuya_devices += KEYS_FROM_CLOUD
        tuya_devices += ["TUYA_DEVICES = [", *entries, "]"]
    return ConfigLines(tuple(kasa_hosts), tuple(tuya_devices), len(new_hosts), usable, commented)


def _not_a_plug(row: _TuyaRow) -> str:
    category = row.cloud.category if row.cloud is not None else ""
    if not category or category in PLUG_CATEGORIES:
        return ""
    product = f", {row.cloud.product_name}" if row.cloud and row.cloud.product_name else ""
    return f"not a plug or switch (category {category}{product})"


def _tuya_entry(
    name: str,
    dev_id: str,
    ip: str,
    key: str,
    version: float,
    port: int = TUYA_PORT,
    dps: int = 1,
) -> str:
    fields = [
        f'"name": {json.dumps(name, ensure_ascii=False)}',
        f'"id": {json.dumps(dev_id)}',
        f'"ip": {json.dumps(ip or "<its IP on your network>")}',
        f'"key": {json.dumps(key)}',
        f'"version": {version!r}',
    ]
    if port != TUYA_PORT:
        fields.append(f'"port": {port}')
    if dps != 1:
        fields.append(f'"dps": {dps}')
    return "{" + ", ".join(fields) + "}"


def _ports(ports: Sequence[int]) -> str:
    names = [str(p) for p in ports]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _short(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text[:120]
