"""`loadshed init --service`: the service that runs the daemon at boot, for this platform, with
the paths of this install.

The templates ship in loadshed/examples/ (contrib/ links to them, for a clone): a systemd user
unit on Linux, a launchd agent on macOS. Windows has no file to write: the Task Scheduler steps
are printed. The service runs the loadshed that was run — the script on PATH (pipx, uv tool), a
venv's, or `<python> -m loadshed` — with `run --no-ui --config <config.py>`, every path absolute:
a service starts in another directory, with another PATH. Like config.py, an existing service
file is never replaced unasked. Nothing here starts, stops or reloads a service: it prints how.
"""

from __future__ import annotations

import argparse
import os
import plistlib
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TextIO

from loadshed.errors import ConfigError, ExitCode
from loadshed.setup_files import (
    CONFIG_NAME,
    Ask,
    example,
    how_to_create,
    may_write,
    user_config_dir,
)

UNIT_NAME: Final = "loadshed.service"
AGENT_NAME: Final = "com.loadshed.plist"
LOG_NAME: Final = "loadshed.log"  # the launchd agent's stdout and stderr, in ~/Library/Logs

# init's flags that fill in config.py: --service writes only the service file.
CONFIG_FLAGS: Final = {
    "powerwall": "--powerwall",
    "password": "--password",
    "mail_to": "--mail-to",
    "discover": "--discover/--no-discover",
    "target": "--target",
}


@dataclass(frozen=True, slots=True)
class ServiceFile:
    path: Path | None  # None: this platform has no file to write (Windows)
    content: bytes
    steps: tuple[str, ...]  # what the owner runs next, one line each


def init_service(
    args: argparse.Namespace, env: Mapping[str, str], out: TextIO, platform: str
) -> int:
    """`loadshed init --service`: install() for the loadshed that is running, as it was run."""
    given = [flag for name, flag in CONFIG_FLAGS.items() if getattr(args, name) not in (None, [])]
    if given:
        raise ConfigError(
            None,
            None,
            f"--service writes only the service file; {', '.join(given)} fill in config.py",
            "run `loadshed init` for config.py first, then `loadshed init --service`",
        )
    return install(
        platform,
        loadshed_command(sys.argv[0], sys.executable),
        args.config,
        args.computers,
        env,
        out,
        force=args.force,
        interactive=sys.stdin.isatty() and not args.yes,
    )


def install(
    platform: str,
    command: Sequence[str],
    config: Path,
    computers: Path | None,
    env: Mapping[str, str],
    out: TextIO,
    *,
    force: bool = False,
    interactive: bool = False,
    ask: Ask = input,
) -> int:
    """Write the service file that runs `command run --no-ui --config config` on platform
    (a sys.platform value), unless one is there; then print how to start and watch it."""
    plan = PLANS.get("linux" if platform.startswith("linux") else platform)
    if plan is None:
        raise ConfigError(
            None,
            None,
            f"no service file known for {platform}",
            "have your init system run `loadshed run --no-ui --config <config.py>`",
        )
    config = config.absolute()
    if not config.is_file():
        raise ConfigError(
            config, None, "no config.py for the service to run", how_to_create(config)
        )
    daemon = [*command, "run", "--no-ui", "--config", str(config)]
    if computers is not None:
        computers = computers.absolute()
        if not computers.is_file():
            raise ConfigError(computers, None, "no such file", "give --computers an existing file")
        daemon += ["--computers", str(computers)]
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    service = plan(daemon, home, env, _status(command, config))
    if service.path is not None and may_write(service.path, force, interactive, ask, out):
        service.path.parent.mkdir(parents=True, exist_ok=True)
        service.path.write_bytes(service.content)
        print(f"wrote {service.path}, which runs", file=out)
        print(f"  {shlex.join(daemon)}", file=out)
    for line in service.steps:
        print(line, file=out)
    return ExitCode.OK


def loadshed_command(argv0: str, python: str) -> tuple[str, ...]:
    """The absolute command that runs this loadshed: the script it was started as (by its name
    on PATH when that is the same file), or `<python> -m loadshed` when run as a module."""
    started = None if Path(argv0).name == "__main__.py" else shutil.which(argv0)
    if started is None:
        return (os.path.abspath(python), "-m", "loadshed")
    on_path = shutil.which("loadshed")
    if on_path is not None and os.path.samefile(on_path, started):
        started = on_path  # ~/.local/bin/loadshed, not the pipx venv's file it links to
    return (os.path.abspath(started),)


# --- one plan per platform ---------------------------------------------------------------------


def systemd_unit(daemon: Sequence[str]) -> str:
    """The shipped unit, with daemon as its ExecStart."""
    line = "ExecStart=" + " ".join(
        [_systemd_word(daemon[0], program=True), *(_systemd_word(a) for a in daemon[1:])]
    )
    return re.sub(r"^ExecStart=.*$", lambda _: line, example(UNIT_NAME), count=1, flags=re.M)


def launchd_plist(daemon: Sequence[str], home: Path) -> bytes:
    """The shipped launchd agent, running daemon, logging to ~/Library/Logs."""
    agent = plistlib.loads(example(AGENT_NAME).encode())
    log = str(home / "Library" / "Logs" / LOG_NAME)
    agent.update(ProgramArguments=list(daemon), StandardOutPath=log, StandardErrorPath=log)
    return plistlib.dumps(agent)


def _systemd(daemon: Sequence[str], home: Path, env: Mapping[str, str], status: str) -> ServiceFile:
    # systemd reads user units from $XDG_CONFIG_HOME/systemd/user; the spec ignores a relative one
    xdg = env.get("XDG_CONFIG_HOME", "")
    path = (Path(xdg) if os.path.isabs(xdg) else home / ".config") / "systemd" / "user" / UNIT_NAME
    steps = (
        "start it now, and at every boot:",
        "  systemctl --user daemon-reload",
        "  systemctl --user enable --now loadshed",
        '  loginctl enable-linger "$USER"     # at boot, before anyone logs in',
        "  (running already? `systemctl --user restart loadshed` takes the new file)",
        "watch it:",
        f"  {status}",
        "  journalctl --user -u loadshed -f",
    )
    return ServiceFile(path, systemd_unit(daemon).encode(), steps)


def _launchd(daemon: Sequence[str], home: Path, env: Mapping[str, str], status: str) -> ServiceFile:
    path = home / "Library" / "LaunchAgents" / AGENT_NAME
    steps = (
        "start it now, and at every login:",
        f"  launchctl load -w {shlex.quote(str(path))}",
        "  (running already? `launchctl unload` it first, then load it again)",
        "watch it:",
        f"  {status}",
        f"  tail -f {shlex.quote(str(home / 'Library' / 'Logs' / LOG_NAME))}",
    )
    return ServiceFile(path, launchd_plist(daemon, home), steps)


def _task_scheduler(
    daemon: Sequence[str], home: Path, env: Mapping[str, str], status: str
) -> ServiceFile:
    program, *arguments = daemon
    config = Path(daemon[daemon.index("--config") + 1])
    steps = (
        "Windows has no service file to write: make a task in Task Scheduler (taskschd.msc).",
        "  Action → Create Task…",
        '  General: "Run whether user is logged on or not"',
        '  Triggers → New: "At startup"',
        f"  Actions → New: Program/script: {program}",
        f"                 Add arguments: {subprocess.list2cmdline(arguments)}",
        f"                 Start in: {config.parent}",
        '  Settings: "If the task fails, restart every" 1 minute',
        f"then watch it: {status}",
    )
    return ServiceFile(None, b"", steps)


Plan = Callable[[Sequence[str], Path, Mapping[str, str], str], ServiceFile]
PLANS: Final[dict[str, Plan]] = {
    "linux": _systemd,
    "darwin": _launchd,
    "win32": _task_scheduler,
}


def _systemd_word(arg: str, *, program: bool = False) -> str:
    """arg as one word of a systemd command line: % doubled (a specifier otherwise), $ doubled
    in arguments (a variable otherwise; the program is not expanded), quoted when needed."""
    word = arg.replace("%", "%%") if program else arg.replace("%", "%%").replace("$", "$$")
    if word and not re.search(r"[\s\"'\\;]", word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _status(command: Sequence[str], config: Path) -> str:
    """`loadshed status` as the owner types it for this loadshed and config."""
    on_path = shutil.which("loadshed")
    is_on_path = len(command) == 1 and on_path is not None and os.path.samefile(on_path, command[0])
    status = ("loadshed" if is_on_path else shlex.join(command)) + " status"
    if config != user_config_dir() / CONFIG_NAME:
        status += f" --config {shlex.quote(str(config))}"
    return status
