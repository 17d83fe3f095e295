"""Minimal DNS messages for the VPC resolver: parse a query, build its answer (pure).

Only what a stub resolver (glibc, Python's ``socket``, curl) sends: one question, opcode
QUERY, class IN; names without compression pointers (queries carry none); any EDNS
record in the additional section is ignored.  Answers are authoritative:

* a known name asked for ``A``: one A record per address (TTL ``TTL``);
* a known name asked for another type (``AAAA``...): NOERROR with no answer (NODATA);
* an unknown name: NXDOMAIN;
* anything malformed: FORMERR when a header can be echoed, otherwise no answer at all;
  another opcode: NOTIMP.

Names are compared in lower case, without the trailing dot.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

HEADER = struct.Struct("!HHHHHH")
TYPE_A, CLASS_IN = 1, 1
TTL = 60
NOERROR, FORMERR, NXDOMAIN, NOTIMP = 0, 1, 3, 4


@dataclass(frozen=True)
class Query:
    id: int
    flags: int
    name: str        # lower case, no trailing dot
    qtype: int
    qclass: int
    question: bytes  # the question section as received (echoed in the answer)


def parse_query(data: bytes) -> Query | None:
    """The query in ``data``, or None when it is not a well-formed single question."""
    if len(data) < HEADER.size:
        return None
    ident, flags, qdcount, _an, _ns, _ar = HEADER.unpack_from(data)
    if flags & 0x8000 or qdcount != 1:
        return None
    labels, at = [], HEADER.size
    while True:
        if at >= len(data):
            return None
        length = data[at]
        if length & 0xC0:
            return None  # a pointer or a reserved label type: not in a query
        at += 1
        if length == 0:
            break
        labels.append(data[at:at + length])
        at += length
        if at > len(data) or sum(len(x) + 1 for x in labels) > 255:
            return None
    if at + 4 > len(data):
        return None
    qtype, qclass = struct.unpack_from("!HH", data, at)
    try:
        name = ".".join(label.decode("ascii") for label in labels).lower()
    except UnicodeDecodeError:
        return None
    return Query(ident, flags, name, qtype, qclass, data[HEADER.size:at + 4])


def _header(ident: int, query_flags: int, rcode: int, qdcount: int, ancount: int) -> bytes:
    flags = 0x8000 | (query_flags & 0x7900) | 0x0400 | 0x0080 | rcode  # QR, opcode+RD, AA, RA
    return HEADER.pack(ident, flags, qdcount, ancount, 0, 0)


def error(data: bytes, rcode: int) -> bytes | None:
    """A header-only answer with ``rcode`` to whatever ``data`` was, if it has a header."""
    if len(data) < 2:
        return None
    ident = struct.unpack_from("!H", data)[0]
    flags = struct.unpack_from("!H", data, 2)[0] if len(data) >= 4 else 0
    return _header(ident, flags, rcode, 0, 0)


def answer(query: Query, records: dict[str, list[str]]) -> bytes:
    """The authoritative answer to ``query`` from ``records`` (name -> addresses)."""
    if (query.flags >> 11) & 0xF:
        return _header(query.id, query.flags, NOTIMP, 1, 0) + query.question
    addresses = records.get(query.name)
    if addresses is None:
        return _header(query.id, query.flags, NXDOMAIN, 1, 0) + query.question
    if query.qtype != TYPE_A or query.qclass != CLASS_IN:
        return _header(query.id, query.flags, NOERROR, 1, 0) + query.question
    body = b"".join(struct.pack("!HHHIH", 0xC00C, TYPE_A, CLASS_IN, TTL, 4) +
                    bytes(int(x) for x in address.split("."))
                    for address in addresses)
    return _header(query.id, query.flags, NOERROR, 1, len(addresses)) + query.question + body


def respond(data: bytes, records: dict[str, list[str]]) -> bytes | None:
    """What the resolver sends back for one datagram (None: nothing)."""
    query = parse_query(data)
    if query is None:
        return error(data, FORMERR) if len(data) >= HEADER.size and \
            not data[2] & 0x80 else None
    return answer(query, records)


def vpc_records(vpc) -> dict[str, list[str]]:
    """``<host>.<zone>`` -> [address] for every host of a VPC (a ``topology.Vpc``)."""
    return {f"{h.name}.{vpc.network.dns_zone}": [h.ip] for h in vpc.hosts}
