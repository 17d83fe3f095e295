"""Tests of the topology file as a file (pure, no root): the error string, a missing file,
document-level errors, and where a function's relative `code` resolves."""

import pytest

from hyperplane.errors import TopologyError
from hyperplane.model.document import load_topology
from hyperplane.model.fields import FILE_PATH
from hyperplane.model.parser import parse_topology
from tests.unit.model.test_parser import REPO, _repo_cwd, base_doc  # noqa: F401 (autouse fixture)

# -- file-level errors ---------------------------------------------------------------------


def test_error_string_format():
    err = TopologyError("bad.yaml", "vpcs[0].subnets[1].cidr", "oops")
    assert str(err) == "bad.yaml: vpcs[0].subnets[1].cidr: oops"
    assert (err.file, err.path, err.reason) == ("bad.yaml", "vpcs[0].subnets[1].cidr", "oops")


def test_missing_file(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(TopologyError) as info:
        load_topology(missing)
    assert (info.value.file, info.value.path, info.value.reason) == (
        missing, FILE_PATH, "file not found")


@pytest.mark.parametrize("text, reason", [
    ("account: '111111111111'\naccount: '222222222222'\n", "duplicate key 'account'"),
    ("", "empty"),
    ("- 1\n- 2\n", "expected a mapping, got a list"),
    ("account: [\n", "invalid YAML"),
])
def test_document_level_errors(tmp_path, text, reason):
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(TopologyError) as info:
        load_topology(str(path))
    assert info.value.path == FILE_PATH
    assert reason in info.value.reason


def test_code_falls_back_to_base_dir(tmp_path, monkeypatch):
    (tmp_path / "fns").mkdir()
    doc = {"account": "111111111111",
           "functions": [{"name": "f", "code": "fns", "handler": "m.h"}]}
    monkeypatch.chdir(REPO)
    assert parse_topology(doc, "t.yaml", str(tmp_path)).function("f").code == str(
        (tmp_path / "fns").resolve())
    with pytest.raises(TopologyError, match="does not exist"):
        parse_topology(doc, "t.yaml")


def test_code_prefers_cwd(tmp_path, monkeypatch):
    (tmp_path / "examples" / "functions").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    topo = parse_topology(base_doc(), "t.yaml", str(REPO))
    assert topo.function("orders").code == str((tmp_path / "examples" / "functions").resolve())


def test_load_topology_resolves_code_next_to_the_file(tmp_path, monkeypatch):
    (tmp_path / "fns").mkdir()
    (tmp_path / "t.yaml").write_text(
        "account: '111111111111'\nfunctions: [{name: f, code: fns, handler: m.h}]\n")
    monkeypatch.chdir(REPO)
    assert load_topology(str(tmp_path / "t.yaml")).function("f").code == str(
        (tmp_path / "fns").resolve())
