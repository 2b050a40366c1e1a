"""The guard: decides before an action runs, and records that it decided.

One :class:`Guard` per process holds the active policy, the per-session state (step history
for loop breakers, taint, counters), the token buckets, the kill-switch cache, and handles on
the durable state in the store (budgets, approvals, kill switches, the decision log), which
is what several processes or replicas share.

The hot path of a tool call — kill switches, tool rules, loop detectors, rate limits, the
span event, queueing the log row — stays in memory. Only budgets (an atomic counter update)
and approvals touch the database inside the call, and only when a rule asks for them.

Flow for a tool call::

    permit = guard.check_tool(session, "issue_refund", {"amount_usd": 80})   # may raise
    result = run_the_tool(**permit.args)                                      # args may be redacted
    result = guard.tool_result(permit, result)                               # settles budgets, scans
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from opentelemetry import trace
from sqlalchemy import Engine

from proctor.core.canonical import sha256_hex
from proctor.guard.approvals import ApprovalHandle, approval_digest, post_webhook, slack_message
from proctor.guard.errors import ActionDenied, ApprovalPending, SessionTerminated
from proctor.guard.loops import Step, detect
from proctor.guard.recording import DecisionLogWriter, span_event
from proctor.policy.engine import AppliedPolicy, PolicySet, ToolProfile, finish_decision
from proctor.policy.loader import load_bundles
from proctor.policy.model import EFFECT_RANK, Action, Decision, Match, PolicyBundle, Rule
from proctor.store.approvals import Approval, ApprovalError, ApprovalStore
from proctor.store.budgets import BudgetExceeded, BudgetLedger, Reservation
from proctor.store.decisions import DecisionLog
from proctor.store.killswitches import KillSwitch, KillSwitches, KillSwitchWatcher

log = logging.getLogger("proctor.guard")

_WRITES = frozenset({"write", "external", "irreversible"})


def _digest(value: Any) -> str:
    """A fast digest of an action's inputs (sorted-key JSON; non-JSON values by their str)."""
    try:
        data = orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)
    except TypeError:
        data = repr(value).encode()
    return sha256_hex(data)


@dataclass(slots=True)
class GuardSession:
    """What the guard remembers about one session (keyed by id, shared by the agents in it)."""

    session_id: str
    agent: str | None = None
    environment: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    version: str | None = None
    started: float = field(default_factory=time.monotonic)
    steps: deque[Step] = field(default_factory=lambda: deque(maxlen=256))
    seen_results: set[str] = field(default_factory=set)
    tool_calls: int = 0
    llm_calls: int = 0
    errors: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    terminated: Decision | None = None
    taint: Any = None  # a detectors.TaintTracker, made on first use
    policy: PolicySet | None = None  # the bundle the session's registered version pins, if any
    lock: threading.Lock = field(default_factory=threading.Lock)

    def cel_view(self) -> dict[str, Any]:
        return {
            "id": self.session_id,
            "tool_calls": self.tool_calls,
            "llm_calls": self.llm_calls,
            "steps": len(self.steps),
            "errors": self.errors,
            "tokens": self.tokens,
            "cost_usd": self.cost_usd,
            "elapsed_s": time.monotonic() - self.started,
            "tainted": bool(self.taint is not None and len(self.taint)),
        }


@dataclass(slots=True)
class Permit:
    """Permission to run one action, with what is needed to settle it afterwards."""

    decision: Decision
    session: GuardSession
    agent: str | None
    stage: str
    target: str
    args: Any  # the arguments (or prompt) to use: redacted if a rule said so
    profile: ToolProfile
    applied: AppliedPolicy
    step: Step
    reservation: Reservation | None = None
    budget_parts: list[tuple[Rule, str]] = field(default_factory=list)  # (rule, counter key)
    started: float = field(default_factory=time.monotonic)
    settled: bool = False

    @property
    def draft(self) -> bool:
        return self.decision.draft


class TokenBucket:
    __slots__ = ("capacity", "refill", "stamp", "tokens")

    def __init__(self, capacity: float, refill_per_s: float) -> None:
        self.capacity, self.refill = capacity, refill_per_s
        self.tokens, self.stamp = capacity, time.monotonic()

    def take(self, n: float = 1.0) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.refill)
        self.stamp = now
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False


class Guard:
    """Runtime governance for one process. Thread-safe.

    ``policy``: a :class:`PolicySet`, bundles, or paths of YAML files/directories.
    ``engine``: the store holding budgets, approvals, kill switches and the decision log.
    ``injection_classifier``: an optional :class:`proctor.detectors.InjectionClassifier` (any
    object with ``name`` and ``score(text) -> float``) combined with the injection heuristics.
    """

    def __init__(
        self,
        policy: PolicySet | Iterable[PolicyBundle] | Iterable[str | Path] | str | Path,
        engine: Engine,
        *,
        approval_ttl_s: float = 900.0,
        approval_wait_s: float | None = None,
        approval_webhook: str | None = None,
        console_url: str | None = None,
        record_decisions: bool = True,
        watch_kill_switches: bool = True,
        kill_poll_interval_s: float = 0.25,
        injection_classifier: Any = None,
    ) -> None:
        self._paths: list[str | Path] = []
        self.policy = self._as_policy(policy)
        self.engine = engine
        self.budgets = BudgetLedger(engine)
        self.approvals = ApprovalStore(engine)
        self.kill_switches = KillSwitches(engine)
        self.approval_ttl_s = approval_ttl_s
        self.approval_wait_s = approval_wait_s
        self.approval_webhook = approval_webhook or os.environ.get("PROCTOR_APPROVAL_WEBHOOK") or None
        self.console_url = console_url
        self._sessions: dict[str, GuardSession] = {}
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._scanners: dict[tuple[Any, ...], Any] = {}
        # a model-based detector (detectors.InjectionClassifier) combined with the heuristics
        self.injection_classifier = injection_classifier
        self._lock = threading.Lock()
        self._kills: dict[str, KillSwitch] = {}
        self._scanner_lock = threading.Lock()
        self._warm_scanners()
        self.log_writer = DecisionLogWriter(DecisionLog(engine)) if record_decisions else None
        self._watcher: KillSwitchWatcher | None = None
        if watch_kill_switches:
            self._watcher = self.kill_switches.watch(self._on_kill_switches, poll_interval_s=kill_poll_interval_s)
        else:
            self._kills = self.kill_switches.active()

    # -- policy -------------------------------------------------------------------------------

    def _as_policy(self, policy: Any) -> PolicySet:
        if isinstance(policy, PolicySet):
            return policy
        if isinstance(policy, (str, Path)):
            policy = [policy]
        items = list(policy)
        if items and all(isinstance(p, PolicyBundle) for p in items):
            return PolicySet(items)
        self._paths = items
        return PolicySet(load_bundles(items))

    def reload(self, paths: Iterable[str | Path] | None = None) -> PolicySet:
        """Load the bundles again (from ``paths`` or the ones given at start) and swap them in.

        An invalid bundle raises :class:`~proctor.policy.loader.PolicyError` naming file:line,
        and the active policy stays as it was.
        """
        chosen = list(paths) if paths is not None else self._paths
        new = PolicySet(load_bundles(chosen))
        self.policy = new
        self._paths = chosen
        self._warm_scanners()
        return new

    def _warm_scanners(self) -> None:
        """Build the scanners the policy uses in the background: Presidio takes ~3 s to load,
        which should not land on the first tool call that needs it."""
        rules = [r for b in self.policy.bundles for r in b.rules if r.kind == "scanner"]
        if rules:
            threading.Thread(target=lambda: [self._scanner(r) for r in rules], name="proctor-scanner-warmup",
                             daemon=True).start()

    # -- sessions -----------------------------------------------------------------------------

    def session(self, session_id: str, *, agent: str | None = None, environment: str | None = None,
                labels: dict[str, str] | None = None, version: str | None = None,
                policy: PolicySet | None = None) -> GuardSession:
        """The state of a session, created on first use. Agents sharing an id share the state.

        The environment and labels are fixed by the first call for an id (they choose the
        bundles); later calls name the acting agent per check instead. ``policy``: the bundles of
        the session's registered version (see proctor.sdk.resolve), instead of the guard's own.
        """
        gs = self._sessions.get(session_id)
        if gs is None:
            with self._lock:
                gs = self._sessions.get(session_id)
                if gs is None:
                    if len(self._sessions) > 100_000:  # bounded: forget the oldest half
                        for k in list(self._sessions)[:50_000]:
                            del self._sessions[k]
                    gs = GuardSession(session_id, agent, environment, dict(labels or {}), version, policy=policy)
                    self._sessions[session_id] = gs
        return gs

    def has_session(self, session_id: str) -> bool:
        """Whether the guard holds state for this session id (a later call joins it)."""
        return session_id in self._sessions

    def end_session(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    # -- kill switches ------------------------------------------------------------------------

    def _on_kill_switches(self, active: dict[str, KillSwitch]) -> None:
        self._kills = dict(active)

    def _killed(self, gs: GuardSession, agent: str | None, side_effect: str | None) -> Match | None:
        kills = self._kills
        if not kills:
            return None
        for scope in ("global", f"agent:{agent}", f"session:{gs.session_id}"):
            ks = kills.get(scope)
            if ks is not None:
                return Match(f"kill_switch:{scope}", "terminate_session", True,
                             f"kill switch {scope} is on" + (f": {ks.reason}" if ks.reason else ""))
        if side_effect in _WRITES:
            for scope in ("writes_off", f"writes_off:agent:{agent}"):
                ks = kills.get(scope)
                if ks is not None:
                    return Match(f"kill_switch:{scope}", "deny", True,
                                 f"writes are off ({scope}): {side_effect} tools are refused"
                                 + (f" — {ks.reason}" if ks.reason else ""))
        return None

    def _approval_mode(self, agent: str | None, side_effect: str | None) -> list[Match]:
        """An ``approvals_only`` switch (set by an operator or an alert's containment): every
        side-effecting call needs a human. It adds to the rules' matches, so a call they deny
        stays denied."""
        kills = self._kills
        if not kills or side_effect not in _WRITES:
            return []
        for scope in ("approvals_only", f"approvals_only:agent:{agent}"):
            ks = kills.get(scope)
            if ks is not None:
                return [Match(f"kill_switch:{scope}", "require_approval", True,
                              f"approval mode ({scope}): {side_effect} tools need a human's approval"
                              + (f" — {ks.reason}" if ks.reason else ""))]
        return []

    # -- tool calls ---------------------------------------------------------------------------

    def check_tool(self, gs: GuardSession, tool: str, args: dict[str, Any] | None = None, *,
                   agent: str | None = None, approval_id: str | None = None,
                   wait_for_approval_s: float | None = None) -> Permit:
        """Decide whether ``tool`` may run with ``args`` now. Returns a :class:`Permit` (use its
        ``args``: they may be redacted; if ``permit.draft`` the tool must not run) or raises
        :class:`ActionDenied`, :class:`ApprovalPending` or :class:`SessionTerminated`."""
        agent = agent or gs.agent
        args = args if args is not None else {}
        ap = (gs.policy or self.policy).applied(agent, gs.environment, gs.labels)
        profile = ap.tool_profile(tool)
        args_digest = _digest({"tool": tool, "args": args})
        step = Step(agent or "", f"{tool}#{args_digest[:16]}")
        action = Action("tool_call", agent, gs.environment, gs.labels, gs.session_id, tool, args,
                        session=gs.cel_view() if profile.reads_session else {})
        permit = Permit(_PLACEHOLDER, gs, agent, "tool_call", tool, args, profile, ap, step)
        with gs.lock:
            matches = self._preconditions(gs, agent, profile.side_effect)
            if not matches:
                matches, _ = ap.evaluate(action, profile)
                matches += self._approval_mode(agent, profile.side_effect)
                stateful = profile.stateful
                if stateful:
                    if "loop" in stateful:
                        matches += self._loops(stateful["loop"], gs, step)
                    if "taint" in stateful and gs.taint is not None:
                        matches += self._taint(stateful["taint"], gs, args)
                    if "scanner" in stateful:
                        scan_matches, permit.args = self._scan(stateful["scanner"], "tool_call", args,
                                                               "args", profile.writes)
                        matches += scan_matches
                    # last: a call refused for another reason, or waiting for a human, spends no token
                    if "rate_limit" in stateful and not _refused(matches):
                        matches += self._rate_limits(stateful["rate_limit"], gs, agent, tool)
            gs.steps.append(step)
            decision = finish_decision(action, matches, profile.default_effect, ap, profile, args_digest)
            if decision.allowed and not decision.draft and "budget" in profile.stateful:
                decision = self._reserve(permit, decision, action, matches, {"tool_calls": 1.0})
            if decision.effect == "redact":
                decision.redacted = permit.args
            if decision.effect == "require_approval":
                decision = self._approval(permit, decision, action, matches, args, approval_id,
                                          wait_for_approval_s)
            elif approval_id is not None:
                decision.approval_id = approval_id
            permit.decision = decision
            self._record(decision, gs, agent)
            self._enforce(decision, gs)
        return permit

    def tool_result(self, permit: Permit, result: Any, *, error: BaseException | str | None = None) -> Any:
        """After the tool ran: settle budgets, count, learn untrusted values, scan the result.

        Returns the result to hand to the model — redacted if a scanner rule says so; raises
        :class:`ActionDenied` if a rule denies the result (the tool ran, but the model never
        sees its output).
        """
        gs = permit.session
        elapsed = time.monotonic() - permit.started
        with gs.lock:
            gs.tool_calls += 1
            if error is not None:
                gs.errors += 1
                permit.step.error = True
            elif "loop" in permit.profile.stateful:  # only no_progress reads novelty
                d = _digest(result)
                permit.step.novel = d not in gs.seen_results
                if len(gs.seen_results) < 10_000:
                    gs.seen_results.add(d)
            self._settle(permit, {"tool_calls": 1.0, "wall_s": elapsed})
            if error is not None:
                return result
            profile = permit.profile
            if profile.untrusted_output or any(
                r.sources and r.sources.matches(permit.target) for _, r in permit.applied.rules("taint")
            ):
                self._observe_untrusted(gs, f"tool:{permit.target}", result)
            scanners = [(b, r) for b, r in profile.stateful.get("scanner", []) if "tool_result" in r.stages]
            if not scanners:
                return result
            matches, redacted = self._scan(scanners, "tool_result", result, "result", False)
            if not matches:
                return result
            action = Action("tool_result", permit.agent, gs.environment, gs.labels, gs.session_id,
                            permit.target, permit.args)
            decision = finish_decision(action, matches, "allow", permit.applied, profile, _digest(result))
            if decision.effect == "redact":
                decision.redacted = redacted
            self._record(decision, gs, permit.agent)
            self._enforce(decision, gs)
            if decision.effect == "require_approval":  # a result cannot wait for a human: withhold it
                raise ActionDenied(decision, f"{permit.target}: result withheld — {decision.message}")
            return redacted if decision.effect == "redact" else result

    # -- LLM calls ----------------------------------------------------------------------------

    def check_llm(self, gs: GuardSession, model: str, *, max_tokens: int | None = None, prompt: Any = None,
                  agent: str | None = None, provider: str | None = None) -> Permit:
        """Before a model call: LLM rules, budgets (reserving the worst case: max_tokens at the
        model's price plus the prompt), loops, scanners over the prompt."""
        agent = agent or gs.agent
        ap = (gs.policy or self.policy).applied(agent, gs.environment, gs.labels)
        profile = ap.llm_profile(model)
        action = Action("llm_call", agent, gs.environment, gs.labels, gs.session_id, model=model,
                        max_tokens=max_tokens, content=prompt,
                        session=gs.cel_view() if profile.reads_session else {})
        prompt_digest = _digest({"model": model, "prompt": prompt})
        step = Step(agent or "", f"llm:{model}#{prompt_digest[:16]}")
        permit = Permit(_PLACEHOLDER, gs, agent, "llm_call", model, prompt, profile, ap, step)
        with gs.lock:
            matches = self._preconditions(gs, agent, None)
            if not matches:
                matches, _ = ap.evaluate(action, profile)
                if "loop" in profile.stateful:
                    matches += self._loops(profile.stateful["loop"], gs, step)
                if "rate_limit" in profile.stateful:
                    matches += self._rate_limits(profile.stateful["rate_limit"], gs, agent, f"llm:{model}")
                scanners = [(b, r) for b, r in profile.stateful.get("scanner", []) if "llm_call" in r.stages]
                if scanners and prompt is not None:
                    scan_matches, permit.args = self._scan(scanners, "llm_call", prompt, "prompt", False)
                    matches += scan_matches
            gs.steps.append(step)
            decision = finish_decision(action, matches, profile.default_effect, ap, profile, prompt_digest)
            if decision.allowed and "budget" in profile.stateful:
                est_in = _estimate_tokens(prompt)
                worst = est_in + (max_tokens or 4096)
                usd = _price(model, provider, est_in, max_tokens or 4096)
                decision = self._reserve(permit, decision, action, matches, {"tokens": float(worst), "usd": usd})
            if decision.effect == "redact":
                decision.redacted = permit.args
            if decision.effect == "require_approval":  # a model call has no human in the loop: deny
                decision.effect, decision.message = "deny", f"{decision.message} (approval is not available for model calls)"
            permit.decision = decision
            self._record(decision, gs, agent)
            self._enforce(decision, gs)
        return permit

    def llm_result(self, permit: Permit, output: Any = None, *, input_tokens: int = 0, output_tokens: int = 0,
                   cost_usd: float | None = None, provider: str | None = None,
                   error: BaseException | str | None = None) -> Any:
        """After a model call: settle budgets with the actual usage; scan the output."""
        gs = permit.session
        elapsed = time.monotonic() - permit.started
        if cost_usd is None:
            cost_usd = _price(permit.target, provider, input_tokens, output_tokens)
        with gs.lock:
            gs.llm_calls += 1
            gs.tokens += input_tokens + output_tokens
            gs.cost_usd += cost_usd
            if error is not None:
                gs.errors += 1
                permit.step.error = True
            self._settle(permit, {"tokens": float(input_tokens + output_tokens), "usd": cost_usd, "wall_s": elapsed})
            scanners = [(b, r) for b, r in permit.profile.stateful.get("scanner", []) if "llm_output" in r.stages]
            if error is not None or output is None or not scanners:
                return output
            matches, redacted = self._scan(scanners, "llm_output", output, "output", False)
            if not matches:
                return output
            action = Action("llm_output", permit.agent, gs.environment, gs.labels, gs.session_id, model=permit.target)
            decision = finish_decision(action, matches, "allow", permit.applied, permit.profile, _digest(output))
            if decision.effect == "redact":
                decision.redacted = redacted
            self._record(decision, gs, permit.agent)
            self._enforce(decision, gs)
            if decision.effect == "require_approval":
                raise ActionDenied(decision, f"model output withheld — {decision.message}")
            return redacted if decision.effect == "redact" else output

    # -- inputs -------------------------------------------------------------------------------

    def check_input(self, gs: GuardSession, content: Any, *, source: str | None = None,
                    agent: str | None = None) -> Any:
        """Content arriving in a session (a user message, another agent's hand-off, a fetched
        document): scanner rules for stage ``input``; untrusted sources are tracked for taint.
        Returns the content to use (maybe redacted) or raises."""
        agent = agent or gs.agent
        ap = (gs.policy or self.policy).applied(agent, gs.environment, gs.labels)
        profile = ap.llm_profile(None)
        with gs.lock:
            if source:
                self._observe_untrusted(gs, source, content)
            pre = self._preconditions(gs, agent, None)
            scanners = [(b, r) for b in ap.bundles for r in b.rules
                        if r.kind == "scanner" and "input" in r.stages and r.agents.matches(agent)]
            matches, redacted = self._scan(scanners, "input", content, "input", False) if scanners else ([], content)
            matches = pre + matches
            if not matches:
                return content
            action = Action("input", agent, gs.environment, gs.labels, gs.session_id, content=None)
            decision = finish_decision(action, matches, "allow", ap, profile, _digest(content))
            if decision.effect == "redact":
                decision.redacted = redacted
            self._record(decision, gs, agent)
            self._enforce(decision, gs)
            if decision.effect == "require_approval":
                raise ActionDenied(decision, f"input refused — {decision.message}")
            return redacted if decision.effect == "redact" else content

    # -- the pieces ---------------------------------------------------------------------------

    def _preconditions(self, gs: GuardSession, agent: str | None, side_effect: str | None) -> list[Match]:
        if gs.terminated is not None:
            why = f": {gs.terminated.message}" if gs.terminated.message else ""
            return [Match("session_terminated", "terminate_session", True,
                          f"session was terminated by {gs.terminated.rule_id or 'default'}{why}")]
        kill = self._killed(gs, agent, side_effect)
        return [kill] if kill is not None else []

    def _loops(self, rules: list[tuple[PolicyBundle, Rule]], gs: GuardSession, step: Step) -> list[Match]:
        out = []
        for b, r in rules:
            reason = detect(r.detector, gs.steps, step, r.threshold, r.window)
            if reason:
                out.append(Match(r.id, r.effect, r.enforced, r.message or f"loop detected ({r.detector})",
                                 b.name, reason=reason))
        return out

    def _rate_limits(self, rules: list[tuple[PolicyBundle, Rule]], gs: GuardSession, agent: str | None,
                     target: str) -> list[Match]:
        out = []
        for b, r in rules:
            key = {"agent": agent or "", "tool": target, "session": gs.session_id}.get(r.rate_per, "")
            bucket = self._buckets.get((r.id, key))
            if bucket is None:
                bucket = self._buckets.setdefault((r.id, key), TokenBucket(r.capacity, r.refill_per_s))
            if not bucket.take():
                out.append(Match(r.id, r.effect, r.enforced, r.message or "rate limit", b.name,
                                 reason=f"rate limit per {r.rate_per} {key!r}: {r.capacity:g} calls, "
                                        f"refilling {r.refill_per_s:g}/s"))
        return out

    def _observe_untrusted(self, gs: GuardSession, source: str, value: Any) -> None:
        if gs.taint is None:
            from proctor.detectors import TaintTracker

            gs.taint = TaintTracker()
        gs.taint.observe(source, value)

    def _taint(self, rules: list[tuple[PolicyBundle, Rule]], gs: GuardSession, args: dict[str, Any]) -> list[Match]:
        out = []
        for b, r in rules:
            value = {k: args[k] for k in r.sink_args if k in args} if r.sink_args else args
            # a bare domain is too coarse: one address in a ticket would taint every
            # recipient at that company; addresses, URLs, numbers and ids are specific
            hits = [h for h in gs.taint.check(value, path="args") if h.kind != "domain"]
            hits = [h for h in hits if not r.sources or r.sources.matches(h.source.split(":", 1)[-1])
                    or r.sources.matches(h.source)]
            if hits:
                h = hits[0]
                out.append(Match(r.id, r.effect, r.enforced, r.message or "untrusted value in a side-effecting call",
                                 b.name, reason=f"{h.path} = {str(h.value)[:80]!r} came from {h.source}"))
        return out

    def _scanner(self, rule: Rule) -> Any:
        key = (rule.scanner, tuple(sorted(rule.entities)))
        sc = self._scanners.get(key)
        if sc is not None:
            return sc
        with self._scanner_lock:  # one build per scanner, even when the warm-up races a call
            sc = self._scanners.get(key)
            if sc is not None:
                return sc
            from proctor import detectors

            if rule.scanner == "pii":
                sc = detectors.PiiScanner(entities=list(rule.entities) or None)
            elif rule.scanner == "secrets":
                sc = detectors.SecretScanner()
            else:
                sc = detectors.InjectionScanner(self.injection_classifier)
            self._scanners[key] = sc
        return sc

    def _scan(self, rules: list[tuple[PolicyBundle, Rule]], stage: str, value: Any, path: str,
              writes: bool) -> tuple[list[Match], Any]:
        from proctor.detectors import redact_value, scan_value

        out: list[Match] = []
        for b, r in rules:
            if r.stages and stage not in r.stages:
                continue
            result = scan_value(self._scanner(r), value, path=path)
            if result.timed_out or result.truncated:
                fail = r.fail_mode or ("closed" if writes else "open")
                what = "timed out" if result.timed_out else "input too large, only a prefix was scanned"
                out.append(Match(r.id, "deny" if fail == "closed" else "warn", r.enforced, r.message, b.name,
                                 reason=f"{r.scanner} scan {what}; fail-{fail}", error=what))
            chosen: dict[str, list[Any]] = {}
            for f in result.findings:
                eff = r.entities.get(f.kind) if r.entities else r.effect
                if eff is None:
                    continue
                chosen.setdefault(eff, []).append(f)
            if not chosen:
                continue
            effect = max(chosen, key=EFFECT_RANK.__getitem__)
            kinds = sorted({f"{f.kind} at {f.path or path}" for fs in chosen.values() for f in fs})
            if "redact" in chosen:
                value = redact_value(value, chosen["redact"], path=path)
            out.append(Match(r.id, effect, r.enforced, r.message or f"{r.scanner} found", b.name,
                             reason=f"{r.scanner}: {', '.join(kinds[:5])}" + (" …" if len(kinds) > 5 else "")))
        return out, value

    def _reserve(self, permit: Permit, decision: Decision, action: Action, matches: list[Match],
                 amounts: dict[str, float]) -> Decision:
        parts: dict[tuple[str, str], float] = {}
        limits: dict[tuple[str, str], float] = {}
        for b, r in permit.profile.stateful.get("budget", []):
            key = _budget_key(r, permit.session, permit.agent)
            permit.budget_parts.append((r, key))
            for metric, limit in r.limits.items():
                if metric == "wall_s" and r.budget_scope == "session":
                    elapsed = time.monotonic() - permit.session.started
                    if elapsed > limit:
                        matches.append(Match(r.id, r.effect, r.enforced, r.message or "session time budget",
                                             b.name, reason=f"session ran {elapsed:.1f}s > limit {limit:g}s"))
                    continue
                amount = amounts.get(metric, 0.0)
                if amount <= 0:  # nothing to claim on this counter for this kind of call
                    continue
                parts[(key, metric)] = amount
                limits[(key, metric)] = limit
        if parts:
            res = self.budgets.reserve(parts, limits=limits)
            if isinstance(res, BudgetExceeded):
                rule = next(r for _, r in permit.profile.stateful["budget"]
                            if _budget_key(r, permit.session, permit.agent) == res.key)
                bundle = next(b for b, r in permit.profile.stateful["budget"] if r is rule)
                matches.append(Match(rule.id, rule.effect, rule.enforced, rule.message or "budget reached",
                                     bundle.name, reason=res.message))
            else:
                permit.reservation = res
        new = finish_decision(action, matches, permit.profile.default_effect, permit.applied, permit.profile,
                              decision.input_digest)
        if not new.allowed and permit.reservation is not None:
            self.budgets.release(permit.reservation)
            permit.reservation = None
        return new

    def _settle(self, permit: Permit, actual: dict[str, float]) -> None:
        if permit.settled:
            return
        permit.settled = True
        if permit.reservation is not None:
            self.budgets.settle(permit.reservation, {(k, m): actual.get(m, 0.0) for (k, m) in permit.reservation.parts})
        # wall time is charged after the fact for day and month budgets
        for r, key in permit.budget_parts:
            if "wall_s" in r.limits and r.budget_scope != "session":
                self.budgets.charge(key, "wall_s", actual.get("wall_s", 0.0), r.limits["wall_s"])

    def _approval(self, permit: Permit, decision: Decision, action: Action, matches: list[Match],
                  args: Any, approval_id: str | None, wait_s: float | None) -> Decision:
        gs = permit.session
        digest = approval_digest(permit.target, args, decision.policy_hash, gs.session_id)
        approval: Approval | None
        try:
            if approval_id is not None:
                approval = self.approvals.consume(approval_id, digest)
            else:
                usable = self.approvals.find_usable(digest)
                approval = self.approvals.consume(usable.id, digest) if usable is not None else None
        except ApprovalError as e:
            matches.append(Match("approval", "deny", True, f"approval refused: {e}", reason=str(e)))
            d = finish_decision(action, matches, "deny", permit.applied, permit.profile, decision.input_digest)
            d.approval_id = approval_id
            return d
        if approval is None and approval_id is None:
            denial = self.approvals.find_recent_denial(digest)
            if denial is not None:
                why = f"denied by {denial.decided_by}" + (f": {denial.decision_reason}" if denial.decision_reason else "")
                matches.append(Match(f"approval:{denial.id}", "deny", True, why, reason=why))
                d = finish_decision(action, matches, "deny", permit.applied, permit.profile, decision.input_digest)
                d.approval_id = denial.id
                return d
        if approval is None:
            ctx = trace.get_current_span().get_span_context()  # so the approval links to its trace
            trace_id = format(ctx.trace_id, "032x") if ctx.is_valid else None
            span_id = format(ctx.span_id, "016x") if ctx.is_valid else None
            asked_at = time.time_ns()  # a request made now has requested_ns >= this; a reused one not
            req = self.approvals.request(
                digest=digest, tool=permit.target, arguments=args if isinstance(args, dict) else {"value": args},
                policy_hash=decision.policy_hash, session_id=gs.session_id, agent=permit.agent or "",
                rule_id=decision.rule_id or "", message=decision.message, ttl_s=self.approval_ttl_s,
                trace_id=trace_id, span_id=span_id)
            if self.approval_webhook and req.requested_ns >= asked_at:  # announce each request once
                post_webhook(self.approval_webhook, slack_message(req, self.console_url))
            decision.approval_id = req.id
            wait = wait_s if wait_s is not None else self.approval_wait_s
            if not wait:
                return decision
            handle = ApprovalHandle(self.approvals, req.id, digest)
            gs.lock.release()  # others in the session may proceed while a human decides
            try:
                status = handle.wait(wait)
            finally:
                gs.lock.acquire()
            if status != "approved":
                decision.effect = "deny" if status in ("denied", "expired") else "require_approval"
                decision.message = f"approval {req.id} {status}" + (f": {decision.message}" if decision.message else "")
                return decision
            try:
                approval = self.approvals.consume(req.id, digest)
            except ApprovalError as e:
                decision.effect, decision.message = "deny", f"approval refused: {e}"
                return decision
        matches.append(Match(f"approval:{approval.id}", "allow", True,
                             f"approved by {approval.decided_by}" + (f": {approval.decision_reason}"
                                                                      if approval.decision_reason else "")))
        d = Decision(effect="allow", rule_id=f"approval:{approval.id}",
                     message=f"approved by {approval.decided_by}", matches=matches,
                     policy_hash=decision.policy_hash, input_digest=decision.input_digest, stage=decision.stage,
                     target=decision.target, side_effect=decision.side_effect, approval_id=approval.id,
                     rule_kind="approval")
        if "budget" in permit.profile.stateful:
            d2 = self._reserve(permit, d, action, [m for m in matches if m.effect != "require_approval"],
                               {"tool_calls": 1.0})
            if not d2.allowed:
                return d2
        return d

    def _record(self, decision: Decision, gs: GuardSession, agent: str | None) -> None:
        decision.decision_id = _next_decision_id()
        trace_id, span_id = span_event(decision)
        if self.log_writer is not None:
            # the rows (reasons text and all) are built on the writer's thread, not the agent's
            self.log_writer.add((decision, time.time_ns(), trace_id, span_id, gs.session_id, agent))

    def _enforce(self, decision: Decision, gs: GuardSession) -> None:
        effect = decision.effect
        if effect in ("allow", "warn", "redact"):
            return
        if effect == "terminate_session":
            if gs.terminated is None:
                gs.terminated = decision
                if not decision.rule_id or not decision.rule_id.startswith("kill_switch:"):
                    self._persist_termination(gs, decision)
            raise SessionTerminated(decision)
        if effect == "deny":
            if decision.draft:
                return
            raise ActionDenied(decision)
        if effect == "require_approval":
            handle = ApprovalHandle(self.approvals, decision.approval_id or "", "")
            raise ApprovalPending(decision, handle)

    def _persist_termination(self, gs: GuardSession, decision: Decision) -> None:
        """A terminated session stays terminated for every process and replica (and after this
        one forgets it): the guard turns on the session's kill switch."""
        try:
            self.kill_switches.set(f"session:{gs.session_id}", active=True, by="proctor-guard",
                                   reason=f"terminated by {decision.rule_id}: {decision.message}"[:500])
        except Exception as e:  # the in-memory flag still holds in this process
            log.error("could not record the termination of session %s: %s", gs.session_id, e)

    # -- lifecycle ----------------------------------------------------------------------------

    def flush(self, timeout_s: float = 10.0) -> bool:
        return self.log_writer.flush(timeout_s) if self.log_writer is not None else True

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        if self.log_writer is not None:
            self.log_writer.close()


_PLACEHOLDER = Decision("allow", None, "", [], "", "")
# A random per-process prefix and a counter: unique without a getrandom() syscall per decision
# (os.urandom measured ~300 µs per call on this class of VM, more than the whole decision).
_ID_PREFIX = os.urandom(8).hex()
_id_counter = itertools.count(1)


def _next_decision_id() -> str:
    return f"{_ID_PREFIX}{next(_id_counter):08x}"
_REFUSING = frozenset({"require_approval", "deny", "terminate_session"})


def _refused(matches: list[Match]) -> bool:
    return any(m.enforced and m.effect in _REFUSING for m in matches)


def _budget_key(rule: Rule, gs: GuardSession, agent: str | None) -> str:
    if rule.budget_scope == "session":
        scope = f"session:{gs.session_id}"
    elif rule.budget_scope == "agent_day":
        scope = f"agent_day:{agent or ''}:{time.strftime('%Y-%m-%d', time.gmtime())}"
    else:
        scope = f"org_month:{time.strftime('%Y-%m', time.gmtime())}"
    return f"{scope}|{rule.id}"


def _estimate_tokens(prompt: Any) -> int:
    """A worst-case-leaning token estimate for a prompt: ~3 characters per token."""
    if prompt is None:
        return 0
    text = prompt if isinstance(prompt, str) else orjson.dumps(prompt, default=str).decode()
    return len(text) // 3 + 1


def _price(model: str, provider: str | None, inp: int, out: int) -> float:
    from proctor.pipeline.cost import price

    try:
        return price(model, provider, inp, out) or 0.0
    except Exception:  # an unknown model has no price: budgets in tokens still hold
        return 0.0
