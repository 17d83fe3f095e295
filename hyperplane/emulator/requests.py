"""Requests to the running emulator's daemons (side effects: Unix sockets).

The CLI's side of the controller, the dataplane and the NAT gateway: each call is
one ``jsonline`` request.  ``controller_request`` returns the controller's result or
raises what it answered (an AWS-named ``ApiError``, a ``UsageError``, or a
``RuntimeError`` for a failure of its own).  ``acquire_env`` holds an environment
through a lease connection until ``release``; ``invoke`` runs a function's handler
through the controller, ``invoke_env`` on an environment the caller holds;
``invoke_stream`` relays a streamed response's lines as they come.
"""

from __future__ import annotations

import fcntl
import os
import socket
import uuid
from collections.abc import Iterator

from hyperplane import jsonline
from hyperplane.errors import ApiError, UnreachableError, UsageError
from hyperplane.kernel import procs, state
from hyperplane.kernel.vpcservices import resolv_file
from hyperplane.model.envs import Env
from hyperplane.model.topology import Function


def nothing_up() -> UsageError:
    return UsageError(f"nothing is up (no state in {state.state_dir()}); start with "
                      "`hyperplane up FILE`")


def _answer(reply: dict) -> dict:
    """The controller's result, or the error it answered with raised."""
    if reply.get("ok"):
        return reply["result"]
    if "error" in reply and isinstance(reply["error"], dict):
        raise ApiError.from_dict(reply["error"])
    if "usage" in reply:
        raise UsageError(reply["usage"])
    raise RuntimeError(f"the controller failed: {reply.get('failure') or reply.get('error')}; "
                       f"see {state.log('controller')}")


def _unreachable() -> Exception:
    if not state.exists():
        return nothing_up()
    return RuntimeError("the controller does not answer; `hyperplane controller start` "
                        f"starts it again (its log: {state.log('controller')})")


def controller_request(message: dict, timeout: float = 60.0) -> dict:
    """One request to the controller: its result, or the error it answered with raised."""
    try:
        reply = jsonline.request(state.controller_socket(), message, timeout=timeout)
    except UnreachableError:
        raise _unreachable() from None
    return _answer(reply)


def invoke_stream(message: dict, timeout: float = 1000.0) -> Iterator[dict]:
    """An ``invoke`` request with ``"stream": true``: a streamed response's lines
    (``{"stream": {"content_type"}}``, ``{"chunk": "<base64>"}``) as they arrive, then
    ``{"reply": <the controller's result>}``; an error answered is raised."""
    try:
        for line in jsonline.lines(state.controller_socket(), {**message, "stream": True},
                                   timeout):
            if jsonline.is_streamed(line):
                yield line
            else:
                yield {"reply": _answer(line)}
                return
    except UnreachableError:
        raise _unreachable() from None
    raise RuntimeError(f"the controller gave no reply; see {state.log('controller')}")


def dataplane_request(message: dict) -> dict:
    return jsonline.request(state.control_socket(), message)


def natgw_request(message: dict) -> dict:
    return jsonline.request(state.natgw_socket(), message)


def natgw_stats() -> dict:
    """The NAT gateway process's counters: ``{"global": {...}, "gateways": {id: {...}},
    "cloudwatch": {id: {AWS metric name: value}}}``."""
    stats = natgw_request({"op": "stats"})["stats"]
    return {"global": stats["global"], "gateways": stats["enis"],
            "cloudwatch": stats.get("cloudwatch", {})}


# -- execution environments (through the controller) ----------------------------------------
def _name(function: Function | str) -> str:
    return function if isinstance(function, str) else function.name


class Lease:
    """An environment held: the controller's connection, and a shared ``flock`` on the
    environment's lock file, which a restarted controller looks at (``state.env_held``)."""

    def __init__(self, conn: socket.socket, index: int) -> None:
        self.conn = conn
        self.lock_fd = os.open(state.env_lock(index), os.O_RDONLY | os.O_CREAT, 0o600)
        fcntl.flock(self.lock_fd, fcntl.LOCK_SH)

    def fileno(self) -> int:
        return self.conn.fileno()

    def inherit(self) -> None:
        """Held by a command this process execs (``exec --function``) until it ends."""
        os.set_inheritable(self.conn.fileno(), True)
        os.set_inheritable(self.lock_fd, True)

    def close(self) -> None:
        self.conn.close()
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1


def acquire_env(function: Function | str) -> tuple[Env, Lease, bool]:
    """An environment held for the caller until ``release(lease)``: (env, lease, cold)."""
    try:
        lease, reply = jsonline.hold(state.controller_socket(),
                                     {"op": "lease", "name": _name(function)})
    except (OSError, ValueError, UnreachableError) as exc:
        raise RuntimeError(f"the controller does not answer ({exc}); see "
                           "`hyperplane controller start`") from None
    if not reply.get("ok"):
        lease.close()
        if isinstance(reply.get("error"), dict):
            raise ApiError.from_dict(reply["error"])
        raise RuntimeError(f"could not hold an environment: {reply}")
    env = Env.from_dict(reply["result"]["env"])
    return env, Lease(lease, env.index), reply["result"]["cold"]


def release(lease: Lease) -> None:
    lease.close()


def start_envs(name: str, count: int) -> list[Env]:
    """Scale ``name`` out by ``count`` environments at once (a burst), ready when returned."""
    result = controller_request({"op": "scale", "name": name, "count": count}, timeout=600)
    return [Env.from_dict(e) for e in result["envs"]]


def invoke_env(env: Env, payload: object, timeout: float = 30) -> dict:
    """One invocation on a given environment (no controller: the caller owns it)."""
    return jsonline.request(state.env_socket(env.index),
                            {"payload": payload, "request_id": str(uuid.uuid4())},
                            timeout=timeout)


def invoke(name: str, payload: object) -> dict:
    """Run the function's handler in an environment; the agent's reply, annotated."""
    return controller_request({"op": "invoke", "name": name, "payload": payload}, timeout=1000)


def exec_in_function(name: str, vpc_of_subnet, argv: list[str]) -> int:  # noqa: ANN001
    """Become ``argv`` in an environment of ``name``, held while the command lives.

    ``vpc_of_subnet(subnet_id)`` names the VPC whose resolver the command uses.
    """
    env, lease, _cold = acquire_env(name)
    lease.inherit()  # the command holds the environment until it ends
    vpc_id = vpc_of_subnet(env.subnet_id) if env.subnet_id else None
    return procs.exec_in(env.netns, argv, resolv_file(vpc_id))
