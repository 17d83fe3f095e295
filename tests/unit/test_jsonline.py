"""The one JSON-line protocol: codec, framing, a client and a server over a real socket."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from hyperplane import jsonline
from hyperplane.errors import UnreachableError


def test_the_codec_is_one_compact_line() -> None:
    line = jsonline.encode({"op": "ping", "text": "a\nb"})
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert jsonline.decode(line) == {"op": "ping", "text": "a\nb"}


@pytest.mark.parametrize("line", [b"[1, 2]\n", b"42\n", b"not json\n", b""])
def test_only_an_object_decodes(line: bytes) -> None:
    with pytest.raises(ValueError):
        jsonline.decode(line)


def serve_once(path: Path, handler) -> threading.Thread:  # noqa: ANN001
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def run() -> None:
        conn, _ = listener.accept()
        jsonline.serve(conn, handler)
        listener.close()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_request_gets_its_reply(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    thread = serve_once(path, lambda r: {"ok": True, "echo": r["n"] * 2})
    assert jsonline.request(str(path), {"n": 21}) == {"ok": True, "echo": 42}
    thread.join(5)


def test_a_failing_handler_answers_and_the_server_lives_on(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"

    def broken(_request: dict) -> dict:
        raise KeyError("op")
    thread = serve_once(path, broken)
    assert jsonline.request(str(path), {}) == {"ok": False, "error": "KeyError: 'op'"}
    thread.join(5)


def test_a_long_reply_arrives_whole(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    thread = serve_once(path, lambda r: {"rows": ["x" * 100] * 50_000})
    assert len(jsonline.request(str(path), {})["rows"]) == 50_000
    thread.join(5)


def test_nobody_listening_is_unreachable(tmp_path: Path) -> None:
    with pytest.raises(UnreachableError, match="nothing listens"):
        jsonline.request(str(tmp_path / "none.sock"), {"op": "ping"})


def test_a_line_past_the_limit_is_refused(tmp_path: Path) -> None:
    a, b = socket.socketpair()
    a.sendall(b"x" * 5000)
    a.close()
    with pytest.raises(ValueError, match="longer than"):
        jsonline.read_line(b, limit=1000)
    b.close()


def stream_once(path: Path, lines: list[bytes], gate: threading.Event) -> threading.Thread:
    """A server answering one request with ``lines``, the second and later ones only
    once ``gate`` is set (never set: the connection closes without them)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def run() -> None:
        conn, _ = listener.accept()
        with conn:
            jsonline.read_line(conn)
            conn.sendall(lines[0])
            if not gate.wait(10):
                return
            for line in lines[1:]:
                conn.sendall(line)
        listener.close()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_relay_hands_on_each_streamed_line_as_it_comes(tmp_path: Path) -> None:
    gate = threading.Event()
    got: list[dict] = []
    lines = [b'{"stream":{"content_type":"text/plain"}}\n', b'{"chunk":"YQ=="}\n',
             b'{"chunk":"Yg=="}\n{"ok":true,"result":1}\n']

    def on_line(line: dict) -> None:
        got.append(line)
        gate.set()  # the rest is sent only after the first line was handed on
    stream_once(tmp_path / "s.sock", lines, gate)
    reply = jsonline.relay(str(tmp_path / "s.sock"), {"op": "invoke"}, 10, on_line)
    assert reply == {"ok": True, "result": 1}
    assert got == [{"stream": {"content_type": "text/plain"}}, {"chunk": "YQ=="},
                   {"chunk": "Yg=="}]


def test_relay_drains_the_stream_when_the_caller_is_gone(tmp_path: Path) -> None:
    gate = threading.Event()
    gate.set()
    calls = []

    def gone(line: dict) -> None:
        calls.append(line)
        raise BrokenPipeError()
    stream_once(tmp_path / "s.sock", [b'{"chunk":"YQ=="}\n', b'{"chunk":"Yg=="}\n',
                                      b'{"ok":true}\n'], gate)
    assert jsonline.relay(str(tmp_path / "s.sock"), {}, 10, gone) == {"ok": True}
    assert calls == [{"chunk": "YQ=="}]  # tried once, then drained


def test_relay_without_a_reply_is_unreachable(tmp_path: Path) -> None:
    gate = threading.Event()
    gate.set()
    stream_once(tmp_path / "s.sock", [b'{"chunk":"YQ=="}\n'], gate)
    with pytest.raises(UnreachableError):
        jsonline.relay(str(tmp_path / "s.sock"), {}, 10, lambda _line: None)
