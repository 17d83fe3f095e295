"""A value checked against a botocore shape (pure): what a handler's output gets wrong.

``problems(shape, value)`` lists, as ``path: what`` lines, everything in
``value`` that the wire protocols could not carry faithfully to boto3: a required
member missing, a key the shape does not know, a value not of its shape's type:

    structure  dict                       list     list or tuple
    map        dict with str keys         string   str
    integer    int (long, short, byte)    boolean  bool
    double     int or float (float)       timestamp  datetime or str
    blob       bytes or bytearray         document (structure) anything

booleans are not integers.  A member whose value is ``None`` counts as absent
(the serializers leave it out).  At the top level the server's own key
``__status__`` (an int) is allowed.  An empty list means the value fits.
"""

from __future__ import annotations

import datetime as dt

from botocore.model import Shape

from hyperplane.endpoint.wire import FLOATS, INTEGERS, STRINGS

STATUS_KEY = "__status__"
_SCALARS: dict[str, tuple[type, ...]] = {
    **{kind: (int,) for kind in INTEGERS},
    **{kind: (int, float) for kind in FLOATS},
    **{kind: (str,) for kind in STRINGS},
    "boolean": (bool,),
    "timestamp": (dt.datetime, str),
    "blob": (bytes, bytearray),
}


def problems(shape: Shape, value: object, path: str = "") -> list[str]:
    """Every way ``value`` does not fit ``shape`` (``[]`` when it fits)."""
    where = path or "(top)"
    kind = shape.type_name
    if kind == "structure":
        if getattr(shape, "is_document_type", False):
            return []
        if not isinstance(value, dict):
            return [f"{where}: expected a structure (dict), got {type(value).__name__}"]
        return _structure(shape, value, path)
    if kind == "list":
        if not isinstance(value, (list, tuple)):
            return [f"{where}: expected a list, got {type(value).__name__}"]
        return [p for i, item in enumerate(value)
                for p in problems(shape.member, item, f"{path}[{i}]")]
    if kind == "map":
        if not isinstance(value, dict):
            return [f"{where}: expected a map (dict), got {type(value).__name__}"]
        found = [f"{where}: map key {k!r} is not a str" for k in value if not isinstance(k, str)]
        return found + [p for k, v in value.items() if v is not None
                        for p in problems(shape.value, v, f"{path}.{k}")]
    expected = _SCALARS.get(kind)
    if expected is None:
        return []
    if (isinstance(value, bool) and kind != "boolean") or not isinstance(value, expected):
        return [f"{where}: expected a {kind}, got {type(value).__name__} {value!r:.60}"]
    return []


def _structure(shape: Shape, value: dict, path: str) -> list[str]:
    found = []
    members = shape.members
    for key, item in value.items():
        if not path and key == STATUS_KEY:
            if not isinstance(item, int) or isinstance(item, bool):
                found.append(f"{STATUS_KEY}: expected an int status, got {item!r}")
        elif key not in members:
            found.append(f"{path + '.' if path else ''}{key}: not a member of {shape.name}")
    for name in shape.required_members:
        if value.get(name) is None:
            found.append(f"{path + '.' if path else ''}{name}: required by {shape.name}, missing")
    for name, member in members.items():
        if value.get(name) is not None:
            found += problems(member, value[name], f"{path}.{name}" if path else name)
    return found
