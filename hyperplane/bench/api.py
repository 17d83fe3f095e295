"""A warm Invoke through the AWS endpoint, next to ``hyperplane invoke`` (side effects).

The same function (``fleet``: one of its environments is warm after the first call)
is invoked three ways, one call at a time: a boto3 client on this machine through the
endpoint (SigV4, REST-JSON, the controller), the controller's socket directly (what
the endpoint adds is the difference), and the ``hyperplane invoke`` command (a new
Python process each time: what a shell user pays).  Figures: median and p99 in ms.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable

from hyperplane.bench import workloads
from hyperplane.emulator import requests, running
from hyperplane.kernel import state

FUNCTION = "fleet"


def _timed(call: Callable[[], object], count: int) -> dict:
    call()  # warm: the environment exists, the client's connection is open
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {"p50": workloads.percentile(samples, 50), "p99": workloads.percentile(samples, 99),
            "count": count}


def _boto3_invoke() -> Callable[[], object]:
    import boto3
    from botocore.config import Config

    settings = running.api_settings(running.require())
    env = settings["environment"]
    client = boto3.client("lambda", endpoint_url=settings["url"], region_name="us-east-1",
                          aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key="bench", config=Config(retries={
                              "max_attempts": 1}))

    def call() -> object:
        return client.invoke(FunctionName=FUNCTION, Payload=b'{"n": 1}')["Payload"].read()
    return call


def _cli_invoke() -> object:
    return subprocess.run([sys.executable, "-m", "hyperplane", "invoke", FUNCTION],
                          capture_output=True, check=True, timeout=60,
                          env=dict(os.environ, HYPERPLANE_STATE_DIR=str(state.state_dir())))


def measure(count: int, cli_count: int) -> dict:
    return {"endpoint": _timed(_boto3_invoke(), count),
            "controller": _timed(lambda: requests.invoke(FUNCTION, {"n": 1}), count),
            "cli": _timed(_cli_invoke, cli_count)}
