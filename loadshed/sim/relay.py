"""`python -m loadshed.sim.relay HOST PORT`: stdin and stdout joined to a TCP connection.

Like `nc HOST PORT`, for an ssh_config `ProxyCommand` in tests: a host name that only ssh can
reach (`HostName nas.invalid`, `ProxyCommand python -m loadshed.sim.relay 127.0.0.1 <port>`),
as a jump host or a VPN would make one. It connects to 127.0.0.0/8 only, says in one line on
stderr why it could not connect (exit 1, or 2 for bad arguments), and exits as soon as either
side closes. Two blocking threads, one a direction; nothing else.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
from collections.abc import Sequence
from typing import Final

from loadshed.sim.base import check_loopback

CONNECT_TIMEOUT_S: Final = 10.0  # a silent host fails here, not in a hung ssh
CHUNK: Final = 65536
USAGE: Final = "usage: python -m loadshed.sim.relay HOST PORT (HOST in 127.0.0.0/8)"


def main(argv: Sequence[str] | None = None) -> int:
    """Relay stdin and stdout to HOST:PORT until either side closes; return the exit code."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(USAGE, file=sys.stderr)
        return 2
    try:
        host, port = check_loopback(args[0]), int(args[1])
    except ValueError as err:
        print(f"relay: {err}; {USAGE}", file=sys.stderr)
        return 2
    try:
        sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
    except OSError as err:
        print(f"relay: cannot connect to {host}:{port}: {err.strerror or err}", file=sys.stderr)
        return 1
    sock.settimeout(None)
    relay(sock, sys.stdin.fileno(), sys.stdout.fileno())
    return 0


def relay(sock: socket.socket, fd_in: int, fd_out: int) -> None:
    """Copy fd_in to sock and sock to fd_out; return when either reaches its end."""
    done = threading.Event()

    def upstream() -> None:
        try:
            while data := os.read(fd_in, CHUNK):
                sock.sendall(data)
        except OSError:
            pass  # the connection went: done either way
        finally:
            done.set()

    def downstream() -> None:
        try:
            while data := sock.recv(CHUNK):
                view = memoryview(data)
                while view:
                    view = view[os.write(fd_out, view) :]
        except OSError:
            pass
        finally:
            done.set()

    for direction in (upstream, downstream):
        threading.Thread(target=direction, daemon=True).start()
    done.wait()
    with contextlib.suppress(OSError):  # not connected any more
        sock.shutdown(socket.SHUT_RDWR)  # wakes the other direction's recv(), if it is that one
    sock.close()


if __name__ == "__main__":
    sys.exit(main())
