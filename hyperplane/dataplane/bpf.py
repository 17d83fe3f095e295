"""Classic BPF programs the dataplane attaches to its packet sockets, as bytes (pure).

Two programs.  ``fanout(workers)`` steers frames among the workers of one
``PACKET_FANOUT`` group (below).  ``links_filter(ifindexes)``, the socket filter of the
receive ring (``ring.RxRing``).  The ring's socket listens on every link of the namespace, and the
NAT gateway process (and ``lo``) share that namespace: the filter accepts only frames
whose interface index is one of this process's ports, so the kernel never copies
another process's frames into the ring.  The indexes are folded into ascending ranges
(links made together get consecutive indexes) and tested one range after another:

    ld  ifindex                       ; SKF_AD_OFF + SKF_AD_IFINDEX
    jgt #hi, next_range               ; per range, four instructions
    jge #lo, 0, reject
    ret #ACCEPT
    ret #0                            ; below this range: below every later one too
    ...
    ret #0

Every jump is short (classic BPF's jump offsets are 8 bits).  A set that needs more
than ``MAX_RANGES`` ranges gets no program (``None``): the caller then accepts every
frame and drops the unknown links' frames itself.  ``assemble`` packs instructions
as the kernel's ``struct sock_filter`` (code u16, jt u8, jf u8, k u32, native order).

The fanout program runs in the fanout hook, where a frame starts at its IPv4 header
(offsets below are from it); the kernel takes its result modulo the number of members.
Each worker owns one slice of every ENI's ports, ``port * N >> 16`` (``port_slice``:
worker ``i`` of ``N`` allocates from ``[ceil(i * 65536 / N), ceil((i + 1) * 65536 / N))``),
so:

* from an environment (source in ``ENV_POOL``, 169.254.128.0/17): a hash of the source
  address and the inside port (the TCP/UDP source port, the echo identifier, for an
  ICMP error the quoted packet's destination port), ``(addr ^ port) * 0x9e3779b1 >> 16``:
  every flow of one inside endpoint, and its endpoint-independent mapping, on one worker;
* from the VPC: the slice of the ENI port (the TCP/UDP destination port, the echo
  reply's identifier, for an ICMP error the quoted packet's source port).

``steer(packet, workers)`` is the same function in Python (the model the tests hold the
kernel's result to); ``run`` interprets every instruction the two programs use.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

INSN = struct.Struct("=HBBI")
LD_W_ABS = 0x20          # BPF_LD | BPF_W | BPF_ABS
JGT_K = 0x25             # BPF_JMP | BPF_JGT | BPF_K
JGE_K = 0x35             # BPF_JMP | BPF_JGE | BPF_K
RET_K = 0x06             # BPF_RET | BPF_K
RET_A = 0x16             # BPF_RET | BPF_A
LD_H_ABS = 0x28          # BPF_LD | BPF_H | BPF_ABS
LD_B_ABS = 0x30          # BPF_LD | BPF_B | BPF_ABS
LD_H_IND = 0x48          # BPF_LD | BPF_H | BPF_IND
LD_B_IND = 0x50          # BPF_LD | BPF_B | BPF_IND
LDX_MSH = 0xB1           # BPF_LDX | BPF_B | BPF_MSH: x = 4 * (pkt[k] & 0xf)
LDX_MEM = 0x61           # BPF_LDX | BPF_MEM
ST = 0x02                # BPF_ST: M[k] = a
JEQ_K = 0x15             # BPF_JMP | BPF_JEQ | BPF_K
JA = 0x05                # BPF_JMP | BPF_JA
AND_K = 0x54             # BPF_ALU | BPF_AND | BPF_K
ADD_K = 0x04             # BPF_ALU | BPF_ADD | BPF_K
ADD_X = 0x0C             # BPF_ALU | BPF_ADD | BPF_X
MUL_K = 0x24             # BPF_ALU | BPF_MUL | BPF_K
XOR_X = 0xAC             # BPF_ALU | BPF_XOR | BPF_X
LSH_K = 0x64             # BPF_ALU | BPF_LSH | BPF_K
RSH_K = 0x74             # BPF_ALU | BPF_RSH | BPF_K
MOD_K = 0x94             # BPF_ALU | BPF_MOD | BPF_K
TAX = 0x07               # BPF_MISC | BPF_TAX
ENV_POOL = (0xA9FE8000, 0xFFFF8000)  # 169.254.128.0/17: environments' addresses
GOLDEN = 0x9E3779B1
SKF_AD_IFINDEX = (-0x1000 + 8) & 0xFFFFFFFF  # the ancillary "interface index" load
ACCEPT = 0xFFFFFFFF      # keep the whole frame
MAX_INSNS = 4096         # the kernel's BPF_MAXINSNS
MAX_RANGES = (MAX_INSNS - 2) // 4

Insn = tuple[int, int, int, int]


def ranges(values: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted, merged ``(low, high)`` ranges (both inclusive) covering ``values``."""
    out: list[tuple[int, int]] = []
    for v in sorted(set(values)):
        if out and out[-1][1] + 1 == v:
            out[-1] = (out[-1][0], v)
        else:
            out.append((v, v))
    return out


def links_filter(ifindexes: Iterable[int]) -> list[Insn] | None:
    """The program accepting frames of these interfaces only; None: too many ranges."""
    spans = ranges(ifindexes)
    if len(spans) > MAX_RANGES:
        return None
    prog: list[Insn] = [(LD_W_ABS, 0, 0, SKF_AD_IFINDEX)]
    for low, high in spans:
        prog += [(JGT_K, 3, 0, high), (JGE_K, 0, 1, low), (RET_K, 0, 0, ACCEPT), (RET_K, 0, 0, 0)]
    prog.append((RET_K, 0, 0, 0))
    return prog


def _quoted(mark: str) -> list:
    """x = the offset of an ICMP error's quoted transport header (x: the ICMP header)."""
    return [(LD_B_IND, 0, 0, 8), (AND_K, 0, 0, 0xF), (LSH_K, 0, 0, 2), (ADD_X, 0, 0, 0),
            (ADD_K, 0, 0, 8), (TAX, 0, 0, 0), mark]


def fanout(workers: int, tail: tuple = ()) -> list[Insn]:
    """The fanout program for ``workers`` members (``tail``: instructions before each
    return, for tests that read the result through a socket filter's trim)."""
    # symbolic jumps ("label") resolved below; each path ends at "hash" or "slice"
    body: list = [
        (LD_W_ABS, 0, 0, 12), (AND_K, 0, 0, ENV_POOL[1]), (JEQ_K, "out", "in", ENV_POOL[0]),
        "out", (LDX_MSH, 0, 0, 0), (LD_B_ABS, 0, 0, 9), (JEQ_K, "o_icmp", 0, 1),
        (LD_H_IND, 0, 0, 0), (JA, "hash", 0, 0),
        "o_icmp", (LD_B_IND, 0, 0, 0), (JEQ_K, 0, "o_err", 8), (LD_H_IND, 0, 0, 4),
        (JA, "hash", 0, 0),
        "o_err", *_quoted((LD_H_IND, 0, 0, 2)),
        "hash", (ST, 0, 0, 0), (LD_W_ABS, 0, 0, 12), (LDX_MEM, 0, 0, 0), (XOR_X, 0, 0, 0),
        (MUL_K, 0, 0, GOLDEN), (RSH_K, 0, 0, 16), *tail, (RET_A, 0, 0, 0),
        "in", (LDX_MSH, 0, 0, 0), (LD_B_ABS, 0, 0, 9), (JEQ_K, "i_icmp", 0, 1),
        (LD_H_IND, 0, 0, 2), (JA, "slice", 0, 0),
        "i_icmp", (LD_B_IND, 0, 0, 0), (JEQ_K, 0, "i_err", 0), (LD_H_IND, 0, 0, 4),
        (JA, "slice", 0, 0),
        "i_err", *_quoted((LD_H_IND, 0, 0, 0)),
        "slice", (MUL_K, 0, 0, workers), (RSH_K, 0, 0, 16), *tail, (RET_A, 0, 0, 0),
    ]
    return _link(body)


def _link(body: list) -> list[Insn]:
    labels, prog = {}, []
    for item in body:
        if isinstance(item, str):
            labels[item] = len(prog)
        else:
            prog.append(item)
    def rel(target: int | str, pc: int) -> int:
        return labels[target] - pc - 1 if isinstance(target, str) else target
    return [(code, 0, 0, rel(jt, pc)) if code == JA else (code, rel(jt, pc), rel(jf, pc), k)
            for pc, (code, jt, jf, k) in enumerate(prog)]


def port_slice(index: int, workers: int) -> tuple[int, int]:
    """The ports (low, high, both inclusive) the fanout program steers to worker ``index``."""
    return -(-index * 65536 // workers), -(-(index + 1) * 65536 // workers) - 1


def steer(packet: bytes, workers: int) -> int:
    """The worker (0 .. workers - 1) the fanout program sends an IPv4 ``packet`` to; a
    packet too short for a load the program makes goes to worker 0 (as in the kernel)."""
    if len(packet) < 16:
        return 0
    src = int.from_bytes(packet[12:16], "big")
    x = 4 * (packet[0] & 0xF)
    proto = packet[9]
    try:
        if src & ENV_POOL[1] == ENV_POOL[0]:
            port = _inside_port(packet, x, proto)
            return ((((src ^ port) * GOLDEN) & 0xFFFFFFFF) >> 16) % workers
        return ((_eni_port(packet, x, proto) * workers) & 0xFFFFFFFF) >> 16
    except IndexError:
        return 0


def _u16(packet: bytes, off: int) -> int:
    if off + 2 > len(packet):
        raise IndexError(off)
    return int.from_bytes(packet[off:off + 2], "big")


def _byte(packet: bytes, off: int) -> int:
    return packet[off]  # IndexError past the end, as the program's load fails


def _inside_port(packet: bytes, x: int, proto: int) -> int:
    if proto != 1:
        return _u16(packet, x)
    if _byte(packet, x) == 8:
        return _u16(packet, x + 4)
    return _u16(packet, x + 8 + 4 * (_byte(packet, x + 8) & 0xF) + 2)


def _eni_port(packet: bytes, x: int, proto: int) -> int:
    if proto != 1:
        return _u16(packet, x + 2)
    if _byte(packet, x) == 0:
        return _u16(packet, x + 4)
    return _u16(packet, x + 8 + 4 * (_byte(packet, x + 8) & 0xF))


def run(prog: list[Insn], ifindex: int = 0, packet: bytes = b"") -> int:
    """What ``prog`` returns for ``packet`` arriving on ``ifindex`` (a model for tests:
    the instructions ``links_filter`` and ``fanout`` emit; a load past the end returns 0,
    as the kernel's interpreter does)."""
    a = x = pc = 0
    mem = [0] * 16
    while True:
        code, jt, jf, k = prog[pc]
        pc += 1
        if code == LD_W_ABS and k == SKF_AD_IFINDEX:
            a = ifindex
        elif code in (LD_W_ABS, LD_H_ABS, LD_B_ABS, LD_H_IND, LD_B_IND):
            off = k + (x if code in (LD_H_IND, LD_B_IND) else 0)
            size = {LD_W_ABS: 4, LD_H_ABS: 2, LD_H_IND: 2}.get(code, 1)
            if off + size > len(packet):
                return 0
            a = int.from_bytes(packet[off:off + size], "big")
        elif code == LDX_MSH:
            if k >= len(packet):
                return 0
            x = 4 * (packet[k] & 0xF)
        elif code in (JGT_K, JGE_K, JEQ_K):
            taken = a > k if code == JGT_K else a >= k if code == JGE_K else a == k
            pc += jt if taken else jf
        elif code == JA:
            pc += k
        elif code in _ALU:
            a = _ALU[code](a, x, k) & 0xFFFFFFFF
        elif code == ST:
            mem[k] = a
        elif code == LDX_MEM:
            x = mem[k]
        elif code == TAX:
            x = a
        elif code == RET_K:
            return k
        elif code == RET_A:
            return a
        else:
            raise ValueError(f"instruction {pc - 1}: code {code:#x} is not modelled")


_ALU = {AND_K: lambda a, x, k: a & k, ADD_K: lambda a, x, k: a + k,
        ADD_X: lambda a, x, k: a + x, MUL_K: lambda a, x, k: a * k,
        XOR_X: lambda a, x, k: a ^ x, LSH_K: lambda a, x, k: a << k,
        RSH_K: lambda a, x, k: a >> k, MOD_K: lambda a, x, k: a % k}


def assemble(prog: list[Insn]) -> bytes:
    """The program as an array of ``struct sock_filter``."""
    return b"".join(INSN.pack(*insn) for insn in prog)
