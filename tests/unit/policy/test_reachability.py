"""The meaning of each declared pair for ``hyperplane reach`` (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hyperplane.model.document import load_topology
from hyperplane.model.enis import plan_enis
from hyperplane.policy import reachability

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def world(name: str):
    topology = load_topology(str(EXAMPLES / name))
    return topology, plan_enis(topology, [])


def expect(name: str, source: str, target: str) -> tuple[str, str]:
    topology, enis = world(name)
    targets = {t.label: t for t in reachability.targets(topology, True)}
    hosts = {s.name: s for s in reachability.host_sources(topology)}
    if source in hosts:
        src = hosts[source]
    else:
        eni = next((e for e in enis if source in e.functions), None)
        src = reachability.function_source(topology, source, eni)
    return reachability.explain(topology, enis, src, targets[target])


@pytest.mark.parametrize(("example", "source", "target", "verdict", "reason"), [
    ("quickstart.yaml", "orders", "db:8080", "allowed", "local route"),
    ("security-groups.yaml", "api", "cache:6379", "denied",
     "egress of sg-api (ENI 10.0.1.4) allows no tcp/6379 to 10.0.1.30"),
    ("security-groups.yaml", "batch", "db:8080", "denied",
     "ingress of sg-db (db) admits no tcp/8080 from 10.0.1.5"),
    ("security-groups.yaml", "ops", "db:8080", "allowed", "local route"),
    ("security-groups.yaml", "worker", "cache:6379", "allowed", "local route"),
    ("security-groups.yaml", "cache", "db:8080", "denied",
     "egress of sg-cache (host 10.0.1.30) allows no tcp/8080 to 10.0.1.10"),
    ("nat-gateway.yaml", "fetch", "internet:80", "allowed", "through the NAT gateway"),
    ("nat-gateway.yaml", "sealed", "internet:80", "unreachable",
     "no route to the internet in subnet-isolated's route table (local only)"),
    ("no-vpc.yaml", "public", "db:8080", "unreachable",
     "a function without VpcConfig reaches no VPC"),
    ("no-vpc.yaml", "public", "internet:80", "allowed", "Lambda's own internet egress"),
    ("two-tenants.yaml", "green", "blue-db:8080", "unreachable",
     "vpc-green and vpc-blue are not connected"),
])
def test_explain(example: str, source: str, target: str, verdict: str, reason: str) -> None:
    assert expect(example, source, target) == (verdict, reason)


def test_a_subnet_routed_straight_to_the_internet_gateway_has_no_public_address() -> None:
    topology, enis = world("nat-gateway.yaml")
    target = reachability.targets(topology, True)[-1]
    source = reachability.Source("x", "host", "vpc-app", "subnet-public", "10.0.0.9", ())
    verdict, reason = reachability.explain(topology, enis, source, target)
    assert verdict == "unreachable" and "has no public address" in reason


def test_verdict_trusts_the_probe_and_keeps_the_models_reason() -> None:
    target = reachability.Target("db", "10.0.1.10", 8080, "v", (), True)
    assert reachability.verdict("connected", ("allowed", "local route"), "db", target) == \
        ("allowed", "local route")
    assert reachability.verdict("timeout", ("denied", "ingress of x"), None, target) == \
        ("denied", "ingress of x")
    verdict, reason = reachability.verdict("connected", ("unreachable", "not connected"),
                                           "other-db", target)
    assert verdict == "unreachable" and "answered as other-db" in reason
    assert reachability.verdict("refused", ("allowed", "local route"))[0] == "unreachable"
    verdict, reason = reachability.verdict("timeout", ("allowed", "local route"))
    assert verdict == "unreachable" and "should allow it" in reason


def test_render_is_a_matrix_with_numbered_reasons() -> None:
    rows = [{"source": "a", "target": "db:1", "verdict": "allowed", "reason": "",
             "address": "10.0.1.4"},
            {"source": "b", "target": "db:1", "verdict": "denied", "reason": "why",
             "address": "10.0.1.5"}]
    lines = reachability.render(rows).splitlines()
    assert lines[0].split() == ["SOURCE", "db:1"]
    assert lines[1].split() == ["a", "allowed"]
    assert lines[2].split() == ["b", "denied", "[1]"]
    assert lines[-1] == "[1] b (10.0.1.5) -> db:1: why"
