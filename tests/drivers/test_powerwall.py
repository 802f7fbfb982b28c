"""PowerwallSource against the simulated gateway on loopback, through the real tesla_powerwall.

The simulator and the driver share one loop (the `sim_loop` thread); every read is one
`LoopThread.run`. Back-offs and session lifetimes run on an injected clock: nothing sleeps.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from loadshed.drivers.backoff import LOGIN_FAILURES_MAX, LOGIN_WINDOW_S
from loadshed.drivers.powerwall import (
    GRID_FROM_STATUS,
    LOGIN_BACKOFF_S,
    REFUSED_RETRY_S,
    SLOWDOWN_BACKOFF_MAX_S,
    SLOWDOWN_BACKOFF_S,
    SLOWDOWN_FORGET_S,
    STOPPED_DETAIL,
    WRONG_PASSWORD_DETAIL,
    PowerwallSource,
)
from loadshed.model import Grid, GridReading, Status
from loadshed.sim.base import Fault, SiteState
from loadshed.sim.loop import LoopThread
from loadshed.sim.powerwall import AGGREGATES_PATH, GRID_STATUS_PATH, SOE_PATH, PowerwallSim
from loadshed.trust import TRUST_FILE, Trust

PASSWORD: Final = "pw-Secret-9f3b2"
WRONG_PASSWORD: Final = "not-the-Secret-77"
FIRMWARE_DIRS: Final = sorted((Path(__file__).parents[1] / "fixtures" / "powerwall").glob("fw-*"))
QUICK_S: Final = 0.3  # driver timeout where a hang is expected: the test waits about this long
HANG_GUARD_S: Final = 20  # pytest-timeout for tests that provoke a hang


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Rig:
    """One simulated gateway on the sim loop, and the sources reading it; all closed after."""

    def __init__(self, loop: LoopThread) -> None:
        self.loop = loop
        self.clock = FakeClock()
        self.site = SiteState(load_w=1_250.0, solar_w=640.0, battery_pct=62.5, site_w=610.0)
        self._sims: list[PowerwallSim] = []
        self._sources: list[PowerwallSource] = []
        self.sim = self.start_sim()

    def start_sim(self, responses_dir: Path | None = None) -> PowerwallSim:
        sim = PowerwallSim(self.site, PASSWORD, responses_dir=responses_dir, clock=self.clock)
        self.loop.run(sim.start())
        self._sims.append(sim)
        return sim

    def source(
        self,
        password: str = PASSWORD,
        *,
        timeout_s: float = 2.0,
        endpoint: str | None = None,
        sim: PowerwallSim | None = None,
    ) -> PowerwallSource:
        source = PowerwallSource(
            endpoint or (sim or self.sim).endpoint,
            password,
            timeout_s=timeout_s,
            clock=self.clock,
        )
        self._sources.append(source)
        return source

    def read(self, source: PowerwallSource) -> GridReading:
        return self.loop.run(source.read())

    def fault(self, fault: Fault, slow_s: float | None = None) -> None:
        self.loop.run(self.sim.set_fault(fault, slow_s))

    def total_requests(self) -> int:
        return sum(self.sim.requests.values())

    def close(self) -> None:
        for source in self._sources:
            self.loop.run(source.close())
        for sim in self._sims:
            self.loop.run(sim.stop())


@pytest.fixture
def rig(sim_loop: LoopThread) -> Iterator[Rig]:
    rig = Rig(sim_loop)
    yield rig
    rig.close()


# --- grid states, charge, meters -------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "grid"),
    [
        ("SystemGridConnected", Grid.ON),
        ("SystemIslandedActive", Grid.OFF),
        ("SystemIslandedReady", Grid.OFF),
        ("SystemWaitForUser", Grid.OFF),
        ("SystemTransitionToIsland", Grid.OFF),
        ("SystemTransitionToGrid", Grid.OFF),
        ("SystemMicroGridFaulted", Grid.OFF),
    ],
)
def test_grid_status_maps_as_design_says(rig: Rig, raw: str, grid: Grid) -> None:
    rig.site.grid_status = raw
    reading = rig.read(rig.source())
    assert reading == GridReading(grid, raw, 62.5, 1_250.0, 640.0)


def test_table_covers_every_library_state_and_microgrid_faulted() -> None:
    from tesla_powerwall.const import GridStatus

    assert set(GRID_FROM_STATUS) == {s.value for s in GridStatus} | {"SystemMicroGridFaulted"}


def test_unknown_grid_status_is_unknown_shown_raw_and_logged_once(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    rig.site.grid_status = "SystemGridSomethingNew"
    source = rig.source()
    with caplog.at_level(logging.WARNING, logger="loadshed.drivers.powerwall"):
        first, second = rig.read(source), rig.read(source)
    assert first == second
    assert first.grid is Grid.UNKNOWN
    assert first.raw == "SystemGridSomethingNew"
    assert "SystemGridSomethingNew" in first.detail
    assert first.battery_pct == 62.5  # the rest of the reading still comes through
    logged = [r for r in caplog.records if "SystemGridSomethingNew" in r.getMessage()]
    assert len(logged) == 1


def test_reads_follow_the_site(rig: Rig) -> None:
    source = rig.source()
    assert rig.read(source).load_w == 1_250.0
    rig.site.grid_status = "SystemIslandedActive"
    rig.site.battery_pct = 41.0
    rig.site.load_w = 300.0
    rig.site.solar_w = 0.0
    assert rig.read(source) == GridReading(Grid.OFF, "SystemIslandedActive", 41.0, 300.0, 0.0)


@pytest.mark.parametrize("firmware", FIRMWARE_DIRS, ids=lambda p: p.name)
def test_reads_captured_firmware_shapes(rig: Rig, firmware: Path) -> None:
    sim = rig.start_sim(responses_dir=firmware)
    rig.site.grid_status = "SystemIslandedActive"
    reading = rig.read(rig.source(sim=sim))
    assert reading == GridReading(Grid.OFF, "SystemIslandedActive", 62.5, 1_250.0, 640.0)
    assert sim.logins == 1


def test_restricted_firmware_still_reads_grid_battery_and_load(rig: Rig) -> None:
    rig.sim.restricted = True
    reading = rig.read(rig.source())
    assert reading == GridReading(Grid.ON, "SystemGridConnected", 62.5, 1_250.0, 640.0)
    assert set(rig.sim.requests) == {"login/Basic", GRID_STATUS_PATH, SOE_PATH, AGGREGATES_PATH}


def test_old_firmware_aggregates_still_read(rig: Rig) -> None:
    rig.sim.old_firmware_aggregates = True
    reading = rig.read(rig.source())
    assert (reading.grid, reading.load_w, reading.solar_w) == (Grid.ON, 1_250.0, 640.0)


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param((404, None), id="not-served"),
        pytest.param((200, {"load": {"instant_power": "lots"}}), id="odd-shape"),
        pytest.param((200, ["not", "an", "object"]), id="not-an-object"),
        pytest.param((403, {"code": 403, "error": "Unable to GET to resource"}), id="forbidden"),
    ],
)
def test_aggregates_are_optional(
    rig: Rig, reply: tuple[int, Any], caplog: pytest.LogCaptureFixture
) -> None:
    rig.sim.replies[AGGREGATES_PATH] = reply
    source = rig.source()
    with caplog.at_level(logging.WARNING, logger="loadshed.drivers.powerwall"):
        readings = [rig.read(source), rig.read(source)]
    for reading in readings:
        assert (reading.grid, reading.battery_pct, reading.load_w) == (Grid.ON, 62.5, None)
    assert len([r for r in caplog.records if AGGREGATES_PATH in r.getMessage()]) == 1


@pytest.mark.parametrize("path", [SOE_PATH, AGGREGATES_PATH])
@pytest.mark.parametrize("trouble", ["hang", "reset", "500", "502", "429"])
def test_an_optional_read_in_trouble_never_hides_the_grid_status(
    rig: Rig, path: str, trouble: str
) -> None:
    """The house is islanded and the gateway says so; soe or aggregates misbehave: the reading
    is still off grid (today's blind spot: the whole reading became unknown)."""
    rig.site.grid_status = "SystemIslandedActive"
    if trouble == "hang":
        rig.sim.hang_paths.add(path)
    elif trouble == "reset":
        rig.sim.reset_paths.add(path)
    else:
        rig.sim.replies[path] = (int(trouble), {"code": int(trouble)})
    source = rig.source()
    started = time.monotonic()
    reading = rig.read(source)
    assert (reading.grid, reading.raw) == (Grid.OFF, "SystemIslandedActive"), reading.detail
    assert time.monotonic() - started < source.timeout_s + 1.5  # its own short deadline
    assert rig.read(source).grid is Grid.OFF


def test_an_endpoint_refused_after_a_fresh_login_is_not_asked_again(rig: Rig) -> None:
    """Some firmware refuses meters/aggregates to the customer for good: one login, not one
    per poll (43,000 a day); the endpoint is tried again after REFUSED_RETRY_S."""
    rig.sim.replies[AGGREGATES_PATH] = (403, {"code": 403, "error": "Unable to GET to resource"})
    source = rig.source()
    for _ in range(30):
        assert rig.read(source).grid is Grid.ON
        rig.clock.advance(2)
    assert rig.sim.logins == 1
    assert rig.sim.requests[AGGREGATES_PATH] == 1
    rig.clock.advance(REFUSED_RETRY_S)
    rig.read(source)
    assert rig.sim.requests[AGGREGATES_PATH] == 2


def test_charge_is_optional(rig: Rig) -> None:
    rig.sim.replies[SOE_PATH] = (404, None)
    reading = rig.read(rig.source())
    assert (reading.grid, reading.battery_pct, reading.load_w) == (Grid.ON, None, 1_250.0)


@pytest.mark.parametrize(
    ("reply", "detail"),
    [
        pytest.param((404, None), f"does not serve {GRID_STATUS_PATH} (HTTP 404)", id="404"),
        pytest.param((500, {"oops": 1}), "HTTP 500", id="500"),
        pytest.param((200, {"grid_status": 5}), "unexpected reply", id="not-a-string"),
        pytest.param((200, {}), "unexpected reply", id="empty"),
        pytest.param((200, {"error": "Internal"}), "unexpected reply", id="error-key"),
    ],
)
def test_bad_grid_status_reply_is_unknown(rig: Rig, reply: tuple[int, Any], detail: str) -> None:
    rig.sim.replies[GRID_STATUS_PATH] = reply
    reading = rig.read(rig.source())
    assert reading.grid is Grid.UNKNOWN
    assert detail in reading.detail


# --- the session -----------------------------------------------------------------------------


def test_one_login_across_many_reads(rig: Rig) -> None:
    source = rig.source()
    for _ in range(15):
        assert rig.read(source).grid is Grid.ON
    assert rig.sim.logins == 1
    assert rig.sim.requests["login/Basic"] == 1
    assert rig.sim.requests[GRID_STATUS_PATH] == 15


def test_session_expired_by_calls_logs_in_again_once(rig: Rig) -> None:
    rig.sim.expire_after_calls = 4  # one read is 3 calls: the second read meets the expiry
    source = rig.source()
    assert [rig.read(source).grid for _ in range(3)] == [Grid.ON, Grid.ON, Grid.ON]
    assert rig.sim.logins == 2  # the expiry seen on an optional read: a login on the next read


def test_session_expired_by_time_logs_in_again_once(rig: Rig) -> None:
    rig.sim.expire_after_s = 86_400.0
    source = rig.source()
    assert rig.read(source).grid is Grid.ON
    rig.clock.advance(86_400.0)
    assert rig.read(source) == GridReading(Grid.ON, "SystemGridConnected", 62.5, 1_250.0, 640.0)
    assert rig.sim.logins == 2
    assert rig.read(source).grid is Grid.ON
    assert rig.sim.logins == 2


def test_expired_sessions_log_in_again_once(rig: Rig) -> None:
    source = rig.source()
    rig.read(source)
    rig.sim.expire_sessions()
    assert rig.read(source).grid is Grid.ON
    assert rig.sim.logins == 2


def test_refused_after_fresh_login_is_unknown_with_one_login_per_read(rig: Rig) -> None:
    source = rig.source()
    assert rig.read(source).grid is Grid.ON
    rig.sim.replies[GRID_STATUS_PATH] = (
        403,
        {"code": 403, "error": "Unable to GET to resource", "message": "no rights"},
    )
    reading = rig.read(source)  # old session refused: one new login, refused again
    assert reading.grid is Grid.UNKNOWN
    assert "after a fresh login: no rights" in reading.detail
    assert rig.sim.logins == 2
    fresh = rig.source()
    assert rig.read(fresh).grid is Grid.UNKNOWN  # a fresh login is not repeated
    assert rig.sim.logins == 3


# --- wrong password --------------------------------------------------------------------------


def test_a_rejected_login_is_retried_soon_then_less_often_never_a_lockout(rig: Rig) -> None:
    """Two hours of polling every 2 s against a gateway that rejects the password: the first
    retry comes within 10 s, the pauses grow, and no 15 minutes ever see more than 5 failed
    logins (the gateway would lock the owner out). The next attempt is always said."""
    source = rig.source(WRONG_PASSWORD)
    failed_at: list[float] = []
    for tick in range(3600):
        before = rig.sim.failed_logins
        reading = rig.read(source)
        assert reading.detail.startswith(WRONG_PASSWORD_DETAIL)
        assert "next login attempt in" in reading.detail
        if rig.sim.failed_logins > before:
            failed_at.append(tick * 2.0)
        rig.clock.advance(2)
    assert failed_at[1] - failed_at[0] <= 10
    gaps = [b - a for a, b in itertools.pairwise(failed_at)]
    assert gaps[:4] == sorted(gaps[:4]) and gaps[3] > gaps[0]
    for i, start in enumerate(failed_at):
        in_window = [t for t in failed_at[i:] if t - start < LOGIN_WINDOW_S]
        assert len(in_window) <= LOGIN_FAILURES_MAX
    assert len(failed_at) >= 8  # it keeps trying, slowly: a changed PWPASS is found
    assert rig.sim.logins == 0


def test_rejected_login_recovers_after_the_back_off(rig: Rig) -> None:
    rig.fault(Fault.BAD_AUTH)  # a rebooting gateway refuses even the right password
    source = rig.source()
    assert rig.read(source).detail.startswith(WRONG_PASSWORD_DETAIL)
    rig.fault(Fault.NONE)
    waiting = rig.read(source).detail  # still waiting, and saying for how long
    assert waiting == f"{WRONG_PASSWORD_DETAIL}; next login attempt in {LOGIN_BACKOFF_S:.0f} s"
    rig.clock.advance(LOGIN_BACKOFF_S)
    assert rig.read(source).grid is Grid.ON
    assert (rig.sim.failed_logins, rig.sim.logins) == (1, 1)


def test_gateway_reason_for_a_refusal_is_shown(rig: Rig) -> None:
    rig.sim.bad_auth_error = "default password not supported"
    reading = rig.read(rig.source(WRONG_PASSWORD))
    assert reading.detail.startswith(WRONG_PASSWORD_DETAIL)
    assert "default password not supported" in reading.detail


def test_expired_session_then_wrong_password_backs_off(rig: Rig) -> None:
    source = rig.source()
    rig.read(source)
    rig.sim.expire_sessions()
    rig.fault(Fault.BAD_AUTH)
    assert rig.read(source).detail.startswith(WRONG_PASSWORD_DETAIL)
    before = rig.total_requests()
    assert rig.read(source).detail.startswith(WRONG_PASSWORD_DETAIL)
    assert rig.total_requests() == before


# --- the gateway asks us to slow down, or is stopped -----------------------------------------


@pytest.mark.parametrize(
    ("switch", "status"),
    [("rate_limit_login", 429), ("rate_limit_reads", 429), ("unavailable", 503)],
)
def test_slow_down_backs_off_without_contact(rig: Rig, switch: str, status: int) -> None:
    setattr(rig.sim, switch, True)
    source = rig.source()
    reading = rig.read(source)
    assert reading.grid is Grid.UNKNOWN
    assert reading.detail == (
        f"Powerwall asked us to slow down (HTTP {status}); next try in {SLOWDOWN_BACKOFF_S:.0f} s"
    )
    before = rig.total_requests()
    rig.clock.advance(SLOWDOWN_BACKOFF_S - 10)
    assert rig.read(source).detail.endswith("next try in 10 s")
    assert rig.total_requests() == before
    rig.clock.advance(10)
    assert "next try in 60 s" in rig.read(source).detail  # tried again, refused, doubled
    assert rig.total_requests() > before
    setattr(rig.sim, switch, False)
    rig.clock.advance(60)
    assert rig.read(source).grid is Grid.ON
    rig.sim.unavailable = True  # right after a good read: the back-off goes on growing
    assert rig.read(source).detail.endswith("next try in 120 s")
    rig.sim.unavailable = False
    rig.clock.advance(120)
    assert rig.read(source).grid is Grid.ON
    rig.clock.advance(SLOWDOWN_FORGET_S)
    assert rig.read(source).grid is Grid.ON  # long enough without one: forgotten
    rig.sim.unavailable = True
    assert rig.read(source).detail.endswith(f"next try in {SLOWDOWN_BACKOFF_S:.0f} s")


def test_slow_down_back_off_is_capped(rig: Rig) -> None:
    rig.sim.rate_limit_reads = True
    source = rig.source()
    pause = SLOWDOWN_BACKOFF_S
    for _ in range(6):
        assert rig.read(source).detail.endswith(f"next try in {pause:.0f} s")
        rig.clock.advance(pause)
        pause = min(pause * 2, SLOWDOWN_BACKOFF_MAX_S)
    assert pause == SLOWDOWN_BACKOFF_MAX_S
    assert rig.sim.logins == 1


def test_stopped_system_is_unknown_without_back_off(rig: Rig) -> None:
    rig.sim.sitemaster_stopped = True
    source = rig.source()
    assert rig.read(source) == GridReading(
        Grid.UNKNOWN, detail=STOPPED_DETAIL, status=Status.FAILED
    )
    rig.sim.sitemaster_stopped = False
    assert rig.read(source).grid is Grid.ON


# --- down, hung, slow ------------------------------------------------------------------------


def test_down_is_unreachable_fast_and_recovers(rig: Rig) -> None:
    source = rig.source(timeout_s=5.0)
    assert rig.read(source).grid is Grid.ON
    rig.fault(Fault.DOWN)
    started = time.monotonic()
    reading = rig.read(source)
    assert time.monotonic() - started < 5.0  # refused at once, not timed out
    assert reading.grid is Grid.UNKNOWN
    assert reading.detail == f"cannot reach the Powerwall at {rig.sim.endpoint}: connection refused"
    rig.fault(Fault.NONE)
    assert rig.read(source).grid is Grid.ON
    assert rig.sim.logins == 1  # the session survived the gateway's absence


@pytest.mark.timeout(HANG_GUARD_S)
@pytest.mark.parametrize("logged_in", [False, True], ids=["at-login", "on-read"])
def test_hung_gateway_is_unknown_within_the_timeout(rig: Rig, logged_in: bool) -> None:
    source = rig.source(timeout_s=QUICK_S)
    if logged_in:
        assert rig.read(source).grid is Grid.ON
    rig.fault(Fault.HUNG)
    reading = rig.read(source)
    assert reading == GridReading(
        Grid.UNKNOWN,
        detail=f"no answer from the Powerwall in {QUICK_S:g} s",
        status=Status.UNREACHABLE,
    )
    rig.fault(Fault.NONE)
    assert rig.read(source).grid is Grid.ON


def test_slow_but_within_the_timeout_is_fine(rig: Rig) -> None:
    rig.fault(Fault.SLOW, slow_s=0.02)
    assert rig.read(rig.source(timeout_s=5.0)).grid is Grid.ON


@pytest.mark.timeout(HANG_GUARD_S)
def test_slower_than_the_timeout_is_unknown(rig: Rig) -> None:
    rig.fault(Fault.SLOW, slow_s=60.0)
    reading = rig.read(rig.source(timeout_s=QUICK_S))
    assert reading.detail == f"no answer from the Powerwall in {QUICK_S:g} s"


# --- addresses, lifecycle, secrets -----------------------------------------------------------


@pytest.mark.parametrize(
    "form", ["{host}:{port}", "https://{host}:{port}/", "http://{host}:{port}"]
)
def test_endpoint_forms(rig: Rig, form: str) -> None:
    endpoint = form.format(host=rig.sim.host, port=rig.sim.port)
    assert rig.read(rig.source(endpoint=endpoint)).grid is Grid.ON


def test_unusable_address_is_unknown(rig: Rig) -> None:
    reading = rig.read(rig.source(endpoint="127.0.0.1:99999"))
    assert reading.grid is Grid.UNKNOWN
    assert reading.detail.startswith("cannot use Powerwall address '127.0.0.1:99999'")


def test_made_outside_a_loop_and_closed_any_time(rig: Rig) -> None:
    source = PowerwallSource(rig.sim.endpoint, PASSWORD)  # no loop in this thread: fine
    rig.loop.run(source.close())  # before any read
    assert rig.read(source).grid is Grid.ON
    rig.loop.run(source.close())
    rig.loop.run(source.close())
    assert rig.read(source).grid is Grid.ON  # a new session, a new login
    rig.loop.run(source.close())
    assert rig.sim.logins == 2


@pytest.mark.timeout(HANG_GUARD_S)
def test_password_never_leaks(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    details = []
    good, bad = rig.source(timeout_s=QUICK_S), rig.source(WRONG_PASSWORD, timeout_s=QUICK_S)
    details += [rig.read(good).detail, rig.read(bad).detail]
    rig.sim.replies[GRID_STATUS_PATH] = (200, {"error": f"echo {PASSWORD}"})
    details.append(rig.read(good).detail)
    rig.sim.replies.clear()
    rig.site.grid_status = f"Weird{PASSWORD}"
    details.append(rig.read(good).detail)
    rig.sim.expire_sessions()
    rig.fault(Fault.HUNG)
    details.append(rig.read(good).detail)
    rig.fault(Fault.DOWN)
    details.append(rig.read(good).detail)
    assert "unexpected reply" in details[2]
    assert "***" in details[2]
    text = "\n".join(
        [*details, repr(good), repr(bad)]
        + [r.getMessage() + (r.exc_text or "") for r in caplog.records]
    )
    assert PASSWORD not in text
    assert WRONG_PASSWORD not in text


# --- the gateway's certificate, pinned on first contact ------------------------------------------


def test_a_changed_certificate_is_unknown_and_the_password_is_never_sent(
    rig: Rig, tmp_path: Path
) -> None:
    trust = Trust(tmp_path / TRUST_FILE)
    first = rig.source()
    first.trust = trust
    assert rig.read(first).grid is Grid.ON
    pinned = trust.pinned(rig.sim.endpoint)
    assert pinned is not None and pinned.count(":") == 31  # a SHA-256, as hex pairs
    port = rig.sim.port
    rig.loop.run(rig.sim.stop())
    impostor = PowerwallSim(rig.site, PASSWORD, port=port, clock=rig.clock)  # a new certificate
    rig.loop.run(impostor.start())
    try:
        again = rig.source()
        again.trust = trust
        reading = rig.read(again)
        assert reading.grid is Grid.UNKNOWN
        assert "certificate changed" in reading.detail
        assert "loadshed check --trust-powerwall" in reading.detail
        assert impostor.requests["login/Basic"] == 0  # the password never left
        assert trust.forget(impostor.endpoint) == pinned  # what --trust-powerwall does
        assert rig.read(again).grid is Grid.ON
        assert trust.pinned(impostor.endpoint) not in (None, pinned)
    finally:
        rig.loop.run(impostor.stop())
