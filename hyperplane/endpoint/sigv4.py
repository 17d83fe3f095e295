"""AWS Signature Version 4 as the endpoint reads it (pure): who signed, and for what.

The endpoint takes from a signed request only its credential scope: the access
key (``account_of`` turns it into an account), the date, the region and the
service (which protocol and model answer).  ``parse_authorization`` reads the
``Authorization`` header boto3 and the AWS CLI send::

    AWS4-HMAC-SHA256 Credential=AKID/20261205/us-east-1/lambda/aws4_request,
    SignedHeaders=host;x-amz-date, Signature=<64 hex digits>

and ``from_query`` a presigned URL's ``X-Amz-Algorithm``, ``X-Amz-Credential``,
``X-Amz-SignedHeaders`` and ``X-Amz-Signature``.  Both give a ``Credential`` or
``None`` (absent or not well formed: the server's ``MissingAuthenticationToken``).

No secret is ever checked: the signature is only required to look like one (64
hex digits).  The emulator trusts whoever can reach its loopback port, as the
rest of the project does; any secret key works.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ALGORITHM = "AWS4-HMAC-SHA256"
_SCOPE = re.compile(r"^([^\s/]+)/(\d{8})/([a-z0-9-]+)/([a-z0-9-]+)/aws4_request$")
_SIGNED = re.compile(r"^[a-z0-9-]+(;[a-z0-9-]+)*$")
_SIGNATURE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Credential:
    """The credential scope of a signed request (and what it signed)."""

    access_key: str
    date: str                         # YYYYMMDD, as in the scope
    region: str
    service: str                      # the signing name: lambda, ec2, sts...
    signed_headers: tuple[str, ...]
    signature: str


def parse_authorization(header: str | None) -> Credential | None:
    """The credential of a well-formed SigV4 ``Authorization`` header, else ``None``."""
    if not header:
        return None
    algorithm, _, rest = header.strip().partition(" ")
    if algorithm != ALGORITHM:
        return None
    fields: dict[str, str] = {}
    for part in rest.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep or key in fields:
            return None
        fields[key] = value.strip()
    return _credential(fields.get("Credential"), fields.get("SignedHeaders"),
                       fields.get("Signature"))


def from_query(query: dict[str, list[str]]) -> Credential | None:
    """The credential of a presigned request's query string, else ``None``."""
    def one(name: str) -> str | None:
        values = query.get(name)
        return values[0] if values else None

    if one("X-Amz-Algorithm") != ALGORITHM:
        return None
    return _credential(one("X-Amz-Credential"), one("X-Amz-SignedHeaders"),
                       one("X-Amz-Signature"))


def _credential(scope: str | None, signed: str | None,
                signature: str | None) -> Credential | None:
    if scope is None or signed is None or signature is None:
        return None
    match = _SCOPE.match(scope)
    if match is None or not _SIGNED.match(signed) or not _SIGNATURE.match(signature):
        return None
    access_key, date, region, service = match.groups()
    return Credential(access_key, date, region, service, tuple(signed.split(";")), signature)
