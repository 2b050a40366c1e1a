"""The agent registry as a team uses it: push versions, promote through gates, roll back, ask
what changed and who can call what. Every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from proctor.registry.manifest import ManifestError, load_manifest
from proctor.registry.service import PromotionRefused, Registry
from proctor.store.engine import open_engine
from proctor.store.registry import RegistryError, UnknownVersion

MANIFEST = """\
apiVersion: proctor/v1
kind: Agent
metadata:
  name: support-triage
  version: "1.4.0"
  description: Answers customers.
  owner: team-support
  labels: {data: customer}
spec:
  model:
    provider: openai
    id: gpt-4o-mini
    parameters: {temperature: 0.2, max_tokens: 800}
  prompts:
    system: prompts/system.md
  tools:
    - name: lookup_customer
      description: Find a customer.
      side_effect: read
      version: "1"
      input_schema: {type: object, properties: {email: {type: string}}, required: [email]}
      output_schema: schemas/customer.json
    - name: billing.refund
      side_effect: irreversible
      input_schema: {type: object, properties: {amount_usd: {type: number}}, required: [amount_usd]}
  policy: policy.yaml
  tier: execute_with_limits
  entrypoint: proctor.demo.fleet:support_triage
  gates:
    approvals: [{role: approver, count: 1}]
    policy_lint: true
"""

POLICY = """\
apiVersion: proctor/v1
kind: PolicyBundle
metadata: {name: support, version: "1"}
spec:
  default_effect: {read: allow, write: deny, external: deny, irreversible: deny}
  tools:
    - {name: lookup_customer, side_effect: read}
    - {name: billing.refund, side_effect: irreversible}
  rules:
    - {id: refunds-small, tools: billing.refund, when: "args.amount_usd <= 50", effect: allow}
"""


def make_agent(root: Path, manifest: str = MANIFEST, prompt: str = "You are a support agent.\n") -> Path:
    (root / "prompts").mkdir(parents=True, exist_ok=True)
    (root / "schemas").mkdir(exist_ok=True)
    (root / "prompts" / "system.md").write_text(prompt)
    (root / "schemas" / "customer.json").write_text(json.dumps(
        {"type": "object", "properties": {"id": {"type": "string"}, "email": {"type": "string"}}}))
    (root / "policy.yaml").write_text(POLICY)
    (root / "agent.yaml").write_text(manifest)
    return root / "agent.yaml"


@pytest.fixture()
def engine(db_url: str) -> Iterator[Engine]:
    eng = open_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture()
def registry(engine: Engine) -> Registry:
    return Registry(engine)


def test_a_version_is_the_hash_of_the_resolved_manifest_and_pushing_it_again_is_a_no_op(
    tmp_path: Path, registry: Registry
) -> None:
    path = make_agent(tmp_path / "a")
    v = load_manifest(path)
    assert v.manifest["prompts"]["system"]["content"] == "You are a support agent.\n"
    assert "path" not in json.dumps(v.manifest["prompts"])  # moving a file is not a change
    assert registry.push(path).created
    again = registry.push(make_agent(tmp_path / "moved-elsewhere"))
    assert not again.created and again.version.version_id == v.version_id
    assert [x.version_id for x in registry.store.list_versions("support-triage")] == [v.version_id]


@pytest.mark.parametrize("edit", [
    ("prompt", lambda root: (root / "prompts" / "system.md").write_text("You are a careful support agent.\n")),
    ("tool schema", lambda root: (root / "schemas" / "customer.json").write_text(
        json.dumps({"type": "object", "properties": {"id": {"type": "integer"}}}))),
    ("policy rule", lambda root: (root / "policy.yaml").write_text(POLICY.replace("<= 50", "<= 40"))),
    ("model parameter", lambda root: (root / "agent.yaml").write_text(MANIFEST.replace("0.2", "0.3"))),
])
def test_any_single_change_makes_a_new_version_whose_diff_names_exactly_that_change(
    tmp_path: Path, registry: Registry, edit: tuple[str, object]
) -> None:
    root = tmp_path / "agent"
    first = registry.push(make_agent(root)).version
    what, change = edit
    change(root)  # type: ignore[operator]
    second = registry.push(root / "agent.yaml")
    assert second.created and second.version.version_id != first.version_id
    _, _, changes = registry.diff(first.version_id, second.version.version_id)
    areas = {"prompt": "prompt", "tool schema": "tool", "policy rule": "policy", "model parameter": "model"}
    assert {c.area for c in changes} == {areas[what]}, changes


def test_an_invalid_manifest_is_refused_with_the_path_of_the_bad_field_and_missing_files_are_named(
    tmp_path: Path,
) -> None:
    path = make_agent(tmp_path, MANIFEST.replace("side_effect: read", "side_effect: reads"))
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    assert "spec.tools[0].side_effect" in str(err.value) and f"{path}:" in str(err.value)
    path = make_agent(tmp_path, MANIFEST.replace("prompts/system.md", "prompts/missing.md"))
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    assert "prompt file 'prompts/missing.md' not found" in str(err.value)
    path.write_text(MANIFEST)
    (tmp_path / "schemas" / "customer.json").unlink()
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    assert "spec.tools[0].output_schema" in str(err.value) and "'customer.json' not found" in str(err.value)


def test_promotion_runs_its_gates_and_a_refused_move_is_recorded_too(tmp_path: Path, registry: Registry) -> None:
    v = registry.push(make_agent(tmp_path)).version
    with pytest.raises(PromotionRefused) as err:
        registry.deploy(v.version_id, "prod", by="alice", reason="ship it")
    assert "approvals:approver: 0 of 1" in str(err.value)
    assert registry.store.current("support-triage", "prod") is None
    d = registry.deploy(v.short_id, "prod", by="alice", reason="ship it", approvals=[("bob", "approver")],
                        evidence=["https://ci.example/run/42"])
    assert d.status == "applied" and registry.store.current("support-triage", "prod") == v.version_id
    history = registry.store.history("support-triage", "prod")
    assert [(h.status, h.by) for h in history] == [("applied", "alice"), ("refused", "alice")]
    assert {g["gate"] for g in history[0].gates} == {"approvals:approver", "policy_lint"}
    assert history[0].evidence == ["https://ci.example/run/42"]


def test_deploying_an_unknown_version_or_to_an_unknown_environment_is_refused(
    tmp_path: Path, registry: Registry
) -> None:
    v = registry.push(make_agent(tmp_path)).version
    with pytest.raises(UnknownVersion):
        registry.deploy("deadbeefdead", "prod", approvals=[("bob", "approver")])
    with pytest.raises(RegistryError, match="unknown environment 'qa'"):
        registry.deploy(v.version_id, "qa", approvals=[("bob", "approver")])
    registry.store.add_environment("qa")
    assert registry.deploy(v.version_id, "qa", approvals=[("bob", "approver")]).status == "applied"


def test_rollback_restores_the_previous_known_good_version_and_history_answers_what_ran_when(
    tmp_path: Path, registry: Registry
) -> None:
    root = tmp_path / "agent"
    good = registry.push(make_agent(root)).version
    registry.deploy(good.version_id, "prod", approvals=[("bob", "approver")])
    t_good = time.time_ns()
    time.sleep(0.01)
    (root / "prompts" / "system.md").write_text("Be brief.\n")
    bad = registry.push(root / "agent.yaml").version
    registry.deploy(bad.version_id, "prod", approvals=[("bob", "approver")])
    cur, prev, changes = registry.what_changed("support-triage", "prod")
    assert (cur and cur.version_id, prev and prev.version_id) == (bad.version_id, good.version_id)
    assert [c.kind for c in changes] == ["prompt_changed"]
    d = registry.rollback("support-triage", "prod", by="oncall", reason="answers too short")
    assert d.action == "rollback" and d.version_id == good.version_id and d.previous_version_id == bad.version_id
    assert registry.store.current("support-triage", "prod") == good.version_id
    at = registry.store.at("support-triage", "prod", t_good)
    assert at is not None and at.version_id == good.version_id
    with pytest.raises(RegistryError, match="never been deployed to staging"):
        registry.rollback("support-triage", "staging")


def test_concurrent_promotions_are_serialized_and_none_is_lost(tmp_path: Path, engine: Engine) -> None:
    versions = []
    for i in range(4):
        root = tmp_path / f"a{i}"
        versions.append(Registry(engine).push(make_agent(root, prompt=f"prompt {i}\n")).version.version_id)
    errors: list[BaseException] = []

    def promote(vid: str) -> None:
        try:
            for _ in range(3):
                # refused when another promotion moved the pointer while this one checked its gates
                with contextlib.suppress(PromotionRefused):
                    Registry(engine).deploy(vid, "staging", approvals=[("bob", "approver")])
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=promote, args=(v,)) for v in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    history = Registry(engine).store.history("support-triage", "staging", limit=100)
    assert len(history) == 12  # every attempt recorded
    assert sorted(h.seq for h in history) == list(range(1, 13))  # one sequence, no gaps, no duplicates
    applied = [h for h in sorted(history, key=lambda h: h.seq) if h.status == "applied"]
    for before, after in itertools.pairwise(applied):
        assert after.previous_version_id == before.version_id  # each move saw the one before it
    assert Registry(engine).store.current("support-triage", "staging") == applied[-1].version_id


def test_the_inventory_answers_which_prod_agents_can_call_a_tool(tmp_path: Path, registry: Registry) -> None:
    v = registry.push(make_agent(tmp_path / "a")).version
    other = MANIFEST.replace("name: support-triage", "name: kb-researcher").replace(
        "    - name: billing.refund\n      side_effect: irreversible\n"
        "      input_schema: {type: object, properties: {amount_usd: {type: number}}, required: [amount_usd]}\n", "")
    kb = registry.push(make_agent(tmp_path / "b", other)).version
    registry.deploy(v.version_id, "prod", approvals=[("bob", "approver")])
    registry.deploy(kb.version_id, "prod", approvals=[("bob", "approver")])
    inv = registry.store.inventory(tool="billing.refund", env="prod")
    assert [(r["name"], r["deployed_in"], r["tool"]["side_effect"]) for r in inv.rows] == [
        ("support-triage", ["prod"], "irreversible")]
    assert {r["name"] for r in registry.store.inventory(model="gpt-4o-mini").rows} == {"support-triage", "kb-researcher"}
    assert {r["name"] for r in registry.store.inventory(label="data=customer", owner="team-support").rows} == {
        "support-triage", "kb-researcher"}
    assert registry.store.inventory(policy="support").rows


def test_sync_registers_a_directory_of_manifests_and_says_what_changed(tmp_path: Path, registry: Registry) -> None:
    make_agent(tmp_path / "agents" / "triage")
    first = registry.sync(tmp_path / "agents")
    assert [(i.name, i.created) for i in first] == [("support-triage", True)]
    assert [i.created for i in registry.sync(tmp_path / "agents")] == [False]
    (tmp_path / "agents" / "triage" / "prompts" / "system.md").write_text("Changed.\n")
    third = registry.sync(tmp_path / "agents")
    assert third[0].created and [c.kind for c in third[0].changes] == ["prompt_changed"]


RESOLVING_AGENT = """
import sys, time, proctor

@proctor.tool
def billing_refund(amount_usd: float) -> str:
    return "refunded"

proctor.init(service_name="resolving", instrument=False)
for round in range(2):
    with proctor.session(agent="support-triage", env="prod", session_id=f"sess-{round}"):
        try:
            print(round, billing_refund(amount_usd=45))
        except proctor.ActionDenied as err:
            print(round, "denied", err.decision.rule_id)
    if round == 0:
        print("waiting", flush=True)
        sys.stdin.readline()  # the test rolls prod back meanwhile
        time.sleep(1.1)       # pointers are re-read at most once a second
"""


@pytest.mark.parametrize("mode", ["embedded", "server"])
def test_a_session_runs_the_version_deployed_to_its_environment_and_a_rollback_reaches_it(
    tmp_path: Path, db_url: str, mode: str
) -> None:
    """The agent asks the registry on its own database (embedded), or the Proctor server's
    registry over HTTP with no database of its own (server)."""
    import os
    import subprocess
    import sys

    from proctor.store import SpanStore, TraceFilter
    from proctor.traces import trace_detail, trace_list

    strict = POLICY.replace("name: billing.refund, side_effect: irreversible",
                            "name: billing_refund, side_effect: irreversible").replace(
        "tools: billing.refund", "tools: billing_refund")
    lenient = strict.replace("<= 50", "<= 100")
    strict = strict.replace("<= 50", "<= 40")
    root = tmp_path / "agent"
    make_agent(root)
    engine = open_engine(db_url)
    reg = Registry(engine)
    (root / "policy.yaml").write_text(lenient)
    good = reg.push(root / "agent.yaml").version
    reg.deploy(good.version_id, "prod", approvals=[("bob", "approver")])
    (root / "policy.yaml").write_text(strict)
    bad = reg.push(root / "agent.yaml").version
    reg.deploy(bad.version_id, "prod", approvals=[("bob", "approver")])

    server = None
    if mode == "server":
        from proctor.server.run import start_in_thread

        from conftest import free_port

        port = free_port()
        server, _ = start_in_thread(port=port, database_url=db_url)
        env = {"PROCTOR_URL": f"http://127.0.0.1:{port}", "PROCTOR_DATABASE_URL": ""}
    else:
        env = {"PROCTOR_DATABASE_URL": db_url, "PROCTOR_URL": ""}
    proc = subprocess.Popen([sys.executable, "-c", RESOLVING_AGENT], cwd=tmp_path, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, **env})
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "0 denied None"  # 45 > 40: the strict bundle's default deny
        assert proc.stdout.readline().strip() == "waiting"
        reg.rollback("support-triage", "prod", by="oncall")
        out, err = proc.communicate("go\n", timeout=60)  # exiting flushes its spans
    finally:
        proc.kill()
        if server is not None:
            server.should_exit = True
    assert proc.returncode == 0, err
    assert out.strip() == "1 refunded"  # the rolled-back version's bundle allows 45

    store = SpanStore(engine)
    stamped = {}
    for t in trace_list(store, TraceFilter(agent="support-triage"))["traces"]:
        root_span = trace_detail(store, t["trace_id"])["spans"][0]
        full = store.get_span(root_span["span_id"])
        assert full is not None
        stamped[t["session_id"]] = (full["agent_version"], full["agent_version_hash"])
    assert stamped == {"sess-0": ("1.4.0", bad.version_id), "sess-1": ("1.4.0", good.version_id)}
    engine.dispose()
