"""nftables in many namespaces at once: ``libnft.batch`` (every host's firewall).

Real namespaces (three of this test's own, removed whatever happens) and real rulesets
through libnftables: inside a batch, a table applied in each namespace is in force at once
(its counters read back in the same batch, through the same context, are those applied),
a table applied again carries the values it is given, a failing command raises naming
its namespace and stops what follows, and the contexts are freed when the batch ends or
holds ``BATCH`` of them (the process keeps no descriptor of them afterwards).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from hyperplane.kernel import libnft, netlink, nftables

NAMESPACES = [f"hp-nftb-{i}" for i in range(3)]
TABLE = "hp_nftb"

pytestmark = pytest.mark.skipif(not libnft.available(), reason="libnftables is missing")


@pytest.fixture
def spaces() -> Iterator[list[str]]:
    try:
        for ns in NAMESPACES:
            netlink.ensure_netns(ns)
        yield NAMESPACES
    finally:
        for ns in NAMESPACES:
            netlink.remove_netns(ns)


def script(packets: int) -> str:
    """The table made again (the idiom of ``policy.hostfw``), its counter at ``packets``."""
    return (f"add table ip {TABLE}\ndelete table ip {TABLE}\n"
            f"table ip {TABLE} {{\n  counter drops {{ packets {packets} bytes 0 }}\n}}\n")


def descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_batch_applies_reads_and_applies_again(spaces: list[str]) -> None:
    before = descriptors()
    with nftables.batch():
        for k, ns in enumerate(spaces):
            assert nftables.counters(ns, TABLE) == {}  # nothing yet
            nftables.apply(ns, script(k))
        read = [nftables.counters(ns, TABLE) for ns in spaces]
        for ns, found in zip(spaces, read, strict=True):
            nftables.apply(ns, script(found["drops"] + 10))
        again = [nftables.counters(ns, TABLE)["drops"] for ns in spaces]
        held = descriptors()
    assert read == [{"drops": 0}, {"drops": 1}, {"drops": 2}]
    assert again == [10, 11, 12]
    assert held >= before + len(spaces)  # a context (its netlink socket) per namespace
    assert descriptors() == before  # all freed with the batch
    assert [nftables.counters(ns, TABLE)["drops"] for ns in spaces] == [10, 11, 12]


def test_a_full_batch_is_freed_and_the_next_commands_go_on(
        spaces: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(libnft, "BATCH", 2)
    before = descriptors()
    with nftables.batch():
        for k, ns in enumerate(spaces):
            nftables.apply(ns, script(100 + k))
            assert descriptors() - before <= 2  # never more than BATCH contexts
    assert descriptors() == before
    assert [nftables.counters(ns, TABLE)["drops"] for ns in spaces] == [100, 101, 102]


def test_a_failing_command_names_its_namespace_and_stops_the_rest(
        spaces: list[str]) -> None:
    before = descriptors()
    with pytest.raises(RuntimeError, match=f"nft failed in {spaces[1]}"), nftables.batch():
        for k, ns in enumerate(spaces):
            nftables.apply(ns, script(k) if k != 1 else "add rule ip nosuchtable x drop")
    assert descriptors() == before
    assert nftables.counters(spaces[0], TABLE) == {"drops": 0}  # done before the failure
    assert nftables.counters(spaces[2], TABLE) == {}  # never run
