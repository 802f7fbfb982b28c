"""The service files in contrib/: systemd's own verifier on the unit, and the launchd plist.
They are links to the templates `loadshed init --service` fills in, shipped in the package."""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
CONTRIB = ROOT / "contrib"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd is not installed")
def test_the_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    home, runtime = tmp_path / "home", tmp_path / "run"
    (home / ".local" / "bin").mkdir(parents=True)
    runtime.mkdir(mode=0o700)
    # the unit's ExecStart: where pipx and uv put the command
    (home / ".local" / "bin" / "loadshed").symlink_to(Path(sys.executable).parent / "loadshed")
    unit = tmp_path / "loadshed.service"
    shutil.copy(CONTRIB / "loadshed.service", unit)
    env = {**os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": str(runtime)}
    done = subprocess.run(
        ["systemd-analyze", "--user", "verify", str(unit)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_unit_restarts_a_failed_or_hung_daemon_and_runs_it_without_a_screen() -> None:
    lines = (CONTRIB / "loadshed.service").read_text().splitlines()
    settings = dict(line.split("=", 1) for line in lines if "=" in line and line[0] != "#")
    assert settings["Type"] == "notify"
    assert settings["Restart"] == "on-failure"
    assert int(settings["WatchdogSec"]) > 0
    assert settings["ExecStart"].endswith("loadshed run --no-ui")


def test_the_launchd_plist_runs_the_daemon_and_keeps_it_alive() -> None:
    with (CONTRIB / "com.loadshed.plist").open("rb") as f:
        plist = plistlib.load(f)
    assert plist["ProgramArguments"][1:] == ["run", "--no-ui"]
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}


@pytest.mark.parametrize("name", ["loadshed.service", "com.loadshed.plist"])
def test_contrib_links_to_the_template_the_package_ships(name: str) -> None:
    link = CONTRIB / name
    assert link.is_symlink() and not os.path.isabs(os.readlink(link))  # a clone moves
    assert link.resolve() == (ROOT / "loadshed" / "examples" / name).resolve()
