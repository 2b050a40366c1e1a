"""Logging in to the console with an API key, in Chromium: the login link, the form, logging out,
and a page of another origin that tries to use the login.

Each test has its own server on a database of its own, with the keys it needs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import pytest

from console.conftest import serve, stop
from proctor.store import ApiKeys, open_engine
from proctor.store.killswitches import KillSwitches


@dataclass
class Site:
    url: str
    db: str
    keys: dict[str, str]  # name -> secret


def _site(tmp_path: Path, *roles: tuple[str, str]) -> Iterator[Site]:
    db = f"sqlite:///{tmp_path / 'proctor.db'}"
    engine = open_engine(db)
    keys = {name: ApiKeys(engine).create(name, role, by="test")[1] for name, role in roles}
    engine.dispose()
    url, server, thread = serve(db)
    try:
        yield Site(url, db, keys)
    finally:
        stop(server, thread)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    yield from _site(tmp_path, ("alice", "admin"), ("vic", "viewer"))


def test_a_page_asks_for_a_login_and_a_login_link_lands_on_it_with_the_name_shown(site: Site, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(site.url + "/traces?status=error")
    assert page.url == site.url + "/login?next=" + quote("/traces?status=error", safe="")
    assert page.locator("h1").inner_text() == "Log in"
    assert page.locator(".banner.warn").count() == 0  # auth is on: no "auth is off" banner, no one shown
    assert page.locator(".who").count() == 0

    secret = site.keys["alice"]
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.goto(f"{site.url}/login?next={quote('/traces?status=error', safe='')}#key={secret}")
    page.wait_for_url(site.url + "/traces?status=error")
    assert page.locator(".who").inner_text().split() == ["alice", "admin"]
    assert page.get_by_role("link", name="Log out").is_visible()
    assert page.locator(".banner.warn").count() == 0
    # the key never travelled in a URL, and is gone from the address bar and the history
    assert not any(secret in u for u in requested), requested
    assert secret not in page.url
    page.go_back()
    assert secret not in page.url
    # the cookie holds it where scripts cannot read it
    cookie = next(c for c in page.context.cookies() if c["name"] == "proctor_key")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    assert "proctor_key" not in page.evaluate("document.cookie")


def test_a_key_pasted_in_the_form_logs_in_and_logging_out_asks_again(site: Site, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(site.url + "/agents")
    page.get_by_label("API key").fill(site.keys["vic"] + "x")
    page.get_by_role("button", name="Log in").click()
    assert page.get_by_role("alert").inner_text().startswith("that key is not valid")
    assert page.url.startswith(site.url + "/login")
    page.get_by_label("API key").fill(site.keys["vic"])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(site.url + "/agents")
    assert page.locator(".who").inner_text().split() == ["vic", "viewer"]

    page.get_by_role("link", name="Log out").click()
    page.wait_for_url(site.url + "/login")
    assert not [c for c in page.context.cookies() if c["name"] == "proctor_key"]
    page.goto(site.url + "/agents")
    assert page.url.startswith(site.url + "/login?next=")


def test_a_login_link_with_a_revoked_key_says_so(site: Site, page) -> None:  # type: ignore[no-untyped-def]
    engine = open_engine(site.db)
    ApiKeys(engine).revoke("vic")
    engine.dispose()
    page.goto(f"{site.url}/login#key={site.keys['vic']}")
    error = page.get_by_role("alert")
    error.wait_for()
    assert "refused" in error.inner_text() and "revoked" in error.inner_text()
    assert page.url == site.url + "/login"  # the fragment is cleared all the same


class _Attacker(BaseHTTPRequestHandler):
    """A page on another port of the same host: the same *site* (so SameSite=Strict cookies go
    along) but another *origin*. It posts a form to the console as soon as it loads."""

    target = ""

    def log_message(self, *_args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = (f'<!doctype html><title>win a prize</title><form id="f" method="post" action="{self.target}">'
                '<input name="scope" value="global"><input name="active" value="true">'
                '<input name="by" value="attacker"></form>'
                '<script>document.getElementById("f").submit()</script>').encode()
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_a_page_of_another_origin_cannot_act_with_the_console_login(site: Site, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{site.url}/login?next=%2Fkillswitches#key={site.keys['alice']}")
    page.wait_for_url(site.url + "/killswitches")

    _Attacker.target = site.url + "/api/kill-switches"
    attacker = ThreadingHTTPServer(("127.0.0.1", 0), _Attacker)
    threading.Thread(target=attacker.serve_forever, daemon=True).start()
    try:
        with page.expect_response(_Attacker.target) as answer:
            page.goto(f"http://127.0.0.1:{attacker.server_port}/")
        response = answer.value
        # the browser sent the cookie (same site), and the server refused the other origin
        assert response.status == 403, response.text()
        assert "cross-site request refused" in response.json()["detail"]
    finally:
        attacker.shutdown()
        attacker.server_close()
    engine = open_engine(site.db)
    try:
        assert not [s for s in KillSwitches(engine).list() if s.active]
    finally:
        engine.dispose()

    # the same change from the console's own page goes through
    page.goto(site.url + "/killswitches")
    status = page.evaluate("""async () => (await fetch('/api/kill-switches', {method: 'POST',
        headers: {'content-type': 'application/json'},
        body: JSON.stringify({scope: 'agent:demo', active: true, by: 'alice'})})).status""")
    assert status == 200


def test_the_login_page_says_when_auth_is_off(tmp_path: Path, page) -> None:  # type: ignore[no-untyped-def]
    for s in _site(tmp_path):
        page.goto(s.url + "/login?next=%2Faudit")
        assert "Auth is off" in page.locator(".login").inner_text()
        assert page.locator(".banner.warn").is_visible()  # the console-wide warning too
        page.get_by_role("link", name="Continue").click()
        page.wait_for_url(s.url + "/audit")


def test_the_live_overview_sends_you_to_log_in_when_your_key_is_revoked(site: Site, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(site.url + "/login#key=" + site.keys["vic"])
    page.wait_for_url(site.url + "/")
    page.wait_for_function("document.getElementById('live').dataset.liveState === 'live'")
    engine = open_engine(site.db)
    try:
        ApiKeys(engine).revoke("vic")
    finally:
        engine.dispose()
    # the stream ends at its next message or heartbeat; the page then finds out why and says so
    page.wait_for_url(site.url + "/login?next=%2F", timeout=30_000)
    assert page.locator("h1").inner_text() == "Log in"
