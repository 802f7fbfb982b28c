"""`loadshed init`: a first config.py and computers.txt from flags (no terminal), with the plugs
it finds when told to look, never overwriting unasked, then `check` — against the simulated house
on 127.0.0.1."""

from __future__ import annotations

import io
import stat
import sys
from pathlib import Path
from typing import Final

import pytest

from loadshed import cli
from loadshed.config import TuyaDevice, load_config
from loadshed.discover import Findings, Heard, config_lines
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
