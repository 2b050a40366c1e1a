"""Alerts in the console, against the demo's data: the runaway loop and the cost spiral it fired,
what is behind each alert, and silencing from the page."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

from playwright.sync_api import expect


def _me(page) -> str:  # type: ignore[no-untyped-def]
    """Who the console says is signed in (the demo's admin key, or the local admin when auth is off)."""
    return page.locator(".topbar .who").inner_text().split()[0]


def _rules_listed(page) -> list[str]:  # type: ignore[no-untyped-def]
    return [r.get_attribute("data-rule") for r in page.locator("tr.alert-row").all()]


def test_the_alerts_page_lists_the_demos_alerts_and_filters_them(console, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(console.url + "/alerts")
    rules = _rules_listed(page)
    assert {"runaway-loop", "cost-spiral"} <= set(rules), rules
    spiral = page.locator("tr.alert-row[data-rule='cost-spiral']").first
    expect(spiral).to_contain_text("critical")
    expect(spiral).to_contain_text("terminate_session")  # the containment it took
    expect(spiral.locator("a.alert-link")).to_contain_text("is spending $")

    page.select_option("select[name=rule]", "runaway-loop")
    page.click("#alert-filters button[type=submit]")
    page.wait_for_url("**/alerts?*rule=runaway-loop*")
    assert set(_rules_listed(page)) == {"runaway-loop"}

    page.goto(console.url + "/alerts?severity=warning")
    assert "tool-failures" in _rules_listed(page) and "runaway-loop" not in _rules_listed(page)
    page.goto(console.url + "/alerts?severity=critical&state=resolved")
    assert set(_rules_listed(page)) == {"runaway-loop", "cost-spiral"}  # the server's restart resolved them
    # the JSON twin carries the same list
    doc = console.get("/alerts.json", severity="critical").json()
    assert {a["rule_id"] for a in doc["alerts"]} == {"runaway-loop", "cost-spiral"}
    bad = page.goto(console.url + "/alerts?state=exploded")
    assert bad is not None and bad.status == 400


def test_an_alert_page_shows_its_events_and_the_spans_and_decisions_behind_it(console, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(console.url + "/alerts?rule=runaway-loop")
    page.locator("tr.alert-row a.alert-link").first.click()
    page.wait_for_url(re.compile(r".*/alerts/[0-9a-f]{16}$"))
    expect(page.locator("h1")).to_contain_text("a loop breaker fired in session")
    expect(page.locator("#labels")).to_contain_text("agent=kb-researcher")
    events = page.locator("table.events tbody tr")
    kinds = [e.locator("td").nth(1).inner_text().strip() for e in events.all()]
    assert kinds[0] == "firing" and "notified" in kinds and kinds[-1] == "resolved", kinds
    expect(page.locator("table.events")).to_contain_text("notifier demo-webhook")

    links = [a.get_attribute("href") or "" for a in page.locator("table.evidence-spans a.span-link").all()]
    assert links, "no span behind the alert"
    for href in links:
        m = re.fullmatch(r"/traces/([0-9a-f]{32})\?span=([0-9a-f]{16})", href)
        assert m, href
        # the link names a span that is in that trace
        r = console.get(f"/api/spans/{m.group(2)}", trace_id=m.group(1))
        assert r.status_code == 200, href
    expect(page.locator("table.evidence-spans")).to_contain_text("execute_tool search_kb")

    decision = page.locator("table.evidence-decisions tbody tr").first
    expect(decision).to_contain_text("terminate_session")
    expect(decision).to_contain_text("runaway-search")  # the loop breaker that fired
    assert re.fullmatch(r"/traces/[0-9a-f]{32}\?span=[0-9a-f]{16}",
                        decision.locator("a.decision-link").get_attribute("href") or "")

    twin = console.get(urlsplit(page.url).path + ".json").json()
    assert twin["alert"]["rule_id"] == "runaway-loop" and len(twin["spans"]) == len(links)
    assert twin["decisions"][0]["rule_id"] == "runaway-search"


def test_a_silence_is_created_and_revoked_from_the_page(console, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(console.url + "/alerts?rule=cost-spiral")
    page.locator("tr.alert-row a.alert-link").first.click()
    page.click("#silence-like-this")
    page.wait_for_url("**/alerts/silences?matchers=*")
    matchers = page.locator("input[name=matchers]").input_value()
    assert re.fullmatch(r"rule=cost-spiral session=sess_[0-9a-f]+", matchers), matchers  # prefilled from the alert

    # a matcher that cannot be read is refused, with the form kept
    page.fill("input[name=matchers]", "cost-spiral")
    page.fill("input[name=reason]", "known: demo traffic")
    page.click("#silence-submit")
    expect(page.locator("#error")).to_contain_text("cannot read matcher 'cost-spiral': write key=value")
    expect(page.locator("input[name=reason]")).to_have_value("known: demo traffic")

    page.fill("input[name=matchers]", matchers)
    page.fill("input[name=duration]", "30m")
    page.click("#silence-submit")
    page.wait_for_url("**/alerts/silences?created=*")
    silence_id = parse_qs(urlsplit(page.url).query)["created"][0]
    expect(page.locator("#flash")).to_contain_text(f"Silence {silence_id} added: {matchers} muted until")
    row = page.locator(f"#silence-{silence_id}")
    expect(row).to_contain_text("active")
    expect(row).to_contain_text("known: demo traffic")
    expect(row.locator("td").nth(2)).to_have_text(_me(page))
    active = console.get("/api/silences", active="true").json()["silences"]
    assert [s["matchers"] for s in active if s["id"] == silence_id] == [
        dict(m.split("=", 1) for m in matchers.split())]

    row.get_by_role("button", name=f"Revoke silence {silence_id}").click()
    page.wait_for_url(f"**/alerts/silences?revoked={silence_id}")
    expect(page.locator("#flash")).to_contain_text(f"Silence {silence_id} revoked")
    expect(page.locator(f"#silence-{silence_id}")).to_contain_text("revoked")
    assert page.locator(f"section[aria-labelledby=h-active] #silence-{silence_id}").count() == 0
    active = console.get("/api/silences", active="true").json()["silences"]
    assert silence_id not in {s["id"] for s in active}
