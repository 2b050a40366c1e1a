"""The agents pages: what a person sees of the registry in the browser.

Against the demo's data: three agents, support-triage 1.4.0 in prod and its 1.5.0-rc.1 canary in
staging, the canary promoted to prod mid-run and rolled back (so the history has moves).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from console.conftest import serve, stop
from proctor.registry.service import Registry
from proctor.store import open_engine

CANARY, STABLE = "1.5.0-rc.1", "1.4.0"
NEW_PROMPT_LINE = "Tell the customer what happens next and when they will hear from us."


def _twin(console, path: str) -> dict:  # type: ignore[no-untyped-def]
    r = console.get(path)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json"), r.text[:300]
    return r.json()


def _cell(page, row: str, env: str) -> str:  # type: ignore[no-untyped-def]
    return page.locator(f"tr[data-agent='{row}'] td[data-env='{env}']").inner_text().strip()


def test_agents_list_every_demo_agent_with_where_each_version_is_live(console, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(console.url + "/agents")
    rows = page.locator("table.agents-table tbody tr")
    assert sorted(rows.evaluate_all("rs => rs.map(r => r.dataset.agent)")) == [
        "kb-researcher", "refund-agent", "support-triage"]
    # after the scripted promote-then-rollback, prod runs the stable version again; staging has the canary
    assert _cell(page, "support-triage", "prod").startswith(STABLE)
    assert _cell(page, "support-triage", "staging").startswith(CANARY)
    assert _cell(page, "refund-agent", "prod").startswith("2.1.3")
    assert _cell(page, "kb-researcher", "prod").startswith("0.9.2")
    triage = page.locator("tr[data-agent='support-triage']")
    assert "team-support" in triage.inner_text() and "data=customer" in triage.inner_text()

    doc = _twin(console, "/agents.json")
    by_name = {a["name"]: a for a in doc["agents"]}
    assert set(by_name) == {"kb-researcher", "refund-agent", "support-triage"}
    assert by_name["support-triage"]["versions"] == 2
    assert by_name["support-triage"]["deployed"]["prod"]["label"] == STABLE
    assert by_name["support-triage"]["deployed"]["staging"]["label"] == CANARY
    assert by_name["support-triage"]["owner"] == "team-support"
    # the page links each agent to its own page
    page.click("a.agent-name:text-is('support-triage')")
    page.wait_for_url(console.url + "/agents/support-triage")


def test_agent_page_shows_versions_deployments_and_the_promote_rollback_history(console, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(console.url + "/agents/support-triage")
    assert page.locator("h1").inner_text() == "support-triage"
    versions = page.locator("table.versions tbody tr")
    assert versions.count() == 2
    assert versions.nth(0).locator("td").first.inner_text() == CANARY  # newest first
    assert versions.nth(1).locator("td").first.inner_text() == STABLE

    assert STABLE in page.locator("table.deployments tr[data-env='prod']").inner_text()
    assert CANARY in page.locator("table.deployments tr[data-env='staging']").inner_text()
    assert page.locator("table.deployments tr[data-env='dev']").inner_text().count("–") >= 1

    moves = page.locator("table.history tbody tr")
    texts = moves.all_inner_texts()
    assert len(texts) == 4  # stable -> prod, canary -> staging, canary -> prod, rollback
    rollback = page.locator("table.history tr[data-action='rollback']")
    assert rollback.count() == 1
    assert "prod" in rollback.inner_text() and "applied" in rollback.inner_text()
    assert "restores the previous known-good version" in rollback.inner_text()
    promote = [t for t in texts if "promote the canary" in t]
    assert len(promote) == 1 and CANARY in promote[0] and "approvals:approver" in promote[0]
    assert "demo-release-manager (simulated)" in promote[0]

    doc = _twin(console, "/agents/support-triage.json")
    assert [v["label"] for v in doc["versions"]] == [CANARY, STABLE]
    newest = doc["history"][0]
    assert (newest["environment"], newest["action"], newest["status"]) == ("prod", "rollback", "applied")
    assert len(doc["history"]) == len(texts)
    prod = next(d for d in doc["deployments"] if d["environment"] == "prod")
    assert prod["version"]["label"] == STABLE and prod["previous"]["label"] == CANARY


def test_what_changed_compares_the_live_prod_version_with_the_one_before(console, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(console.url + "/agents/support-triage")
    page.click("#what-changed")
    page.wait_for_url("**/diff?**")
    # prod was rolled back: the live version is the stable one, the one before it the canary
    assert page.locator(".diff-side.left").inner_text().count(CANARY) == 1
    assert page.locator(".diff-side.right").inner_text().count(STABLE) == 1
    row = page.locator("table.changes tr[data-path='model.id']")
    assert "claude-3-5-haiku" in row.locator("td.before").inner_text()
    assert "gpt-4o-mini" in row.locator("td.after").inner_text()


def test_diff_of_canary_and_stable_shows_model_change_and_prompt_line_side_by_side(console, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(console.url + "/diff")
    page.select_option("#diff-agent", "support-triage")  # reloads with that agent's versions
    page.wait_for_selector("#diff-a")
    page.select_option("#diff-a", label=page.locator("#diff-a option", has_text=STABLE).inner_text())
    page.select_option("#diff-b", label=page.locator("#diff-b option", has_text=CANARY).inner_text())
    page.click("#diff-form button[type=submit]")
    page.wait_for_selector("#diff-summary")
    assert "a=" in page.url and "b=" in page.url  # a deep link

    model = page.locator("table.changes tr[data-path='model.id']")
    assert model.locator("td.before").inner_text().strip() == "gpt-4o-mini"
    assert model.locator("td.after").inner_text().strip() == "claude-3-5-haiku"
    provider = page.locator("table.changes tr[data-path='model.provider']")
    assert provider.locator("td.before").inner_text().strip() == "openai"

    # the prompt: a two-column table, the added line on the right, nothing opposite it on the left
    table = page.locator("#prompt-system table.sbs")
    inserted = table.locator("tr.insert")
    assert inserted.count() == 1
    right, left = inserted.locator("td.r"), inserted.locator("td.l")
    assert right.inner_text() == NEW_PROMPT_LINE
    assert left.inner_text() == ""
    lbox, rbox = left.bounding_box(), right.bounding_box()
    assert lbox and rbox and lbox["x"] + lbox["width"] <= rbox["x"] and abs(lbox["y"] - rbox["y"]) < 2
    highlight = right.locator("mark")
    assert highlight.inner_text() == NEW_PROMPT_LINE
    assert page.evaluate("e => getComputedStyle(e).backgroundColor", right.element_handle()) != "rgba(0, 0, 0, 0)"
    # unchanged lines stand opposite each other, numbered on both sides
    same = table.locator("tr.equal").first
    assert same.locator("td.l").inner_text() == same.locator("td.r").inner_text() != ""

    twin = _twin(console, "/diff.json?" + page.url.split("?", 1)[1])
    api = console.get("/api/diff", a=twin["a"]["version_id"], b=twin["b"]["version_id"]).json()
    assert [(c["kind"], c["path"]) for c in twin["changes"]] == [(c["kind"], c["path"]) for c in api["changes"]]
    assert twin["a"]["label"] == STABLE and twin["b"]["label"] == CANARY
    rows = twin["prompts"][0]["rows"]
    assert [r["right"][0][0] for r in rows if r["tag"] == "insert"] == [NEW_PROMPT_LINE]


def _agent_dir(root: Path, *, version: str, prompt: str, input_schema: str, output_schema: str) -> Path:
    d = root / version
    (d / "prompts").mkdir(parents=True)
    (d / "prompts" / "system.md").write_text(prompt)
    (d / "in.json").write_text(input_schema)
    (d / "out.json").write_text(output_schema)
    (d / "agent.yaml").write_text(f"""
apiVersion: proctor/v1
kind: Agent
metadata: {{name: schema-demo, version: "{version}", owner: team-test}}
spec:
  model: {{provider: openai, id: gpt-4o-mini}}
  prompts: {{system: prompts/system.md}}
  tools:
    - name: lookup
      side_effect: read
      input_schema: in.json
      output_schema: out.json
""")
    return d / "agent.yaml"


def test_diff_marks_breaking_and_compatible_tool_schema_changes(tmp_path, page) -> None:  # type: ignore[no-untyped-def]
    db = f"sqlite:///{tmp_path / 'proctor.db'}"
    long_prompt = [f"Rule {i}: be helpful." for i in range(1, 31)]
    changed_prompt = list(long_prompt)
    changed_prompt[14] = "Rule 15: be brief and helpful."
    old = _agent_dir(tmp_path, version="1.0.0", prompt="\n".join(long_prompt) + "\n",
                     input_schema='{"type": "object", "properties": {"email": {"type": "string"}}}',
                     output_schema='{"type": "object", "properties": {"id": {"type": "string"}}}')
    new = _agent_dir(tmp_path, version="1.1.0", prompt="\n".join(changed_prompt) + "\n",
                     input_schema='{"type": "object", "properties": {"email": {"type": "string"}, '
                                  '"tenant": {"type": "string"}}, "required": ["tenant"]}',
                     output_schema='{"type": "object", "properties": {"id": {"type": "string"}, '
                                   '"name": {"type": "string"}}}')
    engine = open_engine(db)
    try:
        reg = Registry(engine)
        a, b = reg.push(old, by="test").version, reg.push(new, by="test").version
    finally:
        engine.dispose()
    url, server, thread = serve(db)
    try:
        page.goto(f"{url}/diff?a={a.version_id}&b={b.version_id}")
        breaking = page.locator("table.changes tr.is-breaking")
        assert breaking.count() == 1
        assert "input_schema" in breaking.get_attribute("data-path")
        assert breaking.locator(".badge.breaking").inner_text() == "breaking"
        compatible = page.locator("table.changes tr", has=page.locator(".badge.compatible"))
        assert compatible.count() == 1 and "output_schema" in compatible.get_attribute("data-path")
        assert "1 breaking" in page.locator("#diff-summary").inner_text()
        # a long prompt: the changed line with its context, the rest folded away
        table = page.locator("#prompt-system table.sbs")
        change = table.locator("tr.change")
        assert change.count() == 1
        assert change.locator("td.l").inner_text() == "Rule 15: be helpful."
        assert change.locator("td.l mark").count() == 0  # nothing was taken out of the old line
        assert "brief and" in change.locator("td.r mark").inner_text()
        assert table.locator("tr.skip").count() == 2
        assert table.locator("tr.equal").count() == 6  # three lines either side
        assert "unchanged lines" in table.locator("tr.skip").first.inner_text()
    finally:
        stop(server, thread)


def test_version_page_shows_prompts_and_pretty_tool_schemas(console, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(console.url + f"/versions/support-triage@{CANARY}")
    assert CANARY in page.locator("h1").inner_text()
    assert NEW_PROMPT_LINE in page.locator("#prompt-system pre").inner_text()
    tool = page.locator("#tool-send_email")
    tool.locator("summary").click()
    schema = tool.locator("pre.json").first.inner_text()
    assert '"properties": {' in schema and "\n  " in schema  # indented, one key per line
    assert "claude-3-5-haiku" in page.locator("main").inner_text()
    assert page.locator("a[href^='/policies/bundles/']").first.inner_text().startswith("demo-support")
    doc = _twin(console, f"/versions/support-triage@{CANARY}.json")
    assert doc["agent_version"]["label"] == CANARY and doc["prompts"][0]["name"] == "system"
    assert doc["deployed_in"] == ["staging"]


def test_inventory_filtered_by_a_tool_lists_only_versions_that_may_call_it(console, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(console.url + "/inventory")
    everything = page.locator("table.inventory tbody tr").count()
    assert everything == 4
    page.select_option("#inv-tool", "issue_refund")
    page.click("#inventory-form button[type=submit]")
    page.wait_for_url("**/inventory?*tool=issue_refund*")
    rows = page.locator("table.inventory tbody tr")
    assert 0 < rows.count() < everything
    assert set(rows.evaluate_all("rs => rs.map(r => r.dataset.agent)")) == {"refund-agent"}
    assert "irreversible" in rows.first.inner_text()  # the tool's side effect, for the blast radius

    page.select_option("#inv-tool", "send_email")
    page.select_option("#inv-env", "prod")
    page.click("#inventory-form button[type=submit]")
    page.wait_for_url("**env=prod**")
    rows = page.locator("table.inventory tbody tr")
    assert rows.count() == 1 and STABLE in rows.inner_text()

    doc = _twin(console, "/inventory.json?tool=send_email&env=prod")
    api = console.get("/api/versions", tool="send_email", env="prod").json()
    assert [r["version_id"] for r in doc["versions"]] == [r["version_id"] for r in api["versions"]]
    assert len(doc["versions"]) == 1


def test_inventory_label_filter_must_be_key_value(console, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(console.url + "/inventory?label=customer")
    assert "KEY=VALUE" in page.locator(".flash.err").inner_text()
    page.goto(console.url + "/inventory?label=data%3Dpublic")
    rows = page.locator("table.inventory tbody tr")
    assert set(rows.evaluate_all("rs => rs.map(r => r.dataset.agent)")) == {"kb-researcher"}


@pytest.mark.parametrize("path", ["/agents/no-such-agent", "/versions/no-such-version", "/diff?a=zzzzzz&b=yyyyyy"])
def test_unknown_agent_or_version_is_a_readable_404(console, page, path: str) -> None:  # type: ignore[no-untyped-def]
    response = page.goto(console.url + path)
    assert response is not None and response.status == 404
    assert page.locator("h1").inner_text() == "404"
    assert page.locator(".error-detail").inner_text()


@pytest.mark.parametrize("path", ["/agents", "/agents/support-triage", f"/versions/support-triage@{CANARY}",
                                  f"/diff?a=support-triage@{STABLE}&b=support-triage@{CANARY}",
                                  "/inventory?tool=send_email"])
def test_agents_pages_fit_1280_px_in_both_themes(console, page, path: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(console.url + path)
    backgrounds = set()
    for theme in ("light", "dark"):
        page.evaluate(f"document.documentElement.setAttribute('data-theme', '{theme}')")
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280, f"{path} scrolls sideways ({theme})"
        backgrounds.add(page.evaluate("getComputedStyle(document.querySelector('table, pre')).backgroundColor + "
                                      "getComputedStyle(document.body).color"))
    assert len(backgrounds) == 2  # the page's own styles follow the theme
