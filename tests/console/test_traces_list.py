"""The trace list: every filter narrows it in place (htmx) and lives in the URL; pages; clear errors."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from console.conftest import log_in, serve, stop

from spanfactory import agent_trace, request

ROWS = "#results tbody tr"


def row_ids(page) -> list[str]:  # type: ignore[no-untyped-def]
    return page.locator(ROWS).evaluate_all("rs => rs.map(r => r.dataset.traceId)")  # type: ignore[no-any-return]


def api_ids(console, **params: Any) -> list[str]:  # type: ignore[no-untyped-def]
    r = console.get("/api/traces", **params)
    assert r.status_code == 200, r.text
    return [t["trace_id"] for t in r.json()["traces"]]


def wait_for_rows(page, ids: list[str]) -> None:  # type: ignore[no-untyped-def]
    page.wait_for_function(
        "ids => JSON.stringify([...document.querySelectorAll('#results tbody tr')].map(r => r.dataset.traceId))"
        " === JSON.stringify(ids)", arg=ids, timeout=10_000)


def url_params(page) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {k: v[0] for k, v in parse_qs(urlsplit(page.url).query).items()}


@pytest.fixture
def everything(console) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    traces = console.get("/api/traces", limit=1000).json()["traces"]
    assert len(traces) >= 10, "the demo should have made a dozen traces or more"
    return traces  # type: ignore[no-any-return]


def test_the_list_shows_the_demo_traces_with_their_columns_and_links(console, page, everything) -> None:  # type: ignore[no-untyped-def]
    page.goto(console.url + "/traces")
    assert row_ids(page) == [t["trace_id"] for t in everything][:50]
    headers = page.locator("#results thead th").all_inner_texts()
    assert headers == ["Start", "Root", "Agent", "Version", "Status", "Policy", "Spans", "Tools", "Model", "Tokens",
                       "Cost", "Duration"]
    first = everything[0]
    row = page.locator(f'{ROWS}[data-trace-id="{first["trace_id"]}"]')
    assert row.locator(f'a[href="/traces/{first["trace_id"]}"]').count() == 2  # start time and root name
    cells = row.locator("td").all_inner_texts()
    assert cells[1] == first["root_name"] and cells[2] == first["agent_name"] and cells[3] == first["agent_version"]
    assert cells[4].split()[0] == first["status"] and cells[6] == str(first["span_count"])
    # every row links to its trace
    hrefs = page.locator(f"{ROWS} td.root a").evaluate_all("as => as.map(a => a.getAttribute('href'))")
    assert hrefs == [f"/traces/{i}" for i in row_ids(page)]
    # the dropdowns offer the demo's agents, tools and models
    assert {"support-triage", "kb-researcher"} <= set(page.locator("#f-agent option").all_inner_texts())
    assert "issue_refund" in page.locator("#f-tool option").all_inner_texts()
    assert "gpt-4o-mini" in page.locator("#f-model option").all_inner_texts()


def _pick_model(console, total: int) -> str:  # type: ignore[no-untyped-def]
    models = console.get("/traces.json").json()["options"]["models"]
    for m in models:
        if 0 < len(api_ids(console, model=m, limit=1000)) < total:
            return m  # type: ignore[no-any-return]
    raise AssertionError(f"no model of {models} narrows the demo's traces")


def test_each_filter_narrows_the_list_in_place_and_the_url_carries_it(console, page, everything) -> None:  # type: ignore[no-untyped-def]
    total = len(everything)
    since_iso = everything[min(5, total - 2)]["start_time"]  # the sixth newest trace started then
    cost_cut = sorted(t["cost_usd"] for t in everything)[total // 2]
    cases = [
        ("agent", "kb-researcher", lambda: page.select_option("#f-agent", "kb-researcher")),
        ("status", "error", lambda: page.select_option("#f-status", "error")),
        ("tool", "issue_refund", lambda: page.select_option("#f-tool", "issue_refund")),
        ("model", _pick_model(console, total), None),
        ("min_cost", f"{cost_cut}", None),
        ("min_duration_ms", "500", None),
        ("q", "timeout", None),
        ("since", since_iso, None),
    ]
    for param, value, act in cases:
        expected = api_ids(console, **{param: value, "limit": 50})
        assert 0 < len(expected) < total, (param, value, len(expected))
        page.goto(console.url + "/traces")
        wait_for_rows(page, [t["trace_id"] for t in everything][:50])
        page.evaluate("window.__same_document = true")  # gone if the page reloads
        if act is not None:
            act()
        elif param == "model":
            page.select_option("#f-model", value)
        else:
            page.fill(f"#f-{param}", value)
            page.press(f"#f-{param}", "Enter")
        wait_for_rows(page, expected)
        page.wait_for_function("p => new URL(location.href).searchParams.has(p)", arg=param)
        assert url_params(page) == {param: value}, page.url  # only what is set: empty fields stay out
        assert page.evaluate("window.__same_document === true"), f"{param}: the page reloaded instead of swapping"
        # the URL is a deep link: opened anew, it shows the same list
        page.goto(page.url)
        assert row_ids(page) == expected, param
    # what the rows show agrees with the filter
    page.goto(console.url + "/traces?status=error&agent=support-triage")
    statuses = page.locator(f"{ROWS} td:nth-child(5) .badge").all_inner_texts()
    agents = page.locator(f"{ROWS} td.agent").all_inner_texts()
    assert statuses and set(statuses) == {"error"} and set(agents) == {"support-triage"}


def test_quick_time_picks_fill_since(console, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(console.url + "/traces?status=error")
    page.click("a[data-since='7d']")
    page.wait_for_function("() => new URL(location.href).searchParams.get('since') === '7d'")
    assert url_params(page) == {"status": "error", "since": "7d"}
    assert page.input_value("#f-since") == "7d"
    wait_for_rows(page, api_ids(console, status="error", since="7d"))


def test_pages_follow_the_cursor_to_different_rows(console, page, everything) -> None:  # type: ignore[no-untyped-def]
    page.goto(console.url + "/traces?limit=5")
    first = row_ids(page)
    assert first == [t["trace_id"] for t in everything[:5]]
    page.click("a[rel=next]")
    page.wait_for_url("**/traces?*cursor=*")
    wait_for_rows(page, [t["trace_id"] for t in everything[5:10]])
    second = row_ids(page)
    assert len(second) == 5 and not set(first) & set(second)
    assert url_params(page)["limit"] == "5"
    # the second page is a link too, and leads back to the first
    page.goto(page.url)
    assert row_ids(page) == second
    page.get_by_role("link", name="« First page").click()
    wait_for_rows(page, first)


def test_a_bad_time_is_an_error_beside_its_field_not_a_500(console, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(console.url + "/traces")
    page.fill("#f-since", "yesterdayish")
    page.press("#f-since", "Enter")
    error = page.locator("#err-since")
    error.wait_for(state="visible")
    assert "cannot read time 'yesterdayish'" in error.inner_text()
    assert page.get_attribute("#f-since", "aria-invalid") == "true"
    assert page.locator(".flash.err").is_visible() and page.locator(ROWS).count() == 0
    assert url_params(page) == {"since": "yesterdayish"}
    # fixing it clears the error
    page.fill("#f-since", "7d")
    page.press("#f-since", "Enter")
    error.wait_for(state="hidden")
    assert page.get_attribute("#f-since", "aria-invalid") is None
    # opened directly: a page with the message, not an error page; the JSON twin says 400, as the API
    response = page.goto(console.url + "/traces?since=yesterdayish&min_cost=-1")
    assert response is not None and response.status == 200
    assert "cannot read time" in page.locator("#err-since").inner_text()
    assert "must be zero or more" in page.locator("#err-min_cost").inner_text()
    twin = console.get("/traces.json", since="yesterdayish")
    assert twin.status_code == 400 and "cannot read time" in twin.json()["detail"]


def test_the_json_twin_returns_the_rows_the_page_and_the_api_show(console, page) -> None:  # type: ignore[no-untyped-def]
    params = {"agent": "support-triage", "status": "error"}
    twin = console.get("/traces.json", **params).json()
    ids = [t["trace_id"] for t in twin["traces"]]
    assert ids and ids == api_ids(console, **params)
    page.goto(console.url + "/traces?agent=support-triage&status=error")
    assert row_ids(page) == ids
    # the twin carries the API's fields, plus what the list adds: the models, tools and policy outcomes
    api = {t["trace_id"]: t for t in console.get("/api/traces", **params).json()["traces"]}
    for t in twin["traces"]:
        assert {k: v for k, v in t.items() if k not in ("models", "tools", "policy")} == api[t["trace_id"]]
        assert all(p["effect"] != "allow" and p["count"] >= 1 for p in t["policy"])
        assert t["models"] and t["tools"]
    assert twin["filters"]["agent"] == "support-triage" and twin["errors"] == {}


def test_the_filter_form_works_as_a_plain_form_without_javascript(console, browser) -> None:  # type: ignore[no-untyped-def]
    context = browser.new_context(java_script_enabled=False, viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        log_in(page, console.url, console.key)
        page.goto(console.url + "/traces")
        page.select_option("#f-status", "error")
        page.fill("#f-q", "timeout")
        page.click("button[type=submit]")
        page.wait_for_url("**/traces?*status=error*")
        got = url_params(page)  # a plain form sends its empty fields too; blank ones mean "any"
        assert got["q"] == "timeout" and got["status"] == "error"
        assert row_ids(page) == api_ids(console, q="timeout", status="error")
    finally:
        context.close()


def test_the_list_and_its_dropdowns_read_the_same_on_postgresql(db_url: str) -> None:
    url, server, thread = serve(db_url)
    try:
        made = []
        for agent, tool, model, fail in (("alpha", "lookup", "gpt-4o-mini", False), ("beta", "refund", "gpt-4o", True),
                                         ("alpha", "search", "gpt-4o-mini", False)):
            tid, spans = agent_trace(agent=agent, tool=tool, model=model, fail_tool=fail, session=f"s-{agent}")
            r = httpx.post(url + "/v1/traces", content=request(spans), headers={"content-type": "application/x-protobuf"},
                           timeout=10)
            assert r.status_code == 200
            made.append(tid.hex())
        doc = httpx.get(url + "/traces.json", timeout=10).json()
        assert [t["trace_id"] for t in doc["traces"]] == made[::-1]
        assert doc["options"]["agents"] == ["alpha", "beta"]
        assert doc["options"]["tools"] == ["lookup", "refund", "search"]
        assert doc["options"]["models"] == ["gpt-4o", "gpt-4o-mini"]
        assert doc["traces"][1]["tools"] == ["refund"] and doc["traces"][1]["models"] == ["gpt-4o"]
        for params, want in (({"agent": "alpha"}, [made[2], made[0]]), ({"status": "error"}, [made[1]]),
                             ({"tool": "search"}, [made[2]]), ({"model": "gpt-4o"}, [made[1]]),
                             ({"q": "upstream timeout"}, [made[1]])):
            got = httpx.get(url + "/traces.json", params=params, timeout=10).json()
            api = httpx.get(url + "/api/traces", params=params, timeout=10).json()
            assert [t["trace_id"] for t in got["traces"]] == [t["trace_id"] for t in api["traces"]] == want, params
    finally:
        stop(server, thread)


def test_the_policy_filter_finds_the_runaway_loop_and_the_column_names_the_rule(console, page) -> None:  # type: ignore[no-untyped-def]
    # what the demo's loop breaker did: a terminate_session by runaway-search, in the decision log
    stopped = console.get("/api/decisions", effect="terminate_session", limit=100).json()["decisions"]
    loops = {d["trace_id"] for d in stopped if d["rule_id"] == "runaway-search"}
    assert loops, "the demo should have stopped a runaway loop"
    page.goto(console.url + "/traces")
    page.select_option("#f-decision", "terminate_session")
    expected = api_ids(console, decision="terminate_session")
    wait_for_rows(page, expected)
    assert url_params(page)["decision"] == "terminate_session"
    assert loops <= set(expected)  # every trace the breaker stopped is listed
    assert set(expected) == {d["trace_id"] for d in stopped}  # and nothing else
    loop_row = page.locator(f'{ROWS}[data-trace-id="{sorted(loops)[0]}"]')
    assert "runaway-search" in loop_row.locator("td.policy").inner_text()
    # "any" keeps every trace where policy acted, a superset; the CLI takes the same filter
    assert set(expected) <= set(api_ids(console, decision="any"))
    assert console.get("/api/traces", decision="sometimes").status_code == 422
