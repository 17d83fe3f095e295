"""The streaming runtime's loop: each event's response goes out in three chunks."""

import http.client
import os
import time

host, _, port = os.environ["AWS_LAMBDA_RUNTIME_API"].partition(":")
PREFIX = "/2018-06-01/runtime"
while True:
    conn = http.client.HTTPConnection(host, int(port))
    conn.request("GET", PREFIX + "/invocation/next")
    answer = conn.getresponse()
    answer.read()
    request_id = answer.getheader("Lambda-Runtime-Aws-Request-Id")
    conn.putrequest("POST", f"{PREFIX}/invocation/{request_id}/response")
    conn.putheader("Lambda-Runtime-Function-Response-Mode", "streaming")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.putheader("Content-Type", "text/plain")
    conn.endheaders()
    for part in (b"first,", b"second,", b"third"):
        conn.send(b"%x\r\n%s\r\n" % (len(part), part))
        time.sleep(0.2)
    conn.send(b"0\r\n\r\n")
    conn.getresponse().read()
    conn.close()
