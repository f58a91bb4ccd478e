"""One name saved from 8 processes at once: every version 1..8 exists exactly once and every stored
config is whole, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys

from denserver import DenServer

WRITERS = 8

# Each writer starts, says "ready", waits for "go" on stdin (so all PUT at the same moment), saves
# its own config and prints the reply.
WRITER = r"""
import json, sys, httpx
url, token, path, index = sys.argv[1:5]
config = {"resource_type": "function", "writer": int(index), "payload": index * 40000}
with httpx.Client(base_url=url, headers={"Authorization": "Bearer " + token}, timeout=60) as http:
    http.get("/health")
    print("ready", flush=True)
    sys.stdin.readline()
    reply = http.put(path, json={"config": config})
    print(json.dumps({"status": reply.status_code, "body": reply.json(), "config": config}), flush=True)
"""


def _save_at_once(den: DenServer, token: str, path: str) -> list[dict]:
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, den.url, token, path, str(i)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(WRITERS)
    ]
    for w in writers:
        assert w.stdout is not None and w.stdout.readline().strip() == "ready"
    for w in writers:
        assert w.stdin is not None
        w.stdin.write("go\n")
        w.stdin.flush()
    results = []
    for w in writers:
        out, _ = w.communicate(timeout=120)
        results.append(json.loads(out))
    return results


def test_same_name_from_eight_processes_gets_versions_one_to_eight(people, den: DenServer) -> None:
    alice = people("alice")
    path = f"/v1/resources/{alice.name}/contended"
    results = _save_at_once(den, alice.token, path)
    assert [r["status"] for r in results] == [200] * WRITERS, results
    versions = sorted(r["body"]["version"] for r in results)
    assert versions == list(range(1, WRITERS + 1))
    sent_by_version = {r["body"]["version"]: r["config"] for r in results}
    history = alice.http.get(f"{path}/history").json()
    assert [h["version"] for h in history] == list(range(WRITERS, 0, -1))
    for entry in history:
        assert entry["config"] == sent_by_version[entry["version"]]  # whole, and the writer's own
    latest = alice.http.get(path).json()
    assert latest["version"] == WRITERS and latest["config"] == sent_by_version[WRITERS]
