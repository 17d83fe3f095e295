"""The topology as a picture (pure): the scene, DOT and mermaid, without Graphviz or root."""

from __future__ import annotations

import copy
import re
from dataclasses import replace
from pathlib import Path
from xml.etree import ElementTree

import pytest
import yaml

from hyperplane.fabric import draw, picture
from hyperplane.model.document import load_topology
from hyperplane.model.parser import parse_topology
from hyperplane.model.topology import Topology

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples"
QUICKSTART_ENIS = {"eni-b07b0294055dfe722": "10.0.1.4", "eni-3934a7c976ff616dd": "10.0.2.4"}


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch: pytest.MonkeyPatch) -> None:
    """`code: examples/functions` resolves against the repository root."""
    monkeypatch.chdir(REPO)


def example(name: str) -> Topology:
    return load_topology(str(EXAMPLES / name))


def scene_of(name: str) -> picture.Scene:
    return picture.scene(picture.file_view(example(name), f"examples/{name}"))


def edges_by_kind(scene: picture.Scene, kind: str) -> set[tuple[str, str, str]]:
    return {(e.src, e.dst, e.label) for e in scene.edges if e.kind == kind}


def test_the_quickstart_file_view_predicts_the_enis_up_makes() -> None:
    view = picture.file_view(example("quickstart.yaml"))
    assert {e.id: e.ip for e in view.enis} == QUICKSTART_ENIS
    assert all(e.functions == ("orders", "billing") for e in view.enis)


def test_dot_names_every_eni_its_address_and_every_function() -> None:
    text = draw.dot(scene_of("quickstart.yaml"))
    assert text.startswith("digraph hyperplane {") and text.rstrip().endswith("}")
    for eni_id, ip in QUICKSTART_ENIS.items():
        assert re.search(rf'label="{eni_id}\\n{re.escape(ip)}\\nsg-lambda\\norders, billing"',
                         text)
    for name in ("orders", "billing"):
        for eni_id in QUICKSTART_ENIS:
            assert f'"fn_{name}" -> "{picture.node_id("eni", eni_id)}"' in text
    assert 'label="db\\n10.0.1.10\\nhttp:8080\\nsg-db"' in text
    assert '"cluster_account_111111111111"' in text and "subnet-a  10.0.1.0/24  az1" in text


def test_a_group_reference_is_an_edge_from_the_named_group() -> None:
    """sg-db admits sg-lambda on tcp/8080 and icmp: one edge sg-lambda -> sg-db."""
    scene = scene_of("quickstart.yaml")
    lam, db = picture.node_id("sg", "vpc-app", "sg-lambda"), picture.node_id("sg", "vpc-app",
                                                                             "sg-db")
    assert edges_by_kind(scene, "sg_in") == {(lam, db, "tcp/8080, icmp")}
    assert f'"{lam}" -> "{db}" [color="#c0392b", fontcolor="#c0392b", style="dashed", ' \
           'label="tcp/8080, icmp"]' in draw.dot(scene)


def test_an_egress_rule_naming_a_group_points_at_it() -> None:
    doc = yaml.safe_load((EXAMPLES / "quickstart.yaml").read_text())
    doc["vpcs"][0]["security_groups"][0]["egress"] = [
        {"protocol": "tcp", "ports": "5432-5433", "destination_security_group": "sg-db"}]
    topology = parse_topology(doc, "t.yaml", str(EXAMPLES))
    scene = picture.scene(picture.file_view(topology))
    lam, db = picture.node_id("sg", "vpc-app", "sg-lambda"), picture.node_id("sg", "vpc-app",
                                                                             "sg-db")
    assert (lam, db, "egress tcp/5432-5433") in edges_by_kind(scene, "sg_out")
    group = next(n for n in scene.all_nodes() if n.id == lam)
    assert group.lines == ("sg-lambda",)  # no CIDR rule left to list


def test_mermaid_is_a_flowchart_with_the_same_graph() -> None:
    scene = scene_of("quickstart.yaml")
    text = draw.mermaid(scene)
    assert text.splitlines()[0] == "flowchart LR"
    lines = [line.strip() for line in text.splitlines()]
    assert sum(line.startswith("subgraph ") for line in lines) == lines.count("end") == 5
    for eni_id, ip in QUICKSTART_ENIS.items():
        assert f'{picture.node_id("eni", eni_id)}["{eni_id}<br/>{ip}<br/>' in text
    assert 'fn_orders(["orders"])' in text
    assert f"fn_orders --> {picture.node_id('eni', 'eni-b07b0294055dfe722')}" in text
    assert '-.->|"tcp/8080, icmp"|' in text
    assert len([line for line in text.splitlines() if "-->" in line or "-.->" in line]) == \
        len(scene.edges)
    assert "linkStyle 4 stroke:#c0392b" in text


def test_nat_gateway_internet_gateway_and_route_tables() -> None:
    scene = scene_of("nat-gateway.yaml")
    nodes = {n.id: n for n in scene.all_nodes()}
    nat = nodes[picture.node_id("nat", "nat-a")]
    assert nat.kind == "natgw" and "Elastic IP 198.51.100.10" in nat.lines
    assert nat.lines[1] == "private 10.0.0.4"
    igw = picture.node_id("igw", "vpc-app")
    assert nodes[igw].lines[0] == "igw-app"
    assert nodes[picture.INTERNET].kind == "internet"
    assert edges_by_kind(scene, "uplink") == {(igw, picture.INTERNET, ""),
                                               (nat.id, igw, "as 198.51.100.10")}
    assert edges_by_kind(scene, "route") == {
        (picture.node_id("rt", "subnet-public"), igw, "0.0.0.0/0"),
        (picture.node_id("rt", "subnet-private"), nat.id, "0.0.0.0/0")}
    assert picture.node_id("rt", "subnet-isolated") not in nodes


def test_each_account_is_a_cluster_holding_its_vpcs_and_functions() -> None:
    scene = scene_of("two-tenants.yaml")
    accounts = {c.label: c for c in scene.clusters}
    assert set(accounts) == {"account 111111111111", "account 222222222222"}
    green = accounts["account 222222222222"]
    assert [c.kind for c in green.clusters] == ["lambda", "vpc"]
    assert [n.lines[0] for n in green.clusters[0].nodes] == ["green"]
    assert green.clusters[1].label == "vpc-green  10.0.0.0/16"
    assert not scene.nodes  # no internet: no gateway, every function in a VPC


def test_a_function_without_vpc_goes_to_the_internet() -> None:
    scene = scene_of("no-vpc.yaml")
    assert ("fn_public", picture.INTERNET, "Lambda egress 192.0.2.10") in \
        edges_by_kind(scene, "egress")
    public = next(n for n in scene.all_nodes() if n.id == "fn_public")
    assert public.lines == ("public", "no VPC")


def test_a_running_view_shows_states_environments_and_enis_being_made() -> None:
    file_view = picture.file_view(example("quickstart.yaml"))
    creating = replace(file_view.enis[1], status="creating")
    view = picture.View(file_view.topology, (file_view.enis[0], creating), (
        picture.FunctionView("orders", "111111111111", True, "Active", 1),
        picture.FunctionView("billing", "111111111111", True, "Pending", 0)), "running")
    scene = picture.scene(view)
    nodes = {n.id: n for n in scene.all_nodes()}
    assert nodes["fn_orders"].lines == ("orders", "Active · 1 environment")
    assert nodes["fn_billing"].lines == ("billing", "Pending · 0 environments")
    made = nodes[picture.node_id("eni", creating.id)]
    assert made.muted and made.lines[-1] == "creating"
    assert 'style="dashed,filled"' in draw.dot(scene)
    assert "classDef muted" in draw.mermaid(scene)


def test_legacy_functions_get_no_predicted_eni() -> None:
    doc = copy.deepcopy(yaml.safe_load((EXAMPLES / "quickstart.yaml").read_text()))
    doc["functions"][1]["networking"] = "legacy"
    view = picture.file_view(parse_topology(doc, "t.yaml", str(EXAMPLES)))
    assert all(e.functions == ("orders",) for e in view.enis)
    billing = next(f for f in view.functions if f.name == "billing")
    assert billing.note == "legacy: an ENI per environment"


def test_identifiers_are_one_to_one_and_labels_are_escaped() -> None:
    assert picture.node_id("fn", "a-b") != picture.node_id("fn", "a_b")
    assert re.fullmatch(r"\w+", picture.node_id("fn", "a.b-c_d:é"))
    assert draw.quote('say "hi"\\now\nthen') == '"say \\"hi\\"\\\\now\\nthen"'
    assert draw.mermaid_text('a "b" <c> & d') == "a #quot;b#quot; #lt;c#gt; #amp; d"


def test_the_same_view_draws_the_same_text() -> None:
    assert draw.dot(scene_of("nat-gateway.yaml")) == draw.dot(scene_of("nat-gateway.yaml"))
    assert draw.mermaid(scene_of("two-tenants.yaml")) == \
        draw.mermaid(scene_of("two-tenants.yaml"))


def test_the_readme_picture_names_every_eni_function_and_host() -> None:
    """docs/quickstart.svg is generated (scripts/readme_graph.py); it shows what the file
    makes (a stale picture after a change of the quickstart fails here)."""
    root = ElementTree.parse(REPO / "docs" / "quickstart.svg").getroot()
    texts = {t.text for t in root.iter("{http://www.w3.org/2000/svg}text")}
    view = picture.file_view(example("quickstart.yaml"))
    for name in [e.id for e in view.enis] + [e.ip for e in view.enis] + \
            [f.name for f in view.functions] + ["db", "10.0.1.10", "tcp/8080, icmp"]:
        assert name in texts, name


def test_long_lists_are_wrapped_in_labels() -> None:
    names = ["template-CreateOrder-3I770VJ1F3QM", "template-ListOrders-CP745OB3575O", "a", "b"]
    assert picture.wrapped(names) == ["template-CreateOrder-3I770VJ1F3QM",
                                      "template-ListOrders-CP745OB3575O, a, b"]
    assert picture.wrapped([]) == []
