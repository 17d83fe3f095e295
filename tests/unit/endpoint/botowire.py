"""The real clients' own wire code, as the endpoint's tests use it.

``request_of`` is what a boto3 client puts on the wire for an operation (its own
serializer, validation and request preparation); ``response_of`` is what a
boto3 client makes of an HTTP answer (its own parser, the streaming body of a
streaming output as the client wraps it), without ``ResponseMetadata``.
"""

from __future__ import annotations

import io
from urllib.parse import parse_qs, urlsplit

from botocore.awsrequest import HeadersDict, create_request_object, prepare_request_dict
from botocore.model import ServiceModel
from botocore.parsers import create_parser
from botocore.response import StreamingBody
from botocore.serialize import create_serializer


def request_of(model: ServiceModel, operation: str,
               params: dict) -> tuple[str, str, dict[str, str], bytes]:
    """(method, target, headers, body) of ``operation`` called with ``params`` by botocore."""
    op = model.operation_model(operation)
    request_dict = create_serializer(model.protocol).serialize_to_request(params, op)
    prepare_request_dict(request_dict, endpoint_url="http://127.0.0.1:4566")
    prepared = create_request_object(request_dict).prepare()
    split = urlsplit(prepared.url)
    target = split.path + (f"?{split.query}" if split.query else "")
    body = prepared.body or b""
    if isinstance(body, str):
        body = body.encode()
    elif not isinstance(body, bytes):
        body = body.read()
    return prepared.method, target, dict(prepared.headers), body


def query_of(target: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(target).query, keep_blank_values=True)


def form_of(body: bytes) -> dict[str, list[str]]:
    return parse_qs(body.decode(), keep_blank_values=True)


def response_of(model: ServiceModel, operation: str, status: int, headers: dict[str, str],
                body: bytes, shape: object = "output") -> dict:
    """What botocore parses from an answer (``shape``: the output's, or an error shape)."""
    op = model.operation_model(operation)
    wire_body: object = body
    if op.has_streaming_output and status < 300:
        wire_body = StreamingBody(io.BytesIO(body), len(body))
    response = {"status_code": status, "headers": HeadersDict(headers), "body": wire_body}
    parsed = create_parser(model.protocol).parse(
        response, op.output_shape if shape == "output" else shape)
    parsed.pop("ResponseMetadata", None)
    for key, value in list(parsed.items()):
        if isinstance(value, StreamingBody):
            parsed[key] = value.read()
    return parsed
