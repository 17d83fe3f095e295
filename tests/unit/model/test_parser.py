"""Tests of the topology model and its validation (pure, no root)."""

import copy
import re
from pathlib import Path

import pytest

from hyperplane.errors import TopologyError
from hyperplane.model import settings
from hyperplane.model.document import load_topology
from hyperplane.model.fields import FILE_PATH
from hyperplane.model.parser import parse_topology
from hyperplane.model.topology import (
    Function,
    Host,
    Rule,
    SecurityGroup,
    Service,
    Subnet,
    Topology,
    VpcConfig,
    reserved_addresses,
)

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples"
CODE = str(EXAMPLES / "functions")
DELETE = object()


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    """Examples say `code: examples/functions`, which resolves against the repo root."""
    monkeypatch.chdir(REPO)


def base_doc() -> dict:
    """A valid document: two tenants with identical CIDRs and host IPs, three functions."""
    return {
        "account": "111111111111",
        "vpcs": [
            {
                "id": "vpc-app",
                "cidr": "10.0.0.0/16",
                "subnets": [
                    {"id": "subnet-a", "cidr": "10.0.1.0/24", "az": "az1"},
                    {"id": "subnet-b", "cidr": "10.0.2.0/24", "az": "az2"},
                ],
                "security_groups": [
                    {"id": "sg-lambda", "egress": [{"protocol": "all", "cidr": "0.0.0.0/0"}]},
                    {"id": "sg-db", "ingress": [{"protocol": "tcp", "ports": "8080",
                                                 "source_security_group": "sg-lambda"}]},
                ],
                "hosts": [{"name": "db", "subnet": "subnet-a", "ip": "10.0.1.10",
                           "security_groups": ["sg-db"], "service": {"http": 8080}}],
            },
            {
                "id": "vpc-other",
                "cidr": "10.0.0.0/16",
                "subnets": [{"id": "subnet-c", "cidr": "10.0.1.0/24", "az": "az1"}],
                "security_groups": [{"id": "sg-other", "egress": [
                    {"protocol": "udp", "ports": "1000-2000", "destination_security_group":
                     "sg-other"}]}],
                "hosts": [{"name": "db2", "subnet": "subnet-c", "ip": "10.0.1.10"}],
            },
        ],
        "functions": [
            {"name": "orders", "code": "examples/functions", "handler": "orders.handler",
             "vpc_config": {"subnet_ids": ["subnet-a", "subnet-b"],
                            "security_group_ids": ["sg-lambda"]}},
            {"name": "billing", "code": "examples/functions", "handler": "billing.handler",
             "vpc_config": {"subnet_ids": ["subnet-a"], "security_group_ids": ["sg-lambda"]}},
            {"name": "plain", "code": CODE, "handler": "pkg.mod.handler",
             "memory": 256, "timeout": 30},
        ],
    }


def set_in(doc: dict, path: str, value: object) -> dict:
    """Set (or with DELETE remove) the field at a path like vpcs[0].subnets[1].cidr."""
    tokens = [key or int(index) for key, index in re.findall(r"(\w+)|\[(\d+)\]", path)]
    node = doc
    for token in tokens[:-1]:
        node = node[token]
    if value is DELETE:
        del node[tokens[-1]]
    elif isinstance(node, list) and tokens[-1] == len(node):
        node.append(value)
    else:
        node[tokens[-1]] = value
    return doc


def error_of(doc: object) -> TopologyError:
    with pytest.raises(TopologyError) as info:
        parse_topology(doc, "t.yaml")
    return info.value


def expect_line(path: Path) -> tuple[str, str]:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), path
    field, _, reason = first.removeprefix("# expect: ").partition(" | ")
    return field.strip(), reason.strip()


# -- valid topologies --------------------------------------------------------------------


def test_quickstart_parses_to_expected_objects():
    topo = load_topology(str(EXAMPLES / "quickstart.yaml"))
    assert topo.account == "111111111111"
    assert topo.source == str(EXAMPLES / "quickstart.yaml")
    (vpc,) = topo.vpcs
    assert (vpc.id, vpc.cidr) == ("vpc-app", "10.0.0.0/16")
    assert vpc.subnets == (Subnet("subnet-a", "10.0.1.0/24", "az1", "vpc-app"),
                           Subnet("subnet-b", "10.0.2.0/24", "az2", "vpc-app"))
    assert vpc.security_groups == (
        SecurityGroup("sg-lambda", (), (Rule("all", None, "0.0.0.0/0", None),), "sg-lambda"),
        SecurityGroup("sg-db", (Rule("tcp", (8080, 8080), None, "sg-lambda"),
                                Rule("icmp", None, None, "sg-lambda")),
                      (Rule("all", None, "0.0.0.0/0", None),),  # AWS's default egress
                      "sg-db"),
    )
    assert vpc.hosts == (Host("db", "subnet-a", "10.0.1.10", ("sg-db",), Service("http", 8080),
                             "vpc-app"),)
    config = VpcConfig(("subnet-a", "subnet-b"), ("sg-lambda",), "vpc-app")
    assert topo.functions == (Function("orders", CODE, "orders.handler", config),
                              Function("billing", CODE, "billing.handler", config))
    assert topo.settings == {}


def test_lookups_and_key_errors():
    topo = parse_topology(base_doc(), "t.yaml")
    assert topo.subnet("subnet-c").vpc_id == "vpc-other"
    assert topo.vpc("vpc-other").cidr == "10.0.0.0/16"
    assert topo.host("db2").ip == "10.0.1.10"
    assert topo.function("plain").vpc_config is None
    assert topo.security_group("sg-db").ingress[0].security_group == "sg-lambda"
    for lookup in (topo.subnet, topo.vpc, topo.host, topo.function, topo.security_group):
        with pytest.raises(KeyError):
            lookup("nope")


def test_overlapping_vpcs_of_two_tenants_are_valid_and_hashable():
    topo = parse_topology(base_doc(), "t.yaml")
    assert topo.vpcs[0].cidr == topo.vpcs[1].cidr
    assert topo.host("db").ip == topo.host("db2").ip
    assert hash(topo) == hash(parse_topology(base_doc(), "t.yaml"))


def test_optional_fields_and_defaults():
    topo = parse_topology(base_doc(), "t.yaml")
    plain, orders = topo.function("plain"), topo.function("orders")
    assert (plain.memory, plain.timeout, plain.code) == (256, 30, CODE)
    assert (orders.memory, orders.timeout) == (128, 3)
    assert topo.security_group("sg-other").egress[0] == Rule("udp", (1000, 2000), None,
                                                             "sg-other")
    assert topo.host("db2").security_groups == () and topo.host("db2").http_port is None


def test_database_cache_and_proxy_services():
    doc = base_doc()
    hosts = doc["vpcs"][0]["hosts"]
    hosts[0]["service"] = {"mysql": 3306, "password": "s3cret", "database": "app"}
    hosts += [{"name": "cache", "subnet": "subnet-a", "ip": "10.0.1.11",
               "service": {"redis": 6379}},
              {"name": "proxy", "subnet": "subnet-b", "ip": "10.0.2.10",
               "service": {"proxy": 3306, "target": "db"}}]
    topo = parse_topology(doc, "t.yaml")
    assert topo.host("db").service == Service("mysql", 3306, "admin", "s3cret", "app")
    assert topo.host("db").http_port is None
    assert topo.host("cache").service == Service("redis", 6379)
    assert topo.host("proxy").service == Service("proxy", 3306, target="db")


def test_networking_and_reserved_concurrency_default_to_none():
    for function in parse_topology(base_doc(), "t.yaml").functions:
        assert (function.networking, function.reserved_concurrency) == (None, None)


@pytest.mark.parametrize("networking", ["hyperplane", "legacy"])
@pytest.mark.parametrize("reserved", [0, 7, 1000])
def test_networking_and_reserved_concurrency_are_stored(networking, reserved):
    doc = set_in(base_doc(), "functions[0].networking", networking)
    doc = set_in(doc, "functions[0].reserved_concurrency", reserved)
    orders = parse_topology(doc, "t.yaml").function("orders")
    assert (orders.networking, orders.reserved_concurrency) == (networking, reserved)
    assert parse_topology(doc, "t.yaml").function("billing").networking is None


def test_null_networking_and_reserved_concurrency_mean_not_given():
    doc = set_in(base_doc(), "functions[2].networking", None)
    doc = set_in(doc, "functions[2].reserved_concurrency", None)
    plain = parse_topology(doc, "t.yaml").function("plain")
    assert (plain.networking, plain.reserved_concurrency) == (None, None)


def test_function_fields_change_equality():
    doc = set_in(base_doc(), "functions[0].networking", "legacy")
    assert parse_topology(doc, "t.yaml") != parse_topology(base_doc(), "t.yaml")


def test_function_records_keep_their_positional_order():
    old_style = Function("f", CODE, "m.h", None, 256, 30)  # positional, as before
    assert (old_style.networking, old_style.reserved_concurrency) == (None, None)


@pytest.mark.parametrize("value", [None, {}, {"subnet_ids": [], "security_group_ids": []}])
def test_empty_vpc_config_means_no_vpc(value):
    doc = set_in(base_doc(), "functions[0].vpc_config", value)
    assert parse_topology(doc, "t.yaml").function("orders").vpc_config is None


def test_settings_are_free_form_and_ignored_by_equality():
    doc = set_in(base_doc(), "settings", {"anything": [1, {"x": None}]})
    topo = parse_topology(doc, "t.yaml")
    assert topo.settings == {"anything": [1, {"x": None}]}
    assert topo == parse_topology(base_doc(), "t.yaml")
    assert hash(topo) == hash(parse_topology(base_doc(), "t.yaml"))


def test_ports_accept_int_and_cidr_is_normalized():
    doc = set_in(base_doc(), "vpcs[0].security_groups[1].ingress[0]",
                 {"protocol": "TCP", "ports": 80, "cidr": "10.0.0.0/8"})
    rule = parse_topology(doc, "t.yaml").security_group("sg-db").ingress[0]
    assert rule == Rule("tcp", (80, 80), "10.0.0.0/8", None)


def test_ingress_may_use_plain_security_group_key():
    doc = set_in(base_doc(), "vpcs[0].security_groups[1].ingress[0]",
                 {"protocol": "icmp", "security_group": "sg-db"})
    rule = parse_topology(doc, "t.yaml").security_group("sg-db").ingress[0]
    assert rule == Rule("icmp", None, None, "sg-db")


def test_reserved_addresses():
    assert reserved_addresses("10.0.1.0/24") == [
        "10.0.1.0", "10.0.1.1", "10.0.1.2", "10.0.1.3", "10.0.1.255"]
    assert reserved_addresses("10.0.1.16/28")[-1] == "10.0.1.31"


# -- examples/invalid ---------------------------------------------------------------------

INVALID = sorted((EXAMPLES / "invalid").glob("*.yaml"))


def test_every_invalid_class_has_an_example():
    names = {p.stem for p in INVALID}
    assert {"bad_cidr", "subnet_outside_vpc", "overlapping_subnets", "host_outside_subnet",
            "host_reserved_address", "unknown_subnet", "unknown_security_group",
            "duplicate_subnet_id", "duplicate_function_name", "function_spans_two_vpcs",
            "bad_handler", "yaml_syntax", "bad_timing_profile", "bad_duration",
            "bad_networking"} <= names


def load_and_check(path: str) -> Topology:
    """What `validate` and `up` do (engine.load): the file, then its settings."""
    topology = load_topology(path)
    settings.check(topology.settings, path)
    return topology


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_example(path):
    field, reason = expect_line(path)
    with pytest.raises(TopologyError) as info:
        load_and_check(str(path))
    err = info.value
    assert (err.file, err.path) == (str(path), field)
    assert reason in err.reason
    assert str(err) == f"{path}: {field}: {err.reason}"


# -- each validation rule -------------------------------------------------------------------

V0 = "vpcs[0]"
SA = "vpcs[0].subnets[0]"
SB = "vpcs[0].subnets[1]"
H0 = "vpcs[0].hosts[0]"
R0 = "vpcs[0].security_groups[1].ingress[0]"
F0 = "functions[0]"
VC = "functions[0].vpc_config"
HOST = {"name": "db3", "subnet": "subnet-a", "ip": "10.0.1.10"}

CASES = [
    # shape: missing / wrong type / unknown key / ids
    ("missing_field", f"{SA}.az", DELETE, f"{SA}.az", "missing required field"),
    ("missing_account", "account", DELETE, "account", "missing required field"),
    ("wrong_type_list", f"{V0}.subnets", "subnet-a", f"{V0}.subnets", "expected a list"),
    ("wrong_type_mapping", "vpcs[0]", "vpc-app", "vpcs[0]", "expected a mapping"),
    ("wrong_type_int", f"{F0}.memory", "256", f"{F0}.memory", "expected an integer"),
    ("unknown_key", f"{SA}.cdir", "x", f"{SA}.cdir", "unknown key 'cdir'"),
    ("unknown_top_key", "acount", "x", "acount", "did you mean 'account'"),
    ("empty_id", f"{SA}.id", "", f"{SA}.id", "non-empty string"),
    ("id_not_string", f"{V0}.id", 5, f"{V0}.id", "non-empty string"),
    ("settings_not_mapping", "settings", [1], "settings", "expected a mapping"),
    # account
    ("account_int", "account", 111111111111, "account", "quoted 12-digit string"),
    ("account_short", "account", "1234", "account", "12-digit string"),
    # CIDRs
    ("bad_cidr", f"{SB}.cidr", "10.0.300.0/24", f"{SB}.cidr", "not a valid IPv4 CIDR"),
    ("cidr_no_prefix", f"{SB}.cidr", "10.0.2.0", f"{SB}.cidr", "not a valid IPv4 CIDR"),
    ("host_bits", f"{SA}.cidr", "10.0.1.5/24", f"{SA}.cidr", "host bits set"),
    ("vpc_host_bits", f"{V0}.cidr", "10.0.1.0/16", f"{V0}.cidr", "did you mean 10.0.0.0/16"),
    ("outside_vpc", f"{SB}.cidr", "10.9.2.0/24", f"{SB}.cidr", "outside VPC vpc-app"),
    ("overlap", f"{SB}.cidr", "10.0.0.0/23", f"{SB}.cidr",
     "10.0.0.0/23 (subnet-b) overlaps subnet subnet-a (10.0.1.0/24)"),
    ("subnet_prefix_small", f"{SB}.cidr", "10.0.2.0/29", f"{SB}.cidr", "subnet prefix /29"),
    ("subnet_prefix_big", f"{SB}.cidr", "10.0.0.0/15", f"{SB}.cidr", "/16../28"),
    ("vpc_prefix", f"{V0}.cidr", "10.0.0.0/8", f"{V0}.cidr", "VPC prefix /8"),
    ("rule_cidr", f"{R0}", {"protocol": "tcp", "cidr": "10.0.0.1/8"}, f"{R0}.cidr",
     "host bits set"),
    # hosts
    ("host_ip_invalid", f"{H0}.ip", "10.0.1.300", f"{H0}.ip", "not a valid IPv4 address"),
    ("host_ip_short", f"{H0}.ip", "10.0.1", f"{H0}.ip", "not a valid IPv4 address"),
    ("host_ip_leading_zero", f"{H0}.ip", "10.0.1.010", f"{H0}.ip", "not a valid IPv4"),
    ("host_outside", f"{H0}.ip", "10.0.2.10", f"{H0}.ip", "outside subnet subnet-a"),
    ("reserved_network", f"{H0}.ip", "10.0.1.0", f"{H0}.ip", "network address"),
    ("reserved_router", f"{H0}.ip", "10.0.1.1", f"{H0}.ip", "VPC router"),
    ("reserved_dns", f"{H0}.ip", "10.0.1.2", f"{H0}.ip", "(10.0.1.0/24): DNS"),
    ("reserved_future", f"{H0}.ip", "10.0.1.3", f"{H0}.ip", "reserved for future use"),
    ("reserved_broadcast", f"{H0}.ip", "10.0.1.255", f"{H0}.ip", "broadcast"),
    ("same_ip_same_subnet", f"{V0}.hosts[1]", HOST, f"{V0}.hosts[1].ip",
     "already used by host 'db'"),
    ("host_name_upper", f"{H0}.name", "DB", f"{H0}.name", "namespace names"),
    ("host_name_digit", f"{H0}.name", "1db", f"{H0}.name", "must match"),
    ("host_name_long", f"{H0}.name", "d" * 32, f"{H0}.name", "must match"),
    ("service_key", f"{H0}.service", {"https": 443}, f"{H0}.service", "exactly one service kind"),
    ("service_two", f"{H0}.service", {"http": 80, "tcp": 81}, f"{H0}.service",
     "(got http, tcp)"),
    ("service_option", f"{H0}.service", {"redis": 6379, "user": "u"}, f"{H0}.service.user",
     "unknown key"),
    ("service_db_password", f"{H0}.service", {"mysql": 3306}, f"{H0}.service.password",
     "needs the master user's password"),
    ("service_proxy_target", f"{H0}.service", {"proxy": 3306}, f"{H0}.service.target",
     "needs the host it forwards to"),
    ("service_proxy_unknown", f"{H0}.service", {"proxy": 3306, "target": "nobody"},
     f"{H0}.service.target", "'nobody' is not another host"),
    ("service_password_ctl", f"{H0}.service", {"redis": 6379, "password": "a\nb"},
     f"{H0}.service.password", "printable"),
    ("service_port", f"{H0}.service", {"http": 0}, f"{H0}.service.http", "1..65535"),
    ("service_type", f"{H0}.service", {"http": "80"}, f"{H0}.service.http", "an integer"),
    # references
    ("host_unknown_subnet", f"{H0}.subnet", "subnet-z", f"{H0}.subnet",
     "unknown subnet 'subnet-z'"),
    ("host_subnet_other_vpc", f"{H0}.subnet", "subnet-c", f"{H0}.subnet",
     "'subnet-c' is in vpc-other, not in vpc-app"),
    ("fn_unknown_subnet", f"{VC}.subnet_ids[0]", "subnet-z", f"{VC}.subnet_ids[0]",
     "unknown subnet 'subnet-z'"),
    ("host_unknown_sg", f"{H0}.security_groups[0]", "sg-z", f"{H0}.security_groups[0]",
     "unknown security group 'sg-z'"),
    ("fn_unknown_sg", f"{VC}.security_group_ids[0]", "sg-z", f"{VC}.security_group_ids[0]",
     "unknown security group 'sg-z'"),
    ("rule_unknown_source", f"{R0}.source_security_group", "sg-z",
     f"{R0}.source_security_group", "unknown security group 'sg-z'"),
    ("rule_unknown_destination", "vpcs[1].security_groups[0].egress[0]",
     {"protocol": "all", "destination_security_group": "sg-z"},
     "vpcs[1].security_groups[0].egress[0].destination_security_group",
     "unknown security group 'sg-z'"),
    ("host_sg_other_vpc", f"{H0}.security_groups[0]", "sg-other", f"{H0}.security_groups[0]",
     "'sg-other' is in vpc-other, not in vpc-app"),
    ("rule_sg_other_vpc", f"{R0}.source_security_group", "sg-other",
     f"{R0}.source_security_group", "only be used in their own VPC"),
    ("fn_sg_other_vpc", f"{VC}.security_group_ids[0]", "sg-other",
     f"{VC}.security_group_ids[0]", "not in vpc-app (the VPC of the function's subnets)"),
    ("fn_spans_two_vpcs", f"{VC}.subnet_ids[1]", "subnet-c", f"{VC}.subnet_ids[1]",
     "must all be in one VPC"),
    # duplicates
    ("dup_vpc_id", "vpcs[1].id", "vpc-app", "vpcs[1].id", "duplicate VPC id 'vpc-app'"),
    ("dup_subnet_in_vpc", f"{SB}.id", "subnet-a", f"{SB}.id", "duplicate subnet id"),
    ("dup_subnet_across", "vpcs[1].subnets[0].id", "subnet-a", "vpcs[1].subnets[0].id",
     "first defined at vpcs[0].subnets[0].id"),
    ("dup_sg_across", "vpcs[1].security_groups[0].id", "sg-db",
     "vpcs[1].security_groups[0].id", "duplicate security group id 'sg-db'"),
    ("dup_host_across", "vpcs[1].hosts[0].name", "db", "vpcs[1].hosts[0].name",
     "duplicate host name 'db'"),
    ("dup_function", "functions[1].name", "orders", "functions[1].name",
     "duplicate function name 'orders'"),
    ("dup_in_subnet_ids", f"{VC}.subnet_ids", ["subnet-a", "subnet-b", "subnet-a"],
     f"{VC}.subnet_ids[2]", "duplicate subnet id 'subnet-a' (already at index 0)"),
    ("dup_in_sg_ids", f"{VC}.security_group_ids", ["sg-lambda", "sg-lambda"],
     f"{VC}.security_group_ids[1]", "duplicate security group id"),
    # vpc_config shape
    ("subnets_without_sgs", f"{VC}.security_group_ids", [], f"{VC}.security_group_ids",
     "no security group"),
    ("sgs_without_subnets", f"{VC}.subnet_ids", DELETE, f"{VC}.subnet_ids", "no subnet"),
    ("too_many_subnets", f"{VC}.subnet_ids", [f"s{i}" for i in range(17)], f"{VC}.subnet_ids",
     "at most 16"),
    ("too_many_sgs", f"{VC}.security_group_ids", [f"g{i}" for i in range(6)],
     f"{VC}.security_group_ids", "at most 5"),
    ("ipv6_not_bool", f"{VC}.ipv6_allowed_for_dual_stack", "yes",
     f"{VC}.ipv6_allowed_for_dual_stack", "expected a boolean"),
    # functions
    ("handler_no_dot", f"{F0}.handler", "orders", f"{F0}.handler", "'module.function'"),
    ("handler_trailing_dot", f"{F0}.handler", "orders.", f"{F0}.handler", "'module.function'"),
    ("handler_digit", f"{F0}.handler", "1orders.handler", f"{F0}.handler", "module.function"),
    ("handler_dash", f"{F0}.handler", "my-mod.handler", f"{F0}.handler", "module.function"),
    ("handler_keyword", f"{F0}.handler", "orders.class", f"{F0}.handler", "module.function"),
    ("code_missing", f"{F0}.code", "examples/nope", f"{F0}.code", "does not exist"),
    ("code_is_file", f"{F0}.code", "pyproject.toml", f"{F0}.code", "is not a directory"),
    ("function_name_space", f"{F0}.name", "my function", f"{F0}.name", "must match"),
    ("function_name_long", f"{F0}.name", "f" * 65, f"{F0}.name", "must match"),
    ("memory_low", f"{F0}.memory", 64, f"{F0}.memory", "128..10240"),
    ("memory_high", f"{F0}.memory", 20000, f"{F0}.memory", "128..10240"),
    ("memory_bool", f"{F0}.memory", True, f"{F0}.memory", "expected an integer"),
    ("timeout_low", f"{F0}.timeout", 0, f"{F0}.timeout", "1..900"),
    ("timeout_high", f"{F0}.timeout", 901, f"{F0}.timeout", "1..900"),
    ("networking_unknown", f"{F0}.networking", "shared", f"{F0}.networking",
     "unknown networking mode 'shared' (known: hyperplane, legacy)"),
    ("networking_case", f"{F0}.networking", "Legacy", f"{F0}.networking",
     "unknown networking mode 'Legacy'"),
    ("networking_not_string", f"{F0}.networking", ["legacy"], f"{F0}.networking",
     "unknown networking mode ['legacy']"),
    ("reserved_negative", f"{F0}.reserved_concurrency", -1, f"{F0}.reserved_concurrency",
     "-1 is outside the allowed range 0..1000"),
    ("reserved_high", f"{F0}.reserved_concurrency", 1001, f"{F0}.reserved_concurrency",
     "0..1000"),
    ("reserved_string", f"{F0}.reserved_concurrency", "5", f"{F0}.reserved_concurrency",
     "expected an integer"),
    ("reserved_bool", f"{F0}.reserved_concurrency", True, f"{F0}.reserved_concurrency",
     "expected an integer"),
    ("function_unknown_key", f"{F0}.concurrency", 5, f"{F0}.concurrency",
     "did you mean 'reserved_concurrency'"),
    # rules
    ("protocol_unknown", f"{R0}.protocol", "tpc", f"{R0}.protocol", "unknown protocol 'tpc'"),
    ("port_zero", f"{R0}.ports", "0", f"{R0}.ports", "port 0 is outside 1-65535"),
    ("port_high", f"{R0}.ports", 70000, f"{R0}.ports", "port 70000 is outside"),
    ("port_reversed", f"{R0}.ports", "2000-1000", f"{R0}.ports", "reversed"),
    ("port_list", f"{R0}.ports", "80,443", f"{R0}.ports", "'N' or 'N-M'"),
    ("port_word", f"{R0}.ports", "http", f"{R0}.ports", "'N' or 'N-M'"),
    ("ports_with_all", f"{R0}.protocol", "all", f"{R0}.ports", "only allowed with tcp or udp"),
    ("ports_with_icmp", f"{R0}.protocol", "icmp", f"{R0}.ports", "not with protocol icmp"),
    ("rule_two_targets", f"{R0}.cidr", "10.0.0.0/8", f"{R0}.source_security_group",
     "give only one of"),
    ("rule_no_target", f"{R0}.source_security_group", DELETE, R0, "needs one of cidr"),
    ("ingress_with_destination", f"{R0}.destination_security_group", "sg-db",
     f"{R0}.destination_security_group", "unknown key"),
]


@pytest.mark.parametrize("name, where, value, path, reason", CASES, ids=[c[0] for c in CASES])
def test_validation_rule(name, where, value, path, reason):
    err = error_of(set_in(base_doc(), where, value if value is DELETE else copy.deepcopy(value)))
    assert err.file == "t.yaml"
    assert err.path == path, str(err)
    assert reason in err.reason, str(err)


@pytest.mark.parametrize("data", [None, [], "text", 3])
def test_document_must_be_a_mapping(data):
    err = error_of(data)
    assert err.path == FILE_PATH


def test_topology_is_frozen():
    topo = parse_topology(base_doc(), "t.yaml")
    with pytest.raises(AttributeError):
        topo.account = "222222222222"  # type: ignore[misc]
    assert isinstance(topo, Topology)
    assert isinstance(topo.vpcs, tuple) and isinstance(topo.vpcs[0].hosts, tuple)
