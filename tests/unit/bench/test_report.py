"""The benchmark report: ratios, target verdicts and the writers (pure)."""

from __future__ import annotations

from pathlib import Path

from hyperplane.bench import report


def summary(value: float) -> dict:
    return {"median": value, "min": value * 0.9, "max": value * 1.1, "samples": [value] * 3}


def results() -> dict:
    def w(unit, a, b, c, higher=True):
        return {"unit": unit, "higher_is_better": higher,
                "paths": {"hyperplane": summary(a), "kernel-nat": summary(b),
                          "routing": summary(c)}}
    return {
        "workloads": {"tcp_1_stream": w("Gbit/s", 8, 10, 11),
                      "udp_64b": w("packets/s", 40_000, 100_000, 120_000),
                      "ping_p50": w("us", 120, 30, 25, higher=False)},
        "extra": {"environments": {"count": 1000, "seconds": 10, "per_second": 100,
                                   "memory_per_env_bytes": 2**21,
                                   "invocations_per_second": 5000, "enis": 2}},
        "machine": {"cpu": "x", "cores": 2, "memory_gb": 24, "kernel": "6", "python": "3.11"},
        "plan": {}, "seconds": 1.0}


def test_ratios_and_targets() -> None:
    r = report.evaluate(results())
    tcp = r["workloads"]["tcp_1_stream"]
    assert tcp["ratio"] == 0.8 and tcp["target"]["met"]
    assert r["workloads"]["udp_64b"]["target"]["met"] is False  # 0.4x < 0.5x
    assert r["workloads"]["ping_p50"]["target"]["met"]  # 120 us <= 150 us
    assert r["extra"]["environments"]["target"]["met"]


def test_writers(tmp_path: Path) -> None:
    r = report.evaluate(results())
    files = report.write(r, tmp_path)
    text = report.table_text(r)
    assert "0.8x" in text and "NOT met" in text
    assert files["svg"].read_text().count("<rect") == 3
    assert "| workload |" in files["markdown"].read_text()


def test_both_walks_have_a_row_each_named_by_its_walk(tmp_path: Path) -> None:
    r = results()
    for w in r["workloads"].values():
        w["paths"]["hyperplane-python"] = summary(w["paths"]["hyperplane"]["median"] / 2)
    r["extra"]["fast_path"] = {"hyperplane": "compiled", "hyperplane-python": "python"}
    r = report.evaluate(r)
    tcp = r["workloads"]["tcp_1_stream"]
    assert tcp["ratio"] == 0.8 and tcp["ratio_python"] == 0.4
    assert tcp["target"]["met"] and not tcp["target_python"]["met"]
    table = report.rows(r)
    assert [row[0] for row in table[:2]] == ["TCP bulk, 1 stream [compiled]",
                                             "TCP bulk, 1 stream [python]"]
    assert len(table) == 6 and all(row[0].endswith(("[compiled]", "[python]")) for row in table)
    files = report.write(r, tmp_path)
    assert files["svg"].read_text().count("<rect") == 6
    assert "[python]" in files["markdown"].read_text()


def test_a_run_of_one_walk_names_it() -> None:
    r = results()
    r["extra"]["fast_path"] = {"hyperplane": "python"}
    assert all(row[0].endswith("[python]") for row in report.rows(report.evaluate(r)))
