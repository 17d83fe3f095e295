"""Classic BPF programs the dataplane attaches to its packet sockets, as bytes (pure).

One program today: ``links_filter(ifindexes)``, the socket filter of the receive ring
(``ring.RxRing``).  The ring's socket listens on every link of the namespace, and the
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
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

INSN = struct.Struct("=HBBI")
LD_W_ABS = 0x20          # BPF_LD | BPF_W | BPF_ABS
JGT_K = 0x25             # BPF_JMP | BPF_JGT | BPF_K
JGE_K = 0x35             # BPF_JMP | BPF_JGE | BPF_K
RET_K = 0x06             # BPF_RET | BPF_K
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


def run(prog: list[Insn], ifindex: int) -> int:
    """What ``prog`` returns for a frame of ``ifindex`` (a model for tests: only the
    instructions ``links_filter`` emits)."""
    a = pc = 0
    while True:
        code, jt, jf, k = prog[pc]
        if code == LD_W_ABS and k == SKF_AD_IFINDEX:
            a, pc = ifindex, pc + 1
        elif code in (JGT_K, JGE_K):
            taken = a > k if code == JGT_K else a >= k
            pc += 1 + (jt if taken else jf)
        elif code == RET_K:
            return k
        else:
            raise ValueError(f"instruction {pc}: code {code:#x} is not modelled")


def assemble(prog: list[Insn]) -> bytes:
    """The program as an array of ``struct sock_filter``."""
    return b"".join(INSN.pack(*insn) for insn in prog)
