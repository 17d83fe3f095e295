"""A private ``/etc/resolv.conf`` for a process entering one of our namespaces (side effects).

``ip netns exec NS`` bind-mounts ``/etc/netns/NS/resolv.conf`` over ``/etc/resolv.conf``
in a private mount namespace; we do the same with a file kept in the state directory
(``STATE_DIR/resolv/<vpc>.conf``, written by ``vpcnet``), so nothing under ``/etc`` is
ever written.  Called after ``setns`` and before ``exec`` (``procs.exec_in``, the
environment zygote's children, ``reach`` probes).  The caller must be single-threaded.
"""

from __future__ import annotations

import ctypes
import os

CLONE_NEWNS = 0x00020000
MS_BIND = 4096
MS_REC = 16384
MS_SLAVE = 1 << 19
RESOLV_CONF = b"/etc/resolv.conf"
_LIBC = ctypes.CDLL(None, use_errno=True)


def bind_resolv(path: str | None) -> bool:
    """Show ``path`` as /etc/resolv.conf to this process from now on; False if impossible."""
    if not path or not os.path.exists(path) or not os.path.exists(RESOLV_CONF):
        return False
    if _LIBC.unshare(CLONE_NEWNS) != 0:
        return False
    if _LIBC.mount(None, b"/", None, MS_REC | MS_SLAVE, None) != 0:
        return False
    return _LIBC.mount(os.fsencode(path), RESOLV_CONF, None, MS_BIND, None) == 0
