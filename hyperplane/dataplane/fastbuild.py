"""Build the compiled fast path: ``python -m hyperplane.dataplane.fastbuild`` (side effects).

Compiles ``fastpath.c`` with cffi (API mode) into the extension module ``_hp_fastpath``
and installs it into the running interpreter's site-packages (the venv's), so that
``fastpath.load`` finds it; the generated C and the objects stay in ``build/fastpath``
of the working directory (git ignores ``build/``).  Nothing is committed but the C
source.  Without cffi or a C compiler it says so and exits 1 (``make install`` then
goes on: the pure-Python pipeline is the reference and the fallback).
"""

from __future__ import annotations

import shutil
import sys
import sysconfig
from pathlib import Path

MODULE = "_hp_fastpath"
SOURCE = Path(__file__).with_name("fastpath.c")

CDEF = """
struct hp_flow {
    uint32_t ifindex, ports;
    uint8_t proto, dir, in_use, dirty;
    uint8_t addrs[8], eth[12], new_addr[4], new_port[2];
    uint16_t d_ip, d_full, d_part, mtu, seq;
    int32_t fd;
    uint32_t rec_off, ack, next_dirty;
    int32_t pair;
    uint16_t win;
    uint8_t acked;
    double expires, timeout;
    uint64_t pkts, bytes;
};
struct hp_ctx {
    struct hp_flow *flows;
    uint32_t *index;
    uint32_t nflows, mask;
    uint32_t dirty_head;
    uint8_t *table;
    uint8_t *ring;
    uint32_t frames, frame_size, head, pending;
    int sock;
    uint32_t p_off, p_len, p_ifindex, p_status, p_copied, p_fast;
    int32_t p_flow;
    uint64_t tx_full, tx_error, rx_error, rx_truncated;
};
int hp_lookup(struct hp_ctx *c, uint32_t ifindex, uint8_t proto, const uint8_t *addrs,
              uint32_t ports);
int hp_insert(struct hp_ctx *c, uint32_t n);
void hp_remove(struct hp_ctx *c, uint32_t n);
int hp_run(struct hp_ctx *c, int budget, double now, uint8_t *buf, uint32_t buf_len,
           int *done);
int hp_harvest(struct hp_ctx *c, uint32_t *out, int max);
uint64_t hp_key_hash(uint32_t slot, uint32_t proto, const uint8_t *addrs, uint32_t ports);
int64_t hp_attach_scan(uint8_t *body, uint32_t hwm, const uint8_t *bound, uint32_t nbound,
                       const uint8_t *protocols, const uint8_t *stale, uint32_t inbound,
                       uint32_t tcp, int64_t *slots, uint64_t mask, uint8_t *used,
                       uint32_t *torn, uint32_t *ntorn, uint32_t *dropped);
void hp_attach_claim(const uint8_t *body, const uint8_t *used, uint32_t hwm,
                     const int32_t *alloc_of, const uint8_t *proto_index, uint32_t icmp,
                     uint64_t **owners, uint32_t **refs, uint32_t *records, uint32_t *owned,
                     uint32_t *rejected, uint32_t *nrejected, uint64_t *moved,
                     uint32_t *moved_alloc, uint32_t *nmoved, uint64_t *seen,
                     uint64_t seen_mask);
"""


def build(workdir: Path, dest: Path) -> Path:
    """Compile into ``workdir`` and copy the module into ``dest``; its path."""
    import cffi  # only here: a machine without it runs the pure-Python pipeline

    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    ffi.set_source(MODULE, SOURCE.read_text(), extra_compile_args=["-O2", "-std=gnu11"])
    workdir.mkdir(parents=True, exist_ok=True)
    built = Path(ffi.compile(tmpdir=str(workdir)))
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / built.name
    shutil.copyfile(built, target.with_suffix(".tmp"))
    target.with_suffix(".tmp").replace(target)  # a running dataplane keeps its old mapping
    return target


def main() -> int:
    try:
        target = build(Path("build") / "fastpath", Path(sysconfig.get_paths()["platlib"]))
    except Exception as exc:  # no cffi, no compiler, no Python headers: say which
        print(f"compiled fast path not built ({type(exc).__name__}: {exc}); the pure-Python "
              "pipeline will run", file=sys.stderr)
        return 1
    print(f"compiled fast path: {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
