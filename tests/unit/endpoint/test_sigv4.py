"""SigV4 credential scopes: what boto3 really signs, and what is not a signature."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from hyperplane.endpoint.sigv4 import Credential, from_query, parse_authorization

SIG = "a" * 64
KEYS = Credentials("AKIDEXAMPLE", "any secret at all")


def test_the_header_botocore_signs_is_read() -> None:
    request = AWSRequest("GET", "http://127.0.0.1:4566/2015-03-31/functions/f")
    SigV4Auth(KEYS, "lambda", "eu-west-1").add_auth(request)
    credential = parse_authorization(request.headers["Authorization"])
    assert credential is not None
    assert (credential.access_key, credential.region, credential.service) == \
        ("AKIDEXAMPLE", "eu-west-1", "lambda")
    assert "host" in credential.signed_headers and len(credential.date) == 8


def test_a_presigned_query_is_read() -> None:
    request = AWSRequest("GET", "http://127.0.0.1:4566/?Action=GetCallerIdentity")
    SigV4QueryAuth(KEYS, "sts", "us-east-1", expires=60).add_auth(request)
    query = parse_qs(urlsplit(request.url).query)
    credential = from_query(query)
    assert credential is not None and (credential.service, credential.region) == \
        ("sts", "us-east-1")


def test_the_documented_example_is_read_exactly() -> None:
    header = ("AWS4-HMAC-SHA256 Credential=AKID/20261205/us-east-1/lambda/aws4_request, "
              f"SignedHeaders=host;x-amz-date, Signature={SIG}")
    assert parse_authorization(header) == Credential(
        "AKID", "20261205", "us-east-1", "lambda", ("host", "x-amz-date"), SIG)


@pytest.mark.parametrize("header", [
    None, "", "Bearer token", "AWS AKID:signature",
    f"AWS4-HMAC-SHA256 Credential=AKID/20261205/us-east-1/lambda/aws4_request, Signature={SIG}",
    f"AWS4-HMAC-SHA256 Credential=AKID/20261205/us-east-1/lambda, SignedHeaders=host, "
    f"Signature={SIG}",
    f"AWS4-HMAC-SHA256 Credential=AKID/2026-12-05/us-east-1/lambda/aws4_request, "
    f"SignedHeaders=host, Signature={SIG}",
    "AWS4-HMAC-SHA256 Credential=AKID/20261205/us-east-1/lambda/aws4_request, "
    "SignedHeaders=host, Signature=nothex",
    f"AWS4-HMAC-SHA256 Credential=/20261205/us-east-1/lambda/aws4_request, "
    f"SignedHeaders=host, Signature={SIG}",
    f"AWS4-HMAC-SHA256 Credential=AKID/20261205/us-east-1/lambda/aws4_request, "
    f"SignedHeaders=Host;;x, Signature={SIG}",
])
def test_what_is_not_well_formed_is_none(header: str | None) -> None:
    assert parse_authorization(header) is None


def test_a_query_without_the_algorithm_or_signature_is_none() -> None:
    scope = ["AKID/20261205/us-east-1/sts/aws4_request"]
    assert from_query({}) is None
    assert from_query({"X-Amz-Credential": scope, "X-Amz-SignedHeaders": ["host"],
                       "X-Amz-Signature": [SIG]}) is None
    assert from_query({"X-Amz-Algorithm": ["AWS4-HMAC-SHA256"], "X-Amz-Credential": scope,
                       "X-Amz-SignedHeaders": ["host"]}) is None
