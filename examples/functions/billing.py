"""Example function: shares orders' ENIs (same subnets and security groups)."""

import json
import urllib.request


def handler(event, context):
    with urllib.request.urlopen("http://10.0.1.10:8080/whoami", timeout=5) as response:
        return {"function": context.function_name, "database_saw": json.load(response)["client"]}
