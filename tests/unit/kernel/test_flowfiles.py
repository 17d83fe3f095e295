"""Flow logs on disk: definitions under a lock, gzip files in the S3 layout, read back."""

from __future__ import annotations

from pathlib import Path

import pytest

from hyperplane.kernel import flowfiles
from hyperplane.model import flowlogs as fl


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HYPERPLANE_STATE_DIR", str(tmp_path))
    return tmp_path


def test_definitions_are_changed_whole_and_read_back(state: Path) -> None:
    assert flowfiles.load() == []
    flowfiles.update(lambda rows: [*rows, {"id": "fl-1"}])
    flowfiles.update(lambda rows: [*rows, {"id": "fl-2"}])
    assert [r["id"] for r in flowfiles.load()] == ["fl-1", "fl-2"]
    flowfiles.update(lambda rows: [r for r in rows if r["id"] != "fl-1"])
    assert flowfiles.load() == [{"id": "fl-2"}]


def test_an_s3_destination_is_a_directory_of_the_state(state: Path) -> None:
    assert flowfiles.destination_root(None) == state / "flow-logs"
    assert flowfiles.destination_root("arn:aws:s3:::audit/lambda/") == state / "s3/audit/lambda"
    assert flowfiles.destination_root("arn:aws:s3:::b/../../etc") == state / "s3/b/etc"


def test_files_are_listed_by_window_and_read_back(state: Path) -> None:
    root = flowfiles.logs_dir()
    for when, text in ((1_700_000_600, "version\n2 later\n"),
                       (1_700_000_000, "version\n2 first\n")):
        flowfiles.write_log(root, fl.s3_key("111111111111", "us-east-1", "fl-0", when,
                                            text.encode()), text)
    files = flowfiles.log_files([root])
    assert [flowfiles.read_log(p)[1] for p in files] == ["2 first", "2 later"]
    assert not list(root.rglob("*.tmp"))
