"""computers.txt parsing: DESIGN §5 syntax into typed values, every bad line one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadshed.computers import Computer, load_computers, parse_computers
from loadshed.errors import ConfigError
from loadshed.model import Kind

ROOT = Path(__file__).parent.parent
SHIPPED = ROOT / "loadshed" / "examples" / "computers.txt"  # what `loadshed init` writes
PATH = Path("computers.txt")

DESIGN_EXAMPLE = """\
# kind     [user@]host             options (key=value, any order)
linux      admin@nas.lan           mac=00:11:22:33:44:55 powered_by="NAS plug"
solaris    root@sunbox             port=2222 shed_below=30
macos      me@imac.lan             name=iMac

windows    shutdownuser@gamepc     mac=AA:BB:CC:DD:EE:FF   # the kids' PC
"""


def test_design_example_parses_into_typed_values() -> None:
    nas, sun, mac, win = parse_computers(DESIGN_EXAMPLE, PATH)
    assert nas == Computer(
        kind=Kind.LINUX,
        host="nas.lan",
        name="nas.lan",
        port=None,
        user="admin",
        mac="00:11:22:33:44:55",
        powered_by="NAS plug",
        line=2,
    )
    assert (sun.kind, sun.port, sun.shed_below, sun.target) == (
        Kind.SOLARIS,
        2222,
        30,
        "root@sunbox",
    )
    assert sun.shutdown_command == ("sudo", "-n", "shutdown", "-y", "-g0", "-i5")
    assert (mac.name, mac.host, mac.shutdown_command) == (
        "iMac",
        "imac.lan",
        ("sudo", "-n", "shutdown", "-h", "now"),
    )
    assert (win.kind, win.port, win.mac, win.uses_ssh, win.line) == (
        Kind.WINDOWS,
        445,
        "aa:bb:cc:dd:ee:ff",
        False,
        6,
    )


def test_shipped_computers_txt_is_all_comments() -> None:
    assert load_computers(SHIPPED) == ()
    uncommented = "\n".join(
        line.lstrip("# ")
        for line in (SHIPPED).read_text().splitlines()
        if line.startswith(("# linux", "# solaris", "# macos", "# windows"))
    )
    assert [c.name for c in parse_computers(uncommented, PATH)] == [
        "NAS",
        "sunbox",
        "iMac",
        "gamepc",
    ]


def test_options_in_any_order_and_quoted_command() -> None:
    (c,) = parse_computers(
        'linux nas command="sudo -n /sbin/poweroff --force" name="Big NAS" port=2200 '
        "wake_to=192.0.2.255 mac=001122334455 shed_below=0\n",
        PATH,
    )
    assert c.command == ("sudo", "-n", "/sbin/poweroff", "--force")
    assert c.shutdown_command == c.command
    assert (c.name, c.port, c.wake_to, c.mac, c.shed_below, c.user) == (
        "Big NAS",
        2200,
        "192.0.2.255",
        "00:11:22:33:44:55",
        0,
        None,
    )


def test_windows_via_ssh_uses_ssh_s_port_and_windows_shutdown() -> None:
    (c,) = parse_computers("windows admin@gamepc via=ssh\n", PATH)
    assert (c.port, c.uses_ssh, c.shutdown_command) == (
        None,
        True,
        ("shutdown", "/s", "/f", "/t", "0"),
    )


def test_missing_file_is_no_computers_unless_asked_for(tmp_path: Path) -> None:
    assert load_computers(tmp_path / "computers.txt") == ()
    with pytest.raises(ConfigError, match="no such file"):
        load_computers(tmp_path / "computers.txt", required=True)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        pytest.param(
            "linx host",
            "unknown kind 'linx' — expected linux, solaris, macos or windows",
            id="kind",
        ),
        pytest.param("linux", "linux needs a host after it", id="no-host"),
        pytest.param("linux port=22", "linux needs a host after it", id="option-as-host"),
        pytest.param(
            "linux host colour=red", "unknown option 'colour' — known: name=, port=", id="option"
        ),
        pytest.param("linux host fast", "'fast' is not an option", id="bare-word"),
        pytest.param(
            "linux host mac=00:11:22:33:44",
            "mac='00:11:22:33:44' is not a MAC address",
            id="mac-short",
        ),
        pytest.param("linux host mac=00:11:22:33:44:ZZ", "is not a MAC address", id="mac-hex"),
        pytest.param("linux host mac=00:11-22:33:44:55", "is not a MAC address", id="mac-mixed"),
        pytest.param("linux host port=0", "port='0' is not a port", id="port-0"),
        pytest.param("linux host port=65536", "port='65536' is not a port", id="port-big"),
        pytest.param("linux host port=ssh", "port='ssh' is not a port", id="port-text"),
        pytest.param("linux host shed_below=101", "shed_below='101' is not a percentage", id="pct"),
        pytest.param(
            "linux -oProxyCommand=x", "host '-oProxyCommand=x' is not a host name", id="host-dash"
        ),
        pytest.param(
            "linux -oProxyCommand@host",
            "user '-oProxyCommand' is not a plain user name",
            id="user-dash",
        ),
        pytest.param(
            "linux 'host;reboot'", "host 'host;reboot' is not a host name", id="host-semicolon"
        ),
        pytest.param(
            "linux 'a$(id)@host'", "user 'a$(id)' is not a plain user name", id="user-subshell"
        ),
        pytest.param("linux `host`", "host '`host`' is not a host name", id="host-backtick"),
        pytest.param("linux @host", "has an empty user", id="empty-user"),
        pytest.param('linux host name="unclosed', "cannot split the line", id="quote"),
        pytest.param("linux host port=22 port=23", "option port= given twice", id="twice"),
        pytest.param("linux host via=rdp", "via='rdp' is not known", id="via"),
        pytest.param("linux host command=''", "command= is empty", id="empty-command"),
        pytest.param(
            "windows host command=shutdown",
            "command= needs a shell on the target",
            id="win-command",
        ),
        pytest.param(
            "linux host mac=00:11:22:33:44:55 wake_to=nas",
            "wake_to='nas' is not an IPv4",
            id="wake",
        ),
        pytest.param("linux host wake_to=192.0.2.255", "wake_to= without mac=", id="wake-no-mac"),
        pytest.param('linux host powered_by=""', "powered_by= is empty", id="powered-empty"),
        pytest.param(
            "linux nas name=NAS powered_by=nas",
            "powered_by='nas' names this computer itself",
            id="powered-by-itself",
        ),
        pytest.param("linux host port=²", "port='²' is not a port", id="port-superscript"),
        pytest.param("linux host down_wait=0", "down_wait='0' is not a number", id="down-wait-0"),
        pytest.param(
            "linux host down_wait=2m", "down_wait='2m' is not a number", id="down-wait-text"
        ),
        pytest.param(
            "linux host down_wait=99999", "expected a whole number from 1 to 3600", id="down-big"
        ),
    ],
)
def test_bad_line_names_file_line_and_fix(line: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_computers(f"# header\n\n{line}\n", PATH)
    message = str(info.value)
    assert message.startswith("computers.txt:3: ")
    assert expected in message


def test_powered_by_a_computer_is_refused_on_its_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_computers('linux nas powered_by="Big box"\nlinux box name="Big box"\n', PATH)
    assert str(info.value) == (
        "computers.txt:1: powered_by='Big box' names a computer (line 2) — "
        "give the name of the plug that feeds it (a Kasa or Tuya plug)"
    )


def test_port_is_ssh_s_to_choose_unless_given() -> None:
    alias, given, smb = parse_computers(
        "linux nas\nlinux nas2 port=2222 down_wait=300\nwindows pc\n", PATH
    )
    assert (alias.port, alias.address, alias.down_wait_s) == (None, "nas", 120)
    assert (given.port, given.address, given.down_wait_s) == (2222, "nas2:2222", 300)
    assert smb.port == 445


def test_duplicate_name_names_both_lines() -> None:
    with pytest.raises(ConfigError) as info:
        parse_computers("linux a name=NAS\nmacos b\nlinux c name=nas\n", PATH)
    assert str(info.value) == (
        "computers.txt:3: duplicate name 'nas' (also on line 1) — give each computer its own name="
    )


def test_same_host_twice_is_a_duplicate() -> None:
    with pytest.raises(ConfigError, match=r"computers.txt:2: duplicate name 'nas.lan'"):
        parse_computers("linux nas.lan\nlinux root@nas.lan port=2222\n", PATH)


def test_ipv6_and_ip_hosts() -> None:
    first, second = parse_computers("linux root@192.0.2.9\nlinux ::1 name=six\n", PATH)
    assert first.host == "192.0.2.9"
    assert second.host == "::1"
