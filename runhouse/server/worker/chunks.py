"""Map chunks: one call that runs a method over many items (``fn.map`` / ``fn.starmap``).

A map of 10,000 small items sent as 10,000 calls spends nearly all its time on the way there and
back (HTTP, the daemon's relay, the channel); sent in chunks, that cost is paid once per chunk. The
client sends ``POST /{key}/__rh_map__`` (:data:`runhouse.protocol.wire.MAP`) with arguments
``(method, [args tuple per item], kwargs)``; the daemon relays it like any call; here the worker
runs ``method`` once per item and answers ``[results, None]``, or, at the first item that raises,
``[results before it, [its index in the chunk, error info]]`` so the client can name the item and
re-raise the original exception type. Sync items run one after another in the call's thread (the
client keeps several chunks in flight per worker); coroutines of a chunk run concurrently on the
loop. Generator items are collected into lists, as a map of single calls would.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

from runhouse.server.worker.errors import CallError, error_info

ChunkReply = list[Any]  # [results, None] or [results, [index, ErrorInfo]]


def map_call(
    target: Callable[..., Any], args: list[Any], kwargs: dict[str, Any], with_pickle: bool
) -> tuple[Callable[..., Any], list[Any]]:
    """The callable that runs a chunk, and its arguments, from a map call's decoded ``args``
    (``[method, items, item_kwargs]``; ``target`` is ``method`` resolved on the object)."""
    if kwargs or len(args) != 3:
        raise CallError("a map chunk takes (method, items, kwargs)", 400)
    _, items, item_kwargs = args
    if not isinstance(items, list | tuple) or not all(isinstance(a, list | tuple) for a in items):
        raise CallError("a map chunk's items must be a list of argument lists", 400)
    if not isinstance(item_kwargs, dict):
        raise CallError("a map chunk's kwargs must be a dict", 400)
    chunk = [target, items, item_kwargs, with_pickle]
    if inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target):
        return _run_async_chunk, chunk
    return _run_sync_chunk, chunk


def map_method(args: list[Any]) -> str:
    """The method a map chunk runs; only public names (no attribute access, no nested maps)."""
    method = args[0] if args else None
    if not isinstance(method, str) or not method or method.startswith("_"):
        raise CallError(f"a map chunk runs a public method of the object; got {method!r}", 400)
    return method


def _run_sync_chunk(
    target: Callable[..., Any], items: list[Any], kwargs: dict[str, Any], with_pickle: bool
) -> ChunkReply:
    results: list[Any] = []
    for index, args in enumerate(items):
        try:
            result = target(*args, **kwargs)
            if inspect.isgenerator(result):
                result = list(result)
        except Exception as e:  # noqa: BLE001 - the item's error goes back with its index
            return [results, [index, error_info(e, with_pickle)]]
        results.append(result)
    return [results, None]


async def _run_async_chunk(
    target: Callable[..., Any], items: list[Any], kwargs: dict[str, Any], with_pickle: bool
) -> ChunkReply:
    outcomes = await asyncio.gather(*(_one(target, args, kwargs) for args in items), return_exceptions=True)
    for index, outcome in enumerate(outcomes):
        if isinstance(outcome, Exception):
            return [list(outcomes[:index]), [index, error_info(outcome, with_pickle)]]
        if isinstance(outcome, BaseException):
            raise outcome  # cancellation: the whole chunk is over
    return [list(outcomes), None]


async def _one(target: Callable[..., Any], args: Any, kwargs: dict[str, Any]) -> Any:
    if inspect.isasyncgenfunction(target):
        return [item async for item in target(*args, **kwargs)]
    result = target(*args, **kwargs)
    return await result if inspect.isawaitable(result) else result
