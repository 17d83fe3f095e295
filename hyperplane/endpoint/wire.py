"""What the wire protocols of the endpoint share (pure): errors, scalars, timestamps.

``ProtocolError`` is a request the protocol layer cannot read (a malformed JSON
body, a form value that is not of its shape's type, a body that is not UTF-8);
the server answers it with the protocol's 400 (``InvalidRequestContentException``
for Lambda, ``InvalidParameterValue`` for EC2, ``MalformedQueryString`` for STS).

Scalars on the wire are text (URI labels, query strings, headers, form fields,
XML): ``from_text`` turns one into the Python value boto3 uses for the shape
(``int``, ``bool``, ``float``, aware UTC ``datetime``, ``bytes``, ``str``) and
``to_text`` does the reverse.  Timestamps are accepted as a ``datetime`` (naive
means UTC), an ISO 8601 / RFC 822 string or epoch seconds, and written in the
shape's ``timestampFormat`` or the location's default: ``iso8601``
(``2026-12-05T10:00:00.000Z``, milliseconds), ``unixtimestamp`` (epoch seconds)
or ``rfc822``.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import datetime as dt
import json
import math
from email.utils import formatdate

from botocore.model import Shape
from botocore.utils import parse_to_aware_datetime

INTEGERS = ("integer", "long", "short", "byte")
FLOATS = ("float", "double")
STRINGS = ("string", "character")


class ProtocolError(ValueError):
    """A request that cannot be read as its protocol and shape say (answered with a 400)."""


def to_datetime(value: object) -> dt.datetime:
    """An aware UTC datetime from a datetime, an ISO 8601/RFC 822 string or epoch seconds."""
    if isinstance(value, bool):
        raise ProtocolError(f"not a timestamp: {value!r}")
    try:
        moment = parse_to_aware_datetime(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ProtocolError(f"not a timestamp: {value!r}") from exc
    return moment.astimezone(dt.timezone.utc)


def format_timestamp(value: object, fmt: str) -> str | int | float:
    """``value`` (see ``to_datetime``) written as ``iso8601``, ``unixtimestamp`` or ``rfc822``."""
    moment = to_datetime(value)
    fmt = fmt.lower()
    if fmt == "unixtimestamp":
        seconds = calendar.timegm(moment.timetuple())
        return seconds + moment.microsecond // 1000 / 1000 if moment.microsecond else seconds
    if fmt == "rfc822":
        return formatdate(calendar.timegm(moment.timetuple()), usegmt=True)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def b64encode(value: bytes | bytearray | str) -> str:
    if isinstance(value, str):
        value = value.encode()
    return base64.b64encode(bytes(value)).decode("ascii")


def b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError(f"not base64: {text[:40]!r}") from exc


def float_value(value: object) -> object:
    """A float as JSON may carry it (``NaN`` and the infinities are strings)."""
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
    return value


def from_text(shape: Shape, text: str, where: str = "") -> object:
    """The Python value of a scalar of ``shape`` written as ``text``."""
    kind = shape.type_name
    try:
        if kind in INTEGERS:
            return int(text)
        if kind in FLOATS:
            return float(text)
    except ValueError as exc:
        raise ProtocolError(f"{where or shape.name}: not a number: {text!r}") from exc
    if kind == "boolean":
        if text.lower() not in ("true", "false"):
            raise ProtocolError(f"{where or shape.name}: not a boolean: {text!r}")
        return text.lower() == "true"
    if kind == "timestamp":
        stripped = text.strip()
        return to_datetime(float(stripped) if _is_number(stripped) else stripped)
    if kind == "blob":
        return b64decode(text)
    if kind == "string" and shape.serialization.get("jsonvalue"):
        try:
            return json.loads(b64decode(text))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"{where or shape.name}: not base64 JSON") from exc
    return text


def to_text(shape: Shape, value: object, timestamp_format: str = "iso8601") -> str:
    """A scalar of ``shape`` written as text (headers, URIs, XML)."""
    kind = shape.type_name
    if kind == "boolean":
        return "true" if value else "false"
    if kind == "timestamp":
        fmt = shape.serialization.get("timestampFormat", timestamp_format)
        return str(format_timestamp(value, fmt))
    if kind == "blob":
        return b64encode(value)  # type: ignore[arg-type]
    if kind in FLOATS:
        return str(float_value(float(value)))  # type: ignore[arg-type]
    if kind == "string" and shape.serialization.get("jsonvalue"):
        return b64encode(json.dumps(value, separators=(",", ":")))
    return str(value)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
