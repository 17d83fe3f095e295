"""The event stream encoder against botocore's own decoder (``EventStreamBuffer``) and its
rest-json event parser (what ``invoke_with_response_stream`` iterates)."""

from __future__ import annotations

import json
import os
from binascii import crc32

import pytest
from botocore.eventstream import ChecksumMismatch, EventStream, EventStreamBuffer
from botocore.parsers import EventStreamJSONParser

from hyperplane.endpoint import eventstream, models

OP = models.service("lambda").operation_model("InvokeWithResponseStream")
UNION = OP.get_event_stream_output()


def decoded(data: bytes) -> list:
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    return list(buffer)


def test_a_message_round_trips_through_botocores_decoder() -> None:
    headers = {":event-type": "PayloadChunk", "flag": True, "off": False, "small": -7,
               "large": 2**40, "raw": b"\x00\x01\xff", "text": "héllo"}
    payload = os.urandom(1000)
    (message,) = decoded(eventstream.message(headers, payload))
    assert message.headers == headers and message.payload == payload
    assert message.prelude.total_length == len(eventstream.message(headers, payload))


def test_the_crcs_are_checked_and_ours_are_right() -> None:
    data = bytearray(eventstream.message({":message-type": "event"}, b"abc"))
    assert int.from_bytes(data[8:12], "big") == crc32(bytes(data[:8]))
    assert int.from_bytes(data[-4:], "big") == crc32(bytes(data[:-4]))
    data[-5] ^= 1  # one bit of the payload
    with pytest.raises(ChecksumMismatch):
        decoded(bytes(data))


def test_messages_split_anywhere_are_decoded_as_they_complete() -> None:
    frames = [eventstream.event(UNION, "PayloadChunk", {"Payload": bytes([i]) * (i * 100)})
              for i in range(1, 6)]
    stream = b"".join(frames)
    buffer, seen = EventStreamBuffer(), []
    for start in range(0, len(stream), 37):
        buffer.add_data(stream[start:start + 37])
        seen.extend(m.payload for m in buffer)
    assert seen == [bytes([i]) * (i * 100) for i in range(1, 6)]


def test_lambda_events_as_boto3_parses_them() -> None:
    chunks = [b"first,", b"", os.urandom(70000), "second \u2603".encode()]
    items = [{"PayloadChunk": {"Payload": c}} for c in chunks]
    items.append({"InvokeComplete": {"ErrorCode": "Sandbox.Timedout",
                                     "ErrorDetails": "Task timed out after 1.00 seconds",
                                     "LogResult": "U1RBUlQ="}})
    frames = list(eventstream.events(UNION, items))
    head = decoded(frames[0])[0].headers
    assert head == {":event-type": "PayloadChunk", ":message-type": "event",
                    ":content-type": "application/octet-stream"}
    assert decoded(frames[-1])[0].headers[":content-type"] == "application/json"
    assert json.loads(decoded(frames[-1])[0].payload) == items[-1]["InvokeComplete"]

    class Raw:  # urllib3's response, as botocore reads it: chunk by chunk
        def stream(self):  # noqa: ANN202
            yield from frames

    events = list(EventStream(Raw(), UNION, EventStreamJSONParser(), OP.name))
    assert events == items
    assert b"".join(e["PayloadChunk"]["Payload"] for e in events[:-1]) == b"".join(chunks)


def test_an_event_the_union_does_not_have_is_refused() -> None:
    with pytest.raises(ValueError, match="no event"):
        eventstream.event(UNION, "Nope", {})
