"""``sg authorize|revoke`` inside the controller (side effects through the service).

Under the controller's lock: the rule is added to (or removed from) the recorded
topology document (``policy.secgroups.edit_document``) and ``network.apply_document``
validates it again with the topology parser (an invalid rule changes nothing and is
answered as a usage error), records it, gives the dataplane its whole new snapshot
(the ENIs' egress rules) and renders every host's nftables table again.  Tracked flows keep
going on both sides (dataplane sessions, the hosts' conntrack); new flows follow
the new rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hyperplane.controller import network
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
    topology = network.apply_document(ctl, document)
    return next(g for g in groups.describe(topology, ctl.model.enis)
                if g["id"] == request["group"])
