"""Wake computers with a Wake-on-LAN magic packet (the `wakeonlan` library builds it).

Owns: sending one magic packet over UDP to a broadcast address (or any address given), with
SO_BROADCAST set only when the target is a broadcast address. A magic packet gets no answer:
OK means it was sent, not that the computer woke; `ssh.wait_up` tells that.

Must not: raise into its caller, or send anything but the packet.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
from typing import Final

from wakeonlan import create_magic_packet

from loadshed.model import Outcome

_LOG = logging.getLogger(__name__)

BROADCAST: Final = "255.255.255.255"  # this network segment; routers do not forward it
WOL_PORT: Final = 9  # "discard": what most network cards and tools use (7 is the other)
SEND_TIMEOUT_S: Final = 2.0  # a UDP send returns at once; the bound is for a stuck socket


def magic_packet(mac: str) -> bytes:
    """Six 0xFF bytes, then the MAC sixteen times. Raises ValueError for a malformed MAC."""
    return create_magic_packet(mac)


async def wake(mac: str, *, to: str = BROADCAST, port: int = WOL_PORT) -> Outcome:
    """Send the magic packet for mac to to:port. Never raises."""
    try:
        packet = magic_packet(mac)
        address = ipaddress.ip_address(to)
    except ValueError as err:
        return Outcome.failed(f"cannot wake {mac} via {to}: {err}")
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    broadcast = is_broadcast(address)
    try:
        async with asyncio.timeout(SEND_TIMEOUT_S):
            try:
                await _send(packet, family, str(address), port, broadcast=broadcast)
            except PermissionError as err:
                if broadcast or err.errno != errno.EACCES:
                    raise
                # EACCES: the kernel knows it for a broadcast address (a subnet's last one)
                await _send(packet, family, str(address), port, broadcast=True)
    except TimeoutError:
        return Outcome.unreachable(f"could not send the magic packet in {SEND_TIMEOUT_S:g} s")
    except PermissionError as err:
        return Outcome.failed(f"not allowed to send to {to}: {err.strerror or err}")
    except OSError as err:
        return Outcome.unreachable(f"cannot send to {to}: {err.strerror or err}")
    _LOG.debug("wake-on-lan %s sent to %s:%s", mac, to, port)
    return Outcome.ok(None, detail=f"magic packet sent to {to}:{port}")


async def _send(packet: bytes, family: int, host: str, port: int, *, broadcast: bool) -> None:
    loop = asyncio.get_running_loop()
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        if broadcast:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        await loop.sock_sendto(sock, packet, (host, port))


def is_broadcast(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """255.255.255.255, or an x.y.z.255 (the broadcast address of a /24, the common home LAN)."""
    if address.version != 4:
        return False
    return address == ipaddress.IPv4Address(BROADCAST) or address.packed[-1] == 0xFF
