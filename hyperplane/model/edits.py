"""Edits of a topology document, as the EC2 API makes them at run time (pure).

Each function takes the recorded document (the dict a topology file loads into) and
returns an edited copy; the caller validates the copy with the topology parser and
keeps it only if it parses.  Nothing here checks dependencies (an ENI in a subnet, a
rule naming a group): that is the controller's, which knows the running state.

    add_vpc / remove_vpc            a VPC (CreateVpc, DeleteVpc)
    add_subnet / remove_subnet      a subnet of a VPC (CreateSubnet, DeleteSubnet)
    add_group / remove_group        a security group (CreateSecurityGroup, DeleteSecurityGroup)
    strip_functions                 the file's functions once the controller has created
                                    them (they only seed it; later edits must not have to
                                    keep them valid)

A security group made by the API keeps its name and description (the file's optional
``name`` and ``description`` keys).
"""

from __future__ import annotations

import copy
from typing import Any

Document = dict[str, Any]


def _vpcs(doc: Document) -> list[dict]:
    return [v for v in doc.get("vpcs") or [] if isinstance(v, dict)]


def _find_vpc(doc: Document, vpc_id: str) -> dict:
    for vpc in _vpcs(doc):
        if vpc.get("id") == vpc_id:
            return vpc
    raise KeyError(vpc_id)


def add_vpc(doc: Document, vpc_id: str, cidr: str) -> Document:
    doc = copy.deepcopy(doc)
    doc.setdefault("vpcs", []).append({"id": vpc_id, "cidr": cidr, "subnets": [],
                                       "security_groups": [{"id": _default_group(vpc_id),
                                                            "name": "default",
                                                            "description": "default VPC "
                                                            "security group"}]})
    return doc


def _default_group(vpc_id: str) -> str:
    """Every VPC has a default security group (AWS makes one with the VPC)."""
    return "sg-" + vpc_id.removeprefix("vpc-")[:17]


def remove_vpc(doc: Document, vpc_id: str) -> Document:
    doc = copy.deepcopy(doc)
    doc["vpcs"] = [v for v in _vpcs(doc) if v.get("id") != vpc_id]
    return doc


def add_subnet(doc: Document, vpc_id: str, subnet_id: str, cidr: str, az: str) -> Document:
    doc = copy.deepcopy(doc)
    _find_vpc(doc, vpc_id).setdefault("subnets", []).append(
        {"id": subnet_id, "cidr": cidr, "az": az})
    return doc


def remove_subnet(doc: Document, subnet_id: str) -> Document:
    doc = copy.deepcopy(doc)
    for vpc in _vpcs(doc):
        vpc["subnets"] = [s for s in vpc.get("subnets") or []
                          if not (isinstance(s, dict) and s.get("id") == subnet_id)]
    return doc


def add_group(doc: Document, vpc_id: str, group_id: str, name: str,
              description: str) -> Document:
    """A new group with AWS's defaults: no ingress rule, all egress allowed."""
    doc = copy.deepcopy(doc)
    _find_vpc(doc, vpc_id).setdefault("security_groups", []).append(
        {"id": group_id, "name": name, "description": description})
    return doc


def remove_group(doc: Document, group_id: str) -> Document:
    doc = copy.deepcopy(doc)
    for vpc in _vpcs(doc):
        vpc["security_groups"] = [g for g in vpc.get("security_groups") or []
                                  if not (isinstance(g, dict) and g.get("id") == group_id)]
    return doc


def strip_functions(doc: Document) -> Document:
    doc = copy.deepcopy(doc)
    doc.pop("functions", None)
    return doc
