"""Keep SkyPilot's autostop from stopping an on-demand cluster that is busy with our calls.

SkyPilot's skylet on the head (``sky/skylet/events.py``, ``AutostopEvent``, once a minute) stops
(or, with autodown, deletes) the cluster when it has been idle for its autostop minutes. Idle there
means SkyPilot's own job queue is empty (``job_lib.is_cluster_idle``); the idle time is counted from
the last active time it keeps in ``~/.sky/skylet_config.db`` (table ``config``, key
``autostop_last_active_time``, ``str(time.time())``; ``autostop_lib.set_last_active_time_to_now``),
which it resets only while a SkyPilot job runs. Calls through our daemon are not SkyPilot jobs, so
without help a cluster busy with them for longer than its autostop minutes would be stopped.

:func:`keep_skypilot_awake` runs in a worker of our daemon on the head (the on-demand cluster
starts it after ``up()`` when ``autostop_mins`` is set): a thread asks the daemon every
``every_s`` seconds whether it is busy (a call in flight in any worker, or a request since the last
look) and, when it is, writes the current time into that key, as SkyPilot's own function does.
An idle daemon leaves the key alone, so SkyPilot's autostop still stops an idle cluster on time. The
thread dies with the worker, so a dead daemon stops refreshing and SkyPilot stops the machines.
This module runs on the head: the standard library only.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

#: SkyPilot's skylet state on the head and the key its autostop counts idleness from
SKYLET_DB = "~/.sky/skylet_config.db"
LAST_ACTIVE_KEY = "autostop_last_active_time"

_keeper: dict[str, Any] = {}  # this worker's keeper: thread, settings and what it did
_lock = threading.Lock()


def keep_skypilot_awake(every_s: float = 30.0) -> dict[str, Any]:
    """Start (once per worker) the thread that refreshes SkyPilot's last active time while our
    daemon is busy; returns what it has done so far (``refreshed``: how many times, ``last``:
    the last time written, ``db``: the file, ``error``: the last problem seen, if any)."""
    with _lock:
        if "thread" not in _keeper:
            from runhouse.settings import load_settings  # the daemon's, from the worker's environment

            settings = load_settings()
            token_file = settings.daemon_dir(settings.port) / "token"
            _keeper.update(
                every_s=float(every_s),
                url=f"http://127.0.0.1:{settings.port}/status",
                token_file=str(token_file),
                db=str(Path(SKYLET_DB).expanduser()),
                refreshed=0,
                last=None,
                error=None,
            )
            thread = threading.Thread(target=_loop, name="rh-skypilot-awake", daemon=True)
            _keeper["thread"] = thread
            thread.start()
        return {k: v for k, v in _keeper.items() if k != "thread"}


def _loop() -> None:
    every = _keeper["every_s"]
    while True:
        time.sleep(every)
        try:
            if busy(_status(), every):
                _keeper["last"] = set_last_active(_keeper["db"])
                _keeper["refreshed"] += 1
            _keeper["error"] = None
        except (OSError, ValueError, sqlite3.Error) as e:  # the daemon restarting, a locked db: next time
            _keeper["error"] = f"{type(e).__name__}: {e}"


def _status() -> dict[str, Any]:
    token = Path(_keeper["token_file"]).read_text().strip()
    request = urllib.request.Request(_keeper["url"], headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        return dict(json.load(reply))


def busy(status: dict[str, Any], every_s: float) -> bool:
    """Whether the daemon's ``status`` shows work: a call in flight in any worker, or a request
    within the last look (``idle_s`` is the time since the daemon's last request)."""
    if any((w.get("in_flight") or 0) > 0 for w in status.get("workers") or []):
        return True
    return float(status.get("idle_s", float("inf"))) < every_s * 1.5


def set_last_active(db: str) -> float:
    """Write now as SkyPilot's last active time in its skylet state ``db`` (its table, made if
    SkyPilot has not made it yet, as its ``configs`` module does); returns the time written."""
    now = time.time()
    Path(db).parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(db, timeout=10) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS config (key TEXT PRIMARY KEY, value TEXT)")
        conn.execute("INSERT OR REPLACE INTO config VALUES (?, ?)", (LAST_ACTIVE_KEY, str(now)))
    return now
