"""Response streaming from the runtime to the caller, as it arrives (issue 16).

A streaming custom runtime (``functions/gated``) sends its first chunk and then waits
for a gate file that the test creates only after it has seen that chunk at the caller:
the CLI's stdout (``hyperplane invoke``) or boto3's ``invoke_with_response_stream``
through the AWS endpoint.  The rest of the body then follows; the concatenation is
compared byte for byte with what the runtime sent (pseudo-random bytes, not UTF-8).  An
error after the stream began ends it with ``InvokeComplete``'s ``ErrorCode``; the
endpoint's ``ClientContext`` reaches the runtime as ``Lambda-Runtime-Client-Context``.
"""

from __future__ import annotations

import base64
import json
import os
import random
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from tests.integration import hp

TOPOLOGY = "tests/integration/functions/streaming.yaml"
ACCOUNT = "111111111111"
SIZE = 3_000_000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


PORT = free_port()


@pytest.fixture(scope="module")
def streaming(state_dir: Path) -> Iterator[dict]:
    def up() -> Iterator[dict]:
        try:
            yield hp.run_json("up", TOPOLOGY, "--api-port", str(PORT), state_dir=state_dir)
        finally:
            hp.run("down", state_dir=state_dir, check=False)
            hp.run("cleanup", state_dir=state_dir, check=False)
    yield from up()


def lambda_client():
    return boto3.client("lambda", endpoint_url=f"http://127.0.0.1:{PORT}",
                        aws_access_key_id=ACCOUNT, aws_secret_access_key="anything",
                        region_name="us-east-1",
                        config=Config(retries={"max_attempts": 1}, read_timeout=120))


def expected(seed: int, size: int = SIZE) -> bytes:
    return random.Random(seed).randbytes(size)


def cli(state_dir: Path, payload: dict) -> subprocess.Popen:
    env = dict(os.environ, HYPERPLANE_STATE_DIR=str(state_dir))
    return subprocess.Popen([*hp.CLI, "invoke", "gated", "--payload", json.dumps(payload)],
                            cwd=hp.REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def test_the_cli_prints_chunks_before_the_function_has_finished(state_dir: Path,
                                                                streaming: dict,
                                                                tmp_path: Path) -> None:
    gate = tmp_path / "gate-cli"
    proc = cli(state_dir, {"bytes": SIZE, "seed": 1, "gate": str(gate)})
    try:
        first = proc.stdout.read(1)  # the first chunk: one byte, then the runtime waits
        assert first == expected(1)[:1]
        assert proc.poll() is None  # the invocation is not over: the gate is shut
        gate.touch()
        rest = proc.stdout.read()
        assert proc.wait(60) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert first + rest == expected(1)  # byte for byte, nothing added


def test_the_cli_says_an_error_after_the_stream_began(state_dir: Path,
                                                      streaming: dict) -> None:
    result = subprocess.run([*hp.CLI, "invoke", "gated", "--payload",
                             json.dumps({"bytes": 200000, "seed": 2, "fail": True})],
                            cwd=hp.REPO, env=dict(os.environ, HYPERPLANE_STATE_DIR=str(
                                state_dir)), capture_output=True, timeout=120)
    assert result.returncode == 1
    assert result.stdout == expected(2, 200000)
    assert result.stderr.decode().strip() == "hyperplane: StreamBroke: after the chunks"


def test_no_stream_waits_for_the_whole_body(state_dir: Path, streaming: dict) -> None:
    reply = json.loads(hp.run("invoke", "gated", "--payload", json.dumps({
        "context": True}), "--json", state_dir=state_dir).stdout)
    assert reply["response_mode"] == "streaming" and reply["result"] is None


def test_boto3_iterates_the_chunks_as_they_arrive(state_dir: Path, streaming: dict,
                                                  tmp_path: Path) -> None:
    gate = tmp_path / "gate-boto3"
    answer = lambda_client().invoke_with_response_stream(
        FunctionName="gated", Payload=json.dumps({"bytes": SIZE, "seed": 3,
                                                  "gate": str(gate)}).encode(),
        LogType="Tail")
    assert answer["StatusCode"] == 200 and answer["ExecutedVersion"] == "$LATEST"
    assert answer["ResponseStreamContentType"] == "application/vnd.amazon.eventstream"
    events = iter(answer["EventStream"])
    first = next(events)  # before the gate exists: the function cannot have finished
    assert first == {"PayloadChunk": {"Payload": expected(3)[:1]}}
    gate.touch()
    rest = list(events)
    complete = rest.pop()
    assert set(complete) == {"InvokeComplete"}
    assert "ErrorCode" not in complete["InvokeComplete"]
    log = base64.b64decode(complete["InvokeComplete"]["LogResult"]).decode()
    assert "END RequestId:" in log and "REPORT RequestId:" in log
    body = first["PayloadChunk"]["Payload"] + b"".join(e["PayloadChunk"]["Payload"]
                                                       for e in rest)
    assert body == expected(3)


def test_an_error_mid_stream_is_invoke_complete_with_its_error_code(state_dir: Path,
                                                                    streaming: dict) -> None:
    answer = lambda_client().invoke_with_response_stream(
        FunctionName="gated", Payload=json.dumps({"bytes": 100000, "seed": 4,
                                                  "fail": True}).encode())
    events = list(answer["EventStream"])
    assert events[-1] == {"InvokeComplete": {"ErrorCode": "StreamBroke",
                                             "ErrorDetails": "after the chunks"}}
    assert b"".join(e["PayloadChunk"]["Payload"] for e in events[:-1]) == \
        expected(4, 100000)


def test_client_context_reaches_the_runtime(state_dir: Path, streaming: dict) -> None:
    context = {"custom": {"tenant": "t-7"}, "env": {"locale": "fr_FR"}}
    encoded = base64.b64encode(json.dumps(context).encode()).decode()
    client = lambda_client()
    plain = client.invoke(FunctionName="gated", ClientContext=encoded,
                          Payload=b'{"context": true}')
    assert json.loads(plain["Payload"].read()) == context
    streamed = client.invoke_with_response_stream(FunctionName="gated", ClientContext=encoded,
                                                  Payload=b'{"context": true}')
    events = list(streamed["EventStream"])
    assert json.loads(b"".join(e["PayloadChunk"]["Payload"] for e in events[:-1])) == context


def test_an_unknown_function_is_an_http_error_before_any_event(streaming: dict) -> None:
    with pytest.raises(lambda_client().exceptions.ResourceNotFoundException):
        lambda_client().invoke_with_response_stream(FunctionName="nope", Payload=b"{}")
