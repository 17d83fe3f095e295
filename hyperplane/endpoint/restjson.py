"""The ``rest-json`` protocol (Lambda) read from botocore's service model (pure).

* ``route(model, method, target)`` finds the operation whose ``http.method`` and
  ``http.requestUri`` template match a request (``target`` is the request's path,
  with or without its query string): ``{Name}`` labels match one path segment,
  greedy ``{Name+}`` labels the rest; a template's fixed query
  (``/2018-10-31/layers?find=LayerVersion``) must be in the request's query, and
  the template that asks for it wins over the one that does not.  Labels come
  back URL-decoded, keyed by their name in the template.
* ``parse(op, labels, query, headers, body)`` is the operation's input as boto3
  params: each member from its ``location`` (``uri``, ``querystring``,
  ``header``, ``headers`` prefix map) or the JSON body, converted per shape
  (numbers, booleans, timestamps as aware UTC datetimes, blobs as bytes); a blob
  ``payload`` member (Invoke's ``Payload``) is the raw body as bytes, absent when
  the body is empty.  Malformed input raises ``ProtocolError``; JSON keys the
  shape does not know are dropped.
* ``serialize(op, output)`` is ``(status, headers, body)``: the status is the
  output's ``statusCode`` member, else the operation's ``http.responseCode``,
  else 200, and ``output["__status__"]`` overrides all three; ``header`` members
  become headers, a blob payload is the raw body, every other member the JSON
  body (blobs base64, timestamps in the shape's format, epoch seconds by
  default).  Members absent or ``None`` are left out, and so are keys the shape
  does not know.  A 204 has an empty body.
* ``serialize_error(model, error)`` is AWS's rest-json error: ``error.status``,
  ``x-amzn-ErrorType: <kind>``, and the body ``{"Type": "User"|"Service",
  "message": ..., **error.extra}``; the message key is spelled as the modelled
  error shape spells it (Lambda's ``ResourceNotFoundException`` says
  ``Message``, ``ResourceConflictException`` says ``message``), and extra
  members the shape puts in headers go to headers (``retryAfterSeconds`` of
  ``TooManyRequestsException`` is ``Retry-After``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from urllib.parse import parse_qs, unquote

from botocore.model import OperationModel, ServiceModel, Shape

from hyperplane.endpoint import models
from hyperplane.endpoint.wire import (
    FLOATS,
    INTEGERS,
    STRINGS,
    ProtocolError,
    b64decode,
    b64encode,
    float_value,
    format_timestamp,
    from_text,
    to_datetime,
    to_text,
)
from hyperplane.errors import ApiError

STATUS_KEY = "__status__"
CONTENT_TYPE = "application/json"
_LABEL = re.compile(r"(\{[^}]+\})")


@dataclass(frozen=True)
class _Route:
    op: OperationModel
    method: str
    pattern: re.Pattern[str]
    labels: tuple[str, ...]
    fixed: tuple[tuple[str, str], ...]     # the template's own query: (key, value or "")
    rank: tuple[int, int, int]


@cache
def _compile(op: OperationModel) -> _Route:
    path, _, query = op.http["requestUri"].partition("?")
    if len(path) > 1:
        path = path.rstrip("/")
    regex, labels, greedy, literal = "", [], 0, 0
    for part in _LABEL.split(path):
        if part.startswith("{") and part.endswith("}"):
            name = part[1:-1]
            greedy += name.endswith("+")
            labels.append(name.rstrip("+"))
            regex += "(.+)" if name.endswith("+") else "([^/]+)"
        else:
            literal += len(part)
            regex += re.escape(part)
    fixed = tuple((k, v[0]) for k, v in parse_qs(query, keep_blank_values=True).items())
    return _Route(op, op.http.get("method", "POST").upper(), re.compile(f"^{regex}/?$"),
                  tuple(labels), fixed, (0 if fixed else 1, greedy, -literal))


@cache
def _routes(model: ServiceModel) -> tuple[_Route, ...]:
    routes = [_compile(model.operation_model(name)) for name in model.operation_names]
    return tuple(sorted(routes, key=lambda r: r.rank))


def route(model: ServiceModel, method: str,
          path: str) -> tuple[OperationModel, dict[str, str]] | None:
    """The operation a request for ``method`` ``path`` calls, and its URI labels; or None."""
    raw_path, _, raw_query = path.partition("?")
    query = parse_qs(raw_query, keep_blank_values=True)
    method = method.upper()
    for candidate in _routes(model):
        if candidate.method != method:
            continue
        match = candidate.pattern.match(raw_path)
        if match is None:
            continue
        if all(key in query and (not value or value in query[key])
               for key, value in candidate.fixed):
            values = match.groups()
            return candidate.op, {name: unquote(value)
                                  for name, value in zip(candidate.labels, values, strict=True)}
    return None


# -- requests -----------------------------------------------------------------------------
def parse(op: OperationModel, labels: Mapping[str, str], query: Mapping[str, list[str]],
          headers: Mapping[str, str], body: bytes) -> dict:
    """The input of ``op`` as boto3 params (see the module's docstring)."""
    shape = op.input_shape
    if shape is None:
        return {}
    lowered = {k.lower(): v for k, v in headers.items()}
    fixed = {k for k, _ in _compile(op).fixed}
    claimed = fixed | {m.serialization.get("name", n) for n, m in shape.members.items()
                       if m.serialization.get("location") == "querystring"}
    params: dict = {}
    for name, member in shape.members.items():
        location = member.serialization.get("location")
        wire = member.serialization.get("name", name)
        value: object = None
        if location == "uri" and wire in labels:
            value = from_text(member, labels[wire], name)
        elif location == "querystring":
            value = _from_query(member, wire, query, claimed, name)
        elif location == "header" and wire.lower() in lowered:
            value = _from_header(member, lowered[wire.lower()], name)
        elif location == "headers":
            prefix = wire.lower()
            value = {k[len(prefix):]: v for k, v in headers.items()
                     if k.lower().startswith(prefix)} or None
        if value is not None:
            params[name] = value
    params.update(_parse_body(shape, body))
    return params


def _from_query(member: Shape, wire: str, query: Mapping[str, list[str]],
                claimed: set[str], where: str) -> object:
    if member.type_name == "map":
        rest = {k: v for k, v in query.items() if k not in claimed}
        if member.value.type_name == "list":
            return rest or None
        return {k: v[0] for k, v in rest.items()} or None
    values = query.get(wire)
    if not values:
        return None
    if member.type_name == "list":
        return [from_text(member.member, v, where) for v in values]
    return from_text(member, values[0], where)


def _from_header(member: Shape, text: str, where: str) -> object:
    if member.type_name == "list":
        items = [item.strip().strip('"') for item in text.split(",") if item.strip()]
        return [from_text(member.member, item, where) for item in items]
    return from_text(member, text, where)


def _parse_body(shape: Shape, body: bytes) -> dict:
    payload = shape.serialization.get("payload")
    if payload is not None:
        member = shape.members[payload]
        if member.type_name == "blob":
            return {payload: bytes(body)} if body else {}
        if member.type_name in STRINGS:
            return {payload: _decode(body)} if body else {}
        document = _load(body)
        return {} if document is None else {payload: _from_json(member, document, payload)}
    document = _load(body)
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ProtocolError("the request body must be a JSON object")
    members = {n: m for n, m in shape.members.items() if "location" not in m.serialization}
    return _members_from_json(members, document, "")


def _decode(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError("the request body is not UTF-8") from exc


def _load(body: bytes) -> object:
    text = _decode(body)
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ProtocolError(f"Could not parse request body into json: {exc}") from exc


def _members_from_json(members: Mapping[str, Shape], document: dict, path: str) -> dict:
    out = {}
    for name, member in members.items():
        value = document.get(member.serialization.get("name", name))
        if value is not None:
            out[name] = _from_json(member, value, f"{path}.{name}" if path else name)
    return out


def _from_json(shape: Shape, value: object, path: str) -> object:
    kind = shape.type_name
    expected = {"structure": dict, "map": dict, "list": list, "boolean": bool}.get(kind)
    if kind == "structure" and getattr(shape, "is_document_type", False):
        return value
    if expected is not None and not isinstance(value, expected):
        raise ProtocolError(f"{path}: expected a {kind}, got {type(value).__name__}")
    if kind == "structure":
        return _members_from_json(shape.members, value, path)  # type: ignore[arg-type]
    if kind == "list":
        return [_from_json(shape.member, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if kind == "map":
        return {k: _from_json(shape.value, v, f"{path}.{k}")
                for k, v in value.items() if v is not None}  # type: ignore[union-attr]
    if kind in INTEGERS and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind in FLOATS and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        return float(value) if not isinstance(value, str) else from_text(shape, value, path)
    if kind in STRINGS and isinstance(value, str):
        return value
    if kind == "timestamp" and isinstance(value, (int, float, str)):
        return to_datetime(value)
    if kind == "blob" and isinstance(value, str):
        return b64decode(value)
    if kind == "boolean":
        return value
    raise ProtocolError(f"{path}: expected a {kind}, got {type(value).__name__}")


# -- responses ----------------------------------------------------------------------------
def serialize(op: OperationModel, output: dict) -> tuple[int, dict[str, str], bytes]:
    """The HTTP status, headers and body of ``op``'s answer ``output``."""
    status = int(op.http.get("responseCode", 200))
    headers: dict[str, str] = {}
    shape = op.output_shape
    body = b""
    if shape is not None:
        for name, member in shape.members.items():
            value = output.get(name)
            location = member.serialization.get("location")
            if value is None or location is None:
                continue
            if location == "statusCode":
                status = int(value)
            elif location == "header":
                headers[member.serialization.get("name", name)] = _header_text(member, value)
            elif location == "headers":
                prefix = member.serialization.get("name", "")
                headers.update({prefix + k: str(v) for k, v in value.items()})
        body = _body(shape, output)
    if output.get(STATUS_KEY) is not None:
        status = int(output[STATUS_KEY])
    if status in (204, 304):
        body = b""
    if not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = CONTENT_TYPE
    return status, headers, body


def _header_text(member: Shape, value: object) -> str:
    if member.type_name == "list":
        return ",".join(to_text(member.member, v, "rfc822") for v in value)  # type: ignore
    return to_text(member, value, "rfc822")


def _body(shape: Shape, output: dict) -> bytes:
    payload = shape.serialization.get("payload")
    if payload is not None:
        value = output.get(payload)
        member = shape.members[payload]
        if value is None:
            return b""
        if member.type_name in ("blob", *STRINGS):
            return value.encode() if isinstance(value, str) else bytes(value)
        return json.dumps(_to_json(member, value)).encode()
    members = {n: m for n, m in shape.members.items() if "location" not in m.serialization}
    return json.dumps(_members_to_json(members, output)).encode()


def _members_to_json(members: Mapping[str, Shape], value: Mapping) -> dict:
    return {m.serialization.get("name", n): _to_json(m, value[n])
            for n, m in members.items() if value.get(n) is not None}


def _to_json(shape: Shape, value: object) -> object:
    kind = shape.type_name
    if kind == "structure":
        if getattr(shape, "is_document_type", False):
            return value
        return _members_to_json(shape.members, value)  # type: ignore[arg-type]
    if kind == "list":
        return [_to_json(shape.member, v) for v in value]  # type: ignore[union-attr]
    if kind == "map":
        return {str(k): _to_json(shape.value, v)
                for k, v in value.items() if v is not None}  # type: ignore[union-attr]
    if kind == "blob":
        return b64encode(value)  # type: ignore[arg-type]
    if kind == "timestamp":
        return format_timestamp(value, shape.serialization.get("timestampFormat",
                                                               "unixtimestamp"))
    if kind in FLOATS:
        return float_value(value)
    return value


def serialize_error(service_model: ServiceModel,
                    error: ApiError) -> tuple[int, dict[str, str], bytes]:
    """AWS's rest-json error answer for ``error`` (see the module's docstring)."""
    shape = models.error_shapes(service_model).get(error.kind)
    members = shape.members if shape is not None else {}
    message_key = "Message" if "Message" in members and "message" not in members else "message"
    headers = {"x-amzn-ErrorType": error.kind, "Content-Type": CONTENT_TYPE}
    body: dict = {"Type": "User" if error.status < 500 else "Service",
                  message_key: error.message}
    for key, value in error.extra.items():
        member = members.get(key)
        if member is None:
            body[key] = value
        elif member.serialization.get("location") == "header":
            headers[member.serialization.get("name", key)] = _header_text(member, value)
        else:
            body[member.serialization.get("name", key)] = _to_json(member, value)
    return error.status, headers, json.dumps(body).encode()
