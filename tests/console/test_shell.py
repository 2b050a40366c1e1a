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
        twin = console.get(page.locator("a.json-link").get_attribute("href"))
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
    r = console.get("/api/traces/ffffffffffffffffffffffffffffffff")
    assert r.status_code == 404 and r.json()["detail"]


def test_keyboard_g_then_t_goes_to_traces(console, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(console.url + "/")
    page.keyboard.press("g")
    page.keyboard.press("t")
    page.wait_for_url(console.url + "/traces")


def test_api_reference_is_served_offline_and_cdn_docs_are_off(console, page) -> None:  # type: ignore[no-untyped-def]
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(console.url + "/reference")
    row = page.locator("tr", has=page.locator("td.mono", has_text="/api/traces/{trace_id}"))
    assert "One trace" in row.first.inner_text()
    assert all(u.startswith(console.url) for u in requests)
    twin = console.get("/reference.json").json()
    assert any(r["path"] == "/api/approvals/{approval_id}/approve" for g in twin["groups"] for r in g["routes"])
    # FastAPI's /docs would pull Swagger UI from a CDN: it is off
    assert console.get("/docs").status_code == 404


def test_assets_named_by_release_are_cached_for_good_and_the_icon_exists(console) -> None:  # type: ignore[no-untyped-def]
    page_html = console.get("/").text
    assert '/static/css/console.css?v=' in page_html
    versioned = httpx.get(console.url + "/static/css/console.css?v=0.1.0", timeout=10)
    assert versioned.status_code == 200 and "immutable" in versioned.headers["cache-control"]
    plain = httpx.get(console.url + "/static/css/console.css", timeout=10)
    assert plain.headers["cache-control"] == "no-cache"  # an unversioned URL is revalidated
    icon = httpx.get(console.url + "/favicon.ico", timeout=10, follow_redirects=True)  # no key needed
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
