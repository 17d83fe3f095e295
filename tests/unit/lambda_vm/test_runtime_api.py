"""The Runtime API broker over real loopback HTTP, without namespaces (no root)."""

from __future__ import annotations

import asyncio
import json

from lambda_vm.runtime_api import PREFIX, Broker


async def http(port: int, method: str, path: str, body: bytes = b"",
               headers: dict | None = None) -> tuple[int, dict, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = [f"{method} {path} HTTP/1.1", "Host: x", f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    status = int((await reader.readline()).split()[1])
    reply_headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        reply_headers[name.strip().lower()] = value.strip()
    data = await reader.readexactly(int(reply_headers.get("content-length", 0)))
    writer.close()
    return status, reply_headers, data


async def with_broker(scenario) -> object:
    broker = Broker("arn:aws:lambda:us-east-1:1:function:f")
    server = await asyncio.start_server(broker.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        return await scenario(broker, port)


def test_next_carries_the_event_and_headers_and_response_completes_the_invoke() -> None:
    async def scenario(broker: Broker, port: int):
        pending = asyncio.create_task(broker.invoke({"a": 1}, "req-1", 5))
        status, headers, body = await http(port, "GET", PREFIX + "/invocation/next")
        assert status == 200 and json.loads(body) == {"a": 1}
        assert headers["lambda-runtime-aws-request-id"] == "req-1"
        assert headers["lambda-runtime-invoked-function-arn"].endswith(":function:f")
        assert int(headers["lambda-runtime-deadline-ms"]) > 0
        assert headers["lambda-runtime-trace-id"].startswith("Root=1-")
        status, _, _ = await http(port, "POST", PREFIX + "/invocation/req-1/response", b'"ok"')
        assert status == 202
        return await pending
    assert asyncio.run(with_broker(scenario)) == {"result": "ok"}


def test_error_post_and_unknown_request_id() -> None:
    async def scenario(broker: Broker, port: int):
        pending = asyncio.create_task(broker.invoke({}, "req-2", 5))
        await http(port, "GET", PREFIX + "/invocation/next")
        status, _, body = await http(port, "POST", PREFIX + "/invocation/nope/response", b"1")
        assert status == 400 and json.loads(body)["errorType"] == "InvalidRequestID"
        error = json.dumps({"errorMessage": "boom", "errorType": "KeyError"}).encode()
        await http(port, "POST", PREFIX + "/invocation/req-2/error", error)
        return await pending
    reply = asyncio.run(with_broker(scenario))
    assert reply["errorMessage"] == "boom" and reply["errorType"] == "KeyError"


def test_timeout_and_init_error() -> None:
    async def scenario(broker: Broker, port: int):
        reply = await broker.invoke({}, "req-3", 0.05)
        status, _, _ = await http(port, "POST", PREFIX + "/init/error",
                                  b'{"errorMessage": "no module", "errorType": "X"}')
        assert status == 202 and broker.first_next.done()
        return reply, broker.init_error
    reply, init_error = asyncio.run(with_broker(scenario))
    assert reply["errorType"] == "Sandbox.Timedout"
    assert init_error["errorMessage"] == "no module"


def test_unknown_path_is_404() -> None:
    async def scenario(_broker: Broker, port: int):
        return (await http(port, "GET", "/2018-06-01/other"))[0]
    assert asyncio.run(with_broker(scenario)) == 404
