"""The trace view (/traces/{id}): an on-call engineer opens a trace and sees what happened.

Against the demo's data: the runaway-loop trace shows where the loop breaker fired, on its row
and in the span inspector (rule id and reason); deep links, causal-link jumps, the keyboard,
search and the graph work. Against a 20,000-span trace of its own: the page is usable within a
bound and stays virtualized (a few dozen rows in the DOM) from the first span to the last.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from console.conftest import ROOT, Console, serve, stop
from proctor.core import Span, ToolCallRef
from proctor.store import SpanStore, open_engine
from proctor.store.decisions import DecisionLog, DecisionRecord
from proctor.traces import build_tree, causal_links, trace_detail
from proctor.traces.tree import tree_order
from proctor.traces.views import trace_outline

INSPECTOR = "#inspector-body .span-detail:not(.loading)"


def _api(console: Console, path: str, **params: Any) -> Any:
    r = console.get(path, **params)
    r.raise_for_status()
    return r.json()


@pytest.fixture(scope="module")
def runaway(console) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The demo's runaway-loop trace: the one whose decision log holds a loop breaker's termination."""
    rows = _api(console, "/api/decisions", effect="terminate_session", limit=1000)["decisions"]
    breaker = next(d for d in rows if d["rule_kind"] == "loop" and d["trace_id"] and d["span_id"])
    return {"trace_id": breaker["trace_id"], "span_id": breaker["span_id"], "rule_id": breaker["rule_id"],
            "reasons": breaker["reasons"], "seq": breaker["seq"],
            "detail": _api(console, f"/api/traces/{breaker['trace_id']}")}


@pytest.fixture(scope="module")
def multi_agent(console) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """A demo trace in which one agent hands work to another (a sub-agent span)."""
    for t in _api(console, "/api/traces", limit=200)["traces"]:
        detail = _api(console, f"/api/traces/{t['trace_id']}")
        if any(ln["type"] == "spawned_by" for ln in detail["links"]):
            return detail
    pytest.fail("the demo has no trace with a sub-agent")


def _open(page, url: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(url)
    page.wait_for_selector("#trace-view.ready")


def _row(page, span_id: str):  # type: ignore[no-untyped-def]
    return page.locator(f'.trow[data-span-id="{span_id}"]')


def _shown(page) -> int:  # type: ignore[no-untyped-def]
    """How many rows the tree shows now (in the DOM or not: the view only builds those in sight)."""
    return int(page.evaluate("document.getElementById('trace-spacer').offsetHeight")) // 24


def _selected(page) -> str | None:  # type: ignore[no-untyped-def]
    return page.locator(".trow.sel").get_attribute("data-span-id") if page.locator(".trow.sel").count() else None


# --- the runaway loop ------------------------------------------------------------------------------
def test_runaway_loop_shows_where_the_breaker_fired(console, page, runaway) -> None:  # type: ignore[no-untyped-def]
    _open(page, f"{console.url}/traces/{runaway['trace_id']}")
    row = _row(page, runaway["span_id"])
    # the breaker's row is marked without clicking anything, and highlighted as an error
    marker = row.locator(".mk-terminate_session")
    assert marker.is_visible()
    assert runaway["rule_id"] in (marker.get_attribute("title") or "")
    assert "err" in (row.get_attribute("class") or "").split()
    bar = page.evaluate("""id => {
        const bar = document.querySelector('.trow[data-span-id="' + id + '"] .tbar');
        const probe = document.createElement('div'); probe.style.color = 'var(--err)'; document.body.appendChild(probe);
        const err = getComputedStyle(probe).color; probe.remove();
        return [getComputedStyle(bar).backgroundColor, err];
    }""", runaway["span_id"])
    assert bar[0] == bar[1], f"the failed span's bar is not red: {bar}"
    # the header names the breaker too, with a jump to it
    assert runaway["rule_id"] in page.locator("#trace-decisions").inner_text()

    row.click()
    inspector = page.locator(INSPECTOR)
    inspector.wait_for()
    assert inspector.get_attribute("data-span-id") == runaway["span_id"]
    table = inspector.locator(".insp-decisions")
    assert runaway["rule_id"] in table.inner_text()
    assert "terminate_session" in table.inner_text()
    reason = runaway["reasons"][0]
    assert reason in table.inner_text()
    # the span event and the decision-log row are one decision, with its place in the log
    assert f"log #{runaway['seq']}" in table.inner_text() and "span event" in table.inner_text()
    assert page.url.endswith(f"?span={runaway['span_id']}")


def test_n_steps_to_the_decisions_and_errors(console, page, runaway) -> None:  # type: ignore[no-untyped-def]
    doc = _api(console, f"/traces/{runaway['trace_id']}.json")
    ids = doc["columns"]["id"]
    flagged = {ids[i] for i, e in enumerate(doc["columns"]["err"]) if e} | {ids[d["span"]] for d in doc["decisions"]}
    assert runaway["span_id"] in flagged
    _open(page, f"{console.url}/traces/{runaway['trace_id']}")
    seen = []
    for _ in range(len(flagged) + 1):
        page.keyboard.press("n")
        seen.append(_selected(page))
    assert set(seen) == flagged
    assert seen[-1] == seen[0]  # it wraps around
    if len(flagged) > 1:
        assert ids.index(seen[1]) > ids.index(seen[0])  # in tree order
    page.keyboard.press("Shift+N")
    assert _selected(page) == seen[-2]


# --- deep links and the inspector ------------------------------------------------------------------
def test_deep_link_opens_with_the_span_selected_and_in_view(console, page, runaway) -> None:  # type: ignore[no-untyped-def]
    spans = runaway["detail"]["spans"]
    target = spans[len(spans) // 2]["span_id"]
    _open(page, f"{console.url}/traces/{runaway['trace_id'][:10]}?span={target}")  # a prefix redirects
    assert page.url == f"{console.url}/traces/{runaway['trace_id']}?span={target}"
    assert _selected(page) == target
    assert _row(page, target).is_visible()
    assert page.locator(INSPECTOR).get_attribute("data-span-id") == target
    # selecting another span updates the address, so it can be shared
    other = spans[1]["span_id"]
    _row(page, other).click()
    page.wait_for_function("id => location.search === '?span=' + id", arg=other)
    page.locator(f'{INSPECTOR}[data-span-id="{other}"]').wait_for()


def test_inspector_shows_messages_tool_arguments_tokens_and_attributes(console, page, runaway) -> None:  # type: ignore[no-untyped-def]
    spans = runaway["detail"]["spans"]
    llm = next(s for s in spans if s["kind"] == "llm")
    tool = next(s for s in spans if s["kind"] == "tool")
    _open(page, f"{console.url}/traces/{runaway['trace_id']}?span={llm['span_id']}")
    insp = page.locator(INSPECTOR)
    text = insp.inner_text()
    assert llm["model"] in text and str(llm["input_tokens"]) in text and str(llm["output_tokens"]) in text
    assert insp.locator(".insp-messages .msg").count() >= 2  # the prompt and the answer
    assert insp.locator(".msg-tool strong", has_text=llm["tool_calls"][0]["name"]).count() >= 1
    assert insp.locator(".attrs th", has_text="gen_ai.request.model").count() == 1

    _row(page, tool["span_id"]).click()
    page.locator(f'{INSPECTOR}[data-span-id="{tool["span_id"]}"]').wait_for()
    args = page.locator(f"{INSPECTOR} pre.tool-args").inner_text()
    assert args.startswith("{\n")  # pretty JSON, not the raw one-line string
    detail = console.get(f"/traces/{runaway['trace_id']}/spans/{tool['span_id']}.json").json()
    assert detail["span"]["tool_name"] == tool["tool_name"]
    assert all(k in detail for k in ("decisions", "messages", "attributes", "events"))


def test_esc_closes_the_inspector_and_enter_opens_it(console, page, runaway) -> None:  # type: ignore[no-untyped-def]
    _open(page, f"{console.url}/traces/{runaway['trace_id']}")
    assert page.locator("#inspector").is_hidden()
    page.keyboard.press("j")  # select the first row
    page.keyboard.press("Enter")
    page.locator(INSPECTOR).wait_for()
    page.keyboard.press("Escape")
    assert page.locator("#inspector").is_hidden()


# --- causal links ----------------------------------------------------------------------------------
def test_causal_link_jumps_from_the_model_call_to_the_tool_span_it_asked_for(console, page, runaway) -> None:  # type: ignore[no-untyped-def]
    link = next(ln for ln in runaway["detail"]["links"] if ln["type"] == "tool_call")
    by_id = {s["span_id"]: s for s in runaway["detail"]["spans"]}
    _open(page, f"{console.url}/traces/{runaway['trace_id']}?span={link['from']}")
    # the linked row is marked while the model call is selected
    assert "linked" in (_row(page, link["to"]).get_attribute("class") or "")
    jump = page.locator(f"{INSPECTOR} .causal-links .link-tool_call button.jump").first
    assert by_id[link["to"]]["name"] in jump.inner_text()
    jump.click()
    page.locator(f'{INSPECTOR}[data-span-id="{link["to"]}"]').wait_for()
    assert _selected(page) == link["to"]
    # and back: the tool span names the call that asked for it
    back = page.locator(f"{INSPECTOR} .causal-links .link-tool_call button.jump").first
    assert "Requested by" in page.locator(f"{INSPECTOR} .causal-links").inner_text()
    back.click()
    page.locator(f'{INSPECTOR}[data-span-id="{link["from"]}"]').wait_for()


def test_sub_agent_links_to_the_agent_that_spawned_it(console, page, multi_agent) -> None:  # type: ignore[no-untyped-def]
    link = next(ln for ln in multi_agent["links"] if ln["type"] == "spawned_by")
    _open(page, f"{console.url}/traces/{multi_agent['trace']['trace_id']}?span={link['from']}")
    links = page.locator(f"{INSPECTOR} .causal-links .link-spawned_by")
    assert "Spawned by" in links.inner_text()
    links.locator("button.jump").click()
    page.locator(f'{INSPECTOR}[data-span-id="{link["to"]}"]').wait_for()
    assert "Spawned sub-agent" in page.locator(f"{INSPECTOR} .causal-links").inner_text()


# --- keyboard --------------------------------------------------------------------------------------
def test_keyboard_moves_collapses_and_expands(console, page, multi_agent) -> None:  # type: ignore[no-untyped-def]
    spans = multi_agent["spans"]
    _open(page, f"{console.url}/traces/{multi_agent['trace']['trace_id']}")
    assert _shown(page) == len(spans)
    page.keyboard.press("ArrowDown")
    assert _selected(page) == spans[0]["span_id"]
    page.keyboard.press("j")
    page.keyboard.press("ArrowDown")
    assert _selected(page) == spans[2]["span_id"]
    page.keyboard.press("k")
    assert _selected(page) == spans[1]["span_id"]
    page.keyboard.press("Home")
    page.keyboard.press("ArrowLeft")  # collapse the root: one row left
    assert _shown(page) == 1 and page.locator(".trow:not([hidden])").count() == 1
    assert _row(page, spans[0]["span_id"]).get_attribute("aria-expanded") == "false"
    page.keyboard.press("ArrowRight")  # expand it again
    assert _shown(page) == len(spans)
    page.keyboard.press("ArrowRight")  # then into its first child
    assert _selected(page) == spans[1]["span_id"]
    page.keyboard.press("ArrowLeft")  # a leaf: back to its parent
    assert _selected(page) == spans[0]["span_id"]
    page.keyboard.press("End")
    assert _selected(page) == spans[-1]["span_id"]
    page.keyboard.press("?")
    assert page.locator("#trace-help").is_visible()
    page.keyboard.press("Escape")
    assert page.locator("#trace-help").is_hidden()


def test_collapsing_a_sub_agent_hides_its_subtree(console, page, multi_agent) -> None:  # type: ignore[no-untyped-def]
    spans = multi_agent["spans"]
    sub = next(ln["from"] for ln in multi_agent["links"] if ln["type"] == "spawned_by")
    at = next(i for i, s in enumerate(spans) if s["span_id"] == sub)
    inside = 0
    for s in spans[at + 1:]:
        if s["depth"] <= spans[at]["depth"]:
            break
        inside += 1
    assert inside > 0
    _open(page, f"{console.url}/traces/{multi_agent['trace']['trace_id']}")
    _row(page, sub).locator(".twisty").click()
    assert _shown(page) == len(spans) - inside
    page.click("#expand-all")
    assert _shown(page) == len(spans)


def test_g_then_key_still_navigates_from_the_trace_view(console, page, runaway) -> None:  # type: ignore[no-untyped-def]
    _open(page, f"{console.url}/traces/{runaway['trace_id']}")
    page.keyboard.press("j")
    page.keyboard.press("g")
    page.keyboard.press("k")  # "g k": kill switches, not "move up"
    page.wait_for_url(re.compile(r".*/killswitches$"))


def test_z_fits_the_timeline_to_the_selected_span(console, page, multi_agent) -> None:  # type: ignore[no-untyped-def]
    spans = multi_agent["spans"]
    sub = next(ln["from"] for ln in multi_agent["links"] if ln["type"] == "spawned_by")
    before = next(s for s in spans if s["end_ns"] < next(x for x in spans if x["span_id"] == sub)["start_ns"])
    _open(page, f"{console.url}/traces/{multi_agent['trace']['trace_id']}?span={sub}")
    width = lambda sid: page.evaluate(  # noqa: E731
        """id => { const r = document.querySelector('.trow[data-span-id="' + id + '"]');
                   const bar = r.querySelector('.tbar');
                   return getComputedStyle(bar).visibility === 'hidden' ? 0
                          : bar.getBoundingClientRect().width / r.querySelector('.tcell-bar').getBoundingClientRect().width; }""",
        sid)
    assert width(sub) < 0.9
    page.keyboard.press("Escape")  # the inspector closes; the selection stays
    page.keyboard.press("z")
    assert width(sub) > 0.99
    assert width(before["span_id"]) == 0  # it ended before the window starts
    assert page.locator("#trace-axis .tick").first.inner_text().startswith("+")
    page.keyboard.press("z")
    assert width(sub) < 0.9 and width(before["span_id"]) > 0


# --- search and graph ------------------------------------------------------------------------------
def test_search_shows_the_matching_spans_and_their_ancestors(console, page, multi_agent) -> None:  # type: ignore[no-untyped-def]
    spans = multi_agent["spans"]
    tool = next(s["tool_name"] for s in spans if s["kind"] == "tool")
    matching = [s for s in spans if tool in s["name"] or s.get("tool_name") == tool]
    _open(page, f"{console.url}/traces/{multi_agent['trace']['trace_id']}")
    page.keyboard.press("/")
    page.keyboard.type(tool)
    page.wait_for_function("n => document.querySelectorAll('.trow.match:not([hidden])').length === n", arg=len(matching))
    assert page.locator("#trace-search-count").inner_text().startswith(f"{len(matching)} match")
    assert page.locator(".trow.dim:not([hidden])").count() >= 1  # the root, for context
    page.keyboard.press("Escape")
    page.wait_for_function("n => document.getElementById('trace-spacer').offsetHeight === n * 24", arg=len(spans))


def test_graph_shows_agents_tools_and_models_and_filters_by_node(console, page, multi_agent) -> None:  # type: ignore[no-untyped-def]
    spans = multi_agent["spans"]
    agents = {s["agent_name"] for s in spans if s["kind"] == "agent"}
    tools = {s["tool_name"] for s in spans if s["kind"] == "tool"}
    _open(page, f"{console.url}/traces/{multi_agent['trace']['trace_id']}")
    page.click("#graph-toggle")
    graph = page.locator("#graph-scroll svg")
    graph.wait_for()
    shown = lambda kind: {g.get_attribute("data-label") for g in page.locator(f".gnode[data-node-type={kind}]").all()}  # noqa: E731
    assert shown("agent") == agents and len(agents) >= 2
    assert shown("tool") == tools
    assert shown("model") == {s["model"] for s in spans if s["kind"] == "llm"}
    assert page.locator(".gedge").count() >= len(agents) - 1 + len(tools)
    name = sorted(tools)[0]
    page.locator(f'.gnode[data-node-type=tool][data-label="{name}"]').click()
    want = {s["span_id"] for s in spans if s["kind"] == "tool" and s["tool_name"] == name}
    got = {r.get_attribute("data-span-id") for r in page.locator(".trow.match:not([hidden])").all()}
    assert got == want
    assert page.locator("#trace-filter-chip").is_visible()
    page.locator(f'.gnode[data-node-type=tool][data-label="{name}"]').click()  # again: everything back
    assert _shown(page) == len(spans)
    assert page.locator(".trow.dim, .trow.match").count() == 0


def test_dark_theme_recolours_the_bars(console, page, runaway) -> None:  # type: ignore[no-untyped-def]
    _open(page, f"{console.url}/traces/{runaway['trace_id']}")
    colour = lambda: page.evaluate("getComputedStyle(document.querySelector('.trow.k-llm .tbar')).backgroundColor")  # noqa: E731
    before = colour()
    page.click("#theme-toggle")
    assert colour() != before


# --- the page's data and its JSON twin -------------------------------------------------------------
def test_json_twin_is_the_tree_the_api_shows(console, runaway) -> None:  # type: ignore[no-untyped-def]
    tid = runaway["trace_id"]
    doc = _api(console, f"/traces/{tid}.json")
    api = runaway["detail"]
    cols = doc["columns"]
    assert doc["span_count"] == len(api["spans"]) == len(cols["id"])
    assert cols["id"] == [s["span_id"] for s in api["spans"]]
    assert cols["depth"] == [s["depth"] for s in api["spans"]]
    for i, s in enumerate(api["spans"]):
        assert (cols["parent"][i] == -1) == (s["parent_span_id"] is None)
        assert doc["strings"][cols["name"][i]] == s["name"]
    pos = {sid: i for i, sid in enumerate(cols["id"])}
    assert sorted((ln["type"], ln["from"], ln["to"]) for ln in doc["links"]) == sorted(
        (ln["type"], pos[ln["from"]], pos[ln["to"]]) for ln in api["links"])
    breaker = [d for d in doc["decisions"] if d["effect"] == "terminate_session"]
    assert [(cols["id"][d["span"]], d["rule_id"]) for d in breaker] == [(runaway["span_id"], runaway["rule_id"])]
    assert breaker[0]["seq"] == runaway["seq"]
    # the same document through content negotiation on the page's own address
    asked = httpx.get(f"{console.url}/traces/{tid}", headers={**console.headers, "Accept": "application/json"},
                      timeout=30)
    assert asked.json() == doc


def test_unknown_trace_is_a_404_page_and_a_span_link_opens_its_trace(console, page, runaway) -> None:  # type: ignore[no-untyped-def]
    response = page.goto(f"{console.url}/traces/{'0' * 32}")
    assert response is not None and response.status == 404
    assert "no trace" in page.locator(".error-detail").inner_text()
    assert console.get(f"/traces/{'0' * 32}.json").status_code == 404
    page.goto(f"{console.url}/traces/{runaway['trace_id']}/spans/{runaway['span_id']}")
    assert page.url.endswith(f"/traces/{runaway['trace_id']}?span={runaway['span_id']}")
    page.locator(f'{INSPECTOR}[data-span-id="{runaway["span_id"]}"]').wait_for()


# --- the outline on both engines -------------------------------------------------------------------
def _small_trace() -> list[Span]:
    """An agent that calls a model, runs its tool call, and hands work to a sub-agent whose tool fails;
    plus a span whose parent never arrived."""
    t, tid = 1_700_000_000_000_000_000, "ab" * 16
    ms = 1_000_000

    def span(sid: str, parent: str | None, kind: str, start: int, end: int, **kw: Any) -> Span:
        return Span(trace_id=tid, span_id=sid * 16 if len(sid) == 1 else sid, parent_span_id=parent, name=kw.pop("name", kind),
                    start_ns=t + start * ms, end_ns=t + end * ms, kind=kind, **kw)

    return [
        span("a", None, "agent", 0, 100, name="invoke_agent boss", agent_name="boss"),
        span("b", "a" * 16, "llm", 1, 10, name="chat m", model="m", agent_name="boss",
             tool_calls=[ToolCallRef("call_1", "lookup")]),
        span("c", "a" * 16, "tool", 11, 20, name="execute_tool lookup", tool_name="lookup", tool_call_id="call_1",
             agent_name="boss", events=[{"name": "proctor.decision", "time_ns": t, "attributes": {
                 "proctor.decision.id": "d1", "proctor.decision.effect": "deny", "proctor.decision.rule_id": "no-lookup",
                 "proctor.decision.reasons": ["no-lookup: deny — not today"]}}]),
        span("d", "a" * 16, "tool", 21, 60, name="execute_tool ask_helper", tool_name="ask_helper", agent_name="boss"),
        span("e", "d" * 16, "agent", 22, 59, name="invoke_agent helper", agent_name="helper"),
        span("f", "e" * 16, "tool", 23, 30, name="execute_tool fetch", tool_name="fetch", agent_name="helper",
             status="error", error_message="fetch timed out"),
        span("9", "7" * 16, "other", 5, 6, name="late child"),  # its parent never arrived
    ]


def test_outline_matches_build_tree_and_causal_links(db_url: str) -> None:
    engine = open_engine(db_url)
    try:
        store = SpanStore(engine)
        spans = _small_trace()
        store.write(spans)
        tid = spans[0].trace_id
        DecisionLog(engine).append([DecisionRecord(
            decision_id="d1", ts_ns=spans[0].start_ns, trace_id=tid, span_id="c" * 16, session_id=None, agent="boss",
            action="tool_call", target="lookup", effect="deny", rule_id="no-lookup", reasons=["no-lookup: deny — not today"],
            rule_kind="tool")])
        doc = trace_outline(store, tid[:8])
        api = trace_detail(store, tid)
    finally:
        engine.dispose()
    cols = doc["columns"]
    assert cols["id"] == [s["span_id"] for s in api["spans"]]
    assert cols["depth"] == [s["depth"] for s in api["spans"]]
    assert [doc["strings"][k] for k in cols["kind"]] == [s["kind"] for s in api["spans"]]
    assert cols["start"][0] == 0 and cols["dur"][0] == 100_000  # µs from the trace's start
    pos = {sid: i for i, sid in enumerate(cols["id"])}
    assert sorted((ln["type"], ln["from"], ln["to"]) for ln in doc["links"]) == sorted(
        (ln["type"], pos[ln["from"]], pos[ln["to"]]) for ln in api["links"])
    assert {ln["type"] for ln in doc["links"]} == {"tool_call", "spawned_by"}
    failed = pos["f" * 16]
    assert cols["err"][failed] == 1 and doc["errors"] == {failed: "fetch timed out"}
    # the decision is on the span and in the log: one decision, with the log's seq
    assert doc["decision_count"] == 1
    [d] = doc["decisions"]
    assert (d["span"], d["effect"], d["rule_id"], d["reason"]) == (pos["c" * 16], "deny", "no-lookup", "not today")
    assert d["seq"] == 1
    # the graph: who called what
    nodes = doc["graph"]["nodes"]
    edges = {(nodes[e["from"]]["id"], nodes[e["to"]]["id"]): e["count"] for e in doc["graph"]["edges"]}
    assert edges == {("agent:boss", "model:m"): 1, ("agent:boss", "tool:lookup"): 1,
                     ("agent:boss", "tool:ask_helper"): 1, ("agent:boss", "agent:helper"): 1,
                     ("agent:helper", "tool:fetch"): 1}
    assert nodes[cols["node"][failed]]["errors"] == 1


def test_tree_order_keeps_cycles_and_orphans_visible() -> None:
    # 0 is a root; 1 and 2 point at each other (bad data); 3 is a child of 0
    order, depth, kids, reached = tree_order([-1, 2, 1, 0])
    assert order == [0, 3, 1, 2] and depth == [0, 0, 0, 1] and list(reached) == [1, 0, 0, 1]
    assert kids[0] == 1
    rows = build_tree([
        {"span_id": "a", "parent_span_id": None, "start_ns": 1},
        {"span_id": "b", "parent_span_id": "zz", "start_ns": 0},
    ])
    assert [r["span_id"] for r in rows] == ["b", "a"] and rows[0]["orphan"] is True
    assert causal_links(rows) == []


# --- a 20,000-span trace ---------------------------------------------------------------------------
def _bench_module() -> Any:
    spec = importlib.util.spec_from_file_location("proctor_bench_console", ROOT / "benchmarks" / "console.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def big_trace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """20,000 spans: nested agents, model and tool calls, errors, decisions; on its own server."""
    bench = _bench_module()
    spans, decisions = bench.synthetic_trace(20_000, seed=11)
    db = f"sqlite:///{Path(tmp_path_factory.mktemp('big-trace')) / 'proctor.db'}"
    trace_id = bench.write_trace(db, spans, decisions)
    url, server, thread = serve(db)
    try:
        httpx.get(url + "/", timeout=30)  # a running server: templates loaded, connections open
        yield {"url": url, "trace_id": trace_id, "first": spans[0].span_id,
               "breaker": next(d["span_id"] for d in decisions if d["effect"] == "terminate_session")}
    finally:
        stop(server, thread)


def test_20000_span_trace_is_interactive_quickly_and_stays_virtualized(big_trace, page) -> None:  # type: ignore[no-untyped-def]
    url, tid = big_trace["url"], big_trace["trace_id"]
    started = time.perf_counter()
    page.goto(f"{url}/traces/{tid}")
    page.locator(".trow").first.wait_for()
    first_rows = time.perf_counter() - started
    page.locator(".trow").nth(4).click()
    page.locator(INSPECTOR).wait_for()
    interactive = time.perf_counter() - started
    # DESIGN.md's target is 1 s (benchmarks/console.py measures it); a loaded CI machine gets 3
    assert interactive <= 3.0, f"first rows after {first_rows:.2f} s, inspector open after {interactive:.2f} s"
    assert page.locator(".trow").count() < 300
    assert _row(page, big_trace["first"]).is_visible()

    # the last span is reachable by scrolling, and the DOM stays small
    page.evaluate("document.getElementById('trace-scroll').scrollTop = 1e9")
    doc_last = httpx.get(f"{url}/traces/{tid}.json", timeout=60).json()["columns"]["id"][-1]
    _row(page, doc_last).wait_for()
    assert page.locator(".trow").count() < 300
    # End selects it from the keyboard too; Home goes back to the top
    page.keyboard.press("End")
    assert _selected(page) == doc_last
    page.keyboard.press("Home")
    assert _selected(page) == big_trace["first"]

    # the loop breaker at the very end is one keystroke away
    page.keyboard.press("Shift+N")
    assert _selected(page) == big_trace["breaker"]
    assert _row(page, big_trace["breaker"]).locator(".mk-terminate_session").is_visible()

    # collapsing the root leaves one row; expanding brings all 20,000 back, still virtualized
    page.keyboard.press("Home")
    page.keyboard.press("ArrowLeft")
    assert _shown(page) == 1
    page.keyboard.press("ArrowRight")
    assert _shown(page) == 20_000
    assert page.locator(".trow").count() < 300
