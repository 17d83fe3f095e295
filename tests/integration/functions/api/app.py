"""A function for the AWS API tests: it asks the database who called, and can fail."""

import json
import os
import urllib.request


def handler(event, context):
    if event.get("fail"):
        raise ValueError("asked to fail")
    print("handling", json.dumps(event), flush=True)
    url = event.get("url", "http://10.0.1.10:8080/whoami")
    with urllib.request.urlopen(url, timeout=3) as response:
        return {"seen": json.load(response), "table": os.environ.get("TABLE"),
                "region": os.environ.get("AWS_REGION")}
