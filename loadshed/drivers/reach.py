"""Is a TCP port answering? Bounded; never raises. Used for computers' SSH and SMB ports."""

from __future__ import annotations

import asyncio
import contextlib
import errno

from loadshed.model import Outcome


async def probe_port(host: str, port: int, timeout_s: float) -> Outcome:
    """Open and close one TCP connection to host:port within timeout_s."""
    try:
        async with asyncio.timeout(timeout_s):
            _reader, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return Outcome.unreachable(f"no answer on port {port} in {timeout_s:g} s")
    except ConnectionRefusedError:
        return Outcome.unreachable(f"port {port} refused the connection")
    except OSError as err:
        if err.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return Outcome.unreachable("no route to it (is it on the network?)")
        return Outcome.unreachable(err.strerror or str(err))
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return Outcome.ok(None, detail=f"port {port} answers")
