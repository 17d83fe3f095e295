"""EFS for a function's environments: the directories to bind and the targets to check
(side effects: makes the file system's directory under the state).

A file system's data is ``STATE_DIR/efs/<fs id>/<access point root>``, shared by every
function and access point with that root, kept until ``down``.  ``file_systems`` gives
the zygote's bind mounts (``{"source", "target"}``, shown at ``LocalMountPath``) and the
agent's connectivity checks (``lambda_vm.efs``: the access point's ARN and the mount
targets' ``IP:2049``).
"""

from __future__ import annotations

from hyperplane.controller.functions import FunctionRecord
from hyperplane.kernel import state
from hyperplane.model.topology import Topology


def file_systems(topology: Topology, fn: FunctionRecord) -> tuple[list[dict], list[dict]]:
    mounts, checks = [], []
    for config in fn.file_systems:
        try:
            _vpc, fs, ap = topology.access_point(config["access_point"])
        except KeyError:
            continue
        source = state.path("efs", fs.id, *[p for p in ap.path.split("/") if p])
        source.mkdir(parents=True, exist_ok=True)
        mounts.append({"source": str(source), "target": config["local_mount_path"]})
        targets = [f"{topology.host(h).ip}:2049" for h in fs.mount_targets]
        checks.append({"arn": f"arn:aws:elasticfilesystem:{fn.region}:"
                              f"{fn.account or topology.account}:access-point/{ap.id}",
                       "path": config["local_mount_path"], "targets": targets})
    return mounts, checks
