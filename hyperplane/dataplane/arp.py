"""ARP on the pipeline's links and its timers (pure; ``pipeline.Pipeline`` inherits it).

Hyperplane is a neighbour on every link it faces: it answers ARP for the
environments' gateway on each environment's link and for the ENI's address
on the ENI's link, resolves next hops on the ENI's link (frames wait for the
answer, at most ``ARP_QUEUE`` per address), learns from replies and from
requests for its address, retries every ``ARP_RETRY`` seconds and gives up
(dropping what waited) after ``ARP_GIVE_UP``.  In a group of workers every worker
sees every ARP frame and learns from it; only the one with ``answers_arp`` answers
requests.  ``tick`` runs those timers and
the fragment tables' expiry; the dataplane calls it a few times a second
while ``has_timers``.
"""

from __future__ import annotations

from hyperplane.dataplane import packet as p
from hyperplane.dataplane.hop import Hop
from hyperplane.dataplane.ports import EniPort, EnvPort

ARP_QUEUE = 16
ARP_RETRY = 0.2
ARP_GIVE_UP = 3.0


class Neighbour(Hop):
    """ARP handling and timers, mixed into ``pipeline.Pipeline`` (which owns the state)."""

    answers_arp = True  # False: a worker other than the first (``loop.Worker``)

    def arp_from_env(self, env: EnvPort, buf: bytearray, length: int) -> None:
        if not self.answers_arp:
            return
        arp = p.parse_arp(buf, length)
        if arp is None or arp[0] != 1 or arp[3] != env.gateway_ip_bytes:
            self.drop("arp_ignored")
            return
        _op, smac, sip, _tip = arp
        env.tx(p.arp_frame(2, env.gateway_mac_bytes, env.gateway_ip_bytes, smac, sip))

    def arp_from_eni(self, eni: EniPort, buf: bytearray, length: int, now: float) -> None:
        arp = p.parse_arp(buf, length)
        if arp is None:
            self.drop("arp_ignored", eni)
            return
        op, smac, sip, tip = arp
        if tip == eni.ip_bytes:
            self.learn(eni, sip, smac)
            if op == 1 and self.answers_arp:
                eni.tx(p.arp_frame(2, eni.mac_bytes, eni.ip_bytes, smac, sip))
        elif sip in eni.arp or sip in eni.pending:
            self.learn(eni, sip, smac)
        else:
            self.drop("arp_ignored", eni)

    def learn(self, eni: EniPort, ip: bytes, mac: bytes) -> None:
        eni.arp[ip] = mac
        waiting = eni.pending.pop(ip, None)
        if waiting is None:
            return
        eth = mac + eni.mac_bytes
        for frame in waiting[2]:
            frame[p.ETH_ADDRS] = eth
            self.counters["forwarded"] += 1
            eni.counters["tx_packets"] += 1
            eni.counters["tx_bytes"] += len(frame) - p.VNET_LEN
            eni.tx(frame)

    def resolve(self, eni: EniPort, ip: bytes, now: float) -> None:
        """Ask for ``ip``'s MAC on the ENI's link unless it is known or being asked."""
        if ip not in eni.arp and ip not in eni.pending:
            eni.pending[ip] = [now, now, []]
            eni.tx(eni.arp_request(ip))

    def queue_for_arp(self, eni: EniPort, ip: bytes, buf: bytearray, length: int,
                      now: float) -> None:
        entry = eni.pending.get(ip)
        if entry is None:
            entry = eni.pending[ip] = [now, now, []]
            eni.tx(eni.arp_request(ip))
        if len(entry[2]) >= ARP_QUEUE:
            self.drop("arp_queue_full", eni)
            return
        entry[2].append(bytearray(buf[:length]))

    def tick(self, now: float) -> None:
        """Timers: ARP retries and give-ups, held fragments timing out (a few times a second)."""
        for eni in self.enis.values():
            for ip, entry in list(eni.pending.items()):
                if now - entry[0] > ARP_GIVE_UP:
                    del eni.pending[ip]
                    for _ in entry[2]:
                        self.drop("arp_timeout", eni)
                elif now - entry[1] >= ARP_RETRY:
                    entry[1] = now
                    eni.tx(eni.arp_request(ip))
            timed_out = eni.frags.expire(now)
            if timed_out:
                self.drop("fragment_timeout", eni, timed_out)

    def has_timers(self) -> bool:
        return any(e.pending or e.frags.waiting() for e in self.enis.values())
