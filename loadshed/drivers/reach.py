"""Is a computer there? One bounded TCP probe, read the way a network engineer reads it.

A port that accepts is up. A port that *refuses* is answered by a running kernel: the machine
is on, whatever its service is doing (systemd stops sshd in the first seconds of a shutdown,
then flushes disks for a minute more). Only silence — the connection attempt times out, or
there is no route — means the machine is off. A name that does not resolve says nothing.

Never raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from dataclasses import dataclass
from enum import Enum


class Liveness(Enum):
    ANSWERS = "answers"  # the port accepts: the machine and its service are up
    REFUSED = "refused"  # a running kernel says no: the machine is on
    SILENT = "silent"  # no answer, no route: the machine is off (or not on this network)
    UNKNOWN = "unknown"  # cannot tell: the name does not resolve here, or another error


@dataclass(frozen=True, slots=True)
class Probe:
    liveness: Liveness
    detail: str

    @property
    def running(self) -> bool:
        """Its kernel answered: it is on."""
        return self.liveness in (Liveness.ANSWERS, Liveness.REFUSED)


_SILENT_ERRNOS = frozenset(
    {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ETIMEDOUT, errno.EHOSTDOWN}
)


async def probe(host: str, port: int, timeout_s: float) -> Probe:
    """Open and close one TCP connection to host:port within timeout_s."""
    try:
        async with asyncio.timeout(timeout_s):
            _reader, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return Probe(Liveness.SILENT, f"no answer on port {port} in {timeout_s:g} s")
    except ConnectionRefusedError:
        return Probe(Liveness.REFUSED, f"port {port} refuses connections (it is running)")
    except socket.gaierror as err:
        return Probe(Liveness.UNKNOWN, f"{host} does not resolve here ({err.strerror})")
    except OSError as err:
        if err.errno in _SILENT_ERRNOS:
            return Probe(Liveness.SILENT, "no route to it (off, or not on the network)")
        return Probe(Liveness.UNKNOWN, err.strerror or str(err))
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return Probe(Liveness.ANSWERS, f"port {port} answers")
