"""``proctor agent`` from the terminal, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from proctor.cli.main import app

from test_registry import make_agent

runner = CliRunner()


def agent(db: str, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["agent", *args, "--db", db])
    return result.exit_code, result.output


def test_push_deploy_change_roll_back_and_read_the_history(tmp_path: Path, db_url: str) -> None:
    root = tmp_path / "triage"
    code, out = agent(db_url, "push", str(make_agent(root)))
    assert code == 0 and "registered" in out
    code, out = agent(db_url, "push", str(root / "agent.yaml"))
    assert code == 0 and "unchanged" in out
    code, out = agent(db_url, "deploy", "support-triage@1.4.0", "--env", "prod")
    assert code == 1 and "approvals:approver: 0 of 1" in out
    code, out = agent(db_url, "deploy", "support-triage@1.4.0", "--env", "prod", "--approve", "bob:approver",
                      "--reason", "first release")
    assert code == 0 and "nothing ->" in out

    (root / "prompts" / "system.md").write_text("Be terse.\n")
    code, out = agent(db_url, "push", str(root / "agent.yaml"), "--json")
    new = json.loads(out)["version"]["version_id"]
    code, out = agent(db_url, "deploy", new[:10], "--env", "prod", "--approve", "bob:approver")
    assert code == 0
    code, out = agent(db_url, "changed", "support-triage", "--env", "prod")
    assert code == 0 and "-You are a support agent." in out and "+Be terse." in out

    code, out = agent(db_url, "rollback", "support-triage", "--env", "prod", "--reason", "too terse")
    assert code == 0 and "rolled back" in out
    code, out = agent(db_url, "history", "support-triage", "--env", "prod", "--json")
    moves = json.loads(out)
    assert [(m["action"], m["status"]) for m in moves] == [
        ("rollback", "applied"), ("deploy", "applied"), ("deploy", "applied"), ("deploy", "refused")]
    code, out = agent(db_url, "ls")
    assert code == 0 and "support-triage" in out and "prod=" in out


def test_inventory_and_errors_a_user_sees(tmp_path: Path, db_url: str) -> None:
    agent(db_url, "push", str(make_agent(tmp_path / "a")))
    code, out = agent(db_url, "inventory", "--tool", "billing.refund", "--json")
    assert code == 0 and [r["name"] for r in json.loads(out)["versions"]] == ["support-triage"]
    code, out = agent(db_url, "deploy", "feedfacefeed", "--env", "prod")
    assert code == 1 and "no version matches" in out
    code, out = agent(db_url, "deploy", "support-triage@1.4.0", "--env", "qa", "--approve", "bob:approver")
    assert code == 1 and "unknown environment 'qa'" in out
    code, out = agent(db_url, "env", "add", "qa")
    assert code == 0
    bad = tmp_path / "bad"
    make_agent(bad)
    (bad / "agent.yaml").write_text((bad / "agent.yaml").read_text().replace("tier: execute_with_limits", "tier: god"))
    code, out = agent(db_url, "push", str(bad / "agent.yaml"))
    assert code == 1 and "spec.tier" in out


def test_schemas_reports_a_tool_result_that_no_longer_matches_its_pinned_schema(tmp_path: Path, db_url: str) -> None:
    import time

    from proctor.store import open_engine

    from test_registry_schemas import Recorder

    agent(db_url, "push", str(make_agent(tmp_path / "a")))
    engine = open_engine(db_url)
    rec = Recorder(engine)
    now = time.time_ns()
    for i in range(3):  # the pinned schema says id is a string
        rec.call("lookup_customer", {"id": 7 + i, "email": "a@b.c"}, now - (i + 1) * 1_000_000_000)
    rec.flush()
    engine.dispose()
    code, out = agent(db_url, "schemas", "support-triage", "--window", "1h")
    assert code == 0 and "lookup_customer" in out and "type_changed" in out
    code, out = agent(db_url, "schemas", "support-triage", "--window", "1h", "--json")
    [lookup] = [t for t in json.loads(out)["tools"] if t["tool"] == "lookup_customer"]
    assert lookup["calls"] == 3 and [c["kind"] for c in lookup["vs_pinned"]] == ["type_changed"]


def test_the_published_manifest_schema_is_generated_from_the_source() -> None:
    from proctor.registry.manifest import render_schema

    doc = Path(__file__).parent.parent / "docs" / "agent-manifest.schema.json"
    assert doc.read_text() == render_schema(), (
        "run: .venv/bin/python -m proctor.registry.manifest > docs/agent-manifest.schema.json")
    result = runner.invoke(app, ["agent", "json-schema"])
    assert result.exit_code == 0 and json.loads(result.output)["title"] == "Proctor agent manifest"
