"""Tests of EFS in the topology model: file systems with mount targets and access points,
and functions mounting one (pure, no root)."""

import pytest

from hyperplane.errors import TopologyError
from hyperplane.model.parser import parse_topology
from tests.unit.model.test_parser import _repo_cwd, base_doc  # noqa: F401 (autouse fixture)


def _efs_doc() -> dict:
    doc = base_doc()
    vpc = doc["vpcs"][0]
    vpc["hosts"].append({"name": "efs-a", "subnet": "subnet-a", "ip": "10.0.1.20",
                         "service": {"tcp": 2049}})
    vpc["file_systems"] = [{"id": "fs-0123456789abcdef0", "mount_targets": ["efs-a"],
                            "access_points": [{"id": "fsap-0123456789abcdef0",
                                               "path": "/lambda"}]}]
    doc["functions"][0]["file_system_configs"] = [
        {"access_point": "arn:aws:elasticfilesystem:us-east-1:111111111111:access-point/"
                         "fsap-0123456789abcdef0", "local_mount_path": "/mnt/data"}]
    return doc


def test_file_systems_and_a_function_mounting_one():
    from hyperplane.model.topology import AccessPoint, FileSystem, FileSystemConfig
    topo = parse_topology(_efs_doc(), "t.yaml")
    fs = FileSystem("fs-0123456789abcdef0", ("efs-a",),
                    (AccessPoint("fsap-0123456789abcdef0", "/lambda"),))
    assert topo.vpc("vpc-app").file_systems == (fs,)
    assert topo.function("orders").file_systems == (
        FileSystemConfig("fsap-0123456789abcdef0", "/mnt/data"),)
    assert topo.access_point("fsap-0123456789abcdef0")[1] == fs


@pytest.mark.parametrize(("edit", "where", "reason"), [
    (lambda d: d["functions"][0]["file_system_configs"][0].update(local_mount_path="/data"),
     "functions[0].file_system_configs[0].local_mount_path", "must match ^/mnt/"),
    (lambda d: d["functions"][0]["file_system_configs"][0].update(access_point="fsap-00000000"),
     "functions[0].file_system_configs[0].access_point", "unknown access point"),
    (lambda d: d["functions"][1].update(file_system_configs=[
        {"access_point": "fsap-0123456789abcdef0", "local_mount_path": "/mnt/a"}] * 2),
     "functions[1].file_system_configs", "at most 1"),
    (lambda d: d["vpcs"][0]["file_systems"][0].update(mount_targets=["db"]),
     "vpcs[0].file_systems[0].mount_targets[0]", "serving TCP 2049"),
    (lambda d: d["vpcs"][0]["file_systems"][0].update(id="fs-x"),
     "vpcs[0].file_systems[0].id", "must match"),
    (lambda d: d["functions"][2].update(file_system_configs=[
        {"access_point": "fsap-0123456789abcdef0", "local_mount_path": "/mnt/a"}]),
     "functions[2].file_system_configs[0].access_point", "needs a vpc_config"),
])
def test_file_system_errors(edit, where, reason):
    doc = _efs_doc()
    edit(doc)
    with pytest.raises(TopologyError) as info:
        parse_topology(doc, "t.yaml")
    assert info.value.path == where and reason in info.value.reason
