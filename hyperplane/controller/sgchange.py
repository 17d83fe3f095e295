"""``sg authorize|revoke`` inside the controller (side effects through the service).

Under the controller's lock: the rule is added to (or removed from) the recorded
topology document (``policy.secgroups.edit_document``), the document is validated
again by the topology parser (an invalid rule changes nothing and is answered as a
usage error), recorded, and the dataplane gets its whole new snapshot (the ENIs'
egress rules); every host's nftables table is rendered again.  Tracked flows keep
going on both sides (dataplane sessions, the hosts' conntrack); new flows follow
the new rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hyperplane.kernel import vpcservices
from hyperplane.model import settings
from hyperplane.model.parser import parse_topology
from hyperplane.policy import groups, secgroups

if TYPE_CHECKING:
    from hyperplane.controller.service import Controller


def change(ctl: Controller, request: dict) -> dict:
    """Edit, validate, record, push, re-render; the group as ``sg list`` shows it."""
    rule = secgroups.rule_document(request["direction"], request["protocol"],
                                   request.get("ports"), request.get("cidr"),
                                   request.get("peer_group"))
    document = secgroups.edit_document(ctl.data["document"], request["group"],
                                       request["direction"], rule,
                                       revoke=request["action"] == "revoke")
    source = ctl.data["source"]
    topology = parse_topology(document, source)
    settings.check(topology.settings, source)
    ctl.data["document"] = document
    ctl.retopology(topology)
    ctl.commit_now()
    vpcservices.apply_firewalls(topology, ctl.model.enis)
    return next(g for g in groups.describe(topology, ctl.model.enis)
                if g["id"] == request["group"])
