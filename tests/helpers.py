"""Small helpers shared by the integration tests."""

from __future__ import annotations

import socket


def free_ports(n: int = 4) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 right now (all held open
    together while they are picked, so none is handed out twice)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()

