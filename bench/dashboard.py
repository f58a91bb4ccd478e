#!/usr/bin/env python
"""Den dashboard benchmark: ``python bench/dashboard.py [--requests N]``.

Starts Den (``runhouse den start``) on a throwaway PostgreSQL (``tests/denserver.py``), fills it
in bulk with COPY: 50 users, 10,000 resources (2,000 of them the signed-in user's, 30% of the
rest public, 1,000 shared with them; 200 clusters with heartbeats; 200 secrets) with one version
each, and 1,000,000 usage events over the last 90 days (200 clusters, 50 users; 90% calls, 6%
deploys, 2% launches, 2% teardowns), summed into ``usage_hours``, ``usage_days`` and
``usage_clusters`` as migrations 0002 and 0004 do, then ``VACUUM ANALYZE``. Then signs in to the dashboard over HTTP and,
from one kept-alive connection, times each main page's first request (nothing of it is kept yet:
for the usage pages, every bucket is summed from the rollups) and then ``--requests`` more after 5
untimed ones, and ``GET /v1/usage`` (since 1 day, 7 days, all time) 5 times each. Prints a
Markdown table of the first request and p50/p99 per page; stops what it started.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import httpx  # noqa: E402
import psycopg  # noqa: E402
from denserver import DenServer, postgres_url, start_den  # noqa: E402

from bench.stats import summarize  # noqa: E402

USERS = 50
RESOURCES = 10_000
OWN = 2_000
CLUSTERS = 200
SECRETS = 200
SHARED = 1_000
EVENTS = 1_000_000
DAYS = 90
WARMUP = 5
API_SINCE = ("1d", "7d", None)  # GET /v1/usage as the signed-in user: 1 untimed, API_REQUESTS timed
API_REQUESTS = 5


def fill(dsn: str, me: str) -> None:
    """Bulk-load the rows described in the module docstring (``me`` already exists)."""
    rng = random.Random(7)
    now = datetime.utcnow()
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        others = [f"user{i:02d}" for i in range(1, USERS)]
        with cur.copy("COPY users (username, created_at) FROM STDIN") as copy:
            for name in others:
                copy.write_row((name, now))
        cur.execute("SELECT id, username FROM users")
        ids = {name: uid for uid, name in cur.fetchall()}
        owners = [me] * OWN + [others[i % len(others)] for i in range(RESOURCES - OWN)]
        clusters = {i * (RESOURCES // CLUSTERS) for i in range(CLUSTERS)}
        secrets = {i * (RESOURCES // SECRETS) + 1 for i in range(SECRETS)}
        with cur.copy(
            "COPY resources (owner_id, name, resource_type, visibility, version, config, created_at, "
            "updated_at, updated_by) FROM STDIN"
        ) as copy:
            for i, owner in enumerate(owners):
                kind = "cluster" if i in clusters else "secret" if i in secrets else "function"
                config = {"resource_type": kind, "name": f"/{owner}/res-{i}", "code": "x" * 200}
                if kind == "secret":
                    config = {"resource_type": kind, "keys": ["KEY", "TOKEN"], "provider": "aws"}
                vis = "public" if owner != me and rng.random() < 0.3 else "private"
                copy.write_row((ids[owner], f"res-{i}", kind, vis, 1, json.dumps(config), now, now, owner))
        cur.execute("SELECT id, name FROM resources")
        rid = {name: r for r, name in cur.fetchall()}
        with cur.copy(
            "COPY resource_versions (resource_id, version, config, created_at, created_by) FROM STDIN"
        ) as c:
            for i, owner in enumerate(owners):
                c.write_row(
                    (rid[f"res-{i}"], 1, json.dumps({"resource_type": "function", "i": i}), now, owner)
                )
        with cur.copy("COPY shares (resource_id, user_id, access_level) FROM STDIN") as copy:
            for i in rng.sample(range(OWN, RESOURCES), SHARED):
                copy.write_row((rid[f"res-{i}"], ids[me], "read"))
        status = json.dumps(
            {"idle_s": 5, "workers": ["base", "gpu"], "objects": ["model"], "calls_served": 10}
        )
        with cur.copy("COPY heartbeats (resource_id, status, updated_at) FROM STDIN") as copy:
            for i in clusters:
                copy.write_row((rid[f"res-{i}"], status, now - timedelta(seconds=rng.random() * 600)))
        uris = [f"/{owners[i]}/res-{i}" for i in sorted(clusters)]
        users = [me, *others]
        kinds = ["call"] * 90 + ["deploy"] * 6 + ["cluster_up"] * 2 + ["cluster_down"] * 2
        span = DAYS * 86400
        with cur.copy("COPY usage_events (username, cluster, kind, resource, count, at) FROM STDIN") as copy:
            for _ in range(EVENTS):
                at = now - timedelta(seconds=rng.random() * span)
                copy.write_row(
                    (rng.choice(users), rng.choice(uris), rng.choice(kinds), None, rng.randint(1, 20), at)
                )
        # What usage.record keeps per report, summed here at once as migrations 0002 and 0004 do.
        hour = "CAST(FLOOR(EXTRACT(EPOCH FROM at) / 3600) AS INTEGER)"
        cur.execute(
            "INSERT INTO usage_hours (hour, cluster, username, kind, count, first_at, last_at) "
            f"SELECT {hour}, cluster, username, kind, SUM(count), MIN(at), MAX(at) FROM usage_events "
            f"GROUP BY {hour}, cluster, username, kind"
        )
        day = "CAST(FLOOR(EXTRACT(EPOCH FROM at) / 86400) AS INTEGER)"
        cur.execute(
            "INSERT INTO usage_days (day, cluster, username, kind, resource, count, first_at, last_at) "
            f"SELECT {day}, cluster, username, kind, COALESCE(resource, ''), SUM(count), MIN(at), MAX(at) "
            f"FROM usage_events GROUP BY {day}, cluster, username, kind, COALESCE(resource, '')"
        )
        cur.execute(
            "INSERT INTO usage_clusters (cluster, owner, name) SELECT cluster, split_part(cluster, '/', 2), "
            "split_part(cluster, '/', 3) FROM usage_events GROUP BY cluster"
        )
        conn.commit()
        # Vacuumed and analyzed now, so that autovacuum does not do it to the bulk-loaded tables while
        # pages are timed (VACUUM cannot run in a transaction).
        conn.autocommit = True
        cur.execute("VACUUM ANALYZE")


def sign_in(den: DenServer, token: str) -> httpx.Client:
    http = httpx.Client(base_url=den.url, timeout=60, follow_redirects=True)
    form = http.get("/dashboard/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form)
    assert csrf
    http.post("/dashboard/login", data={"token": token, "csrf": csrf.group(1)}).raise_for_status()
    return http


PAGES = [
    ("resources (all, page 1)", "/dashboard/resources"),
    ("resources, search", "/dashboard/resources?q=res-12"),
    ("resources, mine, type", "/dashboard/resources?scope=mine&type=cluster"),
    ("resources, public, page 40", "/dashboard/resources?scope=public&offset=2000"),
    ("a resource", "/dashboard/resources/bench/res-5"),
    ("clusters", "/dashboard/clusters"),
    ("a cluster", "/dashboard/clusters/bench/res-0"),
    ("usage, 24h by user", "/dashboard/usage?range=24h"),
    ("usage, 7d by user", "/dashboard/usage?range=7d"),
    ("usage, 30d by cluster", "/dashboard/usage?range=30d&by=cluster"),
    ("usage, 90d by user", "/dashboard/usage?range=90d"),
    ("secrets", "/dashboard/secrets"),
    ("tokens", "/dashboard/tokens"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rh-bench-dash-") as tmp:
        url = postgres_url()
        den = start_den(Path(tmp) / "den", url)
        try:
            token = den.add_user("bench")
            began = time.perf_counter()
            fill(url.replace("postgresql+psycopg://", "postgresql://"), "bench")
            print(
                f"loaded {RESOURCES} resources and {EVENTS} usage events in {time.perf_counter() - began:.1f}s"
            )
            http = sign_in(den, token)
            try:
                print("| page | first ms | p50 ms | p99 ms | bytes |\n| --- | ---: | ---: | ---: | ---: |")
                for label, path in PAGES:
                    t = time.perf_counter()
                    http.get(path).raise_for_status()
                    first_ms = (time.perf_counter() - t) * 1000
                    for _ in range(WARMUP):
                        http.get(path).raise_for_status()
                    samples = []
                    for _ in range(args.requests):
                        t = time.perf_counter()
                        reply = http.get(path)
                        samples.append(time.perf_counter() - t)
                        reply.raise_for_status()
                    s = summarize(samples)
                    print(
                        f"| {label} | {first_ms:.1f} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} "
                        f"| {len(reply.content)} |"
                    )
                api = den.client(token)
                for since in API_SINCE:
                    params = {"since": since} if since else {}
                    api.get("/v1/usage", params=params).raise_for_status()
                    samples = []
                    for _ in range(API_REQUESTS):
                        t = time.perf_counter()
                        reply = api.get("/v1/usage", params=params)
                        samples.append(time.perf_counter() - t)
                        reply.raise_for_status()
                    s = summarize(samples)
                    label = (
                        f"API GET /v1/usage{'?since=' + since if since else ''} ({len(reply.json())} rows)"
                    )
                    print(f"| {label} | - | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | {len(reply.content)} |")
                api.close()
            finally:
                http.close()
        finally:
            den.stop()


if __name__ == "__main__":
    main()
