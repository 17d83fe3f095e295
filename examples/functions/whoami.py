"""Example function: fetch a URL (default: the emulated internet's public server).

The event may name the URL: {"url": "http://db.vpc-app.internal:8080/whoami"}.  The
reply says who the server thought was calling, or why the request failed.
"""

import json
import urllib.request

DEFAULT_URL = "http://203.0.113.10/whoami"


def handler(event, context):
    url = (event or {}).get("url", DEFAULT_URL)
    try:
        with urllib.request.urlopen(url, timeout=(event or {}).get("timeout", 3)) as response:
            return {"function": context.function_name, "url": url, "saw": json.load(response)}
    except OSError as exc:
        return {"function": context.function_name, "url": url, "error": str(exc)}
