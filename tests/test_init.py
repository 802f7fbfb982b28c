"""`loadshed init`: a first config.py and computers.txt from flags (no terminal), with the plugs
it finds when told to look, never overwriting unasked, then `check` — against the simulated house
on 127.0.0.1. And `loadshed init --service`: the service file, however loadshed was installed."""

from __future__ import annotations

import io
import os
import plistlib
import shlex
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

from loadshed import cli
from loadshed.config import TuyaDevice, load_config
from loadshed.discover import Findings, Heard, config_lines
from loadshed.service import install, loadshed_command, systemd_unit
from loadshed.setup_files import config_text
from loadshed.sim.house import SimHouse
from loadshed.tuyacloud import CloudDevice
from tests.test_check import Result, run_loadshed


def test_init_writes_a_private_config_that_loads_then_checks_it(tmp_path: Path) -> None:
    with SimHouse() as house:
        config = tmp_path / "conf" / "config.py"
        result = run_loadshed(
            "init",
            "--config",
            str(config),
            "--powerwall",
            house.powerwall.address,
            "--password",
            house.password,
            "--mail-to",
            "owner@example.com",
            "--yes",
            cwd=tmp_path,
        )
    assert result.code == 0, result.out + result.err
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    loaded = load_config(config, {})
    assert str(loaded.powerwall) == house.powerwall.address
    assert loaded.powerwall_password == house.password
    assert loaded.mail_to == "owner@example.com"
    assert loaded.kasa_hosts == () and loaded.tuya_devices == ()  # no example devices
    assert (tmp_path / "conf" / "computers.txt").read_text().startswith("#")
    assert "Powerwall" in result.out and "on grid" in result.out  # check ran, and reached it
    assert house.password not in result.out + result.err


def test_init_never_overwrites_unasked(tmp_path: Path) -> None:
    config = tmp_path / "config.py"
    config.write_text("# mine\n")
    result = run_loadshed(
        "init", "--config", str(config), "--powerwall", "127.0.0.1:9", "--yes", cwd=tmp_path
    )
    assert f"{config} exists: left as it is (--force replaces it)" in result.out
    assert config.read_text() == "# mine\n"


def test_init_without_an_address_and_no_terminal_says_which_flag(tmp_path: Path) -> None:
    result = run_loadshed("init", "--config", str(tmp_path / "config.py"), "--yes", cwd=tmp_path)
    assert result.code == 2
    assert "init needs the Powerwall's address" in result.err and "--powerwall" in result.err
    assert not (tmp_path / "config.py").exists()


# --- the plugs init finds ------------------------------------------------------------------------
# In this process, so conftest's guard holds: Kasa is asked only at the house's loopback plugs
# (--target, never a broadcast), and the Tuya listen is off (it binds every interface).

NO_LAN: Final = {"LOADSHED_TUYA_LISTEN": "off"}


class _Terminal(io.StringIO):
    """Typed answers, on what init takes for a terminal."""

    def isatty(self) -> bool:
        return True


def init(*args: str) -> Result:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["init", *args], env=NO_LAN, stdout=out, stderr=err)
    return Result(code, out.getvalue(), err.getvalue())


def powerwall(house: SimHouse) -> list[str]:
    return ["--powerwall", house.powerwall.address, "--password", house.password]


def test_init_writes_the_kasa_plugs_it_finds_and_check_reaches_them(tmp_path: Path) -> None:
    config = tmp_path / "config.py"
    with SimHouse() as house:
        targets = [arg for sim in house.kasa for arg in ("--target", sim.address)]
        result = init("--config", str(config), *powerwall(house), *targets, "--yes")
        legacy, klap = house.kasa[:3], house.kasa[3]
    assert result.code == 0, result.out + result.err
    assert f"found 3 Kasa, 0 Tuya (written to {config})" in result.out
    missed = next(line for line in result.out.splitlines() if "not found at" in line)
    assert klap.address in missed and "KASA_USERNAME" in missed  # the KLAP TV: no account given
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    loaded = load_config(config, {})
    assert [str(host) for host in loaded.kasa_hosts] == [sim.address for sim in legacy]
    assert loaded.tuya_devices == () and loaded.shed_below == {}
    for name in ("Router", "Freezer", "Monitor", "Printer", "Desk lamp"):  # the check init ran
        assert "  yes  " in result.row(name)
    with pytest.raises(AssertionError, match="no row 'TV'"):
        result.row("TV")
    assert house.password not in result.out + result.err


def test_init_under_yes_looks_for_nothing_unless_told(tmp_path: Path) -> None:
    config = tmp_path / "config.py"
    with SimHouse() as house:
        result = init("--config", str(config), *powerwall(house), "--yes")
    assert result.code == 0, result.out + result.err
    assert "no plugs looked for (--discover looks; `loadshed discover` lists them)" in result.out
    assert "looking for" not in result.out
    loaded = load_config(config, {})
    assert loaded.kasa_hosts == () and loaded.tuya_devices == ()


@pytest.mark.filterwarnings(
    "ignore::getpass.GetPassWarning"
)  # a stand-in terminal: no echo to hide
def test_init_asks_before_looking_on_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.py"
    with SimHouse() as house:
        typed = f"{house.powerwall.address}\n{house.password}\nowner@example.com\nn\n"
        monkeypatch.setattr(sys, "stdin", _Terminal(typed))
        result = init("--config", str(config))
    assert result.code == 0, result.out + result.err
    asked = capsys.readouterr().out
    assert "Look for Kasa and Tuya plugs on your network now (about 10 s)? [Y/n]" in asked
    assert "no plugs looked for" in result.out and "looking for" not in result.out
    assert load_config(config, {}).mail_to == "owner@example.com"


def test_init_never_overwrites_unasked_even_to_write_plugs(tmp_path: Path) -> None:
    config = tmp_path / "config.py"
    config.write_text("# mine\n")
    with SimHouse() as house:
        result = init("--config", str(config), *powerwall(house), "--yes", "--discover")
    assert f"{config} exists: left as it is (--force replaces it)" in result.out
    assert "no plugs looked for: config.py stays as it is" in result.out
    assert "looking for" not in result.out
    assert config.read_text() == "# mine\n"


def test_init_refuses_target_with_no_discover(tmp_path: Path) -> None:
    config = tmp_path / "config.py"
    both = ("--no-discover", "--target", "127.0.0.1:1")
    result = init("--config", str(config), "--powerwall", "192.0.2.50", "--yes", *both)
    assert result.code == 2 and "--no-discover" in result.err
    assert not config.exists()


def test_nothing_found_is_said_with_where_it_looked(tmp_path: Path) -> None:
    config = tmp_path / "config.py"
    with SimHouse() as house:
        result = init(
            "--config", str(config), *powerwall(house), "--yes", "--target", "127.0.0.1:1"
        )
    assert result.code == 0, result.out + result.err
    said = next(line for line in result.out.splitlines() if line.startswith("found nothing"))
    assert said == (
        "found nothing on the network (looked at Kasa: asked 127.0.0.1:1 (--target): 0 answered; "
        "Tuya on the LAN: not listened (LOADSHED_TUYA_LISTEN=off))"
    )
    assert load_config(config, {}).kasa_hosts == ()


def test_tuya_plugs_are_written_with_their_key_or_commented_out_with_how_to_get_it(
    tmp_path: Path,
) -> None:
    fan, lamp, unheard = "bf" + "7" * 18, "bf" + "8" * 18, "bf" + "9" * 18
    heard = {fan: Heard(fan, "192.0.2.77", 3.4), lamp: Heard(lamp, "192.0.2.88", 3.3)}
    answers = {"PWIPNAME": "192.0.2.50", "PWPASS": "s3cret-pw", "MAILNOTIF": ""}
    from_cloud = Findings(
        heard=heard,
        cloud=[
            CloudDevice(fan, "Garage fan", "f" * 16, category="cz"),
            CloudDevice(unheard, "Attic fan", "a" * 16, category="cz"),
        ],
    )
    written = config_lines(from_cloud, None, show_keys=True)
    text = config_text(answers, written)
    assert (written.tuya_new, written.tuya_commented) == (1, 2)
    assert '# {"name": "Tuya 888888"' in text and '# {"name": "Attic fan"' in text
    assert {(d.name, d.id, d.key, d.version) for d in loads(tmp_path / "cloud.py", text)} == {
        ("Garage fan", fan, "f" * 16, 3.4)
    }
    lan_only = config_text(answers, config_lines(Findings(heard=heard), None, show_keys=True))
    assert "`loadshed discover --show-keys` prints their lines with the keys" in lan_only
    assert "TUYAAPIKEY" in lan_only.split("TUYA_DEVICES = [")[0].rsplit("\n\n", 1)[1]
    assert loads(tmp_path / "lan.py", lan_only) == ()  # both commented out: the file still loads


def loads(path: Path, text: str) -> tuple[TuyaDevice, ...]:
    path.write_text(text)
    path.chmod(0o600)
    return load_config(path, {}).tuya_devices


# --- init --service ------------------------------------------------------------------------------

ANSWERS: Final = {"PWIPNAME": "192.0.2.50", "PWPASS": "s3cret-pw", "MAILNOTIF": ""}
SERVICE_TIMEOUT_S: Final = 60  # writing one file; never this long
NEXT_STEPS: Final = (
    "  systemctl --user daemon-reload",
    "  systemctl --user enable --now loadshed",
    '  loginctl enable-linger "$USER"',
    "  journalctl --user -u loadshed -f",
)


@dataclass(frozen=True)
class Owner:
    """A home with a config.py where `loadshed check` finds it by default, and no terminal."""

    tmp: Path
    home: Path
    config: Path
    unit: Path  # where systemd looks for the owner's units
    env: dict[str, str]

    def init_service(self, *args: str) -> Result:
        # no ./config.py in tmp: the user config dir's is the default
        return run_loadshed("init", "--service", *args, cwd=self.tmp, env=self.env)


@pytest.fixture
def owner(tmp_path: Path) -> Owner:
    home, xdg = tmp_path / "my home", tmp_path / "xdg config"  # spaces: ExecStart must quote them
    config = xdg / "loadshed" / "config.py"
    config.parent.mkdir(parents=True)
    loads(config, config_text(ANSWERS))
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LOADSHED_")}
    env = {**environment, "HOME": str(home), "XDG_CONFIG_HOME": str(xdg)}
    unit = xdg / "systemd" / "user" / "loadshed.service"
    return Owner(tmp_path, home, config, unit, env)


def exec_start(unit: Path) -> list[str]:
    """The unit's command line as systemd splits it (its quoting, %% and $$ undone)."""
    line = next(x for x in unit.read_text().splitlines() if x.startswith("ExecStart="))
    program, *args = shlex.split(line.removeprefix("ExecStart=").replace("%%", "%"))
    return [program, *(arg.replace("$$", "$") for arg in args)]


def verify(unit: Path, tmp_path: Path) -> None:
    """systemd's own check of a user unit, its ExecStart program included."""
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700, exist_ok=True)
    done = subprocess.run(
        ["systemd-analyze", "--user", "verify", str(unit)],
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
        capture_output=True,
        text=True,
        timeout=SERVICE_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


NO_SYSTEMD = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def test_init_service_writes_a_unit_where_systemd_looks_that_runs_this_loadshed(
    owner: Owner,
) -> None:
    result = owner.init_service()
    assert result.code == 0, result.out + result.err
    program, *args = exec_start(owner.unit)
    assert os.path.isabs(program) and os.access(program, os.X_OK)
    assert args[-4:] == ["run", "--no-ui", "--config", str(owner.config)]
    started = subprocess.run(  # the command itself, from the home a user unit starts in
        [program, *args[:-4], "--version"],
        cwd=owner.home.parent,
        capture_output=True,
        text=True,
        timeout=SERVICE_TIMEOUT_S,
        check=False,
    )
    assert started.stdout.startswith("loadshed "), started.stdout + started.stderr
    settings = dict(x.split("=", 1) for x in owner.unit.read_text().splitlines() if "=" in x)
    assert settings["Type"] == "notify" and int(settings["WatchdogSec"]) > 0
    assert f"wrote {owner.unit}, which runs" in result.out
    for step in NEXT_STEPS:
        assert step in result.out


@NO_SYSTEMD
def test_the_unit_init_service_writes_passes_systemd_analyze_verify(owner: Owner) -> None:
    assert owner.init_service().code == 0
    verify(owner.unit, owner.tmp)


def test_init_service_never_replaces_a_unit_unasked(owner: Owner) -> None:
    assert owner.init_service().code == 0
    owner.unit.write_text("# mine\n")
    again = owner.init_service()
    assert f"{owner.unit} exists: left as it is (--force replaces it)" in again.out
    assert owner.unit.read_text() == "# mine\n"
    assert "  systemctl --user enable --now loadshed" in again.out  # how to start the one there
    forced = owner.init_service("--force")
    assert forced.code == 0, forced.out + forced.err
    assert exec_start(owner.unit)[-4:] == ["run", "--no-ui", "--config", str(owner.config)]


def test_init_service_without_a_config_says_how_to_make_one(owner: Owner) -> None:
    owner.config.unlink()
    result = owner.init_service()
    assert result.code == 2
    assert f"{owner.config}: no config.py for the service to run" in result.err
    assert f"`loadshed init --config {owner.config}`" in result.err
    assert not owner.unit.exists()


def test_init_service_refuses_the_flags_that_fill_in_config_py(tmp_path: Path) -> None:
    config = tmp_path / "config.py"
    result = init("--service", "--config", str(config), "--powerwall", "192.0.2.50")
    assert result.code == 2
    assert "--service writes only the service file; --powerwall fill in config.py" in result.err


@NO_SYSTEMD
def test_the_unit_quotes_paths_with_spaces_percent_and_dollar_as_systemd_reads_them(
    tmp_path: Path,
) -> None:
    program = tmp_path / "my bin 100%" / "loadshed"
    program.parent.mkdir()
    program.symlink_to(Path(sys.executable).parent / "loadshed")
    config = tmp_path / "house $HOME 50%" / "config.py"
    daemon = [str(program), "run", "--no-ui", "--config", str(config)]
    unit = tmp_path / "loadshed.service"
    unit.write_text(systemd_unit(daemon))
    assert exec_start(unit) == daemon
    verify(unit, tmp_path)


def test_the_macos_agent_runs_this_loadshed_with_the_owners_paths(tmp_path: Path) -> None:
    home = tmp_path / "Users" / "owner"
    config = tmp_path / "config.py"
    loads(config, config_text(ANSWERS))
    command = (sys.executable, "-m", "loadshed")
    out = io.StringIO()
    assert install("darwin", command, config, None, {"HOME": str(home)}, out) == 0
    path = home / "Library" / "LaunchAgents" / "com.loadshed.plist"
    with path.open("rb") as f:
        agent = plistlib.load(f)
    assert agent["ProgramArguments"] == [*command, "run", "--no-ui", "--config", str(config)]
    log = str(home / "Library" / "Logs" / "loadshed.log")
    assert agent["StandardOutPath"] == agent["StandardErrorPath"] == log
    assert agent["RunAtLoad"] is True and agent["KeepAlive"] == {"SuccessfulExit": False}
    assert b"/Users/YOU" not in path.read_bytes()
    assert f"  launchctl load -w {path}" in out.getvalue()


def test_on_windows_init_service_prints_the_task_scheduler_steps_and_writes_nothing(
    tmp_path: Path,
) -> None:
    home, config = tmp_path / "home", tmp_path / "config.py"
    loads(config, config_text(ANSWERS))
    program = r"C:\Users\owner\.local\bin\loadshed.exe"
    out = io.StringIO()
    assert install("win32", (program,), config, None, {"HOME": str(home)}, out) == 0
    said = out.getvalue()
    assert "Task Scheduler" in said and '"At startup"' in said
    assert f"Program/script: {program}" in said
    assert f"Add arguments: run --no-ui --config {config}" in said
    assert not home.exists()


def _script(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_the_service_runs_loadshed_as_it_was_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    python = sys.executable
    module = str(Path(cli.__file__).with_name("__main__.py"))
    assert loadshed_command(module, python) == (python, "-m", "loadshed")
    venv = _script(tmp_path / "clone" / ".venv" / "bin" / "loadshed")
    monkeypatch.chdir(tmp_path / "clone")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert loadshed_command(".venv/bin/loadshed", python) == (str(venv),)
    pipx = _script(tmp_path / "pipx" / "venvs" / "loadshed" / "bin" / "loadshed")
    on_path = tmp_path / "local bin" / "loadshed"
    on_path.parent.mkdir()
    on_path.symlink_to(pipx)
    monkeypatch.setenv("PATH", str(on_path.parent))
    assert loadshed_command("loadshed", python) == (str(on_path),)
    assert loadshed_command(str(pipx), python) == (str(on_path),)  # the name the owner knows
    assert loadshed_command(str(venv), python) == (str(venv),)  # another loadshed: as run


def test_init_help_says_service_in_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    assert init("--help").code == 0
    helped = capsys.readouterr().out.splitlines()  # argparse writes its help to sys.stdout
    line = next(x for x in helped if x.lstrip().startswith("--service"))
    assert line.split(None, 1)[1] == "write the service file that runs loadshed at boot"
    assert not helped[helped.index(line) + 1].startswith(" " * 8)  # nothing wrapped under it
