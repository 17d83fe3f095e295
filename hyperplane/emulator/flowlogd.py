"""The flow-log collector: VPC Flow Logs written from the real traffic (a process).

``python -m hyperplane.emulator.flowlogd --ready FILE``, started by ``up`` (in the root
namespace, supervised as ``flowlogs``).  Every ``POLL`` seconds, while some flow log is
defined (``kernel.flowfiles``), it:

1. reads the running topology and the emulated clock (the controller's offset, from the
   state), and the interfaces the flow logs cover (``emulator.flowlogs.interfaces``);
2. reads its sources, as ``model.flowwindow.Reading`` values:
   * the Lambda ENIs: the dataplane's shared-memory session table (``shm``: packets
     and bytes per direction, written back by the dataplane every second; the
     dataplane is not asked), and the flows its ENIs rejected, taken from it with
     ``{"op": "rejects"}`` (``dataplane.rejects``);
   * the hosts' interfaces: the nftables sets of ``hp_fl`` (accepted) and ``hp_sg``
     (dropped) in each host's namespace (``policy.flowsets``), read as JSON with one
     ``nft -j list ruleset ip`` per host; ``hp_fl`` is made when missing;
3. turns them into increments (``flowwindow.Counters``) and adds them to each flow
   log's open window (``flowwindow.Window``, aligned on the emulated clock);
4. writes every window that ended as one gzip file in the S3 layout (records, and a
   NODATA record for each covered interface without traffic), and the open windows to
   ``flow-logs/pending.json`` (with ``poll_seconds``, what the previous poll took).

A poll that takes longer than ``POLL`` (many hosts: one ``nft`` per host) is followed
by a sleep as long, so the collector takes at most half a CPU.

A source that cannot be read is skipped for that poll (its last readings kept), never
fatal.  A flow log that is deleted loses its open window.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from hyperplane.dataplane import shm
from hyperplane.emulator import flowlogs
from hyperplane.emulator.requests import dataplane_request
from hyperplane.emulator.running import Running, current
from hyperplane.errors import UnreachableError
from hyperplane.kernel import flowfiles, nftables, state
from hyperplane.model import flowlogs as fl
from hyperplane.model import flowwindow as fw
from hyperplane.policy import flowsets

POLL = 1.0
log = logging.getLogger("hyperplane.flowlogd")


class Collector:
    def __init__(self) -> None:
        self.counters = fw.Counters()
        self.windows: dict[str, fw.Window] = {}
        self.running = True
        self.topology_key = ""
        self.parsed: Running | None = None
        self.last_poll = 0.0  # seconds the previous poll took

    # -- sources ----------------------------------------------------------------------------
    def _eni_readings(self, enis: set[str]) -> tuple[list[fw.Reading], set[str]]:
        if not enis:
            return [], set()
        readings: list[fw.Reading] = []
        try:
            for row in (r for path in state.shm_tables("dataplane")
                        for r in shm.read_sessions(path)):
                if row.get("eni") in enis:
                    readings += fw.session_readings(row)
        except (OSError, ValueError):
            return [], enis
        return readings, set()

    def _rejects(self) -> list[fw.Reading]:
        try:
            rows = dataplane_request({"op": "rejects"}).get("rejects") or []
        except (UnreachableError, OSError, ValueError):
            return []
        return [r for row in rows for r in fw.reject_readings(row)]

    def _host_readings(self, hosts: dict[str, dict]) -> tuple[list[fw.Reading], set[str]]:
        readings: list[fw.Reading] = []
        unread: set[str] = set()
        for interface_id, info in hosts.items():
            try:
                found = nftables.listing(info["netns"])  # hp_fl's sets and hp_sg's
                if found is None:
                    raise RuntimeError(f"no namespace {info['netns']}")
                if flowsets.TABLE not in nftables.tables(found):
                    nftables.apply(info["netns"], flowsets.render_accounting())
            except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as exc:
                log.warning("host %s: %s", info.get("host"), exc)
                unread.add(interface_id)
                continue
            readings += flowsets.readings(found, interface_id)
        return readings, unread

    # -- one poll ---------------------------------------------------------------------------
    def _running(self) -> Running | None:
        data = state.load()
        if data is None:
            return None
        key = hashlib.sha256(json.dumps([data["document"], data["enis"]],
                                        sort_keys=True).encode()).hexdigest()
        if key != self.topology_key or self.parsed is None:
            self.parsed, self.topology_key = current(), key
        else:
            self.parsed.data = data
        return self.parsed

    def once(self) -> None:
        definitions = flowfiles.load()
        rejects = self._rejects()  # taken every poll: the log stays small
        running = self._running() if definitions else None
        if running is None:
            self.windows.clear()
            return
        now = time.time() + float((running.data.get("clock") or {}).get("offset", 0.0))
        found = flowlogs.interfaces(running)
        cover = {d["id"]: flowlogs.covered(d, found) for d in definitions}
        wanted = set().union(*cover.values())
        enis = {i for i in wanted if found[i]["kind"] == "lambda"}
        hosts = {i: found[i] for i in wanted if found[i]["kind"] == "host"}
        eni_rows, eni_unread = self._eni_readings(enis)
        host_rows, host_unread = self._host_readings(hosts)
        increments = self.counters.step(eni_rows + host_rows + rejects, wanted,
                                        frozenset(eni_unread | host_unread))
        for gone in set(self.windows) - set(cover):
            del self.windows[gone]
        pending = {}
        for d in definitions:
            window = self.windows.get(d["id"])
            if window is None:
                window = self.windows[d["id"]] = fw.Window(d["max_aggregation_interval"],
                                                           now)
            mine = {i: found[i] for i in cover[d["id"]]}
            for closed in window.close(now):
                self._write(d, closed, mine)
            window.add([r for r in increments if r.interface_id in mine
                        and d["traffic_type"] in ("ALL", r.action)], now)
            pending[d["id"]] = self._view(d, window, mine)
        flowfiles.write_pending({"now": now, "poll_seconds": round(self.last_poll, 4),
                                 "flow_logs": pending})

    def _write(self, d: dict, closed: fw.Closed, mine: dict[str, dict]) -> None:
        fields = fl.parse_format(d["log_format"])
        rows = fw.records(closed, mine, fields)
        if not rows:
            return
        text = "\n".join([fl.header(fields), *(fl.line(fields, r) for r in rows)]) + "\n"
        account = next(iter(mine.values()))["values"]["account-id"]
        key = fl.s3_key(account, fl.REGION, d["id"], closed.end, text.encode())
        flowfiles.write_log(flowfiles.destination_root(d.get("destination")), key, text)

    @staticmethod
    def _view(d: dict, window: fw.Window, mine: dict[str, dict]) -> dict:
        fields = fl.parse_format(d["log_format"])
        closed = fw.Closed(window.start, window.start + window.interval, window.flows)
        rows = [r for r in fw.records(closed, mine, fields) if r["log-status"] == "OK"]
        return {"window": [closed.start, closed.end], "fields": list(fields),
                "records": [fl.line(fields, r) for r in rows]}

    def run(self) -> None:
        while self.running:
            started = time.monotonic()
            try:
                self.once()
            except Exception:  # noqa: BLE001 - a bad poll is logged, the next one tries again
                log.exception("poll failed")
            self.last_poll = time.monotonic() - started
            time.sleep(max(POLL, self.last_poll))  # a slow poll (many hosts): half the CPU

    def stop(self, *_args: object) -> None:
        self.running = False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hyperplane.emulator.flowlogd")
    parser.add_argument("--ready", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s flowlogd %(message)s")
    collector = Collector()
    signal.signal(signal.SIGTERM, collector.stop)
    signal.signal(signal.SIGINT, collector.stop)
    Path(args.ready).parent.mkdir(parents=True, exist_ok=True)
    Path(args.ready).write_text(str(os.getpid()))
    print("flowlogd ready", file=sys.stderr, flush=True)
    collector.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
