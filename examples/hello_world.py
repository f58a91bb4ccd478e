"""The seed guide's hello-world flow on a cluster running on this machine.

Run it with ``python examples/hello_world.py``. It starts a local daemon (the stand-in for the
guide's cloud GPU box), sends a function and a class to it, calls them, and tears it down.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from hello_code import Tokenizer, word_counts  # noqa: E402

import runhouse as rh  # noqa: E402


def main() -> None:
    # [1] and [2]: specify the compute and start the daemon on it if it is not running.
    port = int(os.environ.get("HELLO_PORT", "32300"))
    cluster = rh.cluster(
        name="local", host="localhost", server_connection_type="none", server_port=port
    ).up_if_not()

    # [3]: a worker env and a function deployed into it.
    worker_env = rh.env(env_vars={"GREETING": "hello"}, name="hello_env")
    remote_counts = rh.function(word_counts).to(cluster, env=worker_env)

    # [4]: call it like a local function; its prints stream back here.
    counts = remote_counts("A hot dog made out of matcha. A matcha hot dog.")
    print("word counts:", counts)

    # A class: __init__ runs remotely and the live object keeps its state.
    tokenizer = rh.module(Tokenizer).to(cluster, env=worker_env)(lowercase=True, name="tokenizer")
    print("tokens:", tokenizer.tokenize("Runhouse Sends Code"))
    print("calls so far:", tokenizer.calls)

    # Errors come back with their type and the remote traceback.
    try:
        remote_counts(None)
    except AttributeError as error:
        print("remote error came back as", type(error).__name__)

    print("keys on the cluster:", cluster.keys())

    # [6]: free the worker, then stop the daemon.
    cluster.delete("hello_env")
    cluster.teardown()
    print("done")


if __name__ == "__main__":
    main()
