"""The state directory: what a run made, so that later commands and cleanup find it.

``/run/hyperplane`` by default (``HYPERPLANE_STATE_DIR`` overrides it).  It
holds ``state.json`` (the topology as validated, ENIs, environments, the
namespaces and processes made), ``lock`` (taken with flock around every
change), the dataplane's control socket, per-environment lock files and
agent sockets, and the processes' logs.  Writes are atomic (write, rename).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def state_dir() -> Path:
    return Path(os.environ.get("HYPERPLANE_STATE_DIR", "/run/hyperplane"))


def path(*parts: str) -> Path:
    return state_dir().joinpath(*parts)


def ensure_dirs() -> None:
    for sub in ("", "envs", "logs", "ready"):
        path(sub).mkdir(parents=True, exist_ok=True)


@contextmanager
def locked() -> Iterator[None]:
    """Hold the state lock (exclusive) for the duration of the block."""
    ensure_dirs()
    with open(path("lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def load() -> dict | None:
    try:
        with open(path("state.json")) as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None


def save(data: dict) -> None:
    ensure_dirs()
    tmp = path("state.json.tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
    os.replace(tmp, path("state.json"))


def control_socket() -> str:
    return str(path("dataplane.sock"))


def zygote_socket() -> str:
    return str(path("zygote.sock"))


def env_lock(index: int) -> Path:
    return path("envs", f"{index}.lock")


def env_socket(index: int) -> str:
    return str(path("envs", f"{index}.sock"))


def log(name: str) -> Path:
    return path("logs", f"{name}.log")


def ready_file(name: str) -> Path:
    return path("ready", name)
