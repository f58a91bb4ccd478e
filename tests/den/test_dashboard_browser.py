"""Den's dashboard in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright.

Signs in as two users, browses and searches by keyboard, shares and revokes as alice and sees the
change as bob, reads a usage chart, checks that HTML in a config shows as text (no dialog, no
element), and signs out. Screenshots of each step go to the test's tmp dir. Playwright cannot
download browsers here, so it is pointed at the system Chromium; under CI a missing Chromium or
Playwright fails these tests, elsewhere it skips them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from denserver import DenServer, start_den

from runhouse.den import admin
from runhouse.den.db import Database

CHROMIUM = os.environ.get("RH_TEST_CHROMIUM", "/usr/bin/chromium")
HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>"


def _playwright() -> Any:
    missing = []
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        missing.append(f"Chromium at {CHROMIUM} (apt-get install -y chromium; .ci/run installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing.append("Playwright for Python (pip install playwright)")
        sync_playwright = None
    if missing:
        reason = "the dashboard's browser tests need " + " and ".join(missing)
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return sync_playwright


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_playwright = _playwright()
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def den(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DenServer]:
    server = start_den(tmp_path_factory.mktemp("den-browser"))
    yield server
    server.stop()


class Shots:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.taken: list[Path] = []

    def __call__(self, page: Any, name: str) -> None:
        path = self.folder / f"{len(self.taken):02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        self.taken.append(path)


def _sign_in(page: Any, den: DenServer, token: str) -> None:
    page.goto(f"{den.url}/dashboard/")
    assert "/dashboard/login" in page.url
    page.get_by_label("Den token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/dashboard/resources")


def test_sign_in_browse_search_share_revoke_usage_escaping_and_sign_out(
    den: DenServer, browser: Any, tmp_path: Path
) -> None:
    db = Database(den.db_url)
    alice, bob = admin.add_user(db, "alice"), admin.add_user(db, "bob")
    db.dispose()
    api = den.client(alice.token)
    for name, config, visibility in [
        ("shared-model", {"resource_type": "function", "lr": 0.1}, "private"),
        ("x-script", {"resource_type": "function", "note": HOSTILE, HOSTILE: HOSTILE}, "private"),
        ("lab", {"resource_type": "cluster"}, "private"),
    ]:
        reply = api.put(f"/v1/resources/alice/{name}", json={"config": config, "visibility": visibility})
        assert reply.status_code == 200, reply.text
    api.put("/v1/resources/alice/shared-model", json={"config": {"resource_type": "function", "lr": 0.2}})
    events = [
        {"kind": "call", "cluster": "/alice/lab", "count": 7},
        {"kind": "deploy", "cluster": "/alice/lab"},
    ]
    assert api.post("/v1/events", json={"events": events}).status_code == 200
    api.post(
        "/v1/clusters/alice/lab/heartbeat", json={"status": {"idle_s": 1, "workers": ["base"], "objects": []}}
    )
    shots = Shots(tmp_path)
    dialogs: list[str] = []
    as_alice, as_bob = browser.new_context(), browser.new_context()
    try:
        page, bob_page = as_alice.new_page(), as_bob.new_page()
        for p in (page, bob_page):
            p.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        _sign_in(page, den, alice.token)
        assert page.locator("#whoami").inner_text() == "alice"
        shots(page, "alice-resources")

        # Keyboard: Tab to the search box, type, Enter.
        for _ in range(20):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.id") == "q":
                break
        assert page.evaluate("document.activeElement.id") == "q", "the search box is reachable by Tab"
        page.keyboard.type("shared")
        page.keyboard.press("Enter")
        page.wait_for_url("**q=shared**")
        assert page.locator("#result-count").inner_text() == "1 resource"
        shots(page, "alice-search")
        page.get_by_role("link", name="/alice/shared-model").click()
        assert "Changes from version 1 to 2" in page.locator("main").inner_text()
        page.get_by_label("Username").fill("bob")
        page.get_by_label("Access", exact=True).select_option("read")
        page.get_by_role("button", name="Share", exact=True).click()
        assert page.get_by_role("status").inner_text() == "Shared."
        shots(page, "alice-shared")

        _sign_in(bob_page, den, bob.token)
        bob_page.goto(f"{den.url}/dashboard/resources?scope=shared")
        assert bob_page.get_by_role("link", name="/alice/shared-model").is_visible()
        shots(bob_page, "bob-sees-share")

        page.get_by_role("button", name="Revoke bob's access").click()
        assert page.get_by_role("status").inner_text() == "Access revoked."
        bob_page.reload()
        assert bob_page.locator("#result-count").inner_text() == "0 resources"
        bob_page.goto(f"{den.url}/dashboard/resources/alice/shared-model")
        assert "Error 403" in bob_page.locator("h1").inner_text()
        shots(bob_page, "bob-after-revoke")

        page.goto(f"{den.url}/dashboard/usage?range=24h")
        chart = page.locator("#chart-call")
        assert chart.locator("h2 .total").inner_text() == "7"
        assert chart.locator("svg rect title").first.text_content() is not None
        assert "alice" in chart.locator("svg rect title").first.text_content()
        assert chart.locator("svg rect title").first.text_content().endswith(": 7")
        assert page.locator("#chart-deploy h2 .total").inner_text() == "1"
        cells = page.locator("#usage-table tbody tr").filter(has_text="call").first.locator("td")
        assert cells.nth(2).inner_text() == "7"
        shots(page, "usage-chart")

        page.goto(f"{den.url}/dashboard/resources/alice/x-script")
        assert HOSTILE in page.locator("#config").inner_text()
        assert page.evaluate("document.querySelectorAll('main script, main img').length") == 0
        shots(page, "escaped")

        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url("**/dashboard/login")
        page.goto(f"{den.url}/dashboard/resources")
        assert "/dashboard/login" in page.url
        shots(page, "signed-out")
        assert dialogs == [], "no script of a config may run"
    finally:
        as_alice.close()
        as_bob.close()
    assert all(p.stat().st_size > 1000 for p in shots.taken)
