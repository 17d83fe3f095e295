"""The dataplane's whole desired configuration, built from the control plane's records (pure).

``snapshot(topology, enis, envs)`` is the ``dataplane.config.Snapshot`` the
controller pushes after every change and again every few seconds: every ENI
with its address, link, subnet, limits and compiled egress rules
(``policy.secgroups.eni_egress``), Lambda's own egress port when a function has
no VpcConfig, and every environment with its primary ENI and, for a key that
grew at the connection limit, the key's other ENIs (``spill``).
"""

from __future__ import annotations

from hyperplane.controller.lifecycle import IN_USE
from hyperplane.dataplane.config import EniConfig, EnvConfig, Snapshot
from hyperplane.fabric import egress
from hyperplane.model import ipam, names, settings
from hyperplane.model.enis import Eni
from hyperplane.model.envs import Env
from hyperplane.model.settings import Timeouts
from hyperplane.model.topology import Topology
from hyperplane.policy import secgroups


def _spill(enis: list[Eni]) -> dict[str, list[str]]:
    """Per ENI key, the ENIs added at the connection limit, in order."""
    spill: dict[str, list[str]] = {}
    for e in sorted(enis, key=lambda e: e.spill):
        if e.spill and e.status == IN_USE and e.legacy_env is None:
            spill.setdefault(str(e.key), []).append(e.id)
    return spill


def snapshot(topology: Topology, enis: list[Eni], envs: list[Env]) -> Snapshot:
    dataplane = settings.dataplane(topology.settings)
    membership = secgroups.members(topology, enis)
    common = {"connection_limit": dataplane["eni_connection_limit"],
              "port_range": tuple(dataplane["port_range"]), "mtu": names.LINK_MTU}
    rows = [EniConfig(e.id, e.plane_link, e.ip, e.mac, e.subnet_cidr,
                      ipam.gateway(e.subnet_cidr), **common,
                      egress=tuple(secgroups.eni_egress(topology, e, membership)))
            for e in enis]
    lambda_egress = egress.has_egress_port(topology)  # Lambda's own, for no-VPC envs
    if lambda_egress:
        rows.append(EniConfig(names.EGRESS_ID, names.EGRESS_PLANE_LINK, names.EGRESS_IP,
                              names.mac(names.MAC_EGRESS, 0), names.EGRESS_NET,
                              names.EGRESS_GATEWAY, **common))
    by_id = {e.id: e for e in enis}
    spill = _spill(enis)
    env_rows = []
    for env in envs:
        primary = by_id.get(env.eni_id) if env.eni_id else None
        eni = env.eni_id or (names.EGRESS_ID if lambda_egress and env.subnet_id is None
                             else None)
        more = spill.get(str(primary.key), []) if primary and primary.legacy_env is None else []
        env_rows.append(EnvConfig(env.plane_link, env.ip, env.mac, names.ENV_GATEWAY,
                                  env.gateway_mac, eni, tuple(more)))
    return Snapshot(tuple(rows), tuple(env_rows), Timeouts.from_dict(dataplane["timeouts"]),
                    int(dataplane["max_sessions"]))
