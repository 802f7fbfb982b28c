"""config.py loading: defaults, environment overrides, and every bad input as one clear message."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest

from loadshed.cli import main
from loadshed.config import Config, HostPort, load_config
from loadshed.errors import ConfigError

ROOT = Path(__file__).parent.parent
SECRET = "hunter2-very-secret"

MINIMAL = f'PWIPNAME = "192.0.2.50"\nPWPASS = "{SECRET}"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.py"
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


def error_of(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env or {})
    message = str(info.value)
    assert SECRET not in message
    return message


def test_minimal_config_gets_design_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), {})
    assert config.powerwall == HostPort("192.0.2.50")
    assert config.powerwall_password == SECRET
    assert (config.poll_s, config.outage_confirm_s, config.restore_after_s) == (2.0, 0.0, 60.0)
    assert config.default_shed_below == 100
    assert (config.smtp_port, config.smtp_starttls) == (587, True)
    assert config.kasa_hosts == () and config.tuya_devices == () and config.notify_urls == ()
    assert config.tuya_region == "us"
    assert config.state_dir is None and config.ssh_config is None
    assert config.warnings == ()


def test_the_shipped_example_loads(tmp_path: Path) -> None:
    path = tmp_path / "config.py"
    shutil.copy(ROOT / "config.example.py", path)
    path.chmod(0o600)
    config = load_config(path, {})
    assert f'PWIPNAME = "{config.powerwall}"' in (ROOT / "config.example.py").read_text()
    assert config.shed_below["Router"] == 0
    assert [d.name for d in config.tuya_devices] == ["Space heater"]


def test_full_config_is_typed(tmp_path: Path) -> None:
    text = MINIMAL + (
        'KASA_HOSTS = ["192.0.2.20", "192.0.2.21:9999"]\n'
        "POLL_SECONDS = 5\n"
        'TUYA_DEVICES = [{"name": "Heater", "id": "abc", "ip": "192.0.2.30",'
        ' "key": "0123456789abcdef", "version": 3.4, "dps": 2}]\n'
        'SHED_BELOW = {"Freezer": 30, "Router": 0}\n'
        'STATE_DIR = "~/loadshed-state"\n'
        "SMTP_STARTTLS = False\n"
    )
    config = load_config(write(tmp_path, text), {})
    assert config.kasa_hosts == (HostPort("192.0.2.20"), HostPort("192.0.2.21", 9999))
    assert config.poll_s == 5.0
    (heater,) = config.tuya_devices
    assert (heater.name, heater.version, heater.port, heater.dps) == ("Heater", 3.4, 6668, 2)
    assert config.rule_for("Freezer") == 30 and config.rule_for("Anything") == 100
    assert config.state_dir == Path("~/loadshed-state").expanduser()
    assert config.smtp_starttls is False


def test_environment_overrides_secrets(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, 'PWIPNAME = "pw.lan"\n'),
        {"LOADSHED_PWPASS": "from-env", "LOADSHED_KASA_PASSWORD": "kasa-env"},
    )
    assert config.powerwall_password == "from-env"
    assert config.kasa_password == "kasa-env"
    assert load_config(
        write(tmp_path, MINIMAL), {"LOADSHED_PWPASS": "wins"}
    ).powerwall_password == ("wins")


def test_secrets_are_not_in_the_repr(tmp_path: Path) -> None:
    text = (
        MINIMAL
        + 'TUYA_DEVICES = [{"name": "H", "id": "i", "ip": "1.2.3.4",'
        + ' "key": "0123456789abcdef", "version": 3.3}]\n'
    )
    config = load_config(write(tmp_path, text), {})
    assert SECRET not in repr(config)
    assert "0123456789abcdef" not in repr(config)
    assert set(config.secrets()) == {SECRET, "0123456789abcdef"}


def test_missing_file_says_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "config.py", {})
    assert "config.py: no such file" in str(info.value)
    assert "config.example.py" in str(info.value)


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    message = error_of(tmp_path, MINIMAL + 'KASA_HOSTS = ["a",\n\nPOLL_SECONDS = 3\n')
    assert message.startswith(f"{tmp_path / 'config.py'}:3: Python syntax error")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        pytest.param('PWPAS = "x"', "unknown setting PWPAS — did you mean PWPASS?", id="PWPAS"),
        pytest.param("POLL_SECOND = 3", "did you mean POLL_SECONDS?", id="POLL_SECOND"),
        pytest.param("KASA_HOST = []", "did you mean KASA_HOSTS?", id="KASA_HOST"),
        pytest.param(
            "FROBNICATE = 1", "unknown setting FROBNICATE — see config.example.py", id="far"
        ),
    ],
)
def test_unknown_name_is_an_error_with_the_closest_name(
    tmp_path: Path, line: str, expected: str
) -> None:
    message = error_of(tmp_path, MINIMAL + "\n" + line + "\n")
    assert ":4: " in message
    assert expected in message


@pytest.mark.parametrize(
    ("written", "address"),
    [
        ("fd00::5", "[fd00::5]"),
        ("[fd00::5]", "[fd00::5]"),
        ("[fd00::5]:8443", "[fd00::5]:8443"),
        ("fe80::1%eth0", "[fe80::1%eth0]"),
        ("192.0.2.50:8443", "192.0.2.50:8443"),
    ],
)
def test_an_ipv6_gateway_address_is_written_as_a_url_needs_it(
    tmp_path: Path, written: str, address: str
) -> None:
    """The driver hands str(config.powerwall) to the library as https://<it>/api."""
    config = load_config(write(tmp_path, f'PWIPNAME = "{written}"\nPWPASS = "x"\n'), {})
    assert str(config.powerwall) == address


@pytest.mark.parametrize("written", ["[fd00::5", "fd00::zz", "[fd00::5]:port", "fd00::5:8443:"])
def test_a_broken_ipv6_gateway_address_is_a_clear_error(tmp_path: Path, written: str) -> None:
    message = error_of(tmp_path, f'PWIPNAME = "{written}"\nPWPASS = "x"\n')
    assert ":1: PWIPNAME is" in message
    assert "a host or host:port" in message


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        pytest.param("POLL_SECONDS = 'fast'", "POLL_SECONDS is 'fast'", id="poll-text"),
        pytest.param(
            "POLL_SECONDS = 0", "expected a number of seconds from 0.5 to 3600", id="poll-0"
        ),
        pytest.param("RESTORE_AFTER_SECONDS = -1", "RESTORE_AFTER_SECONDS is -1", id="neg"),
        pytest.param("DEFAULT_SHED_BELOW = 120", "expected a whole number from 0 to 100", id="pct"),
        pytest.param("SMTP_PORT = 70000", "SMTP_PORT is 70000", id="port"),
        pytest.param("SMTP_STARTTLS = 'yes'", "expected True or False", id="bool"),
        pytest.param('KASA_HOSTS = "192.0.2.20"', "expected a list of", id="hosts-not-list"),
        pytest.param('KASA_HOSTS = ["host:99999"]', "port '99999' is not a number", id="kasa-port"),
        pytest.param('SHED_BELOW = {"Freezer": "30"}', "SHED_BELOW['Freezer'] is '30'", id="rule"),
        pytest.param('PWIPNAME = "has space"', "PWIPNAME is 'has space'", id="pw-host"),
        pytest.param('TUYAAPIREGION = "mars"', "expected one of us, us-e", id="region"),
        pytest.param('NOTIFY_URLS = ["no-scheme"]', "entry without a scheme", id="url"),
    ],
)
def test_wrong_type_or_range_names_variable_found_and_expected(
    tmp_path: Path, line: str, expected: str
) -> None:
    message = error_of(tmp_path, MINIMAL + line + "\n")
    assert ":3: " in message
    assert expected in message


def test_wrong_type_of_a_secret_never_echoes_it(tmp_path: Path) -> None:
    message = error_of(tmp_path, 'PWIPNAME = "pw"\nPWPASS = ["' + SECRET + '"]\n')
    assert "PWPASS is a list (value hidden), expected" in message


def test_required_values(tmp_path: Path) -> None:
    assert "PWIPNAME is not set" in error_of(tmp_path, 'PWPASS = "x"\n')
    message = error_of(tmp_path, 'PWIPNAME = "pw"\nPWPASS = ""\n')
    assert "PWPASS is not set" in message and "LOADSHED_PWPASS" in message


TUYA_OK = '"name": "Heater", "id": "abc", "ip": "192.0.2.30", "key": "0123456789abcdef"'


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        pytest.param(
            f"{{{TUYA_OK}}}",
            "TUYA_DEVICES entry 1 ('Heater') is missing \"version\"",
            id="no-version",
        ),
        pytest.param(
            '{"name": "H", "ip": "1.2.3.4", "key": "0123456789abcdef", "version": 3.3}',
            'is missing "id"',
            id="no-id",
        ),
        pytest.param(
            f'{{{TUYA_OK}, "version": "3.3"}}',
            "write it as a number without quotes",
            id="version-text",
        ),
        pytest.param(f'{{{TUYA_OK}, "version": 2.0}}', "expected one of 3.1", id="version-bad"),
        pytest.param(
            '{"name": "H", "id": "a", "ip": "1.2.3.4", "key": "' + SECRET + '", "version": 3.3}',
            '"key" has 19 characters',
            id="key-len",
        ),
        pytest.param(
            f'{{{TUYA_OK}, "version": 3.3, "colour": 1}}', "unknown field 'colour'", id="unknown"
        ),
        pytest.param(f'{{{TUYA_OK}, "version": 3.3, "port": 0}}', '"port" is 0', id="port"),
        pytest.param('"not a dict"', "entry 1 is not a dict", id="not-dict"),
    ],
)
def test_tuya_entry_errors(tmp_path: Path, entry: str, expected: str) -> None:
    message = error_of(tmp_path, MINIMAL + f"TUYA_DEVICES = [{entry}]\n")
    assert expected in message
    assert ":3: " in message


def test_running_config_fails_reports_the_line_without_the_value(tmp_path: Path) -> None:
    message = error_of(tmp_path, MINIMAL + f'POLL_SECONDS = int("{SECRET}")\n')
    assert ":3: running it failed: ValueError" in message


def test_loading_writes_nothing_beside_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    load_config(path, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.py"]


def test_world_readable_config_is_a_warning(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    path.chmod(0o644)
    config = load_config(path, {})
    assert any("chmod 600" in w for w in config.warnings)


@pytest.mark.parametrize("mode", [0o620, 0o602, 0o666])
def test_a_config_others_could_change_is_refused(tmp_path: Path, mode: int) -> None:
    path = write(tmp_path, MINIMAL)
    path.chmod(mode)
    out, err = io.StringIO(), io.StringIO()
    code = main(["check", "--config", str(path)], env={}, stdout=out, stderr=err)
    assert code == 2
    assert err.getvalue() == (
        f"loadshed: {path}: can be changed by other users (mode {mode:o}); it is executed "
        f"— run chmod 600 {path}\n"
    )


def test_a_config_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("only root can give a file to another user")
    path = write(tmp_path, MINIMAL)
    os.chown(path, 65534, -1)  # nobody
    message = error_of_path(path)
    assert "is owned by another user (uid 65534); it is executed as you" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("import sys\nsys.exit(0)\n", "running it failed: SystemExit", id="exit"),
        pytest.param("raise SystemExit\n", "running it failed: SystemExit", id="raise"),
        pytest.param("raise KeyboardInterrupt\n", "failed: KeyboardInterrupt", id="interrupt"),
        # (a sleep, not a busy loop: the abandoned thread must not burn this test run's CPU)
        pytest.param("import time\ntime.sleep(3600)\n", "took more than 5 s", id="blocks"),
    ],
)
def test_a_config_that_exits_or_blocks_is_exit_2_never_all_good(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, MINIMAL + text)
    out, err = io.StringIO(), io.StringIO()
    code = main(["check", "--config", str(path)], env={}, stdout=out, stderr=err)
    assert code == 2
    assert expected in err.getvalue()
    assert "Traceback" not in err.getvalue()


def error_of_path(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    return str(info.value)


def test_check_with_bad_config_is_exit_2_with_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "PWPAS = 1\n")
    out, err = io.StringIO(), io.StringIO()
    code = main(["check", "--config", str(path)], env={}, stdout=out, stderr=err)
    assert code == 2
    assert err.getvalue() == f"loadshed: {path}:3: unknown setting PWPAS — did you mean PWPASS?\n"
    assert out.getvalue() == ""


def test_usage_error_is_exit_2(tmp_path: Path) -> None:
    err = io.StringIO()
    assert main(["frobnicate"], env={}, stdout=io.StringIO(), stderr=err) == 2
    assert "invalid choice" in err.getvalue()
    assert "Traceback" not in err.getvalue()


def test_bare_loadshed_says_what_it_is_and_where_to_start() -> None:
    out = io.StringIO()
    assert main([], env={}, stdout=out, stderr=io.StringIO()) == 0
    said = out.getvalue()
    assert said.startswith("loadshed watches a Tesla Powerwall")
    assert said.index("loadshed demo") < said.index("loadshed init") < said.index("loadshed check")


def test_every_verb_says_in_one_line_what_it_does(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"], env={}, stdout=io.StringIO(), stderr=io.StringIO()) == 0
    printed = capsys.readouterr().out  # argparse writes its help to sys.stdout
    verbs = ["check", "run", "shed", "restore", "pin", "status", "attach", "init", "discover"]
    verbs += ["notify-test", "demo"]
    helped = {line.split()[0] for line in printed.splitlines() if line.startswith("    ")}
    assert set(verbs) <= helped


def test_config_type_is_frozen(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), {})
    with pytest.raises(AttributeError):
        config.poll_s = 1  # type: ignore[misc]
    assert isinstance(config, Config)
    assert not os.path.exists(tmp_path / "__pycache__")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            f'SMTP_PASSWORD = "{SECRET}"\nSMTP_PORT = "{SECRET}"\n',
            "SMTP_PORT is text, expected",
            id="password-pasted-into-port",
        ),
        pytest.param(
            f'NOTIFY_URLS = "ntfys://{SECRET}@ntfy.sh/topic"\n',
            "NOTIFY_URLS is str (value hidden), expected",
            id="urls-as-a-string",
        ),
    ],
)
def test_a_secret_in_the_wrong_place_is_never_echoed(
    tmp_path: Path, text: str, expected: str
) -> None:
    message = error_of(tmp_path, MINIMAL + text)
    assert expected in message
    assert SECRET not in message


# --- grid sources: Powerwall APIs, canaries, a UPS ---------------------------------------------


def test_tedapi_needs_the_gateway_password_not_the_customer_one(tmp_path: Path) -> None:
    text = 'PWIPNAME = "192.0.2.91"\nPOWERWALL_API = "tedapi"\n'
    message = error_of(tmp_path, text)
    assert ":2: PW_GATEWAY_PASSWORD is not set" in message
    assert "QR sticker" in message
    config = load_config(write(tmp_path, text), {"LOADSHED_PW_GATEWAY_PASSWORD": SECRET})
    assert (config.powerwall_api, config.gateway_password) == ("tedapi", SECRET)
    assert SECRET in config.secrets() and SECRET not in repr(config)


def test_v1r_needs_the_rsa_key(tmp_path: Path) -> None:
    message = error_of(tmp_path, 'PWIPNAME = "192.0.2.91"\nPOWERWALL_API = "v1r"\n')
    assert "PW_RSA_KEY is not set" in message
    assert "registered with the gateway" in message


def test_an_unknown_powerwall_api_names_the_choices(tmp_path: Path) -> None:
    message = error_of(tmp_path, MINIMAL + 'POWERWALL_API = "cloud"\n')
    assert ":3: POWERWALL_API is 'cloud'" in message
    assert '"legacy", "tedapi" or "v1r"' in message


def test_canaries_and_a_ups_are_read(tmp_path: Path) -> None:
    text = MINIMAL + (
        'GRID_CANARY = ["Garage canary", " Shed light "]\nNUT_UPS = "ups@127.0.0.1:3494"\n'
        f'NUT_USER = "monitor"\nNUT_PASSWORD = "{SECRET}"\n'
    )
    config = load_config(write(tmp_path, text), {})
    assert config.grid_canary == ("Garage canary", "Shed light")
    assert config.nut_ups is not None and str(config.nut_ups) == "ups@127.0.0.1:3494"
    assert config.nut_ups.port == 3494 and config.nut_user == "monitor"
    assert SECRET in config.secrets()


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('NUT_UPS = "127.0.0.1"', "written ups@host"),
        ('NUT_UPS = "ups@"', "written ups@host"),
        ('NUT_UPS = "ups@host:70000"', "port '70000'"),
        ('NUT_UPS = "u ps@host"', "not a UPS name"),
        ('GRID_CANARY = "Garage canary"', "a list of device names"),
        ("GRID_CANARY = [3]", "a list of device names"),
    ],
)
def test_a_wrong_source_setting_is_a_clear_error(tmp_path: Path, line: str, expected: str) -> None:
    message = error_of(tmp_path, MINIMAL + line + "\n")
    assert ":3: " in message and expected in message
