"""FastAPI baseline, served by plain ``uvicorn bench.baselines.fastapi_app:app`` (one process).

The endpoint parses the JSON body, calls the function in-process and returns its result as
JSON: the same work the runhouse daemon does for a ``serialization: none`` call, minus the
hop to a worker process.
"""

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, HTTPException, Request

from bench._funcs import add

FUNCTIONS: dict[str, Callable[..., Any]] = {"add": add}

app = FastAPI()


@app.post("/{key}/call")
async def call(key: str, request: Request) -> Any:
    fn = FUNCTIONS.get(key)
    if fn is None:
        raise HTTPException(404, f"no function named {key!r}")
    body = await request.json()
    data = body.get("data") or {}
    return fn(*data.get("args", []), **data.get("kwargs", {}))
