"""Sockets opened inside other network namespaces, from one process (side effects).

A socket belongs to the namespace its creating thread was in at ``socket()``; it stays
there whatever the thread does next.  ``Opener`` enters a named namespace (setns(2) on
``/var/run/netns/NAME``) for the moment of creating sockets, then returns the thread to
the namespace it started in; this is how the services process (``services.hub``) listens
in every host and router namespace at once, and how ``reach`` probes from every source
without a process per source.  Call it from one thread (setns is per thread).
"""

from __future__ import annotations

import ctypes
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

NETNS_DIR = "/var/run/netns"
CLONE_NEWNET = 0x40000000
_LIBC = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int, where: str) -> None:
    if _LIBC.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"setns {where}: {os.strerror(code)}")


class Opener:
    """Creates sockets in named namespaces; ``None`` is the process's own namespace."""

    def __init__(self) -> None:
        self.home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)

    @contextmanager
    def inside(self, ns: str | None) -> Iterator[None]:
        """The block runs inside ``ns`` (sockets made in it stay there)."""
        if ns is None:
            yield
            return
        fd = os.open(os.path.join(NETNS_DIR, ns), os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(fd, ns)
        finally:
            os.close(fd)
        try:
            yield
        finally:
            _setns(self.home, "home")

    def socket(self, ns: str | None, kind: int = socket.SOCK_STREAM) -> socket.socket:
        with self.inside(ns):
            return socket.socket(socket.AF_INET, kind)

    def close(self) -> None:
        os.close(self.home)
