"""The ``settings:`` section of a topology file: runtime knobs, validated (pure).

    settings:
      dataplane:
        eni_connection_limit: 65000      # concurrent sessions per ENI
        port_range: [1024, 65535]        # ENI ports handed out by the NAT
        max_sessions: 1000000            # all ENIs together (table-full beyond)
        fast_path: sockets               # sockets | python | compiled | auto (dataplane.fastpath)
        workers: 1                       # worker processes (dataplane.workers), or auto: one a core
        timeouts: {tcp_established: 350, tcp_transitory: 240, tcp_syn: 30,
                   udp: 120, udp_replied: 180, icmp: 60}   # seconds

      nat_gateway:                       # every NAT gateway (natgw)
        connections_per_destination: 55000
        idle_timeout: 350                # seconds, any protocol
        port_range: [1024, 65535]

      timing:                            # the control plane's pace (see ``timing``)
        profile: fast                    # fast (default) | aws: defaults of every key
        eni_create: 1s                   # each a duration or a [MIN, MAX] range
        eni_delete: 3s
        function_idle: 14d
        env_idle: 5m
        legacy_eni_attach: 1s
      quotas:
        enis_per_vpc: 250                # Lambda ENIs per VPC
      networking: hyperplane             # hyperplane (default) | legacy
      api:
        port: 4566                       # the AWS-compatible endpoint on 127.0.0.1

``check`` raises ``TopologyError`` naming the field, like every other
topology error; ``dataplane(settings)`` and ``nat_gateway(settings)`` return
the sections with defaults, and ``timing`` reads the last three.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from hyperplane.errors import TopologyError
from hyperplane.model import timing


@dataclass
class Timeouts:
    """The dataplane's idle timeouts in seconds (AWS's 350 s for established TCP)."""

    tcp_established: float = 350.0
    tcp_transitory: float = 240.0
    tcp_syn: float = 30.0
    udp: float = 120.0
    udp_replied: float = 180.0
    icmp: float = 60.0

    @classmethod
    def from_dict(cls, data: dict | None) -> Timeouts:
        return cls(**{k: float(v) for k, v in (data or {}).items()})


DEFAULTS = {"eni_connection_limit": 65000, "port_range": [1024, 65535],
            "max_sessions": 1_000_000, "timeouts": {}, "fast_path": "sockets", "workers": 1}
MAX_WORKERS = 16
FAST_PATHS = ("sockets", "auto", "python", "compiled")
TIMEOUT_KEYS = tuple(f.name for f in fields(Timeouts))
NAT_GATEWAY_DEFAULTS = {"connections_per_destination": 55000, "idle_timeout": 350,
                        "port_range": [1024, 65535]}
SECTIONS = ("dataplane", "nat_gateway", "timing", "quotas", "networking", "api")
API_PORT = 4566  # the AWS-compatible endpoint's default port (LocalStack's, by habit)
QUOTA_KEYS = ("enis_per_vpc",)


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def check(settings: dict, source: str) -> None:
    """Refuse settings the runtime could not apply."""
    unknown = set(settings) - set(SECTIONS)
    if unknown:
        raise TopologyError(source, f"settings.{sorted(unknown)[0]}", "unknown setting "
                            f"(known: {', '.join(SECTIONS)})")
    _check_nat_gateway(source, settings.get("nat_gateway") or {})
    _check_timing(source, settings.get("timing", {}))
    _check_quotas(source, settings.get("quotas", {}))
    _check_networking(source, "settings.networking", settings.get("networking"))
    _check_api(source, settings.get("api"))
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
    elif key == "fast_path":
        if value not in FAST_PATHS:
            raise TopologyError(source, path, f"expected one of {', '.join(FAST_PATHS)}, "
                                f"got {value!r}")
    elif key == "workers":
        if value != "auto" and not (_positive_int(value) and value <= MAX_WORKERS):
            raise TopologyError(source, path, f"expected auto or an integer from 1 to "
                                f"{MAX_WORKERS}, got {value!r}")
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


def _check_timing(source: str, section: object) -> None:
    if section is None:
        return
    if not isinstance(section, dict):
        raise TopologyError(source, "settings.timing", "expected a mapping")
    for key, value in section.items():
        path = f"settings.timing.{key}"
        if key == "profile":
            if value is not None and (not isinstance(value, str)
                                      or value not in timing.PROFILES):
                raise TopologyError(source, path, f"unknown timing profile {value!r} "
                                    f"(known: {', '.join(timing.PROFILES)})")
        elif key in timing.KEYS:
            if value is None:  # null: the profile's
                continue
            try:
                timing.span(value)
            except ValueError as exc:
                raise TopologyError(source, path, str(exc)) from None
        else:
            raise TopologyError(source, path, "unknown timing setting (known: profile, "
                                f"{', '.join(timing.KEYS)})")


def _check_quotas(source: str, section: object) -> None:
    if section is None:
        return
    if not isinstance(section, dict):
        raise TopologyError(source, "settings.quotas", "expected a mapping")
    for key, value in section.items():
        path = f"settings.quotas.{key}"
        if key not in QUOTA_KEYS:
            raise TopologyError(source, path, f"unknown quota (known: {', '.join(QUOTA_KEYS)})")
        if not _positive_int(value):
            raise TopologyError(source, path, f"expected a positive integer, got {value!r}")


def _check_networking(source: str, path: str, value: object) -> None:
    if value is not None and value not in timing.NETWORKING_MODES:
        raise TopologyError(source, path, f"unknown networking mode {value!r} "
                            f"(known: {', '.join(timing.NETWORKING_MODES)})")


def _check_api(source: str, section: object) -> None:
    if section is None:
        return
    if not isinstance(section, dict):
        raise TopologyError(source, "settings.api", "expected a mapping")
    for key, value in section.items():
        if key != "port":
            raise TopologyError(source, f"settings.api.{key}", "unknown setting (known: port)")
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            raise TopologyError(source, "settings.api.port",
                                f"expected a port number 1-65535, got {value!r}")


def api_port(settings: dict) -> int:
    return int((settings.get("api") or {}).get("port", API_PORT))


def nat_gateway(settings: dict) -> dict:
    return {**NAT_GATEWAY_DEFAULTS, **(settings.get("nat_gateway") or {})}


def dataplane(settings: dict) -> dict:
    return {**DEFAULTS, **(settings.get("dataplane") or {})}
