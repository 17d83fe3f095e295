#!/usr/bin/env python3
"""Micro-benchmark of the session table: bytes per session, attach and read times.

Opens ``--sessions`` TCP connections (SYN out, SYN-ACK back, ACK out: established)
from ``--envs`` environments through one ENI of a ``Pipeline`` and reports the memory
they cost, counted honestly: the growth of the process's private resident memory
(``RssAnon``) plus the growth of its resident shared memory (``RssShmem``: the table
file's pages it touched, and any anonymous shared mapping), divided by the sessions
held.  The table file's allocated size (``st_blocks``) is shown beside it: it is part
of ``RssShmem`` already (do not add both).  With the session store (this tree), the
table is a file in ``--dir`` (default /dev/shm, removed afterwards); the script then
drops the mapping without a clean close (as a ``kill -9`` would leave it), times
``shm.attach_table`` on it (verify, repair, rebuild) and ``shm.read_sessions``.  On an
older tree (no ``hyperplane.dataplane.shm``) only the memory figure is printed.

    python scripts/session_bench.py [--sessions 65000] [--envs 4] [--cache N] [--dir /dev/shm]
        [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline_bench import DB, DB_MAC, ENI_IP, ENI_MAC, GW_IP, GW_MAC, ROUTER, tcp_frame  # noqa: E402

from hyperplane.dataplane import packet as p  # noqa: E402
from hyperplane.dataplane.pipeline import EniPort, EnvPort, Pipeline  # noqa: E402

try:
    from hyperplane.dataplane import shm
    from hyperplane.dataplane.store import CACHE
except ImportError:  # the tree before the session store
    shm = None  # type: ignore[assignment]
    CACHE = 0
try:
    from hyperplane.dataplane.fastpath import attach_scan
except ImportError:  # the tree before the compiled attach
    attach_scan = None  # type: ignore[assignment]


def status() -> dict[str, int]:
    """The process's resident memory by kind, in bytes (/proc/self/status)."""
    found = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                found[name] = int(rest.split()[0]) * 1024
    return found


def build(sessions: int, envs: int, table: str | None, cache: int):
    store = None
    if table is not None and shm is not None:
        store = shm.create_table(table, sessions + 1024, Pipeline.new_ports, cache)
    pl = Pipeline(store=store) if store is not None else Pipeline()
    eni = EniPort("eni-1", "hpi0", ENI_IP, ENI_MAC, "10.0.1.0/24", ROUTER, sessions)
    eni.arp[p.ip_to_bytes(DB)] = p.mac_to_bytes(DB_MAC)
    pl.enis[eni.id] = eni
    out: list = []
    eni.tx = out.append
    ports = []
    for i in range(envs):
        env = EnvPort(f"hpe{i}", f"169.254.128.{i + 1}", f"02:e0:00:00:00:{i:02x}", GW_IP,
                      GW_MAC, eni)
        env.tx = out.append
        pl.envs[env.ifname] = env
        ports.append(env)
    return pl, eni, ports, out


def open_sessions(pl: Pipeline, eni: EniPort, envs: list[EnvPort], sessions: int,
                  out: list) -> None:
    for i in range(sessions):  # two sessions per inside endpoint (to ports 8080, 8081):
        endpoint = i // 2        # 65,000 endpoints would not fit in 64,512 ENI ports
        env = envs[endpoint % len(envs)]
        sport, dport = 1024 + (endpoint // len(envs)) % 64000, 8080 + i % 2
        mac = p.mac_to_str(env.mac_bytes)
        syn = bytearray(tcp_frame(mac, GW_MAC, env.ip, DB, sport, dport, "S", 1))
        pl.receive(env, syn, len(syn), 1.0)
        eni_port = int.from_bytes(out[-1][p.IP + 20:p.IP + 22], "big")
        back = bytearray(tcp_frame(DB_MAC, ENI_MAC, DB, eni.ip, dport, eni_port, "SA", 9, 2))
        pl.receive(eni, back, len(back), 1.0)
        ack = bytearray(tcp_frame(mac, GW_MAC, env.ip, DB, sport, dport, "A", 2, 10))
        pl.receive(env, ack, len(ack), 1.0)
        out.clear()  # the frames sent are not the table's memory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=65000)
    parser.add_argument("--envs", type=int, default=4)
    parser.add_argument("--cache", type=int, default=CACHE)
    parser.add_argument("--dir", default="/dev/shm")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    table = str(Path(args.dir) / f"hp-bench-{os.getpid()}.sessions") if shm else None
    try:
        return run(args, table)
    finally:
        if table is not None and os.path.exists(table):
            os.unlink(table)


def run(args: argparse.Namespace, table: str | None) -> int:
    pl, eni, envs, out = build(args.sessions, args.envs, table, args.cache)
    gc.collect()
    before = status()
    t0 = time.perf_counter()
    open_sessions(pl, eni, envs, args.sessions, out)
    opened = time.perf_counter() - t0
    gc.collect()
    after = status()
    held = pl.session_count()
    grew = {k: after[k] - before[k] for k in after}
    total = grew["RssAnon"] + grew["RssShmem"]
    print(f"{held} sessions held ({opened:.1f} s to open, "
          f"{opened / max(held, 1) * 1e6:.0f} us per connection)")
    print(f"  RssAnon +{grew['RssAnon'] / 1e6:.1f} MB, RssShmem +{grew['RssShmem'] / 1e6:.1f} MB"
          f", VmRSS +{grew['VmRSS'] / 1e6:.1f} MB")
    if table is not None:
        blocks = os.stat(table).st_blocks * 512
        print(f"  table file: {blocks / 1e6:.1f} MB allocated ({blocks / held:.0f} B/session;"
              " counted in RssShmem)")
    print(f"memory per session: {total / held:.0f} B (RssAnon + RssShmem growth / sessions)")
    if table is None or shm is None:
        return 0
    store = pl.store
    print(f"  derived: index {store.index.nbytes() / 1e6:.1f} MB, cache "
          f"{len(store.cached)} sessions")
    store.flush()
    release = store.release
    assert release is not None
    release()  # as a kill -9 leaves it: mapped file still dirty, nothing else closed
    scans = {"pure Python": None}
    compiled = attach_scan("compiled") if attach_scan else None
    if compiled is not None:
        scans["compiled"] = compiled
    times: dict[str, list[float]] = {name: [] for name in scans}
    for round_ in range(args.repeat):  # attach, then crash again: the best of --repeat
        for name, scan in scans.items():  # the two passes alternated
            t0 = time.perf_counter()
            again = shm.attach_table(table, Pipeline.new_ports, args.cache, scan=scan)
            times[name].append(time.perf_counter() - t0)
            if round_ + 1 < args.repeat or name != list(scans)[-1]:
                assert again.release is not None
                again.release()
    first = list(scans)[0]
    print(f"attach ({first}): {times[first][0] * 1e3:.0f} ms for {again.count} sessions the "
          "first time (it also forgets every TCP record's ACK fields)")
    for name, took in times.items():
        print(f"attach ({name}): {min(took) * 1e3:.0f} ms best of {args.repeat}")
    print(f"  repaired {again.repaired}, dropped {again.dropped}, generation "
          f"{again.generation}")
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        rows = shm.read_sessions(table, now=2.0)
        times.append(time.perf_counter() - t0)
    print(f"read_sessions: {min(times) * 1e3:.0f} ms for {len(rows)} rows "
          f"(best of {args.repeat})")
    again.close()
    return 0 if again.count == held and len(rows) == held else 1


if __name__ == "__main__":
    sys.exit(main())
