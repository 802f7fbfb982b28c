"""The command line: argv → verb → exit code. The one place exceptions become messages.

Exit codes (DESIGN §3): 0 ok, 1 runtime failure (or `check` found something unreachable),
2 bad config or usage. A ConfigError is one line on stderr; anything unexpected is one line
and a hint to run with --debug, which alone shows a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

from loadshed import __version__
from loadshed.errors import ConfigError, ExitCode, LoadshedError
from loadshed.logs import configure_logging

PLAIN_FORMAT = "%(asctime)s %(message)s"
JOURNAL_FORMAT = "%(message)s"  # journald stamps each line itself (it sets JOURNAL_STREAM)


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so main() owns every exit code."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(None, None, f"{self.prog}: {message}", f"see `{self.prog} --help`")


DESCRIPTION = """\
loadshed watches a Tesla Powerwall and, when the house goes off-grid, switches off the
plugs and shuts down the computers you marked as not essential, so the battery lasts; when
the grid is back and stable it brings back exactly what it switched off, and it tells you.

First time? `loadshed demo` shows it on a simulated house (no hardware, no config); then
`loadshed init` writes your config.py, and `loadshed check` reaches every device once."""
EPILOG = """\
config.py is ./config.py if there is one, else config.py in your user config dir
(~/.config/loadshed on Linux); state (state.json, events.log, the control socket) is in
~/.local/state/loadshed unless STATE_DIR or --state-dir says otherwise. Each verb has its
own --help."""


def _verb(
    verbs: argparse._SubParsersAction[_Parser], name: str, *, help: str
) -> argparse.ArgumentParser:
    """A verb whose own --help opens with the line `loadshed --help` shows for it."""
    return verbs.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="loadshed",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"loadshed {__version__}")
    parser.add_argument("--debug", action="store_true", help="show debug logs and tracebacks")
    verbs = parser.add_subparsers(dest="verb", required=True, parser_class=_Parser)

    check = _verb(
        verbs,
        "check",
        help="validate the config and reach every device once (never switches anything)",
    )
    _add_config_args(check)
    check.add_argument(
        "--trust-powerwall",
        action="store_true",
        help="accept the Powerwall's certificate as it is now (after replacing the gateway)",
    )

    run = _verb(verbs, "run", help="the daemon: watch the Powerwall, shed and restore")
    _add_config_args(run)
    _add_engine_args(run)
    run.add_argument(
        "--no-ui", action="store_true", help="plain log lines on stdout, no curses screen"
    )

    shed = _verb(verbs, "shed", help="switch off every non-essential device now, then exit")
    _add_config_args(shed)
    _add_engine_args(shed)
    restore = _verb(
        verbs, "restore", help="switch back on everything loadshed switched off, then exit"
    )
    _add_config_args(restore)
    _add_engine_args(restore)

    pin = _verb(
        verbs,
        "pin",
        help="pin one device on or off (or back to its rule), through the running daemon",
    )
    pin.add_argument("name", help="the device, as loadshed names it (see `loadshed status`)")
    pin.add_argument("pin", choices=("on", "off", "auto"), help="keep on, keep off, or its rule")
    _add_config_args(pin)
    _add_engine_args(pin)

    status = _verb(
        verbs,
        "status",
        help="one look at the running daemon (exit 0 on grid, 1 not, 3 none running)",
    )
    status.add_argument("--json", action="store_true", help="the whole snapshot as JSON")
    _add_config_args(status)
    status.add_argument("--state-dir", type=Path, default=None, help="the daemon's state dir")

    attach = _verb(
        verbs,
        "attach",
        help="the running daemon's screen, keys and all; leaving it leaves it running",
    )
    _add_config_args(attach)
    attach.add_argument("--state-dir", type=Path, default=None, help="the daemon's state dir")

    init = _verb(
        verbs, "init", help="write a first config.py (0600) and computers.txt, then check them"
    )
    _add_config_args(init)
    init.add_argument("--powerwall", help="the gateway's address (asked when not given)")
    init.add_argument("--password", help="its customer password (asked when not given)")
    init.add_argument("--mail-to", help="where alerts go (asked when not given)")
    init.add_argument("--force", action="store_true", help="replace existing files, unasked")
    init.add_argument("--yes", action="store_true", help="ask nothing: use the flags as given")
    init.add_argument(
        "--service", action="store_true", help="write the service file that runs loadshed at boot"
    )
    looking = init.add_mutually_exclusive_group()
    looking.add_argument(
        "--discover",
        action="store_true",
        default=None,
        help="look for Kasa and Tuya plugs and write them in",
    )
    looking.add_argument(
        "--no-discover",
        dest="discover",
        action="store_false",
        help="do not look for plugs (the default with --yes)",
    )
    init.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="look for Kasa only at this host[:port] (repeatable)",
    )

    notify_test = _verb(
        verbs, "notify-test", help="send one test message through every alert channel, now"
    )
    _add_config_args(notify_test)
    notify_test.add_argument("--state-dir", type=Path, default=None, help="where the outbox lives")

    discover = _verb(
        verbs,
        "discover",
        help="find Kasa and Tuya plugs (LAN, --target, Tuya cloud): config lines to paste",
    )
    discover.add_argument(
        "--config", type=Path, default=None, help="(./config.py, else the user config dir's)"
    )
    discover.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="ask only this Kasa address, host or host:port (repeatable; default: broadcast)",
    )
    discover.add_argument(
        "--show-keys", action="store_true", help="print the Tuya local keys (hidden otherwise)"
    )

    demo = _verb(
        verbs,
        "demo",
        help="a simulated house on 127.0.0.1 behind the live screen (g cuts the grid); "
        "no hardware, no config",
    )
    demo.add_argument(
        "--speed",
        type=float,
        default=None,
        help="the house's clock runs N x real time (60 on the screen, 1000 scripted)",
    )
    demo.add_argument(
        "--no-ui", action="store_true", help="a scripted outage in plain lines on stdout"
    )
    return parser


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="(./config.py if there is one, else config.py in your user config dir, "
        "~/.config/loadshed on Linux)",
    )
    parser.add_argument(
        "--computers", type=Path, default=None, help="computers.txt (./computers.txt)"
    )


def _add_engine_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dry-run", action="store_true", help="decide and log, but throw no switch, write no state"
    )
    parser.add_argument(
        "--state-dir", type=Path, default=None, help="where state.json and events.log live"
    )


def main(
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run loadshed with argv; return the exit code."""
    env = os.environ if env is None else env
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    arguments = list(argv if argv is not None else sys.argv[1:])
    debug = "--debug" in arguments
    if not arguments:  # bare `loadshed`: what it is, and where to start
        print(DESCRIPTION, file=out)
        print("\nAll the verbs: loadshed --help", file=out)
        return ExitCode.OK
    try:
        try:
            args = _parser().parse_args(argv)
        except SystemExit as done:  # --help and --version
            return int(done.code or 0)
        if getattr(args, "config", "absent") is None:
            from loadshed.setup_files import default_config_path

            args.config = default_config_path()
        if args.verb == "init":
            from loadshed.service import init_service
            from loadshed.setup_files import init

            configure_logging(err, debug=args.debug, level=logging.ERROR)
            if args.service:
                return init_service(args, env, out, sys.platform)
            return init(args, env, out)
        if args.verb == "demo":
            configure_logging(out, debug=args.debug, level=logging.INFO, fmt=PLAIN_FORMAT)
            return _demo(args, env, out, err)
        if args.verb == "notify-test":
            from loadshed import daemon

            configure_logging(err, debug=args.debug, level=logging.ERROR)
            return daemon.notify_test(args, env, out)
        if args.verb in ("status", "attach"):
            from loadshed import clients

            configure_logging(err, debug=args.debug, level=logging.ERROR)
            return (clients.status if args.verb == "status" else clients.attach)(args, env, out)
        if args.verb in ("shed", "restore", "pin") and not args.dry_run:
            from loadshed import clients

            configure_logging(err, debug=args.debug, level=logging.ERROR)
            fields = {"device": args.name, "pin": args.pin} if args.verb == "pin" else {}
            forwarded = clients.forward(args, env, out, args.verb, **fields)
            if forwarded is not None:
                return forwarded
        if args.verb in ("run", "shed", "restore", "pin"):
            from loadshed import daemon

            # Plain mode: timestamped lines on stdout, what a pipe wants; journald adds its own.
            fmt = JOURNAL_FORMAT if env.get("JOURNAL_STREAM") else PLAIN_FORMAT
            configure_logging(out, debug=args.debug, level=logging.INFO, fmt=fmt)
            if args.verb == "run":
                return daemon.run(args, env, out)
            return daemon.one_shot(args, env, out)
        # check and demo report every problem in their table; logs would say it twice.
        configure_logging(err, debug=args.debug, level=logging.ERROR)
        if args.verb == "check":
            return _check(args, env, out, err)
        if args.verb == "discover":
            from loadshed import discover as discovering

            return discovering.main(args, env, out)
        raise ConfigError(None, None, f"unknown verb {args.verb!r}")
    except ConfigError as error:
        print(f"loadshed: {error}", file=err)
        return ExitCode.USAGE
    except LoadshedError as error:
        print(f"loadshed: {error}", file=err)
        return ExitCode.FAILURE
    except KeyboardInterrupt:
        print("loadshed: interrupted", file=err)
        return ExitCode.FAILURE
    except Exception as error:
        if debug:
            raise
        print(f"loadshed: unexpected error: {type(error).__name__}: {error}", file=err)
        print("loadshed: run again with --debug to see where it happened", file=err)
        return ExitCode.FAILURE


def _check(args: argparse.Namespace, env: Mapping[str, str], out: TextIO, err: TextIO) -> int:
    from loadshed import lint
    from loadshed.check import format_table, run_check
    from loadshed.computers import check_power_rules, load_computers
    from loadshed.config import load_config
    from loadshed.logs import redact, redact_secrets
    from loadshed.notify import waiting
    from loadshed.state import default_state_dir
    from loadshed.trust import TRUST_FILE, Trust

    config = load_config(args.config, env)
    computers_path = args.computers or config.path.parent / "computers.txt"
    computers = load_computers(computers_path, required=args.computers is not None)
    check_power_rules(computers, config.rule_for, computers_path)
    redact_secrets(config.secrets())
    unfilled = lint.placeholders(config)
    if unfilled:  # the example's values: reaching them would only confuse
        print(f"fill in {config.path}: it still has the example's values", file=out)
        for line in unfilled:
            print(f"  - {line}", file=out)
        print("then run `loadshed check` again (nothing was contacted)", file=out)
        return ExitCode.FAILURE
    trust = Trust((config.state_dir or default_state_dir()) / TRUST_FILE)
    if args.trust_powerwall:
        old = trust.forget(str(config.powerwall))
        if old is not None:
            print(f"forgot the Powerwall's old certificate (SHA-256 {old})", file=out)
    report = asyncio.run(run_check(config, computers, computers_path, trust=trust))
    # The table goes through the same redaction as the log: a device may echo a secret.
    print(redact(format_table(report.rows)), file=out)
    rules = {r.name: config.rule_for(r.name) for r in report.rows if r.rule}
    safety = lint.safety(config, rules, computers, lint.monitor_names())
    for warning in (*report.warnings, *safety):
        print(redact(f"warning: {warning}"), file=out)
    alerts = lint.alert_problems(config)
    smtp = lint.smtp_problem(config)
    if smtp is not None:
        alerts.append(smtp)
    for problem in alerts:
        print(redact(f"problem: {problem}"), file=out)
    outbox = waiting(config.state_dir or default_state_dir())
    if outbox:
        print(f"alerts: {outbox} waiting in the outbox (loadshed run sends them)", file=out)
    for problem in report.problems:
        print(redact(f"problem: {problem}"), file=out)
    unreachable = [r.name for r in report.rows if not (r.reachable and r.outcome.is_ok)]
    if unreachable:
        print(
            f"\n{len(unreachable)} of {len(report.rows)} not OK: {', '.join(unreachable)}", file=out
        )
        return ExitCode.FAILURE
    if report.problems or alerts:
        print(f"\nall {len(report.rows)} reachable, but the config needs fixing", file=out)
        return ExitCode.FAILURE
    print(f"\nall {len(report.rows)} reachable", file=out)
    return ExitCode.OK


def _demo(args: argparse.Namespace, env: Mapping[str, str], out: TextIO, err: TextIO) -> int:
    from loadshed.daemon import wants_screen
    from loadshed.demo import DEFAULT_SPEED, LIVE_SPEED, run_demo, run_live_demo

    if args.speed is not None and args.speed <= 0:
        raise ConfigError(None, None, f"--speed {args.speed:g}", "give a speed above 0, like 600")
    if wants_screen(out, args.no_ui):
        return run_live_demo(args.speed or LIVE_SPEED)
    return run_demo(out, args.speed or DEFAULT_SPEED)
