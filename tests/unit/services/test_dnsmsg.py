"""The VPC resolver's DNS messages, checked against scapy's DNS."""

from __future__ import annotations

from scapy.layers.dns import DNS, DNSQR

from hyperplane.services import dnsmsg

RECORDS = {"db.vpc-app.internal": ["10.0.1.10"], "multi.vpc-app.internal": ["10.0.1.1",
                                                                             "10.0.1.2"]}


def ask(name: str, qtype: str = "A", rd: int = 1, ident: int = 4242) -> DNS:
    query = bytes(DNS(id=ident, rd=rd, qd=DNSQR(qname=name, qtype=qtype)))
    reply = dnsmsg.respond(query, RECORDS)
    assert reply is not None
    return DNS(reply)


def test_a_record_answer() -> None:
    answer = ask("db.vpc-app.internal")
    assert (answer.id, answer.qr, answer.aa, answer.rd, answer.rcode) == (4242, 1, 1, 1, 0)
    assert answer.qdcount == 1 and answer.qd[0].qname == b"db.vpc-app.internal."
    assert answer.ancount == 1
    assert answer.an[0].rdata == "10.0.1.10" and answer.an[0].ttl == dnsmsg.TTL


def test_names_are_case_insensitive_and_may_have_several_addresses() -> None:
    assert ask("DB.Vpc-App.Internal.").an[0].rdata == "10.0.1.10"
    answer = ask("multi.vpc-app.internal")
    assert answer.ancount == 2
    assert [answer.an[i].rdata for i in range(2)] == ["10.0.1.1", "10.0.1.2"]


def test_unknown_name_is_nxdomain_and_other_types_nodata() -> None:
    missing = ask("nope.vpc-app.internal")
    assert missing.rcode == dnsmsg.NXDOMAIN and missing.ancount == 0
    aaaa = ask("db.vpc-app.internal", "AAAA")
    assert aaaa.rcode == dnsmsg.NOERROR and aaaa.ancount == 0


def test_malformed_and_unsupported() -> None:
    assert dnsmsg.respond(b"\x01", RECORDS) is None
    truncated = bytes(DNS(id=9, qd=DNSQR(qname="db.vpc-app.internal")))[:20]
    assert DNS(dnsmsg.respond(truncated, RECORDS)).rcode == dnsmsg.FORMERR
    a_reply = bytes(DNS(id=9, qr=1, qd=DNSQR(qname="db.vpc-app.internal")))
    assert dnsmsg.respond(a_reply, RECORDS) is None  # never answer an answer
    status = bytes(DNS(id=9, opcode=2, qd=DNSQR(qname="db.vpc-app.internal")))
    assert DNS(dnsmsg.respond(status, RECORDS)).rcode == dnsmsg.NOTIMP
    pointer = bytes(DNS(id=9, qd=DNSQR(qname="x")))[:12] + b"\xc0\x0c\x00\x01\x00\x01"
    assert DNS(dnsmsg.respond(pointer, RECORDS)).rcode == dnsmsg.FORMERR
