"""The parts of uvicorn (and httptools) that the daemon's HTTP layer relies on beyond its public API.

``runhouse/server/http.py`` and ``runhouse/server/fastpath.py`` subclass
``uvicorn.protocols.http.httptools_impl.HttpToolsProtocol``: they override its parser callbacks,
read its per-connection and per-request state, and stand in for its request cycle while a fast
call is in flight. None of that is uvicorn's public API, so pyproject.toml pins uvicorn to the
series these tests pass with. When a test here fails, its message names what changed: adapt
http.py/fastpath.py to it, then move the pin.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httptools
import pytest
import uvicorn
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from runhouse.server.fastpath import _FastCycle
from runhouse.server.http import CoalescingHttpToolsProtocol

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
WHO = "runhouse/server/http.py and fastpath.py"

# Methods the daemon overrides and calls through super(), with the parameters it passes.
OVERRIDDEN = {
    "__init__": ["self", "config", "server_state", "app_state", "_loop"],
    "connection_made": ["self", "transport"],
    "connection_lost": ["self", "exc"],
    "data_received": ["self", "data"],
    "on_message_begin": ["self"],
    "on_headers_complete": ["self"],
    "on_body": ["self", "body"],
    "on_message_complete": ["self"],
    "on_response_complete": ["self"],
}
# Methods uvicorn must keep calling on the protocol (parser callbacks, server shutdown).
CALLED_BY_UVICORN = ["on_url", "on_header", "shutdown", "pause_writing", "resume_writing"]
# What the daemon's code reads on the protocol, on the request cycle and on the flow control.
PROTOCOL_STATE = [
    "loop",
    "transport",
    "connections",
    "flow",
    "cycle",
    "pipeline",
    "parser",
    "url",
    "headers",
    "expect_100_continue",
]
CYCLE_STATE = ["response_complete", "response_started", "keep_alive", "disconnected", "message_event"]
FLOW_STATE = ["read_paused", "write_paused", "drain"]
# uvicorn.Config arguments runhouse/server/daemon.py passes.
CONFIG_ARGS = [
    "app",
    "host",
    "port",
    "log_level",
    "access_log",
    "loop",
    "http",
    "lifespan",
    "timeout_graceful_shutdown",
    "server_header",
    "date_header",
    "proxy_headers",
    "timeout_keep_alive",
    "ssl_certfile",
    "ssl_keyfile",
]


def _pin(package: str) -> SpecifierSet:
    found = re.search(rf'^\s*"{package}(?:\[[^\]]*\])?([^";]*)', PYPROJECT.read_text(), re.M)
    assert found, f"pyproject.toml has no dependency on {package}"
    return SpecifierSet(found.group(1))


def test_uvicorn_is_in_the_pinned_range():
    pin = _pin("uvicorn")
    assert pin.contains(Version(uvicorn.__version__)), (
        f"uvicorn {uvicorn.__version__} is installed, outside the range {WHO} are tested with ({pin}): "
        "run this file with it, adapt the daemon to what fails, then move the pin in pyproject.toml"
    )
    assert any(s.operator == "<" for s in pin), (
        f"uvicorn must have an upper bound in pyproject.toml, not {pin}"
    )


def test_httptools_is_in_the_pinned_range():
    installed = Version(httptools.__version__)
    assert _pin("httptools").contains(installed), f"httptools {installed} is outside {_pin('httptools')}"


@pytest.mark.parametrize("name", sorted(OVERRIDDEN))
def test_overridden_methods_keep_their_signatures(name: str):
    method = getattr(HttpToolsProtocol, name, None)
    assert callable(method), (
        f"uvicorn {uvicorn.__version__} removed HttpToolsProtocol.{name}, which {WHO} override"
    )
    params = list(inspect.signature(method).parameters)
    assert params == OVERRIDDEN[name], (
        f"uvicorn {uvicorn.__version__} changed HttpToolsProtocol.{name}{inspect.signature(method)}; "
        f"{WHO} override it as taking {OVERRIDDEN[name]}"
    )


def test_uvicorn_still_calls_what_the_daemon_relies_on():
    missing = [name for name in CALLED_BY_UVICORN if not callable(getattr(HttpToolsProtocol, name, None))]
    assert not missing, f"uvicorn {uvicorn.__version__} HttpToolsProtocol lost {missing}"
    params = inspect.signature(RequestResponseCycle.__init__).parameters
    assert "on_response" in params and "keep_alive" in params, (
        f"uvicorn {uvicorn.__version__} changed RequestResponseCycle({list(params)}): the fast path's _FastCycle "
        "stands in for it and relies on on_response_complete being how a finished reply moves the connection on"
    )


def test_the_request_parser_is_made_as_the_fast_path_remakes_it():
    """After reading a large body past the parser (fastpath._BodySink), the fast path gives the
    connection a fresh parser made the way uvicorn's __init__ makes it (fastpath._parser)."""
    source = inspect.getsource(HttpToolsProtocol.__init__)
    assert "self.parser = httptools.HttpRequestParser(self)" in source, (
        f"uvicorn {uvicorn.__version__} makes its request parser differently: update {WHO} (_parser)"
    )
    leniencies = re.findall(r"set_dangerous_leniencies\(([^)]*)\)", source)
    assert leniencies == ["lenient_data_after_close=True"], (
        f"uvicorn {uvicorn.__version__} sets parser leniencies {leniencies}: make fastpath._parser set the same"
    )


def test_config_takes_what_the_daemon_passes():
    params = inspect.signature(uvicorn.Config.__init__).parameters
    missing = [name for name in CONFIG_ARGS if name not in params]
    assert not missing, (
        f"uvicorn {uvicorn.__version__} Config no longer takes {missing} (runhouse/server/daemon.py)"
    )
    config = uvicorn.Config(_app, http=CoalescingHttpToolsProtocol, lifespan="off", log_level="warning")
    config.load()
    assert config.http_protocol_class is CoalescingHttpToolsProtocol, (
        f"uvicorn {uvicorn.__version__} Config(http=<a protocol class>) no longer uses the class given"
    )


def test_httptools_api_the_fast_path_and_client_use():
    parsed = httptools.parse_url(b"/key/method?x=1")
    assert (parsed.path, parsed.query) == (b"/key/method", b"x=1")
    for name in ("get_method", "get_http_version", "should_keep_alive", "feed_data"):
        assert callable(getattr(httptools.HttpRequestParser, name, None)), (
            f"httptools lost HttpRequestParser.{name}"
        )
    for name in ("HttpResponseParser", "HttpParserError", "HttpParserUpgrade"):
        assert hasattr(httptools, name), (
            f"httptools {httptools.__version__} lost {name} (runhouse/client/http11.py)"
        )


# -- the protocol's state, read on a live instance ----------------------------------------------


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False
        self.reading = True

    def write(self, data: Any) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 32300)}.get(name, default)


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


class _Snapshot(HttpToolsProtocol):
    """Records, when the headers are complete, what the fast path reads at that moment."""

    seen: dict[str, Any]

    def on_headers_complete(self) -> None:
        self.seen = {
            "url": self.url,
            "headers": list(self.headers),
            "expect": self.expect_100_continue,
            "method": self.parser.get_method(),
            "version": self.parser.get_http_version(),
            "keep_alive": self.parser.should_keep_alive(),
        }
        super().on_headers_complete()


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _connect(
    loop: asyncio.AbstractEventLoop, cls: type[HttpToolsProtocol] = _Snapshot
) -> tuple[Any, _Transport]:
    config = uvicorn.Config(_app, lifespan="off", log_level="warning")
    protocol = cls(config, ServerState(), {}, _loop=loop)
    transport = _Transport()
    protocol.connection_made(transport)
    return protocol, transport


def _run(loop: asyncio.AbstractEventLoop) -> None:
    loop.run_until_complete(asyncio.sleep(0.05))


def test_the_protocol_state_the_daemon_reads(loop: asyncio.AbstractEventLoop):
    protocol, transport = _connect(loop)
    assert protocol.loop is loop and protocol.transport is transport and protocol in protocol.connections
    assert isinstance(protocol.flow, FlowControl)
    lost = [name for name in FLOW_STATE if not hasattr(protocol.flow, name)]
    assert not lost, f"uvicorn {uvicorn.__version__} FlowControl no longer has {lost} ({WHO})"
    assert protocol.cycle is None and not protocol.pipeline

    request = (
        b"POST /k/m?q HTTP/1.1\r\nHost: h\r\nX-Up: A\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi"
    )
    protocol.data_received(request)
    _run(loop)
    missing = [name for name in PROTOCOL_STATE if not hasattr(protocol, name)]
    assert not missing, f"uvicorn {uvicorn.__version__} HttpToolsProtocol no longer has {missing} ({WHO})"
    assert protocol.seen == {
        "url": b"/k/m?q",
        "headers": [
            (b"host", b"h"),
            (b"x-up", b"A"),
            (b"expect", b"100-continue"),
            (b"content-length", b"2"),
        ],
        "expect": True,
        "method": b"POST",
        "version": "1.1",
        "keep_alive": True,
    }, f"uvicorn {uvicorn.__version__} changed the request state its parser callbacks leave ({WHO} read it)"
    cycle = protocol.cycle
    assert isinstance(cycle, RequestResponseCycle)
    lost = [name for name in CYCLE_STATE if not hasattr(cycle, name)]
    assert not lost, f"uvicorn {uvicorn.__version__} RequestResponseCycle no longer has {lost} ({WHO})"
    assert cycle.response_complete and bytes(transport.written).endswith(b"ok")


def test_a_fast_cycle_holds_back_pipelined_requests_until_the_response_completes(
    loop: asyncio.AbstractEventLoop,
):
    """What fastpath.py's _FastCycle relies on: while it is the connection's cycle and incomplete,
    uvicorn queues a new request and pauses reading; on_response_complete starts the queued one."""
    protocol, transport = _connect(loop)
    fast = _FastCycle(keep_alive=True)
    protocol.cycle = fast  # as the fast path does when it takes a request
    protocol.data_received(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
    _run(loop)
    assert len(protocol.pipeline) == 1 and not transport.reading and not transport.written, (
        f"uvicorn {uvicorn.__version__} no longer queues a request behind an unfinished cycle ({WHO})"
    )
    fast.response_complete = True
    protocol.on_response_complete()
    _run(loop)
    assert not protocol.pipeline and transport.reading and bytes(transport.written).endswith(b"ok"), (
        f"uvicorn {uvicorn.__version__} on_response_complete no longer resumes reading and starts "
        f"the queued request ({WHO})"
    )


def test_shutdown_and_disconnect_treat_a_fast_cycle_like_their_own(loop: asyncio.AbstractEventLoop):
    protocol, transport = _connect(loop)
    fast = _FastCycle(keep_alive=True)
    protocol.cycle = fast
    protocol.shutdown()
    assert not fast.keep_alive and not transport.closed, (
        f"uvicorn {uvicorn.__version__} shutdown() no longer lets an in-flight cycle finish ({WHO})"
    )
    protocol.connection_lost(None)
    assert fast.disconnected, (
        f"uvicorn {uvicorn.__version__} connection_lost() no longer marks the cycle ({WHO})"
    )
    assert protocol not in protocol.connections
