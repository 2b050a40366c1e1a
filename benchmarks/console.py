"""Console benchmark: how soon a big trace is usable in the trace view.

For traces of 1,000, 20,000 and 50,000 spans (synthetic, but shaped like a real agent run:
an orchestrator whose loop calls a model, runs the tools it asked for and hands work to
sub-agents up to four levels deep, with tool errors, policy decisions as span events and in
the decision log, and full gen_ai message attributes so the heavy columns are really there),
written to a fresh SQLite database and served by ``proctor serve`` (a subprocess):

* **data** — server time to answer ``/traces/{id}.json`` (the outline the page loads), with
  httpx: for a trace nobody opened yet, and again once the server keeps it;
* in Chromium (Playwright, Debian's ``/usr/bin/chromium``), a fresh browser context each time
  (no cached assets), each run on a trace not opened before:
  **rows** — the first frame showing tree rows, in ms from navigation start (the page's own
  performance.now()); **click** — from the click on a row to the frame showing the inspector
  with that span's details; **interactive** = rows + click; **goto..inspector** — the same
  measured from Python, page.goto to the inspector (includes Playwright's own latency);
* **DOM rows** — tree rows in the DOM after scrolling to the last span (virtualization).

Target (issue 6): a 20,000-span trace interactive within 1 s of navigation.

    .venv/bin/python benchmarks/console.py                  # 1k, 20k, 50k; 4 first views each
    .venv/bin/python benchmarks/console.py --sizes 20000 --runs 10
    .venv/bin/python benchmarks/console.py --json
    .venv/bin/python benchmarks/console.py --wait-quiet 300    # on a shared machine

The trace generator (:func:`synthetic_trace`, :func:`write_trace`) is also what
tests/console/test_trace_detail.py uses for its 20,000-span trace.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proctor.core import Span, ToolCallRef

AGENTS = ("orchestrator", "researcher", "coder", "reviewer", "billing-clerk")
TOOLS = ("search_docs", "read_file", "write_file", "run_tests", "lookup_customer", "http_get", "sql_query")
MODELS = ("gpt-4o-mini-2024-07-18", "gpt-4o-2024-08-06", "claude-3-5-haiku-20241022")
HANDOFF = {"researcher": "ask_researcher", "coder": "ask_coder", "reviewer": "ask_reviewer",
           "billing-clerk": "ask_billing"}
SUB_AGENT = {tool: agent for agent, tool in HANDOFF.items()}


@dataclass
class _Builder:
    trace_id: str
    rng: random.Random
    budget: int
    session: str
    clock: int
    spans: list[Span] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    seq: int = 0

    def span_id(self) -> str:
        self.seq += 1
        return f"{self.rng.getrandbits(32):08x}{self.seq:08x}"

    def left(self) -> int:
        return self.budget - len(self.spans)

    def tick(self, lo_ms: float, hi_ms: float) -> int:
        self.clock += int(self.rng.uniform(lo_ms, hi_ms) * 1e6)
        return self.clock

    def decision(self, span: Span, effect: str, rule: str, kind: str, target: str, reason: str) -> None:
        did = f"{self.trace_id[:8]}{len(self.decisions):016x}"
        attrs = {
            "proctor.decision.id": did, "proctor.decision.stage": "tool_call",
            "proctor.decision.effect": effect, "proctor.decision.rule_id": rule,
            "proctor.decision.policy_hash": "bench", "proctor.decision.input_digest": "0" * 64,
            "proctor.decision.reasons": [f"{rule}: {effect} — {reason}"],
            "proctor.decision.target": target, "proctor.decision.rule_kind": kind,
        }
        span.events.append({"name": "proctor.decision", "time_ns": span.start_ns, "attributes": attrs})
        if effect != "allow":
            span.attributes["proctor.decision.effect"] = effect
            self.decisions.append({"decision_id": did, "ts_ns": span.start_ns, "span_id": span.span_id,
                                   "effect": effect, "rule_id": rule, "rule_kind": kind, "target": target,
                                   "reasons": attrs["proctor.decision.reasons"]})

    def agent(self, name: str, parent: str | None, depth: int, steps: int) -> Span:
        """An agent span and its loop; returns the agent span (appended before its children)."""
        start = self.tick(0.1, 2)
        a = Span(trace_id=self.trace_id, span_id=self.span_id(), parent_span_id=parent, name=f"invoke_agent {name}",
                 start_ns=start, end_ns=start, kind="agent", status="unset", session_id=self.session,
                 agent_name=name, agent_version="1.0.0", service_name="bench-fleet", operation="invoke_agent",
                 attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": name,
                             "gen_ai.conversation.id": self.session})
        self.spans.append(a)
        step = 0
        while self.left() > 1 and (steps <= 0 or step < steps):
            step += 1
            calls = []
            for _ in range(self.rng.choice((1, 1, 1, 2, 2, 3))):
                subs = [n for n in AGENTS[1:] if n != name]
                if depth < 4 and self.rng.random() < 0.12:
                    calls.append((f"call_{self.span_id()}", HANDOFF[self.rng.choice(subs)]))
                else:
                    calls.append((f"call_{self.span_id()}", self.rng.choice(TOOLS)))
            self.llm(a, name, calls)
            for call_id, tool in calls:
                if self.left() <= 0:
                    break
                if tool in SUB_AGENT and self.left() > 8:
                    self.handoff(a, name, call_id, tool, depth)
                else:
                    self.tool(a, name, call_id, tool)
        if self.left() > 0:
            self.llm(a, name, [])
        a.end_ns = self.tick(0.1, 1)
        return a

    def llm(self, parent: Span, agent: str, calls: list[tuple[str, str]]) -> Span:
        model = self.rng.choice(MODELS)
        start = self.tick(0.5, 3)
        end = self.tick(40, 900)
        tin, tout = self.rng.randint(300, 6000), self.rng.randint(20, 700)
        words = ("order", "refund", "docs", "timeout", "schema", "tests", "invoice", "customer")
        question = " ".join(self.rng.choice(words) for _ in range(40))
        inp = json.dumps([{"role": "system", "parts": [{"type": "text", "content": f"You are {agent}. " * 8}]},
                          {"role": "user", "parts": [{"type": "text", "content": question}]}])
        out = json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "Working on it. " * 6}] + [
            {"type": "tool_call", "id": cid, "name": tool, "arguments": {"q": question[:40]}}
            for cid, tool in calls]}])
        s = Span(trace_id=self.trace_id, span_id=self.span_id(), parent_span_id=parent.span_id,
                 name=f"chat {model}", start_ns=start, end_ns=end, kind="llm", status="unset",
                 session_id=self.session, agent_name=agent, model=model, provider="openai",
                 input_tokens=tin, output_tokens=tout, cost_usd=(tin * 0.15 + tout * 0.6) / 1e6,
                 service_name="bench-fleet", operation="chat", input_value=inp, output_value=out,
                 tool_calls=[ToolCallRef(cid, tool, json.dumps({"q": question[:40]})) for cid, tool in calls],
                 attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": model,
                             "gen_ai.input.messages": inp, "gen_ai.output.messages": out,
                             "gen_ai.usage.input_tokens": tin, "gen_ai.usage.output_tokens": tout,
                             "gen_ai.agent.name": agent, "gen_ai.conversation.id": self.session})
        self.spans.append(s)
        return s

    def tool(self, parent: Span, agent: str, call_id: str, tool: str) -> Span:
        start = self.tick(0.2, 2)
        end = self.tick(2, 250)
        s = Span(trace_id=self.trace_id, span_id=self.span_id(), parent_span_id=parent.span_id,
                 name=f"execute_tool {tool}", start_ns=start, end_ns=end, kind="tool", status="unset",
                 session_id=self.session, agent_name=agent, tool_name=tool, tool_call_id=call_id,
                 tool_arguments='{"q": "latest refund policy", "limit": 5}',
                 tool_result='{"hits": [{"id": "KB-1", "score": 0.82}, {"id": "KB-7", "score": 0.4}]}',
                 service_name="bench-fleet", operation="execute_tool",
                 attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool,
                             "gen_ai.tool.call.id": call_id, "gen_ai.agent.name": agent})
        r = self.rng.random()
        if r < 0.03:
            s.status, s.error_type, s.error_message = "error", "TimeoutError", f"{tool}: upstream timed out after 30 s"
            s.events.append({"name": "exception", "time_ns": end, "attributes": {
                "exception.type": "TimeoutError", "exception.message": s.error_message}})
        elif r < 0.033:
            self.decision(s, "deny", "no-writes-outside-workspace", "tool", tool, "the path is outside the workspace")
            s.status, s.error_type, s.error_message = "error", "ActionDenied", f"{tool}: denied by policy"
        elif r < 0.035:
            self.decision(s, "require_approval", "risky-sql-needs-human", "tool", tool, "a DELETE needs a human")
        elif r < 0.2:
            self.decision(s, "allow", "default", "tool", tool, "default effect for read tools")
        self.spans.append(s)
        return s

    def handoff(self, parent: Span, agent: str, call_id: str, tool: str, depth: int) -> None:
        start = self.tick(0.2, 2)
        s = Span(trace_id=self.trace_id, span_id=self.span_id(), parent_span_id=parent.span_id,
                 name=f"execute_tool {tool}", start_ns=start, end_ns=start, kind="tool", status="unset",
                 session_id=self.session, agent_name=agent, tool_name=tool, tool_call_id=call_id,
                 tool_arguments='{"task": "look into it"}', service_name="bench-fleet", operation="execute_tool",
                 attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool,
                             "gen_ai.tool.call.id": call_id, "gen_ai.agent.name": agent})
        self.spans.append(s)
        self.agent(SUB_AGENT[tool], s.span_id, depth + 1, self.rng.randint(2, 10))
        s.end_ns = self.tick(0.1, 1)


def synthetic_trace(n_spans: int, *, seed: int = 7, start_ns: int | None = None) -> tuple[list[Span], list[dict[str, Any]]]:
    """A trace of exactly ``n_spans`` spans, and the non-allow decisions on it (for the decision log).

    The last tool span is where a loop breaker ended the session (terminate_session, an error).
    """
    rng = random.Random(seed)
    trace_id = f"{rng.getrandbits(128):032x}"
    t0 = start_ns if start_ns is not None else time.time_ns() - 3600 * 10**9
    b = _Builder(trace_id, rng, n_spans, f"sess_bench_{seed}", t0)
    root = b.agent("orchestrator", None, 0, 0)
    while len(b.spans) < n_spans:  # the loop stops one short when the budget ends mid-step
        b.tool(root, "orchestrator", f"call_{b.span_id()}", rng.choice(TOOLS))
    del b.spans[n_spans:]
    last_tool = next(s for s in reversed(b.spans) if s.kind == "tool")
    last_tool.events = [e for e in last_tool.events if e["name"] != "proctor.decision"]
    b.decisions = [d for d in b.decisions if d["span_id"] != last_tool.span_id]
    b.decision(last_tool, "terminate_session", "runaway-search", "loop", last_tool.tool_name or "",
               "the same call 3 times in the last 6 steps")
    last_tool.status, last_tool.error_type = "error", "SessionTerminated"
    last_tool.error_message = f"{last_tool.tool_name}: terminate_session by runaway-search"
    end = max(s.end_ns for s in b.spans)
    root.end_ns = max(root.end_ns, end)
    return b.spans, b.decisions


def write_trace(db_url: str, spans: list[Span], decisions: list[dict[str, Any]]) -> str:
    """Store ``spans`` and their decision-log rows in ``db_url`` (migrated first); returns the trace id."""
    from proctor.store import SpanStore, open_engine
    from proctor.store.decisions import DecisionLog, DecisionRecord

    engine = open_engine(db_url)
    try:
        store = SpanStore(engine)
        for i in range(0, len(spans), 5000):
            store.write(spans[i:i + 5000])
        trace_id = spans[0].trace_id
        DecisionLog(engine).append([DecisionRecord(
            decision_id=d["decision_id"], ts_ns=d["ts_ns"], trace_id=trace_id, span_id=d["span_id"],
            session_id=spans[0].session_id, agent=None, action="tool_call", target=d["target"],
            effect=d["effect"], rule_id=d["rule_id"], reasons=list(d["reasons"]), rule_kind=d["rule_kind"],
        ) for d in decisions])
    finally:
        engine.dispose()
    return trace_id


# --- the benchmark -----------------------------------------------------------------------------------
def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def wait_quiet(max_wait: float) -> float:
    """Wait (at most ``max_wait`` s) until other processes leave the CPU alone; returns the cores
    they used in the last second."""
    from _common import other_cpu_cores

    deadline = time.perf_counter() + max_wait
    while True:
        busy = other_cpu_cores(1.0)
        if busy < 0.15 or time.perf_counter() > deadline:
            return busy
        print(f"  waiting for a quiet machine ({busy:.2f} cores used by others) ...", file=sys.stderr)
        time.sleep(2.0)


def measure_size(n_spans: int, runs: int, chromium: str, workdir: Path, quiet_s: float = 0.0) -> dict[str, Any]:
    """Write ``runs`` traces of ``n_spans`` spans (each opened once, so every first view is a
    first view: the server keeps recently viewed outlines), serve them, and time them."""
    import httpx
    from playwright.sync_api import sync_playwright

    from _common import ServerProcess

    db = f"sqlite:///{workdir / f'console-{n_spans}.db'}"
    t = time.perf_counter()
    trace_ids = []
    for seed in range(1, runs + 1):
        spans, decisions = synthetic_trace(n_spans, seed=seed)
        trace_ids.append(write_trace(db, spans, decisions))
        del spans
    write_s = time.perf_counter() - t
    server = ServerProcess(db, workdir / f"server-{n_spans}.log").start()
    out: dict[str, Any] = {"spans": n_spans, "runs": runs, "write_s": round(write_s, 2)}
    try:
        out["others_cores"] = round(wait_quiet(quiet_s), 2)
        with httpx.Client(timeout=120) as client:
            client.get(server.url + "/")  # a running server: templates loaded, a connection open
            # server time for the data: a trace nobody opened yet (first), then the same again (kept)
            first, again, size = [], [], 0
            for tid in trace_ids[:1]:
                t = time.perf_counter()
                body = client.get(f"{server.url}/traces/{tid}.json").content
                first.append((time.perf_counter() - t) * 1000)
                size = len(body)
                for _ in range(3):
                    t = time.perf_counter()
                    client.get(f"{server.url}/traces/{tid}.json")
                    again.append((time.perf_counter() - t) * 1000)
            # trace_ids[0] is now kept by the server: the browser's first views use the others
            cold = trace_ids[1:] or trace_ids[:1]
        out.update(json_bytes=size, data_first_ms=round(_median(first)), data_kept_ms=round(_median(again)))
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            try:
                views = [_open_once(browser, server.url, tid) for tid in cold]
                repeat = [_open_once(browser, server.url, trace_ids[0]) for _ in range(max(1, runs - 1))]
            finally:
                browser.close()
        for label, rows in (("first", views), ("repeat", repeat)):
            out[f"{label}_rows_ms"] = round(_median([r["rows_ms"] for r in rows]))
            out[f"{label}_rows_inpage_ms"] = round(_median([r["rows_inpage_ms"] for r in rows]))
            out[f"{label}_click_inpage_ms"] = round(_median([r["click_inpage_ms"] for r in rows]))
            out[f"{label}_server_ms"] = round(_median([r["server_ms"] or 0 for r in rows]))
            # interactive: the first rows on screen, then a click shows the inspector (both in the page)
            out[f"{label}_interactive_ms"] = round(_median([r["rows_inpage_ms"] + r["click_inpage_ms"] for r in rows]))
            out[f"{label}_inspector_ms"] = round(_median([r["inspector_ms"] for r in rows]))
            out[f"{label}_worst_inspector_ms"] = round(max(r["inspector_ms"] for r in rows))
        out["dom_rows_max"] = max(r["dom_rows"] for r in views + repeat)
        out["last_span_reached"] = all(r["last_reached"] for r in views + repeat)
    finally:
        server.stop()
    return out


def _open_once(browser: Any, url: str, trace_id: str) -> dict[str, Any]:
    """One navigation in a fresh context (no cached assets): goto -> first rows -> click -> inspector.

    Waits poll on every animation frame (``polling="raf"``): a locator's wait polls every 500 ms
    after its first tries, which would blur the figures by up to half a second. The page records
    its own times too (``window.__proctorTrace``, performance.now() from navigation start): when
    the first rows were drawn and the frame that showed them, when the row was clicked and the
    frame that showed the inspector.
    """
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        t0 = time.perf_counter()
        page.goto(f"{url}/traces/{trace_id}")
        page.wait_for_function("() => window.__proctorTrace && window.__proctorTrace.firstFrameAt", polling="raf")
        rows_ms = (time.perf_counter() - t0) * 1000
        page.locator(".trow").nth(3).click()
        page.wait_for_function("() => window.__proctorTrace.inspectorFrameAt", polling="raf")
        inspector_ms = (time.perf_counter() - t0) * 1000
        stamps = page.evaluate("window.__proctorTrace")
        server_ms = page.evaluate("""() => { const e = performance.getEntriesByType('resource')
            .find(r => r.name.endsWith('.json') && r.serverTiming.length); return e ? e.serverTiming[0].duration : null; }""")
        page.evaluate("document.getElementById('trace-scroll').scrollTop = 1e9")
        page.locator(f'.trow[data-span-id="{stamps["lastId"]}"]').wait_for()
        dom_rows = page.locator(".trow").count()
        return {"rows_ms": rows_ms, "inspector_ms": inspector_ms, "rows_inpage_ms": stamps["firstFrameAt"],
                "server_ms": server_ms,
                "click_inpage_ms": stamps["inspectorFrameAt"] - stamps["clickAt"],
                "dom_rows": dom_rows, "last_reached": True}
    finally:
        context.close()


COLUMNS = (
    ("spans", "spans", "{:,}"),
    ("json_bytes", "JSON bytes", "{:,}"),
    ("data_first_ms", "data", "{}"),
    ("data_kept_ms", "data kept", "{}"),
    ("first_server_ms", "server", "{}"),
    ("first_rows_inpage_ms", "rows", "{}"),
    ("first_click_inpage_ms", "click", "{}"),
    ("first_interactive_ms", "interactive", "{}"),
    ("first_inspector_ms", "goto..inspector", "{}"),
    ("first_worst_inspector_ms", "worst", "{}"),
    ("repeat_interactive_ms", "interactive again", "{}"),
    ("repeat_inspector_ms", "goto..inspector again", "{}"),
    ("dom_rows_max", "DOM rows", "{}"),
    ("others_cores", "others' cores", "{}"),
)


def print_table(results: list[dict[str, Any]]) -> None:
    heads = [h for _, h, _ in COLUMNS]
    cells = [[fmt.format(r[k]) for k, _, fmt in COLUMNS] for r in results]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads)]
    print("  ".join(h.rjust(w) for h, w in zip(heads, widths, strict=True)))
    for c in cells:
        print("  ".join(v.rjust(w) for v, w in zip(c, widths, strict=True)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,20000,50000", help="span counts, comma separated")
    ap.add_argument("--runs", type=int, default=4, help="first views per size (each on a trace of its own)")
    ap.add_argument("--chromium", default=os.environ.get("PROCTOR_TEST_CHROMIUM", "/usr/bin/chromium"))
    ap.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                    help="before each size, wait up to SECONDS until other processes use < 0.15 cores")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).parent))
    from _common import machine_info

    info = machine_info()
    results = []
    with tempfile.TemporaryDirectory(prefix="proctor-bench-console-") as tmp:
        for size in (int(x) for x in args.sizes.split(",") if x.strip()):
            results.append(measure_size(size, max(1, args.runs), args.chromium, Path(tmp), args.wait_quiet))
            if not args.json:
                print(f"  {size:,} spans done: {results[-1]}", file=sys.stderr)
    if args.json:
        print(json.dumps({"machine": info, "results": results}, indent=2))
        return 0
    print(f"# trace view, time to interactive  ({info['date']}, {info['nproc']} cores, {info['cpu_model']}, "
          f"load {info['loadavg_1m']}, Chromium {args.chromium})")
    print("# ms. data: server time for /traces/{id}.json (httpx) for a trace not opened before; kept: opened before.")
    print("# In Chromium, a fresh context each time, first views of traces not opened before (again: one opened")
    print("# before): server = the outline's Server-Timing in that page load; rows = the first frame with rows,")
    print("# from navigation start; click = row click to the frame showing the inspector; interactive = rows +")
    print("# click; goto..inspector = the same timed from Python (page.goto, waits polling every frame, Playwright's click).")
    print_table(results)
    ok = all(r["last_span_reached"] and r["dom_rows_max"] < 300 for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
