"""``python -m hyperplane.endpoint --port P``: the AWS-compatible endpoint process (I/O).

Started by ``hyperplane up`` in the machine's own network namespace, listening on
127.0.0.1 only, recorded as ``endpoint`` (stopped by ``down``, ended by ``cleanup``).
Every call is served by the controller (``lambda_ops``, ``ec2_ops``): there is no
second source of truth.  A 12-digit access key id selects that account when the
topology has it; any other key, the topology's own account.  The signature itself
is never checked (any well-formed SigV4 request is accepted).
"""

from __future__ import annotations

import argparse
import re
import sys
import threading
import time

from hyperplane.emulator.requests import controller_request
from hyperplane.endpoint.ec2_ops import HANDLERS as EC2
from hyperplane.endpoint.flowlog_ops import HANDLERS as FLOWLOGS
from hyperplane.endpoint.lambda_ops import HANDLERS as LAMBDA
from hyperplane.endpoint.server import Endpoint, serve

ACCOUNT_KEY = re.compile(r"[0-9]{12}")
CACHE_SECONDS = 1.0


class Accounts:
    """The topology's accounts, asked of the controller at most once a second."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.asked, self.known, self.default = 0.0, frozenset(), ""

    def __call__(self, access_key: str) -> str:
        with self.lock:
            if time.monotonic() - self.asked > CACHE_SECONDS:
                answer = controller_request({"op": "accounts"})
                self.known, self.default = frozenset(answer["accounts"]), answer["default"]
                self.asked = time.monotonic()
            known, default = self.known, self.default
        return access_key if ACCOUNT_KEY.fullmatch(access_key) and access_key in known \
            else default


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hyperplane.endpoint")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    endpoint = Endpoint(args.port, {**LAMBDA, **EC2, **FLOWLOGS}, Accounts())
    print(f"hyperplane endpoint listening on {endpoint.url}", file=sys.stderr, flush=True)
    serve(endpoint)
    return 0


if __name__ == "__main__":
    sys.exit(main())
