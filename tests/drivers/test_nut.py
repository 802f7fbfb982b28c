"""NutSource against Debian's real NUT server (dummy-ups + upsd on loopback), through aionut.

Each test that needs a server gets a fresh one (`nut_server`, from tests/nut.py); changes go
through NUT's own `upsrw`. Every read runs on the `sim_loop` thread, one loop per test, so a
source keeps its connection from read to read as the daemon's does. Times are printed (run
with -s to see them), never asserted tightly: pytest-timeout catches a hang.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterator
from typing import Final

import pytest

from loadshed.config import parse_nut_ups
from loadshed.drivers.backoff import LOGIN_FIRST_S
from loadshed.drivers.nut import NutSource, grid_from_status
from loadshed.model import UPS, Grid, GridReading, Status
from loadshed.sim.loop import LoopThread
from tests.drivers.test_powerwall import FakeClock
from tests.nut import (
    HOST,
    PASSWORD,
    SET_ONLY_USER,
    UPS_NAME,
    USER,
    NutServer,
    nut_server_fixture,  # noqa: F401  (registers the nut_server fixture)
)

QUICK_S: Final = 0.5  # driver timeout where a hang is expected: the test waits about this long
SLACK_S: Final = 2.0  # a bounded read may overrun its timeout by this much on a busy machine
HANG_GUARD_S: Final = 30  # pytest-timeout for tests that provoke a hang or stop the server
WRONG_PASSWORD: Final = "not-the-nut-Secret-3a"


class Reader:
    """Makes NutSources, reads them on the test's loop, and closes them all afterwards."""

    def __init__(self, loop: LoopThread) -> None:
        self.loop = loop
        self.clock = FakeClock()
        self._sources: list[NutSource] = []

    def source(
        self,
        port: int,
        *,
        ups: str = UPS_NAME,
        username: str = "",
        password: str = "",
        timeout_s: float = 5.0,
    ) -> NutSource:
        source = NutSource(
            ups,
            HOST,
            port,
            username=username,
            password=password,
            timeout_s=timeout_s,
            clock=self.clock,
        )
        self._sources.append(source)
        return source

    def read(self, source: NutSource) -> GridReading:
        return self.loop.run(source.read())

    def timed_read(self, source: NutSource, what: str) -> tuple[GridReading, float]:
        started = time.monotonic()
        reading = self.read(source)
        elapsed_s = time.monotonic() - started
        print(f"{what}: {elapsed_s * 1000:.1f} ms -> {reading.grid.name} {reading.detail!r}")
        return reading, elapsed_s

    def close(self) -> None:
        for source in self._sources:
            self.loop.run(source.close())


@pytest.fixture
def reader(sim_loop: LoopThread) -> Iterator[Reader]:
    reader = Reader(sim_loop)
    yield reader
    reader.close()


def on_line(raw: str = "OL", battery_pct: float = 100.0) -> GridReading:
    return GridReading(Grid.ON, raw, battery_pct, source=UPS)


# --- status words, on the real server ------------------------------------------------------


def test_on_line_is_on_grid(nut_server: NutServer, reader: Reader) -> None:
    print(f"NUT server start-up: {nut_server.startup_s:.2f} s")
    source = reader.source(nut_server.port)
    assert source.endpoint == f"ups@127.0.0.1:{nut_server.port}"
    reading, _ = reader.timed_read(source, "first read (connect)")
    assert reading == on_line()
    reading, _ = reader.timed_read(source, "second read (kept connection)")
    assert reading == on_line()


def test_upsrw_changes_show_on_the_next_read(nut_server: NutServer, reader: Reader) -> None:
    source = reader.source(nut_server.port)
    assert reader.read(source).grid is Grid.ON
    for status, grid in [("OB", Grid.OFF), ("OB LB", Grid.OFF), ("OL", Grid.ON)]:
        started = time.monotonic()
        nut_server.set_status(status)
        reading = reader.read(source)
        print(f"upsrw {status!r} seen by NutSource in {time.monotonic() - started:.3f} s")
        assert (reading.grid, reading.raw, reading.status) == (grid, status, Status.OK)


def test_battery_charge_is_read_as_information(nut_server: NutServer, reader: Reader) -> None:
    source = reader.source(nut_server.port)
    nut_server.set_var("battery.charge", "37.5")
    nut_server.set_status("OB DISCHRG")
    assert reader.read(source) == GridReading(Grid.OFF, "OB DISCHRG", 37.5, source=UPS)
    nut_server.set_var("battery.charge", "n/a")  # a driver's odd value: no charge, same grid
    assert reader.read(source) == GridReading(Grid.OFF, "OB DISCHRG", None, source=UPS)


@pytest.mark.parametrize(
    ("status", "grid"),
    [
        ("OL CHRG", Grid.ON),
        ("OL BOOST", Grid.ON),
        ("OB DISCHRG", Grid.OFF),
        ("FSD OB LB", Grid.OFF),
        ("BYPASS", Grid.UNKNOWN),
        ("OFF", Grid.UNKNOWN),
        ("OL OB", Grid.UNKNOWN),  # nonsense: both at once
        ("WAIT", Grid.UNKNOWN),  # a driver starting up
        ("", Grid.UNKNOWN),
        ("ol", Grid.UNKNOWN),  # NUT's words are upper case
    ],
)
def test_grid_from_status_words(status: str, grid: Grid) -> None:
    assert grid_from_status(status) is grid


def test_status_that_says_nothing_is_unknown_shown_raw_and_logged_once(
    nut_server: NutServer, reader: Reader, caplog: pytest.LogCaptureFixture
) -> None:
    source = reader.source(nut_server.port)
    for status in ("BYPASS", "OL OB"):
        nut_server.set_status(status)
        with caplog.at_level(logging.WARNING, logger="loadshed.drivers.nut"):
            first, second = reader.read(source), reader.read(source)
        assert first == second
        assert (first.grid, first.raw, first.status) == (Grid.UNKNOWN, status, Status.OK)
        assert status in first.detail
        assert first.battery_pct == 100.0  # the rest of the reading still comes through
        assert len([r for r in caplog.records if repr(status) in r.getMessage()]) == 1


# --- refusals -------------------------------------------------------------------------------


def test_unknown_ups_name_is_unknown_with_a_clear_detail(
    nut_server: NutServer, reader: Reader
) -> None:
    source = reader.source(nut_server.port, ups="garage")
    reading = reader.read(source)
    assert (reading.grid, reading.status) == (Grid.UNKNOWN, Status.FAILED)
    assert reading.detail == f"no UPS named 'garage' on the NUT server at {HOST}:{nut_server.port}"
    assert reader.read(source) == reading  # the connection survives an ERR: same answer again


def test_right_password_logs_in_once_and_keeps_the_connection(
    nut_server: NutServer, reader: Reader
) -> None:
    source = reader.source(nut_server.port, username=USER, password=PASSWORD)
    for _ in range(3):
        assert reader.read(source) == on_line()
    logins = nut_server.log("upsd.log").count(f"User {USER}@127.0.0.1 logged into UPS [ups]")
    assert logins == 1


def test_wrong_password_fails_clearly_backs_off_and_is_never_logged(
    nut_server: NutServer, reader: Reader, caplog: pytest.LogCaptureFixture
) -> None:
    source = reader.source(nut_server.port, username=USER, password=WRONG_PASSWORD)
    with caplog.at_level(logging.DEBUG):
        reading = reader.read(source)
        assert (reading.grid, reading.status) == (Grid.UNKNOWN, Status.FAILED)
        assert reading.detail.startswith(
            f"NUT server at {HOST}:{nut_server.port} refused the login for user '{USER}'"
        )
        assert f"next login attempt in {LOGIN_FIRST_S:.0f} s" in reading.detail
        # Within the back-off nothing is sent: the listener could be gone and the answer stays.
        nut_server.stop_serving()
        waiting = reader.read(source)
        assert waiting.status is Status.FAILED
        assert "refused the login" in waiting.detail
        nut_server.resume()
        reader.clock.advance(LOGIN_FIRST_S)
        again = reader.read(source)
        assert "next login attempt in 16 s" in again.detail  # tried again, refused again
    assert any("PASSWORD" in r.getMessage() for r in caplog.records)  # aionut's wire log ran
    for text in (caplog.text, repr(source), *(r.getMessage() for r in caplog.records)):
        assert WRONG_PASSWORD not in text
        assert PASSWORD not in text


@pytest.mark.parametrize("user", [SET_ONLY_USER, "nobody-here"])
def test_user_without_upsmon_rights_is_refused(
    nut_server: NutServer, reader: Reader, user: str
) -> None:
    source = reader.source(nut_server.port, username=user, password=PASSWORD)
    reading = reader.read(source)
    assert (reading.grid, reading.status) == (Grid.UNKNOWN, Status.FAILED)
    assert f"refused the login for user '{user}'" in reading.detail
    assert "upsmon secondary" in reading.detail


def test_driver_gone_is_unknown_and_says_so(nut_server: NutServer, reader: Reader) -> None:
    source = reader.source(nut_server.port)
    assert reader.read(source) == on_line()
    started = time.monotonic()
    nut_server.stop_driver()  # upsd stays up: it answers, but has nothing to tell
    print(f"upsd noticed its driver gone after {time.monotonic() - started:.2f} s")
    reading = reader.read(source)
    assert (reading.grid, reading.status) == (Grid.UNKNOWN, Status.FAILED)
    assert reading.detail == (
        f"the NUT server at {HOST}:{nut_server.port} has lost the driver of UPS 'ups'"
    )


@pytest.mark.parametrize(
    ("reply", "detail"),
    [
        pytest.param(
            'BEGIN LIST VAR ups\nVAR ups battery.charge "80"\nEND LIST VAR ups\n',
            "UPS 'ups' on the NUT server at {server} has no ups.status",
            id="no-status",
        ),
        pytest.param(
            "ERR DATA-STALE\n",
            "the NUT server at {server} has no fresh data from UPS 'ups': "
            "its driver cannot reach the UPS",
            id="data-stale",
        ),
        pytest.param(
            "BEGIN LIST VAR nas\n",
            "unexpected reply from the NUT server at {server}: Unexpected response: "
            "BEGIN LIST VAR nas",
            id="other-ups",
        ),
    ],
)
def test_replies_dummy_ups_cannot_give(
    sim_loop: LoopThread, reader: Reader, reply: str, detail: str
) -> None:
    # A stand-in: dummy-ups always fills in ups.status (WAIT, then OL) and its data never go
    # stale, so these replies come from a scripted server that answers every line with reply.
    async def answer(stream: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await stream.readline():
            writer.write(reply.encode())
            await writer.drain()
        writer.close()

    async def serve() -> asyncio.Server:
        return await asyncio.start_server(answer, HOST, 0)

    async def stop(server: asyncio.Server) -> None:
        server.close()

    server = sim_loop.run(serve())
    try:
        port = server.sockets[0].getsockname()[1]
        reading = reader.read(reader.source(port, timeout_s=QUICK_S))
    finally:
        sim_loop.run(stop(server))
    assert (reading.grid, reading.status) == (Grid.UNKNOWN, Status.FAILED)
    assert reading.detail == detail.format(server=f"{HOST}:{port}")
    assert reading.battery_pct == (80.0 if "battery" in reply else None)


# --- lost and found -------------------------------------------------------------------------


@pytest.mark.timeout(HANG_GUARD_S)
def test_stopped_server_is_unreachable_and_a_restart_is_read_again(
    nut_server: NutServer, reader: Reader
) -> None:
    source = reader.source(nut_server.port, username=USER, password=PASSWORD, timeout_s=2.0)
    assert reader.read(source) == on_line()
    nut_server.stop_serving()
    reading, elapsed_s = reader.timed_read(source, "read after NUT server stopped")
    assert (reading.grid, reading.status) == (Grid.UNKNOWN, Status.UNREACHABLE)
    assert reading.detail == (
        f"cannot reach the NUT server at {HOST}:{nut_server.port}: connection refused"
    )
    assert elapsed_s < source.timeout_s + SLACK_S
    started = time.monotonic()
    nut_server.resume()
    print(f"NUT server restart: {time.monotonic() - started:.2f} s")
    reading, _ = reader.timed_read(source, "read after NUT server restarted")
    assert reading == on_line()


@pytest.mark.timeout(HANG_GUARD_S)
def test_restart_between_reads_does_not_reuse_the_dead_connection(
    nut_server: NutServer, reader: Reader
) -> None:
    source = reader.source(nut_server.port, timeout_s=2.0)
    assert reader.read(source) == on_line()
    nut_server.stop_serving()  # the kept connection dies while nobody reads
    nut_server.resume()
    nut_server.set_status("OB")
    for n in range(3):
        reading, _ = reader.timed_read(source, f"read {n + 1} after a silent restart")
        assert reading == GridReading(Grid.OFF, "OB", 100.0, source=UPS)


class FreezingRelay:
    """A TCP relay to upsd that can freeze the connections it has: they stay open and carry
    nothing more, like a server behind a link that died; new connections relay as before."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.connections = 0
        self._frozen: set[int] = set()
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def freeze(self) -> None:
        self._frozen.update(range(self.connections))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number, self.connections = self.connections, self.connections + 1
        up_reader, up_writer = await asyncio.open_connection(HOST, self.target_port)
        self._writers += [writer, up_writer]
        await asyncio.gather(
            self._pump(reader, up_writer, number),
            self._pump(up_reader, writer, number),
            return_exceptions=True,
        )
        writer.close()
        up_writer.close()

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, number: int
    ) -> None:
        while data := await source.read(4096):
            if number not in self._frozen:
                sink.write(data)
                await sink.drain()


@pytest.mark.timeout(HANG_GUARD_S)
def test_connection_that_went_silent_is_dropped_not_reused(
    nut_server: NutServer, reader: Reader
) -> None:
    relay = FreezingRelay(nut_server.port)
    reader.loop.run(relay.start())
    try:
        source = reader.source(relay.port, timeout_s=QUICK_S)
        assert reader.read(source) == on_line()
        relay.freeze()  # the kept connection goes quiet; upsd itself is fine
        reading, elapsed_s = reader.timed_read(source, "read on a frozen connection")
        assert (reading.status, reading.detail) == (
            Status.UNREACHABLE,
            f"no answer from the NUT server in {QUICK_S:g} s",
        )
        assert elapsed_s < QUICK_S + SLACK_S
        reading, _ = reader.timed_read(source, "next read (new connection)")
        assert reading == on_line()
        assert relay.connections == 2
    finally:
        reader.loop.run(relay.stop())


@pytest.mark.timeout(HANG_GUARD_S)
def test_listener_that_never_answers_is_unreachable_within_the_timeout(reader: Reader) -> None:
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen(4)  # the kernel completes connections; nobody ever answers
        source = reader.source(listener.getsockname()[1], timeout_s=QUICK_S)
        reading, elapsed_s = reader.timed_read(source, "read from a silent listener")
        assert (reading.grid, reading.status) == (Grid.UNKNOWN, Status.UNREACHABLE)
        assert reading.detail == f"no answer from the NUT server in {QUICK_S:g} s"
        assert QUICK_S * 0.9 <= elapsed_s < QUICK_S + SLACK_S
        # The hung connection was closed, not kept: its far end reads end-of-file.
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(SLACK_S)
            while conn.recv(4096):  # what the source sent before giving up, then EOF
                pass
        second, elapsed_s = reader.timed_read(source, "second read from a silent listener")
        assert second == reading
        assert elapsed_s < QUICK_S + SLACK_S


def test_nothing_listening_is_unreachable_at_once(reader: Reader) -> None:
    with socket.socket() as unused:
        unused.bind((HOST, 0))
        port = unused.getsockname()[1]  # bound, never listening: connections are refused
        reading, elapsed_s = reader.timed_read(reader.source(port), "read from a closed port")
    assert reading.status is Status.UNREACHABLE
    assert reading.detail.endswith(": connection refused")
    assert elapsed_s < SLACK_S


def test_close_then_read_connects_again(nut_server: NutServer, reader: Reader) -> None:
    source = reader.source(nut_server.port)
    assert reader.read(source) == on_line()
    reader.loop.run(source.close())
    reader.loop.run(source.close())  # twice is harmless
    assert reader.read(source) == on_line()


# --- the config's NUT_UPS -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ups@127.0.0.1", ("ups", "127.0.0.1", 3493)),
        ("ups@127.0.0.1:3493", ("ups", "127.0.0.1", 3493)),
        ("ups@[fd00::5]:3493", ("ups", "fd00::5", 3493)),
        ("ups@[fd00::5]", ("ups", "fd00::5", 3493)),
        ("rack-ups.2@nas.local:3494", ("rack-ups.2", "nas.local", 3494)),
        ("  ups@nas  ", ("ups", "nas", 3493)),
    ],
)
def test_parse_nut_ups_accepts(text: str, expected: tuple[str, str, int]) -> None:
    target = parse_nut_ups(text)
    assert (target.ups, target.host, target.port) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "written ups@host"),
        ("ups", "written ups@host"),
        ("@host", "written ups@host"),
        ("ups@", "written ups@host"),
        ("ups@host:port", "port 'port' is not a number"),
        ("ups@host:70000", "port '70000' is not a number from 1 to 65535"),
        ("ups@host:0", "port '0' is not a number from 1 to 65535"),
        ("ups@host:", "no port after it"),
        ("my ups@host", "not a UPS name"),
        ("ups@[fd00::5", "written \\[address\\]"),
        ("ups@[nas]:3493", "only an IPv6 address goes in brackets"),
        ("ups@[fd00::5]3493", "written \\[address\\]"),
        ("ups@no host", "not a host name"),
    ],
)
def test_parse_nut_ups_refuses_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_nut_ups(text)


def test_endpoint_puts_ipv6_in_brackets() -> None:
    target = parse_nut_ups("ups@[fd00::5]")
    source = NutSource(target.ups, target.host, target.port, password="hunter22")
    assert source.endpoint == "ups@[fd00::5]:3493"
    assert "hunter22" not in repr(source)
