"""Testing policies before they ship: case files, explanations, lint warnings, backtests.

Everything here is a pure function over bundles, actions and stored span rows; the CLI
(``proctor policy ...``) reads files and the database and prints. Decisions always come from
the engine itself (:meth:`PolicySet.evaluate`), so a case that passes here passes in the
guard; :func:`explain` only adds the *why* around the engine's answer.

- :func:`load_cases` / :func:`run_cases` — a YAML file of actions and the effect each must get,
  like ``opa test``;
- :func:`explain` — every bundle and rule considered for one action, and why it did or did not
  match;
- :func:`lint` — load every bundle, collect every problem, and warn about likely mistakes;
- :class:`Backtest` — replay stored tool and LLM calls through a candidate policy and list
  the decisions that would change.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import orjson

from proctor.policy.engine import AppliedPolicy, PolicySet, ToolProfile, cel_variables, decide
from proctor.policy.loader import (
    PolicyError,
    Problem,
    _dotted,
    _line_of,
    bundle_files,
    load_bundle_file,
    load_bundles,
    parse_documents,
    read_text,
    schema_problems,
)
from proctor.policy.model import EFFECTS, STAGES, Action, Decision, Glob, PolicyBundle, Rule

_CALL_STAGES = ("tool_call", "llm_call")
_TOOL_STAGES = ("tool_call", "tool_result")
_WRITES = ("write", "external", "irreversible")
_STATEFUL = ("budget", "rate_limit", "loop", "scanner", "taint")
_GLOB_CHARS = frozenset("*?[")


def session_view(session_id: str | None = None, **counters: Any) -> dict[str, Any]:
    """What CEL sees as ``session`` at the start of a session (the guard's counters, all zero),
    with ``counters`` on top. Cases, explanations and backtests judge an action on its own, so
    a condition on ``session.tool_calls`` sees 0 unless a case says otherwise."""
    return {"id": session_id or "", "tool_calls": 0, "llm_calls": 0, "steps": 0, "errors": 0, "tokens": 0,
            "cost_usd": 0.0, "elapsed_s": 0.0, "tainted": False, **counters}


# ---------------------------------------------------------------------------------------------
# Case files

CASES_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Proctor policy test cases",
    "type": "object",
    "required": ["cases"],
    "additionalProperties": False,
    "properties": {
        "policy": {
            "description": "Bundle files or directories, relative to the cases file.",
            "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}],
        },
        "cases": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "expect"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "description": {"type": "string"},
                    "stage": {"type": "string", "enum": list(STAGES)},
                    "agent": {"type": "string"},
                    "environment": {"type": "string"},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "tool": {"type": "string"},
                    "args": {"type": "object"},
                    "model": {"type": "string"},
                    "max_tokens": {"type": "integer", "minimum": 0},
                    "content": {},
                    "session": {"type": "object", "description": "Counters visible to CEL as `session`."},
                    "expect": {"type": "string", "enum": list(EFFECTS)},
                    "expect_rule": {"type": "string", "description": "Rule id that decides; `default` for none."},
                    "expect_shadow": {
                        "type": ["string", "null"],
                        "enum": [*EFFECTS, None],
                        "description": "What shadow rules would make of it (null: nothing different).",
                    },
                },
            },
        },
    },
}
_CASES_VALIDATOR = jsonschema.Draft202012Validator(CASES_SCHEMA)


@dataclass(frozen=True, slots=True)
class Case:
    """One action and the decision it must get."""

    name: str
    action: Action
    expect: str
    expect_rule: str | None = None
    expect_shadow: str | None = None
    check_shadow: bool = False  # expect_shadow was given (null means "no different shadow effect")
    source: str = "<string>"
    line: int = 1


@dataclass(frozen=True, slots=True)
class CaseFile:
    source: str
    policy: tuple[Path, ...]  # as named by the file, resolved against its directory
    cases: tuple[Case, ...]


def load_cases(path: str | Path) -> CaseFile:
    """Read a cases file, or raise :class:`PolicyError` naming every problem with its line."""
    p = Path(path)
    return load_cases_text(read_text(p), str(p), p.parent)


def load_cases_text(text: str, source: str = "<string>", base_dir: str | Path = ".") -> CaseFile:
    docs = parse_documents(text, source)
    if len(docs) > 1:
        raise PolicyError([Problem(source, 1, "", "a cases file holds one YAML document")])
    doc, lines = docs[0]
    problems = schema_problems(_CASES_VALIDATOR, doc, lines, source)
    if problems:
        raise PolicyError(problems)
    cases: list[Case] = []
    names: dict[str, int] = {}
    for i, c in enumerate(doc["cases"]):
        line = _line_of(lines, ("cases", i))
        where = _dotted(("cases", i))
        if c["name"] in names:
            problems.append(Problem(source, _line_of(lines, ("cases", i, "name")), f"{where}.name",
                                    f"duplicate case name {c['name']!r} (first at line {names[c['name']]})"))
            continue
        names[c["name"]] = line
        stage = c.get("stage") or ("tool_call" if "tool" in c else "llm_call" if "model" in c else None)
        if stage is None:
            problems.append(Problem(source, line, where, "say what the case does: give tool: or model: (or stage:)"))
            continue
        if stage in _TOOL_STAGES and "tool" not in c:
            problems.append(Problem(source, line, where, f"a {stage} case needs tool:"))
            continue
        action = Action(
            stage=stage, agent=c.get("agent"), environment=c.get("environment"), labels=dict(c.get("labels") or {}),
            session_id=f"case-{i}", tool=c.get("tool"), args=dict(c.get("args") or {}), model=c.get("model"),
            max_tokens=c.get("max_tokens"), content=c.get("content"),
            session=session_view(f"case-{i}", **(c.get("session") or {})),
        )
        cases.append(Case(c["name"], action, c["expect"], c.get("expect_rule"), c.get("expect_shadow"),
                          "expect_shadow" in c, source, line))
    if problems:
        raise PolicyError(problems)
    raw = doc.get("policy")
    named = [raw] if isinstance(raw, str) else list(raw or [])
    return CaseFile(source, tuple(Path(base_dir) / n for n in named), tuple(cases))


@dataclass(slots=True)
class CaseResult:
    case: Case
    decision: Decision
    failures: list[str]

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        c, d = self.case, self.decision
        return {
            "name": c.name,
            "source": c.source,
            "line": c.line,
            "passed": self.passed,
            "expect": c.expect,
            "expect_rule": c.expect_rule,
            "effect": d.effect,
            "rule_id": d.rule_id or "default",
            "shadow_effect": d.shadow_effect,
            "message": d.message,
            "failures": self.failures,
        }


def run_case(policy: PolicySet, case: Case) -> CaseResult:
    d = policy.evaluate(case.action)
    failures = []
    if d.effect != case.expect:
        failures.append(f"expected {case.expect}, got {d.effect}")
    if case.expect_rule is not None and (d.rule_id or "default") != case.expect_rule:
        failures.append(f"expected rule {case.expect_rule}, got {d.rule_id or 'default'}")
    if case.check_shadow and d.shadow_effect != case.expect_shadow:
        failures.append(f"expected shadow effect {case.expect_shadow}, got {d.shadow_effect}")
    return CaseResult(case, d, failures)


def run_cases(policy: PolicySet, cases: Iterable[Case]) -> list[CaseResult]:
    return [run_case(policy, c) for c in cases]


# ---------------------------------------------------------------------------------------------
# Explain


@dataclass(slots=True)
class BundleTrace:
    bundle: PolicyBundle
    applies: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        b = self.bundle
        return {"ref": b.ref, "hash": b.hash, "source": b.source, "mode": b.mode, "scope": scope_dict(b),
                "applies": self.applies, "reason": self.reason}


@dataclass(slots=True)
class RuleTrace:
    """One rule of an applied bundle (or a capability tier), and what it made of the action.

    ``status``: ``matched`` (fired; ``enforced`` says whether it counts or is shadow),
    ``not_matched`` (a candidate whose condition was false, or a fail-open error),
    ``error`` (the condition failed and the fail-closed rule fired), ``skipped`` (not a
    candidate: a glob, side-effect class, stage or kind excludes it), ``stateful`` (a
    candidate judged by the guard from session state, not evaluated here).
    """

    bundle: str
    id: str
    kind: str
    rule_effect: str
    status: str
    reason: str
    line: int = 0
    when: str | None = None
    effect: str | None = None  # the effect it contributed (after fail mode), when it fired
    enforced: bool = True
    decided: bool = False

    @classmethod
    def of(cls, bundle: str, rule: Rule, status: str, reason: str) -> RuleTrace:
        return cls(bundle, rule.id, rule.kind, rule.effect, status, reason, rule.line,
                   rule.when.source if rule.when is not None else None, enforced=rule.enforced)

    def to_dict(self) -> dict[str, Any]:
        return {
            "bundle": self.bundle, "id": self.id, "kind": self.kind, "line": self.line,
            "rule_effect": self.rule_effect, "when": self.when, "status": self.status, "reason": self.reason,
            "effect": self.effect, "enforced": self.enforced, "decided": self.decided,
        }


@dataclass(slots=True)
class Explanation:
    action: Action
    policy_hash: str
    bundles: list[BundleTrace]
    target: dict[str, Any]  # tool (name, side effect, where that came from) or model
    tier: dict[str, Any]
    default: dict[str, Any]
    rules: list[RuleTrace]
    decision: Decision
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        a = self.action
        return {
            "action": {"stage": a.stage, "agent": a.agent, "environment": a.environment, "labels": a.labels,
                       "tool": a.tool, "args": a.args, "model": a.model, "max_tokens": a.max_tokens},
            "policy_hash": self.policy_hash,
            "bundles": [b.to_dict() for b in self.bundles],
            "target": self.target,
            "tier": self.tier,
            "default": self.default,
            "rules": [r.to_dict() for r in self.rules],
            "decision": self.decision.to_dict(),
            "notes": self.notes,
        }


def scope_dict(b: PolicyBundle) -> dict[str, Any]:
    s = b.scope
    return {"agents": list(s.agents.patterns), "environments": list(s.environments.patterns), "labels": s.labels}


def scope_text(b: PolicyBundle) -> str:
    s = b.scope
    parts = []
    if s.agents:
        parts.append("agents=" + ",".join(s.agents.patterns))
    if s.environments:
        parts.append("environments=" + ",".join(s.environments.patterns))
    if s.labels:
        parts.append("labels=" + ",".join(f"{k}={v}" for k, v in s.labels.items()))
    return " ".join(parts) or "all sessions"


def _scope_reason(b: PolicyBundle, action: Action) -> str:
    s = b.scope
    if s.agents and not s.agents.matches(action.agent):
        return f"agent {action.agent!r} is not in scope.agents {list(s.agents.patterns)}"
    if s.environments and not s.environments.matches(action.environment):
        return f"environment {action.environment!r} is not in scope.environments {list(s.environments.patterns)}"
    if s.labels:
        have = action.labels or {}
        missing = {k: v for k, v in s.labels.items() if have.get(k) != v}
        if missing:
            return f"labels {missing} required by scope.labels"
    return f"in scope ({scope_text(b)})"


def _globs(g: Glob) -> str:
    return "[" + ", ".join(g.patterns) + "]"


def _filter_reason(rule: Rule, ap: AppliedPolicy, action: Action, profile: ToolProfile) -> str | None:
    """Why the engine did not select ``rule`` as a candidate (None: it passes every filter)."""
    if not rule.agents.matches(ap.agent):
        return f"agents {_globs(rule.agents)} do not match {ap.agent!r}"
    if action.stage in _TOOL_STAGES:
        if rule.kind == "llm":
            return "an llm rule: judged before model calls"
        if not rule.tools.matches(action.tool or ""):
            return f"tools {_globs(rule.tools)} do not match {action.tool!r}"
        if rule.side_effects and profile.side_effect not in rule.side_effects:
            return f"side_effects {sorted(rule.side_effects)} exclude {profile.side_effect}"
        return None
    if rule.kind == "tool":
        return "a tool rule: judged before tool calls"
    if rule.models and not rule.models.matches(action.model):
        return f"models {_globs(rule.models)} do not match {action.model!r}"
    if rule.kind == "taint" or (rule.kind in _STATEFUL and rule.tools):
        return f"a {rule.kind} rule for tool calls"
    return None


def _condition(rule: Rule, variables: dict[str, Any], writes: bool) -> tuple[bool | None, str]:
    """Evaluate the rule's condition on the full (unprojected) variables: (result or None on error, why)."""
    if rule.when is None:
        return True, "no condition"
    try:
        ok = rule.when.evaluate(variables)
    except Exception as e:
        fail_mode = rule.fail_mode or ("closed" if writes else "open")
        msg = str(e).split("\n", 1)[0]
        if isinstance(e, KeyError):
            msg = f"no such key {msg}"
        outcome = "treated as matched, at least deny" if fail_mode == "closed" else "treated as not matched"
        return None, f"condition error ({type(e).__name__}: {msg}): fail-{fail_mode}, {outcome}"
    return ok, f"condition {'true' if ok else 'false'}: {rule.when.source}"


def explain(policy: PolicySet, action: Action) -> Explanation:
    """The engine's decision for ``action``, with every bundle and rule it considered and why."""
    decision = policy.evaluate(action)
    ap = policy.applied(action.agent, action.environment, action.labels)
    tool_stage = action.stage in _TOOL_STAGES
    profile = ap.tool_profile(action.tool or "") if tool_stage else ap.llm_profile(action.model)
    applied = {id(b) for b in ap.bundles}
    bundles = [BundleTrace(b, id(b) in applied, _scope_reason(b, action)) for b in policy.bundles]

    fired = {(m.bundle, m.rule_id): m for m in decision.matches}
    candidates = {(b.name, r.id) for b, r in profile.tool_rules}
    stateful = {(b.name, r.id) for rules in profile.stateful.values() for b, r in rules}
    variables = cel_variables(action, profile)
    notes: list[str] = []
    rules: list[RuleTrace] = []
    default_effect = profile.default_effect if action.stage in _CALL_STAGES else "allow"
    _, decider = decide(decision.matches, default_effect, tier=ap.tier)
    for b in ap.bundles:
        for r in b.rules:
            key = (b.name, r.id)
            if key in stateful:
                rules.append(RuleTrace.of(b.name, r, "stateful", f"a {r.kind} rule: judged by the guard from "
                                          "session state at run time, not evaluated here"))
                continue
            if key not in candidates:
                why = _filter_reason(r, ap, action, profile) or "not selected for this action"
                rules.append(RuleTrace.of(b.name, r, "skipped", why))
                continue
            if r.stages and action.stage not in r.stages:
                rules.append(RuleTrace.of(b.name, r, "skipped", f"stages {sorted(r.stages)} exclude {action.stage}"))
                continue
            if not r.stages and action.stage not in _CALL_STAGES:
                rules.append(RuleTrace.of(b.name, r, "skipped",
                                          f"no stages: judged before calls, not at {action.stage}"))
                continue
            result, why = _condition(r, variables, profile.writes)
            m = fired.get(key)
            if m is None or (m.error and m.effect == "allow" and not m.enforced):  # not matched, or fail-open
                if result:  # the engine (projected arguments) disagrees with the full evaluation
                    notes.append(f"{b.name}/{r.id}: the full evaluation matched but the engine did not")
                rules.append(RuleTrace.of(b.name, r, "not_matched", why))
                continue
            if result is False:
                notes.append(f"{b.name}/{r.id}: the engine matched but the full evaluation did not")
            if not m.enforced:
                why += "; shadow: recorded, not enforced"
            rt = RuleTrace.of(b.name, r, "error" if m.error else "matched", why)
            rt.effect, rt.enforced, rt.decided = m.effect, m.enforced, m is decider
            rules.append(rt)
    for m in decision.matches:  # capability tiers are matches without a rule
        if m.rule_id.startswith("capability:"):
            rules.append(RuleTrace("", m.rule_id, "capability", m.effect, "matched",
                                   m.message + ("" if m.enforced else "; shadow: recorded, not enforced"),
                                   effect=m.effect, enforced=m.enforced, decided=m is decider))

    if tool_stage:
        source = "unlisted: counts as " + profile.side_effect
        for b in ap.bundles:
            tc = next((tc for tc in b.tools if tc.pattern.matches(action.tool or "")), None)
            if tc is not None:
                source = f"{b.ref} catalogue entry {list(tc.pattern.patterns)}"
                break
        target: dict[str, Any] = {"kind": "tool", "name": action.tool, "side_effect": profile.side_effect,
                                  "from": source, "untrusted_output": profile.untrusted_output}
    else:
        target = {"kind": "model", "name": action.model, "max_tokens": action.max_tokens}

    tier_effect = "the rules apply"
    if action.stage == "tool_call" and profile.writes:
        tier_effect = {"draft_only": "deny: returns a draft, never runs",
                       "execute_with_approval": "require_approval for every side-effecting call",
                       "autonomous": "require_approval becomes warn"}.get(ap.tier, tier_effect)
    elif ap.tier == "autonomous":
        tier_effect = "require_approval becomes warn"
    tier: dict[str, Any] = {"tier": ap.tier, "effect": tier_effect}
    if ap.shadow_tier != ap.tier:
        tier["shadow_tier"] = ap.shadow_tier

    default_class = profile.side_effect if tool_stage else "llm"
    default: dict[str, Any] = {
        "class": default_class,
        "effect": default_effect,
        "by_bundle": {b.ref: b.default_effect.get(default_class, "allow") + ("" if b.mode == "enforce" else " (shadow)")
                      for b in ap.bundles},
        "applied": decider is None,
    }
    return Explanation(action, ap.hash, bundles, target, tier, default, rules, decision, notes)


# ---------------------------------------------------------------------------------------------
# Lint


@dataclass(slots=True)
class LintReport:
    files: list[Path]
    bundles: list[PolicyBundle]
    problems: list[Problem]
    warnings: list[Problem]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        def p(x: Problem) -> dict[str, Any]:
            return {"source": x.source, "line": x.line, "where": x.where, "message": x.message}

        return {
            "ok": self.ok,
            "files": [str(f) for f in self.files],
            "bundles": [
                {"name": b.name, "version": b.version, "ref": b.ref, "hash": b.hash, "source": b.source,
                 "mode": b.mode, "rules": len(b.rules), "scope": scope_dict(b)}
                for b in self.bundles
            ],
            "problems": [p(x) for x in self.problems],
            "warnings": [p(x) for x in self.warnings],
        }


def lint(paths: Iterable[str | Path]) -> LintReport:
    """Load every bundle named by ``paths``; collect every problem; warn about likely mistakes."""
    files = bundle_files(paths)
    bundles: list[PolicyBundle] = []
    problems: list[Problem] = []
    warnings: list[Problem] = []
    if not files:
        problems.append(Problem(", ".join(map(str, paths)) or ".", 1, "", "no bundle files (*.yaml, *.yml) found"))
    for f in files:
        try:
            found = load_bundle_file(f)
        except PolicyError as e:
            problems.extend(e.problems)
            continue
        bundles.extend(found)
        docs = parse_documents(f.read_text(encoding="utf-8"), str(f))
        for b, (_, lines) in zip(found, docs, strict=True):
            warnings.extend(lint_bundle(b, lines))
    if not problems:
        try:  # what only the whole set can show (a bundle name defined twice)
            load_bundles(files)
        except PolicyError as e:
            problems.extend(e.problems)
    return LintReport(files, bundles, problems, warnings)


def lint_bundle(b: PolicyBundle, lines: dict[tuple[str | int, ...], int]) -> list[Problem]:
    """Likely mistakes in a valid bundle: each is legal, but probably not what was meant."""
    out: list[Problem] = []
    spec = b.document.get("spec") or {}
    raw_rules = spec.get("rules") or []
    rule_index = {r.get("id"): i for i, r in enumerate(raw_rules)}

    def here(*path: str | int) -> tuple[int, str]:
        return _line_of(lines, path), _dotted(path)

    # 1. tools patterns that name nothing in a non-empty catalogue: usually a typo
    if b.tools:
        for r in b.rules:
            i = rule_index.get(r.id, 0)
            for key, globs in (("tools", r.tools), ("sources", r.sources)):
                for pattern in globs.patterns:
                    if not _could_match(pattern, b):
                        line, where = here("spec", "rules", i, key)
                        out.append(Problem(b.source, line, where,
                                           f"warning: {key} pattern {pattern!r} matches no tool in the catalogue "
                                           f"(spec.tools) — a typo? Unlisted tools count as {b.unknown_side_effect}"))

    # 2. side-effecting calls allowed by default, in a bundle that governs tools
    governs_tools = bool(b.tools) or any(r.kind == "tool" for r in b.rules)
    open_classes = [se for se in _WRITES if b.default_effect.get(se) == "allow"]
    if governs_tools and open_classes:
        if "default_effect" in spec:
            line, where = here("spec", "default_effect")
        else:
            line, where = here("spec")
        out.append(Problem(b.source, line, where,
                           f"warning: {', '.join(open_classes)} tools that no rule decides are allowed "
                           "by default; consider default-deny: default_effect: {read: allow, write: deny, "
                           "external: deny, irreversible: deny}"))

    # 3. an allow rule that a stronger rule with the same scope and condition always overrides
    strong = [r for r in b.rules if r.enforced and r.effect in ("require_approval", "deny", "terminate_session")]
    for a in b.rules:
        if a.effect != "allow" or not a.enforced:
            continue
        for s in strong:
            if _same_scope(a, s) and (s.when is None or (a.when is not None and _norm(a.when.source) ==
                                                         _norm(s.when.source))):
                line, where = here("spec", "rules", rule_index.get(a.id, 0))
                out.append(Problem(b.source, line, where,
                                   f"warning: rule {a.id!r} (allow) never decides: rule {s.id!r} ({s.effect}, "
                                   f"line {s.line}) has the same scope and condition, and the stronger effect wins"))
                break
    return out


def _could_match(pattern: str, b: PolicyBundle) -> bool:
    """False only when ``pattern`` clearly names no catalogued tool."""
    if not _GLOB_CHARS.intersection(pattern):
        return any(tc.pattern.matches(pattern) for tc in b.tools)
    names = [p for tc in b.tools for p in tc.pattern.patterns]
    if any(_GLOB_CHARS.intersection(n) for n in names):
        return True  # globs on both sides: not a clear case
    return any(fnmatch.fnmatchcase(n, pattern) for n in names)


def _same_scope(a: Rule, b: Rule) -> bool:
    return (a.kind == b.kind and set(a.agents.patterns) == set(b.agents.patterns)
            and set(a.tools.patterns) == set(b.tools.patterns) and set(a.models.patterns) == set(b.models.patterns)
            and a.side_effects == b.side_effects and a.stages == b.stages)


def _norm(source: str) -> str:
    return "".join(source.split())


# ---------------------------------------------------------------------------------------------
# Backtest

#: Span columns the backtest reads (see :mod:`proctor.store.schema`).
SPAN_COLUMNS: tuple[str, ...] = (
    "trace_id", "span_id", "kind", "name", "start_ns", "agent_name", "session_id", "tool_name", "tool_arguments",
    "model", "request_model", "attributes", "resource", "events",
)


@dataclass(frozen=True, slots=True)
class RecordedCall:
    """A tool or LLM call as a stored span shows it, and what was decided for it then."""

    trace_id: str
    span_id: str
    start_ns: int
    stage: str  # tool_call | llm_call
    agent: str | None
    environment: str | None
    session_id: str | None
    tool: str | None
    args: dict[str, Any] | None
    model: str | None
    max_tokens: int | None
    before: str  # the effect recorded at the time
    before_source: str  # event | attribute | assumed (no decision recorded: it ran, so allow)
    before_rule: str | None = None

    def action(self) -> Action:
        return Action(self.stage, self.agent, self.environment, {}, self.session_id, self.tool, self.args,
                      self.model, self.max_tokens, session=session_view(self.session_id))


class SkipCall(ValueError):
    """A stored span that cannot be replayed (the reason is counted)."""


def _json_field(value: Any, empty: Any) -> Any:
    if value is None or value == "":
        return empty
    if isinstance(value, str | bytes):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return empty
    return value


def recorded_call(row: dict[str, Any]) -> RecordedCall:
    """The call a stored span row records (columns :data:`SPAN_COLUMNS`); raises :class:`SkipCall`."""
    kind = row.get("kind")
    attrs = _json_field(row.get("attributes"), {})
    if not isinstance(attrs, dict):
        attrs = {}
    if kind == "tool":
        stage = "tool_call"
        if not row.get("tool_name"):
            raise SkipCall("tool span without a tool name")
        raw = row.get("tool_arguments")
        if raw in (None, ""):
            args: dict[str, Any] | None = {}
        else:
            try:
                parsed = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
            except orjson.JSONDecodeError:
                raise SkipCall("tool arguments are not JSON") from None
            if not isinstance(parsed, dict):
                raise SkipCall("tool arguments are not a JSON object")
            args = parsed
    elif kind == "llm":
        stage, args = "llm_call", None
    else:
        raise SkipCall(f"a {kind} span is not a call")
    resource = _json_field(row.get("resource"), {})
    env = attrs.get("proctor.env") or attrs.get("deployment.environment.name")
    if not env and isinstance(resource, dict):
        env = resource.get("deployment.environment.name") or resource.get("deployment.environment")
    max_tokens = attrs.get("gen_ai.request.max_tokens")
    before, source, rule = _recorded_decision(row, attrs, stage)
    return RecordedCall(
        trace_id=row["trace_id"], span_id=row["span_id"], start_ns=int(row.get("start_ns") or 0), stage=stage,
        agent=row.get("agent_name"), environment=str(env) if env else None, session_id=row.get("session_id"),
        tool=row.get("tool_name") if stage == "tool_call" else None, args=args,
        model=(row.get("request_model") or row.get("model")) if stage == "llm_call" else None,
        max_tokens=int(max_tokens) if isinstance(max_tokens, int | float) and not isinstance(max_tokens, bool)
        else None,
        before=before, before_source=source, before_rule=rule,
    )


def _recorded_decision(row: dict[str, Any], attrs: dict[str, Any], stage: str) -> tuple[str, str, str | None]:
    """The effect decided for this call at the time: its first ``proctor.decision`` event for the
    stage (the policy's verdict; a later one may be a human's approval), else the span's
    ``proctor.decision.effect`` attribute, else ``allow`` — it ran."""
    events = _json_field(row.get("events"), [])
    for ev in events if isinstance(events, list) else ():
        if not isinstance(ev, dict) or ev.get("name") != "proctor.decision":
            continue
        ea = ev.get("attributes") or {}
        if ea.get("proctor.decision.stage", stage) != stage:
            continue
        effect = ea.get("proctor.decision.effect")
        if effect in EFFECTS:
            return effect, "event", ea.get("proctor.decision.rule_id")
    effect = attrs.get("proctor.decision.effect")
    if effect in EFFECTS:
        return effect, "attribute", attrs.get("proctor.decision.rule_id")
    return "allow", "assumed", None


@dataclass(frozen=True, slots=True)
class Change:
    call: RecordedCall
    after: Decision

    def to_dict(self) -> dict[str, Any]:
        c, d = self.call, self.after
        return {
            "trace_id": c.trace_id, "span_id": c.span_id, "start_ns": c.start_ns, "stage": c.stage,
            "agent": c.agent, "environment": c.environment, "session_id": c.session_id,
            "target": c.tool if c.stage == "tool_call" else c.model, "args": c.args, "max_tokens": c.max_tokens,
            "before": c.before, "before_source": c.before_source, "before_rule": c.before_rule,
            "after": d.effect, "rule_id": d.rule_id or "default", "message": d.message,
            "link": f"/traces/{c.trace_id}", "command": f"proctor traces show {c.trace_id}",
        }


class Backtest:
    """Replays stored calls through a candidate policy; keeps counts and the changed decisions."""

    def __init__(self, policy: PolicySet, *, keep: int | None = None) -> None:
        self.policy = policy
        self.keep = keep  # at most this many changes kept in full (None: all); the counts stay exact
        self.replayed = 0
        self.changed = 0
        self.transitions: Counter[tuple[str, str]] = Counter()
        self.skipped: Counter[str] = Counter()
        self.before_sources: Counter[str] = Counter()
        self.session_dependent = 0  # replays judged by a condition on `session` (seen at its start)
        self.changes: list[Change] = []

    def add(self, row: dict[str, Any]) -> Change | None:
        try:
            call = recorded_call(row)
        except SkipCall as e:
            self.skipped[str(e)] += 1
            return None
        return self.replay(call)

    def add_rows(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            self.add(row)

    def replay(self, call: RecordedCall) -> Change | None:
        action = call.action()
        after = self.policy.evaluate(action)
        self.replayed += 1
        ap = self.policy.applied(action.agent, action.environment, action.labels)
        profile = ap.tool_profile(action.tool or "") if call.stage == "tool_call" else ap.llm_profile(action.model)
        if any(r.when is not None and "session" in r.when.variables for _, r in profile.tool_rules):
            self.session_dependent += 1
        self.before_sources[call.before_source] += 1
        self.transitions[(call.before, after.effect)] += 1
        if after.effect == call.before:
            return None
        self.changed += 1
        change = Change(call, after)
        if self.keep is None or len(self.changes) < self.keep:
            self.changes.append(change)
        return change

    def summary(self) -> list[dict[str, Any]]:
        return [{"before": b, "after": a, "count": n, "changed": a != b}
                for (b, a), n in sorted(self.transitions.items(), key=lambda kv: (-kv[1], kv[0]))]

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy_hash": self.policy.hash,
            "policy": [b.ref for b in self.policy.bundles],
            "replayed": self.replayed,
            "changed": self.changed,
            "skipped": dict(self.skipped),
            "recorded_from": dict(self.before_sources),
            "session_dependent": self.session_dependent,
            "summary": self.summary(),
            "changes": [c.to_dict() for c in sorted(self.changes, key=lambda c: -c.call.start_ns)],
            "changes_truncated": self.changed > len(self.changes),
        }


def short_json(value: Any, width: int = 60) -> str:
    """Compact JSON for one table cell, cut at ``width`` characters."""
    if value is None:
        return ""
    text = orjson.dumps(value, default=str).decode()
    return text if len(text) <= width else text[: width - 1] + "…"


__all__ = [
    "CASES_SCHEMA",
    "Backtest",
    "Case",
    "CaseFile",
    "CaseResult",
    "Change",
    "Explanation",
    "LintReport",
    "RecordedCall",
    "SkipCall",
    "explain",
    "lint",
    "lint_bundle",
    "load_cases",
    "load_cases_text",
    "recorded_call",
    "run_case",
    "run_cases",
    "session_view",
    "short_json",
]
