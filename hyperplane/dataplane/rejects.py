"""Rejected flows at the ENIs, kept for VPC Flow Logs (pure).

A new flow that an ENI's security groups refuse (``sg_egress_deny``) and an unsolicited
attempt to open a flow toward an ENI (``inbound_to_eni``: a SYN, any UDP) are dropped
and counted as before; ``RejectLog`` also keeps them per flow, as the ENI would see them
on the wire, for the flow-log collector (``emulator.flowlogd``), which takes them with
the control request ``{"op": "rejects"}`` (``take``: the log is emptied).

A refused outbound flow is logged with the ENI's address as its source (the address it
would have left with) and the environment's own source port (no ENI port is allocated
to a refused flow); an inbound one as it came (remote -> ENI).  ICMP and other
protocols have ports 0, as in AWS's records.  The log is bounded (``MAX_FLOWS``
distinct flows between two takes); a new flow past it is not kept and counted
``flow_rejects_lost``: packets are never held up by it.
"""

from __future__ import annotations

from hyperplane.dataplane import packet as p
from hyperplane.dataplane.packet import IP, IP_DST, IP_PROTO, IP_SRC, IP_VIHL, L4_DPORT
from hyperplane.dataplane.ports import EniPort

MAX_FLOWS = 4096
LOST = "flow_rejects_lost"
WORD16 = p.WORD16


class RejectLog:
    """The pipeline's record of rejected flows (a mixin of ``pipeline.Pipeline``)."""

    counters: dict[str, int]  # the pipeline's, as are ``drop`` and ``_opens_flow``

    def _reject_log(self) -> dict:
        log = self.__dict__.get("_rejects")
        if log is None:
            log = self.__dict__["_rejects"] = {}
            self.counters.setdefault(LOST, 0)
        return log

    def _keep(self, key: tuple, length: int) -> None:
        log = self._reject_log()
        entry = log.get(key)
        if entry is None:
            if len(log) >= MAX_FLOWS:
                self.counters[LOST] += 1
                return
            entry = log[key] = [0, 0]
        entry[0] += 1
        entry[1] += length - p.ETH

    def refuse(self, reason: str, eni: EniPort, buf: bytearray, length: int, proto: int,
               remote_port: int) -> None:
        """A new outbound flow refused at ``eni`` (its egress rules): counted and kept."""
        self.drop(reason, eni)
        l4 = IP + ((buf[IP_VIHL] & 0x0F) << 2)
        ports = proto in (p.PROTO_TCP, p.PROTO_UDP)
        self._keep((eni.id, proto, eni.ip_bytes, bytes(buf[IP_DST]),
                    WORD16(buf, l4)[0] if ports else 0, remote_port if ports else 0), length)

    def refuse_in(self, eni: EniPort, buf: bytearray, length: int, l4: int,
                  proto: int) -> None:
        """A packet toward ``eni`` without a session: an unsolicited attempt to open a
        flow is a REJECT (``inbound_to_eni``, kept), anything else ``no_session``."""
        if not self._opens_flow(buf, l4, proto):
            self.drop("no_session", eni)
            return
        self.drop("inbound_to_eni", eni)  # a SYN or UDP: ports are there
        self._keep((eni.id, buf[IP_PROTO], bytes(buf[IP_SRC]), bytes(buf[IP_DST]),
                    WORD16(buf, l4)[0], WORD16(buf, l4 + L4_DPORT)[0]), length)

    def take_rejects(self) -> list[dict]:
        """The rejected flows since the last take, as the collector reads them."""
        log = self._reject_log()
        rows = [{"eni": eni_id, "protocol": proto, "src": p.ip_to_str(src),
                 "dst": p.ip_to_str(dst), "sport": sport, "dport": dport,
                 "packets": packets, "bytes": count}
                for (eni_id, proto, src, dst, sport, dport), (packets, count) in log.items()]
        log.clear()
        return rows
