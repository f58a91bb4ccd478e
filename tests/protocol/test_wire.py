"""Frame encoding and decoding, and serialization errors (pure unit tests)."""

from __future__ import annotations

import random

import pytest

from runhouse.protocol import WireError, deserialize, serialize
from runhouse.protocol.wire import FrameDecoder, decode_single_frame, frame_bytes


def test_frames_survive_any_chunking():
    frames = [
        ({"output_type": "stdout"}, b"hello"),
        ({"output_type": "success"}, b""),
        ({"output_type": "result_serialized"}, bytes(range(256)) * 4000),
    ]
    blob = b"".join(frame_bytes(h, p) for h, p in frames)
    rng = random.Random(7)
    for _ in range(100):
        decoder, got, pos = FrameDecoder(), [], 0
        while pos < len(blob):
            step = rng.randint(1, 9000)
            got += decoder.feed(blob[pos : pos + step])
            pos += step
        decoder.finish()
        assert [(h["output_type"], p) for h, p in got] == [(h["output_type"], p) for h, p in frames]


def test_truncated_stream_is_an_error():
    blob = frame_bytes({"output_type": "x"}, b"12345")
    decoder = FrameDecoder()
    decoder.feed(blob[:-2])
    with pytest.raises(WireError, match="middle of a frame"):
        decoder.finish()


def test_single_frame_request_checks():
    header, payload = decode_single_frame(frame_bytes({"serialization": "json"}, b"[1]"))
    assert header["serialization"] == "json" and bytes(payload) == b"[1]"
    with pytest.raises(WireError, match="one frame"):
        decode_single_frame(frame_bytes({}, b"a") * 2)
    with pytest.raises(WireError, match="truncated"):
        decode_single_frame(b"\x00\x00")
    with pytest.raises(WireError, match="larger than"):
        decode_single_frame(b"\xff\xff\xff\xff" + b"x" * 10)


def test_serialization_round_trips_and_errors():
    assert deserialize(serialize({"a": [1, 2]}, "json"), "json") == {"a": [1, 2]}
    assert deserialize(serialize((1, {2}), "pickle"), "pickle") == (1, {2})
    with pytest.raises(WireError, match="use serialization='pickle'"):
        serialize({1, 2}, "json")
    with pytest.raises(WireError, match="unknown serialization 'xml'"):
        serialize(1, "xml")
    with pytest.raises(WireError, match="not valid JSON"):
        deserialize(b"{", "json")
    with pytest.raises(WireError, match="not a valid pickle"):
        deserialize(b"nonsense", "pickle")


def test_cached_headers_are_fresh_copies_and_track_the_payload_size():
    blob = frame_bytes({"serialization": "json", "stream_logs": True}, b"[1]")
    first, _ = decode_single_frame(blob)
    first["serialization"] = "pickle"  # a caller changing its header must not change the next one
    second, payload = decode_single_frame(blob)
    assert second == {"serialization": "json", "stream_logs": True, "size": 3}
    assert bytes(payload) == b"[1]"
    longer, payload = decode_single_frame(
        frame_bytes({"serialization": "json", "stream_logs": True}, b"[1,2]")
    )
    assert longer["size"] == 5 and bytes(payload) == b"[1,2]"


def test_headers_with_nested_values_encode_and_decode():
    header = {"output_type": "exception", "error": {"type": "ValueError", "message": "m", "traceback": ""}}
    for _ in range(2):
        got, _ = decode_single_frame(frame_bytes(header, b""))
        assert got["error"]["type"] == "ValueError"
        got["error"]["type"] = "changed"
