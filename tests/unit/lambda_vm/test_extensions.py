"""The Extensions API over real loopback HTTP (no namespaces): AWS's errors, and an
external extension written in shell with curl that sees INVOKE and SHUTDOWN."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from lambda_vm import extensions, runtimes
from tests.unit.lambda_vm.harness import Harness
from tests.unit.lambda_vm.test_runtime_api import curl

EXT = "/2020-01-01/extension"
COUNTER = """#!/bin/sh
set -eu
API="http://${AWS_LAMBDA_RUNTIME_API}/2020-01-01/extension"
H=$(mktemp)
curl -sS -D "$H" -o /dev/null -X POST -H "Lambda-Extension-Name: counter" \\
     -d '{"events": ["INVOKE", "SHUTDOWN"]}' "$API/register"
ID=$(grep -i '^Lambda-Extension-Identifier:' "$H" | tr -d '[:space:]' | cut -d: -f2)
while true; do
  EVENT=$(curl -sS -H "Lambda-Extension-Identifier: $ID" "$API/event/next")
  echo "$EVENT" >> "$OUT"
  case "$EVENT" in *SHUTDOWN*) exit 0 ;; esac
  sleep 0.2  # post-processing: the next invocation waits for it
done
"""
STUBBORN = """#!/bin/sh
curl -sS -o /dev/null -X POST -H "Lambda-Extension-Name: stubborn" \\
     -d '{"events": ["SHUTDOWN"]}' "http://${AWS_LAMBDA_RUNTIME_API}/2020-01-01/extension/register"
trap '' TERM
sleep 60
"""


@pytest.fixture()
def h() -> Harness:
    harness = Harness(with_extensions=True)
    yield harness
    for extension in harness.extensions.alive():
        runtimes.kill(extension.proc)
    harness.close()


def call(h: Harness, *args: str) -> tuple[int, dict, dict]:
    got = curl(h, "-D", "-", *args)
    head, _, body = got.stdout.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return int(lines[0].split()[1]), headers, json.loads(body) if body else {}


def test_registration_and_identification_errors_are_aws_s(h: Harness) -> None:
    url = f"http://{h.address}{EXT}"
    assert call(h, "-X", "POST", "-d", "{}", url + "/register")[::2] == (403, {
        "errorMessage": "Empty extension name", "errorType": "Extension.InvalidExtensionName"})
    status, _, body = call(h, "-H", "Lambda-Extension-Name: inside", "-d",
                           '{"events": ["SHUTDOWN"]}', url + "/register")
    assert status == 403 and body["errorType"] == "Extension.InvalidEventType"
    status, headers, body = call(h, "-H", "Lambda-Extension-Name: inside", "-H",
                                 "Lambda-Extension-Accept-Feature: accountId", "-d",
                                 '{"events": ["INVOKE"]}', url + "/register")
    assert status == 200 and body == {"accountId": "123456789012", "functionName": "fn",
                                      "functionVersion": "$LATEST", "handler": "index.handler"}
    assert len(headers["lambda-extension-identifier"]) == 36
    assert call(h, url + "/event/next")[::2] == (403, {
        "errorMessage": "Missing Lambda-Extension-Identifier header",
        "errorType": "Extension.MissingExtensionIdentifier"})
    assert call(h, "-H", "Lambda-Extension-Identifier: x", url + "/event/next")[2][
        "errorType"] == "Extension.InvalidExtensionIdentifier"
    unknown = "00000000-0000-0000-0000-000000000000"
    assert call(h, "-H", f"Lambda-Extension-Identifier: {unknown}", url + "/event/next")[2] == {
        "errorMessage": f"Unknown extension {unknown}",
        "errorType": "Extension.UnknownExtensionIdentifier"}
    h.extensions.close_registration()
    assert call(h, "-H", "Lambda-Extension-Name: late", "-d", "{}", url + "/register")[2][
        "errorType"] == "Extension.RegistrationClosed"


def test_an_external_extension_sees_each_invoke_and_shutdown(h: Harness, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    folder = tmp_path / "extensions"
    folder.mkdir()
    (folder / "counter").write_text(COUNTER)
    (folder / "counter").chmod(0o755)
    (folder / "not-executable").write_text("")
    assert extensions.executables(str(tmp_path)) == [str(folder / "counter")]
    out = tmp_path / "events"
    env = {"PATH": "/usr/bin:/bin", "AWS_LAMBDA_RUNTIME_API": h.address, "OUT": str(out)}
    h.extensions.launch(extensions.executables(str(tmp_path)), env, str(tmp_path),
                        runtimes.start)
    assert h.wait(lambda: h.extensions.registered() and h.extensions.ready())
    h.api.direct = lambda invocation: invocation.finish({"result": invocation.event})
    first, second = h.submit(1, "a"), h.submit(2, "b")
    assert h.wait(lambda: first.outcome is not None)
    assert second.outcome is None  # the extension is still busy with the first
    assert h.wait(lambda: second.outcome is not None)
    done: list[bool] = []
    started = time.monotonic()
    h.extensions.shutdown("spindown", started + extensions.SHUTDOWN_TIMEOUT,
                          lambda: done.append(True))
    assert h.wait(lambda: bool(done))
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["eventType"] for e in events] == ["INVOKE", "INVOKE", "SHUTDOWN"]
    assert [e.get("requestId") for e in events[:2]] == ["a", "b"]
    assert events[0]["invokedFunctionArn"].endswith(":function:fn")
    assert events[0]["tracing"]["type"] == "X-Amzn-Trace-Id"
    assert events[2]["shutdownReason"] == "spindown" and events[2]["deadlineMs"] > 0


def test_an_extension_that_ignores_shutdown_is_killed_at_the_deadline(h: Harness,
                                                                     tmp_path: Path) -> None:
    (tmp_path / "extensions").mkdir()
    script = tmp_path / "extensions" / "stubborn"
    script.write_text(STUBBORN)
    script.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "AWS_LAMBDA_RUNTIME_API": h.address}
    h.extensions.launch([str(script)], env, str(tmp_path), runtimes.start)
    assert h.wait(lambda: h.extensions.registered())
    proc: subprocess.Popen = h.extensions.extensions[0].proc
    done: list[bool] = []
    h.extensions.shutdown("spindown", time.monotonic() + 0.5, lambda: done.append(True))
    assert h.wait(lambda: bool(done) and proc.poll() is not None)
    assert proc.returncode == -9


def test_an_extension_that_exits_during_init_fails_it(h: Harness, tmp_path: Path) -> None:
    (tmp_path / "extensions").mkdir()
    script = tmp_path / "extensions" / "broken"
    script.write_text("#!/bin/sh\nexit 3\n")
    script.chmod(0o755)
    h.extensions.launch([str(script)], {"PATH": "/usr/bin:/bin"}, str(tmp_path),
                        runtimes.start)
    assert h.wait(lambda: h.extensions.failure is not None)
    assert h.extensions.failure == {"errorType": "Extension.Crash", "errorMessage":
                                    "Extension broken exited during init (status 3)"}
