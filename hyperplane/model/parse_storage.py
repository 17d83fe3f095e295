"""The topology file's EFS keys (pure): a VPC's ``file_systems``, a function's
``file_system_configs``.

A VPC may hold EFS file systems, each reached through mount targets (hosts of the VPC
that serve TCP 2049: ``service: {tcp: 2049}``) and opened through access points:

    file_systems:
      - id: fs-0123456789abcdef0
        mount_targets: [efs-a, efs-b]        host names of this VPC
        access_points:
          - {id: fsap-0123456789abcdef0, path: /lambda}    path: its root, default /

A function mounts one access point, as Lambda's ``FileSystemConfigs`` does:

    file_system_configs:
      - access_point: fsap-0123456789abcdef0   the id, or its ARN
        local_mount_path: /mnt/data            ^/mnt/[a-zA-Z0-9-_.]+$ (AWS's pattern)

The function must be in the access point's VPC.  ``StorageParser`` is a part of
``parser.Parser``; errors are the usual ``FILE: field.path: reason``.
"""

from __future__ import annotations

import re

from hyperplane.model.fields import Fields, key, shown
from hyperplane.model.topology import (
    AccessPoint,
    FileSystem,
    FileSystemConfig,
    Host,
    VpcConfig,
)

NFS_PORT = 2049
MAX_FILE_SYSTEM_CONFIGS = 1  # AWS: one per function
FILE_SYSTEM_ID = re.compile(r"fs-[0-9a-f]{8,40}")
ACCESS_POINT_ID = re.compile(r"fsap-[0-9a-f]{8,40}")
ACCESS_POINT_ARN = re.compile(r"arn:aws[a-z-]*:elasticfilesystem:[a-z0-9-]+:\d{12}:"
                              r"access-point/(fsap-[0-9a-f]{8,40})")
LOCAL_MOUNT_PATH = re.compile(r"/mnt/[a-zA-Z0-9-_.]+")
ROOT_PATH = re.compile(r"/([A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*)?")


class StorageParser(Fields):
    """``file_systems`` of a VPC and ``file_system_configs`` of a function."""

    access_points: dict[str, str]  # access point id -> VPC id (filled while parsing VPCs)

    def file_systems(self, raw: object, path: str, vpc_id: str,
                     hosts: tuple[Host, ...]) -> tuple[FileSystem, ...]:
        found = []
        for index, item in enumerate(self.list_of(raw or [], path)):
            found.append(self._file_system(item, f"{path}[{index}]", vpc_id, hosts))
        return tuple(found)

    def _file_system(self, raw: object, path: str, vpc_id: str,
                     hosts: tuple[Host, ...]) -> FileSystem:
        m = self.mapping(raw, path, ("id", "mount_targets"), ("access_points",))
        fs_id = self._matching(m["id"], key(path, "id"), FILE_SYSTEM_ID, "file system id")
        targets = self.ident_list(m["mount_targets"], key(path, "mount_targets"), 16,
                                  "mount target")
        by_name = {h.name: h for h in hosts}
        for index, name in enumerate(targets):
            host = by_name.get(name)
            if host is None or host.service is None or host.service.port != NFS_PORT:
                self.fail(f"{key(path, 'mount_targets')}[{index}]", f"{shown(name)} is not "
                          f"a host of {vpc_id} serving TCP {NFS_PORT} (service: {{tcp: 2049}})")
        points = []
        points_path = key(path, "access_points")
        for index, item in enumerate(self.list_of(m.get("access_points", []), points_path)):
            points.append(self._access_point(item, f"{points_path}[{index}]", vpc_id))
        return FileSystem(fs_id, targets, tuple(points))

    def _access_point(self, raw: object, path: str, vpc_id: str) -> AccessPoint:
        m = self.mapping(raw, path, ("id",), ("path",))
        ap_id = self._matching(m["id"], key(path, "id"), ACCESS_POINT_ID, "access point id")
        if ap_id in self.access_points:
            self.fail(key(path, "id"), f"access point {ap_id} is declared twice")
        self.access_points[ap_id] = vpc_id
        root = self._matching(m.get("path", "/"), key(path, "path"), ROOT_PATH, "path")
        return AccessPoint(ap_id, root)

    def _matching(self, raw: object, path: str, pattern: re.Pattern, what: str) -> str:
        text = self.string(raw, path)
        if not pattern.fullmatch(text):
            self.fail(path, f"{what} {shown(text)} must match ^{pattern.pattern}$")
        return text

    def file_system_configs(self, raw: object, path: str,
                            vpc_config: VpcConfig | None) -> tuple[FileSystemConfig, ...]:
        items = self.list_of(raw or [], path)
        if len(items) > MAX_FILE_SYSTEM_CONFIGS:
            self.fail(path, f"at most {MAX_FILE_SYSTEM_CONFIGS} file system per function")
        configs = []
        for index, item in enumerate(items):
            item_path = f"{path}[{index}]"
            m = self.mapping(item, item_path, ("access_point", "local_mount_path"))
            text = self.string(m["access_point"], key(item_path, "access_point"))
            arn = ACCESS_POINT_ARN.fullmatch(text)
            ap_id = arn.group(1) if arn else text
            self._check_access_point(ap_id, key(item_path, "access_point"), vpc_config)
            mount = self._matching(m["local_mount_path"], key(item_path, "local_mount_path"),
                                   LOCAL_MOUNT_PATH, "local mount path")
            configs.append(FileSystemConfig(ap_id, mount))
        return tuple(configs)

    def _check_access_point(self, ap_id: str, path: str, vpc_config: VpcConfig | None) -> None:
        if ap_id not in self.access_points:
            self.fail(path, f"unknown access point {shown(ap_id)}")
        if vpc_config is None:
            self.fail(path, "a function that mounts a file system needs a vpc_config (EFS "
                      "is reached through the function's ENIs)")
        if self.access_points[ap_id] != vpc_config.vpc_id:
            self.fail(path, f"access point {ap_id} is in {self.access_points[ap_id]}, not in "
                      f"{vpc_config.vpc_id} (the VPC of the function's subnets)")
