"""The agent registry over HTTP, as a client in any language sees it: a push uploads the
manifest with the files it names, and every ``proctor agent`` command has its endpoint. Every
test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from proctor.registry.manifest import load_manifest
from proctor.server import create_app

from test_registry import MANIFEST, POLICY, make_agent

APPROVE = [{"name": "bob", "role": "approver"}]


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(db_url)) as c:
        yield c


def upload(root: Path, manifest: str = "agent.yaml") -> dict[str, Any]:
    """The push body for an agent directory: the manifest's text and every other file's content."""
    files = {p.relative_to(root).as_posix(): p.read_text() for p in root.rglob("*") if p.is_file()
             and p.name != manifest}
    return {"manifest": (root / manifest).read_text(), "files": files}


def push(c: TestClient, body: dict[str, Any], status: int = 201) -> dict[str, Any]:
    r = c.post("/api/agents/push", json=body)
    assert r.status_code == status, r.text
    return r.json()  # type: ignore[no-any-return]


def deploy(c: TestClient, ref: str, env: str = "prod", **extra: Any) -> Any:
    return c.post("/api/agents/support-triage/deploy", json={"ref": ref, "env": env, "by": "alice", **extra})


# --- push and read ------------------------------------------------------------------------


def test_a_push_uploads_the_files_and_gets_the_same_version_as_the_cli_and_again_is_a_no_op(
    client: TestClient, tmp_path: Path
) -> None:
    root = make_agent(tmp_path / "a").parent
    on_disk = load_manifest(root / "agent.yaml")
    first = push(client, {**upload(root), "by": "ci"})
    v = first["version"]
    assert first["created"] is True and v["version_id"] == on_disk.version_id
    assert (v["name"], v["label"], v["created_by"], v["tools"]) == (
        "support-triage", "1.4.0", "ci", ["billing.refund", "lookup_customer"])
    assert "manifest" not in v
    again = push(client, {**upload(root), "files": {f"./{k}": c for k, c in upload(root)["files"].items()}}, 200)
    assert again["created"] is False and again["version"]["version_id"] == on_disk.version_id

    for ref in (on_disk.version_id, on_disk.version_id[:8], "support-triage@1.4.0"):
        full = client.get(f"/api/versions/{ref}").json()
        assert full["version_id"] == on_disk.version_id and full["manifest"] == on_disk.manifest, ref
    assert client.get("/api/versions/support-triage@9.9").status_code == 404
    assert client.get("/api/versions/feedfacefeed").status_code == 404

    [agent] = client.get("/api/agents").json()["agents"]
    assert (agent["name"], agent["versions"], agent["latest"], agent["deployed"]) == (
        "support-triage", 1, on_disk.short_id, {})
    listed = client.get("/api/agents/support-triage/versions").json()
    assert [x["version_id"] for x in listed["versions"]] == [on_disk.version_id]
    assert client.get("/api/agents/nobody/versions").status_code == 404


def test_files_above_the_manifest_are_uploaded_under_the_relative_path_it_uses(
    client: TestClient, tmp_path: Path
) -> None:
    root = make_agent(tmp_path / "repo" / "agents" / "triage").parent
    policies = tmp_path / "repo" / "policies"
    policies.mkdir()
    (root / "policy.yaml").rename(policies / "support.yaml")
    (root / "agent.yaml").write_text(MANIFEST.replace("policy: policy.yaml", "policy: ../../policies/support.yaml"))
    on_disk = load_manifest(root / "agent.yaml")
    body = upload(root)
    body["files"]["../../policies/support.yaml"] = (policies / "support.yaml").read_text()
    assert push(client, body)["version"]["version_id"] == on_disk.version_id
    assert on_disk.manifest["policy"]["name"] == "support"

    # only files above the manifest: the directories on the way up exist even though empty
    lean = (MANIFEST.replace("  prompts:\n    system: prompts/system.md\n", "")
            .replace("      output_schema: schemas/customer.json\n", "")
            .replace("policy: policy.yaml", "policy: ../../policies/support.yaml"))
    (root / "agent.yaml").write_text(lean)
    lean_body = {"manifest": lean, "files": {"../../policies/support.yaml": (policies / "support.yaml").read_text()}}
    assert push(client, lean_body)["version"]["version_id"] == load_manifest(root / "agent.yaml").version_id


def test_a_refused_manifest_is_400_with_every_problem_at_its_line(client: TestClient, tmp_path: Path) -> None:
    root = make_agent(tmp_path / "a").parent
    body = upload(root)
    del body["files"]["prompts/system.md"]
    body["manifest"] = body["manifest"].replace("tier: execute_with_limits", "tier: god")
    r = client.post("/api/agents/push", json=body)
    assert r.status_code == 400 and r.json()["detail"] == "manifest refused (2 problems)"
    lines = body["manifest"].splitlines()
    assert r.json()["problems"] == [
        {"source": "agent.yaml", "line": lines.index("    system: prompts/system.md") + 1,
         "where": "spec.prompts.system",
         "message": "prompt file 'prompts/system.md' was not uploaded: put its content in files['prompts/system.md']"},
        {"source": "agent.yaml", "line": lines.index("  tier: god") + 1, "where": "spec.tier",
         "message": r.json()["problems"][1]["message"]},
    ]
    assert "'god' is not one of" in r.json()["problems"][1]["message"]

    # the server reads only what was uploaded: never a path of its own
    for ref, words in (("/etc/passwd", "must be a path relative to the manifest"),
                       ("../../../../../../etc/passwd", "was not uploaded")):
        bad = {**upload(root), "manifest": MANIFEST.replace("policy: policy.yaml", f"policy: {ref}")}
        r = client.post("/api/agents/push", json=bad)
        assert r.status_code == 400 and words in r.json()["problems"][0]["message"], r.text
        assert r.json()["problems"][0]["where"] == "spec.policy"

    broken_bundle = {**upload(root)}
    broken_bundle["files"] = {**broken_bundle["files"], "policy.yaml": "apiVersion: proctor/v1\nkind: Nope\n"}
    r = client.post("/api/agents/push", json=broken_bundle)
    assert r.status_code == 400
    assert {p["source"] for p in r.json()["problems"]} == {"policy.yaml"}  # not the server's temporary path
    assert "proctor-push-" not in r.text

    r = client.post("/api/agents/push", json={"manifest": "spec: [unclosed", "path": "agents/x.yaml"})
    assert r.status_code == 400 and r.json()["problems"][0]["source"] == "agents/x.yaml"
    assert "invalid YAML" in r.json()["problems"][0]["message"]
    assert client.get("/api/agents").json() == {"agents": []}

    for bad_body, words in (({**upload(root), "files": {"/etc/passwd": "x"}}, "relative file path"),
                            ({**upload(root), "file": {}}, "file"),
                            ({"files": {}}, "manifest")):
        r = client.post("/api/agents/push", json=bad_body)
        assert r.status_code == 422 and words in r.text, r.text


# --- moves --------------------------------------------------------------------------------


def test_deploy_through_gates_roll_back_and_read_the_history(client: TestClient, tmp_path: Path) -> None:
    root = make_agent(tmp_path / "a").parent
    v1 = push(client, upload(root))["version"]["version_id"]

    refused = deploy(client, "1.4.0", reason="first release")
    assert refused.status_code == 409
    doc = refused.json()
    assert (doc["status"], doc["action"], doc["version_id"], doc["by"]) == ("refused", "deploy", v1, "alice")
    assert {g["gate"]: g["passed"] for g in doc["gates"]} == {"approvals:approver": False, "policy_lint": True}
    assert "approvals:approver: 0 of 1" in doc["detail"]

    applied = deploy(client, v1[:10], approvals=APPROVE, evidence=["https://ci/1"], reason="first release")
    assert applied.status_code == 200, applied.text
    d1 = applied.json()
    assert (d1["status"], d1["previous_version_id"], d1["evidence"]) == ("applied", None, ["https://ci/1"])
    assert d1["gates"][0] == {"gate": "approvals:approver", "passed": True, "detail": "1 of 1 approver approval(s): bob"}

    (root / "prompts" / "system.md").write_text("Be terse.\n")
    v2 = push(client, upload(root))["version"]["version_id"]
    d2 = deploy(client, v2, approvals=APPROVE).json()
    assert (d2["status"], d2["previous_version_id"]) == ("applied", v1)

    changed = client.get("/api/agents/support-triage/changed", params={"env": "prod"}).json()
    assert (changed["current"], changed["previous"]) == (v2, v1)
    assert [c["area"] for c in changed["changes"]] == ["prompt"]
    assert "+Be terse." in changed["changes"][0]["detail"]

    back = client.post("/api/agents/support-triage/rollback", json={"env": "prod", "by": "ops", "reason": "too terse"})
    assert back.status_code == 200
    assert (back.json()["action"], back.json()["version_id"], back.json()["previous_version_id"]) == ("rollback", v1, v2)
    assert client.get("/api/agents").json()["agents"][0]["deployed"] == {"prod": v1[:12]}

    moves = client.get("/api/agents/support-triage/history", params={"env": "prod"}).json()["deployments"]
    assert [(m["action"], m["status"], m["version_id"]) for m in moves] == [
        ("rollback", "applied", v1), ("deploy", "applied", v2), ("deploy", "applied", v1), ("deploy", "refused", v1)]
    assert moves[0]["reason"] == "too terse"
    assert len(client.get("/api/agents/support-triage/history", params={"limit": 2}).json()["deployments"]) == 2

    def at(t: str | int) -> Any:
        r = client.get("/api/agents/support-triage/at", params={"env": "prod", "t": str(t)})
        assert r.status_code == 200, r.text
        return r.json()["deployment"]

    assert at(moves[1]["ts_ns"])["version_id"] == v2
    assert at(moves[2]["ts_ns"])["version_id"] == v1
    assert at(moves[3]["ts_ns"] - 1) is None
    assert at("2020-01-01T00:00:00Z") is None
    assert at("0s")["id"] == moves[0]["id"]  # now: the rollback
    assert client.get("/api/agents/support-triage/at", params={"env": "prod", "t": "last tuesday"}).status_code == 400


def test_live_says_which_version_a_session_in_an_environment_runs_with_its_pinned_bundle(
    client: TestClient, tmp_path: Path
) -> None:
    root = make_agent(tmp_path / "a").parent
    v = push(client, upload(root))["version"]
    assert client.get("/api/agents/support-triage/live", params={"env": "prod"}).status_code == 404
    assert "unknown environment 'moon'" in client.get("/api/agents/support-triage/live",
                                                      params={"env": "moon"}).json()["detail"]
    assert deploy(client, v["version_id"], approvals=APPROVE).status_code == 200
    live = client.get("/api/agents/support-triage/live", params={"env": "prod"}).json()
    assert (live["version_id"], live["label"], live["short_id"]) == (v["version_id"], "1.4.0", v["short_id"])
    assert live["policy"]["hash"] == v["policy_hash"]
    assert live["policy"]["document"]["metadata"]["name"] == "support"


def test_the_decision_api_judges_a_deployed_agent_by_the_bundle_its_live_version_pins(
    db_url: str, tmp_path: Path
) -> None:
    """The server's own bundle allows every refund; the deployed version pins one that allows
    only refunds up to $50. A session naming agent and environment gets the pinned one."""
    server_policy = tmp_path / "server-policy.yaml"
    server_policy.write_text(POLICY.replace("name: support,", "name: server-wide,").replace(
        '"args.amount_usd <= 50"', '"true"'))
    root = make_agent(tmp_path / "a").parent
    with TestClient(create_app(db_url, policy=str(server_policy))) as c:
        push(c, upload(root))
        assert deploy(c, "1.4.0", approvals=APPROVE).status_code == 200

        def refund(session: str, **where: str) -> Any:
            r = c.post("/api/guard/tool", json={"session_id": session, "agent": "support-triage",
                                                "tool": "billing.refund", "args": {"amount_usd": 80}, **where})
            assert r.status_code == 200, r.text
            return r.json()

        assert refund("s-prod", environment="prod")["permitted"] is False  # the pinned bundle: over $50
        assert refund("s-unnamed")["permitted"] is True  # no environment: the server's bundle
        assert refund("s-dev", environment="dev")["permitted"] is True  # nothing deployed to dev


def test_deploy_and_rollback_errors(client: TestClient, tmp_path: Path) -> None:
    root = make_agent(tmp_path / "a").parent
    push(client, upload(root))
    r = deploy(client, "feedfacefeed", approvals=APPROVE)
    assert r.status_code == 404 and "no version of support-triage matches" in r.json()["detail"]
    r = deploy(client, "1.4.0", env="qa", approvals=APPROVE)
    assert r.status_code == 400 and "unknown environment 'qa'" in r.json()["detail"]
    other = client.post("/api/agents/billing/deploy", json={"ref": "support-triage@1.4.0", "env": "prod", "by": "a"})
    assert other.status_code == 400 and "is a version of support-triage, not of billing" in other.json()["detail"]
    r = deploy(client, "1.4.0", approvals=[{"name": "bob", "rol": "approver"}])
    assert r.status_code == 422 and "rol" in r.text
    assert client.post("/api/agents/support-triage/deploy", json={"ref": "1.4.0", "env": "prod"}).status_code == 422

    r = client.post("/api/agents/support-triage/rollback", json={"env": "prod", "by": "ops"})
    assert r.status_code == 409 and "never been deployed to prod" in r.json()["detail"]
    deploy(client, "1.4.0", approvals=APPROVE)
    r = client.post("/api/agents/support-triage/rollback", json={"env": "prod", "by": "ops"})
    assert r.status_code == 409 and "only ever run" in r.json()["detail"]
    r = client.post("/api/agents/support-triage/rollback", json={"env": "qa", "by": "ops"})
    assert r.status_code == 400 and "unknown environment 'qa'" in r.json()["detail"]
    # nothing was recorded for the refused requests except the one gate-refused deploy: none here
    assert [m["status"] for m in client.get("/api/agents/support-triage/history").json()["deployments"]] == ["applied"]


# --- diffs and inventory ------------------------------------------------------------------


def test_diff_two_versions_and_what_changed_in_an_environment(client: TestClient, tmp_path: Path) -> None:
    root = make_agent(tmp_path / "a").parent
    v1 = push(client, upload(root))["version"]["version_id"]
    body = upload(root)
    body["manifest"] = body["manifest"].replace('version: "1.4.0"', 'version: "1.5.0"').replace("0.2", "0.3")
    v2 = push(client, body)["version"]["version_id"]

    doc = client.get("/api/diff", params={"a": "support-triage@1.4.0", "b": "support-triage@1.5.0"}).json()
    assert (doc["a"], doc["b"]) == (v1, v2)
    by_path = {c["path"]: c for c in doc["changes"]}
    assert (by_path["model.parameters.temperature"]["before"], by_path["model.parameters.temperature"]["after"]) == (
        0.2, 0.3)
    assert set(doc["changes"][0]) == {"area", "kind", "path", "summary", "before", "after", "breaking", "detail"}
    assert client.get("/api/diff", params={"a": v1, "b": v1}).json()["changes"] == []
    assert client.get("/api/diff", params={"a": v1, "b": "feedfacefeed"}).status_code == 404
    assert client.get("/api/diff", params={"a": v1}).status_code == 422

    r = client.get("/api/agents/support-triage/changed")  # env defaults to prod
    assert r.status_code == 404 and "not deployed to prod" in r.json()["detail"]
    assert client.get("/api/agents/support-triage/changed", params={"env": "qa"}).status_code == 400
    deploy(client, v1, env="staging", approvals=APPROVE)
    only = client.get("/api/agents/support-triage/changed", params={"env": "staging"}).json()
    assert only == {"current": v1, "previous": None, "changes": []}


def test_inventory_finds_versions_by_tool_model_label_and_where_they_are_live(
    client: TestClient, tmp_path: Path
) -> None:
    root = make_agent(tmp_path / "a").parent
    triage = push(client, upload(root))["version"]["version_id"]
    other = upload(root)
    other["manifest"] = (MANIFEST.replace("name: support-triage", "name: faq-bot")
                         .replace("id: gpt-4o-mini", "id: claude-haiku").replace("data: customer", "data: public")
                         .replace("    - name: billing.refund\n      side_effect: irreversible\n", "    - name: noop\n"
                                  "      side_effect: read\n"))
    faq = push(client, other)["version"]["version_id"]

    def names(**params: Any) -> list[str]:
        r = client.get("/api/versions", params=params)
        assert r.status_code == 200, r.text
        return [v["name"] for v in r.json()["versions"]]

    refunds = client.get("/api/versions", params={"tool": "billing.refund"}).json()
    assert [v["version_id"] for v in refunds["versions"]] == [triage]
    assert refunds["versions"][0]["tool"]["side_effect"] == "irreversible"
    assert refunds["filters"]["tool"] == "billing.refund"
    assert names() == ["faq-bot", "support-triage"]
    assert names(model="claude-haiku") == ["faq-bot"]
    assert names(label="data=customer") == ["support-triage"]
    assert names(owner="team-support", tool="noop") == ["faq-bot"]
    assert names(env="prod") == [] and names(deployed=True) == []

    client.post("/api/agents/faq-bot/deploy", json={"ref": faq, "env": "prod", "by": "a", "approvals": APPROVE})
    live = client.get("/api/versions", params={"env": "prod"}).json()["versions"]
    assert [(v["name"], v["deployed_in"]) for v in live] == [("faq-bot", ["prod"])]
    assert names(tool="billing.refund", env="prod") == []
    assert client.get("/api/versions", params={"label": "no-equals-sign"}).status_code == 422


# --- environments and schemas -------------------------------------------------------------


def test_environments_are_listed_and_added(client: TestClient, tmp_path: Path) -> None:
    assert {e["name"] for e in client.get("/api/environments").json()["environments"]} == {"dev", "staging", "prod"}
    r = client.post("/api/environments", json={"name": "canary", "description": "1% of traffic"})
    assert r.status_code == 201 and (r.json()["name"], r.json()["description"]) == ("canary", "1% of traffic")
    again = client.post("/api/environments", json={"name": "canary", "description": "ignored"})
    assert again.status_code == 200 and again.json()["description"] == "1% of traffic"
    bad = client.post("/api/environments", json={"name": "Eu Prod"})
    assert bad.status_code == 400 and "lowercase letters" in bad.json()["detail"]
    assert client.post("/api/environments", json={"name": "x", "colour": "red"}).status_code == 422
    assert [e["name"] for e in client.get("/api/environments").json()["environments"]][-1] == "canary"

    push(client, upload(make_agent(tmp_path / "a").parent))
    assert deploy(client, "1.4.0", env="canary", approvals=APPROVE).json()["environment"] == "canary"


def test_schemas_compares_each_tools_observed_output_with_its_pinned_schema(
    client: TestClient, db_url: str, tmp_path: Path
) -> None:
    from proctor.store import open_engine

    from test_registry_schemas import Recorder

    version = push(client, upload(make_agent(tmp_path / "a").parent))["version"]["version_id"]
    engine = open_engine(db_url)
    try:
        rec = Recorder(engine)
        now = time.time_ns()
        for i in range(3):  # the pinned schema says id is a string
            rec.call("lookup_customer", {"id": 7 + i, "email": "a@b.c"}, now - (i + 1) * 1_000_000_000)
        rec.flush()
    finally:
        engine.dispose()

    r = client.get("/api/agents/support-triage/schemas", params={"window": "1h"})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert (doc["agent"], doc["version"], doc["window_ns"]) == ("support-triage", version, 3600 * 10**9)
    tools = {t["tool"]: t for t in doc["tools"]}
    lookup = tools["lookup_customer"]
    assert (lookup["calls"], lookup["changed"], lookup["pinned"]) == (3, True, True)
    [change] = lookup["vs_pinned"]
    assert (change["kind"], change["path"], change["before"], change["after"]) == ("type_changed", "id", "string",
                                                                                  "integer")
    assert len(change["example_span"]) == 2 and lookup["vs_earlier"] == []
    assert client.get("/api/agents/support-triage/schemas").json()["window_ns"] == 86_400 * 10**9

    r = client.get("/api/agents/support-triage/schemas", params={"env": "prod"})
    assert r.status_code == 404 and "not deployed to prod" in r.json()["detail"]
    deploy(client, "1.4.0", approvals=APPROVE)
    assert client.get("/api/agents/support-triage/schemas", params={"env": "prod"}).json()["version"] == version
    assert client.get("/api/agents/nobody/schemas").status_code == 404
    assert client.get("/api/agents/support-triage/schemas", params={"window": "yesterday"}).status_code == 422


def test_the_openapi_document_lists_the_registry_endpoints(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    expected = {
        "/api/agents": {"get"}, "/api/agents/push": {"post"}, "/api/agents/{name}/versions": {"get"},
        "/api/versions": {"get"}, "/api/versions/{ref}": {"get"}, "/api/agents/{name}/deploy": {"post"},
        "/api/agents/{name}/rollback": {"post"}, "/api/agents/{name}/history": {"get"},
        "/api/agents/{name}/at": {"get"}, "/api/agents/{name}/live": {"get"}, "/api/diff": {"get"}, "/api/agents/{name}/changed": {"get"},
        "/api/environments": {"get", "post"}, "/api/agents/{name}/schemas": {"get"},
    }
    for path, methods in expected.items():
        assert set(paths[path]) == methods, path
        for op in paths[path].values():
            assert op["tags"] == ["registry"] and op["summary"], path
    push_body = client.get("/openapi.json").json()["components"]["schemas"]["PushBody"]
    assert {"manifest", "files"} <= set(push_body["properties"]) and push_body["additionalProperties"] is False
