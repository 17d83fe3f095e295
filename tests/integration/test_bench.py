"""The benchmark harness on a tiny plan: every figure is produced, nothing is left behind.

No figure is compared with a threshold here (machines are noisy): the targets
are judged by `make bench`, not by tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hyperplane.bench import report, runner
from tests.integration import hp

TINY = runner.Plan(rounds=1, seconds=1, ping_count=20, concurrent=300, environments=10,
                   invoke_seconds=0.5, cold_starts=2)


def test_tiny_benchmark_measures_every_path_and_cleans_up(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYPERPLANE_STATE_DIR", str(tmp_path / "state"))
    results = report.evaluate(runner.run(TINY, log=lambda _m: None))
    walks = results["extra"]["fast_path"]  # the dataplane's own receive path (the default)
    assert walks == {"hyperplane": "sockets"}
    for key in ("tcp_1_stream", "tcp_4_streams", "udp_64b", "ping_p50", "connections_per_s"):
        paths = results["workloads"][key]["paths"]
        assert set(paths) == {"kernel-nat", "routing", *walks}
        assert all(p["median"] > 0 for p in paths.values())
        assert results["workloads"][key]["ratio"] > 0
    concurrent = results["extra"]["concurrent"]
    assert concurrent["hyperplane_sessions"] >= 300 and concurrent["kernel_entries"] >= 300
    envs = results["extra"]["environments"]
    assert envs["count"] == 10 and envs["enis"] == 2 and envs["invocations_per_second"] > 0
    assert len(results["extra"]["cold_start_ms"]["hyperplane"]["samples"]) == 2
    legacy = results["extra"]["cold_start_ms"]["legacy"]
    assert len(legacy["samples"]) == 2 and legacy["profile"] == "fast"
    files = report.write(results, tmp_path / "out")
    assert "(a)/(b)" in files["markdown"].read_text()
    assert all(row[0].endswith("[sockets]") for row in report.rows(results))
    assert files["svg"].read_text().startswith("<svg")
    assert concurrent["hyperplane_shm_growth"] > 0  # the sessions' pages are counted
    assert hp.our_namespaces() == [] and hp.our_processes() == []


def test_one_workload_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYPERPLANE_STATE_DIR", str(tmp_path / "state"))
    results = report.evaluate(runner.run(TINY, log=lambda _m: None,
                                         names=runner.chosen("concurrent")))
    assert set(results["workloads"]) == {"bytes_per_session"}
    assert results["plan"]["workloads"] == ["concurrent"]
    with pytest.raises(runner.UsageError):
        runner.chosen("concurrent,warp")
