"""The seed guide's hello-world flow on a cluster running on this machine.

Run it with ``python examples/hello_world.py``. It starts a local daemon (the stand-in for the
guide's cloud GPU box), sends a function and a class to it, calls them, saves the function to an
embedded Den registry and loads it back by name, and tears everything down.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator

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

    # [5]: save to Den, the registry (embedded: SQLite in a temporary folder), and load it back by name.
    with embedded_den():
        remote_counts.save()
        print("saved as", remote_counts.rns_address)
        again = rh.function(name=f"/{DEN_USER}/word_counts")
        print("loaded by name:", again("matcha matcha"))
        print("versions in Den:", [h["version"] for h in remote_counts.history()])

    # [6]: free the worker, then stop the daemon.
    cluster.delete("hello_env")
    cluster.teardown()
    print("done")


DEN_USER = "hello-user"


@contextlib.contextmanager
def embedded_den() -> Iterator[str]:
    """Den on this machine (SQLite in a temporary folder) with one user, logged in through the
    environment as a CI job would be; stopped afterwards."""
    folder = tempfile.mkdtemp(prefix="rh-hello-den-")
    db = f"sqlite:///{folder}/den.sqlite"
    port = int(os.environ.get("HELLO_DEN_PORT", "0")) or _free_port()

    def den(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "runhouse.cli", "den", *args], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise SystemExit(f"runhouse den {args[0]} failed:\n{done.stdout}{done.stderr}")
        return done.stdout

    den("start", "--port", str(port), "--db", db, "--data-dir", folder)
    try:
        token = den("user", "add", DEN_USER, "--db", db).strip().splitlines()[-1]
        url = f"http://127.0.0.1:{port}"
        os.environ.update(RH_TOKEN=token, RH_DEN_URL=url)
        print("Den running at", url, "as user", DEN_USER)
        yield url
    finally:
        os.environ.pop("RH_TOKEN", None)
        os.environ.pop("RH_DEN_URL", None)
        den("stop", "--data-dir", folder)
        shutil.rmtree(folder, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":
    main()
