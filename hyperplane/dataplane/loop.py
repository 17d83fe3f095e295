"""The Hyperplane process: receive frames, run the pipeline, send frames (I/O).

Runs inside the ``hp-plane`` namespace, started by ``hyperplane up`` as
``python -m hyperplane.dataplane --control STATE_DIR/dataplane.sock --table PATH``.
The sessions live in the table file ``PATH`` (``shm.open_table``: created when absent,
attached to when present, so a dataplane killed and started again carries on with its
sessions, ports and counters; without ``--table`` they live in anonymous memory).  The
loop's tick keeps the table (``tables.TablePath.maintain``); a clean stop (SIGTERM)
writes everything and marks the table clean.  One epoll
loop serves every link's packet socket (``sockets.PacketSocket``) and a Unix control
socket.  On readiness a socket is drained in a bounded batch (``BATCH`` frames) into
one reusable buffer; each frame goes through ``pipeline.Pipeline.receive`` and out
through the other link's socket.  With
no traffic the loop sleeps in epoll (a timer only while ARP is pending).

``fast_path`` (``settings.dataplane.fast_path``, ``--fast-path``) chooses the receive
path: ``sockets`` (the default) is the above; the others read one receive ring instead
(``ring.RxRing``: every link's frames, the interface index naming the port; the links'
sockets then only send; after each configuration the ring's filter is set to the
ports' interfaces): ``python`` walks it in Python (``RxRing.drain``, each frame through
``Pipeline.receive`` in place in its slot), ``compiled`` lets the compiled fast path
(``fastpath.FastPath``) walk it, forwarding the frames of flows it carries and handing
every other frame to the same ``Pipeline.receive``; ``auto`` is ``compiled`` when the
module is built, else ``python``.  The ring is not the default yet (its walk used to
stop at a slot the kernel skipped: ``ring``'s holes; docs/benchmarks.md).  The loop
harvests the compiled side's counts before every tick and
before ``stats`` and ``conntrack`` answer, and it forgets its flows at every
configuration.  The NAT gateway role always uses ``sockets``.  ``{"op": "fast_path",
"mode": M}`` switches the walk of a running dataplane (the benchmark measures both).

A worker of a group (``workers``; ``Worker``) reads its fanout member's ring (given by
the group: ``RxRing(sock=...)``, found again after a restart by ``relocate``), reads
every ARP frame on its own ``sockets.ArpSocket`` (only worker 0 answers), narrows every
ENI's port range to its slice, and learns its peers' session counts per ENI on ticks.

Control protocol: ``jsonline`` (one request line, one reply line, per connection).

    {"op": "ping"}                      -> {"ok": true, "pid": ...}
    {"op": "config", "config": {...}}   -> the whole desired configuration, as a snapshot
    {"op": "stats"}                     -> global and per-ENI counters, the table's figures
    {"op": "conntrack", "eni": ID|null} -> sessions
    {"op": "rejects"}                   -> the flows the ENIs rejected since the last ask
    {"op": "conntrack_delete", "filter": {...}} -> the sessions freed (``ctfilter``)

The configuration is always a complete snapshot (``config.Snapshot``: ENIs,
environments, timeouts), never a delta: ``config.plan`` compares it with the
ports the dataplane has, and ``apply`` performs that diff (sockets closed and
opened, every wanted port's settings set again).  A malformed snapshot is
refused whole, with the field named, and changes nothing.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys
import time
import traceback

from hyperplane import jsonline
from hyperplane.dataplane import ctfilter
from hyperplane.dataplane.acl import RuleSet
from hyperplane.dataplane.bpf import port_slice
from hyperplane.dataplane.config import Existing, Plan, Snapshot, plan
from hyperplane.dataplane.fastpath import FastPath, attach_scan, mode
from hyperplane.dataplane.pipeline import EniPort, EnvPort, Pipeline
from hyperplane.dataplane.ring import RxRing
from hyperplane.dataplane.shm import open_table, read_slot_counter
from hyperplane.dataplane.sockets import ArpSocket, PacketSocket
from hyperplane.dataplane.store import CACHE

BATCH = 64
PEERS_INTERVAL = 1.0


class Worker:
    """One worker of a group (``workers``): its index of ``count``, its fanout member's
    ring socket, the slice of every ENI's ports it allocates from (``bpf.fanout``), and
    its peers' table files: every ``PEERS_INTERVAL`` it reads the sessions each peer
    holds per ENI (as they last flushed them), so an ENI's connection limit counts the
    sessions of every worker."""

    def __init__(self, index: int, count: int, ring: socket.socket,
                 peers: tuple[str, ...] = ()) -> None:
        self.index, self.count, self.ring, self.peers = index, count, ring, peers
        self.low, self.high = port_slice(index, count)
        self.next_read = 0.0

    def elsewhere(self, now: float) -> dict[str, int] | None:
        """Sessions per ENI id the peers hold, when it is time to read them again."""
        if now < self.next_read:
            return None
        self.next_read = now + PEERS_INTERVAL
        held: dict[str, int] = {}
        for path in self.peers:
            for eni, count in read_slot_counter(path, "sessions_active").items():
                held[eni] = held.get(eni, 0) + count
        return held

    def ports(self, port_range: tuple[int, int]) -> tuple[int, int]:
        """An ENI's port range narrowed to this worker's slice (empty: ``(high + 1, high)``,
        every allocation then fails as ``out_of_ports``)."""
        low, high = max(port_range[0], self.low), min(port_range[1], self.high)
        return (low, high) if low <= high else (high + 1, high)


SPIN = 0.0002  # seconds of polling without sleep after traffic (adaptive, idle CPU stays 0)
LINGER = 0.002  # seconds after traffic of polling that yields the CPU (``os.sched_yield``)
BUFFER = 65536 + 256
IO_COUNTERS = ("rx_error", "internal_error", "rx_socket_dropped", "rx_truncated",
               "rx_unknown_link", "rx_ring_hole")


class Dataplane:
    pipeline_class: type[Pipeline] = Pipeline

    def __init__(self, control_path: str, table: str | None = None,
                 capacity: int | None = None, cache_size: int = CACHE,
                 fast_path: str = "python", worker: Worker | None = None) -> None:
        make = self.pipeline_class
        # the ring and the compiled side: the Lambda pipeline only (not the NAT gateways)
        self.fast_path = mode(fast_path) if make is Pipeline else "sockets"
        if worker is not None and self.fast_path == "sockets":
            self.fast_path = "python"  # a worker reads its fanout member's ring
        self.worker = worker
        store = open_table(table, make.new_ports, capacity, cache_size,
                           scan=attach_scan(self.fast_path)) if table else None
        self.table_path = table
        self.pipeline = make(store=store, cache_size=cache_size)
        self.counters = self.pipeline.counters
        self.counters.update({k: self.counters.get(k, 0) for k in IO_COUNTERS})
        self.sockets: dict[str, PacketSocket] = {}
        self.by_index: dict[int, EniPort | EnvPort] = {}
        self.by_fd: dict[int, tuple] = {}  # the ``sockets`` path: fd -> (port, recv_into)
        self.ring = None if self.fast_path == "sockets" else RxRing() if worker is None \
            else RxRing(sock=worker.ring)
        self.arp = ArpSocket() if worker is not None else None
        if worker is not None:
            self.pipeline.answers_arp = worker.index == 0
        self.fast = FastPath(self.ring, self.pipeline, self._link) \
            if self.ring is not None and self.fast_path == "compiled" else None
        self.epoll = select.epoll()
        if self.ring is not None:
            self.epoll.register(self.ring.fileno(), select.EPOLLIN)
        if self.arp is not None:
            self.epoll.register(self.arp.fileno(), select.EPOLLIN)
        self.running = True
        self.server = jsonline.listen(control_path)
        self.epoll.register(self.server.fileno(), select.EPOLLIN)

    # -- ports ----------------------------------------------------------------
    def _open(self, port: EniPort | EnvPort) -> None:
        sock = self.sockets.get(port.ifname)
        if sock is None:
            sock = PacketSocket(port.ifname, receive=self.ring is None)
            self.sockets[port.ifname] = sock
            if self.ring is None:
                self.epoll.register(sock.fileno(), select.EPOLLIN)
        if self.ring is None:
            self.by_fd[sock.fileno()] = (port, sock.recv_into)
        self.by_index[sock.ifindex] = port
        port.tx = self._make_tx(sock)

    def _close(self, ifname: str) -> None:
        sock = self.sockets.pop(ifname, None)
        if sock is None:
            return
        self.by_index.pop(sock.ifindex, None)
        if self.by_fd.pop(sock.fileno(), None) is not None:
            self.epoll.unregister(sock.fileno())
        sock.close()

    def _link(self, port: EniPort | EnvPort) -> tuple[int, int] | None:
        """A port's interface index and transmit socket (for the compiled fast path)."""
        sock = self.sockets.get(port.ifname)
        return None if sock is None else (sock.ifindex, sock.sock.fileno())

    def set_fast_path(self, setting: str) -> str:
        """Switch the walk (``mode``): the compiled side retired (its counts harvested, its
        flows forgotten, the ring's head handed back) or started at the ring's head."""
        wanted = mode(setting) if self.pipeline_class is Pipeline else self.fast_path
        if self.ring is None or wanted == "sockets":
            if wanted != self.fast_path:
                raise ValueError(f"cannot switch between the sockets receive path and the "
                                 f"ring at run time ({self.fast_path} -> {wanted})")
            return wanted
        if wanted != self.fast_path:
            if self.fast is not None:
                self.fast.retire()
            self.fast = FastPath(self.ring, self.pipeline, self._link) \
                if wanted == "compiled" else None
            self.fast_path = wanted
        return wanted

    def harvest(self) -> None:
        """The compiled fast path's counts into the sessions and counters (if it runs)."""
        if self.fast is not None:
            self.fast.harvest()

    def _make_tx(self, sock: PacketSocket):
        send = sock.send
        counters = self.counters

        def tx(frame) -> None:
            try:
                send(frame)
            except BlockingIOError:
                counters["tx_full"] += 1
            except OSError:
                counters["tx_error"] += 1
        return tx

    # -- configuration ------------------------------------------------------------
    def existing(self) -> Existing:
        pl = self.pipeline
        return Existing({e.id: (e.ip, e.ifname) for e in pl.enis.values()},
                        {name: env.ip for name, env in pl.envs.items()})

    def swap_ports(self, close: tuple[str, ...], opened: tuple, make) -> None:  # noqa: ANN001
        """Close the ports of ``close`` (ids), open one made by ``make`` for each config."""
        pl = self.pipeline
        for port_id in close:
            self._close(pl.enis.pop(port_id).ifname)
        for config in opened:
            port = make(config)
            pl.enis[config.id] = port
            self._open(port)

    def sync_links(self) -> None:
        """The ring receives the frames of the ports' links, and only theirs."""
        if self.ring is not None:
            self.ring.set_links(self.by_index)

    def apply_config(self, config: dict) -> None:
        """A snapshot as it came on the wire: checked whole, then the diff applied."""
        snapshot = Snapshot.from_dict(config)
        if self.fast is not None:
            self.fast.forget_all()  # ports, MACs and ENIs may change under its flows
        self.apply(plan(self.existing(), snapshot), snapshot)

    def apply(self, diff: Plan, snapshot: Snapshot) -> None:
        pl = self.pipeline
        pl.timeouts = snapshot.timeouts
        pl.max_sessions = snapshot.max_sessions
        narrow = self.worker.ports if self.worker is not None else lambda r: r
        self.swap_ports(diff.close_enis, diff.open_enis, lambda e: EniPort(
            e.id, e.ifname, e.ip, e.mac, e.cidr, e.gateway, e.connection_limit,
            narrow(e.port_range), e.mtu))
        now = time.monotonic()
        for e in diff.enis:
            eni = pl.enis[e.id]
            eni.connection_limit = e.connection_limit
            # new flows follow the new rules; tracked ones keep going (stateful)
            eni.egress = None if e.egress is None else RuleSet(e.egress)
            eni.mtu = e.mtu
            pl.resolve(eni, eni.gateway_bytes, now)
        for ifname in diff.close_envs:
            pl.envs.pop(ifname).tx = lambda _frame: None
            self._close(ifname)
        for e in diff.open_envs:
            env = EnvPort(e.ifname, e.ip, e.mac, e.gateway_ip, e.gateway_mac, None)
            pl.envs[e.ifname] = env
            self._open(env)
        for e in diff.envs:
            env = pl.envs[e.ifname]
            env.eni = pl.enis[e.eni] if e.eni is not None else None
            env.spill = tuple(pl.enis[i] for i in e.spill)
        pl.prune()  # after a restart: the sessions of ENIs this snapshot no longer has

    # -- control ------------------------------------------------------------------
    def handle_control(self) -> None:
        try:
            conn, _ = self.server.accept()
        except BlockingIOError:
            return
        jsonline.serve(conn, self.answer)

    def answer(self, request: dict) -> dict:
        op = request.get("op")
        if op == "ping":
            return {"ok": True, "pid": os.getpid()}
        if op == "config":
            self.apply_config(request["config"])
            return {"ok": True}
        if op == "fast_path":
            return {"ok": True, "mode": self.set_fast_path(request.get("mode", "auto"))}
        if op == "stats":
            return {"ok": True, "stats": self.stats()}
        if op == "conntrack":
            return {"ok": True, "sessions": self.conntrack(request.get("eni"))}
        if op == "conntrack_delete":  # conntrack --delete / --flush: freed by the writer
            return {"ok": True, "deleted": ctfilter.delete(
                self.pipeline, ctfilter.Filter.parse(request.get("filter")), time.monotonic())}
        if op == "rejects":  # the flow-log collector's (``rejects``): taken, emptied
            return {"ok": True, "rejects": self.pipeline.take_rejects()}
        return {"ok": False, "error": f"unknown op {op!r}"}

    def stats(self) -> dict:
        self.harvest()
        pl = self.pipeline
        # the kernel's own drops on our ring (full), before we saw the frames
        if self.ring is None:
            self.counters["rx_socket_dropped"] += sum(s.dropped() for s in self.sockets.values())
        else:
            self.counters["rx_socket_dropped"] += self.ring.dropped()
            self.counters.update(self.ring.counters)
        enis = {}
        now = time.monotonic()
        for eni in pl.enis.values():
            if len(eni.table) >= eni.connection_limit:
                # at the limit by the count: free what expired, so that the count says
                # whether the ENI is really full (the controller adds an ENI when it is)
                pl.counters["sessions_expired"] += pl.store.reap_slot(eni.table.slot, now)
            enis[eni.id] = dict(eni.counters, sessions_active=len(eni.table),
                                sessions_created=eni.table.created,
                                arp_resolved=len(eni.arp))
        fast = {"mode": self.fast_path, **(self.fast.stats() if self.fast else {})}
        return {"global": dict(pl.counters, sessions_active=pl.session_count()), "enis": enis,
                "table": dict(pl.store.stats(), path=self.table_path), "fast_path": fast}

    def conntrack(self, eni_id: str | None) -> list[dict]:
        self.harvest()
        pl = self.pipeline
        if not eni_id:
            return pl.store.describe(time.monotonic())
        eni = pl.enis.get(eni_id)
        return [] if eni is None else pl.store.describe(time.monotonic(), eni.table.slot)

    def close(self) -> None:
        """Write everything to the table and mark it clean (a SIGTERM, not a crash)."""
        self.harvest()
        self.pipeline.close_tables()
        if self.ring is not None:
            self.ring.close()

    # -- loop -----------------------------------------------------------------------
    def run(self) -> None:
        buf = bytearray(BUFFER)
        pl = self.pipeline
        receive = pl.receive
        server_fd = self.server.fileno()
        ring = self.ring
        ring_fd = ring.fileno() if ring is not None else -1
        arp_fd = self.arp.fileno() if self.arp is not None else -1
        drain = self.fast.drain if self.fast is not None else ring.drain if ring else None
        by_fd = self.by_fd
        fast = self.fast
        by_index, counters = self.by_index, self.counters
        self.sync_links()
        last_tick = 0.0
        spin_until = linger_until = 0.0
        while self.running:
            # Adaptive polling: right after traffic, look again without sleeping for a
            # short while (a reply usually follows within tens of microseconds), so a
            # request/response pays one wake-up instead of two; then, until LINGER, look
            # again after giving the CPU to anything runnable (the client, the server: a
            # process woken from sleep on an idle virtual CPU pays tens of microseconds,
            # one that yields pays none); idle, block in epoll.
            mono = time.monotonic()
            if mono < spin_until:
                timeout = 0
            elif mono < linger_until:
                timeout = 0
                os.sched_yield()
            else:
                timeout = 0.05 if pl.has_timers() else 1.0
            try:
                events = self.epoll.poll(timeout)
            except InterruptedError:
                continue
            now = time.monotonic()
            if events:
                spin_until = now + SPIN
                linger_until = now + LINGER
            for fd, _mask in events:
                if fd == ring_fd:
                    if ring.lost and not self.relocate():
                        continue
                    drain(by_index, receive, now, BATCH, buf, counters)
                elif fd == arp_fd:
                    self._drain_arp(receive, buf, now)
                elif fd == server_fd:
                    self.handle_control()
                    self.sync_links()
                    fast = self.fast  # the walk may have been switched
                    drain = fast.drain if fast is not None else ring.drain if ring else None
                else:
                    self._drain_socket(fd, by_fd, receive, buf, now)
            if now - last_tick >= 0.05:
                last_tick = now
                if fast is not None:
                    fast.tick()
                pl.tick(now)
                self.count_peers(now)

    def _drain_socket(self, fd: int, by_fd: dict, receive, buf: bytearray,
                      now: float) -> None:
        """The ``sockets`` path: up to ``BATCH`` frames of one link's socket."""
        entry = by_fd.get(fd)
        if entry is None:
            return
        port, recv_into = entry
        for _ in range(BATCH):
            try:
                n = recv_into(buf)
            except BlockingIOError:
                break
            except OSError:
                self.counters["rx_error"] += 1
                break
            self._deliver(receive, port, buf, n, now)

    def _deliver(self, receive, port, buf: bytearray, n: int, now: float) -> None:  # noqa: ANN001
        try:
            receive(port, buf, n, now)
        except Exception:  # never let one frame stop the dataplane
            self.counters["internal_error"] += 1
            if self.counters["internal_error"] <= 3:
                traceback.print_exc()

    def count_peers(self, now: float) -> None:
        """A worker's ENIs learn the sessions the other workers hold (``Worker``)."""
        held = self.worker.elsewhere(now) if self.worker is not None else None
        if held is not None:
            for eni in self.pipeline.enis.values():
                eni.elsewhere = held.get(eni.id, 0)

    def relocate(self) -> bool:
        """A ring adopted from a dead worker: the walk placed at its oldest ready frame."""
        if not self.ring.relocate():
            return False
        if self.fast is not None:
            self.fast.follow_ring()
        return True

    def _drain_arp(self, receive, buf: bytearray, now: float) -> None:  # noqa: ANN001
        """A worker's ARP frames (every worker sees every one: ``sockets.ArpSocket``)."""
        for _ in range(BATCH):
            try:
                n, ifname = self.arp.recv_into(buf)
            except BlockingIOError:
                return
            except OSError:
                self.counters["rx_error"] += 1
                return
            sock = self.sockets.get(ifname)
            port = self.by_index.get(sock.ifindex) if sock is not None else None
            if port is None:
                continue  # another process's link (the NAT gateways share the namespace)
            if self.fast is not None:
                self.fast.forget_all()  # an ARP frame may teach a new MAC
            self._deliver(receive, port, buf, n, now)

    def stop(self, *_args) -> None:
        self.running = False


def serve(dp: Dataplane, what: str) -> int:
    signal.signal(signal.SIGTERM, dp.stop)
    signal.signal(signal.SIGINT, dp.stop)
    print(f"{what} pid {os.getpid()} ready", file=sys.stderr, flush=True)
    try:
        dp.run()
    finally:
        dp.close()
    return 0
