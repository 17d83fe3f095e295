"""Environments' agents, forked by the zygote (side effects: the zygote's unix socket).

``spawn(topology, fn, function, envs)`` asks the zygote to fork one agent per
environment, ``CHUNK`` environments per request, and answers their process ids in
the same order.  ``spawn_request`` is what one agent is started with: its Runtime
API socket, the function's code, handler and settings, its namespace, its
``/etc/resolv.conf`` and its EFS mounts.
"""

from __future__ import annotations

import json

from hyperplane import jsonline
from hyperplane.controller import storage
from hyperplane.controller.functions import FunctionRecord
from hyperplane.kernel import state, vpcservices
from hyperplane.model.envs import Env
from hyperplane.model.topology import Function, Topology, function_account

CHUNK = 64  # agents per request to the zygote


def spawn(topology: Topology, fn: FunctionRecord, function: Function,
          envs: list[Env]) -> list[int]:
    """The agents of ``envs``, forked by the zygote: their process ids, in order."""
    pids: list[int] = []
    for start in range(0, len(envs), CHUNK):
        chunk = envs[start:start + CHUNK]
        reply = jsonline.request(state.zygote_socket(), {
            "op": "spawn_many",
            "spawns": [spawn_request(topology, fn, function, e) for e in chunk]}, timeout=60)
        if not reply.get("ok"):
            raise RuntimeError(f"could not start environments {[e.id for e in chunk]}: "
                               f"{reply.get('error')}")
        pids += reply["pids"]
    return pids


def spawn_request(topology: Topology, fn: FunctionRecord, function: Function,
                  env: Env) -> dict:
    args = ["--socket", state.env_socket(env.index), "--code", function.code,
            "--handler", function.handler, "--function", function.name,
            "--memory", str(function.memory), "--timeout", str(function.timeout),
            "--account", fn.account or function_account(topology, function),
            "--runtime", fn.runtime, "--region", fn.region,
            "--environment", json.dumps(fn.environment)]
    vpc_id = function.vpc_config.vpc_id if function.vpc_config else None
    mounts, checks = storage.file_systems(topology, fn)
    if checks:
        args += ["--efs", json.dumps(checks)]
    return {"op": "spawn", "netns": env.netns, "args": args, "log": str(state.log(env.id)),
            "cwd": function.code, "resolv": vpcservices.resolv_file(vpc_id),
            "mounts": mounts}
