"""The host HTTP service as bytes: heads parsed, routes answered, keep-alive honoured."""

from __future__ import annotations

import json

import pytest

from hyperplane.services import httpwire


def test_a_head_is_parsed_once_complete() -> None:
    assert httpwire.parse_head(b"GET /whoami HTTP/1.1\r\nHost: x\r\n") == (None, 0)
    buffer = b"GET /whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nNEXT"
    request, used = httpwire.parse_head(buffer)
    assert (request.method, request.path, request.version) == ("GET", "/whoami", "HTTP/1.1")
    assert request.headers["host"] == "x" and not request.keep_alive
    assert buffer[used:] == b"NEXT"


def test_keep_alive_follows_the_version() -> None:
    one_oh, _ = httpwire.parse_head(b"GET / HTTP/1.0\r\n\r\n")
    one_one, _ = httpwire.parse_head(b"GET / HTTP/1.1\r\n\r\n")
    assert not one_oh.keep_alive and one_one.keep_alive


@pytest.mark.parametrize("bad", [b"GARBAGE\r\n\r\n", b"GET /\r\n\r\n", b"x" * 70000])
def test_a_malformed_or_endless_head_is_refused(bad: bytes) -> None:
    with pytest.raises(ValueError):
        httpwire.parse_head(bad)


def _body(answer: httpwire.Answer) -> dict:
    return json.loads(answer.body)


def test_whoami_names_the_client_and_the_host() -> None:
    request, _ = httpwire.parse_head(b"GET /whoami HTTP/1.0\r\n\r\n")
    answer = httpwire.route(request, ("10.0.1.5", 40000), "db")
    assert _body(answer) == {"client": "10.0.1.5", "port": 40000, "host": "db"}
    assert answer.head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Connection: close" in answer.head
    assert f"Content-Length: {len(answer.body)}".encode() in answer.head


def test_bytes_streams_the_pattern_and_sha256_reads_a_body() -> None:
    request, _ = httpwire.parse_head(b"GET /bytes?n=70000 HTTP/1.1\r\n\r\n")
    answer = httpwire.route(request, ("a", 1), "h")
    assert answer.stream == 70000 and b"Content-Length: 70000" in answer.head
    assert httpwire.pattern_bytes(70000)[65536:65540] == bytes([0, 1, 2, 3])
    post, _ = httpwire.parse_head(b"POST /sha256 HTTP/1.1\r\nContent-Length: 3\r\n\r\n")
    assert httpwire.route(post, ("a", 1), "h").read_body and post.length == 3
    bad, _ = httpwire.parse_head(b"GET /bytes?n=x HTTP/1.1\r\n\r\n")
    assert b"400" in httpwire.route(bad, ("a", 1), "h").head


def test_unknown_paths_and_methods() -> None:
    missing, _ = httpwire.parse_head(b"GET /nope HTTP/1.1\r\n\r\n")
    put, _ = httpwire.parse_head(b"PUT /whoami HTTP/1.1\r\n\r\n")
    assert httpwire.route(missing, ("a", 1), "h").head.startswith(b"HTTP/1.1 404")
    assert httpwire.route(put, ("a", 1), "h").head.startswith(b"HTTP/1.1 405")
