"""The optional compiled fast path: flows the pipeline decided, forwarded in C (side effects).

``fastpath.c`` (built by ``fastbuild``) walks the receive ring itself.  A frame whose
flow it knows and that changes no state (an ACK-only TCP segment of an ESTABLISHED
session, UDP, an echo or echo reply; not a fragment, TTL above 1, small enough for
the ENI's MTU) is rewritten, sent and counted there; every other frame stops the walk
and is handed to ``Pipeline.receive`` exactly as the pure-Python loop would hand it,
so Python stays the reference for everything (policy, new sessions, TCP states, ICMP
errors, fragments, ARP) and the fallback when the module is not built.

A flow is one direction of one session, made here (``_install``) after Python handled
a frame of a session that the C side may then carry alone:

* out (environment -> VPC): the session is held by the environment's primary ENI, TCP
  is ESTABLISHED, the next hop's MAC is known;
* in (VPC -> environment): the session has been replied to, TCP is ESTABLISHED.

A flow names the session's record and the record's ``seq`` when it was made: any
write of the record (a TCP state change, the first reply, a write-back, a delete)
changes ``seq``, and C then hands the frame to Python, which remakes or forgets the
flow (``_resync``).  C counts into the flow; ``harvest`` moves the counts into the
sessions and counters (packets and bytes, the expiry, the last ACK and window), as
Python would have counted them frame by frame.  The loop harvests before Python sees
a frame, before every tick and before ``stats`` and ``conntrack`` answer, so the
session table (written only by Python) ends byte for byte as the pure-Python run
leaves it.  Any ARP frame and any configuration forget every flow (MACs and ports
may have changed); flows of dead sessions are swept on ticks.

``mode(setting)`` resolves ``settings.dataplane.fast_path``: ``sockets`` (the default:
one receiving socket per link, no ring), ``python`` (the receive ring walked in
Python), ``compiled`` (refused when the module is missing) or ``auto`` (compiled when
built, else python).
"""

from __future__ import annotations

import importlib
import struct
import traceback
from array import array
from collections.abc import Callable

from hyperplane.dataplane import packet as p
from hyperplane.dataplane.conntrack import ESTABLISHED, INBOUND, Session
from hyperplane.dataplane.ports import EnvPort
from hyperplane.dataplane.records import record_at
from hyperplane.dataplane.ring import COUNTERS as RING_COUNTERS
from hyperplane.dataplane.ring import RxRing

MODULE = "_hp_fastpath"
MODES = ("sockets", "auto", "python", "compiled")
FLOWS = 1 << 15          # flows (directions of sessions) the C side holds at most (4 MB)
SWEEP = 512              # flows looked at for a dead session per tick
MASK64 = (1 << 64) - 1
CLAIM_PROTOCOLS = (p.PROTO_TCP, p.PROTO_UDP, p.PROTO_ICMP)  # an allocator's place: slot * 3 + i
PROTO_INDEX = bytes(CLAIM_PROTOCOLS.index(v) if v in CLAIM_PROTOCOLS else 0 for v in range(256))
STOP = struct.Struct("<IIIIIIi").unpack_from  # hp_ctx's p_off .. p_flow
FLOW_AFTER = 8           # packets a session carries (both ways) before it gets flows
ETH_TYPE = p.ETH_TYPE


class FastPathError(Exception):
    """``fast_path: compiled`` asked for, and the compiled module is not there."""


def load():
    """The compiled module (its ``ffi`` and ``lib``), or None when it is not built."""
    try:
        module = importlib.import_module(MODULE)
        module.ffi.offsetof("struct hp_ctx", "p_fast")  # built from this source's layout
    except (ImportError, KeyError, AttributeError):  # none, or built from an older source
        return None
    return module


def attach_scan(setting: str) -> CompiledAttach | None:
    """The compiled passes of a table attach (``rebuild.Scan``), when the module is built,
    the setting is not ``python`` (the pure-Python reference throughout) and the module
    hashes a probe key as this interpreter does; else None."""
    module = load() if setting != "python" else None
    if module is None or not hasattr(module.lib, "hp_attach_claim"):  # none, or built before
        return None
    probe = (7, p.PROTO_TCP | INBOUND, bytes(range(8)), 0x12345678)
    if module.lib.hp_key_hash(*probe) != hash(probe) & MASK64:  # another tuple hash
        return None
    return CompiledAttach(module.ffi, module.lib)


class CompiledAttach:
    """``hp_attach_scan`` (called: the pass over the records, their verdicts and the index,
    with the hash Python's index uses) and ``hp_attach_claim`` (``claim``: the ports of the
    kept records in fresh ``portalloc`` allocators)."""

    def __init__(self, ffi, lib) -> None:  # noqa: ANN001 - the cffi module's
        self.ffi, self.lib = ffi, lib

    def __call__(self, body: memoryview, hwm: int, bound: bytes, protocols: bytes,
                 stale: bytes, slots: memoryview, mask: int,
                 used) -> tuple[int, list[int], int]:  # noqa: ANN001 - an mmap
        ffi = self.ffi
        torn, ntorn = ffi.new("uint32_t[]", max(hwm, 1)), ffi.new("uint32_t *")
        dropped = ffi.new("uint32_t *")
        kept = self.lib.hp_attach_scan(ffi.from_buffer(body), hwm, bound, len(bound),
                                       protocols, stale, INBOUND, p.PROTO_TCP,
                                       ffi.from_buffer("int64_t[]", slots), mask,
                                       ffi.from_buffer(used), torn, ntorn, dropped)
        return kept, list(torn[0:ntorn[0]]), dropped[0]

    def claim(self, body: memoryview, used, hwm: int, alloc_of: array,  # noqa: ANN001
              arrays: list[tuple[memoryview, memoryview]]) -> tuple[list, list, list, list]:
        """Per allocator (``arrays``: owners and refs) the records and the endpoints that
        claimed; the records refused; the moved endpoints as (allocator, word)."""
        ffi, n = self.ffi, len(arrays)
        keep = [(ffi.from_buffer("uint64_t[]", o), ffi.from_buffer("uint32_t[]", r))
                for o, r in arrays]
        owners = ffi.new("uint64_t *[]", [o for o, _ in keep])
        refs = ffi.new("uint32_t *[]", [r for _, r in keep])
        records, owned = ffi.new("uint32_t[]", n), ffi.new("uint32_t[]", n)
        rejected, moved = ffi.new("uint32_t[]", max(hwm, 1)), ffi.new("uint64_t[]", max(hwm, 1))
        moved_alloc = ffi.new("uint32_t[]", max(hwm, 1))
        nrejected, nmoved = ffi.new("uint32_t *"), ffi.new("uint32_t *")
        size = 1 << max(4, (2 * hwm).bit_length())
        seen = ffi.new("uint64_t[]", size)
        self.lib.hp_attach_claim(ffi.from_buffer(body), ffi.from_buffer(used), hwm,
                                 ffi.from_buffer("int32_t[]", alloc_of), PROTO_INDEX,
                                 p.PROTO_ICMP, owners, refs, records, owned, rejected,
                                 nrejected, moved, moved_alloc, nmoved, seen, size - 1)
        return (list(records), list(owned), list(rejected[0:nrejected[0]]),
                list(zip(moved_alloc[0:nmoved[0]], moved[0:nmoved[0]], strict=True)))


def mode(setting: str) -> str:
    """Which receive path runs for the setting (``MODES``)."""
    if setting not in MODES:
        raise ValueError(f"fast_path must be one of {MODES}, not {setting!r}")
    if setting in ("sockets", "python"):
        return setting
    if load() is not None:
        return "compiled"
    if setting == "compiled":
        raise FastPathError("fast_path is 'compiled' but the compiled fast path is not "
                            "built (make install with gcc and python3-dev, or "
                            "python -m hyperplane.dataplane.fastbuild)")
    return "python"


def wire_ports(proto: int, port_a: int, port_b: int) -> int:
    """The C key's ports word: the two ports (or the echo id and 0) as on the wire, read
    as a little-endian 32-bit word."""
    if proto == p.PROTO_ICMP:
        return int.from_bytes(port_a.to_bytes(2, "big") + b"\0\0", "little")
    return int.from_bytes(port_a.to_bytes(2, "big") + port_b.to_bytes(2, "big"), "little")


class FastPath:
    """The C side's flows over one ring, one pipeline and the loop's transmit sockets.

    ``links(port)`` gives a port's (interface index, transmit socket descriptor) or None.
    """

    def __init__(self, ring: RxRing, pipeline, links: Callable, flows: int = FLOWS) -> None:
        module = load()
        if module is None:
            raise FastPathError("the compiled fast path is not built")
        ffi = self.ffi = module.ffi
        self.lib = module.lib
        self.ring, self.pipeline, self.links = ring, pipeline, links
        self._flows = ffi.new("struct hp_flow[]", flows)
        self._index = ffi.new("uint32_t[]", 2 * flows)
        self._table = ffi.from_buffer(pipeline.store.mem)
        self._ring = ffi.from_buffer(ring.map)
        ctx = self.ctx = ffi.new("struct hp_ctx *")
        # where hp_run stopped, read in one unpack (cheaper than seven cdata reads)
        self._stop_view, self._stop_at = ffi.buffer(ctx), ffi.offsetof("struct hp_ctx", "p_off")
        ctx.flows, ctx.index, ctx.nflows, ctx.mask = self._flows, self._index, flows, \
            2 * flows - 1
        ctx.table, ctx.ring = self._table, self._ring
        ctx.frames, ctx.frame_size, ctx.head = ring.frames, ring.frame_size, ring.head
        ctx.sock = ring.sock.fileno()
        self.free = list(range(flows - 1, -1, -1))
        self.owner: dict[int, tuple[Session, int]] = {}   # flow -> (session, direction)
        self.of_session: dict[int, list[int]] = {}        # id(session) -> [out, in] (-1)
        self._done = ffi.new("int *")
        self._harvested = ffi.new("uint32_t[]", 1024)
        self._buf_owner: bytearray | None = None
        self._cbuf = None
        self._sweep_at = 0
        self.reported = dict.fromkeys(("tx_full", "tx_error", "rx_error", "rx_truncated"), 0)
        self.flow_after = FLOW_AFTER
        self.counters = pipeline.counters  # the walk's (``drain``'s) I/O counters

    # -- the walk -----------------------------------------------------------------------
    def drain(self, by_index: dict, receive, now: float, budget: int, buf: bytearray,
              counters: dict[str, int]) -> int:
        """As ``RxRing.drain``: the C side forwards what it can, Python the rest."""
        if buf is not self._buf_owner:
            self._buf_owner, self._cbuf = buf, self.ffi.from_buffer(buf)
        run, ctx, done, cbuf, buf_len = self.lib.hp_run, self.ctx, self._done, self._cbuf, \
            len(buf)
        view, at, pl, flow_after = self._stop_view, self._stop_at, self.pipeline, \
            self.flow_after
        mv, size = self.ring.mv, self.ring.frame_size
        total = 0
        while total < budget:
            stopped = run(ctx, budget - total, now, cbuf, buf_len, done)
            total += done[0]
            if ctx.dirty_head:
                self._collect()
            if not stopped:  # the head slot is not ready: a hole (``ring``) is skipped
                after = self.ring.skip_hole(ctx.head, now, total == 0) \
                    if total < budget else None
                if after is None:
                    break
                ctx.head = after
                continue
            start, length, ifindex, _status, copied, fast, hit = STOP(view, at)
            frame = buf if copied else mv[start:start - start % size + size]
            port = by_index.get(ifindex)
            if port is None:
                self.ring.counters["rx_unknown_link"] += 1
                continue
            if fast:
                pl.last_session = None
            try:
                receive(port, frame, length, now)
            except Exception:  # never let one frame stop the dataplane
                counters["internal_error"] += 1
                if counters["internal_error"] <= 3:
                    traceback.print_exc()
            if hit >= 0:
                self._resync(hit)
            if fast:
                s = pl.last_session
                if s is not None and s.pkts_out + s.pkts_in >= flow_after:
                    self._install(s)
            elif frame[ETH_TYPE] == 8 and frame[ETH_TYPE + 1] == 6:
                self.forget_all()  # an ARP frame may have taught a new MAC
        self.ring.head = ctx.head
        self.counters = counters
        return total

    def report(self) -> None:
        """The C side's I/O counts into the counters (at ticks and before stats)."""
        ctx, seen, counters = self.ctx, self.reported, self.counters
        pl = self.pipeline.counters
        for name, now_value, where in (("tx_full", ctx.tx_full, pl),
                                       ("tx_error", ctx.tx_error, pl),
                                       ("rx_error", ctx.rx_error, counters),
                                       ("rx_truncated", ctx.rx_truncated, self.ring.counters)):
            if now_value != seen[name]:
                where[name] += now_value - seen[name]
                seen[name] = now_value

    # -- flows --------------------------------------------------------------------------
    def _install(self, s: Session) -> None:
        """Flows for ``s`` (the session Python just forwarded a frame of a kind a flow
        could carry by; both directions where each qualifies). The walk calls it once
        ``s`` has carried ``flow_after`` packets: a short connection (a request, an
        answer, the close) would pay for flows it never uses."""
        if s.dead:
            return
        have = self.of_session.get(id(s))
        for direction in (0, 1):
            if have is None or have[direction] < 0:
                self._add(s, direction)

    def _eligible(self, s: Session, direction: int):
        """(link index, its socket, the Ethernet addresses, the ENI) of the flow that may
        carry ``s`` in ``direction``, or None."""
        if s.dead or not s.cached or (s.proto == p.PROTO_TCP and s.state != ESTABLISHED):
            return None
        env = s.env
        eni = getattr(env, "eni", None)
        if not isinstance(env, EnvPort) or eni is None or s.table is not eni.table:
            return None
        if direction == 0:
            mac = eni.arp.get(s.nexthop)
            src, dst = self.links(env), self.links(eni)
            if mac is None or src is None or dst is None:
                return None
            return src[0], dst[1], mac + eni.mac_bytes, eni
        if not s.replied:
            return None
        src, dst = self.links(eni), self.links(env)
        if src is None or dst is None:
            return None
        return src[0], dst[1], env.eth_in, eni

    def _add(self, s: Session, direction: int) -> None:
        found = self._eligible(s, direction)
        if found is None or not self.free:
            return
        ifindex, fd, eth, eni = found
        n = self.free.pop()
        f = self._flows[n]
        f.ifindex, f.proto, f.dir, f.fd = ifindex, s.proto, direction, fd
        eni_ip = s.in_key[1][4:8]
        if direction == 0:
            f.addrs = s.env_ip + s.remote_ip
            f.ports = wire_ports(s.proto, s.env_port, s.remote_port)
            f.new_addr, f.new_port = eni.ip_bytes, s.out_l4
            f.d_ip, f.d_full, f.d_part, f.mtu = s.ip_out, s.full_out, s.part_out, eni.mtu
        else:
            f.addrs = s.remote_ip + eni_ip
            f.ports = wire_ports(s.proto, s.eni_port, 0) if s.proto == p.PROTO_ICMP \
                else wire_ports(s.proto, s.remote_port, s.eni_port)
            f.new_addr, f.new_port = s.env_ip, s.in_l4
            f.d_ip, f.d_full, f.d_part, f.mtu = s.ip_in, s.full_in, s.part_in, 0
        f.eth = eth
        f.rec_off = record_at(s.rec)
        f.seq = int.from_bytes(self.pipeline.store.mem[f.rec_off:f.rec_off + 2], "little")
        f.expires, f.timeout = s.expires, s.timeout
        f.pkts = f.bytes = f.acked = f.dirty = 0
        f.pair = -1
        if self.lib.hp_insert(self.ctx, n) < 0:  # a stale flow holds the key: not now
            self.free.append(n)
            return
        pair = self.of_session.setdefault(id(s), [-1, -1])
        pair[direction] = n
        other = pair[1 - direction]
        if other >= 0:
            f.pair = other
            self._flows[other].pair = n
        self.owner[n] = (s, direction)

    def _remove(self, n: int) -> None:
        s, direction = self.owner.pop(n)
        self.lib.hp_remove(self.ctx, n)
        pair = self.of_session.get(id(s))
        if pair is not None:
            pair[direction] = -1
            other = pair[1 - direction]
            if other >= 0:
                self._flows[other].pair = -1
            else:
                del self.of_session[id(s)]
        self.free.append(n)

    def _resync(self, n: int) -> None:
        """After Python handled a frame of flow ``n``'s session: both its flows remade
        from the session as it is now, or forgotten."""
        owner = self.owner.get(n)
        if owner is None:
            return
        s = owner[0]
        for m in list(self.of_session.get(id(s), ())):
            if m >= 0:
                self._remove(m)
        if not s.dead:
            for direction in (0, 1):
                self._add(s, direction)

    def forget_all(self) -> None:
        """Every flow forgotten (after a configuration, an ARP frame)."""
        self.harvest()
        for n in list(self.owner):
            self._remove(n)

    def follow_ring(self) -> None:
        """The walk goes on where the ring's (``RxRing.relocate``) now is."""
        self.ctx.head = self.ring.head

    def retire(self) -> None:
        """Before the Python walk takes over: counts harvested, flows forgotten, the slot
        of the last frame handed to Python given back, the ring's head where C left it."""
        self.forget_all()
        ctx = self.ctx
        if ctx.pending:
            off = ctx.head * self.ring.frame_size
            self.ring.mv[off:off + 4] = bytes(4)
            ctx.head = ctx.head + 1 if ctx.head + 1 < ctx.frames else 0
            ctx.pending = 0
        self.ring.head = ctx.head

    def harvest(self) -> None:
        """The C side's counts into the sessions and counters, as Python counts them."""
        self._collect()
        self.report()

    def _collect(self) -> None:
        """The dirty flows' counts into their sessions (``harvest`` without the I/O)."""
        lib, ctx, out, flows = self.lib, self.ctx, self._harvested, self._flows
        counters = self.pipeline.counters
        moved: list[int] = []
        while True:
            count = lib.hp_harvest(ctx, out, 1024)
            for i in range(count):
                n = out[i]
                f = flows[n]
                pkts, nbytes = f.pkts, f.bytes
                f.pkts = f.bytes = 0
                s, direction = self.owner[n]
                eni = s.env.eni
                if not s.cached:  # evicted meanwhile: the counts go to the object now
                    moved.append(n)  # cached (as the Python path would have found it)
                    s = s.table.current(s)
                if f.expires > s.expires:
                    s.expires = f.expires
                counters["forwarded"] += pkts
                c = eni.counters
                if direction == 0:
                    s.pkts_out += pkts
                    s.bytes_out += nbytes
                    c["tx_packets"] += pkts
                    c["tx_bytes"] += nbytes
                    if f.acked:
                        s.ack_out, s.win_out, f.acked = f.ack, f.win, 0
                else:
                    s.pkts_in += pkts
                    s.bytes_in += nbytes
                    c["rx_packets"] += pkts
                    c["rx_bytes"] += nbytes
                    if f.acked:
                        s.ack_in, s.win_in, f.acked = f.ack, f.win, 0
            if count < 1024:
                break
        for n in moved:  # made again from the object now cached by its next frame
            if n in self.owner:
                self._remove(n)

    def tick(self) -> None:
        """Harvest, and forget a bounded number of flows whose session died."""
        self.harvest()
        flows = list(self.owner)[self._sweep_at:self._sweep_at + SWEEP]
        self._sweep_at = self._sweep_at + SWEEP if len(flows) == SWEEP else 0
        for n in flows:
            owner = self.owner.get(n)
            if owner is not None and owner[0].dead:
                self._remove(n)

    def stats(self) -> dict:
        return {"flows": len(self.owner), "capacity": len(self.owner) + len(self.free)}


__all__ = ["FastPath", "FastPathError", "MODES", "RING_COUNTERS", "load", "mode"]
