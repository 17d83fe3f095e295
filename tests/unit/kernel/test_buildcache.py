"""``buildcache``: dependencies installed once per code and manifest, offline only.

pip installs a wheel made here (``--no-index`` in requirements.txt: no index is ever
asked); npm installs a ``file:`` dependency, which needs no registry (as ``up`` runs it:
Debian's npm 9 refuses ``file:`` dependencies under ``npm_config_offline``).  npm is
required (``make install`` installs it): without it the npm test fails, it does not
skip.  Every build goes under ``tmp_path``, never the state directory.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from hyperplane.errors import UsageError
from hyperplane.kernel import buildcache

WHEEL = "mypkg-1.0-py3-none-any.whl"


@pytest.fixture(autouse=True)
def bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(buildcache, "INSTALL_TIMEOUT", 120.0)
    monkeypatch.setenv("npm_config_update_notifier", "false")


def make_wheel(into: Path, value: int = 42) -> Path:
    """A pure-Python wheel of ``mypkg`` (``mypkg.VALUE``), made by hand: nothing to build."""
    files = {"mypkg/__init__.py": f"VALUE = {value}\n",
             "mypkg-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: mypkg\n"
                                             "Version: 1.0\n",
             "mypkg-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\n"
                                          "Root-Is-Purelib: true\nTag: py3-none-any\n"}
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{name},sha256={digest.decode()},{len(text.encode())}")
    record.append("mypkg-1.0.dist-info/RECORD,,")
    files["mypkg-1.0.dist-info/RECORD"] = "\n".join(record) + "\n"
    into.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(into / WHEEL, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return into / WHEEL


def python_code(tmp_path: Path, requirements: str = f"--no-index\n./vendor/{WHEEL}\n") -> Path:
    code = tmp_path / "code"
    make_wheel(code / "vendor")
    (code / "app.py").write_text("import mypkg\n\ndef handler(event, context):\n"
                                 "    return mypkg.VALUE\n")
    (code / "requirements.txt").write_text(requirements)
    (code / "__pycache__").mkdir()
    (code / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"stale")
    return code


def builds(root: Path, name: str = "fn") -> list[str]:
    """The build directories of function ``name``."""
    return sorted(p.name for p in root.iterdir() if p.is_dir() and
                  re.fullmatch(re.escape(name) + "-[0-9a-f]{16}", p.name))


def test_code_without_a_manifest_runs_as_it_is(tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "app.py").write_text("x = 1\n")
    (code / "package.json").write_text("{}")  # not a manifest of a python runtime
    root = tmp_path / "build"
    assert buildcache.build("fn", str(code), "python3.12", root=root) == str(code)
    assert buildcache.build("fn", str(code), "provided.al2023", root=root) == str(code)
    assert not root.exists()


def test_requirements_are_installed_next_to_the_code(tmp_path: Path) -> None:
    code, root = python_code(tmp_path), tmp_path / "build"
    built = Path(buildcache.build("fn", str(code), "python3.12", root=root))
    assert built.parent == root and built.name.startswith("fn-") and len(built.name) == 19
    assert (built / "mypkg" / "__init__.py").read_text() == "VALUE = 42\n"
    assert (built / "app.py").read_text() == (code / "app.py").read_text()
    assert (built / "requirements.txt").is_file() and not (built / "__pycache__").exists()
    marker = json.loads((built / buildcache.MARKER).read_text())
    assert marker["runtime"] == "python3.12" and marker["manifests"] == ["requirements.txt"]
    assert Path(f"{built}.log").is_file()
    assert [p.name for p in root.iterdir() if p.name.endswith(".partial")] == []


def test_an_unchanged_build_is_reused_without_running_pip(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, root = python_code(tmp_path), tmp_path / "build"
    first = buildcache.build("fn", str(code), "python3.12", root=root)
    stamp = os.stat(Path(first, buildcache.MARKER)).st_mtime_ns

    def no_installer(*_args, **_kwargs):
        raise AssertionError("the installer ran for an unchanged build")
    monkeypatch.setattr(subprocess, "run", no_installer)
    (code / "__pycache__" / "other.pyc").write_bytes(b"ignored")  # not part of the key
    assert buildcache.build("fn", str(code), "python3.12", root=root) == first
    assert os.stat(Path(first, buildcache.MARKER)).st_mtime_ns == stamp


def test_a_changed_manifest_builds_anew_and_removes_the_old_build(tmp_path: Path) -> None:
    code, root = python_code(tmp_path), tmp_path / "build"
    first = buildcache.build("fn", str(code), "python3.12", root=root)
    other = buildcache.build("fn-other", str(code), "python3.12", root=root)
    (code / "requirements.txt").write_text(f"--no-index\n./vendor/{WHEEL}  # pinned\n")
    second = buildcache.build("fn", str(code), "python3.12", root=root)
    assert second != first and not Path(first).exists() and not Path(f"{first}.log").exists()
    assert builds(root) == [Path(second).name]
    assert Path(other).is_dir()  # another function's build stays (its name starts alike)


def test_changed_code_or_runtime_gives_another_build(tmp_path: Path) -> None:
    code, root = python_code(tmp_path), tmp_path / "build"
    first = buildcache.build("fn", str(code), "python3.12", root=root)
    (code / "app.py").write_text("VALUE = 2\n")
    second = buildcache.build("fn", str(code), "python3.12", root=root)
    assert second != first and (Path(second) / "app.py").read_text() == "VALUE = 2\n"
    third = buildcache.build("fn", str(code), "python3.11", root=root)
    assert third != second


def test_a_failing_requirement_names_the_function_and_leaves_nothing(tmp_path: Path) -> None:
    code = python_code(tmp_path, "--no-index\n./vendor/not-there\n")
    root = tmp_path / "build"
    with pytest.raises(UsageError) as caught:
        buildcache.build("my-func", str(code), "python3.12", root=root)
    message = str(caught.value)
    assert message.startswith("function my-func: pip install -r requirements.txt failed")
    assert "not-there" in message and "\n" not in message  # one line, the log named
    assert "(all of its output: " in message
    assert builds(root, "my-func") == []
    assert [p.name for p in root.iterdir() if p.name.endswith(".partial")] == []


def test_an_installer_that_cannot_run_leaves_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, root = python_code(tmp_path), tmp_path / "build"
    monkeypatch.setattr(buildcache.sys, "executable", str(tmp_path / "no-python"))
    with pytest.raises(UsageError, match="function fn: .* could not run"):
        buildcache.build("fn", str(code), "python3.12", root=root)
    assert [p for p in root.iterdir() if p.is_dir()] == []


def node_code(tmp_path: Path) -> Path:
    code = tmp_path / "code"
    (code / "vendor" / "x").mkdir(parents=True)
    (code / "vendor" / "x" / "package.json").write_text(
        '{"name": "x", "version": "1.0.0", "main": "index.js"}')
    (code / "vendor" / "x" / "index.js").write_text("module.exports = 42;\n")
    (code / "vendor" / "dev-only").mkdir()  # npm reads a dev dependency even when omitted
    (code / "vendor" / "dev-only" / "package.json").write_text(
        '{"name": "dev-only", "version": "1.0.0"}')
    (code / "package.json").write_text(json.dumps({
        "name": "fn", "version": "1.0.0", "dependencies": {"x": "file:./vendor/x"},
        "devDependencies": {"dev-only": "file:./vendor/dev-only"}}))
    (code / "index.js").write_text("exports.handler = async () => require('x');\n")
    (code / "node_modules" / "stale").mkdir(parents=True)  # neither copied nor in the key
    return code


def test_package_json_dependencies_are_installed_with_npm(tmp_path: Path) -> None:
    assert shutil.which("npm"), "npm is not installed (Debian package npm: `make install`)"
    code, root = node_code(tmp_path), tmp_path / "build"
    built = Path(buildcache.build("fn", str(code), "nodejs20.x", root=root))
    assert (built / "node_modules" / "x" / "index.js").read_text() == "module.exports = 42;\n"
    assert not (built / "node_modules" / "stale").exists()
    assert not (built / "node_modules" / "dev-only").exists()  # --omit=dev
    assert (built / "index.js").is_file()
    (code / "node_modules" / "other").mkdir()
    assert buildcache.build("fn", str(code), "nodejs20.x", root=root) == str(built)


def test_without_npm_a_package_json_is_a_clear_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, root = node_code(tmp_path), tmp_path / "build"
    monkeypatch.setattr(buildcache.shutil, "which", lambda _name: None)
    with pytest.raises(UsageError) as caught:
        buildcache.build("fn", str(code), "nodejs20.x", root=root)
    assert str(caught.value) == ("function fn: package.json needs npm (Debian package npm), "
                                 "which is not installed")
    assert [p for p in root.iterdir() if p.is_dir()] == []


def test_the_state_directory_is_the_default_root(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYPERPLANE_STATE_DIR", str(tmp_path / "state"))
    code = python_code(tmp_path)
    built = Path(buildcache.build("fn", str(code), "python3.12"))
    assert built.parent == tmp_path / "state" / "build"


def test_a_relative_root_is_taken_from_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = python_code(tmp_path)
    monkeypatch.chdir(tmp_path)
    built = Path(buildcache.build("fn", "code", "python3.12", root=Path("builds")))
    assert built.is_absolute() and built.parent == tmp_path / "builds"
    assert (built / "mypkg" / "__init__.py").is_file()
    assert not (code / "builds").exists()


def test_a_failed_npm_install_says_why(tmp_path: Path) -> None:
    """The error names npm's reason (a package.json that is not JSON), not its debug log."""
    assert shutil.which("npm"), "npm is not installed (Debian package npm: `make install`)"
    code = node_code(tmp_path)
    (code / "package.json").write_text('{"name": "fn", "dependencies": {"x": }}')
    with pytest.raises(UsageError) as caught:
        buildcache.build("fn", str(code), "nodejs20.x", root=tmp_path / "build")
    message = str(caught.value)
    assert message.startswith("function fn: npm install for package.json failed (exit status ")
    assert "JSON" in message, message
    assert "_logs" not in message.split(" (all of its output: ")[0]
    assert not builds(tmp_path / "build")


def test_the_reason_is_npms_first_error_line_that_is_not_a_detail() -> None:
    """npm 9 (Debian bookworm) and npm 11 output, as they printed it."""
    npm9 = ["$ /usr/bin/npm install --omit=dev", "npm ERR! code ENOENT", "npm ERR! syscall open",
            "npm ERR! path /b/vendor/dev-only/package.json", "npm ERR! errno -2",
            "npm ERR! enoent ENOENT: no such file or directory, open '/b/package.json'",
            "npm ERR! enoent This is related to npm not being able to find a file.",
            "npm ERR! enoent ", "npm ERR! A complete log of this run can be found in:",
            "npm ERR!     /root/.npm/_logs/2026-12-05T14_17_39_479Z-debug-0.log"]
    npm11 = ["npm error code EJSONPARSE",
             'npm error JSON.parse Invalid package.json: JSONParseError: Unexpected token "}"',
             "npm error A complete log of this run can be found in: /root/.npm/_logs/x.log"]
    tail = "\n".join(f"  | {line}" for line in npm9)
    assert buildcache._reason(tail) == ("enoent ENOENT: no such file or directory, "
                                        "open '/b/package.json'")
    assert buildcache._reason("\n".join(npm11)).startswith("JSON.parse Invalid package.json")
    assert buildcache._reason("  | Killed") == "Killed"
    assert buildcache._reason("") == "(no output)"
