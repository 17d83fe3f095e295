"""AWS's event stream encoding (``application/vnd.amazon.eventstream``), written (pure).

The model is the one botocore's decoder (``botocore.eventstream``) reads: a response
body that is a sequence of binary messages, each

    prelude  total length (uint32), headers length (uint32), CRC32 of those 8 bytes
    headers  each: name length (uint8), name (UTF-8), value type (uint8), value
    payload  bytes
    CRC32    of everything before it (prelude, its CRC, headers, payload)

all integers big-endian.  Header values here are strings (type 7, uint16 length),
byte arrays (6), booleans (0 true, 1 false) and 32- or 64-bit integers (4, 5).

``message(headers, payload)`` is one message's bytes.  ``event(union, name, value)`` is
one event of an operation's ``eventstream`` union shape as AWS's rest-json services send
it: the headers ``:event-type`` (the member's name), ``:message-type: event`` and
``:content-type``; the payload is the member marked ``eventpayload`` (a blob as is,
``application/octet-stream``; a string as UTF-8, ``text/plain``; a structure as JSON), or
else the event's other members as a JSON object (``application/json``); members marked
``eventheader`` are headers.  Lambda's ``InvokeWithResponseStream`` sends
``PayloadChunk`` (``Payload``: the eventpayload blob) and ``InvokeComplete``
(``ErrorCode``, ``ErrorDetails``, ``LogResult``: JSON).
"""

from __future__ import annotations

import base64
import json
import struct
from binascii import crc32
from collections.abc import Iterable, Iterator, Mapping

from botocore.model import Shape, StructureShape

CONTENT_TYPE = "application/vnd.amazon.eventstream"
MAX_HEADERS = 128 * 1024          # botocore's limits on what it decodes
MAX_PAYLOAD = 24 * 1024 * 1024
_PRELUDE = struct.Struct("!II")
_CRC = struct.Struct("!I")
HeaderValue = str | bytes | bool | int


def _header(name: str, value: HeaderValue) -> bytes:
    raw = name.encode("utf-8")
    if not 0 < len(raw) < 256:
        raise ValueError(f"header name {name!r}: 1 to 255 bytes")
    if isinstance(value, bool):
        kind = bytes([0 if value else 1])
    elif isinstance(value, int):
        kind = b"\x04" + struct.pack("!i", value) if -2**31 <= value < 2**31 else \
            b"\x05" + struct.pack("!q", value)
    elif isinstance(value, (str, bytes)):
        data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        if len(data) > 0xFFFF:
            raise ValueError(f"header {name!r}: a value over 65535 bytes")
        kind = (b"\x07" if isinstance(value, str) else b"\x06") + struct.pack("!H", len(data)) \
            + data
    else:
        raise TypeError(f"header {name!r}: {type(value).__name__} is not a header value")
    return bytes([len(raw)]) + raw + kind


def message(headers: Mapping[str, HeaderValue], payload: bytes) -> bytes:
    """One message: prelude, prelude CRC, headers, payload, message CRC."""
    head = b"".join(_header(k, v) for k, v in headers.items())
    if len(head) > MAX_HEADERS or len(payload) > MAX_PAYLOAD:
        raise ValueError(f"headers of {len(head)} bytes or a payload of {len(payload)} "
                         f"bytes: over {MAX_HEADERS} or {MAX_PAYLOAD}")
    prelude = _PRELUDE.pack(12 + len(head) + len(payload) + 4, len(head))
    body = prelude + _CRC.pack(crc32(prelude)) + head + payload
    return body + _CRC.pack(crc32(body))


def _json(shape: Shape, value: object) -> object:
    if shape.type_name == "structure" and isinstance(value, Mapping):
        return {m.serialization.get("name", n): _json(m, value[n])
                for n, m in shape.members.items() if value.get(n) is not None}
    if shape.type_name == "list":
        return [_json(shape.member, v) for v in value]  # type: ignore[attr-defined,union-attr]
    if shape.type_name == "blob":
        return base64.b64encode(bytes(value)).decode()  # type: ignore[arg-type]
    return value


def event(union: StructureShape, name: str, value: Mapping[str, object]) -> bytes:
    """One event ``name`` (a member of the ``eventstream`` union) with ``value``."""
    shape = union.members.get(name)
    if shape is None or not shape.serialization.get("event"):
        raise ValueError(f"{union.name} has no event {name!r}")
    headers: dict[str, HeaderValue] = {":event-type": name, ":message-type": "event"}
    body: dict[str, object] = {}
    payload: bytes | None = None
    for member_name, member in shape.members.items():
        item = value.get(member_name)
        if member.serialization.get("eventpayload"):
            payload, content_type = _payload(member, item)
            headers[":content-type"] = content_type
        elif item is not None and member.serialization.get("eventheader"):
            headers[member_name] = item  # type: ignore[assignment]
        elif item is not None:
            body[member_name] = item
    if payload is None:
        headers[":content-type"] = "application/json"
        payload = json.dumps(_json(shape, body)).encode()
    return message(headers, payload)


def _payload(member: Shape, item: object) -> tuple[bytes, str]:
    if member.type_name == "blob":
        return bytes(item or b""), "application/octet-stream"  # type: ignore[arg-type]
    if member.type_name == "string":
        return str(item or "").encode("utf-8"), "text/plain"
    return json.dumps(_json(member, item or {})).encode(), "application/json"


def events(union: StructureShape, items: Iterable[Mapping[str, Mapping]]) -> Iterator[bytes]:
    """Each ``{EventName: value}`` of ``items`` as its message, as it comes."""
    for item in items:
        for name, value in item.items():
            yield event(union, name, value)
