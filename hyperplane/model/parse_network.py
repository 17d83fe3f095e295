"""The topology file's VPC networking keys: accounts, DNS, gateways, route tables (pure).

Extensions of a VPC entry (all optional; a file without them means what it always meant):

    account: "222222222222"        the VPC's owner (several tenants in one file); default:
                                   the file's top-level account
    dns_zone: vpc-app.internal     the zone the VPC resolver (base + 2) answers for;
                                   default ``<vpc id>.internal``
    internet_gateway: igw-app      an internet gateway attached to the VPC
    nat_gateways:                  NAT gateways, each in a (public) subnet of the VPC
      - {id: nat-a, subnet: subnet-pub, elastic_ip: 198.51.100.10, private_ip: 10.0.0.5}
    flow_logs: true                VPC Flow Logs of every interface of the VPC (AWS's
                                   defaults), or {traffic_type: ALL|ACCEPT|REJECT,
                                   format: "${version} ${srcaddr} ...",
                                   max_aggregation_interval: 60|600}; on a subnet too
    subnets:
      - id: subnet-priv
        route_table:               the subnet's route table; ``local`` (the VPC CIDR) is
          routes:                  implicit, as in AWS
            - {destination: 0.0.0.0/0, target: nat-a}

A route's target is ``local`` (only for the VPC CIDR), the VPC's internet gateway, or one of
its NAT gateways.  Elastic IPs come from 198.51.100.0/24, the emulated internet's public
pool.  A NAT gateway's private address defaults to the lowest free one of its subnet
(after the five AWS reserves and the hosts' addresses); ENIs are then placed after it.

``NetworkParser`` is a part of the one topology parser (``parser.Parser`` inherits
it): ``vpc_network`` reads these keys of one VPC mapping and returns a frozen
``VpcNetwork`` (``topology``), with the usual ``FILE: field.path: reason`` errors.
"""

from __future__ import annotations

import re

import netaddr

from hyperplane.model.fields import Fields, key, shown
from hyperplane.model.flowlogs import FlowLogSpec, check_spec
from hyperplane.model.topology import Host, NatGateway, Route, Subnet, VpcNetwork

VPC_KEYS = ("account", "dns_zone", "internet_gateway", "nat_gateways", "flow_logs")
SUBNET_KEYS = ("route_table", "flow_logs")
FLOW_LOG_KEYS = ("traffic_type", "format", "max_aggregation_interval")
EIP_POOL = "198.51.100.0/24"  # Elastic IPs (documentation range, never routed out)
MAX_INTERNET_GATEWAYS = 32    # each takes a /30 of names.IGW_TRANSIT
ACCOUNT = re.compile(r"[0-9]{12}")
_ZONE = re.compile(r"(?=.{1,200}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
                   r"(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*")


class NetworkParser(Fields):
    """The VPC networking part of ``parser.Parser`` (which owns these tables)."""

    default_account: str
    gateway_paths: dict[str, str]
    eip_paths: dict[str, str]
    internet_gateways: list[str]

    def vpc_network(self, m: dict, path: str, vpc_id: str, vpc_net: netaddr.IPNetwork,
                    subnets: tuple[Subnet, ...], hosts: tuple[Host, ...]) -> VpcNetwork:
        """The networking keys of one VPC mapping ``m`` (already checked for unknown keys)."""
        account = self.default_account
        if "account" in m:
            raw = m["account"]
            if not isinstance(raw, str) or not ACCOUNT.fullmatch(raw):
                self.fail(key(path, "account"),
                          f"must be a quoted 12-digit string, got {shown(raw)}")
            account = raw
        zone = m.get("dns_zone", f"{vpc_id}.internal")
        if not isinstance(zone, str) or not _ZONE.fullmatch(zone):
            self.fail(key(path, "dns_zone"), f"{shown(zone)} is not a lower-case DNS name")
        igw = self._internet_gateway(m.get("internet_gateway"), key(path, "internet_gateway"))
        by_id = {s.id: s for s in subnets}
        used = {h.ip for h in hosts}
        nats_path = key(path, "nat_gateways")
        nats = [self._nat_gateway(raw, f"{nats_path}[{index}]", vpc_id, by_id, used)
                for index, raw in enumerate(self.list_of(m.get("nat_gateways") or [],
                                                         nats_path))]
        targets = {"local"} | ({igw} if igw else set()) | {n.id for n in nats}
        tables, logs = [], []
        own = self._flow_log(m.get("flow_logs"), key(path, "flow_logs"))
        if own is not None:
            logs.append((vpc_id, own))
        for index, raw in enumerate(m.get("subnets") or []):
            if isinstance(raw, dict) and raw.get("route_table") is not None:
                item = f"{key(path, 'subnets')}[{index}].route_table"
                routes = self._route_table(raw["route_table"], item, vpc_net, targets)
                tables.append((raw["id"], routes))
            if isinstance(raw, dict) and raw.get("flow_logs") is not None:
                item = f"{key(path, 'subnets')}[{index}].flow_logs"
                spec = self._flow_log(raw["flow_logs"], item)
                if spec is not None:
                    logs.append((raw["id"], spec))
        return VpcNetwork(account, zone, igw, tuple(nats), tuple(tables), tuple(logs))

    def _flow_log(self, raw: object, path: str) -> FlowLogSpec | None:
        """``flow_logs: true`` (AWS's defaults), ``false``, or a mapping of
        ``FLOW_LOG_KEYS``."""
        if raw is None or raw is False:
            return None
        if raw is True:
            return FlowLogSpec()
        m = self.mapping(raw, path, (), FLOW_LOG_KEYS)
        try:
            return check_spec(m.get("traffic_type"), m.get("format"),
                              m.get("max_aggregation_interval"))
        except ValueError as exc:
            field, reason = exc.args
            self.fail(key(path, field), reason)

    def _internet_gateway(self, raw: object, path: str) -> str | None:
        if raw is None:
            return None
        igw = self.ident(raw, path)
        self.unique(self.gateway_paths, igw, path, "gateway id")
        if len(self.internet_gateways) >= MAX_INTERNET_GATEWAYS:
            self.fail(path, f"at most {MAX_INTERNET_GATEWAYS} internet gateways per file")
        self.internet_gateways.append(igw)
        return igw

    def _nat_gateway(self, raw: object, path: str, vpc_id: str, subnets: dict[str, Subnet],
                     used: set[str]) -> NatGateway:
        m = self.mapping(raw, path, ("id", "subnet", "elastic_ip"), ("private_ip",))
        gateway_id = self.ident(m["id"], key(path, "id"))
        self.unique(self.gateway_paths, gateway_id, key(path, "id"), "gateway id")
        subnet_id = self.ident(m["subnet"], key(path, "subnet"))
        if subnet_id not in subnets:
            self.fail(key(path, "subnet"), f"unknown subnet {shown(subnet_id)} in {vpc_id}")
        subnet_net = netaddr.IPNetwork(subnets[subnet_id].cidr)
        eip = self._address(m["elastic_ip"], key(path, "elastic_ip"))
        if eip not in netaddr.IPNetwork(EIP_POOL):
            self.fail(key(path, "elastic_ip"), f"{eip} is outside {EIP_POOL}, the emulated "
                      "internet's Elastic IP pool")
        self.unique(self.eip_paths, str(eip), key(path, "elastic_ip"), "Elastic IP")
        reserved = {subnet_net.first + i for i in range(4)} | {subnet_net.last}
        if "private_ip" in m:
            ip = self._address(m["private_ip"], key(path, "private_ip"))
            if ip not in subnet_net or int(ip) in reserved:
                self.fail(key(path, "private_ip"), f"{ip} is not a usable address of subnet "
                          f"{subnet_id} ({subnet_net.cidr})")
            if str(ip) in used:
                self.fail(key(path, "private_ip"), f"{ip} is already used in {vpc_id}")
            private = str(ip)
        else:
            free = (str(netaddr.IPAddress(v)) for v in range(subnet_net.first, subnet_net.last)
                    if v not in reserved)
            found = next((a for a in free if a not in used), None)
            if found is None:
                self.fail(key(path, "subnet"), f"subnet {subnet_id} has no free address")
            private = found
        used.add(private)
        return NatGateway(gateway_id, subnet_id, str(eip), private, vpc_id)

    def _address(self, raw: object, path: str) -> netaddr.IPAddress:
        net = self.cidr(f"{raw}/32" if isinstance(raw, str) else raw, path, None, "address")
        return net.ip

    def _route_table(self, raw: object, path: str, vpc_net: netaddr.IPNetwork,
                     targets: set[str]) -> tuple[Route, ...]:
        m = self.mapping(raw, path, (), ("routes",))
        routes: list[Route] = []
        seen: dict[str, str] = {}
        routes_path = key(path, "routes")
        for index, item in enumerate(self.list_of(m.get("routes") or [], routes_path)):
            route = self._route(item, f"{routes_path}[{index}]", vpc_net, targets, seen)
            if route is not None:
                routes.append(route)
        return tuple(routes)

    def _route(self, item: object, path: str, vpc_net: netaddr.IPNetwork, targets: set[str],
               seen: dict[str, str]) -> Route | None:
        r = self.mapping(item, path, ("destination", "target"))
        net = self.cidr(r["destination"], key(path, "destination"), None, "route")
        target = self.ident(r["target"], key(path, "target"))
        if target not in targets:
            self.fail(key(path, "target"), f"unknown route target {shown(target)} (this VPC "
                      f"has: {', '.join(sorted(targets))})")
        self.unique(seen, str(net.cidr), key(path, "destination"), "route destination")
        overlaps = net.first <= vpc_net.last and vpc_net.first <= net.last
        inside = overlaps and not (net.first <= vpc_net.first and vpc_net.last <= net.last)
        if target == "local":
            if net != vpc_net:
                self.fail(key(path, "target"), f"local routes only the VPC CIDR {vpc_net.cidr}")
            return None
        if inside:
            self.fail(key(path, "destination"), f"{net.cidr} overlaps the VPC CIDR "
                      f"{vpc_net.cidr}, which is routed locally")
        return Route(str(net.cidr), target)
