"""VPCs, subnets and groups changed while everything runs (side effects through the service).

The recorded topology document is the one source of the VPC side.  An EC2 call
(``controller.ec2``) or ``sg authorize|revoke`` (``controller.sgchange``) edits a copy
of it; ``apply_document`` validates the copy with the topology parser (an invalid
edit changes nothing), records it with its layout, makes the model follow, and
brings the kernel along: ``sync_fabric`` applies ``fabric.objects.plan`` between the
kernel objects the old and the new topology need (a router namespace and its
bridges for a new VPC, a bridge for a new subnet, their removal), stops the
resolvers of VPCs that went first and starts those of new ones (``vpcservices``),
then the dataplane gets its snapshot and every host's firewall is rendered again.

``live`` is the topology as the control plane runs it: the document's VPCs with the
functions the controller holds (a function without VpcConfig needs Lambda's egress
to the emulated internet, whenever it was created).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from hyperplane.fabric.desired import desired, namespaces
from hyperplane.fabric.objects import plan
from hyperplane.kernel import build, vpcservices
from hyperplane.model import settings
from hyperplane.model.parser import parse_topology
from hyperplane.model.topology import Function, Topology, VpcConfig

if TYPE_CHECKING:
    from hyperplane.controller.functions import FunctionRecord
    from hyperplane.controller.service import Controller


def function_view(fn: FunctionRecord) -> Function:
    """A record as a topology function: its applied VPC configuration, else the one being
    applied (a Pending function is in its VPC already, for the fabric's purposes)."""
    spec, vpc_id = fn.vpc, fn.vpc_id
    if spec is None or vpc_id is None:
        spec, vpc_id = fn.target, fn.extra.get("target_vpc_id")
    config = None
    if spec is not None and vpc_id is not None:
        config = VpcConfig(spec.subnet_ids, spec.security_group_ids, vpc_id,
                           spec.ipv6_allowed_for_dual_stack)
    elif fn.vpc is not None or fn.target is not None:  # asked for a VPC it cannot have
        config = VpcConfig((), (), "")
    return Function(fn.name, fn.code, fn.handler, config, fn.memory, fn.timeout)


def live(ctl: Controller) -> Topology:
    return replace(ctl.topology, functions=tuple(function_view(fn) for fn in
                                                 ctl.model.functions.values()))


def sync_fabric(ctl: Controller, old: Topology, new: Topology) -> None:
    """Make the kernel objects of ``new`` from those of ``old`` (ENIs and environments are
    the service's own business)."""
    before, after = desired(old, [], []), desired(new, [], [])
    if before == after:
        return
    vpcservices.stop_gone(ctl.data, new)
    ctl.data["namespaces"] = sorted(set(ctl.data["namespaces"]) | set(namespaces(after)))
    ctl.save()  # recorded before they exist
    build.apply(plan(before, after))
    gone = set(namespaces(before)) - set(namespaces(after))
    ctl.data["namespaces"] = [n for n in ctl.data["namespaces"] if n not in gone]
    vpcservices.sync(ctl.data, new)
    ctl.save()


def apply_document(ctl: Controller, document: dict) -> Topology:
    """Validate an edited document and make it the running one (under the lock)."""
    source = ctl.data["source"]
    topology = parse_topology(document, source)
    settings.check(topology.settings, source)
    old = live(ctl)
    document = dict(document, _layout=topology.layout.to_dict())
    ctl.data["document"] = document
    ctl.retopology(topology)
    sync_fabric(ctl, old, live(ctl))
    ctl.commit_now()
    vpcservices.apply_firewalls(topology, ctl.model.enis)
    return topology
