"""Alert rules as code: YAML (``kind: AlertRules``) with CEL conditions, like policy bundles.

```yaml
apiVersion: proctor/v1
kind: AlertRules
metadata: {name: fleet}
spec:
  notifiers:
    - {id: ops, type: webhook, url: "http://127.0.0.1:9000/hook"}
  defaults: {notify: [ops], severity: warning}
  rules:
    - id: cost-spiral
      signal: session_cost_rate        # a built-in signal (SIGNALS)
      window: 1m
      when: "value > 0.5"              # CEL over the signal's observation (VARIABLES)
      for: 0s                          # how long it must hold before firing (pending until then)
      severity: critical
      summary: "session {session} of {agent} spends ${value:.2f}/min"
      action: terminate_session        # containment: terminate_session | disable_agent | require_approval
```

A rule watches one signal. The signal turns the live stream (spans as they are ingested,
decisions as guards log them, and a few polled counts) into an observation per group (the
rule's ``group_by``: agent, session, tool...) — a ``value`` and a few more fields — whenever the
group changes or the clock ticks; ``when`` decides if the observation is bad. ``filter`` (for the
``spans`` and ``decisions`` signals) picks which events count, over ``span`` or ``decision``.

Files are refused whole, with every problem as ``file:line: where: message``.
"""

from __future__ import annotations

import hashlib
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cel
import jsonschema

from proctor.core.canonical import canonical_json
from proctor.core.timeparse import parse_duration_s
from proctor.policy.fastpath import compile_fast
from proctor.policy.loader import PolicyError, Problem, parse_documents, read_text, schema_problems

API_VERSION = "proctor/v1"
KIND = "AlertRules"

#: Fields an observation may be grouped by.
GROUP_FIELDS = ("agent", "version", "session", "tool", "model", "env", "rule", "effect", "budget")


@dataclass(frozen=True, slots=True)
class Signal:
    name: str
    description: str
    group_by: tuple[str, ...]  # the default grouping
    allowed: tuple[str, ...]  # what it can be grouped by
    window_s: float | None  # the default window; None: not windowed
    filter_var: str | None = None  # "span" or "decision": the signal takes a filter
    default_when: str | None = None
    fixed_group: bool = False  # the grouping is the signal's own (a session)


SIGNALS: dict[str, Signal] = {s.name: s for s in (
    Signal("spans", "count of ingested spans matching `filter` in the window",
           (), ("agent", "version", "session", "tool", "model", "env"), 300.0, "span"),
    Signal("decisions", "count of guard decisions matching `filter` in the window",
           (), ("agent", "session", "rule", "effect", "tool"), 300.0, "decision"),
    Signal("session_cost_rate", "a session's spend in USD per minute over the window",
           ("session",), ("session",), 60.0, fixed_group=True),
    Signal("session_cost", "a session's spend so far (USD); baseline = p99 of the agent's sessions",
           ("session",), ("session",), None, fixed_group=True),
    Signal("session_duration", "seconds since a session's first span; baseline = p99 of the agent's sessions",
           ("session",), ("session",), None, fixed_group=True),
    Signal("tool_failure_rate", "failed / all calls of a tool in the window (count = all calls)",
           ("tool",), ("tool", "agent", "version"), 300.0),
    Signal("loop_detected", "loop-breaker decisions (rules of kind loop) in the window",
           ("session",), ("session", "agent", "rule"), 600.0, default_when="value >= 1"),
    Signal("injection_detections", "prompt-injection findings by the guard's scanners in the window",
           (), ("agent", "session"), 300.0),
    Signal("budget", "a budget's used fraction (1.0 = exhausted); polled from the ledger",
           ("budget",), ("budget",), None, fixed_group=True),
    Signal("approval_backlog", "pending approvals (oldest_s: the oldest one's age); polled",
           (), (), None),
    Signal("ingest_stalled", "seconds since this server last ingested a span (while it has ingested any)",
           (), (), None),
)}

#: Variables a rule's ``when`` may read. ``value`` is always there; the others when the signal
#: and the group have them (a condition reading an absent one is false).
VARIABLES = ("value", "count", "baseline", "ratio", "oldest_s", "window_s",
             "agent", "version", "session", "tool", "model", "env", "rule", "effect", "budget")
FILTER_VARIABLES = {"span": ("span",), "decision": ("decision",)}
SPAN_FIELDS = ("kind", "name", "status", "agent", "version", "session", "tool", "model", "env",
               "cost_usd", "duration_s", "input_tokens", "output_tokens", "error_type", "service")
DECISION_FIELDS = ("effect", "rule", "rule_kind", "action", "target", "agent", "session", "enforced", "reasons")
ACTIONS = ("terminate_session", "disable_agent", "require_approval")
SEVERITIES = ("info", "warning", "critical")

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
_DURATION = {"oneOf": [{"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d|w)?\s*$"},
                       {"type": "number", "minimum": 0}]}

RULES_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://proctor.dev/schemas/alert-rules.json",
    "title": "Proctor alert rules",
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": API_VERSION},
        "kind": {"const": KIND},
        "metadata": {
            "type": "object", "additionalProperties": False, "required": ["name"],
            "properties": {"name": {"type": "string", "pattern": _ID}, "description": {"type": "string"},
                           "labels": {"type": "object", "additionalProperties": {"type": "string"}}},
        },
        "spec": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "notifiers": {"type": "array", "items": {
                    "type": "object", "required": ["id", "type"],
                    "properties": {"id": {"type": "string", "pattern": _ID},
                                   "type": {"enum": ["webhook", "slack", "email", "log"]}},
                }},
                "defaults": {
                    "type": "object", "additionalProperties": False,
                    "properties": {"notify": {"type": "array", "items": {"type": "string"}},
                                   "severity": {"enum": list(SEVERITIES)}, "for": _DURATION},
                },
                "rules": {"type": "array", "items": {
                    "type": "object", "additionalProperties": False, "required": ["id", "signal"],
                    "properties": {
                        "id": {"type": "string", "pattern": _ID},
                        "description": {"type": "string"},
                        "signal": {"enum": list(SIGNALS)},
                        "filter": {"type": "string", "minLength": 1},
                        "when": {"type": "string", "minLength": 1},
                        "window": _DURATION,
                        "for": _DURATION,
                        "group_by": {"type": "array", "items": {"enum": list(GROUP_FIELDS)}, "uniqueItems": True},
                        "severity": {"enum": list(SEVERITIES)},
                        "summary": {"type": "string"},
                        "notify": {"type": "array", "items": {"type": "string"}},
                        "action": {"enum": list(ACTIONS)},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "enabled": {"type": "boolean"},
                    },
                }},
            },
        },
    },
}
_VALIDATOR = jsonschema.Draft202012Validator(RULES_SCHEMA)


_RULE_WHERE = re.compile(r"^spec\.rules\[(\d+)\]")


class AlertRulesError(PolicyError):
    """An alert rule file refused, with every problem as file:line: where: message."""


class ConditionFailed(Exception):
    """A condition could not be evaluated (a missing variable, a type error): it does not hold."""


class AlertCondition:
    """A CEL condition over an observation (or an event, for filters): a Python closure for the
    safe subset (the policy engine's fast path), real CEL otherwise."""

    __slots__ = ("fast", "program", "source")

    def __init__(self, source: str, variables: tuple[str, ...]) -> None:
        self.source = source
        try:
            self.program = cel.compile(source)
        except Exception as e:
            raise ValueError(str(e).splitlines()[0]) from None
        unknown = sorted(set(self.program.variables()) - set(variables))
        if unknown:
            raise ValueError(f"unknown variable {unknown[0]!r}; this condition may use {', '.join(variables)}")
        # plain conjunctions of comparisons (most rules: "count >= 5 && value > 0.3") as direct
        # Python comparisons; then the policy engine's fast path; then real CEL
        self.fast = _compile_simple(source, variables) or compile_fast(source, frozenset(variables))

    def holds(self, variables: Mapping[str, Any]) -> bool:
        """True when the condition holds; raises ConditionFailed when it cannot be evaluated."""
        fast = self.fast
        if fast is not None:
            try:
                return fast(variables)
            except Exception:
                pass  # unsure: real CEL decides
        try:
            result = self.program.execute(cel.Context({k: v for k, v in variables.items() if v is not None}))
        except Exception as e:
            raise ConditionFailed(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
        if not isinstance(result, bool):
            raise ConditionFailed(f"{self.source!r} returned {type(result).__name__}, not a bool")
        return result


_CLAUSE = re.compile(r"""\s*([A-Za-z_]\w*)(?:\.([A-Za-z_]\w*))?\s*(>=|<=|==|!=|>|<)\s*
                         (-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|'[^'\\]*'|"[^"\\]*")\s*$""", re.VERBOSE)
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne}


def _compile_simple(source: str, variables: tuple[str, ...]) -> Callable[[Mapping[str, Any]], bool] | None:
    """``a > 1 && b.c == 'x'`` as a closure, or None for anything else. The closure raises
    (so the caller falls back to CEL, which decides) on a missing field or a type CEL would
    refuse: a number compared with a non-number, a string with a non-string or by order."""
    if "||" in source or "(" in source or "!" in source.replace("!=", ""):
        return None
    clauses: list[tuple[str, str | None, Callable[[Any, Any], bool], Any, type]] = []
    for part in source.split("&&"):
        m = _CLAUSE.fullmatch(part)
        if m is None or m.group(1) not in variables:
            return None
        var, fld, op, lit = m.groups()
        if lit[0] in "'\"":
            if op not in ("==", "!="):
                return None
            clauses.append((var, fld, _OPS[op], lit[1:-1], str))
        else:
            clauses.append((var, fld, _OPS[op], float(lit), float))

    def check(variables: Mapping[str, Any]) -> bool:
        for var, fld, op, lit, kind in clauses:
            value = variables[var]
            if fld is not None:
                value = value[fld]
            if kind is float:
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise TypeError(f"{var} is not a number")
            elif not isinstance(value, str):
                raise TypeError(f"{var} is not a string")
            if not op(value, lit):
                return False
        return True

    return check


@dataclass(frozen=True, slots=True)
class AlertRule:
    id: str
    signal: str
    when: AlertCondition
    window_s: float | None
    for_s: float
    group_by: tuple[str, ...]
    severity: str
    summary: str
    notify: tuple[str, ...]
    action: str | None
    labels: dict[str, str]
    filter: AlertCondition | None = None
    description: str = ""
    source: str = ""
    line: int = 0

    def render_summary(self, fields: Mapping[str, Any]) -> str:
        """The summary template with the observation's fields ({value:.2f}, {session}...)."""
        template = self.summary or f"{self.id}: {self.signal} = {{value:g}}"
        try:
            return template.format_map(_Fields(fields))
        except (ValueError, IndexError, KeyError, AttributeError):
            return f"{template} (value {fields.get('value')!r})"

    def aggregator_key(self) -> tuple[Any, ...]:
        """Rules with equal keys share one aggregation (evaluated once per event, not per rule)."""
        return (self.signal, self.filter.source if self.filter else None, self.window_s, self.group_by)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "signal": self.signal, "when": self.when.source,
                "filter": self.filter.source if self.filter else None, "window_s": self.window_s,
                "for_s": self.for_s, "group_by": list(self.group_by), "severity": self.severity,
                "summary": self.summary, "notify": list(self.notify), "action": self.action,
                "labels": self.labels, "description": self.description, "source": f"{self.source}:{self.line}"}


class _Fields(dict):  # type: ignore[type-arg]
    """format_map fields: an absent one renders as '?' instead of raising."""

    def __missing__(self, key: str) -> Any:
        return _Absent()


class _Absent:
    def __format__(self, spec: str) -> str:
        return "?"


@dataclass
class RuleSet:
    rules: list[AlertRule] = field(default_factory=list)
    notifiers: list[dict[str, Any]] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    hash: str = ""

    def rule(self, rule_id: str) -> AlertRule | None:
        return next((r for r in self.rules if r.id == rule_id), None)


def _line(lines: dict[tuple[str | int, ...], int], path: tuple[str | int, ...]) -> int:
    while path and path not in lines:
        path = path[:-1]
    return lines.get(path, 1)


def load_rules_text(text: str, source: str = "<string>") -> RuleSet:
    """Parse and validate every AlertRules document in a YAML text. All or nothing."""
    try:
        docs = parse_documents(text, source)
    except PolicyError as e:
        raise AlertRulesError([Problem(p.source, p.line, p.where, p.message.replace(
            "expected a PolicyBundle document", "expected an AlertRules document")) for p in e.problems]) from None
    out = RuleSet(sources=[source])
    problems: list[Problem] = []
    hashed: list[Any] = []
    for doc, lines in docs:
        found = schema_problems(_VALIDATOR, doc, lines, source)
        problems.extend(found)
        bad_rules = {int(m.group(1)) for p in found if (m := _RULE_WHERE.match(p.where))}
        if any(not _RULE_WHERE.match(p.where) for p in found):
            continue  # the document's shape is wrong: its rules cannot be read one by one
        hashed.append(doc)
        spec = doc["spec"]
        defaults = spec.get("defaults") or {}
        notifier_ids = {n["id"] for n in spec.get("notifiers") or []}
        for i, n in enumerate(spec.get("notifiers") or []):
            problem = _notifier_problem(n)
            if problem:
                problems.append(Problem(source, _line(lines, ("spec", "notifiers", i)), f"spec.notifiers[{i}]", problem))
        out.notifiers.extend(spec.get("notifiers") or [])
        for i, raw in enumerate(spec.get("rules") or []):
            if i in bad_rules:
                continue  # reported above; the other rules are still checked
            where = ("spec", "rules", i)
            rule, rule_problems = _build_rule(raw, defaults, source, lines, where)
            problems.extend(rule_problems)
            for j, nid in enumerate(raw.get("notify", defaults.get("notify", []))):
                if nid not in notifier_ids:
                    problems.append(Problem(source, _line(lines, (*where, "notify", j)), f"spec.rules[{i}].notify",
                                            f"unknown notifier {nid!r} (defined: {', '.join(sorted(notifier_ids)) or 'none'})"))
            if rule is not None and raw.get("enabled", True):
                out.rules.append(rule)
    seen: dict[str, AlertRule] = {}
    for r in out.rules:
        if r.id in seen:
            problems.append(Problem(source, r.line, "rules", f"duplicate rule id {r.id!r} (first at line {seen[r.id].line})"))
        seen[r.id] = r
    if problems:
        raise AlertRulesError(problems)
    out.hash = hashlib.sha256(canonical_json(hashed)).hexdigest()
    return out


def _notifier_problem(spec: dict[str, Any]) -> str | None:
    from proctor.telemetry.notify import build_notifier

    try:
        build_notifier(spec)
    except (ValueError, TypeError) as e:
        return str(e)
    return None


def _build_rule(raw: dict[str, Any], defaults: dict[str, Any], source: str,
                lines: dict[tuple[str | int, ...], int], where: tuple[str | int, ...]
                ) -> tuple[AlertRule | None, list[Problem]]:
    problems: list[Problem] = []
    dotted = f"spec.rules[{where[-1]}]"
    sig = SIGNALS[raw["signal"]]

    def problem(key: str, message: str) -> None:
        problems.append(Problem(source, _line(lines, (*where, key)), f"{dotted}.{key}", message))

    when_src = raw.get("when") or sig.default_when
    when: AlertCondition | None = None
    if when_src is None:
        problem("when", f"required for signal {sig.name} (e.g. \"value > 10\")")
    else:
        try:
            when = AlertCondition(when_src, VARIABLES)
        except ValueError as e:
            problem("when", f"invalid condition {when_src!r}: {e}")
    flt: AlertCondition | None = None
    if "filter" in raw:
        if sig.filter_var is None:
            problem("filter", f"signal {sig.name} takes no filter (only spans and decisions do)")
        else:
            try:
                flt = AlertCondition(raw["filter"], FILTER_VARIABLES[sig.filter_var])
            except ValueError as e:
                problem("filter", f"invalid filter {raw['filter']!r}: {e}")
    window_s = sig.window_s
    if "window" in raw:
        if sig.window_s is None:
            problem("window", f"signal {sig.name} is not windowed")
        else:
            window_s = parse_duration_s(raw["window"])
            if window_s <= 0:
                problem("window", "must be longer than 0")
    for_s = parse_duration_s(raw.get("for", defaults.get("for", 0)))
    group_by = tuple(raw.get("group_by", sig.group_by))
    if "group_by" in raw:
        bad = [g for g in group_by if g not in sig.allowed]
        if sig.fixed_group and tuple(group_by) != sig.group_by:
            problem("group_by", f"signal {sig.name} is always grouped by {', '.join(sig.group_by)}")
        elif bad:
            problem("group_by", f"signal {sig.name} cannot be grouped by {bad[0]!r} "
                                f"(it can by: {', '.join(sig.allowed) or 'nothing'})")
    action = raw.get("action")
    if action in ("terminate_session",) and "session" not in group_by:
        problem("action", "terminate_session needs the rule grouped by session")
    if action in ("disable_agent", "require_approval") and "agent" not in group_by and "session" not in group_by:
        problem("action", f"{action} needs the rule grouped by agent (or session)")
    if problems or when is None:
        return None, problems
    return AlertRule(
        id=raw["id"], signal=sig.name, when=when, window_s=window_s, for_s=for_s, group_by=group_by,
        severity=raw.get("severity", defaults.get("severity", "warning")), summary=raw.get("summary", ""),
        notify=tuple(raw.get("notify", defaults.get("notify", []))), action=action,
        labels=dict(raw.get("labels") or {}), filter=flt, description=raw.get("description", ""),
        source=source, line=_line(lines, where),
    ), []


def rule_files(paths: Iterable[str | Path]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.suffix in (".yaml", ".yml")))
        else:
            out.append(p)
    return out


def load_rules(paths: Iterable[str | Path]) -> RuleSet:
    """Every rule file (directories: their *.yaml), all or nothing; rule ids unique across files."""
    merged = RuleSet()
    problems: list[Problem] = []
    hashes = []
    for path in rule_files(paths):
        try:
            rs = load_rules_text(read_text(path), str(path))
        except PolicyError as e:
            problems.extend(e.problems)
            continue
        merged.rules.extend(rs.rules)
        merged.notifiers.extend(rs.notifiers)
        merged.sources.append(str(path))
        hashes.append(rs.hash)
    ids: dict[str, AlertRule] = {}
    for r in merged.rules:
        if r.id in ids:
            first = ids[r.id]
            problems.append(Problem(r.source, r.line, "rules", f"duplicate rule id {r.id!r} (also {first.source}:{first.line})"))
        ids[r.id] = r
    nids: set[str] = set()
    for n in merged.notifiers:
        if n["id"] in nids:
            problems.append(Problem(",".join(merged.sources), 1, "notifiers", f"notifier {n['id']!r} is defined twice"))
        nids.add(n["id"])
    if problems:
        raise AlertRulesError(problems)
    merged.hash = hashlib.sha256("".join(hashes).encode()).hexdigest()
    return merged




__all__ = ["ACTIONS", "SIGNALS", "VARIABLES", "AlertCondition", "AlertRule", "AlertRulesError", "ConditionFailed",
           "RuleSet", "load_rules", "load_rules_text", "rule_files"]
