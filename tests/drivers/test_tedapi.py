"""TedapiSource against the simulated TEDAPI gateway on loopback, through the real pypowerwall.

The simulator and the driver share one loop (the `sim_loop` thread); every read is one
`LoopThread.run`, and pypowerwall runs on the source's own thread. Password back-offs run on
an injected clock. pypowerwall's 1 s cache runs on the real clock: a test that changes the
site reads again until the change shows, within one poll (POLL_S), never by sleeping a fixed
time. Timings are printed (run with -s), never asserted tightly; `timeout` marks stop hangs.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pypowerwall.tedapi import TEDAPI

from loadshed.drivers.backoff import LOGIN_FAILURES_MAX, LOGIN_FIRST_S, LOGIN_WINDOW_S
from loadshed.drivers.tedapi import (
    CACHE_S,
    GARBAGE_DETAIL,
    GRID_FROM_ISLANDER,
    KEY_UNVERIFIED_DETAIL,
    NO_GRID_DETAIL,
    PREVIOUS_CALL_DETAIL,
    SOCKET_SHARE,
    WRONG_PASSWORD_DETAIL,
    TedapiSource,
)
from loadshed.model import Grid, GridReading, Status
from loadshed.sim.base import Fault, SiteState
from loadshed.sim.loop import LoopThread
from loadshed.sim.tedapi import GRID_CONNECTED, GRID_ISLANDED, TedapiSim
from tests.drivers.test_powerwall import FakeClock

PASSWORD: Final = "gw-Secret-9F3B2"
WRONG_PASSWORD: Final = "not-the-Secret-77"
POLL_S: Final = 2.0  # the engine's poll interval: a change must show within one
QUICK_S: Final = 1.0  # driver timeout where a hang is expected: the test waits about this long
SETTLE_S: Final = 15.0  # longest a test polls for a state that must come (a loaded machine)
HANG_GUARD_S: Final = 30  # pytest-timeout for tests that provoke a hang
ISLANDED: Final = (
    "SystemIslandedActive",
    "SystemIslandedReady",
    "SystemWaitForUser",
    "SystemTransitionToIsland",
    "SystemTransitionToGrid",
    "SystemMicroGridFaulted",
)

pytestmark = [
    pytest.mark.timeout(120),
    # pytest restores the warning filters pypowerwall's import turned off (disable_warnings)
    pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning"),
    # and the driver's filter for pypowerwall's v1r key warnings (the detail says it instead)
    pytest.mark.filterwarnings("ignore::UserWarning:pypowerwall"),
]


class Rig:
    """One simulated gateway on the sim loop, and the sources reading it; all closed after."""

    def __init__(self, loop: LoopThread) -> None:
        self.loop = loop
        self.clock = FakeClock()
        self.site = SiteState(load_w=1_250.0, solar_w=640.0, battery_pct=62.5, site_w=610.0)
        self.sim = TedapiSim(self.site, PASSWORD)
        loop.run(self.sim.start())
        self._sources: list[TedapiSource] = []

    def source(
        self,
        password: str = PASSWORD,
        *,
        timeout_s: float = 5.0,
        rsa_key_path: Path | None = None,
        clock: Callable[[], float] | None = None,
    ) -> TedapiSource:
        source = TedapiSource(
            self.sim.endpoint,
            password,
            timeout_s=timeout_s,
            rsa_key_path=rsa_key_path,
            clock=clock or self.clock,
        )
        self._sources.append(source)
        return source

    def read(self, source: TedapiSource) -> GridReading:
        return self.loop.run(source.read())

    def timed_read(self, source: TedapiSource, what: str) -> tuple[GridReading, float]:
        started = time.monotonic()
        reading = self.read(source)
        elapsed = time.monotonic() - started
        print(f"{what}: {elapsed * 1000:.0f} ms: {reading.status.value}: {reading.detail}")
        return reading, elapsed

    def read_until(
        self, source: TedapiSource, done: Callable[[GridReading], bool], within_s: float
    ) -> tuple[GridReading, float]:
        """Read (no pause between reads) until done(reading), for at most within_s."""
        started = time.monotonic()
        while True:
            reading = self.read(source)
            elapsed = time.monotonic() - started
            if done(reading) or elapsed > within_s:
                return reading, elapsed

    def fault(self, fault: Fault, slow_s: float | None = None) -> None:
        self.loop.run(self.sim.set_fault(fault, slow_s))

    def total_requests(self) -> int:
        return sum(self.sim.requests.values())

    def close(self) -> None:
        for source in self._sources:
            self.loop.run(source.close())
        self.loop.run(self.sim.stop())


@pytest.fixture
def rig(sim_loop: LoopThread) -> Iterator[Rig]:
    rig = Rig(sim_loop)
    yield rig
    rig.close()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def write_key(path: Path, key: Any) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


# --- grid states, charge, meters -------------------------------------------------------------


def test_connected_is_on_with_charge_load_and_solar(rig: Rig) -> None:
    source = rig.source()
    assert (source.api, source.endpoint) == ("tedapi", rig.sim.endpoint)
    assert rig.read(source) == GridReading(Grid.ON, GRID_CONNECTED, 62.5, 1_250.0, 640.0)


@pytest.mark.parametrize("grid_status", ISLANDED)
def test_islanded_is_off(rig: Rig, grid_status: str) -> None:
    rig.site.grid_status = grid_status
    assert rig.read(rig.source()) == GridReading(Grid.OFF, GRID_ISLANDED, 62.5, 1_250.0, 640.0)


def test_the_table_knows_the_simulated_words() -> None:
    assert GRID_FROM_ISLANDER == {GRID_CONNECTED: Grid.ON, GRID_ISLANDED: Grid.OFF}


def test_off_grid_and_back_are_seen_within_one_poll(rig: Rig) -> None:
    """pypowerwall caches the status CACHE_S (under a poll): a change shows by the next poll,
    and the reads in between cost the gateway nothing."""
    source = rig.source()
    assert rig.read(source).grid is Grid.ON
    for site_status, grid in [("SystemIslandedActive", Grid.OFF), ("SystemGridConnected", Grid.ON)]:
        rig.site.grid_status = site_status
        posts = rig.sim.requests["POST /tedapi/v1"]
        reading, elapsed = rig.read_until(source, lambda r, g=grid: r.grid is g, POLL_S * 2)
        print(f"{grid.value} seen after {elapsed:.2f} s")
        assert reading.grid is grid
        assert elapsed < POLL_S
        assert rig.sim.requests["POST /tedapi/v1"] - posts <= 2  # at most one per CACHE_S
    assert CACHE_S < POLL_S


def test_charge_load_and_solar_follow_the_site(rig: Rig) -> None:
    source = rig.source()
    assert rig.read(source).battery_pct == 62.5
    rig.site.battery_pct = 41.0
    rig.site.load_w = 300.0
    rig.site.solar_w = 0.0
    reading, _ = rig.read_until(source, lambda r: r.battery_pct != 62.5, POLL_S)
    assert reading == GridReading(Grid.ON, GRID_CONNECTED, 41.0, 300.0, 0.0)


def test_an_empty_battery_is_zero_percent_not_unknown(rig: Rig) -> None:
    rig.site.battery_pct = 0.0  # pypowerwall's own battery_level() says None here
    assert rig.read(rig.source()).battery_pct == 0.0


@pytest.mark.parametrize(
    "status",
    [
        pytest.param({}, id="empty"),
        pytest.param({"control": {"alerts": {"active": []}}}, id="no-esCan"),
        pytest.param({"esCan": {"bus": {"ISLANDER": None}}, "control": None}, id="null-islander"),
        pytest.param(
            {"esCan": {"bus": {"ISLANDER": {"ISLAND_GridConnection": {}}}}}, id="no-grid-value"
        ),
        pytest.param(
            {
                "esCan": {
                    "bus": {"ISLANDER": {"ISLAND_GridConnection": {"ISLAND_GridConnected": 1}}}
                }
            },
            id="not-a-word",
        ),
    ],
)
def test_a_missing_grid_path_is_unknown_never_islanded(
    rig: Rig, status: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    rig.sim.status_text = json.dumps(status)
    source = rig.source()
    with caplog.at_level(logging.WARNING, logger="loadshed.drivers.tedapi"):
        readings = [rig.read(source), rig.read(source)]
    for reading in readings:
        assert reading == GridReading(Grid.UNKNOWN, detail=NO_GRID_DETAIL, status=Status.FAILED)
    assert len([r for r in caplog.records if "has no grid state" in r.getMessage()]) == 1


def test_without_the_grid_path_the_connected_alert_still_counts(rig: Rig) -> None:
    rig.sim.status_text = json.dumps({"control": {"alerts": {"active": ["SystemConnectedToGrid"]}}})
    reading = rig.read(rig.source())
    assert (reading.grid, reading.raw, reading.status) == (
        Grid.ON,
        "SystemConnectedToGrid",
        Status.OK,
    )


def test_unknown_grid_word_is_unknown_shown_raw_and_logged_once(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    doc = rig.sim.status_doc()
    grid = doc["esCan"]["bus"]["ISLANDER"]["ISLAND_GridConnection"]
    grid["ISLAND_GridConnected"] = "ISLAND_GridConnected_SomethingNew"
    doc["control"]["alerts"]["active"] = []
    rig.sim.status_text = json.dumps(doc)
    source = rig.source()
    with caplog.at_level(logging.WARNING, logger="loadshed.drivers.tedapi"):
        first, second = rig.read(source), rig.read(source)
    assert first == second
    assert (first.grid, first.raw) == (Grid.UNKNOWN, "ISLAND_GridConnected_SomethingNew")
    assert "ISLAND_GridConnected_SomethingNew" in first.detail
    assert first.battery_pct == 62.5  # the rest of the reading still comes through
    logged = [r for r in caplog.records if "SomethingNew" in r.getMessage()]
    assert len(logged) == 1


def test_the_connected_alert_wins_as_in_pypowerwall(rig: Rig) -> None:
    """Solar-only gateways report Island while connected and list SystemConnectedToGrid
    (Powerwall-Dashboard#577); pypowerwall's extract_grid_status trusts the alert first."""
    doc = rig.sim.status_doc()
    doc["esCan"]["bus"]["ISLANDER"]["ISLAND_GridConnection"]["ISLAND_GridConnected"] = GRID_ISLANDED
    rig.sim.status_text = json.dumps(doc)
    reading = rig.read(rig.source())
    assert (reading.grid, reading.raw, reading.status) == (Grid.ON, GRID_ISLANDED, Status.OK)
    assert "SystemConnectedToGrid" in reading.detail


def test_broken_json_inside_a_good_reply_is_unknown(rig: Rig) -> None:
    rig.sim.status_text = '{"esCan": {"bus": '
    reading = rig.read(rig.source())
    assert (reading.grid, reading.status) == (Grid.UNKNOWN, Status.FAILED)


# --- wrong password ----------------------------------------------------------------------------


def test_wrong_password_is_failed_with_the_qr_sticker_wording(rig: Rig) -> None:
    reading = rig.read(rig.source(WRONG_PASSWORD))
    assert (reading.grid, reading.status) == (Grid.UNKNOWN, Status.FAILED)
    assert reading.detail == f"{WRONG_PASSWORD_DETAIL}; next attempt in {LOGIN_FIRST_S:.0f} s"
    assert "QR sticker" in reading.detail
    assert rig.sim.failed_logins == 1


def test_a_rejected_password_is_retried_soon_then_less_often_never_a_lockout(rig: Rig) -> None:
    """Two hours of polling every 2 s with a wrong gateway password: the first retry comes
    within 10 s, the pauses grow, and no 15 minutes see more than 5 refused requests."""
    source = rig.source(WRONG_PASSWORD)
    failed_at: list[float] = []
    for tick in range(3600):
        before = rig.sim.failed_logins
        reading = rig.read(source)
        assert reading.detail.startswith(WRONG_PASSWORD_DETAIL)
        assert "next attempt in" in reading.detail
        assert reading.status is Status.FAILED
        if rig.sim.failed_logins > before:
            assert rig.sim.failed_logins == before + 1  # one refused request per attempt
            failed_at.append(tick * 2.0)
        rig.clock.advance(2)
    print(f"{len(failed_at)} attempts at {failed_at}")
    assert failed_at[1] - failed_at[0] <= 10
    gaps = [b - a for a, b in itertools.pairwise(failed_at)]
    assert gaps[:4] == sorted(gaps[:4]) and gaps[3] > gaps[0]
    for i, start in enumerate(failed_at):
        in_window = [t for t in failed_at[i:] if t - start < LOGIN_WINDOW_S]
        assert len(in_window) <= LOGIN_FAILURES_MAX
    assert len(failed_at) >= 8  # it keeps trying, slowly: a corrected password is found
    assert rig.sim.queries["status"] == 0


def test_rejected_then_recovers_after_the_back_off(rig: Rig) -> None:
    source = rig.source()
    assert rig.read(source).grid is Grid.ON
    rig.fault(Fault.BAD_AUTH)  # the gateway refuses the password it took a moment ago
    refused, _ = rig.read_until(source, lambda r: r.grid is not Grid.ON, POLL_S)
    assert refused.detail.startswith(WRONG_PASSWORD_DETAIL)
    rig.fault(Fault.NONE)
    before = rig.total_requests()
    waiting = rig.read(source)
    assert waiting.detail == f"{WRONG_PASSWORD_DETAIL}; next attempt in {LOGIN_FIRST_S:.0f} s"
    assert rig.total_requests() == before  # nothing sent while backing off
    rig.clock.advance(LOGIN_FIRST_S)
    assert rig.read(source).grid is Grid.ON
    assert rig.sim.failed_logins == 1


# --- no answer, garbage, slow down ---------------------------------------------------------


@pytest.mark.timeout(HANG_GUARD_S)
@pytest.mark.parametrize("connected", [False, True], ids=["fresh", "connected"])
def test_hung_gateway_is_unreachable_within_the_timeout(rig: Rig, connected: bool) -> None:
    source = rig.source(timeout_s=QUICK_S)
    if connected:  # a loaded machine may take longer than QUICK_S to connect: poll for it
        assert rig.read_until(source, lambda r: r.grid is Grid.ON, SETTLE_S)[0].grid is Grid.ON
    rig.fault(Fault.HUNG)
    # Connected, the first reads are answered from pypowerwall's cache (up to CACHE_S).
    reading, elapsed = rig.read_until(source, lambda r: r.grid is not Grid.ON, POLL_S + 10)
    print(f"hung: unknown after {elapsed * 1000:.0f} ms: {reading.detail}")
    assert reading == GridReading(
        Grid.UNKNOWN,
        detail=f"no answer from the Powerwall in {QUICK_S:g} s",
        status=Status.UNREACHABLE,
    )
    assert elapsed < CACHE_S + QUICK_S + 10  # bounded (loosely: a loaded machine is slow)
    _, elapsed = rig.timed_read(source, "hung, again")
    assert elapsed < QUICK_S + 10
    rig.fault(Fault.NONE)
    reading, _ = rig.read_until(source, lambda r: r.grid is Grid.ON, SETTLE_S)
    assert reading.grid is Grid.ON


@pytest.mark.timeout(HANG_GUARD_S)
def test_a_call_still_running_is_unreachable_at_once_not_queued(
    rig: Rig, rsa_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    """A fresh v1r source costs four requests (login, DIN, config probe, status): each under
    pypowerwall's per-request timeout, together over read()'s deadline, the call outlives the
    read. The next read does not queue behind it."""
    timeout_s = 3.0
    rig.sim.register_key(rsa_key.public_key())
    share = 0.35  # of the budget, per request: four make more than one, one stays under
    assert share * 4 > 1 and share < SOCKET_SHARE
    rig.fault(Fault.SLOW, slow_s=timeout_s * share)
    source = rig.source(timeout_s=timeout_s, rsa_key_path=write_key(tmp_path / "k.pem", rsa_key))
    first, elapsed = rig.timed_read(source, "slow, fresh")
    assert first.detail == f"no answer from the Powerwall in {timeout_s:g} s"
    assert elapsed < timeout_s + 10
    before = rig.total_requests()
    second, elapsed = rig.timed_read(source, "while the first call runs")
    assert (second.status, second.detail) == (Status.UNREACHABLE, PREVIOUS_CALL_DETAIL)
    assert elapsed < timeout_s  # answered at once, not after another timeout
    assert rig.total_requests() == before  # and nothing more was sent
    reading, _ = rig.read_until(source, lambda r: r.grid is Grid.ON, SETTLE_S)
    assert reading.grid is Grid.ON  # connected by the first call: one request per read now


def test_down_is_unreachable_fast_and_recovers(rig: Rig) -> None:
    source = rig.source()
    assert rig.read(source).grid is Grid.ON
    rig.fault(Fault.DOWN)
    rig.read_until(source, lambda r: r.grid is not Grid.ON, POLL_S)
    reading, elapsed = rig.timed_read(source, "down")
    assert reading.status is Status.UNREACHABLE
    assert reading.detail.startswith(
        f"cannot reach the Powerwall at {rig.sim.endpoint}: connection refused"
    )
    assert elapsed < 5.0  # refused at once: no retries, no back-off sleeps
    rig.fault(Fault.NONE)
    assert rig.read(source).grid is Grid.ON


def test_down_from_the_start_is_unreachable(rig: Rig) -> None:
    rig.fault(Fault.DOWN)
    reading = rig.read(rig.source())
    assert (reading.grid, reading.status) == (Grid.UNKNOWN, Status.UNREACHABLE)
    assert "connection refused" in reading.detail


@pytest.mark.parametrize("connected", [False, True], ids=["fresh", "connected"])
def test_garbage_is_failed_never_islanded(rig: Rig, connected: bool) -> None:
    rig.site.grid_status = "SystemIslandedActive"
    source = rig.source()
    if connected:
        assert rig.read(source).grid is Grid.OFF
    rig.sim.garbage = True
    reading, _ = rig.read_until(source, lambda r: r.grid is not Grid.OFF, POLL_S)
    assert reading == GridReading(Grid.UNKNOWN, detail=GARBAGE_DETAIL, status=Status.FAILED)
    rig.sim.garbage = False
    assert rig.read(source).grid is Grid.OFF


def test_rate_limited_is_failed_and_pypowerwall_pauses(rig: Rig) -> None:
    source = rig.source()
    rig.sim.rate_limited = True
    reading = rig.read(source)
    assert reading.status is Status.FAILED
    assert reading.detail.startswith("the Powerwall asked us to slow down (HTTP 429)")
    before = rig.total_requests()
    rig.sim.rate_limited = False
    later = rig.read(source)
    assert later.detail.startswith("the Powerwall asked us to slow down")
    assert rig.total_requests() == before  # pypowerwall's pause: nothing sent


# --- the environment, the cost, the lifecycle ------------------------------------------------


def test_a_bogus_requests_ca_bundle_does_not_break_reads(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "no-such-bundle.pem"))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(tmp_path / "no-such-bundle.pem"))
    assert rig.read(rig.source()) == GridReading(Grid.ON, GRID_CONNECTED, 62.5, 1_250.0, 640.0)


def test_a_bogus_requests_ca_bundle_breaks_pypowerwall_as_shipped(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The control for the test above: pypowerwall's own session obeys the variable."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "no-such-bundle.pem"))
    assert TEDAPI(PASSWORD, host=rig.sim.endpoint, timeout=2).din is None
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    assert TEDAPI(PASSWORD, host=rig.sim.endpoint, timeout=2).din is not None


def test_one_poll_costs_one_request_once_connected(rig: Rig) -> None:
    source = rig.source()
    rig.timed_read(source, "first read (connects)")
    assert rig.sim.requests == {"GET /": 1, "GET /tedapi/din": 1, "POST /tedapi/v1": 1}
    for posts in range(1, 4):
        # Reads back to back: pypowerwall's cache answers them until it expires.
        _, elapsed = rig.read_until(
            source, lambda _r, n=posts: rig.sim.requests["POST /tedapi/v1"] > n, POLL_S
        )
        print(f"the next request after {elapsed * 1000:.0f} ms of reads")
        assert rig.sim.requests["POST /tedapi/v1"] == posts + 1
    assert rig.sim.requests == {"GET /": 1, "GET /tedapi/din": 1, "POST /tedapi/v1": 4}
    assert rig.sim.queries == {"status": 4}


def test_made_outside_a_loop_and_closed_any_time(rig: Rig) -> None:
    source = TedapiSource(rig.sim.endpoint, PASSWORD)  # no loop in this thread: fine
    rig.loop.run(source.close())  # before any read
    assert rig.read(source).grid is Grid.ON
    rig.loop.run(source.close())
    rig.loop.run(source.close())
    assert rig.read(source).grid is Grid.ON  # a new client, connecting again
    rig.loop.run(source.close())
    assert rig.sim.requests["GET /tedapi/din"] == 2


@pytest.mark.timeout(HANG_GUARD_S)
def test_close_does_not_wait_for_a_hung_call(rig: Rig) -> None:
    source = rig.source(timeout_s=QUICK_S)
    rig.fault(Fault.HUNG)
    assert rig.read(source).status is Status.UNREACHABLE
    started = time.monotonic()
    rig.loop.run(source.close())
    assert time.monotonic() - started < QUICK_S


@pytest.mark.timeout(HANG_GUARD_S)
def test_password_never_leaks(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    good = rig.source(timeout_s=QUICK_S * 2)
    bad = rig.source(WRONG_PASSWORD, timeout_s=QUICK_S * 2)
    details = [rig.read(good).detail, rig.read(bad).detail]
    rig.sim.status_text = f'{{"esCan": {{"bus": {{"ISLANDER": {{"ISLAND_GridConnection": {{"ISLAND_GridConnected": "Weird{PASSWORD}"}}}}}}}}}}'  # noqa: E501
    details.append(rig.read_until(good, lambda r: r.grid is not Grid.ON, POLL_S)[0].detail)
    rig.sim.status_text = None
    rig.fault(Fault.HUNG)
    details.append(rig.read_until(good, lambda r: r.status is not Status.OK, POLL_S)[0].detail)
    for fault in (Fault.DOWN, Fault.BAD_AUTH):
        rig.fault(fault)
        details.append(rig.read(good).detail)
    assert "***" in details[2]
    text = "\n".join(
        [*details, repr(good), repr(bad), repr(rig.sim)]
        + [r.getMessage() + (r.exc_text or "") for r in caplog.records]
    )
    assert PASSWORD not in text
    assert WRONG_PASSWORD not in text
    assert len(caplog.records) > 5  # the driver's and the sim's DEBUG lines were captured


@pytest.mark.timeout(HANG_GUARD_S)
def test_pypowerwall_at_debug_does_not_log_the_password_either(
    rig: Rig, caplog: pytest.LogCaptureFixture, rsa_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    """loadshed keeps pypowerwall's loggers at CRITICAL; this lowers them to DEBUG to check
    what they would say (statuses, config.json, HTTP lines) does not hold the password."""
    library = logging.getLogger("pypowerwall")
    level = library.level
    library.setLevel(logging.DEBUG)
    try:
        caplog.set_level(logging.DEBUG)
        rig.sim.register_key(rsa_key.public_key())
        key_path = write_key(tmp_path / "key.pem", rsa_key)
        for password, key in itertools.product([PASSWORD, WRONG_PASSWORD], [None, key_path]):
            rig.read(rig.source(password, rsa_key_path=key))
    finally:
        library.setLevel(level)
    pypowerwall_lines = [r for r in caplog.records if r.name.startswith("pypowerwall")]
    assert len(pypowerwall_lines) > 10
    text = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    for secret in (PASSWORD, WRONG_PASSWORD):
        assert secret not in text
        assert secret[-5:] not in text  # v1r's customer password


# --- v1r: a Powerwall 3 on the wired LAN, with a registered RSA key ------------------------------


def test_v1r_with_a_registered_key_reads_the_grid(
    rig: Rig, rsa_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    rig.sim.register_key(rsa_key.public_key())
    source = rig.source(rsa_key_path=write_key(tmp_path / "key.pem", rsa_key))
    assert source.api == "v1r"
    assert rig.read(source) == GridReading(Grid.ON, GRID_CONNECTED, 62.5, 1_250.0, 640.0)
    rig.site.grid_status = "SystemIslandedActive"
    reading, _ = rig.read_until(source, lambda r: r.grid is not Grid.ON, POLL_S)
    assert (reading.grid, reading.raw) == (Grid.OFF, GRID_ISLANDED)
    assert rig.sim.requests["POST /tedapi/v1"] == 0
    assert rig.sim.requests["POST /api/login/Basic"] == 1


def test_v1r_unknown_key_says_how_to_register_it(
    rig: Rig, rsa_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    key_path = write_key(tmp_path / "key.pem", rsa_key)
    reading = rig.read(rig.source(rsa_key_path=key_path))
    assert (reading.grid, reading.status) == (Grid.UNKNOWN, Status.FAILED)
    assert f"does not know the RSA key {key_path}" in reading.detail
    assert "python -m pypowerwall register" in reading.detail


def test_v1r_unverified_key_says_to_switch_the_powerwall_off_and_on(
    rig: Rig, rsa_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    rig.sim.register_key(rsa_key.public_key())
    rig.sim.key_verified = False
    reading = rig.read(rig.source(rsa_key_path=write_key(tmp_path / "key.pem", rsa_key)))
    assert (reading.status, reading.detail) == (Status.FAILED, KEY_UNVERIFIED_DETAIL)


def test_v1r_wrong_password_backs_off(rig: Rig, rsa_key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    rig.sim.register_key(rsa_key.public_key())
    source = rig.source(WRONG_PASSWORD, rsa_key_path=write_key(tmp_path / "key.pem", rsa_key))
    for _ in range(3):
        reading = rig.read(source)
        assert reading.detail.startswith(WRONG_PASSWORD_DETAIL)
        rig.clock.advance(2)
    assert rig.sim.failed_logins == 1
    assert rig.sim.requests["POST /api/login/Basic"] == 1


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        pytest.param(None, "it does not exist", id="missing"),
        pytest.param(
            lambda p: p.write_text("not a key\n"), "it is not a PEM private key", id="garbage"
        ),
        pytest.param(
            lambda p: write_key(p, ec.generate_private_key(ec.SECP256R1())),
            "it is not an RSA key",
            id="ec-key",
        ),
        pytest.param(
            lambda p: p.write_bytes(
                rsa.generate_private_key(public_exponent=65537, key_size=1024).private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.BestAvailableEncryption(b"passphrase"),
                )
            ),
            "it is protected by a passphrase",
            id="encrypted",
        ),
        pytest.param(
            lambda p: (p.write_text("x"), p.chmod(0)),
            "permission denied",
            id="unreadable",
            marks=pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file"),
        ),
    ],
)
def test_v1r_unusable_key_file_is_a_clear_failure_and_sends_nothing(
    rig: Rig, tmp_path: Path, make: Callable[[Path], object] | None, reason: str
) -> None:
    key_path = tmp_path / "key.pem"
    if make is not None:
        make(key_path)
    source = rig.source(rsa_key_path=key_path)
    reading = rig.read(source)
    assert reading == GridReading(
        Grid.UNKNOWN,
        detail=f"cannot use the RSA key file {key_path}: {reason}",
        status=Status.FAILED,
    )
    assert rig.total_requests() == 0
    assert rig.read(source).detail == reading.detail  # tried again each poll: the owner may fix it
