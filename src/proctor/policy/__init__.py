"""Policy bundles (layer 1): YAML documents of rules, validated, compiled and hashed.

- :mod:`proctor.policy.model` — bundles, rules, effects, actions, decisions;
- :mod:`proctor.policy.loader` — YAML → bundles, or every problem with file:line;
- :mod:`proctor.policy.schema` — the published JSON Schema;
- :mod:`proctor.policy.cel` — CEL conditions, compiled once;
- :mod:`proctor.policy.engine` — which rules apply to an action and what they decide.
"""

from proctor.policy.engine import PolicySet
from proctor.policy.loader import PolicyError, Problem, load_bundle_file, load_bundle_text, load_bundles
from proctor.policy.model import Action, Decision, Match, PolicyBundle, Rule

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
