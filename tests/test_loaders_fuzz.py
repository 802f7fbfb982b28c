"""Any input to the two loaders the owner writes by hand gives a valid result or one clear error.

Hypothesis writes config.py and computers.txt from the pieces that go wrong in real files (known
and misspelt names, values of every type, huge and deep ones, quotes, options, junk): loading
either returns, or raises ConfigError naming the file (and the line where there is one), which
the CLI turns into exit 2 and one line. Never a traceback.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from loadshed.computers import parse_computers
from loadshed.config import VARIABLES, load_config
from loadshed.errors import ConfigError

NAMES = st.sampled_from([*VARIABLES, "PWPAS", "SHED_BELOWW", "pwpass", "_X"])
LITERALS = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=30).map(repr),
    st.sampled_from(
        [
            "True",
            "None",
            "[]",
            "{}",
            "()",
            '["ntfys://t"]',
            '{"Freezer": 30}',
            '{"Freezer": "30"}',
            '[{"name": "H", "id": "x", "ip": "192.0.2.9", "key": "k" * 16, "version": "3.3"}]',
            "9" * 5000,  # past Python's digit limit
            "1e999",
            "(" * 300 + "1" + ")" * 300,  # deeper than the parser takes
            "[" * 2000 + "]" * 2000,
            "-" * 3000 + "1",
            "2 ** 10",
            "lambda: 1",
            "open",
            "__import__('os').getcwd()",
        ]
    ),
)
CONFIG_LINES = st.one_of(
    st.tuples(NAMES, LITERALS).map(lambda t: f"{t[0]} = {t[1]}"),
    st.sampled_from(["", "# a comment", "x = (", "if True:", "import os", "    indented = 1"]),
    st.text(max_size=20),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(CONFIG_LINES, max_size=8))
@example(lines=["POLL_SECONDS = " + "-" * 3000 + "1"])  # a RecursionError in Python's parser
@example(lines=["PWIPNAME = " + "9" * 5000])
def test_any_config_py_loads_or_is_one_clear_error(
    lines: list[str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path_factory.mktemp("cfg") / "config.py"
    base = 'PWIPNAME = "192.0.2.50"\nPWPASS = "a-password"\n'
    path.write_text(base + "\n".join(lines) + "\n", encoding="utf-8", errors="replace")
    path.chmod(0o600)
    try:
        load_config(path, {})
    except ConfigError as err:
        message = str(err)
        assert message.startswith(str(path)), message
        assert "\n" not in message and "Traceback" not in message


WORDS = st.one_of(
    st.sampled_from(
        [
            "linux",
            "windows",
            "macos",
            "solaris",
            "linx",
            "nas",
            "admin@nas.lan",
            "-oProxyCommand=x",
            "port=22",
            "port=²",
            "port=99999999999999999999",
            "mac=00:11:22:33:44:55",
            "mac=zz",
            'powered_by="NAS plug"',
            "powered_by=nas",
            "shed_below=101",
            "down_wait=0",
            "down_wait=٣",
            "wake_to=192.0.2.255:9",
            "wake_to=192.0.2.255:²",
            "via=ssh",
            'command="sudo -n poweroff"',
            "command='",
            "name=NAS",
            "fe80::1%eth0",
            "fe80::1%$(id)",
            "root@fe80::1%eth0;reboot",
            "#",
        ]
    ),
    st.text(max_size=12),
)


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(st.lists(WORDS, max_size=6).map(" ".join), max_size=6))
@example(lines=["linux fe80::1%$(id)"])
def test_any_computers_txt_parses_or_is_one_line_numbered_error(lines: list[str]) -> None:
    try:
        parse_computers("\n".join(lines), Path("computers.txt"))
    except ConfigError as err:
        message = str(err)
        assert message.startswith("computers.txt:"), message
        assert "Traceback" not in message


def test_an_ipv6_scope_id_is_an_interface_name_only() -> None:
    (ok,) = parse_computers("linux fe80::1%eth0 name=NAS\n", Path("computers.txt"))
    assert ok.host == "fe80::1%eth0"
    with pytest.raises(ConfigError, match="is not a host name or IP address"):
        parse_computers("linux 'fe80::1%$(id)'\n", Path("computers.txt"))
