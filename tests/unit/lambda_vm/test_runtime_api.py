"""The Runtime API over real loopback HTTP, without namespaces (no root): curl and raw
sockets against the h11 server, as AWS documents the API."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from lambda_vm.runtime_api import MAX_RESPONSE, PREFIX
from tests.unit.lambda_vm.harness import ARN, WAIT, Harness


@pytest.fixture()
def h() -> Harness:
    harness = Harness()
    yield harness
    harness.close()


def curl(h: Harness, *args: str, data: bytes | None = None) -> subprocess.CompletedProcess:
    """curl against the harness, the loop turning meanwhile: (its output, its status)."""
    with tempfile.TemporaryFile() as stdin, tempfile.TemporaryFile() as out:
        stdin.write(data or b"")
        stdin.seek(0)
        proc = subprocess.Popen(["curl", "-sS", *args], stdin=stdin, stdout=out,
                                stderr=subprocess.STDOUT)
        assert h.wait(lambda: proc.poll() is not None)
        out.seek(0)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out.read())


def url(h: Harness, path: str) -> str:
    return f"http://{h.address}{PREFIX}{path}"


def headers_of(path: Path) -> dict[str, str]:
    lines = path.read_bytes().decode().split("\r\n")
    return {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}


def test_next_carries_the_event_and_the_documented_headers(h: Harness, tmp_path: Path) -> None:
    invocation = h.submit({"a": 1}, "req-1", 5, client_context='{"custom": {"k": 1}}',
                          identity='{"cognitoIdentityId": "id"}')
    got = curl(h, "-D", str(tmp_path / "h"), url(h, "/invocation/next"))
    headers = headers_of(tmp_path / "h")
    assert json.loads(got.stdout) == {"a": 1}
    assert headers["lambda-runtime-aws-request-id"] == "req-1"
    assert headers["lambda-runtime-invoked-function-arn"] == ARN
    assert headers["lambda-runtime-deadline-ms"] == str(invocation.deadline_ms)
    assert headers["lambda-runtime-trace-id"].startswith("Root=1-")
    assert headers["lambda-runtime-client-context"] == '{"custom": {"k": 1}}'
    assert headers["lambda-runtime-cognito-identity"] == '{"cognitoIdentityId": "id"}'
    assert headers["content-type"] == "application/json" and "date" in headers
    answer = curl(h, "-w", "%{http_code}", "-d", '"ok"', url(h, "/invocation/req-1/response"))
    assert answer.stdout == b'{"status": "OK"}202'
    assert invocation.outcome == {"result": "ok"}


def test_a_chunked_response_body_is_the_result(h: Harness) -> None:
    invocation = h.submit({})
    curl(h, url(h, "/invocation/next"))
    answer = curl(h, "-H", "Transfer-Encoding: chunked", "--data-binary", "@-",
                  url(h, "/invocation/req-1/response"), data=b'{"piped": true}')
    assert answer.returncode == 0 and invocation.outcome == {"result": {"piped": True}}


def test_expect_100_continue_is_answered_before_the_body(h: Harness) -> None:
    invocation = h.submit({})
    curl(h, url(h, "/invocation/next"))
    sock = socket.create_connection(("127.0.0.1", h.port))
    sock.setblocking(False)
    body = b'"' + b"a" * (2 << 20) + b'"'
    sock.sendall(f"POST {PREFIX}/invocation/req-1/response HTTP/1.1\r\nHost: x\r\n"
                 f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n".encode())
    got = bytearray()
    assert h.wait(lambda: _read(sock, got) and b"\r\n\r\n" in got)
    assert got.startswith(b"HTTP/1.1 100 Continue\r\n")
    sock.setblocking(True)
    sock.sendall(body)
    sock.setblocking(False)
    assert h.wait(lambda: _read(sock, got) and b"202 Accepted" in got)
    assert invocation.outcome == {"result": "a" * (2 << 20)}
    sock.close()


def _read(sock: socket.socket, got: bytearray) -> bool:
    try:
        got.extend(sock.recv(1 << 20))
    except BlockingIOError:
        pass
    return True


def test_one_connection_carries_request_after_request(h: Harness) -> None:
    first, second = h.submit({"n": 1}, "a"), h.submit({"n": 2}, "b")
    sock = socket.create_connection(("127.0.0.1", h.port))
    sock.setblocking(False)
    got = bytearray()
    for count, rid in enumerate(("a", "b"), 1):
        sock.sendall(f"GET {PREFIX}/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert h.wait(lambda r=rid: _read(sock, got) and f"Request-Id: {r}".encode() in got)
        sock.sendall(f"POST {PREFIX}/invocation/{rid}/response HTTP/1.1\r\nHost: x\r\n"
                     f"Content-Length: 2\r\n\r\n{{}}".encode())
        assert h.wait(lambda n=count: _read(sock, got) and got.count(b"202 Accepted") == n)
    assert b"Connection: close" not in got
    assert first.outcome == second.outcome == {"result": {}}
    sock.close()


def test_a_large_event_is_sent_chunked_and_decoded(h: Harness) -> None:
    event = {"blob": "x" * 100_000}
    h.submit(event)
    got = curl(h, "-D", "-", url(h, "/invocation/next"))
    head, _, body = got.stdout.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    assert json.loads(body) == event


def test_an_oversized_response_is_refused_and_named_as_aws_does(h: Harness) -> None:
    invocation = h.submit({})
    curl(h, url(h, "/invocation/next"))
    size = MAX_RESPONSE + 1000
    answer = curl(h, "-w", " %{http_code}", "--data-binary", "@-",
                  url(h, "/invocation/req-1/response"), data=b"b" * size)
    assert answer.stdout.endswith(b" 413")
    assert json.loads(answer.stdout[:-4]) == {
        "errorMessage": "Exceeded maximum allowed payload size (6291556 bytes).",
        "errorType": "RequestEntityTooLarge"}
    assert invocation.outcome == {"errorType": "Function.ResponseSizeTooLarge", "errorMessage":
                                  f"Response payload size ({size} bytes) exceeded maximum "
                                  "allowed payload size (6291556 bytes)."}


def test_a_streamed_response_arrives_chunk_by_chunk(h: Harness) -> None:
    chunks: list[bytes] = []
    invocation = h.submit({}, on_chunk=chunks.append)
    curl(h, url(h, "/invocation/next"))
    sock = socket.create_connection(("127.0.0.1", h.port))
    sock.sendall(f"POST {PREFIX}/invocation/req-1/response HTTP/1.1\r\nHost: x\r\n"
                 "Lambda-Runtime-Function-Response-Mode: streaming\r\n"
                 "Content-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
    for part in (b"one,", b"two"):
        sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        assert h.wait(lambda p=part: chunks[-1:] == [p])  # before the next one is sent
    sock.sendall(b"0\r\n\r\n")
    assert h.wait(lambda: invocation.outcome is not None)
    assert invocation.outcome == {"response_mode": "streaming", "content_type": "text/plain",
                                  "streamed_bytes": 7}  # relayed: nothing kept
    sock.close()


def test_an_error_in_a_stream_comes_in_the_trailers(h: Harness) -> None:
    invocation = h.submit({})
    curl(h, url(h, "/invocation/next"))
    error = base64.b64encode(json.dumps({"errorMessage": "broke", "errorType": "E"}).encode())
    sock = socket.create_connection(("127.0.0.1", h.port))
    sock.sendall(f"POST {PREFIX}/invocation/req-1/response HTTP/1.1\r\nHost: x\r\n"
                 "Lambda-Runtime-Function-Response-Mode: streaming\r\n"
                 "Trailer: Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body"
                 "\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n"
                 "Lambda-Runtime-Function-Error-Type: Function.Broke\r\n"
                 f"Lambda-Runtime-Function-Error-Body: {error.decode()}\r\n\r\n".encode())
    assert h.wait(lambda: invocation.outcome is not None)
    assert invocation.outcome["errorType"] == "E" and invocation.outcome["errorMessage"] == "broke"
    sock.close()


def test_a_wrong_response_mode_is_refused(h: Harness) -> None:
    invocation = h.submit({})
    curl(h, url(h, "/invocation/next"))
    answer = curl(h, "-w", " %{http_code}", "-H", "Lambda-Runtime-Function-Response-Mode: x",
                  "-d", "1", url(h, "/invocation/req-1/response"))
    assert answer.stdout.endswith(b" 400") and b"InvalidFunctionResponseMode" in answer.stdout
    assert invocation.outcome["errorType"] == "Runtime.InvalidResponseModeHeader"


def test_errors_unknown_ids_paths_methods_and_the_stubs(h: Harness) -> None:
    invocation = h.submit({})
    curl(h, url(h, "/invocation/next"))
    wrong = curl(h, "-w", " %{http_code}", "-d", "1", url(h, "/invocation/nope/response"))
    assert wrong.stdout == b'{"errorMessage": "Invalid request ID", ' \
                           b'"errorType": "InvalidRequestID"} 400'
    assert curl(h, "-o", "/dev/null", "-w", "%{http_code}", url(h, "/nothing")).stdout == b"404"
    assert curl(h, "-o", "/dev/null", "-w", "%{http_code}", "-d", "",
                url(h, "/invocation/next")).stdout == b"405"
    stub = curl(h, "-w", " %{http_code}", "-X", "PUT", "-d", "{}",
                f"http://{h.address}/2022-07-01/telemetry")
    assert stub.stdout.endswith(b" 202") and b"Telemetry.NotSupported" in stub.stdout
    error = json.dumps({"errorMessage": "boom", "errorType": "KeyError", "stackTrace": ["x"]})
    posted = curl(h, "-w", " %{http_code}", "-H", "Lambda-Runtime-Function-Error-Type: Unhandled",
                  "-d", error, url(h, "/invocation/req-1/error"))
    assert posted.stdout.endswith(b" 202")
    assert invocation.outcome == {"errorMessage": "boom", "errorType": "KeyError",
                                  "stackTrace": ["x"]}


def test_timeout_and_init_error(h: Harness) -> None:
    assert h.invoke({}, "req-3", 0.05) == {"errorMessage": "Task timed out after 0.05 seconds",
                                           "errorType": "Sandbox.Timedout"}
    posted = curl(h, "-w", "%{http_code}", "-H", "Lambda-Runtime-Function-Error-Type: X",
                  "-d", '{"errorMessage": "no module"}', url(h, "/init/error"))
    assert posted.stdout.endswith(b"202")
    assert h.api.init_error == {"errorMessage": "no module", "errorType": "X", "stackTrace": []}


def test_malformed_http_is_a_400_and_the_connection_closes(h: Harness) -> None:
    sock = socket.create_connection(("127.0.0.1", h.port))
    sock.setblocking(False)
    sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
    got = bytearray()
    closed = []

    def read() -> bool:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return False
        got.extend(data)
        if not data:
            closed.append(True)
        return bool(closed)
    assert h.wait(read, WAIT)
    assert got.startswith(b"HTTP/1.1 400 ")
    sock.close()
