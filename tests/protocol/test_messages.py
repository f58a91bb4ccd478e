"""The daemon-worker protocol's typed records: round trips through the IPC channel, refusals of
messages that are not records of this protocol, and a real worker process speaking it."""

from __future__ import annotations

import asyncio
import os
import pickle
import socket
import sys
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from runhouse.protocol import messages as m
from runhouse.protocol.ipc import open_channel
from runhouse.server.workers import WorkerHandle

ASSETS = Path(__file__).parent.parent / "assets"
OPTS: m.CallOptionsDict = {
    "stream_logs": True,
    "run_name": None,
    "remote": False,
    "shm": False,
    "timeout": 2.5,
}
INFO: m.ErrorInfo = {"type": "builtins.ValueError", "message": "no", "traceback": "tb", "pickled": b"\x80x"}

REQUESTS: list[m.WorkerRequest] = [
    m.Call(1, "fn", "call", "pickle", OPTS),
    m.Deploy(2, "obj", {"module": "mod", "qualname": "Cls.f", "root": None}, "json"),
    m.Put(3, "k", "json"),
    m.Get(4, "k", "pickle"),
    m.Keys(5),
    m.Delete(6, ["a", "b"]),
    m.Rename(7, "old", "new"),
    m.Status(8),
    m.Cancel(9),
]
REPLIES: list[m.WorkerReply] = [
    m.Out(1, "printed\n"),
    m.Item(1, "json"),
    m.Result(1, "pickle", {"stored_key": "run1"}),
    m.Result(2, "json", None),
    m.Error(3, dict(INFO, status=404)),  # type: ignore[arg-type]
    m.End(4),
    m.Ok(5, {"pid": 12, "objects": {"k": "list"}}),
    m.Hello(0, 4321),
]


def test_every_record_kind_is_covered_once():
    assert set(m.REQUESTS) == {type(r) for r in REQUESTS} and len(m.REQUESTS) == 9
    assert set(m.REPLIES) == {type(r) for r in REPLIES} and len(m.REPLIES) == 7
    kinds = [cls._field_defaults["kind"] for cls in m.REQUESTS + m.REPLIES]
    assert len(set(kinds)) == len(kinds)
    for cls in m.REQUESTS + m.REPLIES:
        assert cls._fields[0] == "cid" and cls._fields[-1] == "kind"


def test_records_round_trip_through_the_ipc_channel():
    async def main() -> list[tuple[Any, Any]]:
        left, right = socket.socketpair()
        got: list[tuple[Any, Any]] = []
        done = asyncio.get_running_loop().create_future()
        total = len(REQUESTS) + len(REPLIES)

        def on_message(header: Any, body: Any) -> None:
            got.append((header, body))
            if len(got) == total:
                done.set_result(None)

        sender = await open_channel(left, lambda h, b: None, lambda e: None)
        await open_channel(right, on_message, lambda e: None)
        for i, msg in enumerate([*REQUESTS, *REPLIES]):
            sender.send(m.encode(msg), b"payload %d" % i if i % 2 else None)
        await asyncio.wait_for(done, 10)
        sender.close()
        return got

    got = asyncio.run(main())
    for i, (header, body) in enumerate(got):
        assert type(header) is tuple  # the channel carries plain tuples ...
        sent = [*REQUESTS, *REPLIES][i]
        decoded = (m.decode_request if i < len(REQUESTS) else m.decode_reply)(header)
        assert type(decoded) is type(sent) and decoded == sent  # ... rebuilt as the same records
        assert body == (b"payload %d" % i if i % 2 else None)
    call = m.decode_request(got[0][0])
    assert isinstance(call, m.Call) and call.options["timeout"] == 2.5 and call.key == "fn"
    error = m.decode_reply(got[len(REQUESTS) + 4][0])
    assert isinstance(error, m.Error) and error.info["status"] == 404 and error.info["pickled"] == b"\x80x"


def test_the_wire_form_pickles_like_a_plain_tuple():
    """No class is named in a header: it is as small as the positional tuples were."""
    call = m.Call(12345, "echo", "call", "pickle", OPTS)
    old = ("call", 12345, "echo", "call", "pickle", OPTS)
    assert len(pickle.dumps(m.encode(call), protocol=5)) == len(pickle.dumps(old, protocol=5))
    assert b"messages" not in pickle.dumps(m.encode(call), protocol=5)


@pytest.mark.parametrize(
    ("header", "side", "match"),
    [
        ((1, "bogus"), "request", r"unknown daemon-worker request \(1, 'bogus'\).*one of 'call', 'deploy'"),
        (
            (1, "k", "put"),
            "request",
            r"a 'put' request has 4 fields \(cid, key, serialization, kind\)",
        ),
        (("call", 1, "k", "call", "json", {}), "request", "positional tuple with the kind first"),
        ((1, "call"), "reply", r"one of 'out', 'item', 'result'"),  # a request kind is not a reply
        ((), "reply", "unknown daemon-worker reply"),
        (None, "reply", "unknown daemon-worker reply None"),
        ("call", "request", "unknown daemon-worker request 'call'"),
        ((1, {"unhashable": 1}), "request", "unknown daemon-worker request"),
    ],
)
def test_messages_that_are_not_records_of_this_protocol_are_refused(header, side, match):
    decode = m.decode_request if side == "request" else m.decode_reply
    with pytest.raises(m.ProtocolError, match=match):
        decode(header)


def test_a_record_on_the_wrong_side_is_named():
    error = m.unknown_message(m.Ok(3, 1), "request")
    assert "Ok is a reply, not a request" in str(error)


def test_call_ids_of_unreadable_messages():
    assert m.cid_of((7, "bogus")) == 7
    assert m.cid_of(("call", 8, "k")) == 8  # the positional layout: answered all the same
    assert m.cid_of(("x",)) is None and m.cid_of(None) is None and m.cid_of(()) is None


class _Bogus(NamedTuple):
    cid: int
    kind: str = "bogus"


def test_a_worker_process_speaks_records_and_refuses_the_rest():
    async def main() -> None:
        environ = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ASSETS), *sys.path]))
        handle = WorkerHandle("records", environ, 4, on_exit=lambda h: None)
        await handle.start()
        try:
            reply, _ = await handle.request(lambda cid: m.Put(cid, "x", "json"), b"[1, 2]")
            assert isinstance(reply, m.Ok) and reply.value == "x"
            reply, body = await handle.request(lambda cid: m.Get(cid, "x", "json"))
            assert isinstance(reply, m.Result) and reply.serialization == "json" and bytes(body) == b"[1, 2]"
            spec = {"module": "user_funcs", "qualname": "print_and_return", "root": str(ASSETS)}
            reply, _ = await handle.request(lambda cid: m.Deploy(cid, "pr", spec, "json"))
            assert isinstance(reply, m.Ok) and reply.value["key"] == "pr"
            cid, pending = handle.submit(
                lambda cid: m.Call(cid, "pr", "call", "json", OPTS), b'{"args": ["hi"], "kwargs": {}}'
            )
            out, _ = await pending.next()
            result, body = await pending.next()
            handle.forget(cid)
            assert isinstance(out, m.Out) and "hi" in out.text
            assert isinstance(result, m.Result) and bytes(body) == b"2"  # len("hi")
            reply, _ = await handle.request(m.Status)
            assert isinstance(reply, m.Ok) and reply.value["objects"] == {"x": "list", "pr": "function"}

            reply, _ = await handle.request(_Bogus)  # type: ignore[arg-type]
            assert isinstance(reply, m.Error)
            assert reply.info["type"] == "runhouse.protocol.messages.ProtocolError"
            assert (
                "unknown daemon-worker request" in reply.info["message"]
                and "'bogus'" in reply.info["message"]
            )
            legacy = lambda cid: ("put", cid, "y", "json")  # noqa: E731 - the positional tuples of old
            reply, _ = await handle.request(legacy)  # type: ignore[arg-type]
            assert isinstance(reply, m.Error) and "positional tuple" in reply.info["message"]
            reply, _ = await handle.request(m.Keys)  # the worker kept serving
            assert isinstance(reply, m.Ok) and reply.value == ["x", "pr"]
        finally:
            await handle.stop()

    asyncio.run(main())


def test_the_daemon_fails_a_request_whose_reply_it_cannot_read():
    async def main() -> None:
        handle = WorkerHandle("fake", {}, 1, on_exit=lambda h: None)
        from runhouse.server.workers import PendingCall

        pending = PendingCall()
        handle._pending[5] = pending
        handle._on_message((5, "text", "shout"), None)  # an unknown reply kind for call 5
        reply, _ = await pending.next()
        assert (
            isinstance(reply, m.Error)
            and "unknown daemon-worker reply (5, 'text', 'shout')" in reply.info["message"]
        )
        handle._on_message((99, "x", "out"), None)  # a readable reply nobody waits for: dropped
        handle._on_message(("garbage",), None)  # no call id to answer: logged and dropped

    asyncio.run(main())
