"""The policies pages: bundles, the decision log, backtests, as a person sees them in the browser.

Against the demo's data: every agent version pins the demo bundle (demo-support); the decision log
holds the fleet's decisions (allowed calls, denials, refunds held for approval, a loop stopped).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from console.conftest import Console, demo_keys, log_in, serve, stop
from proctor.demo.governance import POLICY

BUNDLE = "demo-support"


def twin(console: Console, path: str, **params: Any) -> dict[str, Any]:
    r = console.get(path, **params)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json"), r.text[:300]
    return r.json()  # type: ignore[no-any-return]


def _attr(page, selector: str, name: str) -> list[str]:  # type: ignore[no-untyped-def]
    return page.locator(selector).evaluate_all(f"es => es.map(e => e.getAttribute('{name}'))")


@pytest.fixture(scope="module")
def governed(demo_db: str):  # type: ignore[no-untyped-def]
    """A server on the demo's data whose decision API enforces the demo's bundle."""
    url, server, thread = serve(demo_db, policy=str(POLICY))
    try:
        yield Console(url, demo_db, demo_keys(demo_db).get("you"))
    finally:
        stop(server, thread)


# -- bundles --------------------------------------------------------------------------------------

def test_policies_page_lists_the_bundles_agent_versions_pin(console, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(console.url + "/policies")
    # this server was started without --policy: it says so, and still shows what versions pin
    assert "enforces no policy" in page.locator("#no-active-policy").inner_text()
    rows = page.locator("#pinned-bundles tbody tr")
    assert rows.count() == 1
    row = rows.first
    assert row.locator("td").first.inner_text() == BUNDLE
    pinners = row.locator("td.pinners a").all_inner_texts()
    assert sorted(pinners) == ["kb-researcher@0.9.2", "refund-agent@2.1.3", "support-triage@1.4.0",
                               "support-triage@1.5.0-rc.1"]
    doc = twin(console, "/policies.json")
    assert doc["policy"] is None
    [pinned] = doc["pinned"]
    assert pinned["name"] == BUNDLE and pinned["hash"] == row.get_attribute("data-hash")
    assert len(pinned["versions"]) == 4 and pinned["rules"] > 0
    assert pinned["live_in"] == ["prod", "staging"]


def test_policies_page_shows_the_decision_apis_active_bundles_with_their_hash(governed, page) -> None:  # type: ignore[no-untyped-def]
    log_in(page, governed.url, governed.key)
    page.goto(governed.url + "/policies")
    active = page.locator("#active-bundles tbody tr")
    assert active.count() == 1
    api = twin(governed, "/api/policy")
    assert active.first.get_attribute("data-hash") == api["bundles"][0]["hash"]
    assert api["hash"] in page.locator("#active-policy").inner_text()
    assert "enforce" in active.first.inner_text()
    # the same bundle is pinned by the versions, and the page says it is enforced here too
    assert page.locator("#pinned-bundles tbody tr").first.get_attribute("data-hash") == api["bundles"][0]["hash"]
    doc = twin(governed, "/policies.json")
    assert doc["policy"]["hash"] == api["hash"] and doc["policy"]["bundles"][0]["pinned_by"] == 4
    assert doc["pinned"][0]["active"] is True


def test_bundle_page_shows_each_rule_readably_and_the_yaml(console, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(console.url + "/policies")
    page.click("#pinned-bundles tbody tr a:text-is('demo-support')")
    page.wait_for_url("**/policies/bundles/**")
    assert page.locator("h1").inner_text().startswith(BUNDLE)
    rule = page.locator("#rule-refunds-over-50")
    cells = rule.locator("td").all_inner_texts()
    assert cells[0] == "refunds-over-50" and cells[1] == "tool"
    assert "issue_refund" in cells[2] and "args.amount_usd > 50" in cells[2]
    assert cells[3].strip() == "require_approval"
    assert cells[4] == "Refunds above $50 need a human"
    shadow = page.locator("#rule-refunds-over-25-trial")
    assert "shadow" in shadow.inner_text()
    # the line number opens the rule in the YAML
    line = rule.locator("td.num a").inner_text()
    assert "id: refunds-over-50" in page.locator(f"#L{line}").inner_text()
    assert "kind: PolicyBundle" in page.locator("#bundle-yaml").inner_text()

    h = page.url.rsplit("/", 1)[1]
    doc = twin(console, f"/policies/bundles/{h}.json")
    assert doc["bundle"]["name"] == BUNDLE and doc["bundle"]["hash"].startswith(h)
    assert [r["id"] for r in doc["bundle"]["rules"]] == _attr(page, "#rules-table tbody tr", "data-rule")
    assert len(doc["pinned_by"]) == 4


def test_unknown_bundle_is_a_readable_404(console, page) -> None:  # type: ignore[no-untyped-def]
    response = page.goto(console.url + "/policies/bundles/abcdef0123")
    assert response is not None and response.status == 404
    assert "no active or pinned policy bundle" in page.locator(".error-detail").inner_text()


# -- the decision log -----------------------------------------------------------------------------

def test_decision_log_filtered_by_effect_deny_shows_only_denials(console, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(console.url + "/decisions")
    assert page.locator("#decisions tbody tr").count() > 0
    page.select_option("#f-effect", "deny")
    page.click("#decision-filters button[type=submit]")
    page.wait_for_url("**effect=deny**")
    effects = _attr(page, "#decisions tbody tr", "data-effect")
    assert effects and set(effects) == {"deny"}
    api = twin(console, "/api/decisions", effect="deny", limit=1000)
    assert len(effects) == len(api["decisions"])
    doc = twin(console, "/decisions.json", effect="deny")
    assert [d["seq"] for d in doc["decisions"]] == [int(s) for s in _attr(page, "#decisions tbody tr", "data-seq")]


def test_decision_log_filtered_by_agent_and_shadow_mode(console, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(console.url + "/decisions")
    page.fill("#f-agent", "refund-agent")
    page.click("#decision-filters button[type=submit]")
    page.wait_for_url("**agent=refund-agent**")
    agents = _attr(page, "#decisions tbody tr", "data-agent")
    assert agents and set(agents) == {"refund-agent"}
    # shadow decisions: logged, not applied (the demo's trial rule for refunds above $25)
    page.goto(console.url + "/decisions?mode=shadow")
    rows = page.locator("#decisions tbody tr")
    assert rows.count() >= 1
    assert all("shadow" in t for t in rows.all_inner_texts())
    assert all(d["enforced"] is False for d in twin(console, "/decisions.json", mode="shadow")["decisions"])


def test_decision_log_pages_back_without_gaps_or_repeats(console, page) -> None:  # type: ignore[no-untyped-def]
    total = len(twin(console, "/api/decisions", limit=1000)["decisions"])
    assert total > 40  # enough for three pages of 20
    page.goto(console.url + "/decisions?limit=20")
    seen: list[int] = []
    for _ in range(50):  # bounded: total / 20 pages and a bit
        seqs = [int(s) for s in _attr(page, "#decisions tbody tr", "data-seq")]
        assert seqs == sorted(seqs, reverse=True) and len(seqs) <= 20
        assert not seen or seqs[0] < seen[-1]
        seen += seqs
        nxt = page.locator(".pager a[rel=next]")
        if nxt.count() == 0:
            break
        nxt.click()
        page.wait_for_url("**cursor=**")
    assert len(seen) == total and len(set(seen)) == total
    page.locator(".pager a", has_text="First page").click()
    page.wait_for_url(re.compile(r".*/decisions\?limit=20$"))


def test_a_decision_links_to_its_span_in_a_trace_that_opens(console, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(console.url + "/decisions?effect=deny")
    link = page.locator("#decisions tbody tr a.trace-link").first
    href = link.get_attribute("href")
    m = re.fullmatch(r"/traces/([0-9a-f]{32})\?span=([0-9a-f]{16})", href or "")
    assert m, href
    trace_id, span_id = m.groups()
    api = console.get(f"/api/traces/{trace_id}")
    assert api.status_code == 200 and span_id in api.text  # the span the decision governed is in that trace
    with page.expect_navigation() as nav:
        link.click()
    response = nav.value
    assert response is not None and response.status == 200
    assert page.url == console.url + href
    assert trace_id[:12] in page.locator("main").inner_text()


def test_bad_decision_filters_say_what_is_wrong(console, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(console.url + "/decisions?since=yesterday-ish")
    assert "since" in page.locator("#filter-error").inner_text()
    page.goto(console.url + "/decisions?effect=maybe")
    assert "effect must be one of" in page.locator("#filter-error").inner_text()


# -- backtest -------------------------------------------------------------------------------------

def test_backtest_of_a_pinned_bundle_over_the_demo_window(console, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(console.url + "/policies/backtest")
    assert BUNDLE in page.locator("#bt-bundle option:checked").inner_text()
    assert page.locator("#bt-since").input_value() == "24h"
    page.click("#backtest-form button[type=submit]")
    page.wait_for_selector("#backtest-result")
    assert "bundle=" in page.url and "since=24h" in page.url  # a deep link to these results

    replayed = int(page.locator("#n-replayed").inner_text())
    allowed, denied, held = (int(page.locator(f"#n-{k}").inner_text()) for k in ("allowed", "denied", "held"))
    assert replayed > 0 and allowed > 0 and held > 0  # the demo's refunds above $50
    assert allowed + denied + held <= replayed
    rules = page.locator("#per-rule tbody tr")
    assert "refunds-over-50" in _attr(page, "#per-rule tbody tr", "data-rule")
    assert rules.locator("a.span-link").count() > 0
    example = rules.locator("a.span-link").first.get_attribute("href")
    assert re.fullmatch(r"/traces/[0-9a-f]{32}\?span=[0-9a-f]{16}", example or ""), example
    # against what was decided at the time: the loop breaker and the scanner are stateful (not replayed)
    assert int(page.locator("#n-changed").inner_text()) > 0
    assert page.locator("#changes tbody tr").count() == int(page.locator("#n-changed").inner_text())
    assert page.locator("#transitions tr.changed").count() > 0

    doc = twin(console, "/policies/backtest.json?" + page.url.split("?", 1)[1])
    r = doc["result"]
    assert (r["replayed"], r["allowed"], r["denied"], r["held"]) == (replayed, allowed, denied, held)
    assert r["capped"] is False and r["spans_read"] >= r["replayed"]
    per_rule = {x["rule_id"]: x for x in r["rules"]}
    assert per_rule["refunds-over-50"]["effects"].get("require_approval", 0) >= 1


def test_backtest_is_bounded_and_says_when_it_was_capped(console, page) -> None:  # type: ignore[no-untyped-def]
    bundle = twin(console, "/policies.json")["pinned"][0]["hash"]
    page.goto(console.url + f"/policies/backtest?bundle={bundle}&since=24h&cap=10")
    assert "Capped" in page.locator("#capped").inner_text()
    assert int(page.locator("#n-replayed").inner_text()) <= 10
    doc = twin(console, "/policies/backtest.json", bundle=bundle, since="24h", cap=10)
    assert doc["result"]["capped"] is True and doc["result"]["spans_read"] == 10
    # a cap above the bound is brought down to it
    assert twin(console, "/policies/backtest.json", bundle=bundle, cap=10**9)["params"]["cap"] == 50_000


@pytest.mark.parametrize(("query", "message"), [
    ("bundle=0123456789ab", "no active or pinned policy bundle"),
    ("bundle=active", "enforces no policy"),
    ("bundle={hash}&since=1h&until=2h", "the window is empty"),
    ("bundle={hash}&since=last+tuesday", "since:"),
])
def test_backtest_bad_choice_shows_a_clear_message(console, page, query: str, message: str) -> None:  # type: ignore[no-untyped-def]
    bundle = twin(console, "/policies.json")["pinned"][0]["hash"]
    page.goto(console.url + "/policies/backtest?" + query.format(hash=bundle))
    assert message in page.locator("#backtest-error").inner_text()
    assert page.locator("#backtest-form").is_visible()  # the form stays, to choose again
    assert page.locator("#backtest-result").count() == 0


def test_backtest_of_the_active_policy_on_a_governed_server(governed, page) -> None:  # type: ignore[no-untyped-def]
    log_in(page, governed.url, governed.key)
    page.goto(governed.url + "/policies/backtest")
    assert page.locator("#bt-bundle").input_value() == "active"
    page.select_option("#bt-agent", "refund-agent")
    page.click("#backtest-form button[type=submit]")
    page.wait_for_selector("#backtest-result")
    assert int(page.locator("#n-replayed").inner_text()) > 0
    doc = twin(governed, "/policies/backtest.json?" + page.url.split("?", 1)[1])
    assert doc["result"]["policy_hash"] == twin(governed, "/api/policy")["hash"]
    assert {c["agent"] for c in doc["result"]["changes"]} <= {"refund-agent"}


@pytest.mark.parametrize("path", ["/policies", "/policies/bundles/{hash}", "/decisions",
                                  "/policies/backtest?bundle={hash}"])
def test_policies_pages_fit_1280_px_in_both_themes(console, page, path: str) -> None:  # type: ignore[no-untyped-def]
    bundle = twin(console, "/policies.json")["pinned"][0]["hash"]
    page.goto(console.url + path.format(hash=bundle))
    looks = set()
    for theme in ("light", "dark"):
        page.evaluate(f"document.documentElement.setAttribute('data-theme', '{theme}')")
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280, f"{path} scrolls sideways ({theme})"
        looks.add(page.evaluate("getComputedStyle(document.querySelector('table.grid th')).backgroundColor + "
                                "getComputedStyle(document.body).color"))
    assert len(looks) == 2
