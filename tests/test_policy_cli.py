"""``proctor policy``: lint, test, explain, backtest and schema, as a user runs them."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from proctor.cli.main import app
from proctor.policy.schema import render_schema
from proctor.semconv import decode_protobuf, normalize
from proctor.store import SpanStore, open_engine

from spanfactory import new_trace_id, request, span

runner = CliRunner()
ROOT = Path(__file__).parents[1]
EXAMPLES = ROOT / "examples" / "policies"
SUPPORT = EXAMPLES / "support.yaml"


def run(*args: str) -> Any:
    return runner.invoke(app, ["policy", *args], env={"COLUMNS": "200", "PROCTOR_POLICY": ""})


def run_json(*args: str, code: int = 0) -> Any:
    result = run(*args, "--json")
    assert result.exit_code == code, result.output
    return json.loads(result.stdout)


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip())
    return path


BUNDLE_HEAD = """\
apiVersion: proctor/v1
kind: PolicyBundle
metadata: {name: %s, version: "2"}
"""


# ---------------------------------------------------------------------------------------------
# lint


def test_lint_prints_one_line_per_valid_bundle() -> None:
    result = run("lint", str(EXAMPLES))
    assert result.exit_code == 0, result.output
    [line] = result.stdout.splitlines()
    assert line.startswith("ok  support@1  ")
    assert "14 rules" in line and "scope: agents=support-triage,refund-agent" in line and "support.yaml" in line


def test_lint_reports_every_problem_as_file_line_where_message_and_exits_1(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", BUNDLE_HEAD % "a" + """\
        spec:
          rules:
            - {id: r1, when: "args.amount_usd >", effect: allow}
            - {id: r1, effect: deny}
        """.replace("        ", ""))
    write(tmp_path / "b.yaml", BUNDLE_HEAD % "b" + "spec: {mode: sometimes}\n")
    result = run("lint", str(tmp_path))
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines == [
        f"{tmp_path / 'a.yaml'}:6: spec.rules[0].when: invalid CEL: " + lines[0].split("invalid CEL: ", 1)[1],
        f"{tmp_path / 'a.yaml'}:7: spec.rules[1].id: duplicate rule id 'r1' (first at line 6)",
        f"{tmp_path / 'b.yaml'}:4: spec.mode: 'sometimes' is not one of enforce, shadow",
    ]
    assert "3 problems in 2 files" in result.stderr


def test_lint_warns_about_likely_mistakes_without_failing_unless_strict(tmp_path: Path) -> None:
    f = write(tmp_path / "risky.yaml", BUNDLE_HEAD % "risky" + """\
        spec:
          tools:
            - {name: issue_refund, side_effect: irreversible}
          rules:
            - id: refunds
              tools: issue_refnd
              effect: allow
            - {id: block-refunds, tools: issue_refund, effect: deny}
            - {id: allow-refunds, tools: issue_refund, effect: allow}
        """.replace("        ", ""))
    result = run("lint", str(f))
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stdout.splitlines() if "warning:" in line]
    assert warnings == [
        f"{f}:9: spec.rules[0].tools: warning: tools pattern 'issue_refnd' matches no tool in the catalogue "
        "(spec.tools) — a typo? Unlisted tools count as write",
        f"{f}:4: spec: warning: write, external, irreversible tools that no rule decides are allowed by default; "
        "consider default-deny: default_effect: {read: allow, write: deny, external: deny, irreversible: deny}",
        f"{f}:12: spec.rules[2]: warning: rule 'allow-refunds' (allow) never decides: rule 'block-refunds' "
        "(deny, line 11) has the same scope and condition, and the stronger effect wins",
    ]
    assert "ok  risky@2" in result.stdout
    assert run("lint", "--strict", str(f)).exit_code == 1


def test_lint_json_lists_bundles_problems_and_warnings(tmp_path: Path) -> None:
    doc = run_json("lint", str(SUPPORT))
    assert doc["ok"] is True and doc["problems"] == [] and doc["warnings"] == []
    [b] = doc["bundles"]
    assert (b["ref"], b["rules"], b["mode"], len(b["hash"])) == ("support@1", 14, "enforce", 64)
    bad = write(tmp_path / "bad.yaml", BUNDLE_HEAD % "bad" + "spec: {rules: [{id: x, effect: maybe}]}\n")
    doc = run_json("lint", str(bad), code=1)
    assert doc["ok"] is False and doc["bundles"] == []
    assert [(p["line"], p["where"]) for p in doc["problems"]] == [(4, "spec.rules[0].effect")]


def test_lint_refuses_a_path_with_no_bundles(tmp_path: Path) -> None:
    result = run("lint", str(tmp_path))
    assert result.exit_code == 1 and "no bundle files" in result.stdout


# ---------------------------------------------------------------------------------------------
# test


def test_the_example_cases_pass() -> None:
    result = run("test", str(EXAMPLES / "support.cases.yaml"))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert all(line.startswith("PASS  ") for line in lines[:-1])
    assert lines[-1].startswith("18 cases: 18 passed, 0 failed · policy support@1 (")
    assert any("refund over $50 needs a human" in line and "require_approval by refunds-large" in line
               for line in lines)


def test_a_failing_case_shows_what_it_expected_and_got_and_exits_1(tmp_path: Path) -> None:
    cases = write(tmp_path / "wrong.cases.yaml", f"""
        policy: {SUPPORT}
        cases:
          - name: big refund allowed (wrong)
            agent: refund-agent
            tool: issue_refund
            args: {{amount_usd: 80, reason: arrived damaged}}
            expect: allow
            expect_rule: refunds-small
          - name: small refund allowed
            agent: refund-agent
            tool: issue_refund
            args: {{amount_usd: 20, reason: arrived damaged}}
            expect: allow
    """)
    result = run("test", str(cases))
    assert result.exit_code == 1
    fail, ok, summary = result.stdout.splitlines()
    assert fail.startswith("FAIL  big refund allowed (wrong)")
    assert "expected allow, got require_approval; expected rule refunds-small, got refunds-large" in fail
    assert fail.endswith(f"{cases}:3")
    assert ok.startswith("PASS  small refund allowed")
    assert summary.startswith("2 cases: 1 passed, 1 failed")
    doc = run_json("test", str(cases), code=1)
    assert (doc["passed"], doc["failed"]) == (1, 1)
    assert doc["cases"][0] | {"message": ""} == {
        "name": "big refund allowed (wrong)", "source": str(cases), "line": 3, "passed": False,
        "expect": "allow", "expect_rule": "refunds-small", "effect": "require_approval",
        "rule_id": "refunds-large", "shadow_effect": None, "message": "",
        "failures": ["expected allow, got require_approval", "expected rule refunds-small, got refunds-large"],
    }


def test_a_bad_cases_file_is_refused_with_file_and_line(tmp_path: Path) -> None:
    cases = write(tmp_path / "bad.cases.yaml", """
        policy: support.yaml
        cases:
          - name: a
            tool: send_email
            expect: allowed
          - name: b
            tool: send_email
            arguments: {to: x}
            expect: deny
          - name: c
            expect: deny
    """)
    result = run("test", str(cases))
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"{cases}:5: cases[0].expect: 'allowed' is not one of allow, warn, redact, require_approval, deny, "
        "terminate_session",
        f"{cases}:8: cases[1].arguments: unknown key 'arguments' (expected one of: name, description, stage, "
        "agent, environment, labels, tool, args, model, max_tokens, content, session, expect, expect_rule, "
        "expect_shadow)",
    ]
    cases.write_text(cases.read_text().replace("allowed", "allow").replace("arguments", "args"))
    result = run("test", str(cases))
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [f"{cases}:10: cases[2]: say what the case does: give tool: or model: "
                                          "(or stage:)"]
    yaml_error = write(tmp_path / "broken.cases.yaml", "cases:\n  - name: [unclosed\n")
    result = run("test", str(yaml_error))
    assert result.exit_code == 1 and result.stdout.startswith(f"{yaml_error}:3: invalid YAML")


def test_the_policy_option_overrides_the_cases_files_own(tmp_path: Path) -> None:
    strict = write(tmp_path / "strict.yaml", BUNDLE_HEAD % "strict" + "spec: {default_effect: deny}\n")
    cases = write(tmp_path / "c.cases.yaml", f"""
        policy: {SUPPORT}
        cases:
          - {{name: lookups run, agent: support-triage, tool: lookup_customer, expect: allow}}
    """)
    assert run("test", str(cases)).exit_code == 0
    result = run("test", str(cases), "--policy", str(strict))
    assert result.exit_code == 1 and "policy strict@2" in result.stdout


def test_a_case_sees_a_fresh_session_unless_it_gives_counters(tmp_path: Path) -> None:
    write(tmp_path / "long.yaml", BUNDLE_HEAD % "long" + """\
        spec:
          rules: [{id: long-sessions, tools: "*", when: "session.tool_calls > 30", effect: deny}]
        """.replace("        ", ""))
    cases = write(tmp_path / "long.cases.yaml", """
        policy: long.yaml
        cases:
          - {name: fresh session, tool: update_ticket, expect: allow, expect_rule: default}
          - {name: long session, tool: update_ticket, session: {tool_calls: 31}, expect: deny,
             expect_rule: long-sessions}
    """)
    result = run("test", str(cases))
    assert result.exit_code == 0, result.output
    doc = run_json("explain", "-p", str(tmp_path / "long.yaml"), "--tool", "t", "--session", '{"tool_calls": 31}')
    assert doc["decision"]["rule_id"] == "long-sessions"


# ---------------------------------------------------------------------------------------------
# explain


def test_explain_shows_every_rule_considered_and_why() -> None:
    result = run("explain", "--policy", str(SUPPORT), "--agent", "refund-agent", "--tool", "issue_refund",
                 "--args", '{"order_id": "O-2001", "amount_usd": 80, "reason": "arrived damaged"}', "--env", "prod")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "tool_call issue_refund(" in out and "by refund-agent in prod" in out
    assert "✓ support@1" in out
    assert "issue_refund: irreversible (support@1 catalogue entry ['issue_refund'])" in out
    assert "tier      execute_with_limits: the rules apply" in out
    lines = out.splitlines()

    def why(rule: str) -> tuple[str, str]:
        i = next(i for i, line in enumerate(lines) if f" {rule} " in line)
        return lines[i], lines[i + 1].strip()

    head, reason = why("refunds-large")
    assert "require_approval" in head and "matched → decides" in head and "line 46" in head
    assert reason == "condition true: args.amount_usd > 50 && args.amount_usd <= 500"
    head, reason = why("refunds-small")
    assert "not matched" in head and reason == "condition false: args.amount_usd <= 50"
    assert why("handoff-to-refunds")[1] == "agents [support-triage] do not match 'refund-agent'"
    assert why("email-customers")[1] == "tools [send_email] do not match 'issue_refund'"
    assert why("big-completions")[1] == "an llm rule: judged before model calls"
    assert why("session-budget")[1].startswith("a budget rule: judged by the guard")
    assert "default   deny for irreversible (support@1: deny) — not applied: a rule decided" in out
    assert lines[-1] == "decision  require_approval by refunds-large — Refunds above $50 need a human"


def test_explain_json_reports_condition_errors_fail_modes_shadow_rules_and_the_default() -> None:
    doc = run_json("explain", "-p", str(SUPPORT), "--agent", "refund-agent", "--tool", "issue_refund",
                   "--args", '{"order_id": "O-2001"}')
    rules = {r["id"]: r for r in doc["rules"]}
    small = rules["refunds-small"]
    assert (small["status"], small["effect"], small["enforced"]) == ("error", "deny", True)
    assert "fail-closed" in small["reason"] and "amount_usd" in small["reason"]
    shadow = rules["refund-reason-required"]
    assert (shadow["status"], shadow["enforced"], shadow["decided"]) == ("matched", False, False)
    assert shadow["reason"].endswith("shadow: recorded, not enforced")
    assert doc["decision"]["effect"] == "deny" and doc["decision"]["shadow_effect"] is None
    assert doc["target"] == {"kind": "tool", "name": "issue_refund", "side_effect": "irreversible",
                             "from": "support@1 catalogue entry ['issue_refund']", "untrusted_output": False}
    assert doc["default"] == {"class": "irreversible", "effect": "deny", "by_bundle": {"support@1": "deny"},
                              "applied": False}
    assert doc["notes"] == []

    # a read whose condition fails is not matched (fail-open), and the default decides
    doc = run_json("explain", "-p", str(SUPPORT), "--agent", "support-triage", "--tool", "send_email",
                   "--args", '{"to": "ana.souza@example.com"}')
    assert {r["id"]: r["status"] for r in doc["rules"] if r["status"] != "skipped"} == {
        "email-customers": "error", "email-card-details": "error", "session-budget": "stateful",
        "same-call-repeated": "stateful", "ticket-address-into-email": "stateful"}


def test_explain_names_the_bundles_out_of_scope_the_tier_and_model_calls(tmp_path: Path) -> None:
    other = write(tmp_path / "billing.yaml", BUNDLE_HEAD % "billing" + """\
        spec:
          scope: {agents: "billing-*", environments: [prod]}
          default_effect: deny
        """.replace("        ", ""))
    doc = run_json("explain", "-p", str(SUPPORT), "-p", str(other), "--agent", "support-intern-3",
                   "--tool", "send_email", "--args", '{"to": "a@example.com", "body": "hi"}')
    assert [(b["ref"], b["applies"], b["reason"]) for b in doc["bundles"]] == [
        ("support@1", True, "in scope (agents=support-triage,refund-agent,kb-researcher,support-intern-*)"),
        ("billing@2", False, "agent 'support-intern-3' is not in scope.agents ['billing-*']"),
    ]
    assert doc["tier"] == {"tier": "draft_only", "effect": "deny: returns a draft, never runs"}
    decided = [r for r in doc["rules"] if r["decided"]]
    assert [(r["id"], r["kind"]) for r in decided] == [("capability:draft_only", "capability")]
    assert doc["decision"]["draft"] is True

    result = run("explain", "-p", str(SUPPORT), "--agent", "support-triage", "--model", "gpt-4o",
                 "--max-tokens", "9000")
    assert result.exit_code == 0, result.output
    assert "llm_call gpt-4o max_tokens=9000" in result.stdout
    assert result.stdout.splitlines()[-1] == "decision  deny by big-completions — Ask for at most 4000 output tokens"


def test_explain_refuses_unclear_input() -> None:
    assert "--tool NAME" in run("explain", "-p", str(SUPPORT), "--agent", "a").output
    assert "must be a JSON object" in run("explain", "-p", str(SUPPORT), "--tool", "x", "--args", "[1]").output
    assert "no policy" in run("explain", "--tool", "x").output


# ---------------------------------------------------------------------------------------------
# backtest


def _tool(tid: bytes, tool: str, args: Any, *, agent: str, t: int, decision: str | None = None,
          attr_decision: str | None = None) -> Any:
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool, "gen_ai.agent.name": agent,
        "gen_ai.conversation.id": f"sess-{agent}", "proctor.env": "prod",
        "gen_ai.tool.call.arguments": args if isinstance(args, str) else json.dumps(args),
    }
    if attr_decision:
        attrs["proctor.decision.effect"] = attr_decision
    events = [("proctor.decision", {"proctor.decision.stage": "tool_call", "proctor.decision.effect": decision,
                                    "proctor.decision.rule_id": "old-rule"})] if decision else None
    return span(f"execute_tool {tool}", tid, start_ns=t, attrs=attrs, events=events)


def _llm(tid: bytes, model: str, max_tokens: int, *, agent: str, t: int) -> Any:
    return span(f"chat {model}", tid, start_ns=t, attrs={
        "gen_ai.operation.name": "chat", "gen_ai.request.model": model, "gen_ai.request.max_tokens": max_tokens,
        "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 5, "gen_ai.agent.name": agent,
    })


def _store(db_url: str, traces: list[list[Any]]) -> None:
    engine = open_engine(db_url)
    try:
        batch = decode_protobuf(request([s for spans in traces for s in spans])).spans
        for s in batch:
            normalize(s)
        SpanStore(engine).write(batch)
    finally:
        engine.dispose()


def test_backtest_lists_every_decision_that_would_change(db_url: str) -> None:
    now = time.time_ns()
    ids = [new_trace_id() for _ in range(5)]
    refund, triage = "refund-agent", "support-triage"
    _store(db_url, [
        [_tool(ids[0], "issue_refund", {"amount_usd": 20, "reason": "arrived damaged"}, agent=refund, t=now - 9 * 10**9),
         _tool(ids[0], "issue_refund", {"amount_usd": 80, "reason": "arrived damaged"}, agent=refund, t=now - 8 * 10**9)],
        [_tool(ids[1], "issue_refund", {"amount_usd": 900, "reason": "arrived damaged"}, agent=refund, t=now - 7 * 10**9,
               decision="deny"),
         _tool(ids[1], "issue_refund", {"amount_usd": 60, "reason": "arrived damaged"}, agent=refund, t=now - 6 * 10**9,
               decision="require_approval")],
        [_tool(ids[2], "send_email", {"to": "x@elsewhere.test", "body": "hi"}, agent=triage, t=now - 5 * 10**9),
         _tool(ids[2], "send_email", {"to": "y@elsewhere.test", "body": "hi"}, agent=triage, t=now - 4 * 10**9,
               attr_decision="deny"),
         _tool(ids[2], "lookup_customer", {"email": "a@example.com"}, agent=triage, t=now - 4 * 10**9),
         _tool(ids[2], "lookup_customer", "not json", agent=triage, t=now - 4 * 10**9),
         _llm(ids[2], "gpt-4o", 9000, agent=triage, t=now - 3 * 10**9),
         _llm(ids[2], "gpt-4o-mini", 1024, agent=triage, t=now - 2 * 10**9)],
        [_tool(ids[3], "issue_refund", {"amount_usd": 900}, agent="billing-bot", t=now - 1 * 10**9)],  # out of scope
        [_tool(ids[4], "issue_refund", {"amount_usd": 80, "reason": "old one"}, agent=refund,
               t=now - 10 * 86400 * 10**9)],  # before --since
    ])
    doc = run_json("backtest", "--policy", str(SUPPORT), "--db", db_url, "--since", "7d")
    assert (doc["traces"], doc["replayed"], doc["changed"]) == (4, 10, 3)
    assert doc["skipped"] == {"tool arguments are not JSON": 1}
    assert doc["recorded_from"] == {"assumed": 7, "event": 2, "attribute": 1}
    assert doc["session_dependent"] == 0  # no rule of the example reads `session`
    assert {(s["before"], s["after"]): s["count"] for s in doc["summary"]} == {
        ("allow", "allow"): 4, ("allow", "require_approval"): 1, ("allow", "deny"): 2, ("deny", "deny"): 2,
        ("require_approval", "require_approval"): 1,
    }
    changes = [(c["target"], c["before"], c["after"], c["rule_id"]) for c in doc["changes"]]
    assert changes == [  # newest first
        ("gpt-4o", "allow", "deny", "big-completions"),
        ("send_email", "allow", "deny", "default"),
        ("issue_refund", "allow", "require_approval", "refunds-large"),
    ]
    refund_change = doc["changes"][2]
    tid = ids[0].hex()
    assert refund_change | {"span_id": "", "start_ns": 0, "message": ""} == {
        "trace_id": tid, "span_id": "", "start_ns": 0, "stage": "tool_call", "agent": "refund-agent",
        "environment": "prod", "session_id": "sess-refund-agent", "target": "issue_refund",
        "args": {"amount_usd": 80, "reason": "arrived damaged"}, "max_tokens": None, "before": "allow",
        "before_source": "assumed", "before_rule": None, "after": "require_approval", "rule_id": "refunds-large",
        "message": "", "link": f"/traces/{tid}", "command": f"proctor traces show {tid}",
    }

    text = run("backtest", "--policy", str(SUPPORT), "--db", db_url, "--since", "7d")
    assert text.exit_code == 0, text.output
    out = text.stdout
    assert "10 replayed" in out and "3 would change" in out
    assert f"/traces/{tid} · proctor traces show {tid}" in out
    assert 'allow → require_approval  refunds-large  refund-agent  issue_refund {"amount_usd":80' in out


def test_backtest_pages_through_many_calls_in_bounded_batches_and_honours_agent_and_limit(db_url: str) -> None:
    now = time.time_ns()
    traces = []
    for i in range(30):
        tid = new_trace_id()
        agent = "refund-agent" if i % 3 else "support-triage"
        traces.append([_tool(tid, "issue_refund", {"amount_usd": 80, "reason": "arrived damaged"}, agent=agent,
                             t=now - (i * 2 + j + 1) * 10**9) for j in range(2)])
    _store(db_url, traces)
    doc = run_json("backtest", "-p", str(SUPPORT), "--db", db_url, "--batch-size", "10")
    assert (doc["traces"], doc["replayed"], doc["changed"]) == (30, 60, 60)
    assert {(s["before"], s["after"]): s["count"] for s in doc["summary"]} == {
        ("allow", "require_approval"): 40, ("allow", "deny"): 20}
    starts = [c["start_ns"] for c in doc["changes"]]
    assert starts == sorted(starts, reverse=True)
    only = run_json("backtest", "-p", str(SUPPORT), "--db", db_url, "--batch-size", "10", "--agent", "support-triage")
    assert (only["replayed"], {c["agent"] for c in only["changes"]}) == (20, {"support-triage"})
    limited = run_json("backtest", "-p", str(SUPPORT), "--db", db_url, "--batch-size", "10", "--limit", "25")
    assert limited["replayed"] == 25
    newest = sorted((s for spans in traces for s in spans), key=lambda s: -s.start_time_unix_nano)[:20]
    assert {s.span_id.hex() for s in newest} <= {c["span_id"] for c in limited["changes"]}


def test_backtest_with_nothing_stored_says_so(tmp_path: Path) -> None:
    result = run("backtest", "-p", str(SUPPORT), "--db", f"sqlite:///{tmp_path / 'empty.db'}", "--since", "1h")
    assert result.exit_code == 0, result.output
    assert "0 replayed" in result.stdout and "no tool or model calls in that window" in result.stdout
    assert "cannot read time" in run("backtest", "-p", str(SUPPORT), "--since", "yesterday-ish").output


# ---------------------------------------------------------------------------------------------
# schema


def test_the_published_schema_file_is_generated_from_the_source() -> None:
    doc = ROOT / "docs" / "policy-bundle.schema.json"
    assert doc.read_text() == render_schema(), \
        "run: .venv/bin/python -m proctor.policy.schema > docs/policy-bundle.schema.json"


def test_the_schema_command_prints_the_published_schema() -> None:
    result = run("schema")
    assert result.exit_code == 0
    assert result.stdout == render_schema()
    assert json.loads(result.stdout)["title"] == "Proctor policy bundle"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_file_is_valid(path: Path) -> None:
    args = ("test", str(path)) if path.name.endswith(".cases.yaml") else ("lint", "--strict", str(path))
    result = run(*args)
    assert result.exit_code == 0, result.output
