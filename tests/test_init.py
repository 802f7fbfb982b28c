"""`loadshed init`: a first config.py and computers.txt from flags (no terminal), never
overwriting unasked, then `check` — against the simulated house on 127.0.0.1."""

from __future__ import annotations

import stat
from pathlib import Path

from loadshed.config import load_config
from loadshed.sim.house import SimHouse
from tests.test_check import run_loadshed


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
