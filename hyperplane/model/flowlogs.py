"""VPC Flow Logs as data: fields, formats, specs, records, file names (pure).

A flow log (AWS's ``CreateFlowLogs``, the topology's ``flow_logs:``, ``hyperplane
flow-logs enable``) captures the traffic of every network interface of a VPC, of a
subnet, or of one interface, and writes one line per flow, direction and action per
aggregation window.  What is written is AWS's:

* ``FIELDS``: each field AWS documents for versions 2 to 5, with the version that
  brought it; the default format is version 2's fourteen fields (``DEFAULT_FIELDS``).
* ``parse_format``: a ``LogFormat`` (``${field} ${field} ...``; bare names are taken
  too) as a tuple of fields, or ``ValueError`` naming the bad one.
* ``version``: 2 for the default format, else the highest version among the fields
  (AWS's rule for a custom format).
* ``FlowLogSpec``: traffic type (``ACCEPT``, ``REJECT``, ``ALL``), format and
  ``max_aggregation_interval`` (60 or 600 seconds; AWS's default 600).
* ``line``: one record as AWS writes it, ``-`` for what is unknown or not
  applicable; ``nodata_values`` the NODATA record of a window without traffic.
* ``s3_key``: where a log file goes, in the layout of the S3 destination
  (``AWSLogs/<account>/vpcflowlogs/<region>/YYYY/MM/DD/<account>_vpcflowlogs_<region>_
  <flow-log-id>_<YYYYMMDDTHHmmZ>_<hash>.log.gz``).
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass

FIELDS: dict[str, int] = {
    "version": 2, "account-id": 2, "interface-id": 2, "srcaddr": 2, "dstaddr": 2,
    "srcport": 2, "dstport": 2, "protocol": 2, "packets": 2, "bytes": 2, "start": 2,
    "end": 2, "action": 2, "log-status": 2,
    "vpc-id": 3, "subnet-id": 3, "instance-id": 3, "tcp-flags": 3, "type": 3,
    "pkt-srcaddr": 3, "pkt-dstaddr": 3,
    "region": 4, "az-id": 4, "sublocation-type": 4, "sublocation-id": 4,
    "pkt-src-aws-service": 5, "pkt-dst-aws-service": 5, "flow-direction": 5,
    "traffic-path": 5,
}
DEFAULT_FIELDS = tuple(f for f, v in FIELDS.items() if v == 2)
INTERVALS = (60, 600)
DEFAULT_INTERVAL = 600
TRAFFIC_TYPES = ("ACCEPT", "REJECT", "ALL")
RESOURCE_TYPES = ("VPC", "Subnet", "NetworkInterface")
REGION = "us-east-1"
MAX_FIELDS = 40
# AWS's TCP flag bits in ``tcp-flags`` (ORed over the window)
FIN, SYN, RST, SYN_ACK = 1, 2, 4, 18
_TOKEN = re.compile(r"\$\{([^}]*)\}|(\S+)")


def parse_format(text: str) -> tuple[str, ...]:
    """The fields of a ``LogFormat``; ``ValueError`` with the reason when it is bad."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("a log format must name at least one field")
    fields: list[str] = []
    for match in _TOKEN.finditer(text):
        name = match.group(1) if match.group(1) is not None else match.group(2)
        if name not in FIELDS:
            raise ValueError(f"unknown field {name!r} (fields: version 2 to 5 of AWS's "
                             "flow log record, e.g. ${srcaddr} ${flow-direction})")
        if name in fields:
            raise ValueError(f"field {name!r} appears twice")
        fields.append(name)
    if len(fields) > MAX_FIELDS:
        raise ValueError(f"at most {MAX_FIELDS} fields")
    return tuple(fields)


def format_text(fields: tuple[str, ...]) -> str:
    """A format as AWS shows it (``${a} ${b}``)."""
    return " ".join("${" + f + "}" for f in fields)


DEFAULT_FORMAT = format_text(DEFAULT_FIELDS)


def version(fields: tuple[str, ...]) -> int:
    return 2 if fields == DEFAULT_FIELDS else max(FIELDS[f] for f in fields)


@dataclass(frozen=True)
class FlowLogSpec:
    """What a flow log captures and how it writes it."""

    traffic_type: str = "ALL"
    log_format: str = DEFAULT_FORMAT
    max_aggregation_interval: int = DEFAULT_INTERVAL

    @property
    def fields(self) -> tuple[str, ...]:
        return parse_format(self.log_format)


def check_spec(traffic_type: object, log_format: object, interval: object) -> FlowLogSpec:
    """A spec from raw values (None: the default); ``ValueError(field, reason)``."""
    traffic = "ALL" if traffic_type is None else traffic_type
    if traffic not in TRAFFIC_TYPES:
        raise ValueError("traffic_type", f"must be one of {', '.join(TRAFFIC_TYPES)}, "
                         f"got {traffic!r}")
    fmt = DEFAULT_FORMAT if log_format is None else log_format
    try:
        fields = parse_format(fmt)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ValueError("format", str(exc)) from None
    seconds = DEFAULT_INTERVAL if interval is None else interval
    if isinstance(seconds, bool) or seconds not in INTERVALS:
        raise ValueError("max_aggregation_interval", f"must be 60 or 600 (seconds), got "
                         f"{seconds!r}")
    return FlowLogSpec(str(traffic), format_text(fields), int(seconds))  # type: ignore[call-overload]


def flow_log_id(seed: str) -> str:
    return "fl-" + hashlib.sha256(seed.encode()).hexdigest()[:17]


def line(fields: tuple[str, ...], values: dict) -> str:
    """One record: the values of ``fields`` in order, ``-`` where there is none."""
    out = []
    for f in fields:
        value = values.get(f)
        out.append("-" if value is None or value == "" else str(value))
    return " ".join(out)


def header(fields: tuple[str, ...]) -> str:
    """The first line of a log file: the field names (as AWS's S3 files start)."""
    return " ".join(fields)


def nodata_values(interface: dict, start: int, end: int, fields: tuple[str, ...]) -> dict:
    """The NODATA record of an interface for a window without traffic."""
    return {**interface, "version": version(fields), "start": start, "end": end,
            "log-status": "NODATA"}


def s3_key(account: str, region: str, flow_log_id_: str, when: float, body: bytes) -> str:
    """The object key of a log file (``when``: the end of the window it holds)."""
    t = time.gmtime(when)
    stamp = time.strftime("%Y%m%dT%H%MZ", t)
    digest = hashlib.sha256(body).hexdigest()[:8]
    return (f"AWSLogs/{account}/vpcflowlogs/{region}/{t.tm_year:04d}/{t.tm_mon:02d}/"
            f"{t.tm_mday:02d}/{account}_vpcflowlogs_{region}_{flow_log_id_}_{stamp}_"
            f"{digest}.log.gz")


def window_start(now: float, interval: int) -> int:
    """The start of the aggregation window holding ``now`` (windows are aligned to the
    interval on the emulated clock)."""
    return int(now // interval) * interval
