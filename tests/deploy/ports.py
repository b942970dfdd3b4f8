"""Loopback ports for the deploy checks that start assistd (keys.py, dashboard_metrics.py)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (HTTPS and QUIC share the number)."""
    for _ in range(100):
        t = socket.socket()
        t.bind(("127.0.0.1", 0))
        port = t.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            t.close()
            u.close()
    raise RuntimeError("no free port")
