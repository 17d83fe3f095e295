"""``hyperplane reach`` on the quickstart matches the committed matrix, with real packets."""

from __future__ import annotations

from pathlib import Path

from tests.integration import hp

# (source, target) -> verdict: every declared pair of examples/quickstart.yaml
QUICKSTART_MATRIX = {
    ("orders", "db:8080"): "allowed",
    ("billing", "db:8080"): "allowed",
}


def matrix(state_dir: Path) -> dict:
    result = hp.run_json("reach", state_dir=state_dir)
    return {(r["source"], r["target"]): r for r in result["results"]}


def test_quickstart_matrix(quickstart: dict, state_dir: Path) -> None:
    cells = matrix(state_dir)
    assert {pair: cell["verdict"] for pair, cell in cells.items()} == QUICKSTART_MATRIX
    assert {cell["probe"] for cell in cells.values()} == {"connected"}
    assert {cell["address"] for cell in cells.values()} <= {"10.0.1.4", "10.0.2.4"}
    text = hp.run("reach", state_dir=state_dir).stdout.splitlines()
    assert text[0].split() == ["SOURCE", "db:8080"]
    assert text[1].split() == ["orders", "allowed"] and text[2].split() == ["billing", "allowed"]


def test_a_revoked_rule_shows_as_denied_with_its_rule_set(quickstart: dict,
                                                          state_dir: Path) -> None:
    rule = ["--group", "sg-db", "--direction", "ingress", "--protocol", "tcp", "--ports",
            "8080", "--source-group", "sg-lambda"]
    hp.run("sg", "revoke", *rule, state_dir=state_dir)
    try:
        cells = matrix(state_dir)
    finally:
        hp.run("sg", "authorize", *rule, state_dir=state_dir)
    for pair in QUICKSTART_MATRIX:
        assert cells[pair]["verdict"] == "denied"
        assert cells[pair]["probe"] == "timeout"
        assert "ingress of sg-db (db) admits no tcp/8080" in cells[pair]["reason"]
    assert {pair: cell["verdict"] for pair, cell in matrix(state_dir).items()} == \
        QUICKSTART_MATRIX
