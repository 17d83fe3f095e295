"""Seeing the network: ``up``'s progress, ``graph`` and ``capture`` on real namespaces.

The first test brings up its own copy of the quickstart with the ``aws`` timing profile
(ENIs take 60-90 s on the emulated clock) and moves the clock while ``up`` waits; the
others share the quickstart (``quickstart``, one ``up`` for the module).  Captures run
``hyperplane capture`` in the background, wait for tcpdump's "listening on" line, make
traffic, and read the pcap back with scapy.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from xml.etree import ElementTree

import pytest
import yaml

from tests.integration import hp

pytestmark = pytest.mark.integration

DB = "10.0.1.10"
SVG_TEXT = "{http://www.w3.org/2000/svg}text"


class Lines:
    """A background process's stderr, read line by line by a thread."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self.thread.start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, count: int = 1, timeout: float = 30.0) -> bool:
        """Until ``text`` was in ``count`` lines (False at once if the process ends first)."""
        def seen() -> bool:
            return sum(text in line for line in self.lines) >= count
        hp.wait_for(lambda: seen() or self.proc.poll() is not None, timeout)
        self.thread.join(timeout=5 if self.proc.poll() is not None else 0)
        return seen()

    def text(self) -> str:
        return "\n".join(self.lines)


# -- up's progress (first: its own topology, before the module's quickstart is up) ------------
def test_up_shows_each_eni_it_waits_for(tmp_path: Path) -> None:
    doc = yaml.safe_load((hp.REPO / "examples" / "quickstart.yaml").read_text())
    doc["settings"] = {"timing": {"profile": "aws"}}
    topology = tmp_path / "quickstart-aws.yaml"
    topology.write_text(yaml.safe_dump(doc))
    state = tmp_path / "state"
    proc = hp.start_capture("up", str(topology), state_dir=state)
    try:
        err = Lines(proc)
        assert err.wait_for(" creating ", count=2, timeout=90), err.text()
        assert "up: waiting for orders, billing (Pending)" in err.text()
        assert proc.poll() is None  # still waiting: ENIs take 60-90 s on the emulated clock
        hp.run("clock", "advance", "90s", state_dir=state)
        proc.wait(timeout=60)  # not communicate(): the thread reads stderr to its end
        out = proc.stdout.read()
        err.thread.join(timeout=5)
        assert proc.returncode == 0, err.text()
        for eni in ("eni-b07b0294055dfe722", "eni-3934a7c976ff616dd"):
            states = [line.split()[4] for line in err.lines if f"up: {eni}" in line]
            assert states == ["creating", "in-use"], err.text()
        assert "function    orders           Active" in out and "\x1b" not in err.text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        hp.run("down", state_dir=state, check=False)
        hp.run("cleanup", state_dir=state, check=False)


# -- graph ---------------------------------------------------------------------------------------
def svg_texts(path: Path) -> set[str]:
    return {t.text for t in ElementTree.parse(path).getroot().iter(SVG_TEXT) if t.text}


def test_graph_svg_names_every_eni_and_function(state_dir: Path, quickstart: dict,
                                                tmp_path: Path) -> None:
    picture = tmp_path / "running.svg"
    done = hp.run("graph", "--format", "svg", "-o", str(picture), state_dir=state_dir)
    assert done.stdout.strip() == f"graph: {picture} (svg)"
    texts = svg_texts(picture)
    enis = hp.run_json("eni", "list", state_dir=state_dir)
    assert len(enis) == 2
    for eni in enis:
        assert {eni["id"], eni["ip"], ", ".join(eni["functions"])} <= texts
    for function in quickstart["functions"]:
        assert function["name"] in texts
    assert {"db", DB, "tcp/8080, icmp", "account 111111111111"} <= texts


def test_graph_of_the_file_predicts_the_enis_that_run(state_dir: Path, quickstart: dict) -> None:
    """The file's picture (ENIs planned, nothing asked of the controller) shows the ids and
    addresses the controller gave."""
    drawn = hp.run("graph", "examples/quickstart.yaml", state_dir=state_dir).stdout
    for eni in hp.run_json("eni", "list", state_dir=state_dir):
        assert f'label="{eni["id"]}\\n{eni["ip"]}\\n' in drawn
    mermaid = hp.run("graph", "--format", "mermaid", state_dir=state_dir).stdout
    assert mermaid.startswith("flowchart LR\n") and "fn_orders -->" in mermaid


# -- capture -------------------------------------------------------------------------------------
@contextmanager
def capturing(*args: str, state_dir: Path) -> Iterator[subprocess.Popen]:
    """``hyperplane capture ARGS`` running, tcpdump listening; it must end by itself."""
    proc = hp.start_capture("capture", *args, state_dir=state_dir)
    err = Lines(proc)
    try:
        assert err.wait_for("listening on", timeout=30), err.text()
        yield proc
        proc.wait(timeout=30)
        err.thread.join(timeout=5)
        assert proc.returncode == 0, err.text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def warm(state_dir: Path, quickstart: dict) -> dict:
    """orders invoked once: its one environment and the ENI it goes through."""
    reply = hp.run_json("invoke", "orders", state_dir=state_dir)
    eni = next(e for e in hp.run_json("eni", "list", state_dir=state_dir)
               if e["id"] == reply["eni"])
    return {"env": reply["environment"], "eni": eni["id"], "eni_ip": eni["ip"]}


def ip_packets(pcap: Path) -> list:
    from scapy.all import IP, rdpcap
    return [p[IP] for p in rdpcap(str(pcap)) if IP in p]


def test_capture_an_eni_shows_its_address_as_the_source(state_dir: Path, warm: dict,
                                                        tmp_path: Path) -> None:
    pcap = tmp_path / "eni.pcap"
    with capturing("--eni", warm["eni"], "-c", "6", "-w", str(pcap), "tcp", "port", "8080",
                   state_dir=state_dir):
        hp.run("invoke", "orders", state_dir=state_dir)
    packets = ip_packets(pcap)
    assert len(packets) == 6
    assert any(p.src == warm["eni_ip"] and p.dst == DB for p in packets)
    assert all({p.src, p.dst} == {warm["eni_ip"], DB} for p in packets)  # never 169.254.x


def test_capture_a_function_shows_its_environment_address(state_dir: Path, warm: dict,
                                                          tmp_path: Path) -> None:
    pcap = tmp_path / "function.pcap"
    with capturing("--function", "orders", "-c", "4", "-w", str(pcap), "tcp",
                   state_dir=state_dir):
        hp.run("invoke", "orders", state_dir=state_dir)
    packets = ip_packets(pcap)
    assert packets and all(p.src.startswith("169.254.") or p.dst.startswith("169.254.")
                           for p in packets)
    assert any(p.src.startswith("169.254.") and p.dst == DB for p in packets)


def test_capture_a_function_without_environment_starts_one(state_dir: Path, warm: dict,
                                                           tmp_path: Path) -> None:
    """billing has no environment yet: capture starts one, and billing's next invocation
    is warm in it."""
    pcap = tmp_path / "billing.pcap"
    with capturing("--function", "billing", "-c", "4", "-w", str(pcap), "tcp",
                   state_dir=state_dir):
        reply = hp.run_json("invoke", "billing", state_dir=state_dir)
    assert reply["cold"] is False
    assert any(p.src.startswith("169.254.") and p.dst == DB for p in ip_packets(pcap))


def test_capture_a_host_sees_the_eni_address(state_dir: Path, warm: dict,
                                             tmp_path: Path) -> None:
    pcap = tmp_path / "db.pcap"
    with capturing("--host", "db", "-c", "4", "-w", str(pcap), "tcp", "port", "8080",
                   state_dir=state_dir):
        hp.run("invoke", "orders", state_dir=state_dir)
    packets = ip_packets(pcap)
    assert any(p.src == warm["eni_ip"] and p.dst == DB for p in packets)
    assert all(p.src in (warm["eni_ip"], DB) for p in packets)


def test_capture_prints_packets_and_stops_after_its_duration(state_dir: Path, warm: dict,
                                                            tmp_path: Path) -> None:
    """Without -w tcpdump prints; --duration stops it like Ctrl-C (exit 0)."""
    proc = hp.start_capture("capture", "--env", warm["env"], "--duration", "3", "icmp",
                            state_dir=state_dir)
    err = Lines(proc)
    try:
        assert err.wait_for("listening on", timeout=30), err.text()
        hp.run("exec", "--function", "orders", "--", "ping", "-c", "1", "-W", "2", DB,
               state_dir=state_dir)
        proc.wait(timeout=30)
        out = proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert f"> {DB}: ICMP echo request" in out and f"IP {DB} > " in out
    assert f"capture: {warm['env']} of orders (169.254." in err.text()


@pytest.mark.parametrize("args", [("--eni", "eni-00000000000000000"), ("--host", "nope"),
                                  ("--function", "nope"), ("--env", "env-999"), ()])
def test_unknown_names_exit_2_with_one_line(state_dir: Path, quickstart: dict,
                                            args: tuple[str, ...]) -> None:
    done = hp.run("capture", *args, "-c", "1", state_dir=state_dir, check=False)
    assert done.returncode == 2
    assert done.stderr.startswith("hyperplane: ") and done.stderr.count("\n") == 1
