"""``hyperplane reach``: probe every declared pair with real packets (side effects).

For each function it takes one execution environment (warm, or cold-started like an
``invoke``) and holds it while probing; each host probes from its own namespace.  All
probes of all sources run in this one process (``services.reachprobe.probe_many``: one
event loop, non-blocking sockets opened inside each source's namespace, thousands at a
time; the functions' probes first, a few hundred at a time, since they all cross the one
dataplane), so the whole matrix takes about one probe timeout plus the time to open the
sockets.  ``reachability`` gives each pair the model's expectation; targets in another
VPC are probed through one stand-in per (source, VPC, expectation)
(``reachability.stand_ins``: the same route, or none, leads to all of them), and the
others of that VPC are probed one by one when the stand-in gets through.

A probe that could not be made for a reason of this machine says so (verdict
``machine``): a descriptor limit, no kernel memory, and the kernel's neighbour table
overflowing while the probes ran (its ``table_fulls`` counter, read from
``/proc/net/stat/arp_cache`` before and after: a TCP connection whose address could not
be resolved for that reason only times out).
"""

from __future__ import annotations

from pathlib import Path

from hyperplane.emulator.requests import acquire_env, release
from hyperplane.emulator.running import Running, require
from hyperplane.fabric.desired import host_netns
from hyperplane.fabric.egress import needs_internet
from hyperplane.policy import reachability
from hyperplane.services import reachprobe
from hyperplane.services.netns import Opener

PROBE_TIMEOUT = 1.5
ARP_STATS = "/proc/net/stat/arp_cache"
GC_THRESH3 = "/proc/sys/net/ipv4/neigh/default/gc_thresh3"
GOT_THROUGH = ("connected", "replied", "refused")
FUNCTION_WINDOW = 256  # probes from functions open at once (see ``Matrix.round``)


def _sources(running: Running, leases: list) -> list[tuple[reachability.Source, str]]:
    """Where each source probes from: a held environment per function, each host."""
    topology = running.active_topology()  # the functions as they run now
    found = []
    for function in topology.functions:
        env, lease, _cold = acquire_env(function)
        leases.append(lease)
        eni = next((e for e in running.enis if e.id == env.eni_id), None)
        found.append((reachability.function_source(topology, function.name, eni),
                      env.netns))
    for source in reachability.host_sources(topology):
        found.append((source, host_netns(topology, source.name)))
    return found


def neighbour_table_fulls() -> int:
    """How often the kernel's IPv4 neighbour table was full (all CPUs, all namespaces)."""
    try:
        lines = Path(ARP_STATS).read_text().split("\n")
    except OSError:
        return 0
    column = lines[0].split().index("table_fulls")
    return sum(int(line.split()[column], 16) for line in lines[1:] if line.strip())


def _gc_thresh3() -> str:
    try:
        return Path(GC_THRESH3).read_text().strip()
    except OSError:
        return "?"


class Matrix:
    """Every pair's expectation and probe; the probes still to make, round by round."""

    def __init__(self, running: Running, sources: list, targets: list) -> None:
        topology = running.active_topology()
        explainer = reachability.Explainer(topology, running.enis)
        self.cells: list[tuple] = []  # (source, ns, mine, expected, probes, stood)
        for source, ns in sources:
            mine = [t for t in targets if not (source.kind == "host" and t.name == source.name)]
            if not mine:
                continue
            expected = [explainer.explain(source, t) for t in mine]
            probed, stood = reachability.stand_ins(source, mine, expected)
            self.cells.append((source, ns, mine, expected, {i: None for i in probed}, stood))

    def round(self, wanted: list[tuple[int, int]], timeout: float, opener: Opener,
              window: int) -> None:
        """Probe ``wanted``: the functions' first, at most ``FUNCTION_WINDOW`` at a time
        (they all cross the one Hyperplane dataplane, whose receive ring a burst of
        thousands of handshakes would overflow), then the hosts' (``window``)."""
        for functions in (True, False):
            mine = [(k, i) for k, i in wanted if (self.cells[k][0].kind == "function") ==
                    functions]
            jobs = []
            for k, i in mine:
                _source, ns, targets, *_ = self.cells[k]
                jobs.append(reachprobe.Job(ns, targets[i].probe, targets[i].ip,
                                           targets[i].port))
            lane = min(window, FUNCTION_WINDOW) if functions else window
            for (k, i), result in zip(mine, reachprobe.probe_many(jobs, timeout, opener, lane),
                                      strict=True):
                self.cells[k][4][i] = result

    def first(self) -> list[tuple[int, int]]:
        return [(k, i) for k, cell in enumerate(self.cells) for i in cell[4]]

    def second(self) -> list[tuple[int, int]]:
        """The targets whose stand-in got through: probed one by one after all."""
        wanted = []
        for k, (_s, _ns, _mine, _exp, probes, stood) in enumerate(self.cells):
            for stand_in, others in stood.items():
                if probes[stand_in]["result"] in GOT_THROUGH:
                    wanted += [(k, i) for i in others]
        return wanted

    def rows(self, table_fulls: int) -> list[dict]:
        rows = []
        for source, _ns, mine, expected, probes, stood in self.cells:
            standing = {i: s for s, others in stood.items() for i in others if i not in probes}
            for i, target in enumerate(mine):
                probe = probes.get(i) or dict(probes[standing[i]],
                                              stand_in=mine[standing[i]].label)
                if table_fulls and probe["result"] == "timeout" and \
                        expected[i][0] == "allowed":
                    probe = dict(probe, result="machine", detail=(
                        f"the kernel's neighbour table was full while probing (table_fulls "
                        f"+{table_fulls}; net.ipv4.neigh.default.gc_thresh3 = "
                        f"{_gc_thresh3()})"))
                rows.append(_row(source, target, expected[i], probe))
        return rows


def _row(source: reachability.Source, target: reachability.Target, expected: tuple,
         probe: dict) -> dict:
    verdict, reason = reachability.verdict(probe["result"], expected, probe.get("detail"),
                                           target)
    row = {"source": source.name, "kind": source.kind, "vpc": source.vpc_id,
           "subnet": source.subnet_id, "address": source.address,
           "target": target.label, "target_ip": target.ip, "port": target.port,
           "verdict": verdict, "reason": reason, "probe": probe["result"]}
    if "stand_in" in probe:
        row["stand_in"] = probe["stand_in"]
    return row


def run(timeout: float = PROBE_TIMEOUT, window: int = reachprobe.WINDOW) -> dict:
    running = require()
    topology = running.active_topology()
    targets = reachability.targets(topology, needs_internet(topology))
    leases: list = []
    opener = Opener()
    try:
        matrix = Matrix(running, _sources(running, leases), targets)
        fulls = neighbour_table_fulls()
        first = matrix.first()
        matrix.round(first, timeout, opener, window)
        second = matrix.second()
        if second:
            matrix.round(second, timeout, opener, window)
        fulls = neighbour_table_fulls() - fulls
    finally:
        opener.close()
        for lease in leases:
            release(lease)
    rows = matrix.rows(fulls)
    return {"targets": [t.label for t in targets], "results": rows,
            "probes": len(first) + len(second)}
