"""`proctor demo`: a server and a SIMULATED fleet, seen the way a user sees them afterwards.

The demo runs once per module, in this process, against a temp SQLite database, for one round
of scenarios (the first runs play each scenario once, the governance ones included); the checks
go through the REST API of a fresh server on that database, through the CLI, and through the
stores the guard writes (decision log, approvals, budgets) and the demo's CRM.
"""

from __future__ import annotations

import io
import json
import re
import socket
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from rich.console import Console
from sqlalchemy import Engine, select
from typer.testing import CliRunner

import proctor.sdk
from proctor.cli.main import app
from proctor.demo.crm import CRM
from proctor.demo.fleet import (
    AGENTS_DIR,
    ATTACKER_ADDRESS,
    RELEASES,
    SUPPORT_TRIAGE,
    SUPPORT_TRIAGE_CANARY,
    TEST_CARDS,
    Fleet,
    RunRecord,
)
from proctor.demo.governance import SUPERVISOR, Supervisor, demo_guard
from proctor.demo.run import RELEASE_MANAGER, DemoError, DemoSummary, demo_keys, release_fleet, run_demo
from proctor.registry.manifest import load_manifest, manifest_files
from proctor.server.run import start_in_thread
from proctor.store import ApiKeys
from proctor.store.approvals import ApprovalStore
from proctor.store.budgets import BudgetLedger
from proctor.store.decisions import DecisionLog
from proctor.store.engine import open_engine
from proctor.store.killswitches import KillSwitches
from proctor.store.registry import RegistryStore
from proctor.store.schema import spans as spans_t

from conftest import free_port

AGENTS = ("support-triage", "refund-agent", "kb-researcher")
CARD_DIGITS = [re.sub(r"\D", "", c) for c in TEST_CARDS]


@dataclass
class Demo:
    db: str
    summary: DemoSummary
    output: str

    def run(self, scenario: str) -> RunRecord:
        return next(r for r in self.summary.records if r.scenario == scenario)

    def decisions(self, run: RunRecord) -> list[dict[str, Any]]:
        """The run's session in the decision log, oldest first."""
        engine = open_engine(self.db)
        try:
            return DecisionLog(engine).list(session_id=run.session_id, limit=10_000)[::-1]
        finally:
            engine.dispose()

    def crm(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        db = sqlite3.connect(self.summary.crm_path)
        db.row_factory = sqlite3.Row
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()


def _refused(rows: list[dict[str, Any]]) -> list[tuple[str, str, str, str | None]]:
    """(action, target, effect, rule) of every enforced decision that did more than allow."""
    return [(r["action"], r["target"], r["effect"], r["rule_id"]) for r in rows
            if r["enforced"] and r["effect"] != "allow"]


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
    # one round: with the default seed the first runs play every scenario once
    return _run(tmp_path_factory.mktemp("demo"), runs=len(Fleet.SCENARIOS))


@pytest.fixture(scope="module")
def api(demo: Demo) -> Iterator[httpx.Client]:
    port = free_port()
    server, thread = start_in_thread(port=port, database_url=demo.db)
    try:
        # the demo turns auth on: read with its DEMO admin key
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10,
                          headers={"authorization": f"Bearer {demo.summary.keys['you']}"}) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(10)


def _trace(api: httpx.Client, trace_id: str) -> dict[str, Any]:
    r = api.get(f"/api/traces/{trace_id}")
    assert r.status_code == 200, r.text
    return r.json()


def _held(api: httpx.Client, span: dict[str, Any]) -> bool:
    """A tool call held for a human: recorded as such, not as a failure."""
    full = api.get(f"/api/spans/{span['span_id']}").json()
    attrs = full["attributes"] if isinstance(full["attributes"], dict) else json.loads(full["attributes"])
    return span["status"] == "ok" and span["error_type"] is None and attrs.get("proctor.tool.held_for_approval") is True


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
    assert f"curl -H 'Authorization: Bearer {demo.summary.keys['you']}' {demo.summary.url}/api/traces" in out


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


def test_a_refused_refund_is_held_refused_by_the_supervisor_and_never_runs(demo: Demo, api: httpx.Client) -> None:
    run = demo.run("refund_refused")  # this seed: the order was refunded in full earlier in the demo
    doc = _trace(api, run.trace_ids[0])
    [refund] = _spans(doc, tool_name="issue_refund")  # held, and never run again
    assert _held(api, refund)
    [(approval_id, status)] = run.approvals.items()
    assert status == "denied"
    engine = open_engine(demo.db)
    approval = ApprovalStore(engine).get(approval_id)
    engine.dispose()
    assert approval.decided_by == SUPERVISOR and "already refunded in full" in (approval.decision_reason or "")
    assert doc["spans"][0]["status"] != "error"  # the agent handled it: it emailed the customer
    [email] = _spans(doc, tool_name="send_email")
    assert email["status"] == "ok"
    order_id = approval.arguments["order_id"]
    assert demo.crm("SELECT * FROM outbox WHERE body LIKE ?",
                    f"%could not refund order {order_id}: a supervisor declined it: {order_id} was already refunded%")


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
    held, ran = _spans(doc, tool_name="issue_refund")  # over $50: held for a human, then run once approved
    assert _held(api, held) and held["tool_call_id"] == ran["tool_call_id"]
    assert ran["agent_name"] == "refund-agent" and ran["status"] == "ok"


def test_sessions_group_the_turns_of_a_conversation(demo: Demo, api: httpx.Client) -> None:
    run = demo.run("clarify_then_refund")
    assert len(run.trace_ids) == 3
    doc = api.get(f"/api/sessions/{run.session_id}").json()
    assert doc["trace_count"] == 3 and [t["trace_id"] for t in doc["traces"]] == run.trace_ids
    sessions = api.get("/api/sessions", params={"limit": 100}).json()["sessions"]
    assert len(sessions) == len(demo.summary.records)
    assert sorted(s["trace_count"] for s in sessions) == sorted(len(r.trace_ids) for r in demo.summary.records)
    assert len(demo.run("research_over_budget").trace_ids) > 1  # a research conversation, until the budget


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


def test_the_demo_turns_auth_on_with_labelled_demo_keys_and_prints_a_login_link(demo: Demo, api: httpx.Client) -> None:
    keys = demo.summary.keys
    assert set(keys) == {"you", "demo-fleet"}
    assert httpx.get(f"{api.base_url}/api/traces", timeout=10).status_code == 401  # no key, no data
    fleet = {"authorization": f"Bearer {keys['demo-fleet']}"}
    assert httpx.get(f"{api.base_url}/api/traces", headers=fleet, timeout=10).status_code == 200
    assert httpx.get(f"{api.base_url}/api/keys", headers=fleet, timeout=10).status_code == 403  # an operator
    listed = {k["name"]: k for k in api.get("/api/keys").json()["keys"]}
    assert {n: k["role"] for n, k in listed.items()} == {"demo-fleet": "operator", "you": "admin"}
    assert listed["demo-fleet"]["last_used_ns"]  # the fleet's SDK sent its key
    assert "DEMO API keys" in demo.output
    assert f"{demo.summary.url}/login#key={keys['you']}" in demo.output
    saved = Path(demo.summary.keys_path)
    assert saved == Path(demo.db.removeprefix("sqlite:///")).parent / "demo-keys.json"
    assert saved.stat().st_mode & 0o777 == 0o600
    doc = json.loads(saved.read_text())
    assert {n: (k["key"], k["role"]) for n, k in doc["keys"].items()} == {
        "you": (keys["you"], "admin"), "demo-fleet": (keys["demo-fleet"], "operator")}
    assert doc["keys"]["you"]["login_url"] == demo.summary.login_url and "DEMO" in doc["note"]


def test_the_demo_reuses_its_saved_keys_and_replaces_lost_ones(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'proctor.db'}")
    try:
        path = tmp_path / "demo-keys.json"
        first = demo_keys(engine, path, "http://127.0.0.1:1")
        assert demo_keys(engine, path, "http://127.0.0.1:2") == first  # the next demo: same keys
        path.unlink()  # the secrets are lost: only hashes are in the database
        again = demo_keys(engine, path, "http://127.0.0.1:3")
        assert set(again) == set(first) and not set(again.values()) & set(first.values())
        store = ApiKeys(engine)
        assert all(store.verify(s) is None for s in first.values())  # the lost ones were revoked
        assert sorted(k.name for k in store.active()) == ["demo-fleet", "you"]
    finally:
        engine.dispose()


def test_the_fleet_is_deterministic_given_a_seed(tmp_path: Path) -> None:
    def play(name: str) -> tuple[list[tuple[Any, ...]], list[tuple[str, str, str]]]:
        crm = CRM(tmp_path / f"{name}.db", latency=False)
        fleet = Fleet(crm, seed=11, latency=False)
        runs = [fleet.run_next() for _ in range(len(Fleet.SCENARIOS) + 2)]
        outbox = [(m["to_addr"], m["subject"], m["body"]) for m in crm.outbox()]
        crm.close()
        return [(r.scenario, r.agent, r.version, r.user, r.note, r.tool_errors, r.error) for r in runs], outbox

    first, second = play("a"), play("b")
    assert first == second
    # the first runs cover every scenario
    assert {r[0] for r in first[0][:len(Fleet.SCENARIOS)]} == {name for name, _ in Fleet.SCENARIOS}
    # without a guard nothing stops the injected instruction: the demo's point
    assert any(to == ATTACKER_ADDRESS for to, _, _ in first[1])


# -- the registry: the demo's agents ship as manifests ------------------------------------------


def _cli(*args: str) -> Any:
    r = CliRunner().invoke(app, [*args, "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_the_fleet_runs_what_its_manifests_say(tmp_path: Path) -> None:
    files = manifest_files(AGENTS_DIR)
    assert [f.relative_to(AGENTS_DIR).as_posix() for f in files] == [
        "kb-researcher/agent.yaml", "refund-agent/agent.yaml", "support-triage/agent.yaml",
        "support-triage/canary.agent.yaml"]
    crm = CRM(tmp_path / "crm.db", latency=False)
    fleet = Fleet(crm, latency=False)
    crm.close()
    released = {spec.version_id: spec for spec, _ in RELEASES}
    for f in files:
        v = load_manifest(f)
        m = v.manifest
        spec = released.pop(v.version_id)  # every manifest is released, and is the spec the fleet runs
        assert (spec.name, spec.version, spec.model, spec.description) == (v.name, v.label, m["model"]["id"],
                                                                           m["description"])
        assert {"temperature": spec.temperature, "max_tokens": spec.max_tokens} == m["model"]["parameters"]
        assert spec.instructions == m["prompts"]["system"]["content"].strip()
        assert spec.tools == tuple(t["name"] for t in m["tools"])
        catalogue = {name: entry["side_effect"] for entry in m["policy"]["document"]["spec"]["tools"]
                     for name in ([entry["name"]] if isinstance(entry["name"], str) else entry["name"])}
        for t in m["tools"]:
            # the input schema and description are what the model is sent (generated once from the
            # signature with fleet.tool_definition); the side effect is the policy's
            sent = fleet.definitions[t["name"]]
            assert (t["description"], t["input_schema"]) == (sent["description"], sent["parameters"]), t["name"]
            assert t["side_effect"] == catalogue[t["name"]], t["name"]
            assert t["output_schema"] is not None
        module, _, attr = m["entrypoint"].partition(":")
        target: Any = __import__(module, fromlist=["_"])
        for part in attr.split("."):
            target = getattr(target, part)
        assert callable(target)
        assert m["policy"]["name"] == "demo-support" and m["gates"] == {
            "approvals": [{"role": "approver", "count": 1}], "policy_lint": True}
    assert released == {}


def test_the_demo_registers_its_agents_and_deploys_the_stable_triage_to_prod_and_the_canary_to_staging(
    demo: Demo,
) -> None:
    agents = {a["name"]: a for a in _cli("agent", "ls", "--db", demo.db)}
    assert set(agents) == set(AGENTS)
    assert {n: a["versions"] for n, a in agents.items()} == {"support-triage": 2, "refund-agent": 1,
                                                               "kb-researcher": 1}
    expected: dict[str, dict[str, str]] = {}
    for spec, env in RELEASES:
        expected.setdefault(spec.name, {})[env] = spec.version_id[:12]
    assert {n: a["deployed"] for n, a in agents.items()} == expected
    assert expected["support-triage"] == {"prod": SUPPORT_TRIAGE.version_id[:12],
                                          "staging": SUPPORT_TRIAGE_CANARY.version_id[:12]}
    assert {v["label"] for v in _cli("agent", "ls", "support-triage", "--db", demo.db)} == {"1.4.0", "1.5.0-rc.1"}
    # each deployment went through the manifest's gates, signed off by the simulated release manager
    engine = open_engine(demo.db)
    try:
        moves = RegistryStore(engine).history(limit=100)
    finally:
        engine.dispose()
    releases, (rollback, promotion) = moves[2:], moves[:2]  # newest first
    assert sorted((m.agent, m.environment) for m in releases) == sorted((s.name, env) for s, env in RELEASES)
    for m in releases:
        assert (m.status, m.action, m.reason) == ("applied", "deploy", "demo release")
    for m in (*releases, promotion):
        assert {g["gate"]: g["passed"] for g in m.gates} == {"approvals:approver": True, "policy_lint": True}
        assert RELEASE_MANAGER in next(g["detail"] for g in m.gates if g["gate"] == "approvals:approver")
    # mid-run, the simulated release manager promoted the canary to prod and later rolled it back
    assert (promotion.action, promotion.environment, promotion.version_id) == (
        "deploy", "prod", SUPPORT_TRIAGE_CANARY.version_id)
    assert (rollback.action, rollback.status, rollback.version_id, rollback.by) == (
        "rollback", "applied", SUPPORT_TRIAGE.version_id, RELEASE_MANAGER)
    # the console says so, and how to look
    out = demo.output
    assert ("Registry (demo/agents): 3 agents · 4 versions (4 new) · prod: support-triage 1.4.0, refund-agent 2.1.3, "
            "kb-researcher 0.9.2 · staging: support-triage 1.5.0-rc.1") in out
    for hint in ("proctor agent ls", "proctor agent diff support-triage@1.4.0 support-triage@1.5.0-rc.1",
                 "proctor agent inventory --tool issue_refund --env prod"):
        assert f"{hint} --db {demo.db}" in out
    table = CliRunner().invoke(app, ["agent", "ls", "--db", demo.db])
    assert all(name in table.stdout for name in AGENTS)
    inventory = _cli("agent", "inventory", "--tool", "issue_refund", "--env", "prod", "--db", demo.db)
    assert [(v["name"], v["label"]) for v in inventory["versions"]] == [("refund-agent", "2.1.3")]


def test_a_promotion_and_a_rollback_mid_run_reach_the_running_fleet_through_the_registry(
    demo: Demo, api: httpx.Client
) -> None:
    """The fleet's sessions ask the registry (over HTTP: the demo's SDK sends to the server) which
    version is live: the prod triage runs between the scripted promotion and the rollback play
    the canary, the others 1.4.0; every span says which, by label and content hash."""
    out = demo.output
    assert f"release: {RELEASE_MANAGER} promoted support-triage 1.5.0-rc.1 to prod" in out
    assert f"rollback: {RELEASE_MANAGER} rolled support-triage in prod back to 1.4.0" in out
    promote_at, rollback_at = len(Fleet.SCENARIOS) // 3, 2 * len(Fleet.SCENARIOS) // 3
    hashes = {spec.version: spec.version_id for spec, _ in RELEASES}
    played = []
    for r in demo.summary.records:
        if r.agent != "support-triage":
            continue
        in_canary_window = promote_at < r.index <= rollback_at
        expected = "1.5.0-rc.1" if r.env == "staging" or in_canary_window else "1.4.0"
        assert r.version == expected, (r.index, r.env)
        played.append((r.env, r.version))
        for trace_id in r.trace_ids:
            root = api.get(f"/api/spans/{_trace(api, trace_id)['spans'][0]['span_id']}").json()
            assert (root["agent_version"], root["agent_version_hash"]) == (r.version, hashes[r.version])
            assert root["attributes"]["proctor.env"] == r.env
    assert ("prod", "1.5.0-rc.1") in played and ("prod", "1.4.0") in played


def test_the_canary_differs_from_the_stable_triage_in_its_model_one_prompt_line_and_its_label(demo: Demo) -> None:
    doc = _cli("agent", "diff", "support-triage@1.4.0", "support-triage@1.5.0-rc.1", "--db", demo.db)
    assert (doc["a"], doc["b"]) == (SUPPORT_TRIAGE.version_id, SUPPORT_TRIAGE_CANARY.version_id)
    changes = {(c["area"], c["kind"], c["path"]): (c["before"], c["after"]) for c in doc["changes"]}
    prompt = changes.pop(("prompt", "prompt_changed", "prompts.system"))
    assert changes == {
        ("model", "model_changed", "model.id"): ("gpt-4o-mini", "claude-3-5-haiku"),
        ("model", "model_changed", "model.provider"): ("openai", "anthropic"),
        ("metadata", "label_changed", "label"): ("1.4.0", "1.5.0-rc.1"),
    }
    assert prompt[0] != prompt[1]
    [detail] = [c["detail"] for c in doc["changes"] if c["area"] == "prompt"]
    added = [line for line in detail.splitlines() if line.startswith("+") and not line.startswith("+++")]
    removed = [line for line in detail.splitlines() if line.startswith("-") and not line.startswith("---")]
    assert (added, removed) == (["+Tell the customer what happens next and when they will hear from us."], [])


def test_syncing_the_packaged_agents_again_changes_nothing(demo: Demo) -> None:
    r = CliRunner().invoke(app, ["agent", "sync", str(AGENTS_DIR), "--db", demo.db])
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == [f"= {spec.name} {spec.version_id[:12]} unchanged" for spec, _ in
                                     sorted(RELEASES, key=lambda sr: (sr[0].name, sr[0] is SUPPORT_TRIAGE_CANARY))]
    # the demo's own release step is a no-op on a database that already has it: no new versions, no moves
    engine = open_engine(demo.db)
    try:
        moves = len(RegistryStore(engine).history(limit=1000))
        again = release_fleet(engine)
        assert (again.versions, again.new, again.problems) == (4, 0, [])
        assert len(RegistryStore(engine).history(limit=1000)) == moves
    finally:
        engine.dispose()


def test_a_registry_that_cannot_take_the_agents_is_reported_and_the_demo_goes_on(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        figures = release_fleet(engine, tmp_path)  # no manifests here
    finally:
        engine.dispose()
    assert (figures.versions, figures.live) == (0, {})
    assert len(figures.problems) == 1 and "no agent manifests" in figures.problems[0]


def test_recorded_tool_calls_fit_the_schemas_their_agent_version_pins(demo: Demo) -> None:
    pinned = {(spec.name, spec.version): {t["name"]: t for t in load_manifest(
        AGENTS_DIR / spec.name / ("canary.agent.yaml" if spec is SUPPORT_TRIAGE_CANARY else "agent.yaml")
    ).manifest["tools"]} for spec, _ in RELEASES}
    engine = open_engine(demo.db)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(spans_t.c.agent_name, spans_t.c.agent_version, spans_t.c.tool_name,
                                       spans_t.c.tool_arguments, spans_t.c.tool_result, spans_t.c.status,
                                       spans_t.c.attributes).where(spans_t.c.kind == "tool")).all()
    finally:
        engine.dispose()
    validators: dict[str, jsonschema.Draft202012Validator] = {}

    def validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
        key = json.dumps(schema, sort_keys=True)
        return validators.setdefault(key, jsonschema.Draft202012Validator(schema))

    checked: set[str] = set()
    for agent, version, tool, arguments, result, status, attributes in rows:
        t = pinned[(agent, version)][tool]  # only the tools its manifest lists
        validator(t["input_schema"]).validate(json.loads(arguments))
        held = json.loads(attributes).get("proctor.tool.held_for_approval")
        if status == "ok" and not held:
            validator(t["output_schema"]).validate(json.loads(result))
            checked.add(tool)
    # every tool with a result in one round (transfer_to_support_triage only bounces into a loop breaker)
    assert checked == {"get_ticket", "lookup_customer", "list_orders", "send_email", "ask_kb_researcher",
                       "transfer_to_refund_agent", "issue_refund", "search_kb"}


# -- governance: every control leaves its trace ------------------------------------------------


def test_a_runaway_search_is_cut_off_by_the_loop_rule(demo: Demo, api: httpx.Client) -> None:
    run = demo.run("runaway_search")
    assert run.error is None and run.stopped and run.stopped.startswith("session terminated by runaway-search")
    assert _refused(demo.decisions(run)) == [("tool_call", "search_kb", "terminate_session", "runaway-search")]
    doc = _trace(api, run.trace_ids[0])
    searches = _spans(doc, tool_name="search_kb")
    queries = {api.get(f"/api/spans/{s['span_id']}").json()["attributes"]["gen_ai.tool.call.arguments"]
               for s in searches}
    assert len(queries) == 1  # the same search each time
    assert [s["status"] for s in searches] == ["ok", "ok", "error"]  # the third one never ran
    assert searches[-1]["error_type"] == "SessionTerminated"
    assert doc["spans"][0]["error_type"] == "SessionTerminated"


def test_a_refund_over_the_limit_runs_only_after_a_human_approved_it(demo: Demo, api: httpx.Client) -> None:
    run = demo.run("refund_damaged_item")
    rows = demo.decisions(run)
    [(approval_id, status)] = run.approvals.items()
    assert status == "approved"
    refund_rows = [(r["effect"], r["rule_id"]) for r in rows if r["target"] == "issue_refund" and r["enforced"]]
    assert refund_rows == [("require_approval", "refunds-over-50"), ("allow", f"approval:{approval_id}")]
    engine = open_engine(demo.db)
    approval = ApprovalStore(engine).get(approval_id)
    engine.dispose()
    assert approval.status == "consumed" and approval.decided_by == SUPERVISOR  # approved, and used once
    held, ran = _spans(_trace(api, run.trace_ids[0]), tool_name="issue_refund")
    assert _held(api, held)
    assert approval.decided_ns is not None and held["end_ns"] <= approval.decided_ns <= ran["start_ns"]
    order_id = approval.arguments["order_id"]
    assert [r["amount_usd"] for r in demo.crm("SELECT amount_usd FROM refunds WHERE order_id = ?", order_id)] \
        == [approval.arguments["amount_usd"]]  # refunded exactly once


def test_a_refund_above_the_supervisor_limit_stays_pending_and_is_not_executed(demo: Demo, api: httpx.Client) -> None:
    run = demo.run("refund_over_limit")
    assert run.error is None and run.stopped is None
    [(approval_id, status)] = run.approvals.items()
    assert status == "pending"
    assert _refused(demo.decisions(run)) == [("tool_call", "issue_refund", "require_approval", "refunds-over-50")]
    engine = open_engine(demo.db)
    pending = ApprovalStore(engine).list("pending")
    engine.dispose()
    assert approval_id in {a.id for a in pending}  # still waiting for a human at the end of the demo
    [held] = _spans(_trace(api, run.trace_ids[0]), tool_name="issue_refund")
    assert _held(api, held)
    order_id = next(a for a in pending if a.id == approval_id).arguments["order_id"]
    assert demo.crm("SELECT * FROM refunds WHERE order_id = ?", order_id) == []
    assert demo.crm("SELECT status FROM orders WHERE id = ?", order_id)[0]["status"] == "delivered"
    assert demo.crm("SELECT * FROM outbox WHERE body LIKE ?", f"%order {order_id} needs a manager's approval%")


def test_a_card_number_in_a_reply_email_is_redacted_before_the_email_is_sent(demo: Demo) -> None:
    run = demo.run("card_number_in_reply")
    assert _refused(demo.decisions(run)) == [("tool_call", "send_email", "redact", "card-numbers-in-email")]
    bodies = [m["body"] for m in demo.crm("SELECT body FROM outbox WHERE body LIKE '%<CREDIT_CARD>%'")]
    assert bodies and "we checked the charges on card <CREDIT_CARD>" in bodies[0]
    sent = " ".join(m["body"] for m in demo.crm("SELECT body FROM outbox"))
    assert not any(d in re.sub(r"\D", "", sent) for d in CARD_DIGITS)


def test_the_recorded_email_span_holds_the_redacted_body_and_no_tool_span_stores_the_card(
    demo: Demo, api: httpx.Client
) -> None:
    run = demo.run("card_number_in_reply")
    doc = _trace(api, run.trace_ids[0])
    [email] = _spans(doc, tool_name="send_email")
    attrs = api.get(f"/api/spans/{email['span_id']}").json()["attributes"]
    assert attrs["proctor.tool.arguments_redacted"] is True
    assert "<CREDIT_CARD>" in json.loads(attrs["gen_ai.tool.call.arguments"])["body"]
    for tool in _spans(doc, kind="tool"):
        stored = json.dumps(api.get(f"/api/spans/{tool['span_id']}").json())
        assert not any(d in re.sub(r"\D", "", stored) for d in CARD_DIGITS), tool["tool_name"]


def test_an_instruction_injected_in_a_ticket_cannot_send_the_customer_list_out(
    demo: Demo, api: httpx.Client
) -> None:
    run = demo.run("ticket_injection")
    assert run.error is None and run.refusals == 1
    assert _refused(demo.decisions(run)) == [
        ("tool_result", "get_ticket", "warn", "ticket-injection"),
        ("tool_call", "send_email", "deny", "no-exfiltration-from-tickets"),
    ]
    assert demo.crm("SELECT * FROM outbox WHERE to_addr = ?", ATTACKER_ADDRESS) == []  # never sent
    doc = _trace(api, run.trace_ids[0])
    leak, answer = _spans(doc, tool_name="send_email")
    assert (leak["status"], leak["error_type"]) == ("error", "ActionDenied")
    assert answer["status"] == "ok"  # the customer still got an answer
    # the model read the refusal as a tool error and reacted to it
    llm = _spans(doc, kind="llm")
    after = next(s for s in llm if s["start_ns"] > leak["end_ns"])
    seen = api.get(f"/api/spans/{after['span_id']}").json()["attributes"]["gen_ai.input.messages"]
    assert "Refused by policy rule no-exfiltration-from-tickets" in seen
    final = json.loads(api.get(f"/api/spans/{doc['spans'][0]['span_id']}").json()["attributes"]
                       ["gen_ai.output.messages"])[0]["parts"][0]["content"]
    assert "refused by no-exfiltration-from-tickets; not retried" in final


def test_a_research_session_stops_gracefully_at_its_token_budget(demo: Demo, api: httpx.Client) -> None:
    run = demo.run("research_over_budget")
    assert run.error is None and run.stopped and run.stopped.startswith("model call refused by research-session-tokens")
    rows = demo.decisions(run)
    assert _refused(rows) == [("llm_call", "claude-3-5-haiku", "deny", "research-session-tokens")]
    engine = open_engine(demo.db)
    usage = {u.metric: u for u in BudgetLedger(engine).usage(f"session:{run.session_id}")}
    engine.dispose()
    assert 0 < usage["tokens"].used <= usage["tokens"].limit == 20_000 and usage["tokens"].reserved == 0
    root = _trace(api, run.trace_ids[-1])["spans"][0]
    assert root["status"] != "error"  # stopped, not crashed: the turn ends with the framework's answer
    out = json.loads(api.get(f"/api/spans/{root['span_id']}").json()["attributes"]["gen_ai.output.messages"])
    assert out[0]["parts"][0]["content"].startswith("[stopped]")


def test_two_agents_handing_a_case_back_and_forth_are_stopped(demo: Demo, api: httpx.Client) -> None:
    run = demo.run("handoff_ping_pong")
    assert run.error is None and run.stopped and run.stopped.startswith("session terminated by handoff-ping-pong")
    rows = demo.decisions(run)
    [(action, target, effect, rule)] = _refused(rows)
    assert (action, effect, rule) == ("tool_call", "terminate_session", "handoff-ping-pong")
    # each agent's calls are judged as that agent's, also as a sub-agent in the shared session
    handoffs = [(r["agent"], r["target"]) for r in rows if r["target"] and r["target"].startswith("transfer_to")]
    assert handoffs[:4] == [("support-triage", "transfer_to_refund_agent"),
                            ("refund-agent", "transfer_to_support_triage")] * 2
    assert len(handoffs) == 6 and handoffs[-1][1] == target
    doc = _trace(api, run.trace_ids[0])
    agents = [s["agent_name"] for s in _spans(doc, kind="agent") if s["agent_name"] != "kb-researcher"]
    assert agents == ["support-triage", "refund-agent"] * 3
    assert all(s["error_type"] == "SessionTerminated" for s in _spans(doc, kind="agent")
               if s["agent_name"] != "kb-researcher")


def test_the_governed_demo_ends_with_pending_approvals_terminated_sessions_and_an_intact_log(demo: Demo) -> None:
    gov = demo.summary.governance
    assert gov is not None
    assert {"allow", "warn", "redact", "require_approval", "deny", "terminate_session"} <= set(gov.decisions)
    assert gov.approvals.get("approved") and gov.approvals.get("denied") and gov.pending_ids
    # the loop breakers end their sessions; the cost-spiral alert's containment switches its session off
    assert sorted(gov.terminated.values()) == ["alert:cost-spiral", "handoff-ping-pong", "runaway-search"]
    assert {gov.terminated[r.session_id] for r in demo.summary.records if r.session_id in gov.terminated} \
        == {"alert:cost-spiral", "handoff-ping-pong", "runaway-search"}
    out = demo.output
    assert "Governance" in out and f"{len(gov.pending_ids)} pending" in out
    assert f"proctor approvals ls --db {demo.db}" in out
    assert f"proctor approvals approve {gov.pending_ids[0]} --db {demo.db}" in out
    assert f"proctor audit verify --db {demo.db}" in out
    runner = CliRunner()
    verify = runner.invoke(app, ["audit", "verify", "--db", demo.db, "--json"])
    assert verify.exit_code == 0, verify.output
    doc = json.loads(verify.stdout)
    assert doc["ok"] and doc["checked"] == sum(gov.decisions.values()) + gov.shadow
    listed = runner.invoke(app, ["approvals", "ls", "--db", demo.db, "--json"])
    assert {a["id"] for a in json.loads(listed.stdout)["approvals"]} == set(gov.pending_ids)


@contextmanager
def _governed_fleet(tmp_path: Path, name: str, *, seed: int = 11) -> Iterator[tuple[Fleet, Engine, CRM]]:
    """A fleet in this process with the demo's guard and supervisor, on a database of its own."""
    engine = open_engine(f"sqlite:///{tmp_path / f'{name}.db'}")
    crm = CRM(tmp_path / f"{name}-crm.db", latency=False)
    guard = demo_guard(engine)
    previous = proctor.sdk.use_guard(guard)
    supervisor = Supervisor(ApprovalStore(engine), crm.path, latency=False).start()
    try:
        yield Fleet(crm, seed=seed, latency=False, approval_wait_s=0.5), engine, crm
    finally:
        supervisor.stop()
        proctor.sdk.use_guard(previous)
        guard.close()
        crm.close()
        engine.dispose()


def test_the_governed_fleet_is_deterministic_given_a_seed(tmp_path: Path) -> None:
    def play(name: str) -> tuple[list[tuple[Any, ...]], list[tuple[str, str]]]:
        with _governed_fleet(tmp_path, name) as (fleet, _, crm):
            runs = [fleet.run_next() for _ in range(len(Fleet.SCENARIOS))]
            outbox = [(m["to_addr"], m["body"]) for m in crm.outbox()]
        return [(r.scenario, r.error, r.stopped, r.refusals, r.decisions, r.rules, sorted(r.approvals.values()))
                for r in runs], outbox

    first, second = play("a"), play("b")
    assert first == second
    assert all(to != ATTACKER_ADDRESS for to, _ in first[1])


@pytest.mark.parametrize("approve", [True, False], ids=["approved", "denied"])
def test_a_held_refund_is_finished_once_a_human_decides_it(tmp_path: Path, approve: bool) -> None:
    with _governed_fleet(tmp_path, "held") as (fleet, engine, crm):
        fleet._deck = ["refund_over_limit"]
        run = fleet.run_next()
        [(approval_id, status)] = run.approvals.items()
        assert status == "pending" and fleet.resume_decided() == []  # nobody decided yet
        order_id = ApprovalStore(engine).get(approval_id).arguments["order_id"]
        verb = "approve" if approve else "deny"
        r = CliRunner().invoke(app, ["approvals", verb, approval_id, "--by", "a manager", "--db", str(engine.url)])
        assert r.exit_code == 0, r.output
        [resumed] = fleet.resume_decided()
        assert resumed.session_id == run.session_id and resumed.error is None
        refunds = crm.db.execute("SELECT * FROM refunds WHERE order_id = ?", (order_id,)).fetchall()
        last_mail = crm.outbox()[-1]["body"]
        if approve:
            assert ApprovalStore(engine).get(approval_id).status == "consumed"
            assert len(refunds) == 1 and "a manager approved your refund" in last_mail
        else:
            assert refunds == [] and "could not approve it" in last_mail
        assert fleet.resume_decided() == []  # finished once


def test_every_agent_span_carries_the_content_hash_of_the_registered_version_that_ran(demo: Demo) -> None:
    from proctor.demo.fleet import AGENTS, SUPPORT_TRIAGE_CANARY

    known = {s.version_id for s in (*AGENTS, SUPPORT_TRIAGE_CANARY)}
    engine = open_engine(demo.db)
    with engine.connect() as conn:
        rows = conn.execute(select(spans_t.c.agent_name, spans_t.c.agent_version, spans_t.c.agent_version_hash)
                            .where(spans_t.c.kind == "agent").distinct()).all()
    engine.dispose()
    assert rows and all(h in known for _, _, h in rows), rows
    assert {(a, v) for a, v, _ in rows} >= {("support-triage", "1.4.0"), ("support-triage", "1.5.0-rc.1")}


def test_the_runaway_loop_and_the_cost_spiral_reach_the_local_webhook_within_a_second_and_are_contained(
    demo: Demo,
) -> None:
    """The server's alert rules (demo/alerts.yaml) judge the live stream; the demo's webhook
    receiver gets the notifications. Each arrives within a second of its evidence reaching the
    server, and the cost spiral's session is switched off by the rule's containment."""
    from sqlalchemy import select

    from proctor.store.schema import decisions as decisions_t

    firing: dict[str, dict[str, Any]] = {}
    for doc in demo.summary.alerts:
        if doc["status"] == "firing":
            firing.setdefault(doc["rule_id"], doc)
    assert {"runaway-loop", "cost-spiral"} <= set(firing)
    spiral = firing["cost-spiral"]["alerts"][0]
    # the fastest spender of the simulated fleet: a kb-researcher session (the token-heavy research)
    spender = next(r for r in demo.summary.records if r.session_id == spiral["group"]["session"])
    assert spender.agent == "kb-researcher" and spender.scenario.startswith("research_")
    assert firing["cost-spiral"]["action"] == f"terminate_session: kill switch session:{spender.session_id} on"
    engine = open_engine(demo.db)
    try:
        with engine.connect() as conn:
            # the alert's newest evidence span was ingested less than a second before the webhook got it
            ingested = max(conn.execute(select(spans_t.c.ingested_ns).where(
                spans_t.c.span_id.in_(spiral["evidence"]["span_ids"]))).scalars())
            assert 0 < firing["cost-spiral"]["received_ns"] - ingested < 1_000_000_000
            loop = firing["runaway-loop"]["alerts"][0]
            logged = max(conn.execute(select(decisions_t.c.ts_ns).where(
                decisions_t.c.decision_id.in_(loop["evidence"]["decision_ids"]))).scalars())
            # a decision reaches the server's feed by polling (every 0.25 s), after the guard's log writer
            assert 0 < firing["runaway-loop"]["received_ns"] - logged < 1_500_000_000
            contained = conn.execute(select(decisions_t.c.rule_id, decisions_t.c.effect).where(
                decisions_t.c.action == "alert")).all()
        assert ("alert:cost-spiral", "terminate_session") in [tuple(r) for r in contained]
        assert KillSwitches(engine).active().get(f"session:{spender.session_id}") is not None
    finally:
        engine.dispose()
    assert "alert: FIRING cost-spiral (critical)" in demo.output
