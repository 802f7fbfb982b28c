"""The owner's commands as clients of the running daemon: status, attach, shed, restore, pin.

Which daemon: the one on `control.sock` in the state dir (`--state-dir`, or the config's, or
the default), else the one watching this config's Powerwall (its per-user runtime socket), so
a command aimed at the house finds its daemon whatever state dir it was started with. With no
daemon, `shed`, `restore` and `pin` run one shot as before; `status` and `attach` say how to
start one (exit 3).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, TextIO

from loadshed.config import load_config
from loadshed.control import (
    PIN_WORDS,
    SOCKET_NAME,
    Connection,
    NoDaemon,
    connect_any,
    house_socket,
    read_snapshot,
)
from loadshed.engine import Command, CommandKind, Snapshot
from loadshed.errors import ConfigError, ExitCode, LoadshedError
from loadshed.model import Action, Grid, Outcome, Power, Status
from loadshed.policy import ESSENTIAL
from loadshed.state import default_state_dir
from loadshed.wire import WireError, decode, encode

NO_DAEMON: Final = 3  # `status` and `attach`: no daemon runs for this house
START_HINT: Final = (
    "start one with `loadshed run` (in a terminal, with its screen) or `loadshed run --no-ui` "
    '(as a service: README "Running it")'
)


def sockets(args: argparse.Namespace, env: Mapping[str, str]) -> list[Path]:
    """Where to look for the daemon, in order (see the module docstring)."""
    state_dir: Path | None = getattr(args, "state_dir", None)
    house = None
    try:
        config = load_config(args.config, env)
        house = house_socket(str(config.powerwall))
        state_dir = state_dir or config.state_dir
    except ConfigError:
        pass  # status and attach need no config to look in the state dir
    found = [(state_dir or default_state_dir()) / SOCKET_NAME]
    if house is not None:
        found.append(house)  # the house's daemon, whatever state dir it was started with
    return found


# --- status -----------------------------------------------------------------------------------


def status(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    """One look at the running daemon; exit 0 on grid and all well, 1 otherwise, 3 none."""
    try:
        connection = connect_any(sockets(args, env))
    except NoDaemon as err:
        print(f"loadshed: no daemon running ({err}); {START_HINT}", file=out)
        return NO_DAEMON
    try:
        snapshot = connection.snapshot()
    finally:
        connection.close()
    if args.json:
        print(json.dumps(encode(snapshot), indent=2), file=out)
    else:
        print(describe(snapshot, connection.hello), file=out)
    well = snapshot.reading.grid is Grid.ON and not snapshot.problems and not _failing(snapshot)
    return ExitCode.OK if well else ExitCode.FAILURE


def _failing(snapshot: Snapshot) -> list[str]:
    return [d.name for d in snapshot.devices if d.status is not None and d.status is not Status.OK]


def describe(snapshot: Snapshot, hello: Mapping[str, Any]) -> str:
    """The house in a few lines, for a terminal or a script's log."""
    from loadshed.view import POWERWALL_2_WH, duration, estimate

    reading = snapshot.reading
    decided = snapshot.decided_by or reading
    grid = {Grid.ON: "on grid", Grid.OFF: "OFF GRID"}.get(decided.grid, "grid unknown")
    if decided.grid is Grid.UNKNOWN and reading.detail:
        grid += f" ({reading.detail})"
    since = snapshot.outage_since if decided.grid is Grid.OFF else snapshot.grid_since
    if since is not None:
        grid += f" since {time.strftime('%H:%M', time.localtime(since))}"
    battery = "unknown" if reading.battery_pct is None else f"{reading.battery_pct:.0f} %"
    lines = [
        f"loadshed (pid {hello.get('pid')}, state dir {hello.get('state_dir')}): {grid}, "
        f"battery {battery}"
    ]
    guess = estimate(snapshot, POWERWALL_2_WH)
    if decided.grid is Grid.OFF and guess is not None and guess.hours is not None:
        lines.append(f"  time left at this load: about {duration(guess.hours * 3600)}")
    for source in snapshot.sources:
        said = source.reading.raw or source.reading.detail
        age = "not read yet" if source.age_s is None else f"{source.age_s:.0f} s ago"
        lines.append(f"  {source.name}: {source.reading.grid.value} ({said}), {age}")
    if snapshot.disagreement:
        lines.append(f"  ! sources disagree: {snapshot.disagreement}")
    lines.extend(f"  ! {problem}" for problem in snapshot.problems)
    width = max((len(d.name) for d in snapshot.devices), default=4)
    for device in snapshot.devices:
        state = device.power.value if device.power is not None else "unknown"
        if device.busy is not None:
            state = f"{device.busy.value}ing"
        if device.status is not None and device.status is not Status.OK:
            state += f" ({device.detail or device.status.value})"
        rule = "essential" if device.rule <= ESSENTIAL else f"shed below {device.rule} %"
        if device.rule >= 100:
            rule = "shed at outage"
        shed = f"  shed: {device.shed_reason}" if device.shed_reason else ""
        pin = f"  pinned {device.pin.value}" if device.pin is not None else ""
        lines.append(f"  {device.name:<{width}}  {state:<12} {rule}{shed}{pin}")
    return "\n".join(lines)


# --- shed, restore, pin -----------------------------------------------------------------------


def forward(
    args: argparse.Namespace, env: Mapping[str, str], out: TextIO, op: str, **fields: str
) -> int | None:
    """Send the command to the running daemon and print each device's outcome; None when no
    daemon runs (the caller then runs it one shot)."""
    try:
        connection = connect_any(sockets(args, env))
    except NoDaemon:
        return None
    print(
        f"sent to the running loadshed (pid {connection.hello.get('pid')}, "
        f"state dir {connection.hello.get('state_dir')})",
        file=out,
    )
    ok = True
    try:
        for message in connection.command(op, **fields):
            if message.get("type") == "accepted" and not message.get("actions"):
                print("nothing to switch", file=out)
            elif message.get("type") == "outcome":
                ok = _print_outcome(message, out) and ok
            elif message.get("type") == "done" and message.get("waiting"):
                ok = False
                for name in message["waiting"]:
                    print(f"{name}: still switching (see `loadshed status`)", file=out)
    finally:
        connection.close()
    return ExitCode.OK if ok else ExitCode.FAILURE


def _print_outcome(message: Mapping[str, Any], out: TextIO) -> bool:
    try:
        action = decode(Action, message.get("action"))
        outcome = decode(Outcome, message.get("outcome"))
    except WireError as err:
        raise LoadshedError(f"the daemon's answer could not be read: {err}") from None
    wanted = Power.OFF if action.verb.value == "shed" else Power.ON
    if outcome.is_ok and outcome.power is wanted:
        print(f"{action.device}: {wanted.value}", file=out)
        return True
    print(f"{action.device}: FAILED: {outcome.detail}", file=out)
    return False


# --- attach -----------------------------------------------------------------------------------


class RemoteMonitor:
    """The running daemon, seen through its socket, with the methods the screen uses."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.on_snapshot: Callable[[Snapshot], None] | None = None
        self.error: BaseException | None = None
        self._snapshot: Snapshot | None = None
        self._thread = threading.Thread(target=self._read, name="attach", daemon=True)
        self._lock = threading.Lock()

    @property
    def snapshot(self) -> Snapshot:
        if self._snapshot is None:
            self._snapshot = self.connection.snapshot()
        return self._snapshot

    def start(self) -> None:
        self.connection.send({"op": "subscribe"})
        self._thread.start()

    def send(self, command: Command) -> None:
        if command.kind is CommandKind.QUIT:
            self.stop()
            return
        request: dict[str, Any] = {"op": _OPS[command.kind], "id": f"screen-{time.monotonic()}"}
        if command.kind is CommandKind.PIN:
            request |= {"device": command.device, "pin": PIN_WORDS[command.pin]}
        with self._lock:
            try:
                self.connection.send(request)
            except OSError as err:
                self.error = LoadshedError(f"lost the daemon: {err}")

    def stop(self) -> None:
        """Leave the screen: the daemon goes on."""
        self.connection.close()

    def join(self, timeout_s: float | None = None) -> bool:
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _read(self) -> None:
        try:
            while True:
                message = self.connection.receive(timeout_s=None)
                if message.get("type") != "snapshot":
                    continue  # a command's progress: the snapshots show it
                self._snapshot = read_snapshot(message)
                if self.on_snapshot is not None:
                    self.on_snapshot(self._snapshot)
        except (OSError, ValueError, LoadshedError) as err:
            if not isinstance(err, NoDaemon) or self.error is None:
                self.error = LoadshedError(f"the daemon's connection ended: {err}")


_OPS: Final = {
    CommandKind.FORCE_SHED: "shed",
    CommandKind.FORCE_RESTORE: "restore",
    CommandKind.PIN: "pin",
}


def attach(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    """The curses screen of the running daemon; leaving it leaves the daemon running."""
    try:
        connection = connect_any(sockets(args, env))
    except NoDaemon as err:
        print(f"loadshed: no daemon running ({err}); {START_HINT}", file=out)
        return NO_DAEMON
    from loadshed.ui import run_ui

    monitor = RemoteMonitor(connection)
    try:
        code = run_ui(monitor, attached=True)  # type: ignore[arg-type]
    finally:
        monitor.stop()
    return int(code)
