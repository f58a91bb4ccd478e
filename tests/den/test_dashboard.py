"""Den's web dashboard over HTTP, on SQLite and PostgreSQL: sign-in and sessions, who sees what,
CSRF refusals, escaping, secrets never shown, usage numbers and the CSV export.

The same flows in a real browser are in ``test_dashboard_browser.py``."""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import re
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

import httpx
import pytest
from alembic import command
from alembic.config import Config
from denserver import DenServer, postgres_url, start_den, unique_name
from sqlalchemy import create_engine, delete, insert, select, update
from sqlalchemy.orm import Session

from runhouse.den import registry
from runhouse.den.dashboard.observe import state
from runhouse.den.db import MIGRATIONS_DIR
from runhouse.den.models import Base, DashboardSession, Resource, Share, Token, User, utc_now


class Person(Protocol):  # conftest's ``people`` fixture makes these
    name: str
    token: str
    http: httpx.Client


HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


class Browser:
    """An HTTP client that signs in to the dashboard like a browser (cookies, CSRF fields)."""

    def __init__(self, den: DenServer) -> None:
        self.http = httpx.Client(base_url=den.url, timeout=30, follow_redirects=True)
        self.csrf = ""

    def sign_in(self, token: str) -> httpx.Response:
        form = self.http.get("/dashboard/login")
        reply = self.http.post(
            "/dashboard/login",
            data={"token": token, "csrf": _csrf(form.text), "next": "/dashboard/resources"},
        )
        if reply.status_code == 200:
            self.csrf = _csrf(reply.text)
        return reply

    def get(self, path: str, **kwargs: object) -> httpx.Response:
        return self.http.get(path, **kwargs)  # type: ignore[arg-type]

    def post(self, path: str, data: dict[str, str], csrf: bool = True) -> httpx.Response:
        return self.http.post(path, data={**data, "csrf": self.csrf} if csrf else data)


@pytest.fixture
def browser(den: DenServer) -> Iterator[Callable[[Person], Browser]]:
    made: list[Browser] = []

    def make(person: Person) -> Browser:
        b = Browser(den)
        assert b.sign_in(person.token).status_code == 200
        made.append(b)
        return b

    yield make
    for b in made:
        b.http.close()


def _save(person: Person, name: str, config: dict | None = None, visibility: str = "private") -> None:
    body = {"config": config or {"resource_type": "function"}, "visibility": visibility}
    assert person.http.put(f"/v1/resources/{person.name}/{name}", json=body).status_code == 200


def test_pages_redirect_to_sign_in_and_a_bad_token_is_refused(den: DenServer) -> None:
    b = Browser(den)
    reply = b.get("/dashboard/usage?range=24h", follow_redirects=False)
    assert reply.status_code == 303
    assert reply.headers["location"] == "/dashboard/login?next=%2Fdashboard%2Fusage%3Frange%3D24h"
    refused = b.sign_in("rhd_not-a-token")
    assert refused.status_code == 401 and "invalid token" in refused.text
    assert "rhd_session" not in b.http.cookies


def test_session_cookie_is_httponly_strict_holds_no_token_and_sign_out_ends_it(
    den: DenServer, people: Callable[[str], Person]
) -> None:
    alice = people("alice")
    b = Browser(den)
    form = b.http.get("/dashboard/login")
    reply = b.http.post(
        "/dashboard/login", data={"token": alice.token, "csrf": _csrf(form.text)}, follow_redirects=False
    )
    assert reply.status_code == 303 and reply.headers["location"] == "/dashboard/resources"
    cookie = next(c for c in reply.headers.get_list("set-cookie") if c.startswith("rhd_session="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/dashboard" in cookie
    assert alice.token not in cookie and alice.token.removeprefix("rhd_") not in cookie
    page = b.get("/dashboard/resources")
    assert page.status_code == 200 and alice.name in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    b.csrf = _csrf(page.text)
    stolen = b.http.cookies["rhd_session"]
    assert b.post("/dashboard/logout", {}).status_code == 200  # followed to the sign-in page
    again = httpx.get(
        f"{den.url}/dashboard/resources", cookies={"rhd_session": stolen}, follow_redirects=False
    )
    assert again.status_code == 303, "a signed-out session must not work even if its cookie was kept"
    forged = httpx.get(f"{den.url}/dashboard/resources", cookies={"rhd_session": stolen.split(".")[0] + ".00"},
                       follow_redirects=False)  # fmt: skip
    assert forged.status_code == 303


def test_sign_in_needs_its_csrf_token_and_a_user_token(
    den: DenServer, people: Callable[[str], Person]
) -> None:
    alice = people("alice")
    b = Browser(den)
    b.http.get("/dashboard/login")
    assert b.http.post("/dashboard/login", data={"token": alice.token}).status_code == 403
    _save(alice, "lab", {"resource_type": "cluster"})
    daemon = alice.http.post(f"/v1/clusters/{alice.name}/lab/daemon-token").json()["token"]
    refused = b.sign_in(daemon)
    assert refused.status_code == 401 and "user token" in refused.text


def test_each_user_sees_only_what_they_may_read(
    den: DenServer, people: Callable[[str], Person], browser: Callable[[Person], Browser]
) -> None:
    alice, bob = people("alice"), people("bob")
    private, public, hidden, shared = (unique_name(n) for n in ("priv", "pub", "hidden", "shared"))
    _save(alice, private)
    _save(alice, public, visibility="public")
    _save(alice, hidden, visibility="public")
    _save(alice, shared)
    alice.http.put(f"/v1/resources/{alice.name}/{hidden}/access/{bob.name}", json={"access_level": "denied"})
    alice.http.put(f"/v1/resources/{alice.name}/{shared}/access/{bob.name}", json={"access_level": "read"})
    as_bob = browser(bob)
    listing = as_bob.get("/dashboard/resources").text
    assert public in listing and shared in listing
    assert private not in listing and hidden not in listing
    assert shared in as_bob.get("/dashboard/resources?scope=shared").text
    assert public not in as_bob.get("/dashboard/resources?scope=shared").text
    assert public in as_bob.get("/dashboard/resources?scope=public").text
    assert public not in as_bob.get("/dashboard/resources?scope=mine").text
    for name in (private, hidden):
        page = as_bob.get(f"/dashboard/resources/{alice.name}/{name}")
        assert page.status_code == 403 and "needs read access" in page.text
    assert as_bob.get(f"/dashboard/resources/{alice.name}/{shared}").status_code == 200
    searched = as_bob.get("/dashboard/resources", params={"q": shared[2:10].upper()}).text
    assert shared in searched and public not in searched
    typed = as_bob.get("/dashboard/resources", params={"type": "cluster"}).text
    assert shared not in typed


def test_owner_shares_revokes_and_changes_visibility_and_others_cannot(
    den: DenServer, people: Callable[[str], Person], browser: Callable[[Person], Browser]
) -> None:
    alice, bob = people("alice"), people("bob")
    name = unique_name("model")
    _save(alice, name)
    as_alice, as_bob = browser(alice), browser(bob)
    page = f"/dashboard/resources/{alice.name}/{name}"
    assert as_bob.get(page).status_code == 403
    shared = as_alice.post(f"{page}/share", {"username": bob.name, "access_level": "read"})
    assert shared.status_code == 200 and "Shared." in shared.text and bob.name in shared.text
    assert as_bob.get(page).status_code == 200
    refused = as_bob.post(f"{page}/share", {"username": bob.name, "access_level": "write"})
    assert refused.status_code == 403 and "needs write access" in refused.text
    assert as_bob.post(f"{page}/visibility", {"visibility": "public"}).status_code == 403
    assert as_alice.post(f"{page}/revoke", {"username": bob.name}).status_code == 200
    assert as_bob.get(page).status_code == 403
    assert as_alice.post(f"{page}/visibility", {"visibility": "public"}).status_code == 200
    assert alice.http.get(f"/v1/resources/{alice.name}/{name}").json()["visibility"] == "public"
    assert as_bob.get(page).status_code == 200
    unknown = as_alice.post(f"{page}/share", {"username": "nobody-" + name, "access_level": "read"})
    assert unknown.status_code == 404


def test_every_change_needs_the_sessions_csrf_token(
    den: DenServer, people: Callable[[str], Person], browser: Callable[[Person], Browser]
) -> None:
    alice, bob = people("alice"), people("bob")
    name = unique_name("model")
    _save(alice, name)
    as_alice, as_bob = browser(alice), browser(bob)
    page = f"/dashboard/resources/{alice.name}/{name}"
    changes = [
        (f"{page}/share", {"username": bob.name, "access_level": "write"}),
        (f"{page}/visibility", {"visibility": "public"}),
        ("/dashboard/tokens", {"name": "sneaky"}),
        ("/dashboard/logout", {}),
    ]
    for path, data in changes:
        assert as_alice.post(path, data, csrf=False).status_code == 403, path
        assert as_alice.http.post(path, data={**data, "csrf": as_bob.csrf}).status_code == 403, path
    assert alice.http.get(f"/v1/resources/{alice.name}/{name}/access").json() == []
    assert alice.http.get(f"/v1/resources/{alice.name}/{name}").json()["visibility"] == "private"
    assert "sneaky" not in str(alice.http.get("/v1/tokens").json())
    assert as_alice.get("/dashboard/resources").status_code == 200  # still signed in


def test_names_and_configs_holding_html_are_shown_as_text(
    den: DenServer, people: Callable[[str], Person], browser: Callable[[Person], Browser]
) -> None:
    alice = people("alice")
    name = unique_name("x-script")
    _save(alice, name, {"resource_type": HOSTILE, "note": HOSTILE, HOSTILE: [HOSTILE]}, visibility="public")
    _save(alice, name, {"resource_type": HOSTILE, "note": "v2 " + HOSTILE})
    alice.http.post("/v1/tokens", json={"name": HOSTILE})
    as_alice = browser(alice)
    pages = [
        f"/dashboard/resources/{alice.name}/{name}",
        "/dashboard/resources",
        "/dashboard/resources?q=" + HOSTILE,
        "/dashboard/tokens",
        "/dashboard/usage?cluster=" + HOSTILE,
    ]
    for path in pages:
        text = as_alice.get(path).text
        assert "<script>alert" not in text and "<img src=x" not in text, path
    detail = as_alice.get(pages[0]).text
    assert "&lt;script&gt;alert(" in detail and "&lt;img src=x onerror=alert(1)&gt;" in detail
    assert "&lt;script&gt;" in as_alice.get("/dashboard/tokens").text


def test_secret_pages_show_value_names_and_shares_never_values(
    den: DenServer, people: Callable[[str], Person], browser: Callable[[Person], Browser]
) -> None:
    alice, bob = people("alice"), people("bob")
    name = unique_name("creds")
    value = "s3cr3t-" + name
    body = {"values": {"AWS_KEY": value, "OTHER": value + "2"}, "provider": "aws"}
    assert alice.http.put(f"/v1/secrets/{alice.name}/{name}", json=body).status_code == 200
    alice.http.put(f"/v1/resources/{alice.name}/{name}/access/{bob.name}", json={"access_level": "read"})
    as_alice, as_bob = browser(alice), browser(bob)
    for b in (as_alice, as_bob):
        listing = b.get("/dashboard/secrets").text
        assert name in listing and "AWS_KEY, OTHER" in listing and f"{bob.name} (read)" in listing
        for path in (
            "/dashboard/secrets",
            f"/dashboard/resources/{alice.name}/{name}",
            "/dashboard/resources",
        ):
            assert value not in b.get(path).text


def test_tokens_are_created_once_shown_and_revoked_from_the_page(
    den: DenServer, people: Callable[[str], Person], browser: Callable[[Person], Browser]
) -> None:
    alice = people("alice")
    as_alice = browser(alice)
    created = as_alice.post("/dashboard/tokens", {"name": "laptop", "expires_days": "7"})
    secret = re.search(r'id="new-token" readonly value="(rhd_[^"]+)"', created.text)
    assert created.status_code == 200 and secret
    new = httpx.get(f"{den.url}/v1/me", headers={"Authorization": f"Bearer {secret.group(1)}"})
    assert new.json()["username"] == alice.name
    assert secret.group(1) not in as_alice.get("/dashboard/tokens").text
    assert as_alice.post("/dashboard/tokens", {"expires_days": "0"}).status_code == 400
    token_id = next(t["id"] for t in alice.http.get("/v1/tokens").json() if t["name"] == "laptop")
    assert as_alice.post(f"/dashboard/tokens/{token_id}/revoke", {}).status_code == 200
    assert (
        httpx.get(f"{den.url}/v1/me", headers={"Authorization": f"Bearer {secret.group(1)}"}).status_code
        == 401
    )
    # Revoking the token the session signed in with ends the session.
    own = next(t["id"] for t in alice.http.get("/v1/tokens").json() if not t["revoked"])
    as_alice.post(f"/dashboard/tokens/{own}/revoke", {})
    assert as_alice.get("/dashboard/resources", follow_redirects=False).status_code == 303


def test_usage_charts_table_and_csv_hold_the_recorded_numbers_for_readable_clusters(
    den: DenServer, people: Callable[[str], Person], browser: Callable[[Person], Browser]
) -> None:
    alice, bob = people("alice"), people("bob")
    lab, private = unique_name("lab"), unique_name("private")
    _save(alice, lab, {"resource_type": "cluster"})
    _save(alice, private, {"resource_type": "cluster"})
    alice.http.put(f"/v1/resources/{alice.name}/{lab}/access/{bob.name}", json={"access_level": "write"})
    events = [
        {"kind": "call", "cluster": f"/{alice.name}/{lab}", "count": 7},
        {"kind": "deploy", "cluster": f"/{alice.name}/{lab}", "count": 2},
        {"kind": "cluster_up", "cluster": f"/{alice.name}/{private}"},
    ]
    assert alice.http.post("/v1/events", json={"events": events}).status_code == 200
    bob.http.post(
        "/v1/events", json={"events": [{"kind": "call", "cluster": f"/{alice.name}/{lab}", "count": 3}]}
    )
    as_alice, as_bob = browser(alice), browser(bob)
    page = as_alice.get("/dashboard/usage", params={"range": "24h", "cluster": f"/{alice.name}/{lab}"}).text
    assert re.search(r'id="title-call">Calls per user: <span class="total">10</span>', page)
    assert re.search(r'id="title-deploy">Deploys per user: <span class="total">2</span>', page)
    assert f"{alice.name}, " in page and ": 7</title>" in page and ": 3</title>" in page
    by_cluster = as_alice.get("/dashboard/usage", params={"range": "24h", "by": "cluster"}).text
    assert re.search(r'id="title-cluster_up">Launches per cluster: <span class="total">1</span>', by_cluster)
    rows = list(csv.DictReader(io.StringIO(as_bob.get("/dashboard/usage.csv?range=24h").text)))
    mine = [r for r in rows if r["cluster"].startswith(f"/{alice.name}/")]
    assert {(r["username"], r["kind"], r["count"]) for r in mine} == {
        (alice.name, "call", "7"),
        (alice.name, "deploy", "2"),
        (bob.name, "call", "3"),
    }, "bob sees the shared cluster's usage and not the private one's"
    reply = as_alice.get("/dashboard/usage.csv?range=7d")
    assert (
        reply.headers["content-type"].startswith("text/csv")
        and "attachment" in reply.headers["content-disposition"]
    )
    assert f"/{alice.name}/{private}" in reply.text


def test_cluster_pages_show_state_envs_objects_from_heartbeats(
    den: DenServer, people: Callable[[str], Person], browser: Callable[[Person], Browser]
) -> None:
    alice = people("alice")
    up, silent = unique_name("up"), unique_name("silent")
    _save(alice, up, {"resource_type": "cluster"})
    _save(alice, silent, {"resource_type": "cluster"})
    status = {
        "idle_s": 3,
        "workers": ["base", "<b>gpu</b>"],
        "objects": ["model"],
        "running_calls": 2,
        "autostop_mins": 30,
    }
    assert (
        alice.http.post(f"/v1/clusters/{alice.name}/{up}/heartbeat", json={"status": status}).status_code
        == 200
    )
    as_alice = browser(alice)
    listing = as_alice.get("/dashboard/clusters").text
    row = listing[listing.index(f"/{alice.name}/{up}</a>") :].split("</tr>")[0]
    assert '"state up">up' in row and "30 min" in row
    quiet = listing[listing.index(f"/{alice.name}/{silent}</a>") :].split("</tr>")[0]
    assert '"state down">down' in quiet and "never" in quiet
    page = as_alice.get(f"/dashboard/clusters/{alice.name}/{up}").text
    assert "<li>&lt;b&gt;gpu&lt;/b&gt;</li>" in page and "<li>model</li>" in page
    assert state({"idle_s": 900}, 5.0) == "idle" and state({"idle_s": 900, "running_calls": 1}, 5.0) == "up"
    assert state({"idle_s": 0}, 600.0) == "down"


def test_a_resource_page_shows_versions_and_their_diff(
    den: DenServer, people: Callable[[str], Person], browser: Callable[[Person], Browser]
) -> None:
    alice = people("alice")
    name = unique_name("fn")
    for lr in ("0.1", "0.2", "0.3"):
        _save(alice, name, {"resource_type": "function", "lr": lr, "same": 1})
    as_alice = browser(alice)
    page = as_alice.get(f"/dashboard/resources/{alice.name}/{name}").text
    assert "Changes from version 2 to 3" in page
    assert '<span class="del">-  &#34;lr&#34;: &#34;0.2&#34;,</span>' in page
    assert '<span class="add">+  &#34;lr&#34;: &#34;0.3&#34;,</span>' in page
    chosen = as_alice.get(f"/dashboard/resources/{alice.name}/{name}?a=1&b=3").text
    assert "Changes from version 1 to 3" in chosen and "0.1" in chosen
    assert as_alice.get(f"/dashboard/resources/{alice.name}/{name}?a=9&b=3").status_code == 404


def test_the_access_rule_in_sql_is_the_rule_in_python() -> None:
    """``registry.readable_resources`` (listings, the dashboard, usage) keeps exactly the resources
    ``registry.level_of`` (single reads) gives access to, for every owner, visibility and share."""
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    now = datetime(2026, 1, 1)
    with Session(engine) as session:
        me, other = User(id=1, username="me", created_at=now), User(id=2, username="other", created_at=now)
        session.add_all([me, other])
        cases = list(
            itertools.product([1, 2], ["private", "unlisted", "public"], [None, "read", "write", "denied"])
        )
        for i, (owner, visibility, share) in enumerate(cases, start=1):
            session.add(
                Resource(
                    id=i,
                    owner_id=owner,
                    name=f"r{i}",
                    resource_type="function",
                    visibility=visibility,
                    version=1,
                    config="{}",
                    created_at=now,
                    updated_at=now,
                    updated_by="x",
                )
            )
            if share is not None and owner != 1:
                session.add(Share(resource_id=i, user_id=1, access_level=share))
        session.flush()
        levels = {
            i: registry.access_level(session, 1, session.get(Resource, i))  # type: ignore[arg-type]
            for i in range(1, len(cases) + 1)
        }

        def found(listed: bool) -> set[int]:
            query = registry.readable_resources(select(Resource.id), 1, listed=listed)
            return set(session.execute(query).scalars())

        assert found(listed=False) == {i for i, level in levels.items() if level != "none"}
        listed = {
            i
            for i, (owner, vis, share) in enumerate(cases, start=1)
            if owner == 1 or (share in ("read", "write")) or (vis == "public" and share is None)
        }
        assert found(listed=True) == listed and listed < found(listed=False)
    engine.dispose()


def _session_rows(den: DenServer, cookie: str) -> list[DashboardSession]:
    engine = create_engine(den.db_url)
    try:
        with Session(engine) as db:
            key = hashlib.sha256(cookie.rsplit(".", 1)[0].encode()).hexdigest()
            return list(db.scalars(select(DashboardSession).where(DashboardSession.id_hash == key)))
    finally:
        engine.dispose()


def _signed_in(den: DenServer, cookie: str) -> bool:
    reply = httpx.get(
        f"{den.url}/dashboard/resources", cookies={"rhd_session": cookie}, follow_redirects=False
    )
    assert reply.status_code in (200, 303), reply.text
    return reply.status_code == 200


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_session_survives_a_den_restart_and_is_stored_only_by_hash(database: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "den"
    den = start_den(data_dir, postgres_url() if database == "postgresql" else None)
    try:
        name = unique_name("alice")
        b = Browser(den)
        assert b.sign_in(den.add_user(name)).status_code == 200
        cookie, csrf = b.http.cookies["rhd_session"], b.csrf
        session_id = cookie.rsplit(".", 1)[0]
        (row,) = _session_rows(den, cookie)
        assert row.created_at <= row.last_seen_at < row.expires_at and row.token_id
        stored = den.stored_text()
        assert session_id not in stored and cookie not in stored
        assert hashlib.sha256(session_id.encode()).hexdigest() in stored
        b.http.close()
        den.stop()
        den = start_den(data_dir, den.db_url)  # same data dir (key file) and database, a new process
        with httpx.Client(base_url=den.url, cookies={"rhd_session": cookie}, follow_redirects=True) as again:
            page = again.get("/dashboard/resources")
            assert page.status_code == 200 and name in page.text and _csrf(page.text) == csrf
            assert again.post("/dashboard/logout", data={"csrf": csrf}).status_code == 200
        assert not _signed_in(den, cookie) and _session_rows(den, cookie) == []
    finally:
        den.stop()


def test_revoking_the_sign_in_token_ends_its_sessions(
    den: DenServer, people: Callable[[str], Person]
) -> None:
    alice = people("alice")
    token_id = alice.http.get("/v1/tokens").json()[0]["id"]
    b1, b2 = Browser(den), Browser(den)
    assert b1.sign_in(alice.token).status_code == 200 and b2.sign_in(alice.token).status_code == 200
    first, second = b1.http.cookies["rhd_session"], b2.http.cookies["rhd_session"]
    assert _signed_in(den, first) and _signed_in(den, second)
    assert alice.http.delete(f"/v1/tokens/{token_id}").status_code == 200
    assert not _signed_in(den, first) and not _signed_in(den, second)
    assert _session_rows(den, first) == [] and _session_rows(den, second) == []  # refused rows are deleted


def test_expired_sessions_are_refused_and_swept(den: DenServer, people: Callable[[str], Person]) -> None:
    alice = people("alice")
    b = Browser(den)
    assert b.sign_in(alice.token).status_code == 200
    cookie = b.http.cookies["rhd_session"]
    (row,) = _session_rows(den, cookie)
    past = utc_now() - timedelta(seconds=1)
    engine = create_engine(den.db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                update(DashboardSession)
                .where(DashboardSession.id_hash == row.id_hash)
                .values(expires_at=past)
            )
            stale = {**{c: getattr(row, c) for c in ("user_id", "token_id", "csrf", "created_at")},
                     "id_hash": "0" * 64, "last_seen_at": past, "expires_at": past}  # fmt: skip
            conn.execute(insert(DashboardSession.__table__), [stale])
        assert not _signed_in(den, cookie) and _session_rows(den, cookie) == []
        assert Browser(den).sign_in(alice.token).status_code == 200  # opening a session sweeps expired rows
        with engine.connect() as conn:
            assert (
                conn.scalar(select(DashboardSession.id_hash).where(DashboardSession.id_hash == "0" * 64))
                is None
            )
    finally:
        engine.dispose()


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_migration_0003_adds_dashboard_sessions_to_a_0002_database(database: str, tmp_path: Path) -> None:
    url = postgres_url() if database == "postgresql" else f"sqlite:///{tmp_path / 'old.sqlite'}"
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    engine = create_engine(url)
    now = utc_now()
    try:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "0002")
            user_id = conn.execute(insert(User).values(username="ann", created_at=now)).inserted_primary_key[
                0
            ]
            conn.execute(insert(Token).values(id="t1", user_id=user_id, name=None, token_hash="a" * 64,
                                              scope="user", created_at=now, expires_at=None, revoked=False))  # fmt: skip
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
            row = {"id_hash": "b" * 64, "user_id": user_id, "token_id": "t1", "csrf": "c", "created_at": now,
                   "last_seen_at": now, "expires_at": now + timedelta(hours=1)}  # fmt: skip
            conn.execute(insert(DashboardSession.__table__), [row])
        with engine.begin() as conn:
            assert conn.execute(select(DashboardSession.token_id, DashboardSession.user_id)).one() == (
                "t1",
                user_id,
            )
            conn.execute(delete(DashboardSession))
    finally:
        engine.dispose()
