"""The policy bundle language: what a bundle may say, what is refused, and what it decides.

Each test is one rule of the language, checked through the public loader and the engine
(``PolicySet.evaluate``: the stateless part of every decision — tool and LLM rules, capability
tiers, defaults). Stateful rules (budgets, loops, rate limits, scanners, taint) are the guard's
and are specified in tests/test_guard.py.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import cel
import pytest

from proctor.policy import Action, PolicyError, PolicySet, load_bundle_text, load_bundles
from proctor.policy.cel import compile_condition
from proctor.policy.engine import cel_variables
from proctor.policy.model import PolicyBundle

HEAD = """\
apiVersion: proctor/v1
kind: PolicyBundle
metadata: {name: %(name)s, version: "1"}
"""


def bundle(spec: str, name: str = "b") -> str:
    """A bundle document: the common head and ``spec`` (YAML under ``spec:``; a spec that starts
    with :data:`CATALOGUE` has the rest dedented on its own)."""
    parts = [spec]
    if spec.startswith(CATALOGUE):
        parts = [CATALOGUE, spec[len(CATALOGUE):]]
    body = "\n".join(textwrap.dedent(p).strip("\n") for p in parts)
    return HEAD % {"name": name} + "spec:\n" + textwrap.indent(body, "  ") + "\n"


def load(spec: str, name: str = "b") -> PolicyBundle:
    [b] = load_bundle_text(bundle(spec, name), f"{name}.yaml")
    return b


def policy(*specs: str) -> PolicySet:
    return PolicySet([load(s, f"b{i}") for i, s in enumerate(specs)])


def problems(text: str, source: str = "p.yaml") -> list[tuple[int, str, str]]:
    with pytest.raises(PolicyError) as err:
        load_bundle_text(text, source)
    assert all(p.source == source for p in err.value.problems)
    return [(p.line, p.where, p.message) for p in err.value.problems]


def call(tool: str, args: dict[str, Any] | None = None, *, agent: str = "support-triage",
         env: str | None = None, labels: dict[str, str] | None = None) -> Action:
    return Action("tool_call", agent, env, labels or {}, "s-1", tool, args or {})


def llm(model: str, max_tokens: int | None = None, agent: str = "support-triage") -> Action:
    return Action("llm_call", agent, model=model, max_tokens=max_tokens)


CATALOGUE = """
default_effect: {read: allow, write: deny, external: deny, irreversible: deny}
tools:
  - {name: "crm.*", side_effect: read}
  - {name: send_email, side_effect: external}
  - {name: issue_refund, side_effect: irreversible}
"""


# ---------------------------------------------------------------------------------------------
# What is refused, and where


def test_invalid_yaml_is_refused_with_the_line_of_the_error() -> None:
    text = bundle("rules:\n  - id: a\n    effect: allow: now")
    [(line, _, message)] = problems(text)
    assert (line, message) == (7, "invalid YAML: mapping values are not allowed here")


def test_an_unknown_key_is_refused_at_its_own_line_with_the_keys_allowed_there() -> None:
    text = bundle("""
        rules:
          - id: refunds
            tool: issue_refund      # a typo for `tools`
            effect: deny
    """)
    [(line, where, message)] = problems(text)
    assert (line, where) == (7, "spec.rules[0].tool")
    assert "unknown key 'tool'" in message and "tools" in message


def test_a_bad_cel_condition_is_refused_with_file_and_the_line_of_its_when() -> None:
    text = bundle("""
        rules:
          - id: refunds-small
            tools: issue_refund
            when: args.amount_usd <=
            effect: allow
    """)
    with pytest.raises(PolicyError) as err:
        load_bundle_text(text, "support.yaml")
    [p] = err.value.problems
    assert str(p).startswith("support.yaml:8: spec.rules[0].when: invalid CEL")


def test_a_condition_naming_an_unknown_variable_is_refused() -> None:
    [(_, where, message)] = problems(bundle("rules: [{id: a, when: 'user.admin', effect: allow}]"))
    assert where == "spec.rules[0].when"
    assert "unknown variable 'user'" in message and "args" in message


def test_a_duplicate_rule_id_is_refused_naming_both_lines() -> None:
    text = bundle("""
        rules:
          - id: refunds
            effect: allow
          - id: refunds
            effect: deny
    """)
    assert problems(text) == [(8, "spec.rules[1].id", "duplicate rule id 'refunds' (first at line 6)")]


def test_a_key_given_twice_is_refused_rather_than_silently_dropping_the_first() -> None:
    text = bundle("""
        rules:
          - {id: a, effect: deny}
        rules:
          - {id: b, effect: allow}
    """)
    assert problems(text) == [(7, "spec.rules", "duplicate key 'rules' (first at line 5)")]


def test_every_problem_is_reported_at_once() -> None:
    text = bundle("""
        rules:
          - {id: a, when: "args.x >", effect: allow}
          - {id: a, effect: deny}
          - {id: c, when: "nope == 1", effect: deny}
    """)
    found = problems(text)
    assert [(line, where) for line, where, _ in found] == [
        (6, "spec.rules[0].when"), (7, "spec.rules[1].id"), (8, "spec.rules[2].when")]
    schema_errors = problems(bundle("""
        mode: sometimes
        rules:
          - {id: a, effect: maybe}
          - {effect: deny}
    """))
    assert {where for _, where, _ in schema_errors} == {"spec.mode", "spec.rules[0].effect", "spec.rules[1]"}


def test_problems_in_several_files_are_all_reported_and_nothing_is_loaded(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(bundle("rules: [{id: a, when: 'args.x >', effect: allow}]", "a"))
    (tmp_path / "b.yaml").write_text(bundle("mode: sometimes", "b"))
    (tmp_path / "c.yaml").write_text(bundle("rules: [{id: c, effect: deny}]", "c"))
    with pytest.raises(PolicyError) as err:
        load_bundles([tmp_path])
    assert [(Path(p.source).name, p.where) for p in err.value.problems] == [
        ("a.yaml", "spec.rules[0].when"), ("b.yaml", "spec.mode")]


def test_a_bundle_name_defined_twice_is_refused(tmp_path: Path) -> None:
    (tmp_path / "one.yaml").write_text(bundle("{}", "support"))
    (tmp_path / "two.yaml").write_text(bundle("{}", "support"))
    with pytest.raises(PolicyError, match="bundle 'support' is also defined in"):
        load_bundles([tmp_path])


def test_a_directory_loads_its_bundles_and_leaves_test_case_files_alone(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(bundle("{}", "a"))
    (tmp_path / "b.yml").write_text(bundle("{}", "b"))
    (tmp_path / "a.cases.yaml").write_text("cases: []\n")
    (tmp_path / "notes.txt").write_text("not a bundle")
    assert [b.name for b in load_bundles([tmp_path])] == ["a", "b"]


def test_the_content_hash_ignores_comments_and_formatting_but_changes_with_content() -> None:
    block = load("""
        # refunds
        rules:
          - id: r
            effect: deny      # no refunds today
    """)
    flow = load("rules: [{effect: deny, id: r}]")
    changed = load("rules: [{effect: allow, id: r}]")
    assert block.hash == flow.hash
    assert changed.hash != block.hash
    assert len(block.hash) == 64


# ---------------------------------------------------------------------------------------------
# Effects and defaults


def test_deny_beats_allow_whichever_comes_first() -> None:
    for rules in ("[{id: ok, tools: send_email, effect: allow}, {id: block, tools: send_email, effect: deny}]",
                  "[{id: block, tools: send_email, effect: deny}, {id: ok, tools: send_email, effect: allow}]"):
        d = policy(CATALOGUE + "rules: " + rules).evaluate(call("send_email"))
        assert (d.effect, d.rule_id) == ("deny", "block")
        assert {m.rule_id for m in d.matches} == {"ok", "block"}


def test_a_warn_rule_does_not_open_a_default_deny_door() -> None:
    ps = policy(CATALOGUE + "rules: [{id: heads-up, tools: [send_email, crm.*], effect: warn}]")
    email = ps.evaluate(call("send_email"))
    assert (email.effect, email.rule_id) == ("deny", None)  # external: default deny still decides
    read = ps.evaluate(call("crm.lookup"))
    assert (read.effect, read.rule_id) == ("warn", "heads-up")  # read: default allow, the warning rides on it


def test_the_default_effect_follows_the_side_effect_class_and_unlisted_tools_count_as_writes() -> None:
    ps = policy(CATALOGUE)
    decided = {t: ps.evaluate(call(t)) for t in ("crm.lookup", "send_email", "issue_refund", "drop_table")}
    assert {t: (d.effect, d.side_effect) for t, d in decided.items()} == {
        "crm.lookup": ("allow", "read"), "send_email": ("deny", "external"),
        "issue_refund": ("deny", "irreversible"), "drop_table": ("deny", "write"),
    }
    assert decided["send_email"].message == "default effect for external tools"


def test_one_default_effect_for_every_class_and_model_calls_allowed_by_default() -> None:
    ps = policy("default_effect: deny")
    assert ps.evaluate(call("anything")).effect == "deny"
    assert ps.evaluate(llm("gpt-4o")).effect == "allow"  # a model call has its own class: `llm`
    assert policy("default_effect: {llm: deny}").evaluate(llm("gpt-4o")).effect == "deny"


def test_llm_rules_judge_model_calls_by_model_glob_and_condition() -> None:
    ps = policy("""
        rules:
          - {id: big, models: "gpt-*", when: "llm.max_tokens > 4000", effect: deny}
          - {id: no-preview, models: "*-preview", effect: deny}
    """)
    assert ps.evaluate(llm("gpt-4o", 9000)).rule_id == "big"
    assert ps.evaluate(llm("gpt-4o", 500)).effect == "allow"
    assert ps.evaluate(llm("claude-3-5-haiku", 9000)).effect == "allow"
    assert ps.evaluate(llm("o1-preview")).rule_id == "no-preview"
    assert ps.evaluate(call("send_email")).effect == "allow"  # LLM rules never judge tool calls


def test_a_rule_judges_only_the_agents_and_stages_it_names() -> None:
    ps = policy(CATALOGUE + """
        rules:
          - {id: triage-email, tools: send_email, agents: "support-*", effect: allow}
          - {id: no-secrets-out, tools: "crm.*", stages: [tool_result], when: "content.contains('ssn')",
             effect: redact}
    """)
    assert ps.evaluate(call("send_email", agent="support-triage")).effect == "allow"
    assert ps.evaluate(call("send_email", agent="billing-bot")).effect == "deny"
    assert ps.evaluate(call("crm.lookup")).effect == "allow"  # a result rule is not judged before the call
    result = Action("tool_result", "support-triage", tool="crm.lookup", content="ssn: 123")
    assert ps.evaluate(result).effect == "redact"


# ---------------------------------------------------------------------------------------------
# Shadow mode and fail modes


def test_a_shadow_rule_is_recorded_but_not_enforced() -> None:
    ps = policy(CATALOGUE + """
        rules:
          - {id: email-ok, tools: send_email, effect: allow}
          - {id: no-email-at-night, tools: send_email, effect: deny, mode: shadow}
    """)
    d = ps.evaluate(call("send_email"))
    assert (d.effect, d.rule_id, d.shadow_effect) == ("allow", "email-ok", "deny")
    assert [(m.rule_id, m.enforced) for m in d.matches] == [("email-ok", True), ("no-email-at-night", False)]
    assert "[shadow] no-email-at-night: deny" in d.reasons


def test_a_shadow_effect_is_only_set_when_it_differs() -> None:
    ps = policy(CATALOGUE + "rules: [{id: s, tools: send_email, effect: deny, mode: shadow}]")
    assert ps.evaluate(call("send_email")).shadow_effect is None  # denied by default either way


def test_a_shadow_bundle_never_blocks_not_even_through_its_defaults_or_tiers() -> None:
    ps = policy(CATALOGUE + """
        mode: shadow
        capabilities: [{agents: "intern-*", tier: draft_only}]
        rules: [{id: big-refunds, tools: issue_refund, when: "args.amount_usd > 50", effect: require_approval}]
    """)
    small = ps.evaluate(call("issue_refund", {"amount_usd": 10}))
    assert (small.effect, small.shadow_effect) == ("allow", "deny")  # the default-deny it would apply
    big = ps.evaluate(call("issue_refund", {"amount_usd": 80}))
    assert (big.effect, big.shadow_effect) == ("allow", "require_approval")
    intern = ps.evaluate(call("send_email", agent="intern-1"))
    assert (intern.effect, intern.shadow_effect, intern.draft) == ("allow", "deny", False)
    assert [(m.rule_id, m.enforced) for m in intern.matches] == [("capability:draft_only", False)]


def test_a_condition_that_cannot_be_evaluated_fails_closed_for_a_side_effecting_tool() -> None:
    ps = policy(CATALOGUE + """
        rules: [{id: refunds-small, tools: issue_refund, when: "args.amount_usd <= 50", effect: allow}]
    """)
    d = ps.evaluate(call("issue_refund", {"order_id": "O-1"}))  # no amount_usd
    assert (d.effect, d.rule_id) == ("deny", "refunds-small")
    [m] = d.matches
    assert m.error is not None and "fail-closed" in m.reason and "amount_usd" in m.error


def test_a_condition_that_cannot_be_evaluated_fails_open_for_a_read() -> None:
    ps = policy(CATALOGUE + "rules: [{id: big-lookups, tools: 'crm.*', when: 'args.limit > 100', effect: deny}]")
    d = ps.evaluate(call("crm.search", {"q": "x"}))
    assert (d.effect, d.rule_id) == ("allow", None)
    [m] = d.matches
    assert not m.enforced and "fail-open" in m.reason  # recorded, not counted


def test_an_explicit_fail_mode_overrides_the_default_for_the_class() -> None:
    ps = policy(CATALOGUE + """
        rules:
          - {id: open-write, tools: send_email, when: "args.to.endsWith('@corp.example')", effect: allow,
             fail_mode: open}
          - {id: closed-read, tools: "crm.*", when: "args.limit > 100", effect: warn, fail_mode: closed}
    """)
    assert ps.evaluate(call("send_email", {})).rule_id is None  # not matched: the default (deny) decides
    assert ps.evaluate(call("crm.search", {})).effect == "deny"  # matched, at least deny


def test_a_condition_that_returns_a_non_boolean_is_an_evaluation_error() -> None:
    ps = policy(CATALOGUE + "rules: [{id: odd, tools: send_email, when: 'args.to', effect: allow}]")
    d = ps.evaluate(call("send_email", {"to": "a@b.c"}))
    assert d.effect == "deny" and d.matches[0].error is not None


# ---------------------------------------------------------------------------------------------
# Capability tiers


@pytest.mark.parametrize(("tier", "effect", "rule_id", "draft"), [
    ("draft_only", "deny", "capability:draft_only", True),
    ("execute_with_approval", "require_approval", "capability:execute_with_approval", False),
    ("execute_with_limits", "allow", "email-ok", False),
    ("autonomous", "allow", "email-ok", False),
])
def test_a_capability_tier_governs_side_effecting_calls(tier: str, effect: str, rule_id: str, draft: bool) -> None:
    ps = policy(CATALOGUE + f"""
        capabilities: [{{agents: "agent-*", tier: {tier}}}]
        rules: [{{id: email-ok, tools: send_email, effect: allow}}]
    """)
    d = ps.evaluate(call("send_email", agent="agent-1"))
    assert (d.effect, d.rule_id, d.draft) == (effect, rule_id, draft)
    assert ps.evaluate(call("crm.lookup", agent="agent-1")).effect == "allow"  # reads are never held back


def test_an_autonomous_agent_gets_warnings_where_others_need_approval() -> None:
    spec = CATALOGUE + """
        capabilities: [{agents: "auto-*", tier: autonomous}]
        rules: [{id: big-refunds, tools: issue_refund, when: "args.amount_usd > 50", effect: require_approval}]
    """
    ps = policy(spec)
    assert ps.evaluate(call("issue_refund", {"amount_usd": 80}, agent="person-1")).effect == "require_approval"
    d = ps.evaluate(call("issue_refund", {"amount_usd": 80}, agent="auto-1"))
    assert (d.effect, d.rule_id) == ("warn", "big-refunds")  # runs, with the warning on record
    # no rule matches a small refund: the default (deny) decides, whatever the tier
    assert ps.evaluate(call("issue_refund", {"amount_usd": 10}, agent="auto-1")).effect == "deny"
    # a rule that only warns still cannot open that door
    warn_only = policy(CATALOGUE + "capabilities: [{agents: 'auto-*', tier: autonomous}]\n"
                       "rules: [{id: w, tools: issue_refund, effect: warn}]")
    assert warn_only.evaluate(call("issue_refund", agent="auto-1")).effect == "deny"


# ---------------------------------------------------------------------------------------------
# Scope and combining bundles


def test_a_bundle_governs_only_the_agents_environments_and_labels_in_its_scope() -> None:
    ps = policy("""
        scope: {agents: ["support-*"], environments: [prod], labels: {team: cx}}
        default_effect: deny
    """)
    cx = {"team": "cx"}
    assert ps.evaluate(call("x", agent="support-triage", env="prod", labels=cx)).effect == "deny"
    assert ps.evaluate(call("x", agent="billing-bot", env="prod", labels=cx)).effect == "allow"
    assert ps.evaluate(call("x", agent="support-triage", env="staging", labels=cx)).effect == "allow"
    assert ps.evaluate(call("x", agent="support-triage", env="prod", labels={"team": "ops"})).effect == "allow"
    assert ps.evaluate(call("x", agent="support-triage", env="prod")).effect == "allow"
    assert ps.evaluate(call("x", agent="support-triage", env=None, labels=cx)).effect == "allow"


def test_an_empty_policy_allows_everything() -> None:
    d = PolicySet([]).evaluate(call("drop_table"))
    assert (d.effect, d.policy_hash) == ("allow", "none")


def test_several_bundles_combine_and_the_strongest_effect_wins() -> None:
    team = CATALOGUE + "rules: [{id: team-email, tools: send_email, effect: allow}]"
    org = """
        default_effect: {write: require_approval}
        capabilities: [{agents: "intern-*", tier: draft_only}]
        rules: [{id: org-no-refunds, tools: issue_refund, effect: deny}]
    """
    ps = PolicySet([load(team, "team"), load(org, "org")])
    assert ps.evaluate(call("send_email")).effect == "allow"  # a rule decides; defaults do not join in
    assert ps.evaluate(call("issue_refund")).rule_id == "org-no-refunds"
    assert ps.evaluate(call("update_ticket")).effect == "deny"  # defaults: deny (team) beats require_approval
    assert ps.evaluate(call("send_email", agent="intern-7")).rule_id == "capability:draft_only"
    assert len({ps.hash, policy(team).hash, policy(org).hash}) == 3
    assert ps.hash == PolicySet([load(org, "org"), load(team, "team")]).hash  # the order does not count


def test_the_strictest_tier_wins_across_bundles() -> None:
    ps = policy("capabilities: [{agents: '*', tier: autonomous}]",
                "capabilities: [{agents: 'x-*', tier: execute_with_approval}]")
    assert ps.evaluate(call("send_email", agent="x-1")).effect == "require_approval"
    assert ps.evaluate(call("send_email", agent="y-1")).effect == "allow"


# ---------------------------------------------------------------------------------------------
# The CEL argument projection is an optimisation: it never changes a result

CONDITIONS = [
    "args.amount_usd > 50",
    "has(args.reason) && size(args.reason) > 3",
    "!has(args.reason) || args.amount_usd > 10",
    "size(args) > 2",
    "args.exists(k, k == 'reason')",
    "args.all(k, k != 'secret')",
    "'reason' in args",
    "args['amount_usd'] > 5",
    "'args.reason' == args.to",
    '"it\'s args.secret" != args.to && args.amount_usd > 1',
    "r'\\' != args.to || args.amount_usd > 1",
    "'''it's args.x''' != args.to || args.amount_usd > 1",
    "args.to == 'x' // don't look at args.reason\n || args.amount_usd > 1",
    "args.meta.depth > 1",
    "has(args.meta.depth)",
    "args.amount_usd > 1 && tool.side_effect == 'write' && agent.name.startsWith('support')",
    "session.tool_calls > 3 || args.amount_usd > 100",
]
ARGS = [
    {},
    {"amount_usd": 80},
    {"amount_usd": 20, "reason": "damaged in transit", "to": "a@b.c"},
    {"amount_usd": 2, "to": "args.reason", "secret": "s", "meta": {"depth": 2}},
    {"reason": "no", "meta": {}},
    {f"f{i}": i for i in range(30)} | {"amount_usd": 300},
]


def _full(source: str, variables: dict[str, Any]) -> Any:
    """The reference: the condition evaluated on every variable, nothing projected or rewritten."""
    try:
        result = cel.compile(source).execute(cel.Context(variables))
    except Exception:
        return "error"
    return result if isinstance(result, bool) else "error"


def _projected(source: str, variables: dict[str, Any]) -> Any:
    try:
        return compile_condition(source).evaluate(variables)
    except Exception:
        return "error"


@pytest.mark.parametrize("source", CONDITIONS)
def test_the_args_projection_never_changes_a_condition_result(source: str) -> None:
    for args in ARGS:
        action = Action("tool_call", "support-triage", "prod", {}, "s-1", "issue_refund", args,
                        session={"tool_calls": 1})
        ps = policy(CATALOGUE)
        variables = cel_variables(action, ps.applied("support-triage", "prod").tool_profile("issue_refund"))
        assert _projected(source, variables) == _full(source, variables), args


def test_the_engine_matches_exactly_the_rules_whose_conditions_hold_on_the_full_arguments() -> None:
    # all conditions share one projected context in the engine: their union must serve each one
    rules = "\n".join(f"  - {{id: c{i}, tools: issue_refund, when: {json.dumps(src)}, effect: warn, fail_mode: open}}"
                      for i, src in enumerate(CONDITIONS) if "\n" not in src)
    ps = policy(CATALOGUE + "rules:\n" + rules)
    for args in ARGS:
        action = call("issue_refund", args)
        variables = cel_variables(action, ps.applied("support-triage", None).tool_profile("issue_refund"))
        expected = {f"c{i}" for i, src in enumerate(CONDITIONS) if "\n" not in src and _full(src, variables) is True}
        fired = {m.rule_id for m in ps.evaluate(action).matches if m.error is None}
        assert fired == expected, args
