"""``hyperplane sg``: security groups of the running topology (side effects).

``change`` asks the controller to authorize or revoke one rule (it edits the
recorded document, validates it again, pushes the dataplane and re-renders the
hosts' firewalls: ``controller.sgchange``).  ``describe`` is ``sg list``: the
groups as ``policy.groups`` shows them, with the drop counters that the hosts'
nftables tables counted (read from each host's namespace).
"""

from __future__ import annotations

from hyperplane.emulator.requests import controller_request
from hyperplane.emulator.running import Running
from hyperplane.fabric.desired import host_netns
from hyperplane.kernel import nftables
from hyperplane.policy import groups, hostfw


def change(action: str, group_id: str, direction: str, protocol: str, ports: str | None,
           cidr: str | None, peer_group: str | None) -> dict:
    """Authorize or revoke one rule (through the controller); the group as ``describe``
    shows it."""
    return controller_request({
        "op": "sg.change", "action": action, "group": group_id, "direction": direction,
        "protocol": protocol, "ports": ports, "cidr": cidr, "peer_group": peer_group})


def describe(running: Running) -> list[dict]:
    topology = running.topology
    drops = {host.name: nftables.counters(host_netns(topology, host.name), hostfw.TABLE)
             for vpc in topology.vpcs for host in vpc.hosts if host.security_groups}
    return groups.describe(topology, running.enis, drops)
