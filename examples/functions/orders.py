"""Example function: asks the database host who it thinks is calling.

Runs in an execution environment whose only way out is Hyperplane, so the
database sees the Hyperplane ENI's address, never the environment's own.
"""

import json
import os
import socket
import urllib.request

DB_URL = os.environ.get("DB_URL", "http://10.0.1.10:8080/whoami")


def local_address() -> str:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("10.0.1.10", 9))
        return probe.getsockname()[0]
    finally:
        probe.close()


def handler(event, context):
    with urllib.request.urlopen(DB_URL, timeout=5) as response:
        seen = json.load(response)
    return {
        "function": context.function_name,
        "request_id": context.aws_request_id,
        "environment_ip": local_address(),
        "database_saw": seen["client"],
        "event": event,
    }
