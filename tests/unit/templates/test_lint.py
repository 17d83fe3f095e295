"""cfn-lint through its Python API: errors as TopologyError, warnings as lines.

The rules that only matter for a real deployment are skipped; the test beside
them shows that they would fire on the same template otherwise.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hyperplane.model.fields import FILE_PATH
from hyperplane.templates import lint as lint_module
from hyperplane.templates.lint import lint

DATA = Path(__file__).parent / "data"


def test_a_misspelled_property_is_an_error_naming_its_place() -> None:
    path = str(DATA / "lint_error.yaml")
    errors, warnings = lint(path)
    assert warnings == []
    by_path = {e.path: e for e in errors}
    misspelled = by_path["Resources.Vpc.Properties.CidrBlok"]
    assert misspelled.file == path
    assert misspelled.reason.startswith("E3002 Additional properties are not allowed")
    assert "Did you mean 'CidrBlock'?" in misspelled.reason
    assert misspelled.reason.endswith("(line 7)")
    assert "E3014" in by_path["Resources.Vpc.Properties"].reason   # CidrBlock now missing


def test_a_warning_is_a_line() -> None:
    path = str(DATA / "lint_warning.yaml")
    errors, warnings = lint(path)
    assert errors == []
    assert warnings == [f"{path}:4: W2001 Parameters.Environment: Parameter Environment "
                        "not used."]


def test_rules_for_real_deployments_are_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(DATA / "lint_skipped.yaml")
    assert lint(path) == ([], [])
    monkeypatch.setattr(lint_module, "SKIPPED", ())
    errors, warnings = lint(path)
    assert {e.reason.split()[0] for e in errors} == {"E2531"}       # python3.7
    assert {w.split()[1] for w in warnings} == {"W3010", "W1011"}


@pytest.mark.parametrize("name", ["vpc.yaml", "vpc.json", "rds_lambda.yaml", "sam_app.yaml"])
def test_the_example_templates_are_clean(name: str) -> None:
    assert lint(str(DATA / name)) == ([], [])


def test_a_file_cfn_lint_cannot_decode(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("Resources:\n  Vpc: {Type: [\n")
    errors, _ = lint(str(path))
    assert errors and errors[0].reason.startswith("E0000")


def test_the_bounds_apply_before_cfn_lint_reads(tmp_path: Path) -> None:
    lines = ["Resources: {R: {Type: AWS::SNS::Topic}}", 'x0: &a0 ["a", "a", "a", "a"]']
    lines += [f"x{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 12)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    errors, warnings = lint(str(path))
    assert [(e.path, "aliases are expanded" in e.reason) for e in errors] == [(FILE_PATH, True)]
    assert warnings == []
