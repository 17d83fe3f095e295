"""The receive ring's socket filter (``bpf.links_filter``): accepts exactly the links given."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hyperplane.dataplane import bpf


def test_ranges_merge_consecutive_indexes() -> None:
    assert bpf.ranges([7, 3, 4, 5, 9, 10, 3]) == [(3, 5), (7, 7), (9, 10)]
    assert bpf.ranges([]) == []


@given(st.sets(st.integers(1, 300), max_size=60), st.integers(0, 320))
def test_the_filter_accepts_exactly_the_given_links(links: set[int], ifindex: int) -> None:
    prog = bpf.links_filter(links)
    assert prog is not None and len(prog) == 2 + 4 * len(bpf.ranges(links))
    assert bpf.run(prog, ifindex) == (bpf.ACCEPT if ifindex in links else 0)


def test_no_links_rejects_everything() -> None:
    prog = bpf.links_filter([])
    assert prog is not None
    assert [bpf.run(prog, i) for i in (0, 1, 2**31 - 1)] == [0, 0, 0]


def test_too_many_ranges_gives_no_program() -> None:
    spread = range(1, 2 * bpf.MAX_RANGES + 3, 2)  # every other index: one range each
    assert bpf.links_filter(spread[:bpf.MAX_RANGES]) is not None
    assert bpf.links_filter(spread[:bpf.MAX_RANGES + 1]) is None
    assert len(bpf.links_filter(spread[:bpf.MAX_RANGES])) <= bpf.MAX_INSNS


def test_jumps_stay_short_and_the_program_packs_as_sock_filter() -> None:
    prog = bpf.links_filter([1, 2, 3, 10, 20])
    assert all(jt < 256 and jf < 256 for _code, jt, jf, _k in prog)
    code = bpf.assemble(prog)
    assert len(code) == 8 * len(prog)
    assert bpf.INSN.unpack_from(code, 0) == (bpf.LD_W_ABS, 0, 0, bpf.SKF_AD_IFINDEX)
