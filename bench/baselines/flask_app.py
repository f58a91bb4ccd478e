"""Flask baseline, served by gunicorn with (2 x cores) + 1 sync workers, the documented default advice.

Same endpoint and JSON work as :mod:`bench.baselines.fastapi_app`.
"""

from collections.abc import Callable
from typing import Any

from flask import Flask, abort, jsonify, request

from bench._funcs import add

FUNCTIONS: dict[str, Callable[..., Any]] = {"add": add}

app = Flask(__name__)


@app.post("/<key>/call")
def call(key: str) -> Any:
    fn = FUNCTIONS.get(key)
    if fn is None:
        abort(404)
    body = request.get_json()
    data = body.get("data") or {}
    return jsonify(fn(*data.get("args", []), **data.get("kwargs", {})))
