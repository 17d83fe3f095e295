"""Hold one HTTP/1.1 connection across a rule change (run inside a namespace).

    python -m tests.integration.keepalive --url http://HOST:PORT --ready FILE --go FILE

Sends ``GET /whoami``, touches ``--ready``, waits for ``--go`` to exist, then sends a
second ``GET /whoami`` on the same connection and prints both replies as one JSON object:
the same client port in both shows the tracked flow kept going.
"""

from __future__ import annotations

import argparse
import http.client
import json
import time
from pathlib import Path
from urllib.parse import urlparse


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--ready", required=True)
    parser.add_argument("--go", required=True)
    parser.add_argument("--wait", type=float, default=30)
    args = parser.parse_args()
    url = urlparse(args.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    conn.request("GET", "/whoami")
    first = json.loads(conn.getresponse().read())
    Path(args.ready).touch()
    deadline = time.monotonic() + args.wait
    while not Path(args.go).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    conn.request("GET", "/whoami")
    second = json.loads(conn.getresponse().read())
    print(json.dumps({"first": first, "second": second}))


if __name__ == "__main__":
    main()
