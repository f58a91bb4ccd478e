"""What Den accepts: request body size, token lifetimes and how deeply JSON may nest, and the ASGI
middleware that holds request bodies to their limit as their bytes arrive.

Every refusal says the limit, so a caller can fix the request without reading the docs. This
module imports nothing of the web stack, so the CLI can show the same bounds without loading it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from runhouse.den.errors import InvalidInput

MAX_BODY_BYTES = 4 * 1024 * 1024  # a 1 MiB config escaped as JSON, with room to spare
MAX_TOKEN_LIFETIME_S = 366 * 24 * 3600  # a year and a day; a token may also be minted without expiry
MAX_JSON_DEPTH = 100  # far more than any config needs, far less than what breaks the JSON codecs
MAX_HISTORY_LIMIT = 1_000_000

TOKEN_LIFETIME_RULE = (
    f"expires_in_s must be a whole number of seconds from 1 to {MAX_TOKEN_LIFETIME_S} (366 days), "
    "or null for a token that does not expire"
)

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


def shown(value: object, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters so an error message never echoes a huge input
    (and never walks a deeply nested one: a JSON array or object is named, not shown)."""
    if isinstance(value, list | dict):
        return f"a JSON {'array' if isinstance(value, list) else 'object'}"
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def token_lifetime_problem(expires_in_s: object) -> str | None:
    """Why ``expires_in_s`` is not an acceptable token lifetime, or None when it is."""
    if expires_in_s is None:
        return None
    if (
        isinstance(expires_in_s, int)
        and not isinstance(expires_in_s, bool)  # JSON true is not a number of seconds
        and 1 <= expires_in_s <= MAX_TOKEN_LIFETIME_S
    ):
        return None
    return f"{TOKEN_LIFETIME_RULE}; got {shown(expires_in_s)}"


def check_token_lifetime(expires_in_s: int | None) -> int | None:
    problem = token_lifetime_problem(expires_in_s)
    if problem:
        raise InvalidInput(problem)
    return expires_in_s


def _is_unicode(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, which JSON's \\ud800 escapes can carry
        return False
    return True


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text (PostgreSQL refuses NUL; UTF-8 refuses lone surrogates)."""
    if "\x00" in value:
        return "must not contain NUL (\\u0000) characters"
    if not _is_unicode(value):
        return "must be valid Unicode: it holds a lone surrogate (\\ud800-\\udfff)"
    return None


def json_problem(value: Any, max_depth: int = MAX_JSON_DEPTH) -> str | None:
    """Why a decoded JSON value cannot be stored and served back: nested deeper than ``max_depth``
    levels, or holding a string (or key) that is not valid Unicode. Walked without recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > max_depth:
                return f"is nested more than {max_depth} levels deep; Den stores at most {max_depth}"
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
        elif isinstance(item, str) and not _is_unicode(item):
            return (
                f"holds a string that is not valid Unicode (a lone surrogate such as \\ud800): {shown(item)}"
            )
    return None


def _content_length(scope: MutableMapping[str, Any]) -> int | None:
    for key, value in scope.get("headers") or []:
        if key == b"content-length" and value.isdigit():
            return int(value)
    return None


async def _refuse(send: Send, limit: int, declared: int | None) -> None:
    size = f"of {declared} bytes " if declared is not None else ""
    body = json.dumps(
        {
            "detail": f"the request body {size}is over Den's limit of {limit} bytes "
            f"({limit / 1024 / 1024:g} MiB); send a smaller body"
        }
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Answers 413 to a request whose body is over ``limit`` bytes, whether it says so up front or not.

    A ``Content-Length`` over the limit is refused before the route runs. Otherwise (a chunked body)
    the bytes are counted as the route receives them; the moment the count passes the limit the 413
    goes out, the route is told the client went away (so it stops reading) and whatever it answers
    after that is dropped. Nothing past the limit is buffered: uvicorn reads the rest of the body and
    throws it away, so the connection stays usable (closing it instead would reset it under a client
    still sending, which then never sees the 413).
    """

    def __init__(self, app: App, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await _refuse(send, self.limit, declared)
            return
        received = 0
        started = refused = False

        async def counted_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    refused = True
                    if not started:
                        await _refuse(send, self.limit, None)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, counted_receive, guarded_send)
