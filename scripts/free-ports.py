#!/usr/bin/env python3
"""Prints N free TCP ports on 127.0.0.1 (default 3), chosen by the OS, on one line.

All N sockets are bound before any is closed, so the ports differ. Between this and the
caller's bind another process could take one; the caller then fails to bind, and says so.
Used by scripts/three-nodes.sh, scripts/users.sh and scripts/container.sh.
"""

import socket
import sys

count = int(sys.argv[1]) if len(sys.argv) > 1 else 3
socks = []
for _ in range(count):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
