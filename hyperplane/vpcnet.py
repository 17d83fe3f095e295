"""The VPC's own services around the fabric (side effects): host firewalls, DNS, NAT.

Called by ``engine.up`` once the fabric is built, and by ``security`` after a rule
change.  Each piece is rendered by a pure module and applied here:

* host security groups: ``hostfw.render_host`` for every host, applied with
  ``firewall.apply`` (nftables inside the host's namespace).  Membership of the groups
  comes from the topology and the ENIs, so ``apply_firewalls`` is called again whenever
  either changes.
"""

from __future__ import annotations

from hyperplane import fabric, firewall, hostfw, secgroups
from hyperplane.controller import ipam
from hyperplane.controller.enis import Eni
from hyperplane.topology import Topology


def apply_firewalls(topology: Topology, enis: list[Eni], fresh: bool = False) -> None:
    """Render and apply every host's security groups for the current membership.

    The drop counters are carried over from the tables being replaced (``fresh``: there
    are none yet).
    """
    membership = secgroups.members(topology, enis)
    for vpc in topology.vpcs:
        resolver = ipam.resolver(vpc.cidr)
        for host in vpc.hosts:
            ns = fabric.host_netns(topology, host.name)
            start = {} if fresh else firewall.counters(ns, hostfw.TABLE)
            firewall.apply(ns, hostfw.render_host(topology, host, membership, resolver, start))


def start(data: dict, topology: Topology, enis: list[Eni]) -> None:
    """Everything a freshly built topology needs before its functions become Active."""
    apply_firewalls(topology, enis, fresh=True)
