"""`loadshed run`, `shed` and `restore`: set up the config, the state dir and the engine.

`run` shows the curses screen (ui.py) when stdout and stdin are a terminal and --no-ui is not
given; while it is up no log line reaches the terminal (`logs_held`). Otherwise plain mode:
timestamped lines on stdout, and curses is never imported. SIGTERM and SIGINT ask the monitor
to quit; it lets switches in flight finish and writes the state first.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import logging
import signal
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Final, TextIO

from loadshed.computers import Computer, check_power_rules, load_computers
from loadshed.config import Config, load_config
from loadshed.control import PIN_WORDS, PINS, answers, house_socket
from loadshed.engine import Command, CommandKind, Engine
from loadshed.errors import ExitCode, LoadshedError
from loadshed.logs import redact_secrets
from loadshed.model import Power, Status, Verb
from loadshed.monitor import Monitor
from loadshed.notify import Notifier
from loadshed.policy import ESSENTIAL
from loadshed.state import EVENTS_LOGGER, StateStore, default_state_dir
from loadshed.tuyacloud import KeyCache
from loadshed.tuyakeys import use_cached_keys

_LOG = logging.getLogger(__name__)

JOIN_POLL_S: Final = 0.5  # the main thread wakes this often so signals are handled promptly
HELD_LOG_LINES: Final = 20  # errors logged while the screen was up, printed when it closes


@dataclass(frozen=True, slots=True)
class Setup:
    config: Config
    store: StateStore | None
    computers: tuple[Computer, ...]
    computers_path: Path


def _setup(args: argparse.Namespace, env: Mapping[str, str]) -> Setup:
    config = load_config(args.config, env)
    computers_path = args.computers or config.path.parent / "computers.txt"
    computers = load_computers(computers_path, required=args.computers is not None)
    check_power_rules(computers, config.rule_for, computers_path)
    redact_secrets(config.secrets())
    for warning in config.warnings:
        _LOG.warning("%s", warning)
    if args.dry_run:
        _LOG.info("dry run: nothing will be switched and no state written")
        return Setup(config, None, computers, computers_path)
    state_dir = args.state_dir or config.state_dir or default_state_dir()
    store = StateStore(state_dir)
    store.open()
    logging.getLogger(EVENTS_LOGGER).addHandler(store.events_handler())
    _LOG.info("state dir: %s", state_dir)
    return Setup(config, store, computers, computers_path)


def wants_screen(out: TextIO, no_ui: bool) -> bool:
    """The curses screen: unless --no-ui, when stdout is a terminal and keys can be read."""
    return not no_ui and out.isatty() and sys.stdin.isatty()


class _Held(logging.Handler):
    """Keeps the last errors logged while the screen is up, to print once it is gone."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: collections.deque[logging.LogRecord] = collections.deque(
            maxlen=HELD_LOG_LINES
        )

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def logs_held() -> Iterator[None]:
    """Keep log lines off the terminal while curses owns it; print the errors afterwards.

    events.log still gets every event (its handler is on the events logger), and the screen
    shows the engine's own lines; a library's error waits here and is printed when the screen
    closes.
    """
    root = logging.getLogger()
    saved = list(root.handlers)
    held = _Held()
    for handler in saved:
        root.removeHandler(handler)
    root.addHandler(held)
    try:
        yield
    finally:
        root.removeHandler(held)
        for handler in saved:
            root.addHandler(handler)
        for record in held.records:
            root.handle(record)


def run(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    """The daemon until q on its screen, or SIGTERM or SIGINT in plain mode."""
    _refuse_a_second_daemon(load_config(args.config, env), args.dry_run)
    setup = _setup(args, env)
    config, store = setup.config, setup.store
    notifier = None
    if store is not None:
        try:
            notifier = Notifier(store.dir, config)
        except LoadshedError as err:  # alerts must never stop shedding
            _LOG.error("%s: running without alerts", err)
    if notifier is not None:
        channels = ", ".join(notifier.channels) or "none (see README: Alerts)"
        _LOG.info("alerts go to: %s; %d waiting in the outbox", channels, notifier.pending())
    monitor = Monitor(
        config,
        store,
        computers=setup.computers,
        computers_path=setup.computers_path,
        dry_run=args.dry_run,
        notifier=notifier,
    )

    try:
        if wants_screen(out, args.no_ui):
            from loadshed.ui import CannotDraw, run_ui  # only here: plain mode never imports curses

            try:
                with logs_held():
                    run_ui(monitor)
            except CannotDraw as why:  # said before the monitor started: plain mode instead
                print(f"loadshed: {why}; plain lines instead.", file=out, flush=True)
                _run_plain(monitor, config)
        else:
            _run_plain(monitor, config)
    finally:
        if store is not None:
            store.close()
    if isinstance(monitor.error, LoadshedError):  # a ConfigError too: exit 2, said once by cli
        raise monitor.error
    if monitor.error is not None:
        print(f"loadshed: the monitor stopped: {monitor.error}", file=sys.stderr)
        return ExitCode.FAILURE
    _LOG.info("stopped")
    return ExitCode.OK


def _refuse_a_second_daemon(config: Config, dry_run: bool) -> None:
    """One loadshed per house: another daemon already watching this Powerwall (with another
    state dir; the same state dir is refused by its lock) is named, and this one does not start.
    A dry run may watch beside it: it switches nothing."""
    if dry_run:
        return
    hello = answers(house_socket(str(config.powerwall)))
    if hello is not None:
        raise LoadshedError(
            f"another loadshed (pid {hello.get('pid')}, state dir {hello.get('state_dir')}) "
            f"already watches the Powerwall at {config.powerwall}: see it with `loadshed "
            "status` or `loadshed attach`; stop it first to start another"
        )


def _run_plain(monitor: Monitor, config: Config) -> None:
    """Start the monitor and wait for it; SIGTERM and SIGINT ask it to quit."""

    def _quit(signum: int, frame: FrameType | None) -> None:
        _LOG.info("%s: stopping", signal.Signals(signum).name)
        monitor.stop()

    previous = {s: signal.signal(s, _quit) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        _LOG.info(
            "loadshed watching the Powerwall at %s every %g s", config.powerwall, config.poll_s
        )
        monitor.start()
        while not monitor.join(JOIN_POLL_S):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def one_shot(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    """`loadshed shed` / `restore` / `pin` with no daemon running: one command through the
    engine, then exit."""
    setup = _setup(args, env)
    if args.verb == "pin":
        command = Command(
            CommandKind.PIN, origin="command line", device=args.name, pin=PINS[args.pin]
        )
    else:
        kind = CommandKind.FORCE_SHED if args.verb == "shed" else CommandKind.FORCE_RESTORE
        command = Command(kind, origin="command line")
    try:
        return asyncio.run(_one_shot(setup, command, args.dry_run, out))
    finally:
        if setup.store is not None:
            setup.store.close()


async def _one_shot(setup: Setup, command: Command, dry_run: bool, out: TextIO) -> int:
    engine = Engine(
        setup.config,
        setup.store,
        computers=setup.computers,
        computers_path=setup.computers_path,
        dry_run=dry_run,
    )
    if setup.store is not None:  # Tuya keys the cloud gave since config.py was written
        use_cached_keys(engine.registry, setup.config, KeyCache(setup.store.dir))
    try:
        await engine.start()
        if command.kind is CommandKind.PIN and command.device not in engine.registry.devices:
            names = ", ".join(sorted(engine.registry.devices))
            raise LoadshedError(f"no device is called {command.device!r} (there are: {names})")
        engine.obey(command)
        await engine.settle()
    finally:
        await engine.close()
    acted = {action.device for action, _ in engine.results}
    kind = command.kind
    ok = True
    for action, outcome in engine.results:
        wanted = Power.OFF if action.verb is Verb.SHED else Power.ON
        if outcome.is_ok and outcome.power is wanted:
            print(f"{action.device}: {'would be ' if dry_run else ''}{wanted.value}", file=out)
        else:
            ok = False
            print(f"{action.device}: FAILED: {outcome.detail}", file=out)
    for name, device in engine.registry.devices.items():
        if name in acted:
            continue
        if kind is CommandKind.PIN:
            if name == command.device:
                print(f"{name}: pinned {PIN_WORDS[command.pin]}, {_power(device.power)}", file=out)
            continue
        if device.status is not Status.OK:
            ok = False
            print(f"{name}: unreachable: {device.detail}", file=out)
        elif kind is CommandKind.FORCE_SHED and device.rule <= ESSENTIAL:
            print(f"{name}: essential, left {_power(device.power)}", file=out)
        elif kind is CommandKind.FORCE_SHED:
            print(f"{name}: already {_power(device.power)}", file=out)
        else:
            print(f"{name}: not switched off by loadshed, left {_power(device.power)}", file=out)
    for placeholder in engine.registry.pending:
        ok = False
        print(f"Kasa {placeholder.host.address}: unreachable: {placeholder.detail}", file=out)
    for name in sorted(set(engine.state.shed) - set(engine.registry.devices)):
        ok = False
        print(f"{name}: not reachable, still switched off by loadshed", file=out)
    return ExitCode.OK if ok else ExitCode.FAILURE


def _power(power: Power | None) -> str:
    return power.value if power is not None else "in an unknown state"


def notify_test(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    """`loadshed notify-test`: one test message through every channel, now."""
    config = load_config(args.config, env)
    redact_secrets(config.secrets())
    state_dir = args.state_dir or config.state_dir or default_state_dir()
    notifier = Notifier(state_dir, config)
    results = asyncio.run(notifier.send_test())
    if not results:
        print(
            "no alert channel configured: set MAILNOTIF and SMTP_HOST, or NOTIFY_URLS "
            "(see README: Alerts)",
            file=out,
        )
        return ExitCode.FAILURE
    for channel, said in results:
        print(f"{channel}: {said}", file=out)
    return ExitCode.OK if all(said == "sent" for _, said in results) else ExitCode.FAILURE
