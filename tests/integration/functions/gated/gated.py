"""A streaming custom runtime (Lambda-Runtime-Function-Response-Mode: streaming) whose
response is held by a gate, so that a test can show the first chunk reached the caller
before the function finished.  The event says what to send:

    {"bytes": N, "seed": S}  N pseudo-random bytes of Random(S), in uneven chunks
    {"gate": PATH}           after the first chunk, wait until PATH exists
    {"fail": true}           end with an error in the trailers (after the chunks)
    {"context": true}        the body is the Lambda-Runtime-Client-Context header
"""

import base64
import http.client
import json
import os
import random
import time

host, _, port = os.environ["AWS_LAMBDA_RUNTIME_API"].partition(":")
PREFIX = "/2018-06-01/runtime"
SIZES = (1, 700, 65536, 3, 100000, 12345)  # uneven chunks, cycled


def body(event: dict, context: str) -> bytes:
    if event.get("context"):
        return context.encode()
    return random.Random(event.get("seed", 0)).randbytes(int(event.get("bytes", 0)))


def wait_for(path: str, deadline_ms: int) -> None:
    while not os.path.exists(path) and time.time() * 1000 < deadline_ms:
        time.sleep(0.01)


def respond(conn: http.client.HTTPConnection, request_id: str, event: dict,
            headers: http.client.HTTPMessage) -> None:
    data = body(event, headers.get("Lambda-Runtime-Client-Context") or "")
    conn.putrequest("POST", f"{PREFIX}/invocation/{request_id}/response")
    conn.putheader("Lambda-Runtime-Function-Response-Mode", "streaming")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.putheader("Content-Type", "application/octet-stream")
    conn.putheader("Trailer", "Lambda-Runtime-Function-Error-Type, "
                   "Lambda-Runtime-Function-Error-Body")
    conn.endheaders()
    start, turn = 0, 0
    while start < len(data):
        part = data[start:start + SIZES[turn % len(SIZES)]]
        conn.send(b"%x\r\n%s\r\n" % (len(part), part))
        if turn == 0 and event.get("gate"):
            wait_for(event["gate"], int(headers["Lambda-Runtime-Deadline-Ms"]))
        start, turn = start + len(part), turn + 1
    if event.get("fail"):
        error = json.dumps({"errorType": "StreamBroke", "errorMessage": "after the chunks"})
        conn.send(b"0\r\nLambda-Runtime-Function-Error-Type: StreamBroke\r\n"
                  b"Lambda-Runtime-Function-Error-Body: " +
                  base64.b64encode(error.encode()) + b"\r\n\r\n")
    else:
        conn.send(b"0\r\n\r\n")
    conn.getresponse().read()


while True:
    conn = http.client.HTTPConnection(host, int(port))
    conn.request("GET", PREFIX + "/invocation/next")
    answer = conn.getresponse()
    event = json.loads(answer.read() or b"{}")
    respond(conn, answer.getheader("Lambda-Runtime-Aws-Request-Id"), event, answer.headers)
    conn.close()
