"""The policy data model: bundles, rules, effects, and the actions they judge.

A bundle is loaded from YAML (see :mod:`proctor.policy.loader`) into these frozen objects;
the engine (:mod:`proctor.policy.engine`) and the guard read them and never change them, so a
bundle can be shared by every thread and swapped atomically on reload.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any, Literal

Effect = Literal["allow", "warn", "redact", "require_approval", "deny", "terminate_session"]
EFFECTS: tuple[str, ...] = ("allow", "warn", "redact", "require_approval", "deny", "terminate_session")
# Stronger effects win when several rules match: a deny overrides an allow, like Cedar's forbid.
EFFECT_RANK: dict[str, int] = {e: i for i, e in enumerate(EFFECTS)}
#: Effects that let the action run (possibly changed, for redact).
PERMITTING: frozenset[str] = frozenset({"allow", "warn", "redact"})

SIDE_EFFECTS: tuple[str, ...] = ("read", "write", "external", "irreversible")
TIERS: tuple[str, ...] = ("draft_only", "execute_with_limits", "execute_with_approval", "autonomous")
RULE_KINDS: tuple[str, ...] = ("tool", "llm", "budget", "rate_limit", "loop", "scanner", "taint")
STAGES: tuple[str, ...] = ("input", "llm_call", "llm_output", "tool_call", "tool_result")
LOOP_DETECTORS: tuple[str, ...] = ("repeat", "oscillation", "error_storm", "ping_pong", "no_progress")
BUDGET_SCOPES: tuple[str, ...] = ("session", "agent_day", "org_month")
BUDGET_METRICS: tuple[str, ...] = ("usd", "tokens", "tool_calls", "wall_s")

Mode = Literal["enforce", "shadow"]
FailMode = Literal["closed", "open"]


class Glob:
    """A set of shell-style name patterns compiled into one regex (``crm.*``, ``send_*``)."""

    __slots__ = ("_re", "patterns")

    def __init__(self, patterns: tuple[str, ...]) -> None:
        self.patterns = patterns
        self._re = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns)) if patterns else None

    def matches(self, name: str | None) -> bool:
        """No patterns means "anything"; otherwise the name must match one of them."""
        if self._re is None:
            return True
        return name is not None and self._re.match(name) is not None

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def __repr__(self) -> str:
        return f"Glob({list(self.patterns)!r})"


@dataclass(frozen=True, slots=True)
class ToolClass:
    """Catalogue entry: tools matching ``pattern`` have this side-effect class."""

    pattern: Glob
    side_effect: str
    untrusted_output: bool = False  # its results are untrusted content (web, email, files)


@dataclass(frozen=True, slots=True)
class Capability:
    agents: Glob
    tier: str


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule. Fields beyond the common ones are read only by the rule's kind."""

    id: str
    kind: str
    effect: str
    message: str
    mode: str  # enforce | shadow, after inheriting the bundle's
    fail_mode: str | None  # None: closed for side-effecting tools, open otherwise
    line: int
    agents: Glob
    tools: Glob
    models: Glob
    side_effects: frozenset[str]
    stages: frozenset[str]
    when: Any = None  # a compiled Condition, or None
    # budget
    budget_scope: str = "session"
    limits: dict[str, float] = field(default_factory=dict)
    # rate_limit
    rate_per: str = "agent"
    capacity: float = 0.0
    refill_per_s: float = 0.0
    # loop
    detector: str = ""
    threshold: int = 0
    window: int = 0
    # scanner
    scanner: str = ""
    entities: dict[str, str] = field(default_factory=dict)  # entity type -> effect
    # taint
    sources: Glob = field(default_factory=lambda: Glob(()))
    sink_args: tuple[str, ...] = ()

    @property
    def enforced(self) -> bool:
        return self.mode == "enforce"


@dataclass(frozen=True, slots=True)
class BundleScope:
    agents: Glob
    environments: Glob
    labels: dict[str, str]

    def applies(self, agent: str | None, environment: str | None, labels: dict[str, str] | None) -> bool:
        if not self.agents.matches(agent) and self.agents:
            return False
        if self.environments and not self.environments.matches(environment):
            return False
        if self.labels:
            have = labels or {}
            return all(have.get(k) == v for k, v in self.labels.items())
        return True


@dataclass(frozen=True, slots=True)
class PolicyBundle:
    name: str
    version: str
    hash: str  # sha256 of the canonical JSON of the document: formatting and comments don't count
    labels: dict[str, str]
    scope: BundleScope
    mode: str
    default_effect: dict[str, str]  # side-effect class (and "llm") -> effect
    tools: tuple[ToolClass, ...]
    capabilities: tuple[Capability, ...]
    rules: tuple[Rule, ...]
    source: str = "<string>"
    document: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    unknown_side_effect: str = "write"

    def side_effect_of(self, tool: str) -> tuple[str, bool]:
        """(side-effect class, untrusted output) of a tool; unlisted tools count as writes."""
        for tc in self.tools:
            if tc.pattern.matches(tool):
                return tc.side_effect, tc.untrusted_output
        return self.unknown_side_effect, False

    def tier_of(self, agent: str | None) -> str:
        for cap in self.capabilities:
            if cap.agents.matches(agent):
                return cap.tier
        return "execute_with_limits"

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(slots=True)
class Action:
    """What an agent is about to do (or has just received), as the guard presents it.

    ``stage`` says which: ``tool_call`` (before a tool runs), ``tool_result`` (its output),
    ``llm_call`` (before a model call), ``llm_output`` (the model's answer), ``input`` (what a
    user or upstream agent sent in).
    """

    stage: str
    agent: str | None = None
    environment: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    session_id: str | None = None
    tool: str | None = None
    args: dict[str, Any] | None = None
    model: str | None = None
    max_tokens: int | None = None
    content: Any = None  # text or structured value for input/llm_output/tool_result
    session: dict[str, Any] = field(default_factory=dict)  # counters visible to CEL as `session`


@dataclass(frozen=True, slots=True)
class Match:
    """A rule that fired (or would have, in shadow mode), and why."""

    rule_id: str
    effect: str
    enforced: bool
    message: str
    bundle: str = ""
    reason: str = ""
    draft: bool = False
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "rule_id": self.rule_id,
            "effect": self.effect,
            "enforced": self.enforced,
            "message": self.message,
            "bundle": self.bundle,
        }
        if self.reason:
            d["reason"] = self.reason
        if self.draft:
            d["draft"] = True
        if self.error:
            d["error"] = self.error
        return d


@dataclass(slots=True)
class Decision:
    """The outcome for one action: the enforced effect, the rule that decided it, and the record."""

    effect: str
    rule_id: str | None
    message: str
    matches: list[Match]
    policy_hash: str
    input_digest: str
    stage: str = "tool_call"
    target: str | None = None
    side_effect: str | None = None
    draft: bool = False
    decision_id: str = ""
    approval_id: str | None = None
    redacted: Any = None  # the redacted args/content when effect is redact
    shadow_effect: str | None = None  # what shadow rules would have made of it
    rule_kind: str | None = None  # the deciding rule's kind (loop, scanner, budget, ...), see AppliedPolicy.kind_of

    @property
    def allowed(self) -> bool:
        return self.effect in PERMITTING

    @property
    def reasons(self) -> list[str]:
        out = []
        for m in self.matches:
            prefix = "" if m.enforced else "[shadow] "
            text = m.reason or m.message
            out.append(f"{prefix}{m.rule_id}: {m.effect}" + (f" — {text}" if text else ""))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision_id": self.decision_id,
            "stage": self.stage,
            "target": self.target,
            "effect": self.effect,
            "allowed": self.allowed,
            "rule_id": self.rule_id,
            "message": self.message,
            "side_effect": self.side_effect,
            "draft": self.draft,
            "shadow_effect": self.shadow_effect,
            "policy_hash": self.policy_hash,
            "input_digest": self.input_digest,
            "approval_id": self.approval_id,
            "matches": [m.to_dict() for m in self.matches],
            "reasons": self.reasons,
        }


def strongest(effects: list[str]) -> str:
    return max(effects, key=EFFECT_RANK.__getitem__) if effects else "allow"
