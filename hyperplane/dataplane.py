"""The Hyperplane process: receive frames, run the pipeline, send frames (I/O).

Runs inside the ``hp-plane`` namespace (started by ``procs`` through
``hyperplane up``).  One epoll loop serves every link's packet socket and a
Unix control socket.  On readiness a socket is drained in a bounded batch
(``BATCH`` frames) into one reusable buffer; each frame goes through
``pipeline.Pipeline.receive`` and out through the other link's socket.  With
no traffic the loop sleeps in epoll (a timer only while ARP is pending).

Control protocol: one JSON request line, one JSON reply line, per connection.

    {"op": "ping"}                      -> {"ok": true, "pid": ...}
    {"op": "config", "config": {...}}   -> the whole desired configuration, as a snapshot
    {"op": "stats"}                     -> global and per-ENI counters
    {"op": "conntrack", "eni": ID|null} -> sessions

The configuration is always a complete snapshot (ENIs, environments,
timeouts), never a delta: the dataplane reconciles its ports with it.  Each
environment entry names its primary ENI, ``"eni": ID|null``, and may carry
``"spill": [ID, ...]``: further ENIs of the same key (subnet and security
groups), in order of preference, which take the environment's new flows while
the primary is at its connection limit (AWS adds one past 65,000 connections).
Absent or empty: the primary only.  Unknown ids, the primary itself, repeats
and any spill of an environment without a primary are ignored; every snapshot
replaces the list, so an ENI gone from the snapshot leaves every list.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import sys
import time
import traceback

from hyperplane.conntrack import Timeouts
from hyperplane.pipeline import EniPort, EnvPort, Pipeline
from hyperplane.ports import PacketSocket
from hyperplane.secgroups import RuleSet

BATCH = 64
SPIN = 0.0002  # seconds of polling without sleep after traffic (adaptive, idle CPU stays 0)
BUFFER = 65536 + 256


class Dataplane:
    def __init__(self, control_path: str) -> None:
        self.pipeline = Pipeline()
        self.counters = self.pipeline.counters
        self.counters.update({"rx-error": 0, "internal-error": 0, "rx-socket-dropped": 0})
        self.sockets: dict[str, PacketSocket] = {}
        self.by_fd: dict[int, tuple] = {}
        self.epoll = select.epoll()
        self.running = True
        if os.path.exists(control_path):
            os.unlink(control_path)
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(control_path)
        self.server.listen(16)
        self.server.setblocking(False)
        self.epoll.register(self.server.fileno(), select.EPOLLIN)

    # -- ports ----------------------------------------------------------------
    def _open(self, port: EniPort | EnvPort) -> None:
        sock = self.sockets.get(port.ifname)
        if sock is None:
            sock = PacketSocket(port.ifname)
            self.sockets[port.ifname] = sock
            self.epoll.register(sock.fileno(), select.EPOLLIN)
        self.by_fd[sock.fileno()] = (port, sock.recv_into)
        port.tx = self._make_tx(sock)

    def _close(self, ifname: str) -> None:
        sock = self.sockets.pop(ifname, None)
        if sock is None:
            return
        fd = sock.fileno()
        self.by_fd.pop(fd, None)
        self.epoll.unregister(fd)
        sock.close()

    def _make_tx(self, sock: PacketSocket):
        send = sock.sock.send
        counters = self.counters

        def tx(frame) -> None:
            try:
                send(frame)
            except BlockingIOError:
                counters["tx-full"] += 1
            except OSError:
                counters["tx-error"] += 1
        return tx

    # -- configuration ------------------------------------------------------------
    def apply_config(self, config: dict) -> None:
        pl = self.pipeline
        pl.timeouts = Timeouts.from_dict(config.get("timeouts"))
        pl.max_sessions = int(config.get("max_sessions", pl.max_sessions))
        wanted_enis = {e["id"]: e for e in config.get("enis", [])}
        for eni_id in list(pl.enis):
            old = pl.enis[eni_id]
            new = wanted_enis.get(eni_id)
            if new is None or (new["ip"], new["ifname"]) != (old.ip, old.ifname):
                del pl.enis[eni_id]
                self._close(old.ifname)
        now = time.monotonic()
        for eni_id, e in wanted_enis.items():
            eni = pl.enis.get(eni_id)
            if eni is None:
                eni = EniPort(eni_id, e["ifname"], e["ip"], e["mac"], e["cidr"], e["gateway"],
                              int(e.get("connection_limit", 65000)),
                              tuple(e.get("port_range", (1024, 65535))),
                              int(e.get("mtu", 1500)))
                pl.enis[eni_id] = eni
                self._open(eni)
            eni.connection_limit = int(e.get("connection_limit", eni.connection_limit))
            # new flows follow the new rules; tracked ones keep going (stateful)
            eni.egress = None if e.get("egress") is None else RuleSet(e["egress"])
            eni.mtu = int(e.get("mtu", eni.mtu))
            pl.resolve(eni, eni.gateway_bytes, now)
        wanted_envs = {e["ifname"]: e for e in config.get("envs", [])}
        for ifname in list(pl.envs):
            if ifname not in wanted_envs:
                pl.envs.pop(ifname).tx = lambda _frame: None
                self._close(ifname)
        for ifname, e in wanted_envs.items():
            env = pl.envs.get(ifname)
            eni = pl.enis.get(e["eni"]) if e.get("eni") else None
            spill = () if eni is None else tuple(dict.fromkeys(
                pl.enis[i] for i in e.get("spill") or () if i in pl.enis and i != eni.id))
            if env is None or env.ip != e["ip"]:
                env = EnvPort(ifname, e["ip"], e["mac"], e["gateway_ip"], e["gateway_mac"], eni)
                pl.envs[ifname] = env
                self._open(env)
            env.eni = eni
            env.spill = spill

    # -- control ------------------------------------------------------------------
    def handle_control(self) -> None:
        try:
            conn, _ = self.server.accept()
        except BlockingIOError:
            return
        with conn:
            conn.settimeout(5)
            try:
                request = json.loads(_read_line(conn))
                reply = self.answer(request)
            except Exception as exc:  # a bad request never stops the dataplane
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            try:
                conn.sendall(json.dumps(reply).encode() + b"\n")
            except OSError:
                pass

    def answer(self, request: dict) -> dict:
        op = request.get("op")
        if op == "ping":
            return {"ok": True, "pid": os.getpid()}
        if op == "config":
            self.apply_config(request["config"])
            return {"ok": True}
        if op == "stats":
            return {"ok": True, "stats": self.stats()}
        if op == "conntrack":
            return {"ok": True, "sessions": self.conntrack(request.get("eni"))}
        return {"ok": False, "error": f"unknown op {op!r}"}

    def stats(self) -> dict:
        pl = self.pipeline
        dropped = sum(sock.dropped() for sock in self.sockets.values())
        # the kernel's own drops on our sockets (buffer full), before we saw the frames
        self.counters["rx-socket-dropped"] = self.counters.get("rx-socket-dropped", 0) + dropped
        enis = {}
        now = time.monotonic()
        for eni in pl.enis.values():
            if len(eni.table) >= eni.connection_limit:
                # at the limit by the count: free what expired, so that the count says
                # whether the ENI is really full (the controller adds an ENI when it is)
                for old in eni.table.reap(now, budget=len(eni.table.order)):
                    pl._release(eni, old)  # noqa: SLF001 - the pipeline's own bookkeeping
            enis[eni.id] = dict(eni.counters, sessions_active=len(eni.table),
                                sessions_created=eni.table.created,
                                arp_resolved=len(eni.arp))
        return {"global": dict(pl.counters, sessions_active=pl.session_count()), "enis": enis}

    def conntrack(self, eni_id: str | None) -> list[dict]:
        now = time.monotonic()
        rows = []
        for eni in self.pipeline.enis.values():
            if eni_id and eni.id != eni_id:
                continue
            for s in eni.table.live(now):
                rows.append(dict(s.describe(now), eni=eni.id))
        return rows

    # -- loop -----------------------------------------------------------------------
    def run(self) -> None:
        buf = bytearray(BUFFER)
        pl = self.pipeline
        receive = pl.receive
        server_fd = self.server.fileno()
        last_tick = 0.0
        spin_until = 0.0
        while self.running:
            # Adaptive polling: right after traffic, look again without sleeping for a
            # short while (a reply usually follows within tens of microseconds), so a
            # request/response pays one wake-up instead of two; idle, block in epoll.
            if time.monotonic() < spin_until:
                timeout = 0
            else:
                timeout = 0.05 if pl.has_timers() else 1.0
            try:
                events = self.epoll.poll(timeout)
            except InterruptedError:
                continue
            now = time.monotonic()
            if events:
                spin_until = now + SPIN
            for fd, _mask in events:
                if fd == server_fd:
                    self.handle_control()
                    continue
                entry = self.by_fd.get(fd)
                if entry is None:
                    continue
                port, recv_into = entry
                for _ in range(BATCH):
                    try:
                        n = recv_into(buf)
                    except BlockingIOError:
                        break
                    except OSError:
                        self.counters["rx-error"] += 1
                        break
                    try:
                        receive(port, buf, n, now)
                    except Exception:  # never let one frame stop the dataplane
                        self.counters["internal-error"] += 1
                        if self.counters["internal-error"] <= 3:
                            traceback.print_exc()
            if now - last_tick >= 0.05:
                last_tick = now
                pl.tick(now)

    def stop(self, *_args) -> None:
        self.running = False


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Hyperplane userspace dataplane")
    parser.add_argument("--control", required=True, help="Unix socket path for control")
    parser.add_argument("--config", help="JSON snapshot to apply at start")
    args = parser.parse_args(argv)
    dp = Dataplane(args.control)
    if args.config:
        with open(args.config) as fh:
            dp.apply_config(json.load(fh))
    signal.signal(signal.SIGTERM, dp.stop)
    signal.signal(signal.SIGINT, dp.stop)
    print(f"hyperplane dataplane pid {os.getpid()} ready", file=sys.stderr, flush=True)
    dp.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
