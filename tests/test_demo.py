"""`proctor demo`: a server and a SIMULATED fleet, seen the way a user sees them afterwards.

The demo runs once per module, in this process, against a temp SQLite database; the checks go
through the REST API of a fresh server on that database and through the CLI.
"""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner

import proctor.sdk
from proctor.cli.main import app
from proctor.demo.crm import CRM
from proctor.demo.fleet import Fleet, RunRecord
from proctor.demo.run import DemoError, DemoSummary, run_demo
from proctor.server.run import start_in_thread

from conftest import free_port

AGENTS = ("support-triage", "refund-agent", "kb-researcher")


@dataclass
class Demo:
    db: str
    summary: DemoSummary
    output: str

    def run(self, scenario: str) -> RunRecord:
        return next(r for r in self.summary.records if r.scenario == scenario)


def _run(tmp: Path, runs: int) -> Demo:
    db = f"sqlite:///{tmp / 'proctor.db'}"
    out = io.StringIO()
    try:
        summary = run_demo(port=free_port(), database_url=db, runs=runs, serve_after=False,
                           console=Console(file=out, width=200))
    finally:
        proctor.sdk.shutdown()  # idempotent; the SDK is process-wide
    return Demo(db, summary, out.getvalue())


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    return _run(tmp_path_factory.mktemp("demo"), runs=6)


@pytest.fixture(scope="module")
def api(demo: Demo) -> Iterator[httpx.Client]:
    port = free_port()
    server, thread = start_in_thread(port=port, database_url=demo.db)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(10)


def _trace(api: httpx.Client, trace_id: str) -> dict[str, Any]:
    r = api.get(f"/api/traces/{trace_id}")
    assert r.status_code == 200, r.text
    return r.json()


def _spans(doc: dict[str, Any], **match: Any) -> list[dict[str, Any]]:
    return [s for s in doc["spans"] if all(s.get(k) == v for k, v in match.items())]


def test_the_console_says_it_is_simulated_and_shows_commands_with_a_real_trace_id(demo: Demo) -> None:
    out = demo.output
    assert "SIMULATED agent fleet" in out and "scripted fake" in out
    assert f"{demo.summary.url}/api/traces" in out
    shown = [line.split("proctor traces show ", 1)[1].split()[0] for line in out.splitlines()
             if "proctor traces show " in line]
    assert shown and all(any(t.startswith(s) for t in demo.summary.trace_ids) for s in shown)
    assert f"--db {demo.db}" in out
    assert f"curl {demo.summary.url}/api/traces" in out


def test_every_run_reached_the_store_and_every_agent_has_traces(demo: Demo, api: httpx.Client) -> None:
    listed = api.get("/api/traces", params={"limit": 1000}).json()["traces"]
    assert {t["trace_id"] for t in listed} == set(demo.summary.trace_ids)
    assert len(listed) > len(demo.summary.records)  # some runs are conversations of several turns
    assert {t["service_name"] for t in listed} == {"proctor-demo-fleet"}
    for agent in AGENTS:
        assert api.get("/api/traces", params={"agent": agent}).json()["traces"], agent
    # sub-agents only ever run inside a support-triage trace; the researcher also runs alone
    assert {t["agent_name"] for t in listed} == {"support-triage", "kb-researcher"}


def test_a_failed_agent_run_ends_in_an_error_with_the_tool_errors_that_caused_it(
    demo: Demo, api: httpx.Client
) -> None:
    run = demo.run("crm_shard_down")
    assert run.error and run.error.startswith("AgentFailed: lookup_customer failed 3 times")
    errors = {t["trace_id"] for t in api.get("/api/traces", params={"status": "error"}).json()["traces"]}
    assert run.trace_ids[0] in errors
    doc = _trace(api, run.trace_ids[0])
    root = doc["spans"][0]
    assert (root["kind"], root["status"], root["error_type"]) == ("agent", "error", "AgentFailed")
    lookups = _spans(doc, tool_name="lookup_customer")
    assert [s["error_type"] for s in lookups] == ["UpstreamTimeout"] * 3
    assert "simulated timeout" in lookups[0]["error_message"]


def test_a_flaky_tool_is_retried_and_the_run_succeeds(demo: Demo, api: httpx.Client) -> None:
    run = demo.run("order_status_flaky_crm")
    assert run.error is None and run.tool_errors == 1
    lookups = _spans(_trace(api, run.trace_ids[0]), tool_name="lookup_customer")
    assert [s["status"] for s in lookups] == ["error", "ok"]


def test_a_refused_refund_is_a_real_error_from_the_crm(demo: Demo, api: httpx.Client) -> None:
    run = demo.run("refund_refused")
    doc = _trace(api, run.trace_ids[0])
    [refund] = _spans(doc, tool_name="issue_refund")
    assert (refund["status"], refund["error_type"]) == ("error", "RefundRefused")
    assert doc["spans"][0]["status"] != "error"  # the agent handled it: it emailed the customer
    [email] = _spans(doc, tool_name="send_email")
    assert email["status"] == "ok"


def test_llm_spans_follow_the_genai_conventions_are_marked_simulated_and_priced(
    demo: Demo, api: httpx.Client
) -> None:
    doc = _trace(api, demo.run("refund_damaged_item").trace_ids[0])
    llm = _spans(doc, kind="llm")
    assert len(llm) >= 6
    assert all(s["cost_usd"] > 0 and s["input_tokens"] > 0 and s["output_tokens"] > 0 for s in llm)
    assert {s["model"] for s in llm} <= {"gpt-4o-mini-2024-07-18", "claude-3-5-haiku-20241022"}
    assert [s["input_tokens"] for s in llm[:3]] == sorted(s["input_tokens"] for s in llm[:3])  # context grows
    full = api.get(f"/api/spans/{llm[0]['span_id']}").json()
    assert full["cost_source"] == "genai-prices"
    attrs = full["attributes"]
    assert attrs["proctor.simulated"] is True and attrs["gen_ai.operation.name"] == "chat"
    assert full["name"] == f"chat {attrs['gen_ai.request.model']}"
    out = json.loads(attrs["gen_ai.output.messages"])
    assert out[0]["role"] == "assistant" and out[0]["parts"][-1]["type"] == "tool_call"
    assert json.loads(attrs["gen_ai.input.messages"])[0]["role"] == "user"
    research = _trace(api, demo.run("research_briefing").trace_ids[0])
    assert any(s["attributes"].get("gen_ai.usage.cache_read.input_tokens")
               for s in (api.get(f"/api/spans/{x['span_id']}").json() for x in _spans(research, kind="llm")))


def test_every_tool_span_links_to_the_llm_call_that_asked_for_it(demo: Demo, api: httpx.Client) -> None:
    doc = _trace(api, demo.run("refund_damaged_item").trace_ids[0])
    by_id = {s["span_id"]: s for s in doc["spans"]}
    links = [ln for ln in doc["links"] if ln["type"] == "tool_call"]
    tools = _spans(doc, kind="tool")
    assert len(links) == len(tools) >= 8
    for ln in links:
        llm, tool = by_id[ln["from"]], by_id[ln["to"]]
        assert llm["kind"] == "llm" and tool["kind"] == "tool"
        assert tool["tool_call_id"] == ln["tool_call_id"]
        assert any(c["id"] == ln["tool_call_id"] and c["name"] == tool["tool_name"] for c in llm["tool_calls"])


def test_sub_agents_run_inside_the_triage_trace_and_are_spawned_by_it(demo: Demo, api: httpx.Client) -> None:
    doc = _trace(api, demo.run("refund_damaged_item").trace_ids[0])
    by_id = {s["span_id"]: s for s in doc["spans"]}
    root = doc["spans"][0]
    assert root["name"] == "invoke_agent support-triage"
    spawned = {by_id[ln["from"]]["agent_name"]: ln for ln in doc["links"] if ln["type"] == "spawned_by"}
    assert set(spawned) == {"refund-agent", "kb-researcher"}
    for agent, tool in (("refund-agent", "transfer_to_refund_agent"), ("kb-researcher", "ask_kb_researcher")):
        sub = by_id[spawned[agent]["from"]]
        assert spawned[agent]["to"] == root["span_id"]
        assert sub["name"] == f"invoke_agent {agent}" and sub["session_id"] == root["session_id"]
        assert by_id[sub["parent_span_id"]]["tool_name"] == tool  # agents as tools
    [refund] = _spans(doc, tool_name="issue_refund")
    assert refund["agent_name"] == "refund-agent" and refund["status"] == "ok"


def test_sessions_group_the_turns_of_a_conversation(demo: Demo, api: httpx.Client) -> None:
    run = demo.run("clarify_then_refund")
    assert len(run.trace_ids) == 3
    doc = api.get(f"/api/sessions/{run.session_id}").json()
    assert doc["trace_count"] == 3 and [t["trace_id"] for t in doc["traces"]] == run.trace_ids
    sessions = api.get("/api/sessions", params={"limit": 100}).json()["sessions"]
    assert len(sessions) == len(demo.summary.records)
    assert sorted(s["trace_count"] for s in sessions) == sorted(len(r.trace_ids) for r in demo.summary.records)


def test_the_cli_lists_and_shows_the_demo_traces(demo: Demo) -> None:
    runner = CliRunner()
    ls = runner.invoke(app, ["traces", "ls", "--json", "--db", demo.db, "--limit", "100"])
    assert ls.exit_code == 0, ls.output
    assert {t["trace_id"] for t in json.loads(ls.stdout)["traces"]} == set(demo.summary.trace_ids)
    trace_id = demo.run("refund_damaged_item").trace_ids[0]
    show = runner.invoke(app, ["traces", "show", trace_id[:12], "--db", demo.db])
    assert show.exit_code == 0, show.output
    for text in ("invoke_agent support-triage", "invoke_agent refund-agent", "spawned by",
                 "execute_tool issue_refund", "chat gpt-4o-mini", "⇠"):
        assert text in show.stdout, text


def test_a_taken_port_is_refused_with_a_clear_message() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(DemoError, match=rf"port {port} .* already in use.*--port"):
            run_demo(port=port, runs=1, serve_after=False, console=Console(file=io.StringIO()))


def test_the_demo_runs_again_in_the_same_process(demo: Demo, tmp_path: Path) -> None:
    again = _run(tmp_path, runs=2)  # the SDK was shut down after the first demo and initialised anew
    assert len(again.summary.trace_ids) == 3
    r = CliRunner().invoke(app, ["traces", "ls", "--json", "--db", again.db])
    assert {t["trace_id"] for t in json.loads(r.stdout)["traces"]} == set(again.summary.trace_ids)


def test_the_fleet_is_deterministic_given_a_seed(tmp_path: Path) -> None:
    def play(name: str) -> tuple[list[tuple[Any, ...]], list[tuple[str, str, str]]]:
        crm = CRM(tmp_path / f"{name}.db", latency=False)
        fleet = Fleet(crm, seed=11, latency=False)
        runs = [fleet.run_next() for _ in range(9)]
        outbox = [(m["to_addr"], m["subject"], m["body"]) for m in crm.outbox()]
        crm.close()
        return [(r.scenario, r.agent, r.version, r.user, r.note, r.tool_errors, r.error) for r in runs], outbox

    first, second = play("a"), play("b")
    assert first == second
    assert len({r[0] for r in first[0]}) == len(Fleet.SCENARIOS)  # the first runs cover every scenario
