"""`loadshed check` as the owner runs it: a subprocess against a simulated house on loopback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from loadshed.cli import main
from loadshed.sim.base import Fault
from loadshed.sim.house import SimHouse
from loadshed.sim.ssh import SshHost, combined_ssh_config
from loadshed.trust import TRUST_FILE, Trust
from tests.test_notify import SMTP_PASSWORD, SMTP_USER, SmtpSink

ROOT = Path(__file__).parents[1]

CHECK_TIMEOUT_S = 60  # a hung device costs check a few seconds; never this


@dataclass
class Result:
    code: int
    out: str
    err: str

    def row(self, name: str) -> str:
        """The table line whose first column is name."""
        for line in self.out.splitlines():
            if line.startswith(name + "  "):
                return line
        raise AssertionError(f"no row {name!r} in:\n{self.out}")

    def detail_after(self, name: str) -> str:
        lines = self.out.splitlines()
        index = lines.index(self.row(name))
        follow = lines[index + 1] if index + 1 < len(lines) else ""
        assert follow.startswith("    └ "), f"no detail under {name!r}:\n{self.out}"
        return follow.removeprefix("    └ ")


def run_loadshed(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Result:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LOADSHED_")}
    environment.update(env or {})
    done = subprocess.run(
        [sys.executable, "-m", "loadshed", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=CHECK_TIMEOUT_S,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def house() -> Iterator[SimHouse]:
    with SimHouse() as simulated:
        yield simulated


@pytest.fixture
def config(house: SimHouse, tmp_path: Path) -> Path:
    return house.write_config(tmp_path / "config.py")


def test_check_reaches_everything_and_prints_the_table(
    house: SimHouse, config: Path, tmp_path: Path
) -> None:
    before = {name: outlet.on for name, outlet in house.outlets.items()}
    result = run_loadshed("check", "--config", str(config), cwd=tmp_path)
    assert result.code == 0, result.out + result.err
    header = result.out.splitlines()[0].split()
    assert header == ["name", "kind", "address", "reachable", "state", "rule"]
    assert result.row("Powerwall").split()[1:5] == [
        "powerwall",
        house.powerwall.address,
        "yes",
        "on",
    ]
    assert "battery 80 %" in result.row("Powerwall")
    assert result.row("Router").split()[1:] == [
        "kasa",
        house.kasa[0].address,
        "yes",
        "on",
        "essential",
    ]
    assert "on, 150 W" in result.row("Freezer") and "shed below 30 %" in result.row("Freezer")
    for child in ("Monitor", "Printer", "Desk lamp"):
        assert house.kasa[2].address in result.row(child)
    assert "off" in result.row("Desk lamp").split()
    assert "shed at outage" in result.row("TV")  # the KLAP plug, through the TP-Link login
    assert "on, 1500 W" in result.row("Space heater")
    assert "shed below 50 %" in result.row("Dehumidifier")  # protocol 3.4
    assert "all 10 reachable" in result.out
    assert house.password not in result.out + result.err
    assert house.kasa_password not in result.out + result.err
    # check reads and never switches: every outlet is as it was.
    assert {name: outlet.on for name, outlet in house.outlets.items()} == before


def test_unreachable_plugs_are_exit_1_with_the_reason(
    house: SimHouse, config: Path, tmp_path: Path
) -> None:
    house.set_fault("Space heater", Fault.DOWN)
    house.set_fault("Freezer", Fault.HUNG)
    result = run_loadshed("check", "--config", str(config), cwd=tmp_path)
    assert result.code == 1
    assert "NO" in result.row("Space heater").split()
    assert "connection refused" in result.detail_after("Space heater")
    kasa_freezer = house.kasa[1].address
    assert result.row(kasa_freezer).split()[3] == "NO"  # no answer: its alias is not known
    assert "no answer" in result.detail_after(kasa_freezer)
    assert "yes" in result.row("Router").split()  # the others are still checked
    assert "2 of 10 not OK" in result.out or "not OK" in result.out


def test_wrong_powerwall_password_is_named(config: Path, tmp_path: Path) -> None:
    text = config.read_text()
    config.write_text(text + 'PWPASS = "not-the-password"\n')
    result = run_loadshed("check", "--config", str(config), cwd=tmp_path)
    assert result.code == 1
    assert "failed" in result.row("Powerwall").split()
    assert "check PWPASS" in result.detail_after("Powerwall")
    assert "not-the-password" not in result.out + result.err


def test_wrong_kasa_password_is_a_login_failure_not_offline(config: Path, tmp_path: Path) -> None:
    config.write_text(config.read_text() + 'KASA_PASSWORD = "wrong-kasa-pass"\n')
    result = run_loadshed("check", "--config", str(config), cwd=tmp_path)
    assert result.code == 1
    assert "KASA_USERNAME" in result.out
    assert "wrong-kasa-pass" not in result.out + result.err


def test_environment_secret_overrides_the_file(
    house: SimHouse, config: Path, tmp_path: Path
) -> None:
    config.write_text(config.read_text().replace(house.password, "stale-password"))
    result = run_loadshed(
        "check", "--config", str(config), cwd=tmp_path, env={"LOADSHED_PWPASS": house.password}
    )
    assert result.code == 0, result.out
    assert "yes" in result.row("Powerwall").split()


def test_computers_get_a_shutdown_preflight_that_never_shuts_down(
    config: Path, tmp_path: Path
) -> None:
    closed = socket.create_server(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    with (
        SshHost(alias="nas") as nas,
        SshHost(alias="sunbox", sudo_needs_password=True, client_key=nas.client_key) as box,
    ):
        (tmp_path / "ssh_config").write_text(combined_ssh_config([nas, box]))
        config.write_text(config.read_text() + f"SSH_CONFIG = {str(tmp_path / 'ssh_config')!r}\n")
        (tmp_path / "computers.txt").write_text(
            "linux nas name=NAS shed_below=30 mac=02:00:00:00:00:01\n"
            "solaris sunbox name=Sunbox mac=02:00:00:00:00:02\n"
            f"windows 127.0.0.1 port={closed_port} name=GamePC\n"
        )
        result = run_loadshed("check", "--config", str(config), cwd=tmp_path)
        assert nas.shutdowns() == [] and box.shutdowns() == []  # nothing was shut down
        assert nas.is_up and box.is_up
    assert result.code == 1
    assert result.row("NAS").split()[1:5] == ["linux", "nas", "→", f"127.0.0.1:{nas.port}"]
    assert result.row("NAS").split()[5] == "yes"
    assert "up, shutdown allowed" in result.row("NAS") and "shed below 30 %" in result.row("NAS")
    assert "sudoers" in result.detail_after("Sunbox")
    assert result.row("GamePC").split()[1:4] == ["windows", f"127.0.0.1:{closed_port}", "NO"]
    assert "refuses connections: it is on, but" in result.detail_after("GamePC")
    assert "GamePC (computers.txt:3) will not come back after an outage by itself" in result.out


def test_powered_by_naming_no_plug_is_exit_2(config: Path, tmp_path: Path) -> None:
    (tmp_path / "computers.txt").write_text(
        "# the NAS\nlinux nas.invalid powered_by='Freezr' mac=02:00:00:00:00:01\n"
    )
    result = run_loadshed("check", "--config", str(config), cwd=tmp_path)
    assert result.code == 2
    assert result.err.strip() == (
        f"loadshed: {tmp_path / 'computers.txt'}:2: powered_by='Freezr' names no plug "
        "— did you mean 'Freezer'?"
    )


def test_a_computer_tier_behind_an_essential_plug_is_exit_2(config: Path, tmp_path: Path) -> None:
    (tmp_path / "computers.txt").write_text("linux nas.invalid powered_by=Router shed_below=30\n")
    result = run_loadshed("check", "--config", str(config), cwd=tmp_path)
    assert result.code == 2
    assert "computers.txt:1: nas.invalid has shed_below=30 but its plug 'Router' is essential" in (
        result.err
    )


def test_bad_computers_line_is_exit_2(config: Path, tmp_path: Path) -> None:
    computers = tmp_path / "machines.txt"
    computers.write_text("linux nas\nlinux -oProxyCommand=touch\n")
    result = run_loadshed(
        "check", "--config", str(config), "--computers", str(computers), cwd=tmp_path
    )
    assert result.code == 2
    assert result.out == ""
    assert result.err.startswith(f"loadshed: {computers}:2: host '-oProxyCommand=touch'")
    assert "Traceback" not in result.err


def test_missing_config_is_exit_2_and_says_how_to_make_one(tmp_path: Path) -> None:
    """No ./config.py: an installed loadshed looks in the user config dir, and says how to
    make one there — with no clone to copy the example from."""
    result = run_loadshed("check", cwd=tmp_path)
    assert result.code == 2
    expected = Path(os.environ["XDG_CONFIG_HOME"]) / "loadshed" / "config.py"
    [line] = result.err.splitlines()
    assert line.startswith(f"loadshed: {expected}: no such file — create it: `loadshed init")
    assert "config.example.py, shipped in loadshed/examples/" in line


def test_check_with_everything_down_is_exit_1_not_a_crash(tmp_path: Path) -> None:
    config = tmp_path / "config.py"
    free = socket.create_server(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    config.write_text(
        f'PWIPNAME = "127.0.0.1:{port}"\nPWPASS = "pw"\nKASA_HOSTS = ["127.0.0.1:{port}"]\n'
    )
    config.chmod(0o600)
    result = run_loadshed("check", "--config", str(config), cwd=tmp_path)
    assert result.code == 1
    assert "cannot reach the Powerwall" in result.detail_after("Powerwall")
    assert "Traceback" not in result.err


def test_a_shed_below_name_that_matches_nothing_is_exit_1(config: Path, tmp_path: Path) -> None:
    config.write_text(config.read_text() + 'SHED_BELOW = {"Freezr": 30, "Router": 0}\n')
    result = run_loadshed("check", "--config", str(config), cwd=tmp_path)
    assert result.code == 1
    assert (
        "problem: SHED_BELOW names 'Freezr', but no device is called that: the device meant "
        "follows DEFAULT_SHED_BELOW — did you mean 'Freezer'?" in result.out
    )
    assert "reachable, but the config needs fixing" in result.out


def test_a_computer_named_like_a_plug_is_exit_2_naming_both(config: Path, tmp_path: Path) -> None:
    (tmp_path / "computers.txt").write_text("linux nas.invalid name=Router mac=02:00:00:00:00:01\n")
    result = run_loadshed("check", "--config", str(config), cwd=tmp_path)
    assert result.code == 2
    assert "two devices are named 'Router': the linux at nas.invalid" in result.err
    assert "and the kasa at 127.0.0.1:" in result.err


def test_check_shows_alerts_waiting_in_the_outbox(config: Path, tmp_path: Path) -> None:
    outbox = tmp_path / "state" / "outbox"
    outbox.mkdir(parents=True)
    (outbox / "00000001-off_grid.json").write_text("{}")
    (outbox / "delivered.json").write_text('{"ids": []}')
    config.write_text(config.read_text() + f"STATE_DIR = {str(tmp_path / 'state')!r}\n")
    result = run_loadshed("check", "--config", str(config), cwd=tmp_path)
    assert "alerts: 1 waiting in the outbox (loadshed run sends them)" in result.out


def test_check_pins_the_powerwall_certificate_and_trust_powerwall_accepts_a_new_one(
    house: SimHouse, config: Path, tmp_path: Path
) -> None:
    state = tmp_path / "xdg-state"  # check keeps trust.json in the default state dir
    env = {"XDG_STATE_HOME": str(state)}
    first = run_loadshed("check", "--config", str(config), cwd=tmp_path, env=env)
    assert first.code == 0, first.out + first.err
    assert "certificate SHA-256" in first.row("Powerwall")
    trust = Trust(state / "loadshed" / TRUST_FILE)
    endpoint = house.powerwall.endpoint
    assert trust.pinned(endpoint) is not None
    trust.forget(endpoint)
    trust.check(endpoint, b"the certificate of another gateway")  # as if it had been replaced
    refused = run_loadshed("check", "--config", str(config), cwd=tmp_path, env=env)
    assert refused.code == 1
    assert "certificate changed" in refused.detail_after("Powerwall")
    accepted = run_loadshed(
        "check", "--config", str(config), "--trust-powerwall", cwd=tmp_path, env=env
    )
    assert accepted.code == 0, accepted.out + accepted.err
    assert "forgot the Powerwall's old certificate" in accepted.out


def test_check_s_table_goes_through_the_same_redaction_as_the_log(
    house: SimHouse, config: Path, tmp_path: Path
) -> None:
    """A device that echoes a secret (here a Tuya plug named with the Powerwall password, as a
    careless copy-paste would) never shows it in the table."""
    config.write_text(config.read_text().replace("'Aquarium'", repr(house.password)))
    result = run_loadshed("check", "--config", str(config), cwd=tmp_path)
    assert house.password not in result.out + result.err
    assert "***" in result.out


# --- what check says beyond reaching things -------------------------------------------------


def test_the_example_unchanged_says_fill_it_in_and_contacts_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """In-process, under pytest-socket: reaching any of the example's addresses would fail."""
    config = tmp_path / "config.py"
    shutil.copy(ROOT / "config.example.py", config)
    config.chmod(0o600)
    code = main(["check", "--config", str(config)], {})
    out = capsys.readouterr().out
    assert code == 1
    assert out.startswith(f"fill in {config}: it still has the example's values")
    assert "PWPASS is the example's" in out
    assert "KASA_HOSTS has the example address 192.0.2.20" in out
    assert "TUYA_DEVICES has the example plug 'Space heater'" in out
    assert "nothing was contacted" in out


def test_network_gear_that_would_be_shed_and_a_dead_sms_gateway_are_warned_about(
    house: SimHouse, config: Path, tmp_path: Path
) -> None:
    text = config.read_text().replace("'Router': 0, ", "")
    config.write_text(text + 'MAILNOTIF = "5551234567@tmomail.net"\nSMTP_HOST = "127.0.0.1"\n')
    result = run_loadshed("check", "--config", str(config), cwd=tmp_path)
    assert "warning: Router looks like network gear and would be shed" in result.out
    assert "SHED_BELOW['Router'] = 0" in result.out
    assert "warning: MAILNOTIF uses tmomail.net: T-Mobile stopped delivering" in result.out


def test_an_alert_path_that_cannot_work_is_a_problem(
    house: SimHouse, config: Path, tmp_path: Path
) -> None:
    config.write_text(
        config.read_text() + 'MAILNOTIF = "owner@example.com"\nNOTIFY_URLS = ["bogus://x"]\n'
    )
    result = run_loadshed("check", "--config", str(config), cwd=tmp_path)
    assert result.code == 1
    assert "problem: MAILNOTIF is set but SMTP_HOST is not" in result.out
    assert "problem: NOTIFY_URLS entry 1 (bogus://…): Apprise cannot use it" in result.out


@pytest.mark.parametrize(
    ("password", "said"),
    [
        (SMTP_PASSWORD, None),
        ("not-the-smtp-password", "SMTP login rejected"),
        (None, "refused the connection"),  # the server is down
    ],
    ids=["logs-in", "login-refused", "server-down"],
)
def test_check_tries_the_email_path_without_sending(
    house: SimHouse, config: Path, tmp_path: Path, password: str | None, said: str | None
) -> None:
    sink = SmtpSink(auth=True)
    if password is not None:
        sink.start()
    try:
        config.write_text(
            config.read_text()
            + f"MAILNOTIF = 'owner@example.com'\nSMTP_HOST = '127.0.0.1'\nSMTP_PORT = {sink.port}\n"
            f"SMTP_STARTTLS = False\nSMTP_USER = {SMTP_USER!r}\n"
            f"SMTP_PASSWORD = {password or 'unused-pw'!r}\n"
        )
        result = run_loadshed("check", "--config", str(config), cwd=tmp_path)
    finally:
        sink.stop()
    assert sink.messages == []  # nothing was sent
    if said is None:
        assert result.code == 0, result.out
        assert "email alerts" not in result.out
    else:
        assert result.code == 1
        assert "problem: email alerts to owner@example.com would fail: " in result.out
        assert said in result.out
