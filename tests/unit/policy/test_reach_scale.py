"""``reach`` at scale, the pure half: one Explainer for many pairs, stand-ins for the
targets behind another VPC's route, the machine's verdict, the summary."""

from __future__ import annotations

from hyperplane.model.enis import plan_enis
from hyperplane.model.generate import generate
from hyperplane.model.parser import parse_topology
from hyperplane.policy import reachability


def _big():
    topology = parse_topology(generate(vpcs=3, subnets=2, hosts=3, functions=3), "gen.yaml")
    return topology, plan_enis(topology, [])


def test_the_explainer_agrees_with_explain_on_every_pair() -> None:
    topology, enis = _big()
    explainer = reachability.Explainer(topology, enis)
    targets = reachability.targets(topology, False)
    for source in reachability.host_sources(topology):
        for target in targets:
            assert explainer.explain(source, target) == \
                reachability.explain(topology, enis, source, target)


def test_one_stand_in_per_other_vpc_and_expectation() -> None:
    topology, enis = _big()
    explainer = reachability.Explainer(topology, enis)
    targets = reachability.targets(topology, False)
    source = reachability.host_sources(topology)[0]
    expected = [explainer.explain(source, t) for t in targets]
    probed, stood = reachability.stand_ins(source, targets, expected)
    own = [i for i, t in enumerate(targets) if t.vpc_id == source.vpc_id]
    assert set(own) <= set(probed)
    assert len(stood) == 2  # the two other VPCs, all "unreachable"
    covered = sorted(own + list(stood) + [i for others in stood.values() for i in others])
    assert covered == list(range(len(targets)))  # every pair probed or stood for
    for stand_in, others in stood.items():
        assert {targets[i].vpc_id for i in [stand_in, *others]} == {targets[stand_in].vpc_id}


def test_a_machine_failure_is_never_unreachable() -> None:
    verdict, reason = reachability.verdict("machine", ("allowed", "local route"),
                                           "no file descriptor left (EMFILE)")
    assert verdict == "machine" and "EMFILE" in reason and "allowed" in reason
    assert reachability.verdict("timeout", ("allowed", "local route"))[0] == "unreachable"


def test_the_summary_counts_and_names_what_is_worth_a_look() -> None:
    rows = [{"source": "a", "target": "b:80", "verdict": "allowed", "reason": "local route",
             "address": "10.0.0.1"},
            {"source": "a", "target": "c:80", "verdict": "machine", "address": "10.0.0.1",
             "reason": "not probed: EMFILE"},
            {"source": "d", "target": "b:80", "verdict": "unreachable", "address": None,
             "reason": "a function without VpcConfig reaches no VPC"}]
    text = reachability.render_summary(rows, probes=3)
    first, *rest = text.splitlines()
    assert first == ("3 pairs (2 sources x 2 targets, 3 probes): allowed 1, machine 1, "
                     "unreachable 1; probe and model disagree on 0")
    assert rest == ["  a (10.0.0.1) -> c:80: machine: not probed: EMFILE"]
