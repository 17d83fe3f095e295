"""``hyperplane compare``: Hyperplane mode's ENIs do not grow with concurrency, legacy's do.

Real cold starts in both modes through the CLI, on the comparison's own topology;
the figures are checked for their shape (counts of ENIs and addresses, cold starts
that were cold), never against a time threshold.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration import hp


def test_compare_shows_shared_enis_against_one_eni_per_environment(tmp_path: Path) -> None:
    try:
        result = hp.run("compare", "--concurrency", "1,4", "--json", state_dir=tmp_path,
                        timeout=300)
    finally:
        hp.run("cleanup", state_dir=tmp_path, check=False)
    runs = {(r["mode"], r["concurrency"]): r for r in json.loads(result.stdout)["runs"]}
    assert set(runs) == {("hyperplane", 1), ("legacy", 1), ("hyperplane", 4), ("legacy", 4)}
    for (_mode, count), row in runs.items():
        assert row["cold"] == count  # a fresh function per run: every invocation was cold
        assert row["cold_start_ms"]["median"] > 0 and row["cold_start_ms"]["p99"] > 0
    # Hyperplane mode: one shared ENI, made when the function was created, whatever N
    assert [runs[("hyperplane", n)]["enis_used"] for n in (1, 4)] == [1, 1]
    assert [runs[("hyperplane", n)]["enis_created_by_cold_starts"] for n in (1, 4)] == [0, 0]
    assert [runs[("hyperplane", n)]["subnet_addresses_used"] for n in (1, 4)] == [1, 1]
    # legacy mode: an ENI and a subnet address per environment, made at cold start
    assert [runs[("legacy", n)]["enis_used"] for n in (1, 4)] == [1, 4]
    assert [runs[("legacy", n)]["enis_created_by_cold_starts"] for n in (1, 4)] == [1, 4]
    assert [runs[("legacy", n)]["subnet_addresses_used"] for n in (1, 4)] == [1, 4]
    assert hp.our_namespaces() == [] and hp.our_processes() == []


def test_compare_refuses_bad_sizes_with_exit_2(tmp_path: Path) -> None:
    result = hp.run("compare", "--concurrency", "0,x", state_dir=tmp_path, check=False)
    assert result.returncode == 2 and "--concurrency" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
