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

import asyncio

CONNECT_TIMEOUT = 1.0
ERRORS = ("EFSMountConnectivityException", "EFSMountFailureException")


async def _answers(target: str, timeout: float) -> bool:
    host, _, port = target.rpartition(":")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout)
    except (OSError, asyncio.TimeoutError, ValueError):
        return False
    writer.close()
    return True


async def check(mounts: list[dict], timeout: float = CONNECT_TIMEOUT) -> dict | None:
    """None when every file system has a mount target that answers, else the error."""
    for mount in mounts:
        targets = mount.get("targets") or []
        answers = await asyncio.gather(*(_answers(t, timeout) for t in targets))
        if not any(answers):
            return {"errorType": "EFSMountConnectivityException",
                    "errorMessage": "The function couldn't connect to the Amazon EFS file "
                                    f"system with access point {mount.get('arn')}. Check "
                                    "your network configuration and try again."}
    return None
