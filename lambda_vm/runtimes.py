"""Which runtime an environment runs, and the runtime processes (side effects: processes).

    python    ``module.function`` handlers: the built-in runtime (``bootstrap``), in the
              agent's own process: no second interpreter, no thread, no HTTP hop
    nodejs    ``file.export`` handlers (``nodejs18.x``, ``20.x``, ``22.x``): our own runtime,
              ``nodejs/runtime.js``, run as ``node runtime.js`` in the code directory with
              ``NODE_PATH`` as AWS sets it (the code's and ``/opt/nodejs``'s
              ``node_modules``); without Node.js (Debian package ``nodejs``) every
              invocation fails with ``Runtime.Unsupported``
    custom    an executable ``bootstrap`` in the code directory, run as its own process
              (a custom runtime, e.g. one that runs ``python -m awslambdaric handler.fn``);
              it wins over either built-in runtime, as the topology file and the CLI allow

A runtime process and the extensions are started by ``start``: in a process group of
their own (so a shutdown reaches their children), and killed by the kernel if the
agent dies first (``PR_SET_PDEATHSIG``), so nothing outlives its environment.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess

NODE_RUNTIME = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nodejs", "runtime.js")
PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)


def node_binary() -> str | None:
    return shutil.which("node") or shutil.which("nodejs")


def has_bootstrap(code: str) -> bool:
    return os.access(os.path.join(code, "bootstrap"), os.X_OK)


def unsupported(runtime: str, code: str) -> dict | None:
    """The init error of a runtime this environment cannot run, or None."""
    if runtime.startswith("provided") and not has_bootstrap(code):
        return {"errorType": "Runtime.InvalidEntrypoint", "errorMessage": "Couldn't find "
                "valid bootstrap(s): [/var/task/bootstrap /opt/bootstrap]"}
    if runtime.startswith("nodejs") and not has_bootstrap(code) and node_binary() is None:
        return {"errorType": "Runtime.Unsupported", "errorMessage": f"The runtime {runtime} "
                "needs Node.js (Debian package nodejs), which is not installed"}
    if not runtime.startswith(("python", "nodejs", "provided")):
        return {"errorType": "Runtime.Unsupported", "errorMessage": f"The runtime {runtime} "
                "is not one this emulator runs (python3.x with its built-in runtime, "
                "nodejs18.x/20.x/22.x with its built-in runtime, provided.* with the code's "
                "bootstrap)"}
    return None


def node_environment(code: str, runtime: str, base: dict[str, str] | None = None
                     ) -> dict[str, str]:
    """The environment of the Node.js runtime: AWS's ``NODE_PATH`` (a function's own
    ``NODE_PATH`` comes first)."""
    env = dict(os.environ if base is None else base)
    major = runtime.removeprefix("nodejs").split(".")[0]
    paths = [f"/opt/nodejs/node{major}/node_modules", "/opt/nodejs/node_modules",
             os.path.join(code, "node_modules"), code]
    own = env.get("NODE_PATH")
    return {**env, "NODE_PATH": ":".join(([own] if own else []) + paths)}


def command(code: str, runtime: str) -> list[str] | None:
    """The runtime process to run, or None for the built-in Python runtime."""
    if has_bootstrap(code):
        return [os.path.join(code, "bootstrap")]
    if runtime.startswith("nodejs") and node_binary() is not None:
        return [node_binary() or "node", NODE_RUNTIME]
    return None


def _child_setup() -> None:  # after fork, before exec: dies with the agent
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def start(argv: list[str], cwd: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """A runtime or extension process, in its own process group, tied to the agent."""
    return subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            start_new_session=True, preexec_fn=_child_setup)


def exit_reason(proc: subprocess.Popen) -> str:
    """How the process ended, as AWS words it (``exit status 1``, ``signal: killed``)."""
    code = proc.poll()
    if not code:
        return "Runtime exited without providing a reason"
    if code > 0:
        return f"Runtime exited with error: exit status {code}"
    try:
        name = signal.Signals(-code).name.removeprefix("SIG").lower()
    except ValueError:
        name = str(-code)
    name = {"kill": "killed", "segv": "segmentation fault"}.get(name, name)
    return f"Runtime exited with error: signal: {name}"


def terminate(proc: subprocess.Popen | None, grace: float) -> None:
    """SIGTERM the process group, SIGKILL after ``grace`` seconds (waited for here)."""
    if proc is None or proc.poll() is not None:
        return
    _group(proc, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        _group(proc, signal.SIGKILL)
        proc.wait()


def kill(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        _group(proc, signal.SIGKILL)
        proc.wait()


def _group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except OSError:
        try:
            proc.send_signal(sig)
        except OSError:
            pass
