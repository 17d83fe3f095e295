"""Proof of place: these run only inside the container of `make test-container` (or the CI
workflow), where HYPERPLANE_IN_CONTAINER=1 is set, and check that the suite really runs in a
container, in a network namespace other than the host's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    os.environ.get("HYPERPLANE_IN_CONTAINER") != "1",
    reason="runs only inside the test container (HYPERPLANE_IN_CONTAINER=1): make test-container")


def test_runs_in_a_container() -> None:
    # podman writes /run/.containerenv, docker /.dockerenv
    markers = [p for p in (Path("/run/.containerenv"), Path("/.dockerenv")) if p.exists()]
    assert markers, "neither /run/.containerenv nor /.dockerenv exists: not in a container"


def test_runs_in_another_network_namespace_than_the_host() -> None:
    host = os.environ.get("HYPERPLANE_HOST_NETNS_INODE", "")
    assert host.isdigit(), "HYPERPLANE_HOST_NETNS_INODE (the host's net-ns inode) is not set"
    assert os.stat("/proc/self/ns/net").st_ino != int(host)


def test_can_create_a_network_namespace() -> None:
    # the other half of the negative control: privileged, `ip netns add` works here
    from pyroute2 import netns
    netns.create("hp-probe")
    try:
        assert "hp-probe" in netns.listnetns()
    finally:
        netns.remove("hp-probe")


def test_has_no_compiler_so_the_dataplane_runs_pure_python() -> None:
    # the image has no gcc: the whole suite here runs without the compiled fast path
    import shutil

    from hyperplane.dataplane import fastpath
    assert not any(shutil.which(cc) for cc in ("cc", "gcc", "clang")), "a C compiler is here"
    assert fastpath.mode("auto") == "python"
    with pytest.raises(fastpath.FastPathError):
        fastpath.mode("compiled")
