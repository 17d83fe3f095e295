"""The Node.js runtime (``lambda_vm/nodejs/runtime.js``): real ``node`` processes against a
real Runtime API on 127.0.0.1 (``harness``: no namespaces, no root), and the agent's
choice of it.

Node.js is required (``make install`` installs the Debian package ``nodejs``): without
it these tests fail, they do not skip.  Every wait is bounded and every process started
is killed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lambda_vm import agent, runtimes
from lambda_vm.httpserver import Server, listen
from tests.unit.lambda_vm.harness import ARN, WAIT, Harness, agent_invoke


def node() -> str:
    found = shutil.which("node") or shutil.which("nodejs")
    assert found, "Node.js is not installed (Debian package nodejs: `make install` installs it)"
    return found


Scenario = Callable[[Harness, subprocess.Popen], object]


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def node_env(address: str, root: Path, handler: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "AWS_LAMBDA_RUNTIME_API": address, "_HANDLER": handler,
            "LAMBDA_TASK_ROOT": str(root), "AWS_LAMBDA_FUNCTION_NAME": "fn",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
            "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/fn",
            "AWS_LAMBDA_LOG_STREAM_NAME": "hyperplane"}


def run_node(tmp_path: Path, files: dict[str, str], handler: str,
             scenario: Scenario) -> tuple[object, str]:
    """Run ``scenario`` against node with ``files`` as its task root: (its result, stdout)."""
    root = write(tmp_path / "task", files)
    out_path = tmp_path / "stdout.log"
    harness = Harness()
    with open(out_path, "wb") as out:
        proc = subprocess.Popen([node(), runtimes.NODE_RUNTIME], cwd=root, stdout=out,
                                stderr=subprocess.STDOUT,
                                env=node_env(harness.address, root, handler))
    try:
        assert harness.wait(lambda: harness.api.ready or harness.api.init_error is not None)
        result = scenario(harness, proc)
    finally:
        proc.kill()
        proc.wait(WAIT)
        harness.close()
    return result, out_path.read_bytes().decode()


def invoke_once(payload: object, request_id: str = "req-1", timeout: float = 5.0,
                **fields: object) -> Scenario:
    def scenario(harness: Harness, _proc: subprocess.Popen) -> object:
        assert harness.api.init_error is None, harness.api.init_error
        return harness.invoke(payload, request_id, timeout, **fields)
    return scenario


def init_error(harness: Harness, _proc: subprocess.Popen) -> object:
    return harness.api.init_error


def exit_code(harness: Harness, proc: subprocess.Popen) -> int | None:
    harness.wait(lambda: proc.poll() is not None)
    return proc.poll()


# -- handlers -----------------------------------------------------------------------------
CONTEXT_ECHO = """
exports.handler = async (event, context) => ({
  event, functionName: context.functionName, awsRequestId: context.awsRequestId,
  remaining: context.getRemainingTimeInMillis(), memoryLimitInMB: context.memoryLimitInMB,
  invokedFunctionArn: context.invokedFunctionArn, functionVersion: context.functionVersion,
  logGroupName: context.logGroupName, logStreamName: context.logStreamName,
  waits: context.callbackWaitsForEmptyEventLoop, clientContext: context.clientContext,
  identity: context.identity, legacy: [typeof context.done, typeof context.succeed,
                                       typeof context.fail],
  traceId: process.env._X_AMZN_TRACE_ID,
});
"""


def test_an_async_handler_gets_the_event_and_aws_context(tmp_path: Path) -> None:
    reply, _ = run_node(tmp_path, {"index.js": CONTEXT_ECHO}, "index.handler",
                        invoke_once({"a": [1, 2]}, "req-42", timeout=3.0))
    result = reply["result"]
    assert result["event"] == {"a": [1, 2]}
    assert result["functionName"] == "fn" and result["awsRequestId"] == "req-42"
    assert 0 < result["remaining"] <= 3000
    assert result["memoryLimitInMB"] == "256" and result["functionVersion"] == "$LATEST"
    assert result["invokedFunctionArn"] == ARN
    assert result["logGroupName"] == "/aws/lambda/fn" and result["logStreamName"] == "hyperplane"
    assert result["waits"] is True and result["legacy"] == ["function"] * 3
    assert "clientContext" not in result and "identity" not in result  # undefined: absent
    assert result["traceId"].startswith("Root=1-")


def test_client_context_and_identity_come_from_their_headers(tmp_path: Path) -> None:
    fields = {"client_context": json.dumps({"custom": {"k": "v"}}),
              "identity": json.dumps({"cognitoIdentityId": "id-1"})}
    reply, _ = run_node(tmp_path, {"index.js": CONTEXT_ECHO}, "index.handler",
                        invoke_once({}, **fields))
    assert reply["result"]["clientContext"] == {"custom": {"k": "v"}}
    assert reply["result"]["identity"] == {"cognitoIdentityId": "id-1"}


def test_a_callback_handler_answers_once_the_event_loop_is_empty(tmp_path: Path) -> None:
    code = """
exports.handler = (event, context, callback) => {
  callback(null, {n: event.n + 1});
  setTimeout(() => console.log('timer ran'), 200);
};
"""
    reply, out = run_node(tmp_path, {"index.js": code}, "index.handler", invoke_once({"n": 1}))
    assert reply == {"result": {"n": 2}}
    assert "timer ran" in out  # logged before the response was posted


def test_a_callback_handler_that_does_not_wait_answers_at_once(tmp_path: Path) -> None:
    code = """
exports.handler = (event, context, callback) => {
  context.callbackWaitsForEmptyEventLoop = false;
  setTimeout(() => callback(new Error('late second call')), 50);
  callback(null, 'now');
};
"""
    reply, _ = run_node(tmp_path, {"index.js": code}, "index.handler", invoke_once({}))
    assert reply == {"result": "now"}


def test_an_undefined_result_is_null(tmp_path: Path) -> None:
    code = "exports.handler = async () => undefined;\n"
    reply, _ = run_node(tmp_path, {"index.js": code}, "index.handler", invoke_once({}))
    assert reply == {"result": None}


def test_legacy_context_methods_settle_at_once(tmp_path: Path) -> None:
    code = """
exports.handler = (event, context) => {
  setTimeout(() => {}, 2000);  // context.succeed does not wait for the event loop
  if (event === 'fail') context.fail(new SyntaxError('legacy'));
  else if (event === 'done') context.done(null, 'via done');
  else context.succeed({ok: event});
};
"""

    def scenario(harness: Harness, _proc: subprocess.Popen) -> object:
        return [harness.invoke(event, f"req-{event}", 1.5) for event in ("yes", "done", "fail")]

    (succeeded, done, failed), _ = run_node(tmp_path, {"index.js": code}, "index.handler",
                                            scenario)
    assert succeeded == {"result": {"ok": "yes"}} and done == {"result": "via done"}
    assert failed["errorType"] == "SyntaxError" and failed["errorMessage"] == "legacy"


def test_a_synchronous_handler_that_never_calls_back_returns_null(tmp_path: Path) -> None:
    code = "exports.handler = (event) => 'ignored, as AWS ignores it';\n"
    reply, _ = run_node(tmp_path, {"index.js": code}, "index.handler", invoke_once({}))
    assert reply == {"result": None}


def test_a_thrown_error_is_reported_with_its_class_name(tmp_path: Path) -> None:
    code = "exports.handler = async () => { throw new TypeError('bad input'); };\n"

    def scenario(harness: Harness, _proc: subprocess.Popen) -> object:
        reply = harness.invoke({}, "req-e", 5)
        return reply, harness.api.posted("/invocation/req-e/error")

    (reply, posted), out = run_node(tmp_path, {"index.js": code}, "index.handler", scenario)
    assert reply["errorType"] == "TypeError" and reply["errorMessage"] == "bad input"
    headers, body = posted[0]
    assert headers["lambda-runtime-function-error-type"] == "TypeError"
    error = json.loads(body)
    assert error["trace"][0] == "TypeError: bad input"
    assert any("index.js" in line for line in error["trace"])
    assert "\tERROR\tInvoke Error \t" in out


def test_a_synchronous_throw_in_a_callback_handler_is_an_error(tmp_path: Path) -> None:
    code = "exports.handler = (event, context, callback) => { throw new RangeError('r'); };\n"
    reply, _ = run_node(tmp_path, {"index.js": code}, "index.handler", invoke_once({}))
    assert reply["errorType"] == "RangeError" and reply["errorMessage"] == "r"


def test_an_esm_handler(tmp_path: Path) -> None:
    code = "export const handler = async (event) => ({esm: true, event});\n"
    reply, _ = run_node(tmp_path, {"app.mjs": code}, "app.handler", invoke_once(7))
    assert reply == {"result": {"esm": True, "event": 7}}


def test_a_js_file_under_a_module_package_is_esm(tmp_path: Path) -> None:
    files = {"package.json": '{"type": "module"}',
             "index.js": "export const handler = async () => import.meta.url;\n"}
    reply, _ = run_node(tmp_path, files, "index.handler", invoke_once({}))
    assert reply["result"].startswith("file://") and reply["result"].endswith("/index.js")


def test_a_cjs_handler_in_a_directory_with_a_nested_export(tmp_path: Path) -> None:
    code = "module.exports = {handlers: {echo: async (event) => ({nested: event})}};\n"
    reply, _ = run_node(tmp_path, {"src/app/main.cjs": code}, "src/app/main.handlers.echo",
                        invoke_once("x"))
    assert reply == {"result": {"nested": "x"}}


def test_a_missing_module_is_an_import_module_error(tmp_path: Path) -> None:
    def scenario(harness: Harness, _proc: subprocess.Popen) -> object:
        return harness.api.init_error, harness.api.posted("/init/error")[0][0]

    (error, headers), out = run_node(tmp_path, {"index.js": ""}, "nope.handler", scenario)
    assert error["errorType"] == "Runtime.ImportModuleError"
    assert error["errorMessage"].startswith("Error: Cannot find module 'nope'")
    assert headers["lambda-runtime-function-error-type"] == "Runtime.ImportModuleError"
    assert "\tundefined\tERROR\tUncaught Exception \t" in out


def test_a_missing_require_inside_the_code_is_an_import_module_error(tmp_path: Path) -> None:
    code = "const x = require('not-installed');\nexports.handler = async () => x;\n"
    error, _ = run_node(tmp_path, {"index.js": code}, "index.handler", init_error)
    assert error["errorType"] == "Runtime.ImportModuleError"
    assert "Cannot find module 'not-installed'" in error["errorMessage"]


def test_a_missing_export_is_handler_not_found(tmp_path: Path) -> None:
    code = "exports.handler = async () => 1;\n"
    error, _ = run_node(tmp_path, {"index.js": code}, "index.nope", init_error)
    assert error["errorType"] == "Runtime.HandlerNotFound"
    assert error["errorMessage"] == "index.nope is undefined or not exported"


def test_a_syntax_error_is_user_code_syntax_error(tmp_path: Path) -> None:
    error, _ = run_node(tmp_path, {"index.js": "exports.handler = async () => {;\n"},
                        "index.handler", init_error)
    assert error["errorType"] == "Runtime.UserCodeSyntaxError"
    assert error["errorMessage"].startswith("SyntaxError: ")


def test_two_invocations_run_in_the_same_process(tmp_path: Path) -> None:
    code = "let count = 0;\nexports.handler = async () => ({count: ++count, pid: process.pid});\n"

    def scenario(harness: Harness, proc: subprocess.Popen) -> object:
        first = harness.invoke({}, "req-a", 5)
        second = harness.invoke({}, "req-b", 5)
        return first["result"], second["result"], proc.pid

    (first, second, pid), _ = run_node(tmp_path, {"index.js": code}, "index.handler", scenario)
    assert (first["count"], second["count"]) == (1, 2)
    assert first["pid"] == second["pid"] == pid


def test_console_lines_look_like_aws(tmp_path: Path) -> None:
    code = """
console.log('at init');
exports.handler = async () => {
  console.log('hello %d', 42);
  console.error('two\\nlines');
  console.warn({k: 1});
  return 1;
};
"""
    _, out = run_node(tmp_path, {"index.js": code}, "index.handler", invoke_once({}, "req-log"))
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    lines = out.split("\n")
    assert re.fullmatch(stamp + r"\tundefined\tINFO\tat init", lines[0])
    assert re.fullmatch(stamp + r"\treq-log\tINFO\thello 42", lines[1])
    assert re.fullmatch(stamp + r"\treq-log\tERROR\ttwo\rlines", lines[2])
    assert re.fullmatch(stamp + r"\treq-log\tWARN\t\{ k: 1 \}", lines[3])


def test_an_uncaught_exception_fails_the_invocation_and_exits(tmp_path: Path) -> None:
    code = """
exports.handler = (event, context, callback) => {
  setTimeout(() => { throw new Error('late'); }, 10);
};
"""

    def scenario(harness: Harness, proc: subprocess.Popen) -> object:
        return harness.invoke({}, "req-u", 5), exit_code(harness, proc)

    (reply, code_), _ = run_node(tmp_path, {"index.js": code}, "index.handler", scenario)
    assert reply["errorType"] == "Error" and reply["errorMessage"] == "late"
    assert code_ == 129


def test_an_unhandled_rejection_fails_the_invocation_and_exits(tmp_path: Path) -> None:
    code = """
exports.handler = async () => {
  Promise.reject(new Error('nobody catches'));
  await new Promise((resolve) => setTimeout(resolve, 200));
  return 'too late';
};
"""

    def scenario(harness: Harness, proc: subprocess.Popen) -> object:
        return harness.invoke({}, "req-r", 5), exit_code(harness, proc)

    (reply, code_), _ = run_node(tmp_path, {"index.js": code}, "index.handler", scenario)
    assert reply["errorType"] == "Runtime.UnhandledPromiseRejection"
    assert reply["errorMessage"] == "Error: nobody catches"
    assert code_ == 128


# -- the agent's choice -------------------------------------------------------------------
def test_the_agent_runs_nodejs_with_node_and_our_runtime(tmp_path: Path) -> None:
    assert runtimes.unsupported("nodejs20.x", str(tmp_path)) is None
    assert runtimes.command(str(tmp_path), "nodejs20.x") == [node(), runtimes.NODE_RUNTIME]
    assert os.path.isfile(runtimes.NODE_RUNTIME)
    paths = runtimes.node_environment(str(tmp_path), "nodejs20.x")["NODE_PATH"].split(":")
    assert str(tmp_path / "node_modules") in paths and "/opt/nodejs/node_modules" in paths
    assert "/opt/nodejs/node20/node_modules" in paths


def test_without_node_nodejs_is_unsupported_and_names_the_runtime(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    assert runtimes.unsupported("nodejs20.x", str(tmp_path)) == {
        "errorType": "Runtime.Unsupported", "errorMessage": "The runtime nodejs20.x needs "
        "Node.js (Debian package nodejs), which is not installed"}
    assert runtimes.command(str(tmp_path), "nodejs20.x") is None


def test_other_runtimes_are_unsupported_naming_what_runs(tmp_path: Path) -> None:
    failure = runtimes.unsupported("ruby3.3", str(tmp_path))
    assert failure["errorType"] == "Runtime.Unsupported"
    assert "ruby3.3" in failure["errorMessage"]
    assert "nodejs18.x/20.x/22.x" in failure["errorMessage"]
    assert runtimes.unsupported("python3.12", str(tmp_path)) is None


def test_a_bootstrap_in_the_code_wins_over_the_node_runtime(tmp_path: Path) -> None:
    bootstrap = write(tmp_path, {"bootstrap": "#!/bin/sh\n"}) / "bootstrap"
    bootstrap.chmod(0o755)
    assert runtimes.command(str(tmp_path), "nodejs20.x") == [str(bootstrap)]


def test_the_agent_restarts_a_node_runtime_that_crashed_or_exited(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    libs = write(tmp_path / "libs", {"mylib/index.js": "module.exports = 'from NODE_PATH';\n"})
    code = write(tmp_path / "task", {"index.js": """
const lib = require('mylib');
exports.handler = async (event) => {
  if (event === 'exit') process.exit(3);
  if (event === 'crash') {
    setTimeout(() => { throw new Error('crash'); }, 0);
    return new Promise(() => {});
  }
  return {lib, pid: process.pid, nodePath: process.env.NODE_PATH};
};
"""})
    monkeypatch.setenv("NODE_PATH", str(libs))
    monkeypatch.setenv("_HANDLER", "index.handler")
    monkeypatch.setenv("LAMBDA_TASK_ROOT", str(code))
    args = agent.Args(["--socket", str(tmp_path / "agent.sock"), "--code", str(code),
                       "--handler", "index.handler", "--function", "fn", "--timeout", "5",
                       "--runtime", "nodejs20.x", "--account", "123456789012"])
    the_agent = agent.Agent(args)
    listener = listen("127.0.0.1", 0)
    monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", f"127.0.0.1:{listener.getsockname()[1]}")
    the_agent.server = Server(the_agent.loop, listener, the_agent.api)
    try:
        the_agent.initialise(WAIT)
        replies = [agent_invoke(the_agent, {"payload": payload, "request_id": f"req-{n}"})[-1]
                   for n, payload in enumerate(["ok", "exit", "ok", "crash", "ok"])]
    finally:
        if the_agent.proc is not None:
            runtimes.kill(the_agent.proc)
        the_agent.server.close()
    ok, exited, after_exit, crashed, after_crash = replies
    assert ok["result"]["lib"] == "from NODE_PATH"
    assert str(code / "node_modules") in ok["result"]["nodePath"].split(":")
    assert exited["errorType"] == "Runtime.ExitError"
    assert exited["errorMessage"] == ("RequestId: req-1 Error: Runtime exited with error: "
                                      "exit status 3")
    assert after_exit["result"]["pid"] != ok["result"]["pid"]
    assert after_exit["init_duration_ms"] is not None  # a new init
    assert crashed["errorType"] == "Error" and crashed["errorMessage"] == "crash"
    assert after_crash["result"]["pid"] != after_exit["result"]["pid"]


# -- response streaming (issue 16) ----------------------------------------------------------
STREAMING = """
exports.handler = awslambda.streamifyResponse(async (event, responseStream, context) => {
  responseStream.setContentType('text/plain');
  for (const word of ['one,', 'two,', 'three']) {
    responseStream.write(word);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  if (event.fail) throw new RangeError('after the stream began');
  responseStream.end();
});
"""


def test_a_streamify_response_handler_streams_chunk_by_chunk(tmp_path: Path) -> None:
    def scenario(harness: Harness, _proc: subprocess.Popen) -> object:
        chunks: list[tuple[float, bytes]] = []
        invocation = harness.submit({}, on_chunk=lambda c: chunks.append((time.monotonic(), c)))
        assert harness.wait(lambda: invocation.outcome is not None)
        failed = harness.invoke({"fail": True}, "req-2")
        return invocation.outcome, chunks, failed

    (outcome, chunks, failed), _ = run_node(tmp_path, {"index.js": STREAMING}, "index.handler",
                                            scenario)
    assert outcome == {"response_mode": "streaming", "content_type": "text/plain",
                       "streamed_bytes": 13}
    assert b"".join(c for _, c in chunks) == b"one,two,three" and len(chunks) >= 3
    assert chunks[-1][0] - chunks[0][0] >= 0.15  # written apart, received apart
    assert failed["errorType"] == "RangeError"
    assert failed["errorMessage"] == "after the stream began"
