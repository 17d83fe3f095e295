"""Lambda's operations on the endpoint: boto3 params in, the controller's answer out.

Each handler turns one call (``server.Call``: boto3 params, the caller's account and
region) into the controller request the CLI's ``function`` commands make too (one
code path, one source of truth), and the answer into Lambda's output shape:
``FunctionConfiguration`` keeps only the members botocore's model knows (the CLI's
own extensions such as ``Networking`` stay out).  ``Code.ZipFile`` is unzipped into
the state directory (``kernel.codestore``) before the controller sees the function.

    CreateFunction GetFunction GetFunctionConfiguration ListFunctions DeleteFunction
    UpdateFunctionConfiguration UpdateFunctionCode Invoke InvokeWithResponseStream
    PutFunctionConcurrency GetFunctionConcurrency DeleteFunctionConcurrency
    GetAccountSettings

``ClientContext`` (``X-Amz-Client-Context``: base64 of a JSON object, at most 3,583
bytes) reaches the runtime decoded, as ``Lambda-Runtime-Client-Context``.
``InvokeWithResponseStream`` relays the controller's stream (``requests.invoke_stream``)
as events: each chunk of a streamed response a ``PayloadChunk`` as it arrives (a response
that is not streamed: its JSON in one), then ``InvokeComplete``: ``ErrorCode`` (the
error's type, e.g. ``Sandbox.Timedout``) and ``ErrorDetails`` (its message) when the
function failed, ``LogResult`` (base64 of the log's last 4 KB) for ``LogType: Tail``.
An error the API itself answers (not found, not ready, too large) is a plain HTTP error,
before any event.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
from collections.abc import Callable, Iterator

from hyperplane.emulator.requests import controller_request, invoke_stream
from hyperplane.endpoint import models
from hyperplane.endpoint.server import STATUS_KEY, Call
from hyperplane.errors import ApiError
from hyperplane.kernel import codestore

INVOKE_LIMIT = {"RequestResponse": 6 * 1024 * 1024, "Event": 256 * 1024,
                "DryRun": 6 * 1024 * 1024}
PAGE = 50  # ListFunctions: AWS's default MaxItems
CLIENT_CONTEXT_LIMIT = 3583  # bytes of ClientContext's JSON


def _members(shape_name: str) -> frozenset[str]:
    return frozenset(models.service("lambda").shape_for(shape_name).members)


def configuration(view: dict) -> dict:
    """The controller's function view as Lambda's FunctionConfiguration."""
    keep = _members("FunctionConfiguration")
    config = {k: v for k, v in view.items() if k in keep and v is not None}
    if not config.get("Environment", {}).get("Variables"):
        config.pop("Environment", None)
    return config


def function_name(params: dict) -> str:
    """A name from a name, a full ARN or a partial one (``ACCOUNT:function:NAME``)."""
    raw = str(params.get("FunctionName") or "")
    if not raw:
        raise ApiError("InvalidParameterValueException", "FunctionName is required")
    if ":function:" in raw:
        raw = raw.split(":function:", 1)[1].split(":", 1)[0]
    return raw


def _ask(call: Call, message: dict, timeout: float = 60.0) -> dict:
    return controller_request({**message, "account": call.account, "region": call.region},
                              timeout)


def _vpc(params: dict) -> dict:
    config = params.get("VpcConfig")
    if config is None:
        return {}
    return {"subnet_ids": list(config.get("SubnetIds") or []),
            "security_group_ids": list(config.get("SecurityGroupIds") or [])}


def _settings(params: dict) -> dict:
    """The request fields UpdateFunctionConfiguration and CreateFunction share."""
    fields = {"handler": params.get("Handler"), "memory": params.get("MemorySize"),
              "timeout": params.get("Timeout"), "runtime": params.get("Runtime"),
              "role": params.get("Role"), "description": params.get("Description")}
    if "Environment" in params:
        fields["environment"] = dict((params["Environment"] or {}).get("Variables") or {})
    return {k: v for k, v in fields.items() if v is not None}


def _zip(name: str, code: dict) -> dict:
    if not code.get("ZipFile"):
        what = next((k for k in ("S3Bucket", "ImageUri") if code.get(k)), None)
        raise ApiError("InvalidParameterValueException",
                       f"Code.{what} is not supported by this emulator: give Code.ZipFile"
                       if what else "Code.ZipFile is required")
    directory, sha, size = codestore.store_zip(name, code["ZipFile"])
    return {"code": directory, "code_sha256": sha, "code_size": size}


def create_function(call: Call) -> dict:
    p = call.params
    name = function_name(p)
    if p.get("PackageType", "Zip") != "Zip":
        raise ApiError("InvalidParameterValueException",
                       "Only PackageType Zip is supported by this emulator")
    for key in ("Runtime", "Handler", "Role"):
        if not p.get(key):
            raise ApiError("InvalidParameterValueException", f"{key} is required")
    request = {"op": "function.create", "name": name, **_settings(p), **_vpc(p),
               **_zip(name, p.get("Code") or {})}
    return {**configuration(_ask(call, request)), STATUS_KEY: 201}


def get_function_configuration(call: Call) -> dict:
    return configuration(_ask(call, {"op": "function.get", "name": function_name(call.params)}))


def get_function(call: Call) -> dict:
    view = _ask(call, {"op": "function.get", "name": function_name(call.params)})
    out = {"Configuration": configuration(view), "Tags": {},
           "Code": {"RepositoryType": "S3",
                    "Location": f"file://{view.get('CodeDirectory', '')}"}}
    if view.get("ReservedConcurrentExecutions") is not None:
        out["Concurrency"] = {"ReservedConcurrentExecutions":
                              view["ReservedConcurrentExecutions"]}
    return out


def list_functions(call: Call) -> dict:
    views = sorted(_ask(call, {"op": "function.list"})["Functions"],
                   key=lambda v: v["FunctionName"])
    marker = call.params.get("Marker")
    if marker:
        try:
            after = base64.urlsafe_b64decode(marker.encode()).decode()
        except (ValueError, UnicodeDecodeError):
            raise ApiError("InvalidParameterValueException", "Invalid Marker") from None
        views = [v for v in views if v["FunctionName"] > after]
    size = int(call.params.get("MaxItems") or PAGE)
    if not 1 <= size <= 10000:
        raise ApiError("InvalidParameterValueException", "MaxItems must be 1 to 10000")
    page = views[:size]
    out: dict = {"Functions": [configuration(v) for v in page]}
    if len(views) > size:
        out["NextMarker"] = base64.urlsafe_b64encode(
            page[-1]["FunctionName"].encode()).decode()
    return out


def update_function_configuration(call: Call) -> dict:
    p = call.params
    request = {"op": "function.update", "name": function_name(p), **_settings(p), **_vpc(p)}
    return configuration(_ask(call, request))


def update_function_code(call: Call) -> dict:
    name = function_name(call.params)
    _ask(call, {"op": "function.get", "name": name})  # 404 before anything is unzipped
    request = {"op": "function.update", "name": name, **_zip(name, call.params)}
    return configuration(_ask(call, request))


def delete_function(call: Call) -> dict:
    _ask(call, {"op": "function.delete", "name": function_name(call.params)})
    return {"StatusCode": 204}


def _payload(p: dict, mode: str) -> object:
    if mode not in INVOKE_LIMIT:
        raise ApiError("InvalidParameterValueException", f"Invalid InvocationType: {mode}")
    raw = p.get("Payload") or b"{}"
    if len(raw) > INVOKE_LIMIT[mode]:
        raise ApiError("RequestTooLargeException", f"Request must be smaller than "
                       f"{INVOKE_LIMIT[mode]} bytes for the InvokeFunction operation", 413)
    try:
        return json.loads(raw)
    except ValueError:
        raise ApiError("InvalidRequestContentException", "Could not parse request body into "
                       "json: Could not parse payload into json") from None


def client_context(p: dict) -> str | None:
    """``ClientContext`` (base64 of a JSON object) as the JSON text the runtime gets."""
    raw = p.get("ClientContext")
    if not raw:
        return None
    try:
        text = base64.b64decode(raw, validate=True).decode("utf-8")
        valid = isinstance(json.loads(text), dict)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        valid = False
    if not valid:
        raise ApiError("InvalidRequestContentException",
                       "Client context must be a valid Base64-encoded JSON object.")
    if len(text.encode()) > CLIENT_CONTEXT_LIMIT:
        raise ApiError("InvalidParameterValueException", "Client context must be at most "
                       f"{CLIENT_CONTEXT_LIMIT} bytes of JSON")
    return text


def _invoke_request(p: dict, mode: str) -> dict:
    return {"op": "invoke", "name": function_name(p), "payload": _payload(p, mode),
            "mode": mode, "log_tail": p.get("LogType") == "Tail",
            "client_context": client_context(p)}


def invoke(call: Call) -> dict:
    p = call.params
    mode = p.get("InvocationType") or "RequestResponse"
    reply = _ask(call, _invoke_request(p, mode), timeout=1000)
    if mode != "RequestResponse":
        return {"StatusCode": reply["status"]}
    out: dict = {"StatusCode": 200, "ExecutedVersion": "$LATEST"}
    if "errorType" in reply:
        out["FunctionError"] = "Unhandled"
        out["Payload"] = json.dumps(_error(reply)).encode()
    else:
        out["Payload"] = json.dumps(reply.get("result")).encode()
    if p.get("LogType") == "Tail":
        out["LogResult"] = base64.b64encode(reply.get("log_tail", "").encode()).decode()
    return out


def _error(reply: dict) -> dict:
    return {k: reply[k] for k in ("errorMessage", "errorType", "stackTrace", "trace")
            if k in reply}


def invoke_with_response_stream(call: Call) -> dict:
    p = call.params
    mode = p.get("InvocationType") or "RequestResponse"
    if mode not in ("RequestResponse", "DryRun"):
        raise ApiError("InvalidParameterValueException", f"Invalid InvocationType: {mode}")
    request = _invoke_request(p, mode)
    if mode == "DryRun":
        _ask(call, request)
        return {"StatusCode": 204}
    lines = invoke_stream({**request, "account": call.account, "region": call.region})
    first = next(lines)  # an error the API answers is raised here, before any event
    return {"StatusCode": 200, "ExecutedVersion": "$LATEST",
            "EventStream": _events(itertools.chain([first], lines), p.get("LogType") == "Tail")}


def _events(lines: Iterator[dict], tail: bool) -> Iterator[dict]:
    """The controller's stream as InvokeWithResponseStream's events."""
    for line in lines:
        if "chunk" in line:
            yield {"PayloadChunk": {"Payload": base64.b64decode(line["chunk"])}}
        elif "reply" in line:
            reply, complete = line["reply"], {}
            if "errorType" in reply:
                complete = {"ErrorCode": reply["errorType"],
                            "ErrorDetails": reply.get("errorMessage", "")}
            elif "result" in reply:  # a response that was not streamed: one chunk
                yield {"PayloadChunk": {"Payload": json.dumps(reply["result"]).encode()}}
            if tail:
                complete["LogResult"] = base64.b64encode(
                    reply.get("log_tail", "").encode()).decode()
            yield {"InvokeComplete": complete}
            return


def put_function_concurrency(call: Call) -> dict:
    value = call.params.get("ReservedConcurrentExecutions")
    if value is None:
        raise ApiError("InvalidParameterValueException",
                       "ReservedConcurrentExecutions is required")
    return _ask(call, {"op": "function.concurrency", "name": function_name(call.params),
                       "reserved": value})


def get_function_concurrency(call: Call) -> dict:
    view = _ask(call, {"op": "function.get", "name": function_name(call.params)})
    value = view.get("ReservedConcurrentExecutions")
    return {} if value is None else {"ReservedConcurrentExecutions": value}


def delete_function_concurrency(call: Call) -> dict:
    _ask(call, {"op": "function.concurrency", "name": function_name(call.params),
                "reserved": None})
    return {STATUS_KEY: 204}


def get_account_settings(call: Call) -> dict:
    return _ask(call, {"op": "account.settings"})


HANDLERS: dict[tuple[str, str], Callable[[Call], dict]] = {
    ("lambda", "CreateFunction"): create_function,
    ("lambda", "GetFunction"): get_function,
    ("lambda", "GetFunctionConfiguration"): get_function_configuration,
    ("lambda", "ListFunctions"): list_functions,
    ("lambda", "UpdateFunctionConfiguration"): update_function_configuration,
    ("lambda", "UpdateFunctionCode"): update_function_code,
    ("lambda", "DeleteFunction"): delete_function,
    ("lambda", "Invoke"): invoke,
    ("lambda", "InvokeWithResponseStream"): invoke_with_response_stream,
    ("lambda", "PutFunctionConcurrency"): put_function_concurrency,
    ("lambda", "GetFunctionConcurrency"): get_function_concurrency,
    ("lambda", "DeleteFunctionConcurrency"): delete_function_concurrency,
    ("lambda", "GetAccountSettings"): get_account_settings,
}
