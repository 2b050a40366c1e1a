"""``proctor approvals``, ``kill``, ``audit`` and ``decisions`` as an operator types them.

Each command works on the database (``--db``) and through a running server (``--url``);
refusals (an unknown id, a second decision, a tampered log) end with exit 1 and a message
that says what happened.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from proctor.cli.main import app
from proctor.store import open_engine
from proctor.store.approvals import Approval, ApprovalStore
from proctor.store.decisions import DecisionLog, DecisionRecord

from conftest import free_port, wait_until

runner = CliRunner()
WIDE = {"COLUMNS": "200"}


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    e = open_engine(db_url)
    yield e
    e.dispose()


def hold(engine: Engine, tool: str = "issue_refund", amount: float = 80, session: str = "s-1") -> Approval:
    """A call held for approval, as a guard would have requested it."""
    return ApprovalStore(engine).request(
        digest=f"{tool}-{amount}-{session}", tool=tool, arguments={"customer": "c-7", "amount_usd": amount},
        policy_hash="p" * 64, session_id=session, agent="support-bot", rule_id="refunds-large",
        message="Refunds above $50 need a human", ttl_s=600)


def log_decisions(engine: Engine, effects: list[str], session: str = "s-1") -> None:
    now = time.time_ns()
    DecisionLog(engine).append([
        DecisionRecord(decision_id=f"d{i}-{session}", ts_ns=now + i, trace_id=None, span_id=None, session_id=session,
                       agent="support-bot", action="tool_call", target=f"tool_{i}", effect=effect,
                       rule_id=f"rule-{i}", reasons=[f"rule-{i}: {effect}"])
        for i, effect in enumerate(effects)
    ])


def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={**WIDE, **(env or {})})
    return result.exit_code, result.output


def as_json(*args: str) -> dict:  # type: ignore[type-arg]
    code, out = cli(*args, "--json")
    assert code == 0, out
    return json.loads(out)  # type: ignore[no-any-return]


# --- approvals ------------------------------------------------------------------------------


def test_approvals_ls_lists_what_waits_and_show_prints_the_held_call(db_url: str, engine: Engine) -> None:
    first, second = hold(engine, amount=80), hold(engine, amount=120, session="s-2")
    doc = as_json("approvals", "ls", "--db", db_url)
    assert [a["id"] for a in doc["approvals"]] == [second.id, first.id] and doc["pending"] == 2

    code, out = cli("approvals", "ls", "--db", db_url)
    assert code == 0 and first.id in out and "issue_refund" in out and "pending" in out

    code, out = cli("approvals", "show", first.id, "--db", db_url)
    assert code == 0, out
    assert "issue_refund by support-bot in session s-1" in out
    assert "refunds-large: Refunds above $50 need a human" in out and '"amount_usd": 80' in out
    assert as_json("approvals", "show", first.id, "--db", db_url)["arguments"] == {"customer": "c-7", "amount_usd": 80}


def test_an_approval_is_approved_once_and_a_second_decision_is_refused(db_url: str, engine: Engine) -> None:
    a = hold(engine)
    code, out = cli("approvals", "approve", a.id, "--db", db_url, "--by", "alice", "--reason", "known customer")
    assert code == 0, out
    assert f"approved {a.id}: issue_refund for support-bot (by alice: known customer)" in out

    code, out = cli("approvals", "deny", a.id, "--db", db_url, "--by", "bob")
    assert code == 1 and f"approval {a.id} already approved by alice" in out
    assert ApprovalStore(engine).get(a.id).status == "approved"  # unchanged
    assert as_json("approvals", "ls", "--db", db_url)["approvals"] == []
    approved = as_json("approvals", "ls", "--db", db_url, "--status", "approved")["approvals"]
    assert [(x["id"], x["decided_by"], x["decision_reason"]) for x in approved] == [(a.id, "alice", "known customer")]


def test_deny_defaults_to_USER_and_unknown_ids_or_statuses_fail_clearly(db_url: str, engine: Engine) -> None:
    a = hold(engine)
    code, out = cli("approvals", "deny", a.id, "--db", db_url, "--reason", "fraud", env={"USER": "carol"})
    assert code == 0 and "denied" in out and "by carol: fraud" in out
    assert ApprovalStore(engine).get(a.id).decided_by == "carol"
    code, out = cli("approvals", "approve", a.id, "--db", db_url, env={"USER": "dave"})
    assert code == 1 and "already denied by carol" in out

    code, out = cli("approvals", "approve", "nope", "--db", db_url, "--by", "alice")
    assert code == 1 and "no approval 'nope'" in out
    code, out = cli("approvals", "show", "nope", "--db", db_url)
    assert code == 1 and "no approval 'nope'" in out
    code, out = cli("approvals", "ls", "--db", db_url, "--status", "maybe")
    assert code == 1 and "--status takes pending, approved" in out


# --- kill switches --------------------------------------------------------------------------


def test_kill_switches_go_on_and_off_and_are_listed(db_url: str) -> None:
    code, out = cli("kill", "on", "agent:support-bot", "--reason", "refund loop", "--by", "ops", "--db", db_url)
    assert code == 0 and "kill switch agent:support-bot is ON" in out
    cli("kill", "on", "writes_off", "--by", "ops", "--db", db_url)
    doc = as_json("kill", "ls", "--db", db_url)
    assert sorted(doc["active"]) == ["agent:support-bot", "writes_off"]

    code, out = cli("kill", "off", "agent:support-bot", "--by", "ops", "--db", db_url)
    assert code == 0 and "kill switch agent:support-bot is off" in out
    doc = as_json("kill", "ls", "--db", db_url)
    assert doc["active"] == ["writes_off"]
    assert {s["scope"]: s["active"] for s in doc["kill_switches"]} == {"agent:support-bot": False, "writes_off": True}
    code, out = cli("kill", "ls", "--db", db_url)
    assert code == 0 and "refund loop" not in out and "writes_off" in out and "ON" in out

    code, out = cli("kill", "on", "agent", "--by", "ops", "--db", db_url)
    assert code == 1 and "invalid kill-switch scope 'agent'" in out


def test_kill_help_teaches_the_scopes() -> None:
    code, out = cli("kill", "--help")
    assert code == 0
    for scope in ("global", "agent:NAME", "session:ID", "writes_off", "writes_off:agent:NAME"):
        assert scope in out


# --- the decision log -----------------------------------------------------------------------


def test_audit_verify_passes_an_intact_log_and_names_a_tampered_row(db_url: str, engine: Engine) -> None:
    log_decisions(engine, ["allow", "deny", "allow"])
    code, out = cli("audit", "verify", "--db", db_url)
    assert (code, out.strip()) == (0, "ok: 3 decisions, chain intact")

    with engine.begin() as conn:
        conn.execute(text("UPDATE decisions SET effect='allow' WHERE seq=2"))
    code, out = cli("audit", "verify", "--db", db_url)
    assert code == 1
    assert "tampered" in out and "seq 2: content does not match its hash: the row was edited" in out
    result = runner.invoke(app, ["audit", "verify", "--db", db_url, "--json"])
    assert result.exit_code == 1
    assert json.loads(result.output)["first_bad_seq"] == 2


def test_decisions_ls_filters_by_session_and_effect(db_url: str, engine: Engine) -> None:
    log_decisions(engine, ["allow", "deny", "require_approval"], session="s-1")
    log_decisions(engine, ["deny"], session="s-2")
    doc = as_json("decisions", "ls", "--db", db_url)
    assert [d["seq"] for d in doc["decisions"]] == [4, 3, 2, 1]
    doc = as_json("decisions", "ls", "--db", db_url, "--session", "s-1", "--effect", "deny")
    assert [(d["session_id"], d["target"]) for d in doc["decisions"]] == [("s-1", "tool_1")]
    paged = as_json("decisions", "ls", "--db", db_url, "--limit", "2")
    assert paged["next_before_seq"] == 3
    code, out = cli("decisions", "ls", "--db", db_url, "--session", "s-1")
    assert code == 0 and "require_approval" in out and "rule-2" in out and "s-2" not in out
    code, out = cli("decisions", "ls", "--db", db_url, "--effect", "maybe")
    assert code == 1 and "--effect takes allow" in out


# --- through a running server ----------------------------------------------------------------


def test_the_commands_work_against_a_running_server(db_url: str, engine: Engine) -> None:
    from proctor.server.run import start_in_thread

    port = free_port()
    server, thread = start_in_thread(port=port, database_url=db_url)
    url = f"http://127.0.0.1:{port}"
    try:
        a = hold(engine)
        assert [x["id"] for x in as_json("approvals", "ls", "--url", url)["approvals"]] == [a.id]
        code, out = cli("approvals", "approve", a.id, "--url", url, "--by", "alice")
        assert code == 0 and f"approved {a.id}" in out
        code, out = cli("approvals", "deny", a.id, "--url", url, "--by", "bob")
        assert code == 1 and "409" in out and "already approved by alice" in out
        code, out = cli("approvals", "show", "nope", "--url", url)
        assert code == 1 and "404" in out and "no approval 'nope'" in out

        assert cli("kill", "on", "global", "--by", "ops", "--url", url)[0] == 0
        assert as_json("kill", "ls", "--url", url)["active"] == ["global"]
        assert active_switches(engine) == ["global"]

        log_decisions(engine, ["allow", "deny"])
        assert [d["effect"] for d in as_json("decisions", "ls", "--url", url)["decisions"]] == ["deny", "allow"]
        assert cli("audit", "verify", "--url", url) == (0, "ok: 2 decisions, chain intact\n")
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM decisions WHERE seq=1"))
        code, out = cli("audit", "verify", "--url", url)
        assert code == 1 and "seq 1 missing" in out
    finally:
        server.should_exit = True
        thread.join(10)
    code, out = cli("kill", "ls", "--url", url)
    assert code == 1 and f"cannot reach {url}" in out


def active_switches(engine: Engine) -> list[str]:
    from proctor.store.killswitches import KillSwitches

    return sorted(KillSwitches(engine).active())


# --- serve --policy -------------------------------------------------------------------------

POLICY = """\
apiVersion: proctor/v1
kind: PolicyBundle
metadata: {name: support, version: "1"}
spec:
  default_effect: {read: allow, write: deny, external: deny, irreversible: deny}
  tools: [{name: "crm.*", side_effect: read}]
"""


def test_serve_with_a_policy_answers_the_decision_api(tmp_path: Path) -> None:
    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "support.yaml").write_text(POLICY)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "proctor.cli.main", "serve", "--port", str(port), "--db", f"sqlite:///{tmp_path}/p.db",
         "--policy", str(policy)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env={**os.environ, **WIDE},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        assert proc.stdout is not None and url in proc.stdout.readline()
        body = {"session_id": "s", "agent": "a", "tool": "crm.lookup"}
        assert httpx.post(f"{url}/api/guard/tool", json=body).json()["permitted"] is True
        assert httpx.post(f"{url}/api/guard/tool", json={**body, "tool": "wipe"}).json()["permitted"] is False
        assert [b["name"] for b in httpx.get(f"{url}/api/policy").json()["bundles"]] == ["support"]
    finally:
        proc.terminate()
        proc.wait(10)
    assert wait_until(lambda: proc.poll() is not None, timeout=5)


def test_serve_refuses_an_invalid_policy_with_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(POLICY.replace("side_effect: read", "side_effect: sometimes"))
    code, out = cli("serve", "--port", str(free_port()), "--db", f"sqlite:///{tmp_path}/p.db", "--policy", str(bad))
    assert code == 1 and "the policy was refused" in out and f"{bad}:6" in out
    code, out = cli("serve", "--workers", "2", "--db", f"sqlite:///{tmp_path}/p.db", "--policy", str(bad))
    assert code == 1 and "--policy needs --workers 1" in out
