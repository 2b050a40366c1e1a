"""The published JSON Schema of a policy bundle, for validation and editor completion.

This dict is the source of truth; ``docs/policy-bundle.schema.json`` is generated from it
(``python -m proctor.policy.schema > docs/policy-bundle.schema.json``) and a test keeps the
two equal. Point an editor's YAML language server at the file for completion::

    # yaml-language-server: $schema=../docs/policy-bundle.schema.json
"""

from __future__ import annotations

import json
from typing import Any

from proctor.policy.model import (
    BUDGET_METRICS,
    BUDGET_SCOPES,
    EFFECTS,
    LOOP_DETECTORS,
    SIDE_EFFECTS,
    STAGES,
    TIERS,
)

_globs: dict[str, Any] = {
    "description": "Shell-style name patterns (`crm.*`, `send_*`); one string or a list.",
    "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
}
_effect = {"type": "string", "enum": list(EFFECTS)}
_mode = {"type": "string", "enum": ["enforce", "shadow"]}

_rule_common: dict[str, Any] = {
    "id": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", "description": "Unique in the bundle."},
    "kind": {"type": "string", "enum": ["tool", "llm", "budget", "rate_limit", "loop", "scanner", "taint"]},
    "description": {"type": "string"},
    "effect": _effect,
    "message": {"type": "string", "description": "Shown to the agent and in the decision log."},
    "mode": _mode,
    "fail_mode": {
        "type": "string",
        "enum": ["closed", "open"],
        "description": "When the condition cannot be evaluated: closed treats the rule as matched with "
        "effect deny; open as not matched. Default: closed for side-effecting tools, open for reads.",
    },
    "when": {"type": "string", "description": "A CEL condition over args, tool, agent, session, llm, content."},
    "agents": _globs,
    "tools": _globs,
    "models": _globs,
    "side_effects": {"type": "array", "items": {"type": "string", "enum": list(SIDE_EFFECTS)}},
    "stages": {"type": "array", "items": {"type": "string", "enum": list(STAGES)}},
    # budget
    "scope": {"type": "string", "enum": list(BUDGET_SCOPES)},
    "limits": {
        "type": "object",
        "propertyNames": {"enum": list(BUDGET_METRICS)},
        "additionalProperties": {"type": "number", "exclusiveMinimum": 0},
        "minProperties": 1,
    },
    # rate_limit
    "per": {"type": "string", "enum": ["agent", "tool", "session"]},
    "capacity": {"type": "number", "exclusiveMinimum": 0},
    "refill_per_second": {"type": "number", "minimum": 0},
    # loop
    "detector": {"type": "string", "enum": list(LOOP_DETECTORS)},
    "threshold": {"type": "integer", "minimum": 2},
    "window": {"type": "integer", "minimum": 2},
    # scanner
    "scanner": {"type": "string", "enum": ["pii", "secrets", "injection"]},
    "entities": {"type": "object", "additionalProperties": _effect},
    # taint
    "sources": _globs,
    "args": {"type": "array", "items": {"type": "string"}},
}

_kind_requires = [
    {"if": {"properties": {"kind": {"const": "budget"}}, "required": ["kind"]}, "then": {"required": ["limits"]}},
    {
        "if": {"properties": {"kind": {"const": "rate_limit"}}, "required": ["kind"]},
        "then": {"required": ["capacity", "refill_per_second"]},
    },
    {"if": {"properties": {"kind": {"const": "loop"}}, "required": ["kind"]}, "then": {"required": ["detector"]}},
    {"if": {"properties": {"kind": {"const": "scanner"}}, "required": ["kind"]}, "then": {"required": ["scanner"]}},
]

BUNDLE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://proctor.dev/schemas/policy-bundle.schema.json",
    "title": "Proctor policy bundle",
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "proctor/v1"},
        "kind": {"const": "PolicyBundle"},
        "metadata": {
            "type": "object",
            "required": ["name", "version"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9._-]*$"},
                "version": {"type": ["string", "integer"]},
                "description": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "scope": {
                    "type": "object",
                    "additionalProperties": False,
                    "description": "Which sessions the bundle governs; empty means all.",
                    "properties": {
                        "agents": _globs,
                        "environments": _globs,
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    },
                },
                "mode": _mode,
                "default_effect": {
                    "description": "Effect for a tool call no rule decided: one effect, or one per "
                    "side-effect class. Default-deny is recommended for side-effecting tools.",
                    "oneOf": [
                        _effect,
                        {
                            "type": "object",
                            "propertyNames": {"enum": [*SIDE_EFFECTS, "llm"]},
                            "additionalProperties": _effect,
                        },
                    ],
                },
                "unknown_side_effect": {"type": "string", "enum": list(SIDE_EFFECTS)},
                "tools": {
                    "type": "array",
                    "description": "The tool catalogue: side-effect class per tool name pattern.",
                    "items": {
                        "type": "object",
                        "required": ["name", "side_effect"],
                        "additionalProperties": False,
                        "properties": {
                            "name": _globs,
                            "side_effect": {"type": "string", "enum": list(SIDE_EFFECTS)},
                            "untrusted_output": {
                                "type": "boolean",
                                "description": "Its results are untrusted content (web pages, email, files, "
                                "tickets): values in them are tracked for taint rules.",
                            },
                        },
                    },
                },
                "capabilities": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["agents", "tier"],
                        "additionalProperties": False,
                        "properties": {"agents": _globs, "tier": {"type": "string", "enum": list(TIERS)}},
                    },
                },
                "rules": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["id", "effect"],
                        "additionalProperties": False,
                        "properties": _rule_common,
                        "allOf": _kind_requires,
                    },
                },
            },
        },
    },
}


def render_schema() -> str:
    return json.dumps(BUNDLE_SCHEMA, indent=2, sort_keys=False) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(render_schema(), end="")
