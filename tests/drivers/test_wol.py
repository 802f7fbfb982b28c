"""Wake-on-LAN: the magic packet's bytes, and a real UDP send to a listener on 127.0.0.1.

Nothing here sends to a broadcast address (the test run may reach 127.0.0.0/8 only); whether
SO_BROADCAST would be set is checked on `is_broadcast`, the rule `wake` follows.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterator

import pytest

from loadshed.drivers.wol import BROADCAST, is_broadcast, magic_packet, wake
from loadshed.model import Status

pytestmark = pytest.mark.timeout(30)

MAC = "00:11:22:aa:bb:cc"
MAC_BYTES = bytes.fromhex("001122aabbcc")
RECEIVE_TIMEOUT_S = 5.0  # a ceiling for a datagram on loopback


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(RECEIVE_TIMEOUT_S)
        yield sock


@pytest.mark.parametrize("mac", [MAC, "00-11-22-AA-BB-CC", "001122aabbcc", "0011.22aa.bbcc"])
def test_magic_packet_is_six_ff_then_the_mac_sixteen_times(mac: str) -> None:
    assert magic_packet(mac) == b"\xff" * 6 + MAC_BYTES * 16


def test_wake_sends_the_packet(listener: socket.socket) -> None:
    port = listener.getsockname()[1]

    outcome = asyncio.run(wake(MAC, to="127.0.0.1", port=port))
    packet, _sender = listener.recvfrom(1024)

    assert outcome.status is Status.OK, outcome.detail
    assert outcome.detail == f"magic packet sent to 127.0.0.1:{port}"
    assert len(packet) == 102
    assert packet[:6] == b"\xff" * 6
    assert [packet[i : i + 6] for i in range(6, 102, 6)] == [MAC_BYTES] * 16


@pytest.mark.parametrize(
    ("mac", "to"),
    [
        pytest.param("00:11:22:33:44", "127.0.0.1", id="short-mac"),
        pytest.param("00:11:22:33:44:zz", "127.0.0.1", id="not-hex"),
        pytest.param(MAC, "nas.lan", id="not-an-address"),
    ],
)
def test_wake_refuses_what_it_cannot_send(listener: socket.socket, mac: str, to: str) -> None:
    listener.settimeout(0.2)

    outcome = asyncio.run(wake(mac, to=to, port=listener.getsockname()[1]))

    assert outcome.status is Status.FAILED
    assert "cannot wake" in outcome.detail
    with pytest.raises(TimeoutError):
        listener.recvfrom(1024)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        (BROADCAST, True),  # the limited broadcast: parsed here, never sent to
        ("192.0.2.255", True),
        ("127.0.0.1", False),
        ("192.0.2.20", False),
        ("::1", False),
    ],
)
def test_so_broadcast_only_for_a_broadcast_address(address: str, expected: bool) -> None:
    assert is_broadcast(ipaddress.ip_address(address)) is expected
