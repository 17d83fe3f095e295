"""VPC Flow Logs on disk: their definitions, their log files, the open windows (side
effects: the state directory).

* ``STATE_DIR/flowlogs.json``: the flow logs defined (a list of records in our
  snake_case: ``id``, ``resource_id``, ``resource_type``, ``traffic_type``,
  ``log_format``, ``max_aggregation_interval``, ``destination``, ``created``,
  ``origin``), changed under the flock of ``flowlogs.lock`` by ``up`` (the topology's),
  the CLI and the AWS endpoint (``update``), read by the collector every poll.
* the log files, gzip text as AWS's S3 destination writes them, under
  ``STATE_DIR/flow-logs/`` (or ``STATE_DIR/s3/<bucket>/<prefix>/`` for a flow log made
  with an S3 bucket's ARN): ``<root>/AWSLogs/<account>/vpcflowlogs/...`` (the key is
  ``model.flowlogs.s3_key``), each written to a temporary name and renamed;
* ``STATE_DIR/flow-logs/pending.json``: the collector's open windows (what ``flow-logs
  --pending`` shows), rewritten every poll.
"""

from __future__ import annotations

import fcntl
import gzip
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from hyperplane.kernel import state

LOGS = "flow-logs"


def definitions_path() -> Path:
    return state.path("flowlogs.json")


def logs_dir() -> Path:
    return state.path(LOGS)


def destination_root(destination: str | None) -> Path:
    """Where a flow log's files go: ``arn:aws:s3:::bucket[/prefix]`` -> ``s3/bucket/prefix``
    in the state directory; None -> ``flow-logs``."""
    if not destination:
        return logs_dir()
    path = destination.removeprefix("arn:aws:s3:::").strip("/")
    parts = [p for p in path.split("/") if p and p not in (".", "..")]
    return state.path("s3", *parts)


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def load() -> list[dict]:
    try:
        return json.loads(definitions_path().read_text())
    except FileNotFoundError:
        return []


@contextmanager
def _locked() -> Iterator[None]:
    state.ensure_dirs()
    with open(state.path("flowlogs.lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def update(change: Callable[[list[dict]], list[dict]]) -> list[dict]:
    """Apply ``change`` to the definitions, atomically and under the lock."""
    with _locked():
        rows = change(load())
        _write_atomic(definitions_path(), json.dumps(rows, indent=1).encode())
        return rows


def forget() -> None:
    """The definitions go with the run (``down``); the log files stay, as in S3."""
    definitions_path().unlink(missing_ok=True)
    pending_path().unlink(missing_ok=True)


def write_log(root: Path, key: str, text: str) -> Path:
    path = root / key
    _write_atomic(path, gzip.compress(text.encode(), mtime=0))
    return path


def log_files(roots: list[Path]) -> list[Path]:
    """Every log file under these roots, oldest window first (by name: the key's time)."""
    found = [p for root in roots for p in root.glob("AWSLogs/*/vpcflowlogs/*/*/*/*/*.log.gz")]
    return sorted(found, key=lambda p: (p.name.rsplit("_", 2)[-2], p.name))


def read_log(path: Path) -> list[str]:
    return gzip.decompress(path.read_bytes()).decode().splitlines()


def pending_path() -> Path:
    return logs_dir() / "pending.json"


def write_pending(view: dict) -> None:
    _write_atomic(pending_path(), json.dumps(view).encode())


def read_pending() -> dict:
    try:
        return json.loads(pending_path().read_text())
    except (FileNotFoundError, ValueError):
        return {}
