"""EFS as Lambda mounts it: the connectivity check an environment makes at init.

The controller shows each file system's directory at its ``LocalMountPath`` (a bind
mount the zygote makes in the environment's mount namespace: ``kernel.mounts``); what
Lambda checks, and this module does with real packets from the environment's
namespace, is that one of the file system's mount targets answers on TCP 2049 through
the function's ENIs and their security groups.  When none does, init fails with
AWS's ``EFSMountConnectivityException`` (the controller answers it as Lambda's Invoke
does: HTTP 408), and every later invocation checks again (a rule added meanwhile lets
the next one through).

``--efs`` of the agent: a JSON list of ``{"arn": ACCESS POINT ARN, "path":
LOCAL MOUNT PATH, "targets": ["IP:2049", ...]}``.
"""

from __future__ import annotations

import selectors
import socket
import time

CONNECT_TIMEOUT = 1.0
ERRORS = ("EFSMountConnectivityException", "EFSMountFailureException")


def _answering(targets: list[str], timeout: float) -> bool:
    """Whether one of ``targets`` (``IP:PORT``) accepts a TCP connection in ``timeout``:
    all are tried at once, non-blocking (no thread, no host lookup)."""
    selector = selectors.DefaultSelector()
    socks = []
    try:
        for target in targets:
            host, _, port = target.rpartition(":")
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            socks.append(sock)
            try:
                if sock.connect_ex((host, int(port))) == 0:
                    return True
            except (OSError, ValueError):
                continue
            selector.register(sock, selectors.EVENT_WRITE)
        deadline = time.monotonic() + timeout
        while selector.get_map() and time.monotonic() < deadline:
            for key, _ in selector.select(deadline - time.monotonic()):
                if key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    return True
                selector.unregister(key.fileobj)
        return False
    finally:
        selector.close()
        for sock in socks:
            sock.close()


def check(mounts: list[dict], timeout: float = CONNECT_TIMEOUT) -> dict | None:
    """None when every file system has a mount target that answers, else the error."""
    for mount in mounts:
        if not _answering(mount.get("targets") or [], timeout):
            return {"errorType": "EFSMountConnectivityException",
                    "errorMessage": "The function couldn't connect to the Amazon EFS file "
                                    f"system with access point {mount.get('arn')}. Check "
                                    "your network configuration and try again."}
    return None
