"""The console's frame: navigation, themes, JSON twins, error pages, vendored assets only."""

from __future__ import annotations

import httpx

from proctor.ui.render import NAV


def test_every_nav_page_renders_and_has_a_json_twin(console, page) -> None:  # type: ignore[no-untyped-def]
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    for path, label, _key in NAV:
        response = page.goto(console.url + path)
        assert response is not None and response.status == 200, f"{path}: {response and response.status}"
        assert page.locator("nav a[aria-current=page]").inner_text() == label
        twin = httpx.get(console.url + page.locator("a.json-link").get_attribute("href"), timeout=10)
        assert twin.status_code == 200 and twin.headers["content-type"].startswith("application/json"), path
    # air-gapped: nothing but the server itself was asked for anything
    assert requests and all(u.startswith(console.url) for u in requests), [u for u in requests
                                                                          if not u.startswith(console.url)]


def test_theme_toggle_switches_and_is_remembered(console, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(console.url + "/")
    before = page.locator("html").get_attribute("data-theme")
    assert before in ("light", "dark")
    page.click("#theme-toggle")
    after = page.locator("html").get_attribute("data-theme")
    assert after != before
    page.goto(console.url + "/traces")
    assert page.locator("html").get_attribute("data-theme") == after
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") != ""


def test_unknown_page_is_a_readable_404_and_json_stays_json(console, page) -> None:  # type: ignore[no-untyped-def]
    response = page.goto(console.url + "/no-such-page")
    assert response is not None and response.status == 404
    assert page.locator("h1").inner_text() == "404"
    assert page.locator("nav").is_visible()  # still inside the console frame, with a way back
    r = httpx.get(console.url + "/api/traces/ffffffffffffffffffffffffffffffff", timeout=10)
    assert r.status_code == 404 and r.json()["detail"]


def test_keyboard_g_then_t_goes_to_traces(console, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(console.url + "/")
    page.keyboard.press("g")
    page.keyboard.press("t")
    page.wait_for_url(console.url + "/traces")
