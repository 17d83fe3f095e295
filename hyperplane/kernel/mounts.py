"""A private ``/etc/resolv.conf`` and EFS directories for a process entering one of our
namespaces (side effects).

``ip netns exec NS`` bind-mounts ``/etc/netns/NS/resolv.conf`` over ``/etc/resolv.conf``
in a private mount namespace; we do the same with a file kept in the state directory
(``STATE_DIR/resolv/<vpc>.conf``, written by ``vpcnet``), so nothing under ``/etc`` is
ever written.  Called after ``setns`` and before ``exec`` (``procs.exec_in``, the
environment zygote's children, ``reach`` probes).  The caller must be single-threaded.

``bind_dirs`` shows directories of the state (an EFS file system's, ``STATE_DIR/efs``) at
their ``LocalMountPath`` under ``/mnt`` to an environment: a tmpfs is mounted on ``/mnt``
in its private mount namespace first, so nothing is ever created on the machine's ``/mnt``.
"""

from __future__ import annotations

import ctypes
import os

CLONE_NEWNS = 0x00020000
MS_BIND = 4096
MS_REC = 16384
MS_SLAVE = 1 << 19
RESOLV_CONF = b"/etc/resolv.conf"
MNT = "/mnt"
_LIBC = ctypes.CDLL(None, use_errno=True)
_private = [False]  # this process has its own mount namespace already


def _own_namespace() -> bool:
    if _private[0]:
        return True
    if _LIBC.unshare(CLONE_NEWNS) != 0:
        return False
    if _LIBC.mount(None, b"/", None, MS_REC | MS_SLAVE, None) != 0:
        return False
    _private[0] = True
    return True


def _raise(what: str) -> None:
    errno = ctypes.get_errno()
    raise OSError(errno, f"{what}: {os.strerror(errno)}")


def bind_dirs(mounts: list[dict]) -> None:
    """Each ``{"source": DIR, "target": /mnt/...}`` shown to this process (OSError if not)."""
    if not mounts:
        return
    if not _own_namespace():
        _raise("unshare(CLONE_NEWNS)")
    if _LIBC.mount(b"tmpfs", MNT.encode(), b"tmpfs", 0, b"mode=755,size=64k") != 0:
        _raise(f"mount tmpfs on {MNT}")
    for mount in mounts:
        target = mount["target"]
        if not target.startswith(MNT + "/"):
            raise OSError(f"{target} is not under {MNT}")
        os.makedirs(target, exist_ok=True)
        if _LIBC.mount(os.fsencode(mount["source"]), os.fsencode(target), None, MS_BIND,
                       None) != 0:
            _raise(f"bind {mount['source']} on {target}")


def bind_resolv(path: str | None) -> bool:
    """Show ``path`` as /etc/resolv.conf to this process from now on; False if impossible."""
    if not path or not os.path.exists(path) or not os.path.exists(RESOLV_CONF):
        return False
    if not _own_namespace():
        return False
    return _LIBC.mount(os.fsencode(path), RESOLV_CONF, None, MS_BIND, None) == 0
