"""The ``settings:`` section of a topology file: runtime knobs, validated (pure).

    settings:
      dataplane:
        eni_connection_limit: 65000      # concurrent sessions per ENI
        port_range: [1024, 65535]        # ENI ports handed out by the NAT
        max_sessions: 1000000            # all ENIs together (table-full beyond)
        timeouts: {tcp_established: 350, tcp_transitory: 240, tcp_syn: 30,
                   udp: 120, udp_replied: 180, icmp: 60}   # seconds

      nat_gateway:                       # every NAT gateway (natgw)
        connections_per_destination: 55000
        idle_timeout: 350                # seconds, any protocol
        port_range: [1024, 65535]

``check`` raises ``TopologyError`` naming the field, like every other
topology error; ``dataplane(settings)`` and ``nat_gateway(settings)`` return
the sections with defaults.
"""

from __future__ import annotations

from dataclasses import fields

from hyperplane.conntrack import Timeouts
from hyperplane.topology import TopologyError

DEFAULTS = {"eni_connection_limit": 65000, "port_range": [1024, 65535],
            "max_sessions": 1_000_000, "timeouts": {}}
TIMEOUT_KEYS = tuple(f.name for f in fields(Timeouts))
NAT_GATEWAY_DEFAULTS = {"connections_per_destination": 55000, "idle_timeout": 350,
                        "port_range": [1024, 65535]}


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def check(settings: dict, source: str) -> None:
    """Refuse settings the runtime could not apply."""
    unknown = set(settings) - {"dataplane", "nat_gateway"}
    if unknown:
        raise TopologyError(source, f"settings.{sorted(unknown)[0]}", "unknown setting "
                            "(known: dataplane, nat_gateway)")
    _check_nat_gateway(source, settings.get("nat_gateway") or {})
    section = settings.get("dataplane", {})
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise TopologyError(source, "settings.dataplane", "expected a mapping")
    for key, value in section.items():
        _check_dataplane_key(source, f"settings.dataplane.{key}", key, value)


def _check_dataplane_key(source: str, path: str, key: str, value: object) -> None:
    if key in ("eni_connection_limit", "max_sessions"):
        if not _positive_int(value):
            raise TopologyError(source, path, f"expected a positive integer, got {value!r}")
    elif key == "port_range":
        if not (isinstance(value, list) and len(value) == 2 and all(
                isinstance(v, int) and not isinstance(v, bool) for v in value)
                and 1 <= value[0] <= value[1] <= 65535):
            raise TopologyError(source, path, "expected [LOW, HIGH] with 1 <= LOW <= HIGH "
                                f"<= 65535, got {value!r}")
    elif key == "timeouts":
        if not isinstance(value, dict):
            raise TopologyError(source, path, "expected a mapping of timeouts in seconds")
        for name, seconds in value.items():
            if name not in TIMEOUT_KEYS:
                raise TopologyError(source, f"{path}.{name}", "unknown timeout (known: "
                                    f"{', '.join(TIMEOUT_KEYS)})")
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) \
                    or seconds <= 0:
                raise TopologyError(source, f"{path}.{name}",
                                    f"expected a positive number of seconds, got {seconds!r}")
    else:
        raise TopologyError(source, path, "unknown dataplane setting (known: "
                            f"{', '.join(DEFAULTS)})")


def _check_nat_gateway(source: str, section: object) -> None:
    if not isinstance(section, dict):
        raise TopologyError(source, "settings.nat_gateway", "expected a mapping")
    for key, value in section.items():
        path = f"settings.nat_gateway.{key}"
        if key == "port_range":
            _check_dataplane_key(source, path, key, value)
        elif key in NAT_GATEWAY_DEFAULTS:
            if not _positive_int(value):
                raise TopologyError(source, path, f"expected a positive integer, got {value!r}")
        else:
            raise TopologyError(source, path, "unknown NAT gateway setting (known: "
                                f"{', '.join(NAT_GATEWAY_DEFAULTS)})")


def nat_gateway(settings: dict) -> dict:
    return {**NAT_GATEWAY_DEFAULTS, **(settings.get("nat_gateway") or {})}


def dataplane(settings: dict) -> dict:
    return {**DEFAULTS, **(settings.get("dataplane") or {})}
