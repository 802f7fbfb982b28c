"""One daemon, many clients: `status`, `shed`, `restore` and `pin` from other processes talk to
the running `loadshed run --no-ui` over its control socket; a second daemon for the same house
is refused; clients that misbehave are dropped without touching the shedding."""

from __future__ import annotations

import json
import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from loadshed.control import house_socket
from loadshed.sim.house import SimHouse
from tests.e2e.conftest import SHEDDABLE, Loadshed, wait_until

pytestmark = pytest.mark.timeout(120)

Start = Callable[..., Loadshed]
NO_DAEMON = 3


def client(config: Path, tmp_path: Path, *args: str) -> Loadshed:
    """A client verb (status, shed, restore, pin) run as its own process, finished."""
    process = Loadshed([*args, "--config", str(config)], tmp_path)
    process.process.wait(60)
    process._reader.join(5)
    return process


def test_status_without_a_daemon_says_how_to_start_one(config: Path, tmp_path: Path) -> None:
    looked = client(config, tmp_path, "status", "--state-dir", str(tmp_path / "state"))
    assert looked.process.returncode == NO_DAEMON
    assert "no daemon running" in looked.output
    assert "loadshed run --no-ui" in looked.output


def test_status_shows_the_house_and_its_exit_code_follows_the_grid(
    house: SimHouse, config: Path, start: Start, tmp_path: Path
) -> None:
    daemon = start()
    daemon.wait_for_line("ready:")
    sock = tmp_path / "state" / "control.sock"
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    looked = client(config, tmp_path, "status")
    assert looked.process.returncode == 0, looked.output
    assert "on grid" in looked.output and "battery 80 %" in looked.output
    assert "Space heater" in looked.output
    as_json = client(config, tmp_path, "status", "--json")
    snapshot = json.loads(as_json.output)
    assert snapshot["reading"]["grid"] == "on grid"
    assert {d["name"] for d in snapshot["devices"]} >= set(SHEDDABLE)
    house.cut_grid()
    wait_until("the shed", lambda: not any(house.is_on(n) for n in SHEDDABLE))
    looked = client(config, tmp_path, "status")
    assert looked.process.returncode == 1
    assert "OFF GRID" in looked.output
    assert "shed: off-grid" in looked.output
    assert daemon.stop() == 0
    assert not sock.exists()


def test_a_state_dir_too_deep_for_a_socket_address_still_has_its_control_socket(
    config: Path, tmp_path: Path
) -> None:
    """A Unix socket address holds 108 bytes: a state dir deep in a long home must not leave the
    daemon deaf to `status` (and to the one-daemon-per-house check)."""
    deep = tmp_path / ("a-long-directory-name-" * 5) / "state"
    assert len(str(deep / "control.sock")) > 108
    args = ["--config", str(config), "--state-dir", str(deep)]
    daemon = Loadshed(["run", "--no-ui", *args], tmp_path)
    try:
        daemon.wait_for_line("ready:")
        looked = client(config, tmp_path, "status", "--state-dir", str(deep))
        assert looked.process.returncode == 0, looked.output
        assert "on grid" in looked.output
        assert not daemon.saw("cannot open the control socket")
    finally:
        assert daemon.stop() == 0
    assert not (deep / "control.sock").exists()


def test_shed_restore_and_pin_are_sent_to_the_running_daemon(
    house: SimHouse, config: Path, start: Start, tmp_path: Path
) -> None:
    daemon = start()
    daemon.wait_for_line("ready:")
    shed = client(config, tmp_path, "shed")
    assert shed.process.returncode == 0, shed.output
    assert "sent to the running loadshed" in shed.output
    assert "TV: off" in shed.output and "Space heater: off" in shed.output
    assert not any(house.is_on(n) for n in SHEDDABLE)
    daemon.wait_for_line("forced from loadshed shed")
    pinned = client(config, tmp_path, "pin", "TV", "on")
    assert pinned.process.returncode == 0, pinned.output
    assert "TV: on" in pinned.output and house.is_on("TV")
    restored = client(config, tmp_path, "restore")
    assert restored.process.returncode == 0, restored.output
    assert all(house.is_on(n) for n in SHEDDABLE)
    assert daemon.stop() == 0


def test_a_shed_with_another_state_dir_still_goes_to_the_house_daemon(
    house: SimHouse, config: Path, start: Start, tmp_path: Path
) -> None:
    """Today's bug: `loadshed shed` with the default state dir switched the house behind the
    running daemon's back. Now it finds the daemon by its house."""
    daemon = start()
    daemon.wait_for_line("ready:")
    other = tmp_path / "another-state-dir"
    shed = client(config, tmp_path, "shed", "--state-dir", str(other))
    assert shed.process.returncode == 0, shed.output
    assert "sent to the running loadshed" in shed.output
    assert not (other / "state.json").exists()
    assert daemon.saw("forced from loadshed shed")
    assert daemon.stop() == 0


def test_a_second_daemon_for_the_same_house_is_refused_naming_the_first(
    config: Path, start: Start, tmp_path: Path
) -> None:
    first = start()
    first.wait_for_line("ready:")
    args = ["run", "--no-ui", "--config", str(config), "--state-dir", str(tmp_path / "other")]
    second = Loadshed(args, tmp_path)
    assert second.process.wait(30) == 1
    second._reader.join(5)
    assert f"pid {first.process.pid}" in second.output
    assert "already watches the Powerwall" in second.output
    assert first.stop() == 0


def test_garbage_floods_and_stalls_never_stop_the_shedding(
    house: SimHouse, config: Path, start: Start, tmp_path: Path
) -> None:
    daemon = start()
    daemon.wait_for_line("ready:")
    path = tmp_path / "state" / "control.sock"
    stalled = []
    for _ in range(20):  # subscribe, then never read a byte
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(str(path))
        s.sendall(b'{"op": "subscribe"}\n')
        stalled.append(s)
    garbage = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    garbage.connect(str(path))
    garbage.sendall(b"\x00\xffnot json at all\n")
    flood = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    flood.connect(str(path))
    with pytest.raises(OSError):
        for _ in range(100):
            flood.sendall(b"x" * 65536)  # no newline, ever: the daemon hangs up
    house.cut_grid()
    wait_until("the shed, with 22 bad clients", lambda: not any(house.is_on(n) for n in SHEDDABLE))
    assert b"not a JSON line" in _everything(garbage)
    looked = client(config, tmp_path, "status")
    assert looked.process.returncode == 1 and "OFF GRID" in looked.output
    for s in stalled:
        s.close()
    assert daemon.stop() == 0


def _everything(sock: socket.socket) -> bytes:
    sock.settimeout(5)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another user")
def test_a_peer_of_another_uid_is_refused(
    config: Path, start: Start, tmp_path: Path, house: SimHouse
) -> None:
    """The socket is 0600 in a 0700 dir; behind that, the daemon checks the kernel's peer
    credentials. With the runtime socket opened up, a throwaway uid (no account needed)
    connects: the daemon names its uid and hangs up."""
    daemon = start()
    daemon.wait_for_line("ready:")
    sock = house_socket(house.powerwall.address)
    sock.chmod(0o666)  # opened up for the test: the peer check is what is left
    for parent in (sock.parent, sock.parent.parent):
        parent.chmod(0o755)
    stranger = 54321
    pid = os.fork()
    if pid == 0:  # the child: become the stranger, connect, report what the daemon said
        code = 1
        try:
            os.setgid(stranger)
            os.setuid(stranger)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(sock))
            s.settimeout(5)
            said = s.recv(4096)
            code = 0 if b"refused a connection from uid 54321" in said else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    daemon.wait_for_line("refused a connection from uid 54321")
    assert daemon.stop() == 0
