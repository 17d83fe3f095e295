"""Large topologies on demand, for scale figures anyone can reproduce (pure).

``generate(vpcs, subnets, hosts, functions, accounts)`` returns a topology document (the
topology file's dict) shaped like a realistic account:

    VPC i         10.i.0.0/16 (i from 1), owned by account ``i mod accounts``
    subnet j      10.i.j.0/24 in az ``j mod 3``
    hosts         ``hosts`` per subnet, ``h<i>-<j>-<k>`` at 10.i.j.(10+k), each serving
                  HTTP on 8080, in the VPC's host group (HTTP from the functions' group
                  and from the other hosts, ICMP from the VPC)
    functions     ``fn-<n>`` spread round-robin over the VPCs, each in all its VPC's
                  subnets with the VPC's function group: one Hyperplane ENI per subnet and
                  VPC, shared by the VPC's functions (``subnets x vpcs`` ENIs)

``hyperplane generate`` prints it as YAML; the ``20 x 5 x 10`` account with 100 functions
is the scale benchmark of docs/benchmarks.md.
"""

from __future__ import annotations

MAX_VPCS = 250
MAX_SUBNETS = 250
MAX_HOSTS = 240  # per subnet: .10 .. .249
FIRST_ACCOUNT = 111111111111


def account_id(n: int) -> str:
    return f"{FIRST_ACCOUNT + n:012d}"


def _vpc(i: int, subnets: int, hosts: int, owner: str | None) -> dict:
    fn_group, host_group = f"sg-fn-{i}", f"sg-hosts-{i}"
    vpc: dict = {
        "id": f"vpc-{i}", "cidr": f"10.{i}.0.0/16",
        "subnets": [{"id": f"subnet-{i}-{j}", "cidr": f"10.{i}.{j}.0/24",
                     "az": f"az{j % 3 + 1}"} for j in range(subnets)],
        "security_groups": [
            {"id": fn_group, "egress": [{"protocol": "all", "cidr": "0.0.0.0/0"}]},
            {"id": host_group, "ingress": [
                {"protocol": "tcp", "ports": "8080", "source_security_group": fn_group},
                {"protocol": "tcp", "ports": "8080", "source_security_group": host_group},
                {"protocol": "icmp", "cidr": f"10.{i}.0.0/16"}]}],
        "hosts": [{"name": f"h{i}-{j}-{k}", "subnet": f"subnet-{i}-{j}",
                   "ip": f"10.{i}.{j}.{10 + k}", "security_groups": [host_group],
                   "service": {"http": 8080}}
                  for j in range(subnets) for k in range(hosts)],
    }
    if owner is not None:
        vpc["account"] = owner
    return vpc


def generate(vpcs: int, subnets: int, hosts: int, functions: int, accounts: int = 1,
             code: str = "examples/functions") -> dict:
    """The document (see the module's docstring); ``ValueError`` for sizes past the plan."""
    for value, low, high, what in ((vpcs, 1, MAX_VPCS, "vpcs"),
                                   (subnets, 1, MAX_SUBNETS, "subnets"),
                                   (hosts, 0, MAX_HOSTS, "hosts"),
                                   (functions, 0, 10000, "functions"),
                                   (accounts, 1, vpcs, "accounts")):
        if not low <= value <= high:
            raise ValueError(f"--{what} must be from {low} to {high}, not {value}")
    owners = [account_id(n) for n in range(accounts)]
    document = {
        "account": owners[0],
        "vpcs": [_vpc(i, subnets, hosts, owners[(i - 1) % accounts] if accounts > 1 else None)
                 for i in range(1, vpcs + 1)],
        "functions": [],
    }
    for n in range(functions):
        i = n % vpcs + 1
        document["functions"].append({
            "name": f"fn-{n}", "code": code, "handler": "whoami.handler",
            "vpc_config": {"subnet_ids": [f"subnet-{i}-{j}" for j in range(subnets)],
                           "security_group_ids": [f"sg-fn-{i}"]}})
    return document
