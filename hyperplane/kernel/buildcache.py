"""``sam build`` for a function's code: its dependencies installed once, reused while
unchanged (side effects: runs pip or npm, writes under the state directory).

The model.  A code directory with a dependency manifest (``requirements.txt`` for a
``python*`` runtime, ``package.json`` for a ``nodejs*`` one) does not run as it is:
``build`` copies it and installs the dependencies next to the code, as ``sam build``
does, and returns the directory the function runs from.  Without a manifest (or for
any other runtime) the code directory itself is returned and nothing is written.

Names.  The build's key is a SHA-256 over the runtime, the manifest's bytes (with
``package-lock.json`` when there is one) and a digest of the code directory (its
files' paths and bytes, ``node_modules``, ``__pycache__`` and ``.git`` left out; past
``MAX_DIGEST_BYTES`` only paths, sizes and modification times count).  Under ``root`` (by default
``STATE_DIR/build``):

    <function>-<key[:16]>/                    the build: the code and its dependencies,
        .hyperplane-build                     with its completion marker (JSON)
    <function>-<key[:16]>.log                 the installer's output
    .<function>-<key[:16]>.<random>.partial/  a build in progress

Side effects.  A build whose directory holds the marker is reused as it is (no
installer runs: "reused while unchanged").  Otherwise the code is copied into a
``.partial`` directory next to it, the installer runs there, bounded by
``INSTALL_TIMEOUT`` (``python -m pip install -r requirements.txt -t DIR`` with the
code directory as working directory, so relative paths in requirements.txt work;
``npm install --omit=dev --no-audit --no-fund``), the marker is written and the
directory renamed into place (one atomic step: a build is either whole or absent);
then the older builds of the same function and their logs are removed (and partial
directories a killed run left, once they are older than twice the timeout).  A failed
or timed-out install removes the partial directory and raises ``UsageError`` naming
the function, the manifest and the last lines of the installer's output.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hyperplane.errors import UsageError
from hyperplane.kernel import state

INSTALL_TIMEOUT = 300.0          # seconds an installer may run
MAX_DIGEST_BYTES = 262_144_000   # bytes of code read for the key (Lambda's unzipped limit)
MAX_DIGEST_FILES = 20_000
TAIL_LINES = 10                  # lines of the installer's output in an error
MARKER = ".hyperplane-build"
SKIPPED = frozenset({"node_modules", "__pycache__", ".git"})
CHUNK = 1 << 20
_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def manifests(code_dir: str, runtime: str) -> list[str]:
    """The dependency manifests of a code directory, as ``build`` reads them for
    ``runtime`` (the first is the one the installer is given); [] when there is none."""
    if runtime.startswith("python"):
        names = ["requirements.txt"]
    elif runtime.startswith("nodejs"):
        names = ["package.json", "package-lock.json"]
    else:
        return []
    if not os.path.isfile(os.path.join(code_dir, names[0])):
        return []
    return [n for n in names if os.path.isfile(os.path.join(code_dir, n))]


def code_digest(code_dir: str) -> str:
    """SHA-256 of a code directory's files: paths and bytes, in order.  Bounded: past
    ``MAX_DIGEST_FILES`` files or ``MAX_DIGEST_BYTES`` bytes, a file counts by its path,
    size and modification time only."""
    digest, read, count = hashlib.sha256(), 0, 0
    for root, dirs, files in os.walk(code_dir):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED)
        for name in sorted(files):
            file = os.path.join(root, name)
            count += 1
            digest.update(os.path.relpath(file, code_dir).encode() + b"\0")
            try:
                info = os.stat(file)
                if count > MAX_DIGEST_FILES or read + info.st_size > MAX_DIGEST_BYTES:
                    digest.update(f"{info.st_size} {info.st_mtime_ns}\0".encode())
                    continue
                with open(file, "rb") as fh:
                    while chunk := fh.read(CHUNK):
                        read += len(chunk)
                        digest.update(chunk)
            except OSError:
                continue  # a dangling link, a file removed meanwhile
    return digest.hexdigest()


def build_key(code_dir: str, runtime: str, names: list[str]) -> str:
    digest = hashlib.sha256(runtime.encode() + b"\0")
    for name in names:
        digest.update(name.encode() + b"\0" + Path(code_dir, name).read_bytes() + b"\0")
    digest.update(code_digest(code_dir).encode())
    return digest.hexdigest()


def _complete(build_dir: Path) -> bool:
    return (build_dir / MARKER).is_file()


def _command(function_name: str, code_dir: str, runtime: str, manifest: str,
             into: Path) -> tuple[list[str], str]:
    """The installer's command line and working directory."""
    if runtime.startswith("python"):
        return ([sys.executable, "-m", "pip", "install", "--disable-pip-version-check",
                 "--no-input", "-q", "-r", os.path.join(code_dir, manifest), "-t", str(into)],
                code_dir)
    npm = shutil.which("npm")
    if npm is None:
        raise UsageError(f"function {function_name}: package.json needs npm (Debian package "
                         "npm), which is not installed")
    return [npm, "install", "--omit=dev", "--no-audit", "--no-fund"], str(into)


def _tail(log: Path) -> str:
    try:
        with open(log, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - 16384))
            text = fh.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [line.rstrip() for line in text.splitlines() if line.strip()][-TAIL_LINES:]
    return "\n".join(f"  | {line[:300]}" for line in lines)


def _install(function_name: str, command: list[str], cwd: str, log: Path,
             manifest: str) -> None:
    """Run the installer, its output into ``log``; UsageError when it fails."""
    with open(log, "wb") as out:
        out.write(("$ " + " ".join(command) + "\n").encode())
        out.flush()
        try:
            result = subprocess.run(command, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, timeout=INSTALL_TIMEOUT,
                                    check=False)
        except subprocess.TimeoutExpired:
            failure = f"did not finish in {INSTALL_TIMEOUT:.0f} s"
        except OSError as exc:
            failure = f"could not run ({exc.strerror or exc})"
        else:
            if result.returncode == 0:
                return
            failure = f"failed (exit status {result.returncode})"
    tool = "pip install -r" if manifest == "requirements.txt" else "npm install for"
    raise UsageError(f"function {function_name}: {tool} {manifest} {failure}: "
                     f"{_reason(_tail(log))} (all of its output: {log})")


_NPM_ERROR = ("npm ERR! ", "npm error ")  # npm 9, npm 10 and later
_NPM_DETAIL = ("code ", "syscall ", "errno ", "path ", "A complete log", "/", "enoent This ")


def _reason(tail: str) -> str:
    """The line of an installer's output that says why it failed: npm's first error
    line that is not a detail (its code, syscall, path, the debug log's name), else the
    last line."""
    lines = [line.removeprefix("  | ") for line in tail.splitlines()]
    errors = [line.split(" ", 2)[-1].strip() for line in lines if line.startswith(_NPM_ERROR)]
    told = [e for e in errors if e and e != "enoent" and not e.startswith(_NPM_DETAIL)]
    if told:
        return told[0]
    return lines[-1] if lines else "(no output)"


def _copy_code(code_dir: str, into: Path) -> None:
    shutil.copytree(code_dir, into, symlinks=True, dirs_exist_ok=True,
                    ignore=lambda _dir, names: [n for n in names if n in SKIPPED])
    os.chmod(into, 0o755)


def _write_marker(into: Path, key: str, runtime: str, names: list[str]) -> None:
    (into / MARKER).write_text(json.dumps({"key": key, "runtime": runtime,
                                           "manifests": names}) + "\n")


def _place(partial: Path, build_dir: Path) -> None:
    """Rename a finished build into place (another process may have placed it first)."""
    try:
        partial.rename(build_dir)
    except OSError:
        if not _complete(build_dir):
            raise
        shutil.rmtree(partial, ignore_errors=True)  # the same build, made meanwhile


def _remove_older(root: Path, function_name: str, keep: Path) -> None:
    """The function's other builds and logs, and partial builds left by a killed run."""
    name = re.escape(function_name)
    older = re.compile(name + r"-[0-9a-f]{16}(\.log)?")
    partial = re.compile(r"\." + name + r"-[0-9a-f]{16}\..+\.partial")
    stale = time.time() - 2 * INSTALL_TIMEOUT
    for entry in root.iterdir():
        if entry.name in (keep.name, keep.name + ".log"):
            continue
        if not (older.fullmatch(entry.name) or (partial.fullmatch(entry.name) and
                                                 entry.lstat().st_mtime < stale)):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def build(function_name: str, code_dir: str, runtime: str, root: Path | None = None) -> str:
    """The directory ``function_name`` should run from: ``code_dir`` itself when it has
    no dependency manifest for ``runtime``, else its build (made, or reused)."""
    names = manifests(code_dir, runtime)
    if not names:
        return code_dir
    if not _NAME.fullmatch(function_name) or function_name in (".", ".."):
        raise UsageError(f"function {function_name!r}: not a name a build can be stored under")
    code_dir = os.path.abspath(code_dir)
    key = build_key(code_dir, runtime, names)
    root = Path(os.path.abspath(root if root is not None else state.path("build")))
    build_dir = root / f"{function_name}-{key[:16]}"
    if _complete(build_dir):
        return str(build_dir)
    root.mkdir(parents=True, exist_ok=True)
    if build_dir.exists():  # no marker: left by an older version or by hand
        shutil.rmtree(build_dir, ignore_errors=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{build_dir.name}.", suffix=".partial", dir=root))
    try:
        _copy_code(code_dir, partial)
        command, cwd = _command(function_name, code_dir, runtime, names[0], partial)
        _install(function_name, command, cwd, Path(f"{build_dir}.log"), names[0])
        _write_marker(partial, key, runtime, names)
        _place(partial, build_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    _remove_older(root, function_name, build_dir)
    return str(build_dir)
