"""The decision engine: which rules apply to an action, and what they decide.

Pure and stateless: the engine judges tool and LLM rules (name globs, side-effect classes,
CEL conditions, capability tiers, defaults). Rules that need memory — budgets, rate limits,
loop detectors, scanners, taint — are looked up here but judged by the guard
(:mod:`proctor.guard`), which adds their matches before :func:`decide` combines everything.

Speed comes from indexing, not from a faster evaluator: for each (agent, environment, labels)
the applicable bundles are selected once, and for each tool name the candidate rules are
selected once (globs, agent filters, side-effect classes) and cached. A decision then
evaluates only the conditions of rules that can apply to this tool.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from proctor.core.canonical import sha256_hex
from proctor.policy.cel import ContextNeeds, build_context
from proctor.policy.fastpath import is_plain
from proctor.policy.model import (
    EFFECT_RANK,
    TIERS,
    Action,
    Decision,
    Match,
    PolicyBundle,
    Rule,
    strongest,
)

#: Effects that settle a tool call on their own; warn and redact ride on top of the default.
DECISIVE: frozenset[str] = frozenset({"allow", "require_approval", "deny", "terminate_session"})
# Most restrictive first: when several bundles name a tier for an agent, the strictest wins.
_TIER_STRICTNESS = {"draft_only": 0, "execute_with_approval": 1, "execute_with_limits": 2, "autonomous": 3}
_WRITES = frozenset({"write", "external", "irreversible"})
_SIDE_RANK = {"read": 0, "write": 1, "external": 2, "irreversible": 3}


@dataclass(slots=True)
class ToolProfile:
    """Everything about one tool name under one applied policy, computed once and cached."""

    tool: str
    side_effect: str
    untrusted_output: bool
    default_effect: str
    # The default if shadow-mode bundles were enforced too (None: the same as default_effect).
    shadow_default: str | None = None
    tool_rules: list[tuple[PolicyBundle, Rule]] = field(default_factory=list)
    stateful: dict[str, list[tuple[PolicyBundle, Rule]]] = field(default_factory=dict)
    _needs: ContextNeeds | None = None

    @property
    def reads_session(self) -> bool:
        """Whether any condition here reads ``session`` (building that view costs a little)."""
        needs = self.needs
        return "session" in needs.maps or any(v == "session" for v, _, _ in needs.flat)

    @property
    def needs(self) -> ContextNeeds:
        if self._needs is None:
            self._needs = ContextNeeds.of([r.when for _, r in self.tool_rules if r.when is not None])
        return self._needs

    @property
    def writes(self) -> bool:
        return self.side_effect in _WRITES


class AppliedPolicy:
    """The bundles that govern one (agent, environment, labels), with per-tool caches."""

    def __init__(self, bundles: Sequence[PolicyBundle], agent: str | None) -> None:
        self.bundles = tuple(bundles)
        self.agent = agent
        self.hash = combined_hash(self.bundles)
        # A shadow-mode bundle records and never blocks: its capability tiers and default effects
        # count only for the shadow effect ("what if it were enforced"), not for the decision.
        self.tier = _strictest_tier([b for b in self.bundles if b.mode == "enforce"], agent)
        self.shadow_tier = _strictest_tier(self.bundles, agent)
        self._tools: dict[str, ToolProfile] = {}
        self._llm: dict[str | None, ToolProfile] = {}
        self._kinds: dict[str, list[tuple[PolicyBundle, Rule]]] = {}
        self._lock = threading.Lock()
        self.rule_kinds: dict[str, str] = {r.id: r.kind for b in self.bundles for r in b.rules}

    def kind_of(self, rule_id: str | None) -> str | None:
        """The kind of the rule that decided (tool, llm, loop, scanner, budget, rate_limit, taint),
        or what decided instead: kill_switch, approval, capability, session; None for a default."""
        if rule_id is None:
            return None
        kind = self.rule_kinds.get(rule_id)
        if kind is None:
            head = rule_id.split(":", 1)[0]
            kind = "session" if head == "session_terminated" else head
        return kind

    def rules(self, kind: str) -> list[tuple[PolicyBundle, Rule]]:
        """Every rule of ``kind`` that applies to this agent (cached)."""
        found = self._kinds.get(kind)
        if found is None:
            found = [(b, r) for b in self.bundles for r in b.rules if r.kind == kind and r.agents.matches(self.agent)]
            self._kinds[kind] = found
        return found

    def tool_profile(self, tool: str) -> ToolProfile:
        prof = self._tools.get(tool)
        if prof is not None:
            return prof
        # Several bundles may classify a tool; the strictest class wins, whatever their order
        # (an unlisted tool takes each bundle's unknown_side_effect, "write" by default).
        side_effect, untrusted = "read", False
        for i, b in enumerate(self.bundles):
            se, un = b.side_effect_of(tool)
            if i == 0 or _SIDE_RANK[se] > _SIDE_RANK[side_effect]:
                side_effect = se
            untrusted = untrusted or un
        prof = ToolProfile(tool, side_effect, untrusted, *self._defaults(side_effect))
        for b in self.bundles:
            for r in b.rules:
                if not r.agents.matches(self.agent) or not r.tools.matches(tool):
                    continue
                if r.side_effects and side_effect not in r.side_effects:
                    continue
                if r.kind == "tool":
                    prof.tool_rules.append((b, r))
                elif r.kind != "llm":
                    prof.stateful.setdefault(r.kind, []).append((b, r))
        with self._lock:
            self._tools[tool] = prof
        return prof

    def llm_profile(self, model: str | None) -> ToolProfile:
        prof = self._llm.get(model)
        if prof is not None:
            return prof
        prof = ToolProfile(model or "", "llm", False, *self._defaults("llm"))
        for b in self.bundles:
            for r in b.rules:
                if not r.agents.matches(self.agent) or (r.models and not r.models.matches(model)):
                    continue
                if r.kind == "llm":
                    prof.tool_rules.append((b, r))
                elif r.kind in ("budget", "loop", "scanner", "rate_limit") and not r.tools:
                    prof.stateful.setdefault(r.kind, []).append((b, r))
        with self._lock:
            self._llm[model] = prof
        return prof

    def _defaults(self, side_effect: str) -> tuple[str, str]:
        """(enforced default, shadow default) for a side-effect class: the strongest wins."""
        enforced = [b.default_effect.get(side_effect, "allow") for b in self.bundles if b.mode == "enforce"]
        every = [b.default_effect.get(side_effect, "allow") for b in self.bundles]
        return strongest(enforced), strongest(every)

    def evaluate(self, action: Action, profile: ToolProfile | None = None) -> tuple[list[Match], ToolProfile]:
        """The stateless matches for an action: tool/LLM rules and the capability tier."""
        if profile is None:
            profile = self.tool_profile(action.tool or "") if action.stage in ("tool_call", "tool_result") \
                else self.llm_profile(action.model)
        matches: list[Match] = []
        context: Any = None
        variables: dict[str, Any] | None = None
        plain = False
        for bundle, rule in profile.tool_rules:
            if rule.stages:
                if action.stage not in rule.stages:
                    continue
            elif action.stage not in ("tool_call", "llm_call"):
                continue
            if rule.when is not None:
                # The fast path (a Python closure for a safe subset of CEL, exact where it answers)
                # first; real CEL when it cannot answer. Only for plain data: CEL refuses values
                # it cannot convert anywhere in a map it receives, the closure only checks what it reads.
                held: bool | None = None
                fast = rule.when.fast
                if fast is not None:
                    if variables is None:
                        variables = cel_variables(action, profile)
                        plain = _plain_where_read(variables, profile.needs)
                    if plain:
                        try:
                            held = fast(variables)
                        except Exception:  # undecided, or an error CEL must report in its own words
                            held = None
                try:
                    if held is None:
                        if context is None:
                            context = build_context(variables or cel_variables(action, profile), profile.needs)
                        held = rule.when.run(context)
                    if not held:
                        continue
                except Exception as e:  # CEL run-time error: the fail mode decides
                    fail_mode = rule.fail_mode or ("closed" if profile.writes else "open")
                    if fail_mode == "open":
                        matches.append(Match(rule.id, "allow", False, rule.message, bundle.name,
                                             reason=f"condition failed, fail-open: {_short(e)}", error=_short(e)))
                        continue
                    effect = rule.effect if EFFECT_RANK[rule.effect] >= EFFECT_RANK["deny"] else "deny"
                    matches.append(Match(rule.id, effect, rule.enforced, rule.message, bundle.name,
                                         reason=f"condition failed, fail-closed: {_short(e)}", error=_short(e)))
                    continue
            matches.append(Match(rule.id, rule.effect, rule.enforced, rule.message, bundle.name))
        if action.stage == "tool_call" and profile.writes:
            tier_match = self._tier_match(self.tier, profile, enforced=True)
            if tier_match is not None:
                matches.append(tier_match)
            if self.shadow_tier != self.tier:
                tier_match = self._tier_match(self.shadow_tier, profile, enforced=False)
                if tier_match is not None:
                    matches.append(tier_match)
        return matches, profile

    def _tier_match(self, tier: str, profile: ToolProfile, *, enforced: bool) -> Match | None:
        """What a capability tier makes of a side-effecting tool call (None: the rules decide)."""
        who = self.agent or "this agent"
        if tier == "draft_only":
            return Match("capability:draft_only", "deny", enforced,
                         f"{who} is draft-only: {profile.side_effect} tools return a draft and never execute",
                         draft=True)
        if tier == "execute_with_approval":
            return Match("capability:execute_with_approval", "require_approval", enforced,
                         f"{who} needs approval for {profile.side_effect} tools")
        return None


def _strictest_tier(bundles: Iterable[PolicyBundle], agent: str | None) -> str:
    tiers = [b.tier_of(agent) for b in bundles if any(c.agents.matches(agent) for c in b.capabilities)]
    return min(tiers, key=_TIER_STRICTNESS.__getitem__) if tiers else "execute_with_limits"


def _short(e: BaseException) -> str:
    text = str(e).split("\n", 1)[0]
    if isinstance(e, KeyError):
        text = f"no such key {text}"
    return f"{type(e).__name__}: {text}"[:300]


def _plain_where_read(variables: dict[str, Any], needs: ContextNeeds) -> bool:
    """Whether the containers the conditions read are plain data CEL can take (the fast path
    checks each scalar it reads itself, but not inside a list it only measures)."""
    for var, fld, _ in needs.flat:
        src = variables.get(var)
        if isinstance(src, dict):
            v = src.get(fld)
            if isinstance(v, (list, dict, tuple)) and not is_plain(v):
                return False
    return all(is_plain(variables.get(var)) for var in needs.maps)


def cel_variables(action: Action, profile: ToolProfile) -> dict[str, Any]:
    return {
        "args": action.args or {},
        "tool": {"name": action.tool or "", "side_effect": profile.side_effect},
        "agent": {"name": action.agent or "", "environment": action.environment or "", "labels": action.labels},
        "session": action.session,
        "llm": {"model": action.model or "", "max_tokens": action.max_tokens or 0},
        "content": action.content if isinstance(action.content, (str, dict, list)) else "",
        "stage": action.stage,
    }


def decide(matches: list[Match], default_effect: str, *, tier: str = "execute_with_limits") -> tuple[str, Match | None]:
    """Combine matches into the enforced effect and the match that decided it (None: the default).

    Strongest effect wins among enforced matches. If none of them is decisive (allow,
    require_approval, deny, terminate_session), the default effect joins in, so a ``warn`` rule
    cannot open a default-deny door. An autonomous agent's approvals become warnings that still
    settle the call: it may do, with a warning on record, what would otherwise need a human —
    never less than an agent of a stricter tier (the default does not join in).
    """
    best: Match | None = None
    decisive = False
    for m in matches:
        if not m.enforced:
            continue
        if m.effect in DECISIVE:
            decisive = True
        eff = m.effect
        if tier == "autonomous" and eff == "require_approval":
            eff = "warn"
        if best is None or EFFECT_RANK[eff] > EFFECT_RANK[_eff(best, tier)]:
            best = m
    effect = _eff(best, tier) if best is not None else "allow"
    if not decisive and EFFECT_RANK[default_effect] > EFFECT_RANK[effect]:
        return default_effect, None
    if best is None:
        return default_effect, None
    return effect, best


def _eff(m: Match, tier: str) -> str:
    return "warn" if tier == "autonomous" and m.effect == "require_approval" else m.effect


def shadow_effect(matches: list[Match], default_effect: str, tier: str) -> str:
    """What the decision would be if every shadow rule were enforced."""
    promoted = [m if m.enforced else Match(m.rule_id, m.effect, True, m.message, m.bundle) for m in matches
                if not m.error or m.effect != "allow"]
    return decide(promoted, default_effect, tier=tier)[0]


def combined_hash(bundles: Iterable[PolicyBundle]) -> str:
    hashes = sorted(b.hash for b in bundles)
    if not hashes:
        return "none"
    if len(hashes) == 1:
        return hashes[0]
    return sha256_hex("\n".join(hashes))


class PolicySet:
    """The active bundles. Immutable: reloading builds a new set and swaps it in whole."""

    def __init__(self, bundles: Sequence[PolicyBundle] = ()) -> None:
        self.bundles = tuple(bundles)
        self.hash = combined_hash(self.bundles)
        self._applied: dict[tuple[Any, ...], AppliedPolicy] = {}
        self._lock = threading.Lock()

    def applied(self, agent: str | None, environment: str | None, labels: dict[str, str] | None = None) -> AppliedPolicy:
        key = (agent, environment, tuple(sorted(labels.items())) if labels else ())
        ap = self._applied.get(key)
        if ap is None:
            ap = AppliedPolicy([b for b in self.bundles if b.scope.applies(agent, environment, labels)], agent)
            with self._lock:
                if len(self._applied) > 50_000:
                    self._applied.clear()
                self._applied[key] = ap
        return ap

    def evaluate(self, action: Action) -> Decision:
        """A stateless decision: tool/LLM rules, tiers, defaults. The guard adds the stateful rules."""
        ap = self.applied(action.agent, action.environment, action.labels)
        matches, profile = ap.evaluate(action)
        default = profile.default_effect if action.stage in ("tool_call", "llm_call") else "allow"
        return finish_decision(action, matches, default, ap, profile)


def finish_decision(action: Action, matches: list[Match], default: str, ap: AppliedPolicy,
                    profile: ToolProfile, input_digest: str = "") -> Decision:
    effect, by = decide(matches, default, tier=ap.tier)
    # Defaults apply to calls only; a result or input stage keeps the default it was given.
    shadow_default = default
    if action.stage in ("tool_call", "llm_call") and profile.shadow_default is not None:
        shadow_default = strongest([default, profile.shadow_default])
    hypothetical = shadow_default != default or ap.shadow_tier != ap.tier or any(not m.enforced for m in matches)
    shadow = shadow_effect(matches, shadow_default, ap.shadow_tier) if hypothetical else None
    if by is None:
        message = f"default effect for {profile.side_effect} tools" if action.stage == "tool_call" else "default"
    else:  # a rule without a message: say why it matched instead of nothing
        message = by.message or by.reason or f"rule {by.rule_id}"
    return Decision(
        effect=effect,
        rule_id=by.rule_id if by is not None else None,
        message=message,
        matches=matches,
        policy_hash=ap.hash,
        input_digest=input_digest,
        stage=action.stage,
        target=action.tool if action.stage in ("tool_call", "tool_result") else action.model,
        side_effect=profile.side_effect,
        draft=bool(by is not None and by.draft),
        shadow_effect=shadow if shadow != effect else None,
        rule_kind=ap.kind_of(by.rule_id) if by is not None else None,
    )


__all__ = ["TIERS", "AppliedPolicy", "PolicySet", "ToolProfile", "decide", "finish_decision"]
