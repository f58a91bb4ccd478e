"""A script written for the original system (its 0.0.35/0.0.36 ``rh.env`` era) runs unchanged.

The script follows the seed guide's flow, with a cluster on this machine in place of the cloud GPU
box: envs (``env.to``, ``cluster.run`` in an env, an env changed after construction), a function and
a class sent from the user's own module, the live object's methods and attributes, ``map``, a
nested call (a stub passed to another remote function), saving to Den and loading by name, and the
original's HTTP clients (a MIME-base64 pickle body, a GET with query arguments). It runs as a user's
script would: in its own process, from a folder outside the repo, logged in to a real Den.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import denserver
from conftest import free_port

USER_CODE = """
import os


def word_counts(text):
    counts = {}
    for word in text.split():
        counts[word] = counts.get(word, 0) + 1
    return counts


def apply(fn, value):
    return fn(value)


def greeting():
    return os.environ.get("GREETING")


class Tokenizer:
    def __init__(self, lower=False):
        self.lower = lower
        self.calls = 0

    def split(self, text):
        self.calls += 1
        return (text.lower() if self.lower else text).split()
"""

SCRIPT = """
import base64, json, pickle, urllib.request
import runhouse as rh
from my_code import Tokenizer, apply, greeting, word_counts

cluster = rh.cluster(name="rh-local", host="localhost", server_connection_type="none",
                     server_port=PORT).up_if_not()

# [3] envs, the rh.env era
env = rh.env(reqs=["six==1.16.0"], env_vars={"GREETING": "hello"}, name="wc_env")
env.reqs += ["six==1.16.0"]                        # changed after construction: still installed
env = env.to(cluster)
print("RUN", cluster.run(["echo $GREETING"], env=env))
remote_wc = rh.function(word_counts).to(cluster, env=env, name="word_counts")
print("CALL", json.dumps(remote_wc("a b a")))
print("ENVVAR", rh.function(greeting).to(cluster, env="wc_env")())

# modules: a stateful remote object with a name
RemoteTokenizer = rh.module(Tokenizer).to(cluster, env=env)
tok = RemoteTokenizer(lower=True, name="tok")
print("SPLIT", tok.split("Hot DOG"), tok.calls, tok.fetch("lower"))

# parallel and nested calls
print("MAP", json.dumps(remote_wc.map(["x", "y y"])))
remote_apply = rh.function(apply).to(cluster, env=env)
print("NESTED", json.dumps(remote_apply(remote_wc, "c c")))

# [5] saving and loading
remote_wc.save()
again = rh.function(name="/alice/word_counts")
print("LOADED", json.dumps(again("z")))

# the original's HTTP clients
token = open(f"{cluster.settings.home}/daemons/PORT/token").read().strip()
body = {"data": base64.encodebytes(pickle.dumps({"args": ["q q"], "kwargs": {}})).decode(),
        "serialization": "pickle"}
request = urllib.request.Request(remote_wc.http_url(), data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
reply = json.loads(urllib.request.urlopen(request).read())
print("HTTP", json.dumps(pickle.loads(base64.b64decode(reply["data"]))))
url = remote_wc.endpoint() + "/call?text=g+g"
reply = json.loads(urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})).read())
print("GET", reply["data"])

# [6] clean up
cluster.delete("tok")
print("KEYS", sorted(cluster.keys()))
cluster.teardown()
"""


def test_a_script_written_for_the_original_runs_unchanged(tmp_path):
    den = denserver.start_den(tmp_path / "den")
    try:
        token = den.add_user("alice")
        work = tmp_path / "project"
        work.mkdir()
        (work / "my_code.py").write_text(USER_CODE)
        port = free_port()
        (work / "script.py").write_text(textwrap.dedent(SCRIPT).replace("PORT", str(port)))
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("RH_")}
        env.update(RH_HOME=str(tmp_path / "home"), RH_TOKEN=token, RH_DEN_URL=den.url)
        proc = subprocess.run(
            [sys.executable, "script.py"], cwd=work, env=env, capture_output=True, text=True, timeout=300
        )
    finally:
        den.stop()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in proc.stdout.splitlines() if " " in line}
    assert out["RUN"] == "[(0, 'hello\\n', '')]"
    assert out["CALL"] == '{"a": 2, "b": 1}'
    assert out["ENVVAR"] == "hello"
    assert out["SPLIT"] == "['hot', 'dog'] 1 True"
    assert out["MAP"] == '[{"x": 1}, {"y": 2}]'
    assert out["NESTED"] == '{"c": 2}'
    assert out["LOADED"] == '{"z": 1}'
    assert out["HTTP"] == '{"q": 2}'
    assert out["GET"] == '{"g": 2}'
    assert "word_counts" in out["KEYS"] and "tok" not in out["KEYS"]
