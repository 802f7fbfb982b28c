"""The simulated Kasa devices on the wire: framing, replies, identities, discovery, KLAP checks."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from kasa import Discover

from loadshed.sim.base import Fault, Outlet, SimDevice
from loadshed.sim.kasa import (
    KasaSim,
    kasa_plug,
    kasa_strip,
    klap_plug,
    xor_decrypt,
    xor_encrypt,
    xor_frame,
)
from loadshed.sim.loop import LoopThread

LENGTH = struct.Struct(">I")


@pytest.fixture
def started(sim_loop: LoopThread) -> Iterator[list[SimDevice]]:
    """Sims appended here are stopped after the test."""
    sims: list[SimDevice] = []
    yield sims
    for sim in sims:
        sim_loop.run(sim.stop())


def start(sim_loop: LoopThread, started: list[SimDevice], sim: Any) -> Any:
    sim_loop.run(sim.start())
    started.append(sim)
    return sim


async def exchange(sim: KasaSim, *requests: dict[str, Any]) -> list[dict[str, Any]]:
    """Send requests on one TCP connection, return the replies."""
    reader, writer = await asyncio.open_connection(sim.host, sim.port)
    replies = []
    try:
        for request in requests:
            writer.write(xor_frame(request))
            (length,) = LENGTH.unpack(await reader.readexactly(4))
            replies.append(json.loads(xor_decrypt(await reader.readexactly(length))))
    finally:
        writer.close()
        await writer.wait_closed()
    return replies


def test_xor_round_trip() -> None:
    plain = b'{"system":{"get_sysinfo":{}}}'
    assert xor_decrypt(xor_encrypt(plain)) == plain
    assert xor_encrypt(b"{")[0] == 171 ^ ord("{")


def test_one_connection_carries_many_requests_and_answers_each_module(
    sim_loop: LoopThread, started: list[SimDevice]
) -> None:
    lamp = Outlet("Lamp", 60.0)
    sim = start(sim_loop, started, kasa_plug(lamp))

    replies = sim_loop.run(
        exchange(
            sim,
            {"system": {"get_sysinfo": {}}},
            {"system": {"set_relay_state": {"state": 0}}, "emeter": {"get_realtime": {}}},
            {"system": {"reboot": {}}},
        )
    )

    assert replies[0]["system"]["get_sysinfo"]["alias"] == "Lamp"
    assert replies[0]["system"]["get_sysinfo"]["relay_state"] == 1
    assert replies[1] == {
        "system": {"set_relay_state": {"err_code": 0}},
        "emeter": {"err_code": -1, "err_msg": "module not support"},
    }
    assert replies[2] == {"system": {"reboot": {"err_code": -2, "err_msg": "member not support"}}}
    assert lamp.on is False
    assert (sim.connections, sim.requests) == (1, 3)


def test_energy_plug_meters_the_outlet(sim_loop: LoopThread, started: list[SimDevice]) -> None:
    heater = Outlet("Heater", 1500.0)
    sim = start(sim_loop, started, kasa_plug(heater, meter=True))

    [on] = sim_loop.run(exchange(sim, {"emeter": {"get_realtime": {}, "get_daystat": {}}}))
    heater.on = False
    [off] = sim_loop.run(exchange(sim, {"emeter": {"get_realtime": {}}}))

    assert on["emeter"]["get_realtime"]["power_mw"] == 1_500_000
    assert on["emeter"]["get_daystat"] == {"day_list": [], "err_code": 0}
    assert off["emeter"]["get_realtime"]["power_mw"] == 0


def test_strip_switches_children_by_context(sim_loop: LoopThread, started: list[SimDevice]) -> None:
    outlets = [Outlet("A", 1.0), Outlet("B", 2.0)]
    sim = start(sim_loop, started, kasa_strip(outlets))
    [info] = sim_loop.run(exchange(sim, {"system": {"get_sysinfo": {}}}))
    children = info["system"]["get_sysinfo"]["children"]
    assert [c["alias"] for c in children] == ["A", "B"]

    off_b = {
        "context": {"child_ids": [children[1]["id"]]},
        "system": {"set_relay_state": {"state": 0}},
    }
    unknown = {"context": {"child_ids": ["nope"]}, "system": {"set_relay_state": {"state": 0}}}
    replies = sim_loop.run(exchange(sim, off_b, unknown))

    assert replies[0]["system"]["set_relay_state"] == {"err_code": 0}
    assert replies[1]["system"]["set_relay_state"]["err_code"] != 0
    assert [o.on for o in outlets] == [True, False]


def test_every_device_has_its_own_identity(sim_loop: LoopThread, started: list[SimDevice]) -> None:
    sims = [
        start(sim_loop, started, kasa_plug(Outlet("P1", 1.0))),
        start(sim_loop, started, kasa_plug(Outlet("P2", 1.0), meter=True)),
        start(sim_loop, started, kasa_strip([Outlet("S1", 1.0), Outlet("S2", 1.0)])),
        start(sim_loop, started, kasa_strip([Outlet("T1", 1.0), Outlet("T2", 1.0)])),
    ]
    infos = [
        sim_loop.run(exchange(s, {"system": {"get_sysinfo": {}}}))[0]["system"]["get_sysinfo"]
        for s in sims
    ]
    child_ids = [c["id"] for info in infos for c in info.get("children", [])]

    assert len({info["mac"] for info in infos}) == 4
    assert len({info["deviceId"] for info in infos}) == 4
    assert len(set(child_ids)) == len(child_ids) == 4


def test_discovery_answers_on_the_same_port(sim_loop: LoopThread, started: list[SimDevice]) -> None:
    sim = start(sim_loop, started, kasa_plug(Outlet("Porch light", 40.0), host="127.0.0.2"))

    async def discover() -> str | None:
        device = await Discover.discover_single(sim.host, port=sim.port, discovery_timeout=2)
        assert device is not None
        try:
            await device.update()
            return device.alias
        finally:
            await device.disconnect()

    assert sim_loop.run(discover()) == "Porch light"
    assert sim.discoveries == 1


def test_down_refuses_and_comes_back_on_the_same_port(
    sim_loop: LoopThread, started: list[SimDevice]
) -> None:
    sim = start(sim_loop, started, kasa_plug(Outlet("Lamp", 60.0)))
    port = sim.port

    sim_loop.run(sim.set_fault(Fault.DOWN))
    with pytest.raises(ConnectionRefusedError):
        sim_loop.run(exchange(sim, {"system": {"get_sysinfo": {}}}))
    sim_loop.run(sim.set_fault(Fault.NONE))

    assert sim.port == port
    assert sim_loop.run(exchange(sim, {"system": {"get_sysinfo": {}}}))[0]["system"]


def test_klap_refuses_requests_without_a_handshake(
    sim_loop: LoopThread, started: list[SimDevice]
) -> None:
    sim = start(sim_loop, started, klap_plug(Outlet("Fan", 30.0), username="u", password="p"))

    async def post(path: str, body: bytes) -> int:
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"http://{sim.address}{path}", data=body) as response,
        ):
            return response.status

    assert sim_loop.run(post("/app/request?seq=1", b"x" * 48)) == 403
    assert sim_loop.run(post("/app/handshake1", b"short")) == 400
    assert sim_loop.run(post("/app/handshake2", b"y" * 32)) == 403
    assert sim.rejected == 2
