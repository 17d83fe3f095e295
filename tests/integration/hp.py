"""Helpers for integration tests: run the real CLI, inspect what exists on the machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from pyroute2 import netns

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "hyperplane.cli.main"]


def run(*args: str, state_dir: Path, check: bool = True, timeout: float = 120,
        user: int | None = None) -> subprocess.CompletedProcess:
    """``hyperplane ARGS`` with its own state directory, from the repository root."""
    env = dict(os.environ, HYPERPLANE_STATE_DIR=str(state_dir))
    prefix = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] if user else []
    result = subprocess.run(prefix + CLI + list(args), cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"hyperplane {' '.join(args)} exited {result.returncode}\n"
                             f"stdout: {result.stdout}\nstderr: {result.stderr}")
    return result


def start(*args: str, state_dir: Path) -> subprocess.Popen:
    """``hyperplane ARGS`` in the background (for captures and servers)."""
    env = dict(os.environ, HYPERPLANE_STATE_DIR=str(state_dir))
    return subprocess.Popen(CLI + list(args), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def start_capture(*args: str, state_dir: Path) -> subprocess.Popen:
    """``hyperplane ARGS`` in the background, its stdout and stderr kept as text."""
    env = dict(os.environ, HYPERPLANE_STATE_DIR=str(state_dir))
    return subprocess.Popen(CLI + list(args), cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def run_json(*args: str, state_dir: Path):
    return json.loads(run(*args, "--json", state_dir=state_dir).stdout)


def recorded(state_dir: Path) -> dict:
    """What the run recorded in its state database (``state.db``), as one document."""
    from hyperplane.kernel import state
    saved = os.environ.get("HYPERPLANE_STATE_DIR")
    os.environ["HYPERPLANE_STATE_DIR"] = str(state_dir)
    try:
        return state.load() or {}
    finally:
        if saved is None:
            del os.environ["HYPERPLANE_STATE_DIR"]
        else:
            os.environ["HYPERPLANE_STATE_DIR"] = saved


def our_namespaces() -> list[str]:
    return sorted(n for n in netns.listnetns() if n.startswith("hp-"))


def our_processes() -> list[int]:
    """Processes running the project's modules (dataplane, controller, services, agents)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(part in (b"hyperplane.dataplane", b"hyperplane.services.hub", b"lambda_vm.agent",
                        b"lambda_vm.zygote", b"hyperplane.services.servers",
                        b"hyperplane.controller.daemon", b"hyperplane.endpoint",
                        b"hyperplane.emulator.flowlogd")
               for part in cmd):
            found.append(int(entry))
    return found


def wait_for(predicate, timeout: float = 10.0) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass (never a bare sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False
