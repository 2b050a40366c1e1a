"""Policy bundles (layer 1): YAML documents of rules, validated, compiled and hashed.

- :mod:`proctor.policy.model` — bundles, rules, effects, actions, decisions;
- :mod:`proctor.policy.loader` — YAML → bundles, or every problem with file:line;
- :mod:`proctor.policy.schema` — the published JSON Schema;
- :mod:`proctor.policy.cel` — CEL conditions, compiled once;
- :mod:`proctor.policy.fastpath` — a safe CEL subset as Python closures;
- :mod:`proctor.policy.engine` — which rules apply to an action and what they decide.

Names are imported on first use, so ``proctor.policy.model`` stays cheap to import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "Action",
    "Decision",
    "Match",
    "PolicyBundle",
    "PolicyError",
    "PolicySet",
    "Problem",
    "Rule",
    "load_bundle_file",
    "load_bundle_text",
    "load_bundles",
]

_WHERE = {
    "Action": "model",
    "Decision": "model",
    "Match": "model",
    "PolicyBundle": "model",
    "Rule": "model",
    "PolicySet": "engine",
    "PolicyError": "loader",
    "Problem": "loader",
    "load_bundle_file": "loader",
    "load_bundle_text": "loader",
    "load_bundles": "loader",
}

if TYPE_CHECKING:
    from proctor.policy.engine import PolicySet
    from proctor.policy.loader import PolicyError, Problem, load_bundle_file, load_bundle_text, load_bundles
    from proctor.policy.model import Action, Decision, Match, PolicyBundle, Rule


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'proctor.policy' has no attribute {name!r}")
    return getattr(importlib.import_module(f"proctor.policy.{module}"), name)
