"""The large-topology generator: valid documents of the asked size (pure)."""

from __future__ import annotations

import pytest

from hyperplane.model.enis import plan_enis
from hyperplane.model.generate import generate
from hyperplane.model.parser import parse_topology


def test_the_scale_benchmark_account_parses_with_the_asked_sizes() -> None:
    topo = parse_topology(generate(20, 5, 10, 100), "big.yaml")
    assert len(topo.vpcs) == 20 and sum(len(v.subnets) for v in topo.vpcs) == 100
    assert sum(len(v.hosts) for v in topo.vpcs) == 1000 and len(topo.functions) == 100
    assert all(h.http_port == 8080 for v in topo.vpcs for h in v.hosts)


def test_accounts_are_spread_over_the_vpcs() -> None:
    topo = parse_topology(generate(4, 1, 1, 0, accounts=2), "t.yaml")
    assert [topo.vpc_account(v.id) for v in topo.vpcs] == \
        ["111111111111", "111111111112", "111111111111", "111111111112"]


def test_functions_share_one_eni_per_subnet_and_vpc() -> None:
    topo = parse_topology(generate(3, 2, 0, 9), "t.yaml")
    assert len({(e.key.subnet_id, e.key.security_group_ids)
                for e in plan_enis(topo, [])}) == 6


@pytest.mark.parametrize("sizes", [(0, 1, 1, 1), (1, 0, 1, 1), (1, 1, 241, 1), (2, 1, 1, 1, 3)])
def test_sizes_past_the_plan_are_refused(sizes: tuple) -> None:
    with pytest.raises(ValueError):
        generate(*sizes)
