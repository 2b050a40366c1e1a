"""Sessions: the list, and one conversation across its traces, with a way to stop it."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest

from console.conftest import log_in, serve, stop
from proctor.store import ApiKeys, open_engine
from proctor.store.killswitches import KillSwitches

from spanfactory import agent_trace, request

PB = {"content-type": "application/x-protobuf"}


def session_ids(page) -> list[str]:  # type: ignore[no-untyped-def]
    return page.locator("#results tbody tr").evaluate_all("rs => rs.map(r => r.dataset.sessionId)")  # type: ignore[no-any-return]


def test_the_session_list_shows_the_demo_conversations_and_filters(console, page) -> None:  # type: ignore[no-untyped-def]
    api = console.get("/api/sessions").json()["sessions"]
    assert len(api) >= 5
    page.goto(console.url + "/sessions")
    assert session_ids(page) == [s["session_id"] for s in api]
    hrefs = page.locator("#results tbody tr td:first-child a").evaluate_all("as => as.map(a => a.getAttribute('href'))")
    assert hrefs == [f"/sessions/{s['session_id']}" for s in api]
    # the agent filter narrows the list in place and goes into the URL
    page.select_option("#f-agent", "kb-researcher")
    expected = [s["session_id"] for s in console.get("/api/sessions", agent="kb-researcher").json()["sessions"]]
    assert 0 < len(expected) < len(api)
    page.wait_for_function(
        "ids => JSON.stringify([...document.querySelectorAll('#results tbody tr')].map(r => r.dataset.sessionId))"
        " === JSON.stringify(ids)", arg=expected)
    assert parse_qs(urlsplit(page.url).query) == {"agent": ["kb-researcher"]}
    # (a session matches when the agent acted in it, as a sub-agent too: the column shows its lead agent)
    assert "kb-researcher" in page.locator("#results tbody td.agent").all_inner_texts()
    # so do status and text, and the twin agrees
    twin = console.get("/sessions.json", status="error").json()
    assert twin["sessions"] and all(s["error_count"] > 0 for s in twin["sessions"])
    # pages: a cursor leads to other sessions
    first = console.get("/sessions.json", limit=3).json()
    second = console.get("/sessions.json", limit=3, cursor=first["next_cursor"]).json()
    ids = [s["session_id"] for s in first["sessions"] + second["sessions"]]
    assert ids == [s["session_id"] for s in api][:6]
    bad = console.get("/sessions.json", since="last tuesday")
    assert bad.status_code == 400 and "cannot read time" in bad.json()["detail"]


def test_a_session_page_shows_its_traces_in_order_with_totals(console, page) -> None:  # type: ignore[no-untyped-def]
    sessions = console.get("/api/sessions", limit=200).json()["sessions"]
    multi = max(sessions, key=lambda s: s["trace_count"])
    assert multi["trace_count"] >= 2, "the demo has multi-turn conversations"
    sid = multi["session_id"]
    detail = console.get(f"/api/sessions/{sid}").json()
    page.goto(console.url + f"/sessions/{sid}")
    assert sid in page.locator("h1").inner_text()
    rows = page.locator("#session-traces tbody tr")
    ids = rows.evaluate_all("rs => rs.map(r => r.dataset.traceId)")
    assert ids == [t["trace_id"] for t in detail["traces"]]  # oldest first: the conversation's order
    starts = [t["start_ns"] for t in detail["traces"]]
    assert starts == sorted(starts)
    for tid in ids:  # each links to its trace
        assert page.locator(f'#session-traces tr[data-trace-id="{tid}"] a[href="/traces/{tid}"]').count() >= 1
    # the totals row adds the rows up, and agrees with the API
    foot = page.locator("#session-traces tfoot td").all_inner_texts()
    assert int(foot[0]) == sum(t["span_count"] for t in detail["traces"])
    tokens = detail["input_tokens"] + detail["output_tokens"]
    assert foot[2] == f"{tokens:,}"
    cards = dict(zip(page.locator(".cards .label").all_inner_texts(), page.locator(".cards .value").all_inner_texts(),
                     strict=True))
    assert cards["TRACES"] == str(detail["trace_count"])
    twin = console.get(f"/sessions/{sid}.json").json()
    assert twin["cost_usd"] == pytest.approx(detail["cost_usd"])
    assert [t["trace_id"] for t in twin["traces"]] == ids
    assert twin["span_count"] == int(foot[0])
    # its guard decisions, oldest first, each linked to the trace it governed
    assert twin["decisions"], "the demo's agents run under a guard"
    seqs = [d["seq"] for d in twin["decisions"]]
    assert seqs == sorted(seqs)
    assert page.locator("#session-decisions tbody tr").count() == len(twin["decisions"])
    # and the stop form for an admin: the kill-switch handler's fields, the reason required
    form = page.locator("form#stop-session")
    assert form.get_attribute("action") == "/killswitches" and form.get_attribute("method") == "post"
    assert form.locator("input[name=scope]").get_attribute("value") == f"session:{sid}"
    assert form.locator("input[name=on]").get_attribute("value") == "1"
    assert form.locator("input[name=next]").get_attribute("value") == f"/sessions/{sid}"
    assert form.locator("input[name=reason]").get_attribute("required") is not None


def test_a_session_with_approvals_lists_them_linked(console, page) -> None:  # type: ignore[no-untyped-def]
    approvals = console.get("/api/approvals").json()["approvals"]
    held = next(a for a in approvals if a["session_id"])
    page.goto(console.url + f"/sessions/{held['session_id']}")
    row = page.locator("#session-approvals tbody tr", has=page.locator(f'a[href="/approvals/{held["id"]}"]'))
    assert row.count() == 1 and held["tool"] in row.inner_text()


def test_an_unknown_session_is_a_404_page(console, page) -> None:  # type: ignore[no-untyped-def]
    response = page.goto(console.url + "/sessions/no-such-session")
    assert response is not None and response.status == 404
    assert "no session 'no-such-session'" in page.locator(".error-detail").inner_text()


def _post(url: str, headers: dict[str, str], **kwargs: Any) -> None:
    _, spans = agent_trace(**kwargs)
    r = httpx.post(url + "/v1/traces", content=request(spans), headers={**PB, **headers}, timeout=10)
    assert r.status_code == 200, r.text


def test_stop_this_session_sets_its_kill_switch_and_is_offered_only_to_operators(tmp_path: Path, browser) -> None:  # type: ignore[no-untyped-def]
    db = f"sqlite:///{tmp_path / 'proctor.db'}"
    engine = open_engine(db)
    keys = {role: ApiKeys(engine).create(f"{role}-1", role, by="test")[1] for role in ("operator", "viewer")}
    url, server, thread = serve(db)
    try:
        for _ in range(2):
            _post(url, {"authorization": f"Bearer {keys['operator']}"}, session="sess-stop-me", agent="support")
        for role in ("viewer", "operator"):
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            try:
                page = context.new_page()
                log_in(page, url, keys[role])
                page.goto(url + "/sessions/sess-stop-me")
                assert page.locator("#session-traces tbody tr").count() == 2
                if role == "viewer":
                    assert page.locator("form#stop-session").count() == 0  # a viewer may look, not stop
                    continue
                page.click("form#stop-session button[type=submit]")  # no reason yet: the browser holds it
                assert page.url == url + "/sessions/sess-stop-me" and not KillSwitches(engine).active()
                page.fill("#stop-reason", "looping on lookup_customer")
                page.click("form#stop-session button[type=submit]")
                page.wait_for_selector("#stopped")
                assert page.url == url + "/sessions/sess-stop-me"  # back where the operator was
                assert "looping on lookup_customer" in page.locator("#stopped").inner_text()
                switch = KillSwitches(engine).active()["session:sess-stop-me"]
                assert switch.reason == "looping on lookup_customer" and switch.set_by == "operator-1"
                assert page.locator("form#resume-session").count() == 1
            finally:
                context.close()
    finally:
        stop(server, thread)
        engine.dispose()


def test_sessions_read_the_same_on_postgresql(db_url: str) -> None:
    url, server, thread = serve(db_url)
    try:
        for fail in (False, True):
            _post(url, {}, session="pg-conv", agent="support", fail_tool=fail)
        listed = httpx.get(url + "/sessions.json", timeout=10).json()["sessions"]
        assert [(s["session_id"], s["trace_count"], s["error_count"]) for s in listed] == [("pg-conv", 2, 1)]
        for status in ("ok", "error"):  # as the API: a session's traces of that status
            twin = httpx.get(url + "/sessions.json", params={"status": status}, timeout=10).json()["sessions"]
            api = httpx.get(url + "/api/sessions", params={"status": status}, timeout=10).json()["sessions"]
            assert twin == api and [s["trace_count"] for s in twin] == [1]
        doc = httpx.get(url + "/sessions/pg-conv.json", timeout=10).json()
        assert doc["trace_count"] == 2 and doc["span_count"] == 8 and doc["error_traces"] == 1
        assert doc["decisions"] == [] and doc["approvals"] == [] and doc["kill_switch"] is None
    finally:
        stop(server, thread)


def test_a_session_id_with_slashes_and_url_characters_opens_from_its_links(tmp_path: Path, page) -> None:  # type: ignore[no-untyped-def]
    odd = "user/42?x=1#frag"  # producers choose session ids: a path, a query, a fragment in one
    url, server, thread = serve(f"sqlite:///{tmp_path / 'proctor.db'}")
    try:
        _post(url, {}, session=odd, agent="support")
        page.goto(url + "/sessions")
        page.locator("#results a", has_text=odd).first.click()
        page.wait_for_load_state()
        assert odd in page.locator("h1").inner_text()
        twin = httpx.get(url + "/sessions/" + quote(odd, safe="") + ".json", timeout=10)
        assert twin.status_code == 200 and twin.json()["session_id"] == odd
    finally:
        stop(server, thread)
