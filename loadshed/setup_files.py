"""Where config.py lives, and `loadshed init`, which writes a first one.

An installed loadshed (pipx, uv tool) has no clone to copy `config.example.py` and
`computers.txt` from: they ship inside the package (`loadshed/examples/`), and `init` writes
them, filled in from a few questions or from flags. The default config is `./config.py` when
there is one, else `config.py` in the platform's user config dir (~/.config/loadshed on Linux);
computers.txt lives beside it.

`init` never overwrites a file without asking (without a terminal: unless --force), writes
config.py 0600, and ends by running `check`.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Final, TextIO

import platformdirs

from loadshed.errors import ConfigError, ExitCode

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


def init(args: argparse.Namespace, env: Mapping[str, str], out: TextIO, ask: Ask = input) -> int:
    """Write config.py and computers.txt; then check them."""
    config_path: Path = args.config
    computers_path: Path = args.computers or config_path.parent / COMPUTERS_NAME
    interactive = sys.stdin.isatty() and not args.yes
    answers = {
        "PWIPNAME": args.powerwall,
        "PWPASS": args.password,
        "MAILNOTIF": args.mail_to,
    }
    questions = {
        "PWIPNAME": "The Powerwall gateway's address on your network (e.g. 192.168.1.50)",
        "PWPASS": "Its customer password (the one you set on the gateway)",
        "MAILNOTIF": "Where alerts go: an email or SMS-by-email address (empty: none)",
    }
    for name, value in answers.items():
        if value is None and interactive:
            answers[name] = ask(f"{questions[name]}: ").strip()
    if not answers["PWIPNAME"]:
        raise ConfigError(None, None, "init needs the Powerwall's address", "pass --powerwall")
    config_path.parent.mkdir(parents=True, exist_ok=True)
    wrote = []
    if _may_write(config_path, args.force, interactive, ask, out):
        _write_private(config_path, _filled(example(EXAMPLE_NAME), answers))
        wrote.append(str(config_path))
    if _may_write(computers_path, args.force, interactive, ask, out):
        computers_path.write_text(example(COMPUTERS_NAME), encoding="utf-8")
        wrote.append(str(computers_path))
    print(f"wrote {', '.join(wrote)}" if wrote else "nothing written", file=out)
    print("edit them to describe your house (every setting is explained in the file),", file=out)
    print("then run `loadshed check` again. Checking what is there now:\n", file=out)
    from loadshed.cli import main  # the check, exactly as `loadshed check` runs it

    argv = ["check", "--config", str(config_path), "--computers", str(computers_path)]
    code = main(argv, env, stdout=out)
    return ExitCode.OK if code in (ExitCode.OK, ExitCode.FAILURE) else code


def _may_write(path: Path, force: bool, interactive: bool, ask: Ask, out: TextIO) -> bool:
    if not path.exists() or force:
        return True
    if interactive:
        return ask(f"{path} exists. Replace it? [y/N] ").strip().lower() in ("y", "yes")
    print(f"{path} exists: left as it is (--force replaces it)", file=out)
    return False


# The example's devices are illustrations at documentation addresses: a new config starts with
# none, and `loadshed discover` prints the lines to paste.
_EXAMPLE_DEVICES: Final = (
    (re.compile(r"^KASA_HOSTS = \[[^\]\n]*\]", re.MULTILINE), "KASA_HOSTS = []"),
    (re.compile(r"^TUYA_DEVICES = \[.*?^\]", re.MULTILINE | re.DOTALL), "TUYA_DEVICES = []"),
    (re.compile(r"^SHED_BELOW = \{[^}\n]*\}", re.MULTILINE), "SHED_BELOW = {}"),
    (re.compile(r'^SMTP_HOST = "[^"\n]*"', re.MULTILINE), 'SMTP_HOST = ""'),
)


def _filled(text: str, answers: Mapping[str, str | None]) -> str:
    """The example with no example devices, and the answered settings' values (comments
    kept)."""
    for pattern, empty in _EXAMPLE_DEVICES:
        text = pattern.sub(empty, text, count=1)
    for name, value in answers.items():
        if value is None:
            continue
        pattern = re.compile(rf'^({name} = )"[^"\n]*"', re.MULTILINE)
        text = pattern.sub(_replacer(_quoted(value)), text, count=1)
    return text


def _replacer(quoted: str) -> Callable[[re.Match[str]], str]:
    def replace(match: re.Match[str]) -> str:
        return match.group(1) + quoted

    return replace


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _write_private(path: Path, text: str) -> None:
    """Write text to path readable by its owner only, from the first byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    path.chmod(0o600)
