"""Shed latency: how long from "the house is islanded" to "every healthy plug is off".

A simulated house on 127.0.0.1 (nothing else is ever contacted): a Powerwall gateway and 100
smart plugs, 60 legacy Kasa plugs and 40 Tuya 3.3 plugs, each switching its own outlet, all on.
Ten of them are hung (5 Kasa, 5 Tuya, spread through the list): they accept connections, read
requests and never answer. And 4 computers (pc1..pc4, kind linux), each a real OpenSSH sshd on
127.0.0.1 (`loadshed.sim.ssh.SshHost`) that records its shutdown command instead of running it,
named in computers.txt by their ssh_config Host alias (SSH_CONFIG in config.py), as owners do.
After a shutdown a computer's sshd stops (down_after_s, the default), then its port refuses
connections for COMPUTER_REFUSE_S (5 s: the kernel flushing its disks; a real machine takes tens
of seconds), then goes silent, like a machine that is off. pc1 and pc2 are fed by their own
Kasa plug among the 60 ("PC1 plug", "PC2 plug", `powered_by=` in computers.txt; never hung),
which loadshed may cut only once its computer is down (silent). Without /usr/sbin/sshd the
computers are left out, with a note, and those two plugs are ordinary healthy ones. Two runs
against the same house:

1. loadshed: the real daemon, `python -m loadshed run --no-ui` as a child process, with a
   config.py written for this house. Once it is up (its first polls seen at the gateway), the
   gateway starts reporting `SystemIslandedActive` (time t0) within 5 ms after one of its
   grid-status reads: the worst phase, so the next poll comes almost a whole POLL_SECONDS later.
   The figure is t0 to the moment the 88 healthy outlets that feed no computer are all off
   (watched every 5 ms): that wait for the poll plus the switching itself, which is printed
   alone as well (from the first grid-status request after t0 to the last outlet off). In the
   same run, also from t0: every computer really down (silent, `SshHost.is_off`), expected
   about the wait for the poll + the ssh round trip + down_after_s + COMPUTER_REFUSE_S; and
   both feeding plugs off, expected about that + one probe timeout (~3 s: silence is only
   known once a connect() has timed out) + up to one poll. A feeding plug seen off while its
   computer still had power (answering, if only to refuse) is a hard cut: recorded, printed
   (it should say "none") and, as in loadshed.sim.house, the computer dies at once.
2. A naive sequential loop written here: the same libraries with their defaults, one device
   after another, as a first script would do it. tesla_powerwall `get_grid_status()` every
   POLL_SECONDS (its clock also starts at t0, so it pays the same wait for a poll), then for each
   Kasa host `Device.connect(config=DeviceConfig(host, port_override=port))` and `turn_off()`
   (python-kasa: timeout 5 and built-in retries, ~23 s per hung plug), then for each Tuya plug
   `tinytuya.OutletDevice(id, ip, key, version=3.3, port=port).turn_off()` (tinytuya: timeout 5,
   5 retries, ~30 s per hung plug). It takes minutes; progress is printed as it goes. It
   ignores the computers (a first script would not shut them down); its figure is the same
   88 healthy outlets (it switches the two feeding plugs off too, in their turn).

The goal (the issue): loadshed within POLL_SECONDS + 1 s, and at least 50 x faster than the
naive loop. Figures are printed, never asserted (STYLE.md 12). This script imports python-kasa,
tinytuya and tesla_powerwall directly only because the naive loop is the point of comparison.

Run it from the repository root (the full run takes about 5 minutes):

    .venv/bin/python bench/shed_latency.py                  # both runs, as the issue describes
    .venv/bin/python bench/shed_latency.py --skip-naive     # loadshed only, about 30 s
    .venv/bin/python bench/shed_latency.py --naive-hung 2   # naive run with 2 hung plugs only
    .venv/bin/python bench/shed_latency.py --skip-naive --stalled-clients 20  # 20 frozen screens

With `--naive-hung N` the naive figure is also extrapolated to all 10 hung plugs: each plug hung
for loadshed but answering for the naive run is charged what a hung plug of its kind cost in this
run (or, if none of that kind was hung, the library's documented cost) instead of what it took.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pprint
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeVar

import tinytuya  # type: ignore[import-untyped]
from kasa import Device, DeviceConfig
from tesla_powerwall.const import GridStatus
from tesla_powerwall.powerwall import Powerwall

from loadshed.sim.base import Fault, Outlet, SimDevice, SiteState
from loadshed.sim.house import sshd_available
from loadshed.sim.kasa import kasa_plug
from loadshed.sim.loop import LoopThread
from loadshed.sim.powerwall import GRID_STATUS_PATH, PowerwallSim
from loadshed.sim.ssh import SSHD_PATH, SshHost, combined_ssh_config
from loadshed.sim.tuya import TuyaPlugSim

T = TypeVar("T")

KASA_PLUGS: Final = 60
TUYA_PLUGS: Final = 40
TUYA_VERSION: Final = 3.3
# Which plugs hang, by position among their kind: spread through each list, never the last one
# (the naive loop then ends on a healthy plug, so its figure is not padded by a hung tail).
HUNG_KASA: Final = (5, 17, 29, 41, 53)
HUNG_TUYA: Final = (3, 11, 19, 27, 35)
OUTLET_WATTS: Final = 100.0
COMPUTERS: Final = ("pc1", "pc2", "pc3", "pc4")  # ssh_config Host aliases, all kind linux
# The Kasa plugs (by position, none of them hung) that feed the first computers, one each.
FED_KASA: Final = (10, 35)
# After its sshd stops, a computer refuses connections this long (flushing its disks), then is
# silent. A real machine takes tens of seconds; a few here, to keep the bench short.
COMPUTER_REFUSE_S: Final = 5.0
COMPUTER_START_S: Final = 60.0  # longest the simulated computers' sshd may take to start

DEFAULT_POLL_S: Final = 2.0  # loadshed's default POLL_SECONDS
MIN_POLL_S: Final = 0.5  # the smallest POLL_SECONDS loadshed accepts
RESTORE_AFTER_S: Final = 3600  # loadshed must not switch anything back on during the bench
GRID_CONNECTED: Final = "SystemGridConnected"
GRID_ISLANDED: Final = "SystemIslandedActive"

WATCH_EVERY_S: Final = 0.005  # how often the outlets are looked at while timing
LOOPS_POLLS_BEFORE_CUT: Final = 2  # loadshed's poll loop must have read the grid this often
STARTUP_LIMIT_S: Final = 120.0  # longest loadshed may take to come up before we give up
LOADSHED_LIMIT_S: Final = 60.0  # longest we wait for loadshed to switch everything off
NAIVE_LIMIT_S: Final = 1800.0  # longest we wait for the naive loop (it needs about 5 min)
NAIVE_POLLING_LIMIT_S: Final = 30.0  # longest the naive loop may take to log in and read once
STOP_WAIT_S: Final = 20.0  # loadshed lets switches in flight finish (QUIT_WAIT_S 10 s) on SIGTERM
LINE_WAIT_S: Final = 5.0  # how long to wait for loadshed's summary line after the measurement
SIM_STOP_S: Final = 10.0
NAIVE_JOIN_S: Final = 2.0  # a naive call stuck on a hung plug cannot be interrupted; don't wait
SLOW_DEVICE_S: Final = 1.0  # the naive loop reports every device slower than this
PROGRESS_EVERY: Final = 10  # ... and every this many devices

# What one hung plug costs the naive loop with the libraries' defaults (LIBRARIES.md), used only
# to extrapolate when no plug of that kind was hung in the naive run.
KASA_HUNG_COST_S: Final = 23.0  # python-kasa: 4 x timeout 5 s + 3 x 1 s back-off
TUYA_HUNG_COST_S: Final = 30.5  # tinytuya: 6 x timeout 5 s + 5 x 0.1 s


# --- the house -------------------------------------------------------------------------------


@dataclass
class Plug:
    """One simulated plug and what a config (or a naive script) needs to reach it."""

    name: str
    kind: str  # "Kasa" or "Tuya"
    outlet: Outlet
    sim: SimDevice
    dev_id: str = ""
    key: str = field(default="", repr=False)


@dataclass
class BenchComputer:
    """One simulated computer: its ssh_config alias, its sshd, and the plug feeding it, if any."""

    alias: str
    name: str
    host: SshHost
    plug: Plug | None


class BenchHouse:
    """A Powerwall, 100 plugs on one background loop (as loadshed.sim.house does it), and,
    with `computers`, the computers on sshd (made and started by start())."""

    def __init__(self, *, computers: bool) -> None:
        self.password = secrets.token_urlsafe(12)
        self.site = SiteState(grid_status=GRID_CONNECTED)
        self.powerwall = PowerwallSim(self.site, self.password)
        # computer alias -> the Kasa plug (by position) that feeds it: the first computers
        fed_by = dict(zip(COMPUTERS, FED_KASA, strict=False)) if computers else {}
        fed_at = {i: alias for alias, i in fed_by.items()}
        self.kasa: list[Plug] = []
        for n in range(1, KASA_PLUGS + 1):
            name = f"{fed_at[n - 1].upper()} plug" if n - 1 in fed_at else f"Kasa {n:02d}"
            outlet = Outlet(name, OUTLET_WATTS)
            self.kasa.append(Plug(outlet.name, "Kasa", outlet, kasa_plug(outlet)))
        self.tuya: list[Plug] = []
        for n in range(1, TUYA_PLUGS + 1):
            outlet = Outlet(f"Tuya {n:02d}", OUTLET_WATTS)
            dev_id = "bf" + secrets.token_hex(9)
            key = secrets.token_hex(8)  # 16 characters, as a real local key
            sim = TuyaPlugSim(dev_id, key, [outlet], version=TUYA_VERSION)
            self.tuya.append(Plug(outlet.name, "Tuya", outlet, sim, dev_id, key))
        self.hung: list[Plug] = [
            *(self.kasa[i] for i in HUNG_KASA),
            *(self.tuya[i] for i in HUNG_TUYA),
        ]
        self.feeding: dict[str, Plug] = {alias: self.kasa[i] for alias, i in fed_by.items()}
        if any(p in self.hung for p in self.feeding.values()):
            raise RuntimeError("a plug feeding a computer must not be hung")
        self.want_computers = computers
        self.computers: list[BenchComputer] = []  # made by start()
        self._ssh_dir: Path | None = None
        self._loop: LoopThread | None = None

    @property
    def plugs(self) -> list[Plug]:
        """Every plug, Kasa first, as the config lists them and the naive loop visits them."""
        return [*self.kasa, *self.tuya]

    @property
    def healthy(self) -> list[Plug]:
        """The plugs that answer and feed no computer: the headline figure's outlets."""
        return [p for p in self.plugs if p not in self.hung and p not in self.feeding.values()]

    def start(self) -> None:
        """Bind every device on 127.0.0.1 (port 0: free ports); boot the computers' sshd."""
        self._loop = LoopThread("bench-house")
        if self.want_computers:
            self._make_computers()

        async def _start() -> None:
            await asyncio.gather(
                self.powerwall.start(),
                *(p.sim.start() for p in self.plugs),
                *(asyncio.to_thread(c.host.start) for c in self.computers),
            )

        self._loop.run(_start(), timeout_s=COMPUTER_START_S)

    def _make_computers(self) -> None:
        """One SshHost per alias, sharing the first one's client key (one key offered a login)."""
        self._ssh_dir = Path(tempfile.mkdtemp(prefix="loadshed-bench-ssh-"))
        key: Path | None = None
        for alias in COMPUTERS:
            host = SshHost(alias=alias, client_key=key, refuse_s=COMPUTER_REFUSE_S)
            key = host.client_key
            self.computers.append(
                BenchComputer(alias, alias.upper(), host, self.feeding.get(alias))
            )

    def stop(self) -> None:
        """Stop every device and the loop, close the computers. Safe to call twice."""
        loop, self._loop = self._loop, None
        if loop is None:
            return

        async def _stop() -> None:
            sims = [self.powerwall, *(p.sim for p in self.plugs)]
            await asyncio.gather(*(s.stop() for s in sims), return_exceptions=True)

        try:
            loop.run(_stop(), timeout_s=SIM_STOP_S)
        finally:
            loop.close()
            for computer in reversed(self.computers):  # the first holds the shared client key
                computer.host.close()
            if self._ssh_dir is not None:
                shutil.rmtree(self._ssh_dir, ignore_errors=True)

    def call(self, action: Callable[[], T]) -> T:
        """Run action on the house's loop, where the devices live, and return its result."""
        if self._loop is None:
            raise RuntimeError("the house is not running")

        async def _on_loop() -> T:
            return action()

        return self._loop.run(_on_loop())

    def hang(self, hung: Sequence[Plug]) -> None:
        """Make exactly these plugs hung; every other plug answers."""
        if self._loop is None:
            raise RuntimeError("the house is not running")
        names = {p.name for p in hung}

        async def _faults() -> None:
            await asyncio.gather(
                *(
                    p.sim.set_fault(Fault.HUNG if p.name in names else Fault.NONE)
                    for p in self.plugs
                )
            )

        self._loop.run(_faults())

    def reset(self) -> None:
        """Grid connected, every outlet on."""

        def _reset() -> None:
            self.site.grid_status = GRID_CONNECTED
            for plug in self.plugs:
                plug.outlet.on = True

        self.call(_reset)

    def cut_grid(self) -> tuple[float, int]:
        """Make the gateway report islanded; return when, and its grid reads so far."""

        def _cut() -> tuple[float, int]:
            self.site.grid_status = GRID_ISLANDED
            return time.monotonic(), self.grid_reads()

        return self.call(_cut)

    def grid_reads(self) -> int:
        """How many grid-status requests the gateway has received."""
        return self.powerwall.requests[GRID_STATUS_PATH]

    def config_text(self, poll_s: float) -> str:
        """A config.py that points loadshed at this house."""
        tuya = [
            {
                "name": p.name,
                "id": p.dev_id,
                "ip": p.sim.host,
                "key": p.key,
                "version": TUYA_VERSION,
                "port": p.sim.port,
            }
            for p in self.tuya
        ]
        lines = [
            "# The shed-latency bench's house on 127.0.0.1; valid while the bench runs.",
            f"PWIPNAME = {self.powerwall.endpoint!r}",
            f"PWPASS = {self.password!r}",
            f"KASA_HOSTS = {[p.sim.address for p in self.kasa]!r}",
            "TUYA_DEVICES = " + pprint.pformat(tuya, sort_dicts=False, width=100),
            f"POLL_SECONDS = {poll_s!r}",
            f"RESTORE_AFTER_SECONDS = {RESTORE_AFTER_S}",
        ]
        if self.computers and self._ssh_dir is not None:
            ssh_config = self._ssh_dir / "ssh_config"
            ssh_config.write_text(combined_ssh_config([c.host for c in self.computers]))
            lines.append(f"SSH_CONFIG = {str(ssh_config)!r}")
        return "\n".join(lines) + "\n"

    def computers_text(self) -> str:
        """computers.txt: each computer by its ssh_config alias; the fed ones name their plug."""
        lines = [
            "# the shed-latency bench's computers: real sshd on 127.0.0.1, recording shutdowns"
        ]
        for c in self.computers:
            fed = f' powered_by="{c.plug.name}"' if c.plug else ""
            lines.append(f"linux  {c.alias}  name={c.name}{fed}")
        return "\n".join(lines) + "\n"

    def write_config(self, path: Path, poll_s: float) -> Path:
        """Write config_text() to path, readable by its owner only (and computers.txt beside)."""
        path.touch(mode=0o600, exist_ok=True)
        path.chmod(0o600)
        path.write_text(self.config_text(poll_s), encoding="utf-8")
        if self.computers:
            (path.parent / "computers.txt").write_text(self.computers_text(), encoding="utf-8")
        return path


# --- timing ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Timing:
    """One run, all seconds from t0 (the gateway starts reporting islanded)."""

    all_off_s: float | None  # every healthy outlet off; None: not within the limit
    detect_s: float | None  # the first grid-status request after t0 reached the gateway
    first_off_s: float | None  # the first healthy outlet went off
    still_on: tuple[str, ...] = ()

    @property
    def switching_s(self) -> float | None:
        """From the poll that saw the outage to the last outlet off."""
        if self.all_off_s is None or self.detect_s is None:
            return None
        return self.all_off_s - self.detect_s


@dataclass(frozen=True, slots=True)
class ComputerTiming:
    """The computers in one run, all seconds from t0; a name missing from a dict: not seen."""

    names: tuple[str, ...]  # every computer
    fed: tuple[str, ...]  # every plug feeding one
    stopped_s: dict[str, float]  # computer -> its sshd stopped (down_after_s after its command)
    down_s: dict[str, float]  # computer -> silent: really off
    fed_off_s: dict[str, float]  # feeding plug -> off
    confirm_s: dict[str, float]  # feeding plug -> from its computer silent to the plug off
    hard_cuts: tuple[str, ...]  # computers whose plug went off while they still had power

    @property
    def all_down_s(self) -> float | None:
        return max(self.down_s.values()) if len(self.down_s) == len(self.names) else None

    @property
    def all_fed_off_s(self) -> float | None:
        if len(self.fed_off_s) < len(self.fed):
            return None
        return max(self.fed_off_s.values(), default=None)


def watch(
    house: BenchHouse,
    healthy: Sequence[Plug],
    t0: float,
    reads_at_t0: int,
    limit_s: float,
    is_alive: Callable[[], bool],
    computers: Sequence[BenchComputer] = (),
) -> tuple[Timing, ComputerTiming | None]:
    """Look every WATCH_EVERY_S until the healthy outlets are off, and with computers, until
    each is silent and each feeding outlet off (or give up). A feeding outlet seen off while
    its computer has power is a hard cut: the computer dies, as in loadshed.sim.house."""
    detect: float | None = None
    first: float | None = None
    all_off: float | None = None
    on: list[str] = []
    stopped: dict[str, float] = {}
    down: dict[str, float] = {}
    fed_off: dict[str, float] = {}
    confirm: dict[str, float] = {}
    hard_cuts: list[str] = []
    fed = [c for c in computers if c.plug is not None]
    while True:
        now = time.monotonic()
        if detect is None and house.grid_reads() > reads_at_t0:
            detect = now - t0
        if all_off is None:
            on = [p.name for p in healthy if p.outlet.on]
            if first is None and len(on) < len(healthy):
                first = now - t0
            if not on:
                all_off = now - t0
        for c in computers:
            if c.name not in stopped and not c.host.is_up:
                stopped[c.name] = now - t0
            if c.name not in down and c.host.is_off:
                down[c.name] = now - t0
            if c.plug is not None and c.plug.name not in fed_off and not c.plug.outlet.on:
                fed_off[c.plug.name] = now - t0
                if c.name in down:
                    confirm[c.plug.name] = now - t0 - down[c.name]
                if c.host.is_powered:
                    hard_cuts.append(c.name)
                    c.host.power_off()
        done = all_off is not None and len(down) == len(computers) and len(fed_off) == len(fed)
        if done or now - t0 > limit_s or not is_alive():
            timing = Timing(all_off, detect, first, () if all_off is not None else tuple(on))
            if not computers:
                return timing, None
            return timing, ComputerTiming(
                tuple(c.name for c in computers),
                tuple(c.plug.name for c in fed if c.plug is not None),
                stopped,
                down,
                fed_off,
                confirm,
                tuple(hard_cuts),
            )
        time.sleep(WATCH_EVERY_S)


# --- run 1: loadshed -------------------------------------------------------------------------


class Daemon:
    """`python -m loadshed run --no-ui` as a child process, its output collected line by line."""

    def __init__(self, config: Path, state_dir: Path, *, echo: bool) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOADSHED_")}
        argv = [sys.executable, "-m", "loadshed", "run", "--no-ui"]
        argv += ["--config", str(config), "--state-dir", str(state_dir)]
        self.launched = time.monotonic()
        self.process = subprocess.Popen(
            argv,
            cwd=config.parent,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[tuple[float, str]] = []  # (monotonic time read, line)
        self._echo = echo
        self._reader = threading.Thread(target=self._read, name="loadshed-output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        if self.process.stdout is None:
            return
        for line in self.process.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))
            if self._echo:
                print(f"  | {line.rstrip()}", flush=True)

    def is_alive(self) -> bool:
        return self.process.poll() is None

    def first(self, text: str) -> float | None:
        """When the first line containing text was read, or None."""
        return next((at for at, line in self.lines if text in line), None)

    def matching(self, *texts: str) -> list[str]:
        return [line for _, line in self.lines if any(t in line for t in texts)]

    def stop(self) -> int | None:
        """SIGTERM, wait, SIGKILL if need be; return the exit code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_WAIT_S)
        self._reader.join(LINE_WAIT_S)
        return self.process.returncode


@dataclass(frozen=True, slots=True)
class LoadshedResult:
    timing: Timing
    computers: ComputerTiming | None  # None: no computers in this house
    shutdowns: dict[str, list[str]]  # computer -> the shutdown commands it received
    startup_s: float  # launch to its poll loop's first grid read
    ready_s: float | None  # launch to its "ready:" line, if it prints one
    switched: int  # "switching off" lines
    report: tuple[str, ...]  # its lines worth showing


def stall_clients(sock_path: Path, n: int) -> list[socket.socket]:
    """N clients of the daemon's control socket that subscribe to its snapshots and never read
    a byte (a frozen phone's SSH session): shedding must not wait for them."""
    stalled = []
    for _ in range(n):
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(str(sock_path))
        client.sendall(b'{"op": "subscribe"}\n')
        stalled.append(client)
    return stalled


def run_loadshed(
    house: BenchHouse,
    healthy: Sequence[Plug],
    tmp: Path,
    poll_s: float,
    *,
    echo: bool,
    stalled: int = 0,
) -> LoadshedResult | None:
    """Start loadshed, wait until it polls, cut the grid, time the shed; None if it failed."""
    config = house.write_config(tmp / "config.py", poll_s)
    reads_before = house.grid_reads()
    print(
        f"loadshed: starting `python -m loadshed run --no-ui` (poll {poll_s:g} s) ...", flush=True
    )
    daemon = Daemon(config, tmp / "state", echo=echo)
    clients: list[socket.socket] = []
    try:
        # Its start-up reads the grid once (beside reaching every device); the poll loop then
        # reads it every poll. Cut only once the loop has read it a few times.
        first_poll: float | None = None
        wanted = reads_before + 1 + LOOPS_POLLS_BEFORE_CUT
        while house.grid_reads() < wanted:
            if first_poll is None and house.grid_reads() >= reads_before + 2:
                first_poll = time.monotonic()
            if not daemon.is_alive() or time.monotonic() - daemon.launched > STARTUP_LIMIT_S:
                print("loadshed did not come up; its output:", file=sys.stderr)
                for _, line in daemon.lines[-40:]:
                    print(f"  | {line}", file=sys.stderr)
                return None
            time.sleep(WATCH_EVERY_S)
        if first_poll is None:
            first_poll = time.monotonic()
        startup_s = first_poll - daemon.launched
        ready_at = daemon.first("ready:")
        print(f"loadshed: up, polling (start-up {startup_s:.1f} s); cutting the grid", flush=True)
        clients = stall_clients(tmp / "state" / "control.sock", stalled)
        if clients:
            print(f"loadshed: {len(clients)} stalled clients subscribed, never reading", flush=True)
        t0, reads_at_t0 = house.cut_grid()
        timing, computers = watch(
            house, healthy, t0, reads_at_t0, LOADSHED_LIMIT_S, daemon.is_alive, house.computers
        )
        deadline = time.monotonic() + LINE_WAIT_S
        while daemon.first("shed finished") is None and time.monotonic() < deadline:
            time.sleep(WATCH_EVERY_S)
    finally:
        code = daemon.stop()
        for client in clients:
            client.close()
    if code not in (0, None):
        print(f"loadshed exited with code {code}", file=sys.stderr)
    report = daemon.matching("ready:", "grid lost", "shed finished", "could not", "stopped")
    return LoadshedResult(
        timing,
        computers,
        {c.name: c.host.shutdowns() for c in house.computers},
        startup_s,
        None if ready_at is None else ready_at - daemon.launched,
        len(daemon.matching("switching off")),
        tuple(report),
    )


# --- run 2: the naive sequential loop -------------------------------------------------------


class NaiveLoop(threading.Thread):
    """What a first script would do: poll the gateway, then switch plugs off one by one."""

    def __init__(self, house: BenchHouse, poll_s: float, quit_event: threading.Event) -> None:
        super().__init__(name="naive-loop", daemon=True)  # a hung tinytuya call can't be stopped
        self.house = house
        self.poll_s = poll_s
        self.quit = quit_event
        self.polling = threading.Event()  # logged in and read the grid once
        self.t0: float | None = None  # set by the main thread before the grid is cut
        self.costs: dict[str, float] = {}  # plug name -> seconds its switch-off took
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as err:
            self.error = err
            self.polling.set()

    async def _main(self) -> None:
        powerwall = Powerwall(self.house.powerwall.endpoint)
        try:
            await powerwall.login(self.house.password)
            while not self.quit.is_set():
                status = await powerwall.get_grid_status()
                self.polling.set()
                if status is not GridStatus.CONNECTED:
                    break
                await asyncio.sleep(self.poll_s)
        finally:
            await powerwall.close()
        total = len(self.house.plugs)
        for n, plug in enumerate(self.house.plugs, start=1):
            if self.quit.is_set():
                return
            started = time.monotonic()
            if plug.kind == "Kasa":
                said = await _kasa_off(plug)
            else:
                said = _tuya_off(plug)  # blocking: one device after another is the point
            cost = time.monotonic() - started
            self.costs[plug.name] = cost
            if self.quit.is_set():
                return  # interrupted: the house is gone, so this call failed for that reason
            if cost > SLOW_DEVICE_S or n % PROGRESS_EVERY == 0 or n == total:
                since = f"t0 + {started + cost - self.t0:6.1f} s" if self.t0 is not None else ""
                print(
                    f"naive: {n:3d}/{total}  {plug.name}  {said:<28} {cost:6.2f} s   {since}",
                    flush=True,
                )


async def _kasa_off(plug: Plug) -> str:
    """python-kasa with its defaults: connect (reads the plug), switch off, hang up."""
    try:
        device = await Device.connect(
            config=DeviceConfig(plug.sim.host, port_override=plug.sim.port)
        )
    except Exception as err:
        return f"failed: {type(err).__name__}"
    try:
        await device.turn_off()
    except Exception as err:
        return f"failed: {type(err).__name__}"
    finally:
        await device.disconnect()
    return "off"


def _tuya_off(plug: Plug) -> str:
    """tinytuya with its defaults (timeout 5 s, 5 retries 5 s apart), protocol 3.3."""
    device = tinytuya.OutletDevice(
        plug.dev_id, plug.sim.host, plug.key, version=TUYA_VERSION, port=plug.sim.port
    )
    reply = device.turn_off()
    if isinstance(reply, dict) and "Err" in reply:
        return f"failed: Err {reply['Err']}"
    return "off"


@dataclass(frozen=True, slots=True)
class NaiveResult:
    timing: Timing
    hung: tuple[Plug, ...]
    costs: dict[str, float]


def run_naive(
    house: BenchHouse, hung: Sequence[Plug], poll_s: float, quit_event: threading.Event
) -> NaiveResult | None:
    """Reset the house, start the naive loop polling, cut the grid, time it; None if it failed."""
    house.reset()
    house.hang(hung)
    healthy = [p for p in house.plugs if p not in hung and p not in house.feeding.values()]
    loop = NaiveLoop(house, poll_s, quit_event)
    print(
        f"\nnaive: {len(house.plugs)} plugs one by one, {len(hung)} hung, library defaults; "
        "this takes minutes",
        flush=True,
    )
    loop.start()
    if not loop.polling.wait(NAIVE_POLLING_LIMIT_S) or loop.error is not None:
        print(f"naive: could not poll the gateway: {loop.error!r}", file=sys.stderr)
        return None
    t0, reads_at_t0 = house.cut_grid()
    loop.t0 = t0
    timing, _ = watch(house, healthy, t0, reads_at_t0, NAIVE_LIMIT_S, loop.is_alive)
    if loop.error is not None:
        print(f"naive: the loop failed: {loop.error!r}", file=sys.stderr)
    loop.join(NAIVE_JOIN_S)
    return NaiveResult(timing, tuple(hung), dict(loop.costs))


def extrapolate(naive: NaiveResult, all_hung: Sequence[Plug]) -> float | None:
    """The naive figure had every plug in all_hung been hung: their cost swapped for a hung one."""
    if naive.timing.all_off_s is None:
        return None
    nominal = {"Kasa": KASA_HUNG_COST_S, "Tuya": TUYA_HUNG_COST_S}
    per_kind: dict[str, float] = {}
    for kind in nominal:
        seen = [naive.costs[p.name] for p in naive.hung if p.kind == kind and p.name in naive.costs]
        per_kind[kind] = sum(seen) / len(seen) if seen else nominal[kind]
    total = naive.timing.all_off_s
    for plug in all_hung:
        if plug not in naive.hung:
            total += per_kind[plug.kind] - naive.costs.get(plug.name, 0.0)
    return total


# --- report ----------------------------------------------------------------------------------


def _s(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f} s"


def _span(values: dict[str, float]) -> str:
    """first .. last of some per-computer times."""
    if not values:
        return "-"
    low, high = min(values.values()), max(values.values())
    return f"{low:.2f} .. {high:.2f} s"


def _computer_rows(c: ComputerTiming, shutdowns: dict[str, list[str]]) -> list[tuple[str, str]]:
    commands = sorted({cmd for cmds in shutdowns.values() for cmd in cmds})
    got = sum(bool(cmds) for cmds in shutdowns.values())
    rows = [
        ("loadshed, t0 -> all computers down", f"{_s(c.all_down_s)} (silent, really off)"),
        ("  shutdowns received", f"{got} of {len(c.names)}: {' | '.join(commands) or '-'}"),
        ("  sshd stopped (command + 0.3 s)", _span(c.stopped_s)),
        ("  silent", _span(c.down_s)),
        ("loadshed, t0 -> all fed plugs off", _s(c.all_fed_off_s)),
        ("  after their computer silent", f"{_span(c.confirm_s)} (a probe timing out + poll)"),
        ("  hard cuts", ", ".join(c.hard_cuts) or "none"),
    ]
    if len(c.down_s) < len(c.names):
        rows.append(("  NOT down", ", ".join(n for n in c.names if n not in c.down_s)))
    if len(c.fed_off_s) < len(c.fed):
        rows.append(("  fed NOT off", ", ".join(n for n in c.fed if n not in c.fed_off_s)))
    return rows


def report(
    house: BenchHouse,
    poll_s: float,
    loadshed: LoadshedResult | None,
    naive: NaiveResult | None,
) -> None:
    hung_kasa = sum(p.kind == "Kasa" for p in house.hung)
    rows: list[tuple[str, str]] = [
        ("plugs", f"{len(house.plugs)} ({KASA_PLUGS} Kasa legacy, {TUYA_PLUGS} Tuya 3.3)"),
        ("hung", f"{len(house.hung)} ({hung_kasa} Kasa, {len(house.hung) - hung_kasa} Tuya)"),
        ("poll interval", f"{poll_s:g} s"),
    ]
    if house.computers:
        aliases = ", ".join(c.alias for c in house.computers)
        fed = ", ".join(f"{c.name} by {c.plug.name}" for c in house.computers if c.plug)
        rows += [
            ("computers", f"{len(house.computers)} linux, sshd on 127.0.0.1 ({aliases})"),
            ("  fed by their own plug", fed),
            ("  refusing after sshd stops", f"{COMPUTER_REFUSE_S:g} s, then silent"),
        ]
    else:
        rows.append(("computers", f"none (no {SSHD_PATH})"))
    goal_s = poll_s + 1.0
    switchable = f"healthy plugs: {len(house.healthy)}"
    if house.computers:
        switchable += f", fed plugs: {len(house.feeding)}, computers: {len(house.computers)}"
    shed_s = loadshed.timing.all_off_s if loadshed is not None else None
    if loadshed is not None:
        t = loadshed.timing
        rows += [
            ("loadshed start-up", f"{_s(loadshed.startup_s, 1)} (launch to its first poll)"),
            ("loadshed ready line", _s(loadshed.ready_s, 1)),
            ("loadshed, t0 -> all healthy off", _s(t.all_off_s)),
            ("  waiting for the next poll", f"{_s(t.detect_s)} (cut just after one: worst case)"),
            ("  switching (poll -> last off)", _s(t.switching_s)),
            ("  first plug off", _s(t.first_off_s)),
            ("  switch-offs started", f"{loadshed.switched} ({switchable})"),
        ]
        if t.still_on:
            rows.append(("  NOT switched off", ", ".join(t.still_on)))
        if loadshed.computers is not None:
            rows += _computer_rows(loadshed.computers, loadshed.shutdowns)
    naive_s: float | None = None
    if naive is not None:
        t = naive.timing
        naive_s = t.all_off_s
        rows += [
            (f"naive, {len(naive.hung)} hung", _s(t.all_off_s, 1)),
            ("  waiting for its poll", _s(t.detect_s)),
        ]
        if t.still_on:
            rows.append(("  NOT switched off", ", ".join(t.still_on)))
        if len(naive.hung) < len(house.hung):
            naive_s = extrapolate(naive, house.hung)
            rows.append((f"naive, {len(house.hung)} hung (extrapolated)", _s(naive_s, 1)))
    ratio = naive_s / shed_s if naive_s is not None and shed_s else None
    if ratio is not None:
        rows.append(("ratio naive / loadshed", f"{ratio:.0f} x"))

    def verdict(met: bool | None) -> str:
        return "not measured" if met is None else ("met" if met else "NOT met")

    rows += [
        (f"goal: loadshed <= {goal_s:g} s", verdict(None if shed_s is None else shed_s <= goal_s)),
        ("goal: ratio >= 50 x", verdict(None if ratio is None else ratio >= 50)),
    ]
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    if loadshed is not None and loadshed.report:
        print("\nloadshed said:")
        for line in loadshed.report:
            print(f"  | {line}")


# --- main ------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--poll", type=float, default=DEFAULT_POLL_S, help="POLL_SECONDS (default 2)"
    )
    parser.add_argument("--skip-naive", action="store_true", help="time loadshed only")
    parser.add_argument(
        "--naive-hung",
        type=int,
        default=None,
        metavar="N",
        help="hung plugs in the naive run (0-10; default all 10); the figure is extrapolated",
    )
    parser.add_argument(
        "--stalled-clients",
        type=int,
        default=0,
        metavar="N",
        help="N control-socket clients that subscribe and never read, through the outage",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="echo loadshed's output")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.poll < MIN_POLL_S:
        print(f"--poll must be at least {MIN_POLL_S:g} s (loadshed's minimum)", file=sys.stderr)
        return 2
    with_computers = sshd_available()
    if not with_computers:
        print(f"note: no {SSHD_PATH} (or ssh, ssh-keygen): the run has no computers", flush=True)
    house = BenchHouse(computers=with_computers)
    n_hung = len(house.hung) if args.naive_hung is None else args.naive_hung
    if not 0 <= n_hung <= len(house.hung):
        print(f"--naive-hung must be from 0 to {len(house.hung)}", file=sys.stderr)
        return 2
    # Fewer hung plugs for the naive run: keep both kinds, alternating, in list order.
    kasa_hung = [p for p in house.hung if p.kind == "Kasa"]
    tuya_hung = [p for p in house.hung if p.kind == "Tuya"]
    alternating = [p for pair in zip(kasa_hung, tuya_hung, strict=True) for p in pair]
    naive_hung = alternating[:n_hung]
    healthy = house.healthy

    quit_event = threading.Event()
    loadshed: LoadshedResult | None = None
    naive: NaiveResult | None = None
    try:
        house.start()
        house.hang(house.hung)
        print(
            f"house: Powerwall at {house.powerwall.endpoint}, {len(house.plugs)} plugs on "
            f"127.0.0.1, hung: {', '.join(p.name for p in house.hung)}",
            flush=True,
        )
        if house.computers:
            where = [f"{c.alias} at {c.host.address}" for c in house.computers]
            print(f"house: computers on sshd: {', '.join(where)}", flush=True)
        with tempfile.TemporaryDirectory(prefix="loadshed-bench-") as tmp:
            loadshed = run_loadshed(
                house,
                healthy,
                Path(tmp),
                args.poll,
                echo=args.verbose,
                stalled=args.stalled_clients,
            )
        if not args.skip_naive:
            naive = run_naive(house, naive_hung, args.poll, quit_event)
    except KeyboardInterrupt:
        print("\ninterrupted; stopping the simulated house", file=sys.stderr)
        return 130
    finally:
        quit_event.set()
        house.stop()
    report(house, args.poll, loadshed, naive)
    return 0 if loadshed is not None else 1


if __name__ == "__main__":
    sys.exit(main())
