"""Where config.py lives, and `loadshed init`, which writes a first one.

An installed loadshed (pipx, uv tool) has no clone to copy `config.example.py` and
`computers.txt` from: they ship inside the package (`loadshed/examples/`), and `init` writes
them, filled in from a few questions or from flags. The default config is `./config.py` when
there is one, else `config.py` in the platform's user config dir (~/.config/loadshed on Linux);
computers.txt lives beside it.

`init` looks for Kasa and Tuya plugs as `loadshed discover` does, when asked to (the question
on a terminal, or --discover / --target; never unasked from a script, which must not broadcast),
and writes what it found into KASA_HOSTS and TUYA_DEVICES. It never overwrites a file without
asking (without a terminal: unless --force), writes config.py 0600, and ends by running `check`.
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Final, TextIO

import platformdirs

from loadshed.errors import ConfigError, ExitCode

if TYPE_CHECKING:
    from loadshed.config import HostPort
    from loadshed.discover import ConfigLines, Findings

CONFIG_NAME: Final = "config.py"
COMPUTERS_NAME: Final = "computers.txt"
EXAMPLE_NAME: Final = "config.example.py"
PLACEHOLDER_PASSWORD: Final = "change-me"


def example(name: str) -> str:
    """The text of a file shipped in loadshed/examples/."""
    return resources.files("loadshed").joinpath("examples", name).read_text(encoding="utf-8")


def user_config_dir() -> Path:
    return Path(platformdirs.user_config_dir("loadshed", appauthor=False))


def default_config_path(cwd: Path | None = None) -> Path:
    """./config.py when it exists (a clone), else the user config dir's (an installed tool)."""
    here = (cwd or Path.cwd()) / CONFIG_NAME
    return here if here.exists() else user_config_dir() / CONFIG_NAME


def how_to_create(path: Path) -> str:
    """The fix for a missing config.py, for a clone and for an installed loadshed alike."""
    return (
        f"create it: `loadshed init --config {path}` asks a few questions and writes it "
        f"(or copy {EXAMPLE_NAME}, shipped in loadshed/examples/, to {path} and chmod 600 it)"
    )


# --- init -------------------------------------------------------------------------------------

Ask = Callable[[str], str]


def init(
    args: argparse.Namespace,
    env: Mapping[str, str],
    out: TextIO,
    ask: Ask = input,
    ask_secret: Ask = getpass.getpass,
) -> int:
    """Write config.py and computers.txt, with the plugs found if asked to look; then check.
    The password is asked without echo: not on the screen, not in a terminal's scrollback."""
    from loadshed.discover import config_lines, parse_targets

    config_path: Path = args.config
    computers_path: Path = args.computers or config_path.parent / COMPUTERS_NAME
    interactive = sys.stdin.isatty() and not args.yes
    targets = parse_targets(args.target)
    if targets and args.discover is False:
        raise ConfigError(None, None, "--target looks for plugs; --no-discover", "drop one")
    answers = {
        "PWIPNAME": args.powerwall,
        "PWPASS": args.password,
        "MAILNOTIF": args.mail_to,
    }
    questions = {
        "PWIPNAME": "The Powerwall gateway's address on your network (e.g. 192.0.2.50)",
        "PWPASS": "Its customer password (the one you set on the gateway)",
        "MAILNOTIF": "Where alerts go: an email or SMS-by-email address (empty: none)",
    }
    for name, value in answers.items():
        if value is None and interactive:
            asking = ask_secret if name == "PWPASS" else ask
            answers[name] = asking(f"{questions[name]}: ").strip()
    if not answers["PWIPNAME"]:
        raise ConfigError(None, None, "init needs the Powerwall's address", "pass --powerwall")
    config_path.parent.mkdir(parents=True, exist_ok=True)
    wrote = []
    if may_write(config_path, args.force, interactive, ask, out):
        findings = _look(args.discover, targets, interactive, env, ask, out)
        # Keys written: config.py is 0600, and it is where local keys live.
        found = config_lines(findings, None, show_keys=True) if findings is not None else None
        _write_private(config_path, config_text(answers, found))
        wrote.append(str(config_path))
        if findings is not None and found is not None:
            _say_found(findings, found, config_path, out)
    elif args.discover or targets:
        print("no plugs looked for: config.py stays as it is (`loadshed discover` looks)", file=out)
    if may_write(computers_path, args.force, interactive, ask, out):
        computers_path.write_text(example(COMPUTERS_NAME), encoding="utf-8")
        wrote.append(str(computers_path))
    print(f"wrote {', '.join(wrote)}" if wrote else "nothing written", file=out)
    print("edit them to describe your house (every setting is explained in the file),", file=out)
    print("then run `loadshed check` again. Checking what is there now:\n", file=out)
    from loadshed.cli import main  # the check, exactly as `loadshed check` runs it

    argv = ["check", "--config", str(config_path), "--computers", str(computers_path)]
    code = main(argv, env, stdout=out)
    return ExitCode.OK if code in (ExitCode.OK, ExitCode.FAILURE) else code


def config_text(answers: Mapping[str, str | None], found: ConfigLines | None = None) -> str:
    """The shipped example with the answers, and the plugs found instead of its examples."""
    return _filled(example(EXAMPLE_NAME), answers, found)


def _look(
    discover: bool | None,
    targets: Sequence[HostPort],
    interactive: bool,
    env: Mapping[str, str],
    ask: Ask,
    out: TextIO,
) -> Findings | None:
    """Look for plugs as `loadshed discover` does, if asked to; None when not."""
    from loadshed.discover import LOOK_S, look

    if targets:
        wanted = True
    elif discover is not None:
        wanted = discover
    elif interactive:
        question = f"Look for Kasa and Tuya plugs on your network now (about {LOOK_S} s)? [Y/n] "
        wanted = ask(question).strip().lower() in ("", "y", "yes")
    else:
        wanted = False  # a script must not broadcast on the LAN unasked
    if not wanted:
        print("no plugs looked for (--discover looks; `loadshed discover` lists them)", file=out)
        return None
    return look(None, targets, env, out)


def _say_found(findings: Findings, found: ConfigLines, path: Path, out: TextIO) -> None:
    """One line on what was found and written, or where it looked; and the targets missed."""
    tuya = found.tuya_new + found.tuya_commented
    if found.kasa_new or tuya:
        left = (
            f"; {found.tuya_commented} commented out: it says why" if found.tuya_commented else ""
        )
        print(f"found {found.kasa_new} Kasa, {tuya} Tuya (written to {path}{left})", file=out)
    else:
        looked = [findings.looked[k] for k in ("kasa", "lan") if k in findings.looked]
        print(f"found nothing on the network (looked at {'; '.join(looked)})", file=out)
    for address, reason in findings.kasa_missed:
        print(f"  not found at {address}: {reason}", file=out)


def may_write(path: Path, force: bool, interactive: bool, ask: Ask, out: TextIO) -> bool:
    """Whether to write path: it is not there, --force, or the owner says so on a terminal."""
    if not path.exists() or force:
        return True
    if interactive:
        return ask(f"{path} exists. Replace it? [y/N] ").strip().lower() in ("y", "yes")
    print(f"{path} exists: left as it is (--force replaces it)", file=out)
    return False


# The example's devices are illustrations at documentation addresses: a new config starts with
# none, or with what `init` found.
_EXAMPLE_SETTINGS: Final = {
    "KASA_HOSTS": (re.compile(r"^KASA_HOSTS = \[[^\]\n]*\]", re.MULTILINE), "KASA_HOSTS = []"),
    "TUYA_DEVICES": (
        re.compile(r"^TUYA_DEVICES = \[.*?^\]", re.MULTILINE | re.DOTALL),
        "TUYA_DEVICES = []",
    ),
    "SHED_BELOW": (re.compile(r"^SHED_BELOW = \{[^}\n]*\}", re.MULTILINE), "SHED_BELOW = {}"),
    "SMTP_HOST": (re.compile(r'^SMTP_HOST = "[^"\n]*"', re.MULTILINE), 'SMTP_HOST = ""'),
}


def _filled(text: str, answers: Mapping[str, str | None], found: ConfigLines | None) -> str:
    """The example with the plugs found (or none) in place of its devices, and the answered
    settings' values (comments kept)."""
    lines = {"KASA_HOSTS": found.kasa_hosts, "TUYA_DEVICES": found.tuya_devices} if found else {}
    for name, (pattern, empty) in _EXAMPLE_SETTINGS.items():
        written = "\n".join(lines.get(name, ())) or empty
        text = pattern.sub(_replacer(written, keep=False), text, count=1)
    for name, value in answers.items():
        if value is None:
            continue
        pattern = re.compile(rf'^({name} = )"[^"\n]*"', re.MULTILINE)
        text = pattern.sub(_replacer(_quoted(value)), text, count=1)
    return text


def _replacer(written: str, *, keep: bool = True) -> Callable[[re.Match[str]], str]:
    """A replacement taken as it is (no backslash escapes), after group 1 when keep."""

    def replace(match: re.Match[str]) -> str:
        return (match.group(1) if keep else "") + written

    return replace


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _write_private(path: Path, text: str) -> None:
    """Write text to path readable by its owner only, from the first byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    path.chmod(0o600)
