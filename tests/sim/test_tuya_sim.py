"""TuyaPlugSim spoken to by the real tinytuya (no loadshed driver in between), 3.3 and 3.4.

The dps maps come from real plugs (tests/fixtures/tuya/local_dps_payloads_tuya-local.json,
MIT, from make-all/tuya-local): the sim must serve them as they are, and its meter must give the
same numbers a real metering plug does.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import tinytuya  # type: ignore[import-untyped]

from loadshed.sim.base import Fault, Outlet
from loadshed.sim.loop import LoopThread
from loadshed.sim.tuya import Cmd, TuyaPlugSim
from tests.conftest import FIXTURES

pytestmark = pytest.mark.timeout(30)

KEY = "0123456789abcdef"
DEV_ID = "bf0123456789abcdefgh"
SOCKET_TIMEOUT_S = 1.0
REAL_DPS: dict[str, dict[str, Any]] = json.loads(
    (FIXTURES / "tuya" / "local_dps_payloads_tuya-local.json").read_text(encoding="utf-8")
)


@pytest.fixture(params=[3.3, 3.4], ids=["v3.3", "v3.4"])
def version(request: pytest.FixtureRequest) -> float:
    return float(request.param)


@pytest.fixture
def started(sim_loop: LoopThread) -> Iterator[list[TuyaPlugSim]]:
    """Sims appended here are started by `start` and stopped after the test."""
    sims: list[TuyaPlugSim] = []
    yield sims
    for sim in sims:
        sim_loop.run(sim.stop())


def start(sim_loop: LoopThread, started: list[TuyaPlugSim], sim: TuyaPlugSim) -> TuyaPlugSim:
    sim_loop.run(sim.start())
    started.append(sim)
    return sim


def client(sim: TuyaPlugSim, *, persist: bool = False) -> Any:
    return tinytuya.OutletDevice(
        DEV_ID,
        sim.host,
        KEY,
        version=sim.version,
        port=sim.port,
        persist=persist,
        connection_timeout=SOCKET_TIMEOUT_S,
        connection_retry_limit=1,
        connection_retry_delay=0,
    )


def outlets_of(dps: dict[str, Any]) -> list[Outlet]:
    """One Outlet per switch dp "1", "2", ... (consecutive booleans), in its captured state."""
    outlets: list[Outlet] = []
    while isinstance(dps.get(str(len(outlets) + 1)), bool):
        outlets.append(Outlet(f"outlet {len(outlets) + 1}", 100.0, dps[str(len(outlets) + 1)]))
    return outlets


@pytest.mark.parametrize("name", sorted(REAL_DPS))
def test_serves_real_dps_maps_as_captured(
    sim_loop: LoopThread, started: list[TuyaPlugSim], version: float, name: str
) -> None:
    real = REAL_DPS[name]
    outlets = outlets_of(real)
    sim = start(sim_loop, started, TuyaPlugSim(DEV_ID, KEY, outlets, version=version, dps=real))
    device = client(sim)

    assert device.status()["dps"] == real

    pushed = device.turn_off()
    assert pushed["dps"] == {"1": False}
    assert outlets[0].on is False
    assert device.status()["dps"] == {**real, "1": False}
    assert sim.bad_frames == 0  # tinytuya's CRC / HMAC trailers check out


def test_meter_matches_a_real_metering_plug(
    sim_loop: LoopThread, started: list[TuyaPlugSim], version: float
) -> None:
    # KOGAN_SOCKET_PAYLOAD2: 46.0 W (19 = 460) at 230.0 V (20 = 2300) is 200 mA (18 = 200).
    sim = TuyaPlugSim(DEV_ID, KEY, [Outlet("Freezer", 46.0)], version=version, meter=True)
    start(sim_loop, started, sim)

    assert client(sim).status()["dps"] == REAL_DPS["KOGAN_SOCKET_PAYLOAD2"]


def test_persistent_client_sends_many_requests_on_one_connection(
    sim_loop: LoopThread, started: list[TuyaPlugSim], version: float
) -> None:
    outlet = Outlet("Heater", 1500.0)
    sim = start(sim_loop, started, TuyaPlugSim(DEV_ID, KEY, [outlet], version=version))
    device = client(sim, persist=True)

    assert device.status()["dps"]["1"] is True
    assert device.turn_off()["dps"] == {"1": False}
    assert device.status()["dps"]["1"] is False
    assert device.heartbeat(nowait=False) is None  # an empty ack
    device.close()

    assert sim.connections == 1
    assert outlet.on is False


def test_one_connection_per_request_by_default(
    sim_loop: LoopThread, started: list[TuyaPlugSim], version: float
) -> None:
    sim = start(
        sim_loop, started, TuyaPlugSim(DEV_ID, KEY, [Outlet("Heater", 1.0)], version=version)
    )
    device = client(sim)

    for _ in range(3):
        assert device.status()["dps"]["1"] is True

    assert sim.connections == 3
    query = Cmd.DP_QUERY_NEW if version >= 3.4 else Cmd.DP_QUERY
    assert sim.requests[query] == 3
    if version >= 3.4:
        assert sim.requests[Cmd.SESS_KEY_NEG_START] == sim.requests[Cmd.SESS_KEY_NEG_FINISH] == 3


def test_updatedps_pushes_the_meter(
    sim_loop: LoopThread, started: list[TuyaPlugSim], version: float
) -> None:
    sim = TuyaPlugSim(DEV_ID, KEY, [Outlet("Kettle", 2000.0)], version=version, meter=True)
    start(sim_loop, started, sim)

    assert client(sim).updatedps([18, 19, 20])["dps"] == {"18": 8696, "19": 20000, "20": 2300}


def test_ack_only_control_returns_none_after_the_socket_timeout(
    sim_loop: LoopThread, started: list[TuyaPlugSim], version: float
) -> None:
    outlet = Outlet("Heater", 1500.0)
    sim = start(sim_loop, started, TuyaPlugSim(DEV_ID, KEY, [outlet], version=version))
    sim.ack_only = True

    assert client(sim).turn_off() is None
    assert outlet.on is False


def test_bad_auth_replies_cannot_be_read(
    sim_loop: LoopThread, started: list[TuyaPlugSim], version: float
) -> None:
    outlet = Outlet("Heater", 1500.0)
    sim = start(sim_loop, started, TuyaPlugSim(DEV_ID, KEY, [outlet], version=version))
    sim_loop.run(sim.set_fault(Fault.BAD_AUTH))

    expected = "914" if version >= 3.4 else "904"  # 3.4: the key exchange fails
    assert client(sim).status()["Err"] == expected
    assert client(sim).turn_off()["Err"] == expected
    assert outlet.on is True


def test_down_keeps_its_port_and_comes_back(
    sim_loop: LoopThread, started: list[TuyaPlugSim], version: float
) -> None:
    sim = start(
        sim_loop, started, TuyaPlugSim(DEV_ID, KEY, [Outlet("Heater", 1.0)], version=version)
    )
    port = sim.port

    sim_loop.run(sim.set_fault(Fault.DOWN))
    assert client(sim).status()["Err"] == "901"
    sim_loop.run(sim.set_fault(Fault.NONE))

    assert sim.port == port
    assert client(sim).status()["dps"]["1"] is True


def test_hangs_up_on_garbage(sim_loop: LoopThread, started: list[TuyaPlugSim]) -> None:
    sim = start(sim_loop, started, TuyaPlugSim(DEV_ID, KEY, [Outlet("Heater", 1.0)]))

    with socket.create_connection((sim.host, sim.port), timeout=SOCKET_TIMEOUT_S) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert sock.recv(64) == b""


def test_binds_loopback_only() -> None:
    with pytest.raises(ValueError, match=r"127\.0\.0\.0/8"):
        TuyaPlugSim(DEV_ID, KEY, [Outlet("Heater", 1.0)], host="192.0.2.20")


@pytest.mark.parametrize(
    ("key", "version", "outlets"),
    [("short", 3.3, 1), (KEY, 3.5, 1), (KEY, 3.3, 0)],
    ids=["key-not-16", "version-3.5", "no-outlets"],
)
def test_refuses_what_no_real_plug_is(key: str, version: float, outlets: int) -> None:
    with pytest.raises(ValueError):
        TuyaPlugSim(DEV_ID, key, [Outlet("x", 1.0)] * outlets, version=version)
