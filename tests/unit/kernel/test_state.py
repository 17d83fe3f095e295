"""The state database: one document in SQLite, written row by row as it changes."""

from __future__ import annotations

import copy
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from hyperplane.kernel import state


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("HYPERPLANE_STATE_DIR", str(tmp_path / "state"))
    yield tmp_path / "state"
    state.forget()  # closes this process's connection


def document() -> dict:
    return {
        "source": "t.yaml", "document": {"account": "111111111111"}, "seeded": True,
        "clock": {"offset": 12.5}, "namespaces": ["hp-e0"],
        "functions": [{"name": "billing", "seq": 2}, {"name": "orders", "seq": 1}],
        "enis": [{"id": "eni-b", "index": 1}, {"id": "eni-a", "index": 0}],
        "envs": [{"index": 10, "function": "orders"}, {"index": 2, "function": "billing"}],
    }


def rows(table: str) -> dict[str, str]:
    """A table as another process reads it."""
    db = sqlite3.connect(state.db_path())
    try:
        return dict(db.execute(f"SELECT id, value FROM {table}"))  # noqa: S608
    finally:
        db.close()


def tamper(table: str, row_id: str, value: str) -> None:
    db = sqlite3.connect(state.db_path(), isolation_level=None)
    try:
        db.execute(f"UPDATE {table} SET value = ? WHERE id = ?", (value, row_id))  # noqa: S608
    finally:
        db.close()


def test_the_state_directory_comes_from_the_environment(state_dir: Path) -> None:
    assert state.state_dir() == state_dir
    assert state.db_path() == state_dir / "state.db"
    assert state.env_socket(3) == str(state_dir / "envs" / "3.sock")


def test_load_without_a_database_is_none() -> None:
    assert not state.exists() and state.load() is None


def test_load_without_a_source_is_none() -> None:
    state.save({"document": {}, "functions": [{"name": "orders", "seq": 1}]})
    assert state.exists() and state.load() is None


def test_save_then_load_round_trips_in_record_order() -> None:
    doc = document()
    state.save(doc)
    loaded = state.load()
    assert loaded is not None
    assert {k: v for k, v in loaded.items() if k not in state.TABLES} == {
        k: v for k, v in doc.items() if k not in state.TABLES}
    assert [f["name"] for f in loaded["functions"]] == ["orders", "billing"]
    assert [e["id"] for e in loaded["enis"]] == ["eni-a", "eni-b"]
    assert [e["index"] for e in loaded["envs"]] == [2, 10]


def test_every_table_has_a_row_per_record_and_meta_a_row_per_key() -> None:
    state.save(document())
    assert set(rows("meta")) == {"source", "document", "seeded", "clock", "namespaces"}
    assert set(rows("functions")) == {"orders", "billing"}
    assert set(rows("enis")) == {"eni-a", "eni-b"}
    assert set(rows("envs")) == {"2", "10"}


def test_only_changed_rows_are_written() -> None:
    doc = document()
    state.save(doc)
    tamper("functions", "orders", '{"name": "orders", "seq": 1, "marker": true}')
    tamper("meta", "seeded", "false")
    doc["functions"][0]["memory"] = 256  # billing changes
    doc["clock"]["offset"] = 20.0
    state.save(doc)
    written = rows("functions")
    assert '"marker": true' in written["orders"]  # unchanged: not rewritten
    assert '"memory": 256' in written["billing"]
    assert rows("meta")["seeded"] == "false" and '"offset": 20.0' in rows("meta")["clock"]


def test_load_is_the_baseline_of_the_next_save() -> None:
    state.save(document())
    loaded = state.load()
    assert loaded is not None
    tamper("enis", "eni-a", '{"id": "eni-a", "index": 0, "marker": true}')
    state.save(loaded)  # nothing changed since the load
    assert '"marker": true' in rows("enis")["eni-a"]


def test_removing_a_record_or_a_key_deletes_its_row() -> None:
    doc = document()
    state.save(doc)
    doc["envs"] = [e for e in doc["envs"] if e["index"] != 10]
    doc["enis"] = []
    del doc["seeded"]
    state.save(doc)
    assert set(rows("envs")) == {"2"} and rows("enis") == {}
    assert "seeded" not in rows("meta")
    loaded = state.load()
    assert loaded is not None and loaded["envs"] == doc["envs"] and loaded["enis"] == []
    assert "seeded" not in loaded


def test_a_missing_table_in_the_document_empties_it() -> None:
    doc = document()
    state.save(doc)
    del doc["envs"]
    state.save(doc)
    assert rows("envs") == {}


def test_forget_removes_the_files_and_a_later_save_writes_everything() -> None:
    state.save(document())
    state.forget()
    leftovers = [s for s in ("", "-wal", "-shm") if os.path.exists(f"{state.db_path()}{s}")]
    assert leftovers == [] and not state.exists() and state.load() is None
    state.save(document())
    loaded = state.load()
    assert loaded is not None and len(loaded["functions"]) == 2 and loaded["seeded"] is True


def test_forget_without_a_database_is_harmless() -> None:
    state.forget()
    assert not state.exists()


def test_save_does_not_keep_a_reference_to_the_document() -> None:
    doc = document()
    state.save(doc)
    before = copy.deepcopy(doc)
    doc["functions"][1]["memory"] = 512  # changed in place after the save
    state.save(doc)
    loaded = state.load()
    assert loaded is not None and loaded["functions"][0] == {**before["functions"][1],
                                                             "memory": 512}


def test_ensure_dirs_makes_the_subdirectories(state_dir: Path) -> None:
    state.ensure_dirs()
    assert all((state_dir / sub).is_dir() for sub in ("envs", "logs", "ready"))


def test_a_save_after_the_database_was_removed_elsewhere_records_everything() -> None:
    doc = document()
    state.save(doc)
    for suffix in ("", "-wal", "-shm"):  # as another process's forget() does
        Path(f"{state.db_path()}{suffix}").unlink(missing_ok=True)
    doc["clock"]["offset"] = 30.0
    state.save(doc)
    loaded = state.load()
    assert loaded is not None and loaded["clock"] == {"offset": 30.0}
    assert len(loaded["functions"]) == 2 and len(loaded["envs"]) == 2


def test_a_change_of_type_alone_is_written() -> None:
    doc = document()
    doc["document"]["flags"] = [1, 1, 0.0]
    state.save(doc)
    doc["document"]["flags"] = [True, 1.0, -0.0]  # equal in Python, not in JSON
    state.save(doc)
    assert '"flags": [true, 1.0, -0.0]' in rows("meta")["document"]


def test_a_value_marshal_cannot_write_is_recorded_and_followed() -> None:
    class Memory(int):  # a subclass of a built-in type: its JSON is the number's
        pass
    doc = document()
    doc["functions"][0]["memory"] = Memory(128)
    state.save(doc)
    assert '"memory": 128' in rows("functions")["billing"]
    doc["functions"][0]["memory"] = Memory(256)
    state.save(doc)
    assert '"memory": 256' in rows("functions")["billing"]
