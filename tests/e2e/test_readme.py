"""Docs that cannot rot: every shell command in the README's ```sh blocks is run here, as the
owner would type it, against the simulated house on 127.0.0.1 — or is listed in NOT_RUN with
the reason (real hardware, a systemd session, the LAN). Every `loadshed …` written inline in the
text is parsed by loadshed's own argument parser.

Each command is taken from the README by its exact text (`readme(...)` fails when the README no
longer says it), then adapted only where a test must: the README's example addresses become the
simulated devices' (192.0.2.20 → a simulated plug, loadshed-pc:8470 → the page on 127.0.0.1),
/tmp/ becomes the test's directory, `.venv/bin/` the test's own venv, and `discover` is aimed at
the simulated plugs with `--target` (a test never broadcasts). Interactive commands run in a
real terminal (tmux).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadshed import cli
from loadshed.errors import ConfigError
from loadshed.sim.house import SimHouse
from loadshed.sim.tuyacloud import TuyaCloudSim, for_house
from tests.conftest import LoopThread
from tests.e2e.conftest import SHEDDABLE, Loadshed, wait_until
from tests.e2e.test_ui import Pane, quit_cleanly
from tests.e2e.test_web import TOKEN, with_page
from tests.test_notify import Receiver

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
RUN_S = 60.0  # the longest one command may take

needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def sh_commands(text: str) -> list[str]:
    """The commands of the ```sh blocks: continuation lines joined, trailing comments cut."""
    commands = []
    for block in re.findall(r"^ *```sh\n(.*?)^ *```", text, re.MULTILINE | re.DOTALL):
        for line in re.sub(r"\\\n\s*", "", block).splitlines():
            command = re.sub(r"\s{2,}#.*$", "", line).strip()
            if command:
                commands.append(command)
    return commands


COMMANDS = sh_commands(README)
RUN: set[str] = set()


def readme(command: str) -> str:
    """A command exactly as the README's sh blocks say it; this file runs it."""
    RUN.add(command)
    return command


NOT_RUN = {
    "bash scripts/test": "the test run itself (CI runs it from a fresh clone)",
    "bash scripts/demo": "scripts/setup, which every test run sources, then `loadshed demo`, "
    "which tests/e2e/test_demo.py (plain) and test_ui.py (its screen in tmux) run",
    "pipx install .": "scripts/test-wheel, run by scripts/test, installs with the real pipx",
    "uv tool install .": "scripts/test-wheel, run by scripts/test, installs with the real uv",
    "ssh-copy-id admin@nas": "needs a real computer and its password",
    "ssh admin@nas true": "needs a real computer (the simulated ones are reached through an "
    "ssh_config the tests write; OpenSSH reads ~/.ssh/config from the password file's home)",
    "systemctl --user daemon-reload": "needs a systemd user session, which a CI container has "
    "not; the unit `loadshed init --service` writes is verified with systemd-analyze here",
    "systemctl --user enable --now loadshed": "needs a systemd user session (as above)",
    'loginctl enable-linger "$USER"': "needs systemd-logind (as above)",
    "journalctl --user -u loadshed -f": "needs the journal of a systemd user session",
}


# --- the README's commands, one by one ---------------------------------------------------------

SIM = readme(".venv/bin/python -m loadshed.sim --write-config /tmp/sim-config.py")
SIM_CHECK = readme(".venv/bin/loadshed check --config /tmp/sim-config.py")
SIM_RUN = readme(
    ".venv/bin/loadshed run --no-ui --config /tmp/sim-config.py --state-dir /tmp/sim-state"
)
VERSION = readme("loadshed --version")
INIT = readme("loadshed init")
DISCOVER = readme("loadshed discover")
DISCOVER_TARGET = readme("loadshed discover --target 192.0.2.20")
DISCOVER_KEYS = readme("loadshed discover --show-keys")
NOTIFY_TEST = readme("loadshed notify-test")
CHECK = readme("loadshed check")
TRUST = readme("loadshed check --trust-powerwall")
DRY_RUN = readme("loadshed run --dry-run")
SHED = readme("loadshed shed")
RESTORE = readme("loadshed restore")
SSH_DIR = readme("mkdir -p -m 700 ~/.ssh")
KEYGEN = readme('ssh-keygen -t ed25519 -N "" -f ~/.ssh/id_ed25519')
RUN_SCREEN = readme("loadshed run")
RUN_PLAIN = readme("loadshed run --no-ui")
STATUS = readme("loadshed status")
ATTACH = readme("loadshed attach")
PIN = readme("loadshed pin TV on")
SERVICE = readme("loadshed init --service")
CURL_STATUS = readme("curl http://loadshed-pc:8470/api/status")
CURL_SHED = readme(
    'curl -X POST -H "Authorization: Bearer $TOKEN" http://loadshed-pc:8470/api/shed'
)
CURL_PIN = readme(
    'curl -X POST -H "Authorization: Bearer $TOKEN" -d \'{"device": "TV", "pin": "on"}\' '
    "http://loadshed-pc:8470/api/pin"
)


def test_every_command_in_the_readme_is_run_here_or_says_why_not() -> None:
    in_readme = set(COMMANDS)
    assert not RUN - in_readme, f"run here, no longer in the README: {sorted(RUN - in_readme)}"
    stale = set(NOT_RUN) - in_readme
    assert not stale, f"NOT_RUN lists commands the README no longer has: {sorted(stale)}"
    untested = in_readme - RUN - set(NOT_RUN)
    assert not untested, f"README commands nothing runs (run here, or NOT_RUN): {sorted(untested)}"


def test_every_loadshed_command_written_in_the_text_parses() -> None:
    """`loadshed …` in backticks anywhere in the README: a verb and flags loadshed knows."""
    inline = re.findall(r"`(loadshed(?: [^`]*)?)`", README)
    written = {c for c in inline if "…" not in c.split()[0]} | {
        c for c in COMMANDS if c.startswith("loadshed")
    }
    assert len(written) >= 15, written  # the regex still finds them
    parser = cli._parser()
    for command in sorted(written - {"loadshed"}):  # bare, it introduces itself
        try:
            parser.parse_args(shlex.split(command)[1:])
        except ConfigError as err:
            raise AssertionError(f"the README's `{command}` does not parse: {err}") from None
        except SystemExit as exited:  # --version, --help
            assert exited.code == 0, command


# --- how they run ----------------------------------------------------------------------------


class Home:
    """A homeowner's account in a directory: HOME, the XDG dirs, loadshed on PATH."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.cwd = root / "work"
        for path in (self.home, self.cwd, root / "run"):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LOADSHED_")} | {
            "HOME": str(self.home),
            "XDG_CONFIG_HOME": str(self.home / ".config"),
            "XDG_STATE_HOME": str(self.home / ".local" / "state"),
            "XDG_RUNTIME_DIR": str(root / "run"),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "LOADSHED_TUYA_LISTEN": "off",  # discover hears plugs on loopback only
        }
        self.config = self.home / ".config" / "loadshed" / "config.py"
        self.aim: dict[str, str] = {}  # whole commands, adapted
        self.subst: dict[str, str] = {}  # then the README's example addresses and paths

    def adapt(self, command: str) -> str:
        command = self.aim.get(command, command)
        for old, new in self.subst.items():
            command = command.replace(old, new)
        if command.startswith("loadshed discover"):
            assert "--target" in command, "a test never broadcasts: aim discover at loopback"
        return command

    def run(self, command: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run it in bash, as typed, to its end."""
        return subprocess.run(
            ["bash", "-c", self.adapt(command)],
            cwd=cwd or self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=RUN_S,
            check=False,
        )

    def start(self, command: str) -> Loadshed:
        """Start it in the background, its output collected line by line."""
        return Loadshed([], self.cwd, self.env, argv=["bash", "-c", f"exec {self.adapt(command)}"])

    def pane(self, command: str, monkeypatch: pytest.MonkeyPatch) -> Pane:
        """Run it in a real terminal (tmux), with this account's environment."""
        for name, value in self.env.items():
            monkeypatch.setenv(name, value)
        return Pane(["bash", "-c", self.adapt(command)], self.cwd)


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit {done.returncode}:\n{done.stdout}{done.stderr}"
    return done.stdout


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path)


@pytest.fixture
def house() -> Iterator[SimHouse]:
    with SimHouse() as simulated:
        yield simulated


# --- Try it without hardware -----------------------------------------------------------------


def test_a_simulated_house_kept_running_checked_and_watched(home: Home) -> None:
    home.subst = {"/tmp/": f"{home.root}/", ".venv/bin/": f"{Path(sys.executable).parent}/"}
    sim = home.start(SIM)
    try:
        written = home.root / "sim-config.py"
        wait_until("the simulated house's config", written.exists)
        checked = home.run(SIM_CHECK, cwd=ROOT)
        assert "Powerwall" in ok(checked) and " NO " not in checked.stdout, checked.stdout
        daemon = home.start(SIM_RUN)
        daemon.wait_for_line("ready:")
        assert sim.process.stdin is not None
        sim.process.stdin.write("g\n")  # "g + Enter cuts the grid"
        sim.process.stdin.flush()
        daemon.wait_for_line("grid lost")
        daemon.wait_for_line("shed finished")
        assert daemon.stop() == 0
        assert (home.root / "sim-state" / "state.json").exists()
    finally:
        sim.stop(signal.SIGTERM)


# --- Install and set up ----------------------------------------------------------------------


@needs_tmux
def test_set_up_a_house_step_by_step(
    home: Home,
    house: SimHouse,
    sim_loop: LoopThread,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert re.fullmatch(r"loadshed \S+\n", ok(home.run(VERSION)))

    # 1. init, in a terminal, answering its questions
    init = home.pane(INIT, monkeypatch)
    answers = {
        "address": house.powerwall.address,
        "password": house.password,
        "alerts go": "",
        "Look for": "n",
    }
    asked: list[str] = []

    def new_question(screen: str) -> bool:
        last = _last_line(screen)
        fresh = [q for q in answers if q in last and q not in asked]
        return "EXITED" in screen or (bool(fresh) and last.rstrip().endswith((":", "]")))

    while "EXITED" not in (screen := init.wait("a question", new_question)):
        question = next(q for q in answers if q in _last_line(screen) and q not in asked)
        asked.append(question)
        init.type(answers[question])
    assert "EXITED 0" in screen, screen
    assert {"address", "password", "alerts go"} <= set(asked)
    assert house.password not in init.history()  # typed without echo
    assert home.config.stat().st_mode & 0o777 == 0o600
    assert house.powerwall.address in home.config.read_text()

    # 2. the plugs: discover, aimed at the simulated ones; the Tuya cloud's keys
    cloud = for_house(house)
    sim_loop.run(cloud.start())
    try:
        _set_up_discover(home, house, cloud)
        found = ok(home.run(DISCOVER_TARGET))
        assert house.kasa[0].address in found and "KASA_HOSTS" in found, found
        everything = ok(home.run(DISCOVER))
        assert all(k.address in everything for k in house.kasa), everything
        assert house.tuya[0].key not in everything  # keys only with --show-keys
        keys = ok(home.run(DISCOVER_KEYS))
        assert all(t.key in keys for t in house.tuya), keys
    finally:
        sim_loop.run(cloud.stop())

    # 3-5. the owner pastes the devices and says where alerts go (here: the whole house)
    house.write_config(home.config)
    with home.config.open("a") as f:
        f.write(f"NOTIFY_URLS = [{receiver.url!r}]\n")
    home.config.chmod(0o600)
    tested = ok(home.run(NOTIFY_TEST))
    assert receiver.posts, tested

    # 6. check: every row yes
    checked = ok(home.run(CHECK))
    assert all(name in checked for name in ("Powerwall", *SHEDDABLE)), checked
    assert " NO " not in checked, checked
    ok(home.run(TRUST))

    # 7. a dry run on its screen, then a real shed and restore
    dry = home.pane(DRY_RUN, monkeypatch)
    dry.wait_text("loadshed")
    quit_cleanly(dry)
    assert all(house.is_on(n) for n in SHEDDABLE)
    ok(home.run(SHED))
    assert not any(house.is_on(n) for n in SHEDDABLE)
    ok(home.run(RESTORE))
    assert all(house.is_on(n) for n in SHEDDABLE)

    # computers: the key loadshed logs in with, made without a question, on a new account
    ok(home.run(SSH_DIR))
    ok(home.run(KEYGEN))
    assert (home.home / ".ssh" / "id_ed25519.pub").read_text().startswith("ssh-ed25519 ")


def _last_line(screen: str) -> str:
    lines = [line for line in screen.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _set_up_discover(home: Home, house: SimHouse, cloud: TuyaCloudSim) -> None:
    """The README's discover is aimed at the simulated plugs, and the cloud is the stand-in."""
    targets = " ".join(f"--target {k.address}" for k in house.kasa)
    home.aim = {c: f"{c} {targets}" for c in (DISCOVER, DISCOVER_KEYS)}
    home.subst = {"192.0.2.20": house.kasa[0].address}
    home.env |= {
        "LOADSHED_TUYA_CLOUD_HOST": cloud.urlhost,
        "REQUESTS_CA_BUNDLE": str(cloud.ca_file),
        "NO_PROXY": "127.0.0.1",
    }
    with home.config.open("a") as f:
        f.write(
            f"TUYAAPIKEY = {cloud.api_key!r}\nTUYAAPISECRET = {cloud.api_secret!r}\n"
            f"TUYAAPIDEVICEID = {house.tuya[0].dev_id!r}\n"
        )


# --- Running it, its page, running for good ----------------------------------------------------


@needs_tmux
def test_run_look_attach_pin_and_the_page(
    home: Home, house: SimHouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    home.config.parent.mkdir(parents=True)
    house.write_config(home.config)
    home.config.chmod(0o600)
    page = with_page(home.config)
    home.subst = {"http://loadshed-pc:8470/": page}
    home.env["TOKEN"] = TOKEN

    screen = home.pane(RUN_SCREEN, monkeypatch)
    screen.wait_text("on grid")
    quit_cleanly(screen)

    daemon = home.start(RUN_PLAIN)
    try:
        daemon.wait_for_line("ready:")
        status = ok(home.run(STATUS))
        assert "on grid" in status and all(name in status for name in SHEDDABLE), status
        attached = home.pane(ATTACH, monkeypatch)
        attached.wait_text("on grid")
        attached.keys("q")
        attached.wait_text("Leave this screen? loadshed keeps running")
        attached.keys("y")
        assert "EXITED 0" in attached.wait_text("EXITED")
        assert daemon.process.poll() is None

        ok(home.run(PIN))
        daemon.wait_for_line("TV: keep on")
        snapshot = json.loads(ok(home.run(CURL_STATUS)))
        assert "TV" in json.dumps(snapshot), snapshot
        shed = json.loads(ok(home.run(CURL_SHED)))  # curl exits 0 on a 401 too: read it
        assert shed["ok"] is True, shed
        sheddable = [n for n in SHEDDABLE if n != "TV"]
        wait_until("the page's shed", lambda: not any(house.is_on(n) for n in sheddable))
        assert house.is_on("TV")  # pinned on
        pinned = json.loads(ok(home.run(CURL_PIN)))
        assert pinned["ok"] is True, pinned
    finally:
        assert daemon.stop() == 0
    assert TOKEN not in daemon.output


def test_the_service_is_written_where_systemd_looks_and_systemd_accepts_it(home: Home) -> None:
    home.config.parent.mkdir(parents=True)
    home.config.write_text('PWIPNAME = "192.0.2.50"\nPWPASS = "x"\n')
    home.config.chmod(0o600)
    said = ok(home.run(SERVICE))
    assert "systemctl --user enable --now loadshed" in said, said
    unit = home.home / ".config" / "systemd" / "user" / "loadshed.service"
    assert f"--config {home.config}" in unit.read_text()
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd is not installed: the unit was written, not verified")
    verified = home.run(f"systemd-analyze --user verify {unit}")
    assert verified.returncode == 0, verified.stdout + verified.stderr
