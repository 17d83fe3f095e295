"""The ``ec2`` and ``query`` protocols (EC2, STS) read from botocore's service model (pure).

Requests are form-encoded (``Action=...&Version=...&...``, in the body or the
query string); answers are XML.

* ``parse(op, form)`` is the operation's input as boto3 params, from the form as
  ``urllib.parse.parse_qs`` gives it.  ``ec2`` names each member by its
  ``queryName``, else its ``locationName`` capitalised, else the member name
  (the member name is accepted too: ``IpPermissions.1.UserIdGroupPairs.1.GroupId``
  beside botocore's own ``IpPermissions.1.Groups.1.GroupId``), and flattens
  every list (``Filter.1.Name``, ``Filter.1.Value.1``, ``NetworkInterfaceId.1``);
  ``query`` (STS) names members by ``locationName`` else the member name, with
  lists as ``Name.member.N`` (``Name.N`` when flattened) and maps as
  ``Name.entry.N.key``/``.value``.  Numbers, booleans (``true``/``false``),
  timestamps (aware UTC datetimes) and blobs (base64) are converted; a value not
  of its shape's type raises ``ProtocolError``; unknown keys are ignored.
* ``serialize(model, op, output, request_id)`` is the XML answer: for ``ec2``
  ``<OpResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>``
  then the members, for ``query`` ``<OpResponse xmlns=...><OpResult>`` (the
  output shape's ``resultWrapper``, which EC2's shapes do not have) then
  ``<ResponseMetadata><RequestId>``.
  Each member is named by its ``locationName`` (else the member name), lists
  hold ``<item>`` (ec2) or ``<member>`` (query) children unless the list's
  member has its own ``locationName``, booleans are ``true``/``false``,
  timestamps ISO 8601 with milliseconds, blobs base64, all text XML-escaped.
  Members absent or ``None`` and keys the shape does not know are left out.
* ``serialize_error(model, error, request_id)`` is ``(status, headers, body)``:
  ec2's ``<Response><Errors><Error><Code>/<Message>...<RequestID>`` or query's
  ``<ErrorResponse><Error><Type>Sender|Receiver</Type><Code>/<Message>...
  <RequestId>``; a modelled error named by its shape name is sent with its wire
  code (STS ``MalformedPolicyDocumentException`` is ``MalformedPolicyDocument``),
  and ``error.extra`` items become further elements of ``<Error>``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from xml.sax.saxutils import escape, quoteattr

from botocore.model import OperationModel, ServiceModel, Shape

from hyperplane.endpoint import models
from hyperplane.endpoint.wire import ProtocolError, from_text, to_text
from hyperplane.errors import ApiError

XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_TAG = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_SKIPPED = ("Action", "Version")


def is_ec2(model: ServiceModel) -> bool:
    return model.protocol == "ec2"


def content_type(model: ServiceModel) -> str:
    return "text/xml;charset=UTF-8" if is_ec2(model) else "text/xml"


def namespace(model: ServiceModel) -> str:
    value = model.metadata.get("xmlNamespace", "")
    uri = value.get("uri", "") if isinstance(value, dict) else str(value)
    return uri + "/" if is_ec2(model) and not uri.endswith("/") else uri


# -- requests -----------------------------------------------------------------------------
def parse(op: OperationModel, form: Mapping[str, list[str]]) -> dict:
    """The input of ``op`` as boto3 params (see the module's docstring)."""
    shape = op.input_shape
    if shape is None:
        return {}
    flat = {k: (v[0] if v else "") for k, v in form.items() if k not in _SKIPPED}
    return _Form(flat, is_ec2(op.service_model)).structure(shape, "")


class _Form:
    """A flat form read as nested values of a shape."""

    def __init__(self, flat: dict[str, str], ec2: bool) -> None:
        self.flat, self.ec2, self.keys = flat, ec2, sorted(flat)

    def present(self, prefix: str) -> bool:
        start = prefix + "."
        return prefix in self.flat or any(k.startswith(start) for k in self.keys)

    def indices(self, base: str) -> list[int]:
        start, found = base + ".", set()
        for key in self.keys:
            if key.startswith(start):
                head = key[len(start):].split(".", 1)[0]
                if head.isdigit():
                    found.add(int(head))
        return sorted(found)

    def names(self, member: Shape, name: str) -> list[str]:
        serial = member.serialization
        if self.ec2:
            location = serial.get("name")
            primary = serial.get("queryName") or \
                (location[0].upper() + location[1:] if location else name)
            return [primary] if primary == name else [primary, name]
        if member.type_name == "list" and serial.get("flattened") and \
                member.member.serialization.get("name"):
            return [member.member.serialization["name"]]
        return [serial.get("name", name)]

    def structure(self, shape: Shape, prefix: str) -> dict:
        out = {}
        for name, member in shape.members.items():
            for key in self.names(member, name):
                full = f"{prefix}.{key}" if prefix else key
                if self.present(full):
                    out[name] = self.value(member, full)
                    break
        return out

    def value(self, shape: Shape, prefix: str) -> object:
        kind = shape.type_name
        if kind == "structure":
            return self.structure(shape, prefix)
        if kind == "list":
            return self.list(shape, prefix)
        if kind == "map":
            return self.map(shape, prefix)
        if prefix not in self.flat:
            raise ProtocolError(f"{prefix}: expected a single {kind} value")
        return from_text(shape, self.flat[prefix], prefix)

    def list(self, shape: Shape, prefix: str) -> list:
        base = prefix
        if not self.ec2 and not shape.serialization.get("flattened"):
            base = f"{prefix}.{shape.member.serialization.get('name', 'member')}"
        return [self.value(shape.member, f"{base}.{i}") for i in self.indices(base)]

    def map(self, shape: Shape, prefix: str) -> dict:
        base = prefix if shape.serialization.get("flattened") else f"{prefix}.entry"
        key_name = shape.key.serialization.get("name", "key")
        value_name = shape.value.serialization.get("name", "value")
        out = {}
        for i in self.indices(base):
            key = self.flat.get(f"{base}.{i}.{key_name}")
            if key is not None and self.present(f"{base}.{i}.{value_name}"):
                out[key] = self.value(shape.value, f"{base}.{i}.{value_name}")
        return out


# -- responses ----------------------------------------------------------------------------
def text(value: object) -> str:
    """``value`` as XML text: escaped, characters XML cannot carry replaced."""
    return escape(_NOT_XML.sub("\ufffd", str(value)))


def serialize(service_model: ServiceModel, op: OperationModel, output: dict,
              request_id: str) -> bytes:
    """The XML answer of ``op`` with ``output`` (see the module's docstring)."""
    ec2 = is_ec2(service_model)
    shape = op.output_shape
    result = _children(shape, output, ec2) if shape is not None else ""
    wrapper = shape.serialization.get("resultWrapper") if shape is not None else None
    if wrapper:
        result = f"<{wrapper}>{result}</{wrapper}>"
    root = f"{op.name}Response"
    opening = f"<{root} xmlns={quoteattr(namespace(service_model))}>"
    if ec2:
        document = f"{XML_DECLARATION}{opening}<requestId>{text(request_id)}</requestId>" \
                   f"{result}</{root}>"
    else:
        document = f"{opening}{result}<ResponseMetadata><RequestId>{text(request_id)}" \
                   f"</RequestId></ResponseMetadata></{root}>"
    return document.encode("utf-8")


def _element_name(member: Shape, name: str) -> str:
    if member.type_name == "list" and member.serialization.get("flattened") and \
            member.member.serialization.get("name"):
        return member.member.serialization["name"]
    return member.serialization.get("name", name)


def _children(shape: Shape, value: Mapping, ec2: bool) -> str:
    return "".join(_element(_element_name(member, name), member, value[name], ec2)
                   for name, member in shape.members.items() if value.get(name) is not None)


def _element(tag: str, shape: Shape, value: object, ec2: bool) -> str:
    kind = shape.type_name
    if kind == "structure":
        return f"<{tag}>{_children(shape, value, ec2)}</{tag}>"  # type: ignore[arg-type]
    if kind == "list":
        if shape.serialization.get("flattened"):
            return "".join(_element(tag, shape.member, v, ec2) for v in value)  # type: ignore
        item = shape.member.serialization.get("name") or ("item" if ec2 else "member")
        items = "".join(_element(item, shape.member, v, ec2) for v in value)  # type: ignore
        return f"<{tag}>{items}</{tag}>"
    if kind == "map":
        key_tag = shape.key.serialization.get("name", "key")
        value_tag = shape.value.serialization.get("name", "value")
        entries = [_element(key_tag, shape.key, k, ec2) + _element(value_tag, shape.value, v, ec2)
                   for k, v in value.items() if v is not None]  # type: ignore[union-attr]
        if shape.serialization.get("flattened"):
            return "".join(f"<{tag}>{entry}</{tag}>" for entry in entries)
        return f"<{tag}>" + "".join(f"<entry>{e}</entry>" for e in entries) + f"</{tag}>"
    return f"<{tag}>{text(to_text(shape, value))}</{tag}>"


def wire_code(service_model: ServiceModel, kind: str) -> str:
    """The code an error of ``kind`` (a wire code or a modelled shape's name) is sent as."""
    shape = models.error_shapes(service_model).get(kind)
    if shape is None:
        return kind
    return shape.metadata.get("error", {}).get("code", shape.name)


def serialize_error(service_model: ServiceModel, error: ApiError,
                    request_id: str) -> tuple[int, dict[str, str], bytes]:
    """The protocol's XML error answer for ``error`` (see the module's docstring)."""
    code = text(wire_code(service_model, error.kind))
    extra = "".join(f"<{k}>{text(v)}</{k}>" for k, v in error.extra.items()
                    if _TAG.match(k) and v is not None)
    fields = f"<Code>{code}</Code><Message>{text(error.message)}</Message>{extra}"
    if is_ec2(service_model):
        body = f"{XML_DECLARATION}<Response><Errors><Error>{fields}</Error></Errors>" \
               f"<RequestID>{text(request_id)}</RequestID></Response>"
    else:
        side = "Sender" if error.status < 500 else "Receiver"
        body = f"<ErrorResponse xmlns={quoteattr(namespace(service_model))}><Error>" \
               f"<Type>{side}</Type>{fields}</Error>" \
               f"<RequestId>{text(request_id)}</RequestId></ErrorResponse>"
    return error.status, {"Content-Type": content_type(service_model)}, body.encode("utf-8")
