"""What changed between two agent versions (``proctor.registry.diff``).

The specification, test by test: a change to exactly one part of an agent yields exactly one
change naming it — its area, its kind, its path — and, for a tool schema, whether it breaks the
agent that calls the tool. Identical versions differ in nothing; the order is fixed; a prompt
change is shown as a unified diff.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest

from proctor.registry.diff import AREAS, Change, changes_to_json, diff_versions, render_diff

SYSTEM_PROMPT = """\
You are the support triage agent.
Answer the customer politely.
Look the customer up before answering.
Never promise a refund.
Hand billing questions to the billing agent.
Hand technical questions to the tech agent.
Sign every answer as Support.
"""


def prompt(text: str) -> dict[str, str]:
    return {"sha256": hashlib.sha256(text.encode()).hexdigest(), "content": text}


def policy_document() -> dict[str, Any]:
    return {
        "apiVersion": "proctor/v1",
        "kind": "PolicyBundle",
        "metadata": {"name": "support", "version": "3"},
        "spec": {
            "scope": {"agents": ["support-*"], "environments": ["prod"]},
            "mode": "enforce",
            "default_effect": {"read": "allow", "write": "deny", "external": "deny", "irreversible": "deny"},
            "tools": [
                {"name": "crm.*", "side_effect": "read"},
                {"name": "issue_refund", "side_effect": "irreversible"},
            ],
            "capabilities": [{"agents": "intern-*", "tier": "draft_only"}],
            "rules": [
                {"id": "refunds-small", "tools": "issue_refund", "when": "args.amount_usd <= 50",
                 "effect": "allow"},
                {"id": "refunds-large", "tools": "issue_refund", "when": "args.amount_usd > 50",
                 "effect": "require_approval", "message": "Refunds above $50 need a human"},
            ],
        },
    }


def bundle_hash(document: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def base() -> dict[str, Any]:
    """A resolved manifest (docs/registry.md) every test mutates one part of."""
    document = policy_document()
    return {
        "apiVersion": "proctor/v1",
        "kind": "Agent",
        "name": "support-triage",
        "label": "1.4.0",
        "description": "Answers customers and hands work to sub-agents.",
        "owner": "team-support",
        "labels": {"data": "customer"},
        "model": {"provider": "openai", "id": "gpt-4o-mini",
                  "parameters": {"temperature": 0.2, "max_tokens": 800}},
        "prompts": {"system": prompt(SYSTEM_PROMPT)},
        "tools": [
            {
                "name": "issue_refund",
                "description": "Refund an order.",
                "side_effect": "irreversible",
                "version": "1",
                "source": "python:proctor.demo.billing",
                "input_schema": {
                    "type": "object",
                    "properties": {
                        "order_id": {"type": "string", "pattern": "^o-[0-9]+$"},
                        "amount_usd": {"type": "number", "minimum": 0, "maximum": 500},
                    },
                    "required": ["order_id", "amount_usd"],
                    "additionalProperties": False,
                },
                "output_schema": {"type": "object", "properties": {"refund_id": {"type": "string"}},
                                  "required": ["refund_id"]},
            },
            {
                "name": "lookup_customer",
                "description": "Find a customer by email or id.",
                "side_effect": "read",
                "version": "1",
                "source": "python:proctor.demo.crm",
                "input_schema": {
                    "type": "object",
                    "properties": {
                        "email": {"type": "string", "maxLength": 200},
                        "customer_id": {"type": "integer"},
                        "channel": {"type": "string", "enum": ["email", "chat"]},
                    },
                    "required": ["email"],
                },
                "output_schema": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "name": {"type": ["string", "null"]},
                        "plan": {"type": "string", "enum": ["free", "pro", "enterprise"]},
                        "address": {"type": "object", "properties": {"city": {"type": "string"}}},
                        "tags": {"type": "array", "items": {"type": "string"}},
                    },
                    "required": ["id", "name"],
                },
            },
        ],
        "policy": {"name": "support", "version": "3", "hash": bundle_hash(document), "document": document},
        "tier": "execute_with_limits",
        "entrypoint": "proctor.demo.fleet:support_triage",
        "gates": {"approvals": [{"role": "approver", "count": 1}], "policy_lint": True},
    }


def tool(m: dict[str, Any], name: str) -> dict[str, Any]:
    [found] = [t for t in m["tools"] if t["name"] == name]
    return found


def inp(m: dict[str, Any], name: str = "lookup_customer") -> dict[str, Any]:
    schema: dict[str, Any] = tool(m, name)["input_schema"]
    return schema


def outp(m: dict[str, Any], name: str = "lookup_customer") -> dict[str, Any]:
    schema: dict[str, Any] = tool(m, name)["output_schema"]
    return schema


def rules(m: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = m["policy"]["document"]["spec"]["rules"]
    return found


def rehash(m: dict[str, Any]) -> None:
    """What the registry does after a bundle file changes: its content hash changes too."""
    m["policy"]["hash"] = bundle_hash(m["policy"]["document"])


def in_bundle(change: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], None]:
    """A mutation of the policy bundle's spec, rehashed as the registry would."""

    def mutate(m: dict[str, Any]) -> None:
        change(m["policy"]["document"]["spec"])
        rehash(m)

    return mutate


def mutated(mutate: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    m = base()
    mutate(m)
    return m


def only(changes: list[Change]) -> Change:
    assert len(changes) == 1, render_diff(changes)
    return changes[0]


IN = "tools.lookup_customer.input_schema"
OUT = "tools.lookup_customer.output_schema"

# (what changes, how, area, kind, path, breaking)
SINGLE_CHANGES: list[tuple[str, Callable[[dict[str, Any]], Any], str, str, str, bool | None]] = [
    # model
    ("temperature", lambda m: m["model"]["parameters"].update(temperature=0.7),
     "model", "parameter_changed", "model.parameters.temperature", None),
    ("a parameter added", lambda m: m["model"]["parameters"].update(top_p=0.9),
     "model", "parameter_changed", "model.parameters.top_p", None),
    ("a parameter removed", lambda m: m["model"]["parameters"].pop("max_tokens"),
     "model", "parameter_changed", "model.parameters.max_tokens", None),
    ("model id", lambda m: m["model"].update(id="gpt-4o"), "model", "model_changed", "model.id", None),
    ("model provider", lambda m: m["model"].update(provider="azure"),
     "model", "model_changed", "model.provider", None),
    # prompts
    ("one prompt line", lambda m: m["prompts"].update(
        system=prompt(SYSTEM_PROMPT.replace("Never promise a refund.", "Never promise a refund or credit."))),
     "prompt", "prompt_changed", "prompts.system", None),
    ("a prompt added", lambda m: m["prompts"].update(handoff=prompt("Hand off politely.\n")),
     "prompt", "prompt_added", "prompts.handoff", None),
    ("a prompt removed", lambda m: m["prompts"].pop("system"),
     "prompt", "prompt_removed", "prompts.system", None),
    # tools
    ("a tool added", lambda m: m["tools"].append(
        {"name": "send_email", "side_effect": "external", "input_schema": {"type": "object"}}),
     "tool", "tool_added", "tools.send_email", None),
    ("a tool removed", lambda m: m["tools"].pop(0), "tool", "tool_removed", "tools.issue_refund", None),
    ("a tool's side effect", lambda m: tool(m, "lookup_customer").update(side_effect="write"),
     "tool", "tool_side_effect_changed", "tools.lookup_customer.side_effect", None),
    ("a tool's description", lambda m: tool(m, "lookup_customer").update(description="Find a customer."),
     "tool", "tool_description_changed", "tools.lookup_customer.description", None),
    ("a tool's version", lambda m: tool(m, "lookup_customer").update(version="2"),
     "tool", "tool_version_changed", "tools.lookup_customer.version", None),
    ("a tool's source", lambda m: tool(m, "lookup_customer").update(source="mcp:crm"),
     "tool", "tool_source_changed", "tools.lookup_customer.source", None),
    # input schemas: what the agent sends must still be accepted
    ("a required input property added", lambda m: (
        inp(m)["properties"].update(reason={"type": "string"}), inp(m)["required"].append("reason")),
     "tool", "tool_input_schema_changed", f"{IN}.properties.reason", True),
    ("an optional input property added", lambda m: inp(m)["properties"].update(locale={"type": "string"}),
     "tool", "tool_input_schema_changed", f"{IN}.properties.locale", False),
    ("an input property made required", lambda m: inp(m)["required"].append("customer_id"),
     "tool", "tool_input_schema_changed", f"{IN}.properties.customer_id", True),
    ("an input property made optional", lambda m: inp(m).update(required=[]),
     "tool", "tool_input_schema_changed", f"{IN}.properties.email", False),
    ("an input property removed (object open)", lambda m: inp(m)["properties"].pop("customer_id"),
     "tool", "tool_input_schema_changed", f"{IN}.properties.customer_id", False),
    ("an input property removed (object closed)", lambda m: (
        inp(m, "issue_refund")["properties"].pop("amount_usd"), inp(m, "issue_refund").update(required=["order_id"])),
     "tool", "tool_input_schema_changed", "tools.issue_refund.input_schema.properties.amount_usd", True),
    ("an input type widened", lambda m: inp(m)["properties"]["customer_id"].update(type=["integer", "string"]),
     "tool", "tool_input_schema_changed", f"{IN}.properties.customer_id.type", False),
    ("an input integer widened to number", lambda m: inp(m)["properties"]["customer_id"].update(type="number"),
     "tool", "tool_input_schema_changed", f"{IN}.properties.customer_id.type", False),
    ("an input number narrowed to integer",
     lambda m: inp(m, "issue_refund")["properties"]["amount_usd"].update(type="integer"),
     "tool", "tool_input_schema_changed", "tools.issue_refund.input_schema.properties.amount_usd.type", True),
    ("an input type changed", lambda m: inp(m)["properties"]["customer_id"].update(type="string"),
     "tool", "tool_input_schema_changed", f"{IN}.properties.customer_id.type", True),
    ("an input enum gained a value",
     lambda m: inp(m)["properties"]["channel"].update(enum=["email", "chat", "phone"]),
     "tool", "tool_input_schema_changed", f"{IN}.properties.channel.enum", False),
    ("an input enum lost a value", lambda m: inp(m)["properties"]["channel"].update(enum=["email"]),
     "tool", "tool_input_schema_changed", f"{IN}.properties.channel.enum", True),
    ("an input maxLength lowered", lambda m: inp(m)["properties"]["email"].update(maxLength=100),
     "tool", "tool_input_schema_changed", f"{IN}.properties.email.maxLength", True),
    ("an input maxLength raised", lambda m: inp(m)["properties"]["email"].update(maxLength=320),
     "tool", "tool_input_schema_changed", f"{IN}.properties.email.maxLength", False),
    ("an input maximum removed", lambda m: inp(m, "issue_refund")["properties"]["amount_usd"].pop("maximum"),
     "tool", "tool_input_schema_changed", "tools.issue_refund.input_schema.properties.amount_usd.maximum", False),
    ("an input minimum raised",
     lambda m: inp(m, "issue_refund")["properties"]["amount_usd"].update(minimum=1),
     "tool", "tool_input_schema_changed", "tools.issue_refund.input_schema.properties.amount_usd.minimum", True),
    ("an input minLength added", lambda m: inp(m)["properties"]["email"].update(minLength=3),
     "tool", "tool_input_schema_changed", f"{IN}.properties.email.minLength", True),
    ("an input pattern changed",
     lambda m: inp(m, "issue_refund")["properties"]["order_id"].update(pattern="^ord-[0-9]+$"),
     "tool", "tool_input_schema_changed", "tools.issue_refund.input_schema.properties.order_id.pattern", True),
    ("an input pattern removed", lambda m: inp(m, "issue_refund")["properties"]["order_id"].pop("pattern"),
     "tool", "tool_input_schema_changed", "tools.issue_refund.input_schema.properties.order_id.pattern", False),
    ("an input object closed", lambda m: inp(m).update(additionalProperties=False),
     "tool", "tool_input_schema_changed", f"{IN}.additionalProperties", True),
    ("an input object opened", lambda m: inp(m, "issue_refund").pop("additionalProperties"),
     "tool", "tool_input_schema_changed", "tools.issue_refund.input_schema.additionalProperties", False),
    ("an input property description", lambda m: inp(m)["properties"]["email"].update(description="Work email"),
     "tool", "tool_input_schema_changed", f"{IN}.properties.email.description", False),
    ("an input anyOf (unclassifiable)", lambda m: inp(m).update(anyOf=[{"required": ["email"]}]),
     "tool", "tool_input_schema_changed", f"{IN}.anyOf", True),
    # output schemas: what the agent reads must still be there and still mean the same
    ("an output property removed", lambda m: outp(m)["properties"].pop("plan"),
     "tool", "tool_output_schema_changed", f"{OUT}.properties.plan", True),
    ("an output property added", lambda m: outp(m)["properties"].update(email={"type": "string"}),
     "tool", "tool_output_schema_changed", f"{OUT}.properties.email", False),
    ("a required output property added", lambda m: (
        outp(m)["properties"].update(email={"type": "string"}), outp(m)["required"].append("email")),
     "tool", "tool_output_schema_changed", f"{OUT}.properties.email", False),
    ("an output property made optional", lambda m: outp(m).update(required=["id"]),
     "tool", "tool_output_schema_changed", f"{OUT}.properties.name", True),
    ("an output property made required", lambda m: outp(m)["required"].append("plan"),
     "tool", "tool_output_schema_changed", f"{OUT}.properties.plan", False),
    ("an output type changed", lambda m: outp(m)["properties"]["id"].update(type="integer"),
     "tool", "tool_output_schema_changed", f"{OUT}.properties.id.type", True),
    ("an output type widened", lambda m: outp(m)["properties"]["id"].update(type=["string", "null"]),
     "tool", "tool_output_schema_changed", f"{OUT}.properties.id.type", True),
    ("an output type narrowed", lambda m: outp(m)["properties"]["name"].update(type="string"),
     "tool", "tool_output_schema_changed", f"{OUT}.properties.name.type", False),
    ("an output enum gained a value",
     lambda m: outp(m)["properties"]["plan"].update(enum=["free", "pro", "enterprise", "trial"]),
     "tool", "tool_output_schema_changed", f"{OUT}.properties.plan.enum", True),
    ("an output enum lost a value", lambda m: outp(m)["properties"]["plan"].update(enum=["free", "pro"]),
     "tool", "tool_output_schema_changed", f"{OUT}.properties.plan.enum", False),
    ("a nested output property removed", lambda m: outp(m)["properties"]["address"]["properties"].pop("city"),
     "tool", "tool_output_schema_changed", f"{OUT}.properties.address.properties.city", True),
    ("an array item type changed", lambda m: outp(m)["properties"]["tags"]["items"].update(type="integer"),
     "tool", "tool_output_schema_changed", f"{OUT}.properties.tags.items.type", True),
    ("the output schema dropped", lambda m: tool(m, "lookup_customer").update(output_schema=None),
     "tool", "tool_output_schema_changed", OUT, True),
    # policy (the registry rehashes the bundle; the rule change explains the new hash)
    ("a rule's condition", in_bundle(lambda spec: spec["rules"][1].update(when="args.amount_usd > 100")),
     "policy", "policy_rule_changed", "policy.rules.refunds-large", None),
    ("a rule added", in_bundle(lambda spec: spec["rules"].append(
        {"id": "refunds-xl", "tools": "issue_refund", "when": "args.amount_usd > 500", "effect": "deny"})),
     "policy", "policy_rule_added", "policy.rules.refunds-xl", None),
    ("a rule removed", in_bundle(lambda spec: spec["rules"].pop(0)),
     "policy", "policy_rule_removed", "policy.rules.refunds-small", None),
    ("a default effect", in_bundle(lambda spec: spec["default_effect"].update(write="allow")),
     "policy", "policy_default_changed", "policy.default_effect.write", None),
    ("a catalogue entry added", in_bundle(lambda spec: spec["tools"].append(
        {"name": "send_email", "side_effect": "external"})),
     "policy", "policy_catalogue_changed", "policy.tools.send_email", None),
    ("a catalogue entry changed", in_bundle(lambda spec: spec["tools"][0].update(side_effect="write")),
     "policy", "policy_catalogue_changed", "policy.tools.crm.*", None),
    ("the policy mode", in_bundle(lambda spec: spec.update(mode="shadow")),
     "policy", "policy_mode_changed", "policy.mode", None),
    ("the policy scope", in_bundle(lambda spec: spec["scope"].update(environments=["prod", "staging"])),
     "policy", "policy_scope_changed", "policy.scope.environments", None),
    ("the capabilities", in_bundle(lambda spec: spec["capabilities"].append({"agents": "new-*", "tier": "draft_only"})),
     "policy", "policy_capability_changed", "policy.capabilities", None),
    ("the bundle hash alone", lambda m: m["policy"].update(hash="0" * 64),
     "policy", "policy_bundle_changed", "policy", None),
    ("the policy dropped", lambda m: m.update(policy=None), "policy", "policy_removed", "policy", None),
    # the rest
    ("tier", lambda m: m.update(tier="autonomous"), "tier", "tier_changed", "tier", None),
    ("owner", lambda m: m.update(owner="team-billing"), "metadata", "owner_changed", "owner", None),
    ("description", lambda m: m.update(description="Answers customers."),
     "metadata", "description_changed", "description", None),
    ("the version label", lambda m: m.update(label="1.5.0"), "metadata", "label_changed", "label", None),
    ("a label", lambda m: m["labels"].update(data="internal"), "metadata", "labels_changed", "labels.data", None),
    ("a gate", lambda m: m["gates"].update(policy_lint=False), "gates", "gates_changed", "gates.policy_lint", None),
    ("entrypoint", lambda m: m.update(entrypoint="proctor.demo.fleet:triage_v2"),
     "entrypoint", "entrypoint_changed", "entrypoint", None),
]

@pytest.mark.parametrize(("what", "mutate", "area", "kind", "path", "breaking"), SINGLE_CHANGES,
                         ids=[c[0] for c in SINGLE_CHANGES])
def test_a_change_to_exactly_one_part_of_an_agent_yields_exactly_one_change_naming_it(
    what: str, mutate: Callable[[dict[str, Any]], Any], area: str, kind: str, path: str, breaking: bool | None,
) -> None:
    change = only(diff_versions(base(), mutated(mutate)))
    assert (change.area, change.kind, change.path, change.breaking) == (area, kind, path, breaking)
    assert change.summary and "\n" not in change.summary
    if breaking is not None:
        assert change.summary.endswith("(breaking)" if breaking else "(compatible)")


def test_identical_manifests_differ_in_nothing() -> None:
    assert diff_versions(base(), base()) == []
    assert render_diff([]) == "no changes"
    assert changes_to_json([]) == []


def test_the_same_content_written_differently_is_no_change() -> None:
    """1.0 and 1 are the same number (as in the canonical JSON that is hashed); key order is
    not content."""
    a, b = base(), base()
    b["model"]["parameters"] = {"max_tokens": 800.0, "temperature": 0.2}
    assert diff_versions(a, b) == []


def test_a_boolean_is_not_a_number() -> None:
    a, b = base(), base()
    a["model"]["parameters"]["stream"] = 1
    b["model"]["parameters"]["stream"] = True
    change = only(diff_versions(a, b))
    assert change.summary == "stream 1 -> true"


# ---------------------------------------------------------------------------------------------
# summaries say what changed


def test_a_parameter_change_reads_old_to_new() -> None:
    change = only(diff_versions(base(), mutated(lambda m: m["model"]["parameters"].update(temperature=0.7))))
    assert change.summary == "temperature 0.2 -> 0.7"
    assert (change.before, change.after) == (0.2, 0.7)


def test_a_removed_tool_is_named() -> None:
    change = only(diff_versions(base(), mutated(lambda m: m["tools"].pop(0))))
    assert change.summary == "tool issue_refund removed (irreversible)"
    assert change.before["name"] == "issue_refund" and change.after is None


def test_a_rule_change_names_each_changed_field() -> None:
    def mutate(m: dict[str, Any]) -> None:
        rules(m)[1].update(when="args.amount_usd > 100", effect="deny")
        rehash(m)

    change = only(diff_versions(base(), mutated(mutate)))
    assert change.summary == ("rule refunds-large: when 'args.amount_usd > 50' -> 'args.amount_usd > 100'; "
                              "effect require_approval -> deny")
    assert change.before["effect"] == "require_approval" and change.after["effect"] == "deny"


def test_an_added_rule_shows_what_it_does() -> None:
    def mutate(m: dict[str, Any]) -> None:
        rules(m).append({"id": "refunds-xl", "tools": "issue_refund", "when": "args.amount_usd > 500",
                         "effect": "deny"})
        rehash(m)

    change = only(diff_versions(base(), mutated(mutate)))
    assert change.summary == "rule refunds-xl added: tools issue_refund; when 'args.amount_usd > 500'; effect deny"


def test_a_new_bundle_version_is_reported_with_its_rule_changes() -> None:
    def mutate(m: dict[str, Any]) -> None:
        m["policy"]["version"] = m["policy"]["document"]["metadata"]["version"] = "4"
        rules(m)[1]["when"] = "args.amount_usd > 100"
        rehash(m)

    changes = diff_versions(base(), mutated(mutate))
    assert [(c.kind, c.path) for c in changes] == [
        ("policy_bundle_changed", "policy"),
        ("policy_rule_changed", "policy.rules.refunds-large"),
    ]
    assert changes[0].summary == "policy bundle support v3 -> support v4"
    assert changes[0].after["version"] == "4"


def test_a_default_effect_change_names_the_side_effect_class() -> None:
    def mutate(m: dict[str, Any]) -> None:
        m["policy"]["document"]["spec"]["default_effect"]["write"] = "allow"
        rehash(m)

    assert only(diff_versions(base(), mutated(mutate))).summary == "default effect for write: deny -> allow"


def test_a_schema_change_says_where_and_how() -> None:
    change = only(diff_versions(base(), mutated(
        lambda m: inp(m)["properties"]["customer_id"].update(type=["integer", "string"]))))
    assert change.summary == "tool lookup_customer input customer_id: type integer -> integer|string (widened) (compatible)"
    assert (change.before, change.after) == ("integer", ["integer", "string"])

    change = only(diff_versions(base(), mutated(
        lambda m: (inp(m)["properties"].update(reason={"type": "string"}), inp(m)["required"].append("reason")))))
    assert change.summary == "tool lookup_customer input: required property reason added (breaking)"

    change = only(diff_versions(base(), mutated(lambda m: inp(m)["properties"]["channel"].update(enum=["email"]))))
    assert change.summary == "tool lookup_customer input channel: enum lost chat (breaking)"

    change = only(diff_versions(base(), mutated(lambda m: outp(m)["properties"]["tags"]["items"].update(type="integer"))))
    assert change.summary == "tool lookup_customer output tags[]: type string -> integer (changed) (breaking)"


def test_an_unclassifiable_schema_change_is_breaking_and_says_so() -> None:
    change = only(diff_versions(base(), mutated(lambda m: inp(m).update(anyOf=[{"required": ["email"]}]))))
    assert change.breaking is True
    assert "unclassified schema change" in change.summary


def test_a_type_changed_outright_hides_the_keywords_that_meant_something_else() -> None:
    def mutate(m: dict[str, Any]) -> None:
        inp(m)["properties"]["email"] = {"type": "integer", "maximum": 10}

    change = only(diff_versions(base(), mutated(mutate)))
    assert change.path == f"{IN}.properties.email.type" and change.breaking is True


def test_an_enum_gaining_and_losing_values_breaks_both_sides() -> None:
    def mutate(m: dict[str, Any]) -> None:
        inp(m)["properties"]["channel"]["enum"] = ["email", "phone"]
        outp(m)["properties"]["plan"]["enum"] = ["free", "pro", "team"]

    changes = diff_versions(base(), mutated(mutate))
    assert [(c.path, c.breaking) for c in changes] == [
        (f"{IN}.properties.channel.enum", True),
        (f"{OUT}.properties.plan.enum", True),
    ]


def test_an_equivalent_schema_rewrite_is_reported_as_compatible() -> None:
    """Every content change is accounted for, even one that accepts exactly the same values."""
    change = only(diff_versions(base(), mutated(lambda m: inp(m)["properties"]["email"].update(type=["string"]))))
    assert change.kind == "tool_input_schema_changed" and change.breaking is False
    assert "equivalent" in change.summary


def test_a_schema_given_where_there_was_none() -> None:
    def mutate(m: dict[str, Any]) -> None:
        tool(m, "lookup_customer")["input_schema"] = None

    dropped = only(diff_versions(base(), mutated(mutate)))
    assert (dropped.path, dropped.breaking) == (IN, False)  # input: anything goes now
    given = only(diff_versions(mutated(mutate), base()))
    assert (given.path, given.breaking) == (IN, True)  # input: a contract callers must now meet


# ---------------------------------------------------------------------------------------------
# prompts, order, rendering, JSON


def test_a_prompt_change_carries_a_unified_diff_with_three_lines_of_context() -> None:
    new = SYSTEM_PROMPT.replace("Never promise a refund.", "Never promise a refund or credit.")
    change = only(diff_versions(base(), mutated(lambda m: m["prompts"].update(system=prompt(new)))))
    assert change.summary == "prompt system changed: +1 -1 lines"
    assert change.before == prompt(SYSTEM_PROMPT)["sha256"] and change.after == prompt(new)["sha256"]
    assert change.detail.splitlines() == [
        "--- a/prompts/system",
        "+++ b/prompts/system",
        "@@ -1,7 +1,7 @@",
        " You are the support triage agent.",
        " Answer the customer politely.",
        " Look the customer up before answering.",
        "-Never promise a refund.",
        "+Never promise a refund or credit.",
        " Hand billing questions to the billing agent.",
        " Hand technical questions to the tech agent.",
        " Sign every answer as Support.",
    ]


def test_a_missing_final_newline_is_a_visible_change() -> None:
    change = only(diff_versions(base(), mutated(
        lambda m: m["prompts"].update(system=prompt(SYSTEM_PROMPT.rstrip("\n"))))))
    assert change.kind == "prompt_changed"
    assert "\\ No newline at end of file" in change.detail


def test_render_shows_the_prompt_diff_and_a_line_per_other_change() -> None:
    def mutate(m: dict[str, Any]) -> None:
        m["prompts"]["system"] = prompt(SYSTEM_PROMPT.replace("politely", "kindly"))
        m["model"]["parameters"]["temperature"] = 0.7
        m["tools"].pop(0)
        inp(m)["properties"]["channel"]["enum"] = ["email"]

    text = render_diff(diff_versions(base(), mutated(mutate)))
    assert text.splitlines() == [
        "4 changes, 1 breaking",
        "model",
        "  ~ temperature 0.2 -> 0.7",
        "prompt",
        "  ~ prompt system changed: +1 -1 lines",
        "    --- a/prompts/system",
        "    +++ b/prompts/system",
        "    @@ -1,5 +1,5 @@",
        "     You are the support triage agent.",
        "    -Answer the customer politely.",
        "    +Answer the customer kindly.",
        "     Look the customer up before answering.",
        "     Never promise a refund.",
        "     Hand billing questions to the billing agent.",
        "tool",
        "  - tool issue_refund removed (irreversible)",
        "  ! tool lookup_customer input channel: enum lost chat (breaking)",
    ]
    assert "\x1b[" not in text
    coloured = render_diff(diff_versions(base(), mutated(mutate)), color=True)
    assert "\x1b[32m    +Answer the customer kindly.\x1b[0m" not in coloured  # the indent stays uncoloured
    assert "    \x1b[32m+Answer the customer kindly.\x1b[0m" in coloured
    assert "\x1b[1;31m  ! tool lookup_customer" in coloured


def everything(m: dict[str, Any]) -> None:
    m["entrypoint"] = "x:y"
    m["gates"]["policy_lint"] = False
    m["owner"] = "someone"
    m["tier"] = "autonomous"
    rules(m)[0]["effect"] = "warn"
    rehash(m)
    m["tools"].pop()
    m["prompts"]["extra"] = prompt("hello\n")
    m["model"]["id"] = "gpt-4o"


def test_changes_come_in_a_fixed_order_area_then_path() -> None:
    changes = diff_versions(base(), mutated(everything))
    assert [c.area for c in changes] == ["model", "prompt", "tool", "policy", "tier", "metadata", "gates",
                                        "entrypoint"]
    assert [c.area for c in changes] == sorted((c.area for c in changes), key=AREAS.index)
    assert diff_versions(base(), mutated(everything)) == changes

    # several changes in one area: by path, however the manifests were built
    def many(m: dict[str, Any]) -> None:
        m["model"]["parameters"] = {"top_p": 0.5, "temperature": 1, "seed": 7}
        m["model"]["id"] = "o3"

    paths = [c.path for c in diff_versions(base(), mutated(many))]
    assert paths == sorted(paths) == ["model.id", "model.parameters.max_tokens", "model.parameters.seed",
                                      "model.parameters.temperature", "model.parameters.top_p"]
    reordered = base()
    reordered["tools"].reverse()
    reordered["model"] = dict(reversed(list(reordered["model"].items())))
    assert diff_versions(reordered, mutated(many)) == diff_versions(base(), mutated(many))


def test_diffing_the_other_way_swaps_before_and_after() -> None:
    forward = diff_versions(base(), mutated(everything))
    backward = diff_versions(mutated(everything), base())
    assert [(c.area, c.path) for c in forward] == [(c.area, c.path) for c in backward]
    for f, b in zip(forward, backward, strict=True):
        if f.kind.endswith(("_added", "_removed")):
            continue
        assert (f.before, f.after) == (b.after, b.before)


def test_changes_as_json_keep_every_field_and_survive_a_round_trip() -> None:
    changes = diff_versions(base(), mutated(everything))
    data = changes_to_json(changes)
    assert json.loads(json.dumps(data)) == data
    assert [Change(**d) for d in data] == changes
    assert set(data[0]) == {"area", "kind", "path", "summary", "before", "after", "breaking", "detail"}


def test_the_inputs_are_not_modified() -> None:
    a, b = base(), mutated(everything)
    a_copy, b_copy = copy.deepcopy(a), copy.deepcopy(b)
    diff_versions(a, b)
    assert (a, b) == (a_copy, b_copy)


def test_render_marks_additions_and_removals_outside_tools_too() -> None:
    def mutate(m: dict[str, Any]) -> None:
        m["model"]["parameters"]["top_p"] = 0.9
        del m["gates"]["policy_lint"]

    assert render_diff(diff_versions(base(), mutated(mutate))).splitlines() == [
        "2 changes",
        "model",
        "  + parameter top_p added: 0.9",
        "gates",
        "  - gate policy_lint removed (was true)",
    ]


def test_a_policy_given_to_an_agent_that_had_none() -> None:
    change = only(diff_versions(mutated(lambda m: m.update(policy=None)), base()))
    assert (change.kind, change.summary) == ("policy_added", "policy support v3 added")
    assert change.after == {"name": "support", "version": "3", "hash": base()["policy"]["hash"]}
