"""The policies pages: governance as people read it.

* ``/policies``                 — the bundles the server's decision API enforces (what ``GET /api/policy``
  returns) and the bundles agent versions pin (from the registry), each with its hash;
* ``/policies/bundles/{hash}``  — one bundle: its scope, defaults, catalogue, rules (id, kind, match,
  effect, reason) and its YAML;
* ``/decisions``                — the decision log, filtered and paged, each row linked to its trace
  span and session;
* ``/policies/backtest``        — a bundle replayed over the stored calls of a time window
  (:class:`proctor.policy.testing.Backtest`, as ``proctor policy backtest`` runs it): what it
  would allow, deny or hold, per rule, and where that differs from what was decided.

The policy engine is imported when a page first needs it, as :mod:`proctor.server.governance`
does: it adds about a second to the start of a server that has no policy.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request
from sqlalchemy import Engine, and_, or_, select

from proctor.core.timeparse import TimeParseError, format_ns, parse_time_ns
from proctor.server.governance import flush_decisions, policy_doc
from proctor.store.decisions import DecisionLog
from proctor.store.registry import RegistryStore
from proctor.ui.render import page

if TYPE_CHECKING:
    from proctor.policy.engine import PolicySet
    from proctor.policy.model import Decision, PolicyBundle

router = APIRouter(tags=["console"])

#: The effects a decision can have (proctor.policy.model.EFFECTS; spelt out: no engine import here).
EFFECTS = ("allow", "warn", "redact", "require_approval", "deny", "terminate_session")
#: Actions the guard decides (DecisionRecord.action); the filter also takes any other value.
ACTIONS = ("tool_call", "llm_call", "tool_result", "llm_output", "input", "alert")
MAX_VERSIONS = 10_000
PAGE_SIZES = (20, 50, 100, 200, 500)
SPAN_CAP = 50_000  # a backtest reads at most this many stored calls
BACKTEST_SECONDS = 10.0  # ...and stops replaying after this long, saying so (~110 µs a call here: 50k in ~6 s)
BACKTESTS_AT_ONCE = 2  # more wait their turn: each holds a worker thread and a core while it runs
EXAMPLES_PER_RULE = 3
CHANGES_KEPT = 200

Text = Annotated[str | None, Query(max_length=256)]
_backtests = threading.BoundedSemaphore(BACKTESTS_AT_ONCE)


def _state(request: Request) -> Any:
    return request.app.state.proctor


# -- bundles: the active ones and the pinned ones ------------------------------------------------

def _pinned(store: RegistryStore) -> dict[str, dict[str, Any]]:
    """Bundles pinned by agent versions, by hash: name, version, and the versions that pin it."""
    deployed: dict[str, list[str]] = {}
    for a in store.agents():
        for env, short in a["deployed"].items():
            deployed.setdefault(short, []).append(env)
    out: dict[str, dict[str, Any]] = {}
    for v in store.list_versions(limit=MAX_VERSIONS):
        p = v.manifest.get("policy")
        if not p or not p.get("hash"):
            continue
        b = out.setdefault(p["hash"], {"hash": p["hash"], "name": p.get("name"), "version": p.get("version"),
                                       "document": p.get("document") or {}, "versions": []})
        b["versions"].append({"agent": v.name, "version_id": v.version_id, "short_id": v.short_id,
                              "label": v.label, "display": v.label or v.short_id,
                              "deployed_in": sorted(deployed.get(v.short_id, []))})
    return out


def _active_bundles(request: Request) -> list[PolicyBundle]:
    guard = _state(request).guard
    return list(guard.policy.bundles) if guard is not None else []


@page(router, "/policies", "policies.html")
def policies_page(request: Request) -> dict[str, Any]:
    state = _state(request)
    active = policy_doc(state.guard.policy, state.policy_paths) if state.guard is not None else None
    pinned = _pinned(RegistryStore(state.engine))
    active_hashes = {b["hash"] for b in active["bundles"]} if active else set()
    for b in active["bundles"] if active else []:
        b["pinned_by"] = len(pinned.get(b["hash"], {}).get("versions", []))
    pinned_list = []
    for b in sorted(pinned.values(), key=lambda b: (str(b["name"]), str(b["version"]))):
        rules = ((b.pop("document") or {}).get("spec") or {}).get("rules") or []
        pinned_list.append({**b, "rules": len(rules), "active": b["hash"] in active_hashes,
                            "live_in": sorted({e for v in b["versions"] for e in v["deployed_in"]})})
    return {"active": "policies", "policy": active, "pinned": pinned_list}


def _compile(document: dict[str, Any], source: str) -> PolicyBundle:
    import yaml

    from proctor.policy.loader import load_bundle_text

    [bundle] = load_bundle_text(yaml.safe_dump(document, sort_keys=False), source)
    return bundle


@dataclass(slots=True)
class FoundBundle:
    bundle: PolicyBundle
    active: bool
    pinned: dict[str, Any] | None


def find_bundle(request: Request, ref: str) -> FoundBundle:
    """A bundle by hash (or a unique prefix of 6+ characters): one the server enforces, else one a
    version pins (compiled from the document the version holds). 404 / 400 when none / several."""
    key = ref.strip().lower()
    if len(key) < 6 or any(ch not in "0123456789abcdef" for ch in key):
        raise HTTPException(404, f"{ref!r} is not a bundle hash (6 to 64 hex characters): see /policies")
    active = [b for b in _active_bundles(request) if b.hash.startswith(key)]
    pinned = {h: b for h, b in _pinned(RegistryStore(_state(request).engine)).items() if h.startswith(key)}
    hashes = {b.hash for b in active} | set(pinned)
    if not hashes:
        raise HTTPException(404, f"no active or pinned policy bundle has hash {ref!r}: see /policies")
    if len(hashes) > 1:
        raise HTTPException(400, f"{ref!r} matches several bundles: {', '.join(sorted(h[:12] for h in hashes))}")
    [h] = hashes
    p = pinned.get(h)
    if active:
        return FoundBundle(active[0], True, p)
    assert p is not None
    first = p["versions"][0]
    return FoundBundle(_compile(p["document"], f"{first['agent']}@{first['display']} (pinned)"), False, p)


_COMMON_RULE_KEYS = frozenset({"id", "kind", "effect", "message", "mode", "fail_mode", "agents", "tools",
                               "models", "side_effects", "stages", "when"})


def _globs(patterns: tuple[str, ...]) -> str | None:
    return ", ".join(patterns) if patterns else None


def _first(mapping: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {**{k: mapping[k] for k in keys if k in mapping}, **{k: v for k, v in mapping.items() if k not in keys}}


def _readable(document: dict[str, Any]) -> dict[str, Any]:
    """The document in the order people write it (a pinned one is stored with its keys sorted):
    apiVersion, kind, metadata, spec; each rule's id first. The same content, the same hash."""
    doc = _first(document, ("apiVersion", "kind", "metadata", "spec"))
    spec = doc.get("spec")
    if isinstance(spec, dict):
        spec = _first(spec, ("scope", "mode", "default_effect", "tools", "capabilities", "rules"))
        if isinstance(spec.get("rules"), list):
            spec["rules"] = [_first(r, ("id", "kind")) if isinstance(r, dict) else r for r in spec["rules"]]
        doc["spec"] = spec
    return doc


def bundle_view(bundle: PolicyBundle) -> dict[str, Any]:
    """A bundle as the page reads it: every rule with what it matches, its effect and reason."""
    import yaml

    from proctor.policy.loader import PolicyError, load_bundle_text
    from proctor.policy.testing import scope_dict, scope_text

    text = yaml.safe_dump(_readable(bundle.document), sort_keys=False, allow_unicode=True, width=100)
    try:  # rule lines as they are in the YAML shown (an active bundle's file may hold comments, others)
        lines = {r.id: r.line for r in load_bundle_text(text, bundle.source)[0].rules}
    except (PolicyError, IndexError):
        lines = {}
    raw = {r.get("id"): r for r in ((bundle.document.get("spec") or {}).get("rules") or []) if isinstance(r, dict)}
    rules = []
    for r in bundle.rules:
        doc = raw.get(r.id) or {}
        match = {"agents": _globs(r.agents.patterns), "tools": _globs(r.tools.patterns),
                 "models": _globs(r.models.patterns),
                 "side_effects": ", ".join(sorted(r.side_effects)) or None,
                 "stages": ", ".join(sorted(r.stages)) or None}
        rules.append({
            "id": r.id, "kind": r.kind, "effect": r.effect, "mode": r.mode, "enforced": r.enforced,
            "fail_mode": r.fail_mode, "message": r.message, "line": lines.get(r.id),
            "when": r.when.source if r.when is not None else None,
            "match": {k: v for k, v in match.items() if v},
            "settings": {k: v for k, v in doc.items() if k not in _COMMON_RULE_KEYS},
        })
    return {
        "name": bundle.name, "version": bundle.version, "ref": bundle.ref, "hash": bundle.hash,
        "mode": bundle.mode, "source": bundle.source, "labels": bundle.labels,
        "description": (bundle.document.get("metadata") or {}).get("description") or "",
        "scope": scope_dict(bundle), "scope_text": scope_text(bundle),
        "default_effect": bundle.default_effect,
        "unknown_side_effect": bundle.unknown_side_effect,
        "tools": [{"pattern": _globs(t.pattern.patterns), "side_effect": t.side_effect,
                   "untrusted_output": t.untrusted_output} for t in bundle.tools],
        "capabilities": [{"agents": _globs(c.agents.patterns), "tier": c.tier} for c in bundle.capabilities],
        "rules": rules,
        "yaml": text,
    }


@page(router, "/policies/bundles/{ref}", "policy_bundle.html")
def bundle_page(request: Request, ref: Annotated[str, Path(max_length=64)]) -> dict[str, Any]:
    found = find_bundle(request, ref)
    return {"active": "policies", "bundle": bundle_view(found.bundle), "is_active": found.active,
            "pinned_by": found.pinned["versions"] if found.pinned else []}


# -- the decision log -----------------------------------------------------------------------------

@dataclass(slots=True)
class DecisionFilter:
    since_ns: int | None = None
    until_ns: int | None = None
    agent: str | None = None
    session_id: str | None = None
    effect: str | None = None
    action: str | None = None
    rule_id: str | None = None
    enforced: bool | None = None
    policy_hash: str | None = None  # a hash or a prefix of one


def decision_rows(engine: Engine, flt: DecisionFilter, *, limit: int, before_seq: int | None = None
                  ) -> tuple[list[dict[str, Any]], int | None]:
    """A page of the decision log, newest first, and the cursor of the next page (None: last page).

    One row more than a page is read, so "is there a next page" is exact.
    """
    rows = DecisionLog(engine).list(
        since_ns=flt.since_ns, until_ns=flt.until_ns, agent=flt.agent, session_id=flt.session_id,
        effect=flt.effect, action=flt.action, rule_id=flt.rule_id, enforced=flt.enforced,
        policy_hash=flt.policy_hash, before_seq=before_seq, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1]["seq"] if more and rows else None)


def _time_param(name: str, value: str | None) -> int | None:
    if not value:
        return None
    try:
        return parse_time_ns(int(value) if value.strip().isdigit() else value)
    except (TimeParseError, ValueError, OverflowError) as exc:
        raise ValueError(f"{name}: {exc}") from None


def _known_hashes(request: Request) -> set[str]:
    """Bundle hashes /policies/bundles/{hash} opens. (A decision records the hash of the policy set
    that made it, which is its bundle's hash when one bundle applied.)"""
    hashes = {b.hash for b in _active_bundles(request)}
    hashes.update(_pinned(RegistryStore(_state(request).engine)))
    return hashes


@page(router, "/decisions", "decisions.html")
def decisions_page(
    request: Request,
    since: Text = None, until: Text = None, agent: Text = None,
    session: Text = None, effect: Text = None, action: Text = None, rule: Text = None,
    mode: Annotated[str | None, Query(max_length=16, description="enforced, shadow, or empty for both")] = None,
    policy: Annotated[str | None, Query(max_length=64)] = None,
    limit: int = 50,
    cursor: Annotated[str | None, Query(max_length=24)] = None,
) -> dict[str, Any]:
    state = _state(request)
    limit = limit if limit in PAGE_SIZES else min(PAGE_SIZES, key=lambda n: abs(n - limit))
    params = {"since": since or "", "until": until or "", "agent": agent or "", "session": session or "",
              "effect": effect or "", "action": action or "", "rule": rule or "", "mode": mode or "",
              "policy": policy or "", "limit": limit}
    ctx: dict[str, Any] = {"active": "policies", "filters": params,
                           "effects": EFFECTS, "actions": ACTIONS, "page_sizes": PAGE_SIZES,
                           "agents": sorted(a["name"] for a in RegistryStore(state.engine).agents()),
                           "decisions": [], "next_cursor": None, "error": None, "known_hashes": []}
    try:
        flt = DecisionFilter(
            since_ns=_time_param("since", since), until_ns=_time_param("until", until),
            agent=agent or None, session_id=session or None, effect=effect or None, action=action or None,
            rule_id=rule or None, policy_hash=(policy or "").lower() or None,
            enforced={"enforced": True, "shadow": False}.get(mode or ""),
        )
        if effect and effect not in EFFECTS:
            raise ValueError(f"effect must be one of {', '.join(EFFECTS)}, not {effect!r}")
        if mode and mode not in ("enforced", "shadow"):
            raise ValueError(f"mode must be enforced or shadow, not {mode!r}")
        before = None
        if cursor:
            if not cursor.isdigit():
                raise ValueError(f"cursor must be a decision seq (a number), not {cursor!r}")
            before = min(int(cursor), 2**63 - 1)  # past any seq: the first page, not an overflow
    except ValueError as exc:
        ctx["error"] = str(exc)
        return ctx
    flush_decisions(request)  # this server's own recent decisions first, as GET /api/decisions does
    rows, nxt = decision_rows(state.engine, flt, limit=limit, before_seq=before)
    ctx["decisions"] = rows
    ctx["next_cursor"] = str(nxt) if nxt is not None else None
    known = _known_hashes(request)
    ctx["known_hashes"] = sorted({r["policy_hash"] for r in rows if r.get("policy_hash") in known})
    return ctx


# -- backtest -------------------------------------------------------------------------------------

def _recording_set(bundles: Any) -> PolicySet:
    """A PolicySet that remembers its last decision: Backtest keeps counts of effect transitions
    only, and the page also counts per deciding rule (with examples)."""
    from proctor.policy.engine import PolicySet

    class RecordingPolicySet(PolicySet):
        last: Decision | None = None

        def evaluate(self, action: Any) -> Decision:
            d = super().evaluate(action)
            self.last = d
            return d

    return RecordingPolicySet(bundles)


def _calls(engine: Engine, *, since_ns: int, until_ns: int, agent: str | None, cap: int,
           batch_size: int = 2000) -> Iterator[tuple[list[dict[str, Any]], bool]]:
    """Pages of stored tool and LLM span rows of the traces that started in [since, until), newest
    traces first: (rows, capped). Stops after ``cap`` rows; ``capped`` is True on the last page
    when more were there. Like ``proctor policy backtest``'s reader, with an upper bound on time
    and on rows: traces paged on their start-time index, their spans in key order."""
    from proctor.policy.testing import SPAN_COLUMNS
    from proctor.store.schema import spans as spans_t
    from proctor.store.schema import traces as traces_t

    t, s = traces_t.c, spans_t.c
    cols = [s[c] for c in SPAN_COLUMNS]
    read = 0
    last_trace: tuple[int, str] | None = None
    while True:
        q = select(t.trace_id, t.start_ns).where(t.start_ns >= since_ns, t.start_ns < until_ns)
        if last_trace is not None:
            q = q.where(or_(t.start_ns < last_trace[0], and_(t.start_ns == last_trace[0], t.trace_id < last_trace[1])))
        with engine.connect() as conn:
            page_ = conn.execute(q.order_by(t.start_ns.desc(), t.trace_id.desc()).limit(200)).all()
        if not page_:
            return
        ids = [r.trace_id for r in page_]
        last_span: tuple[str, str] | None = None
        while True:
            room = cap - read
            sq = select(*cols).where(s.trace_id.in_(ids), s.kind.in_(("tool", "llm")))
            if agent:
                sq = sq.where(s.agent_name == agent)
            if last_span is not None:
                sq = sq.where(or_(s.trace_id > last_span[0], and_(s.trace_id == last_span[0], s.span_id > last_span[1])))
            want = min(batch_size, room + 1)  # one more than there is room for: is there more?
            with engine.connect() as conn:
                result = conn.execute(sq.order_by(s.trace_id, s.span_id).limit(want))
                keys = list(result.keys())
                rows = [dict(zip(keys, row, strict=True)) for row in result]
            got = len(rows)
            capped = got > room
            rows = rows[:room]
            read += len(rows)
            if rows:
                last_span = (rows[-1]["trace_id"], rows[-1]["span_id"])
            yield rows, capped
            if capped:
                return
            if got < want:  # this page of traces is done
                break
        last_trace = (page_[-1].start_ns, page_[-1].trace_id)


def _choices(request: Request) -> list[dict[str, Any]]:
    """What a backtest can replay: the active set whole, each active bundle, each pinned bundle."""
    guard = _state(request).guard
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    if guard is not None:
        refs = ", ".join(b.ref for b in guard.policy.bundles)
        out.append({"value": "active", "label": f"the active policy ({refs})", "hash": guard.policy.hash})
        for b in guard.policy.bundles:
            if b.hash not in seen:
                seen.add(b.hash)
                out.append({"value": b.hash, "label": f"{b.ref} · active", "hash": b.hash})
    for h, p in sorted(_pinned(RegistryStore(_state(request).engine)).items(),
                       key=lambda kv: (str(kv[1]["name"]), str(kv[1]["version"]))):
        if h in seen:
            continue
        n = len(p["versions"])
        out.append({"value": h, "label": f"{p['name']}@{p['version']} · pinned by {n} version{'s' * (n != 1)}",
                    "hash": h})
    return out


def _policy_for(request: Request, choice: str) -> PolicySet:
    guard = _state(request).guard
    if choice == "active":
        if guard is None:
            raise ValueError("this server enforces no policy (start it with --policy): choose a pinned bundle")
        return _recording_set(guard.policy.bundles)
    try:
        found = find_bundle(request, choice)
    except HTTPException as exc:
        raise ValueError(str(exc.detail)) from None
    return _recording_set([found.bundle])


@page(router, "/policies/backtest", "backtest.html")
def backtest_page(
    request: Request,
    bundle: Annotated[str | None, Query(max_length=64)] = None,
    since: Text = None, until: Text = None, agent: Text = None,
    cap: int = SPAN_CAP,
) -> dict[str, Any]:
    state = _state(request)
    choices = _choices(request)
    cap = max(1, min(cap, SPAN_CAP))
    since = since or "24h"
    ctx: dict[str, Any] = {
        "active": "policies", "choices": choices,
        "params": {"bundle": bundle or (choices[0]["value"] if choices else ""), "since": since,
                   "until": until or "", "agent": agent or "", "cap": cap},
        "max_cap": SPAN_CAP, "error": None, "result": None,
        "agents": sorted(a["name"] for a in RegistryStore(state.engine).agents()),
    }
    if not bundle:  # the form only: a backtest runs when a bundle is chosen (and has a deep link)
        if not choices:
            ctx["error"] = ("nothing to replay: this server enforces no policy and no agent version pins a bundle")
        return ctx
    now = time.time_ns()
    try:
        since_ns = _time_param("since", since) or 0
        until_ns = _time_param("until", until) or now
        if since_ns >= until_ns:
            raise ValueError(f"the window is empty: since ({format_ns(since_ns)}) is not before until "
                             f"({format_ns(until_ns)})")
        ps = _policy_for(request, bundle)
    except ValueError as exc:
        ctx["error"] = str(exc)
        return ctx

    # no waiting in line: a waiting request would hold one of the server's worker threads, and
    # enough of them would stall every other sync route (the decision API included)
    if not _backtests.acquire(blocking=False):
        ctx["error"] = (f"{BACKTESTS_AT_ONCE} backtests are running already: try again in a few seconds "
                        "(this link runs it again)")
        return ctx
    try:
        ctx["result"] = _run_backtest(state.engine, ps, since_ns=since_ns, until_ns=until_ns, agent=agent or None,
                                      cap=cap)
    finally:
        _backtests.release()
    return ctx


def _run_backtest(engine: Engine, ps: PolicySet, *, since_ns: int, until_ns: int, agent: str | None,
                  cap: int) -> dict[str, Any]:
    from proctor.policy.testing import Backtest

    bt = Backtest(ps, keep=CHANGES_KEPT)
    outcomes: Counter[str] = Counter()
    rules: dict[str, dict[str, Any]] = {}
    shadow = 0
    traces: set[str] = set()
    capped = timed_out = False
    t0 = time.monotonic()
    read = 0
    for rows, page_capped in _calls(engine, since_ns=since_ns, until_ns=until_ns, agent=agent, cap=cap):
        read += len(rows)
        capped = capped or page_capped
        for row in rows:
            replayed = bt.replayed
            bt.add(row)
            if bt.replayed == replayed:
                continue  # skipped (counted by the backtest, with why)
            d: Decision = ps.last  # type: ignore[attr-defined]
            traces.add(row["trace_id"])
            outcomes[d.effect] += 1
            if d.shadow_effect and d.shadow_effect != d.effect:
                shadow += 1
            key = d.rule_id or "default"
            r = rules.setdefault(key, {"rule_id": key, "effects": Counter(), "calls": 0, "examples": [],
                                       "bundle": next((m.bundle for m in d.matches if m.rule_id == d.rule_id), "")})
            r["calls"] += 1
            r["effects"][d.effect] += 1
            target = row.get("tool_name") or row.get("request_model") or row.get("model")
            # examples of different calls where there are some: three of one model say less
            if len(r["examples"]) < EXAMPLES_PER_RULE and all(
                    (x["target"], x["effect"]) != (target, d.effect) for x in r["examples"]):
                r["examples"].append({"trace_id": row["trace_id"], "span_id": row["span_id"], "target": target,
                                      "agent": row.get("agent_name"), "effect": d.effect})
        if time.monotonic() - t0 > BACKTEST_SECONDS:
            timed_out = True
            break
    hash_of = {b.name: b.hash for b in ps.bundles}
    for r in rules.values():
        r["bundle_hash"] = hash_of.get(r["bundle"])
    report = bt.to_dict()
    per_rule = sorted(({**r, "effects": dict(r["effects"])} for r in rules.values()),
                      key=lambda r: (-r["calls"], r["rule_id"]))
    return {
        **report,
        "window": {"since_ns": since_ns, "until_ns": until_ns},
        "spans_read": read, "cap": cap, "capped": capped, "timed_out": timed_out,
        "traces": len(traces), "seconds": round(time.monotonic() - t0, 3),
        "outcomes": dict(outcomes),
        "allowed": outcomes["allow"] + outcomes["warn"] + outcomes["redact"],
        "denied": outcomes["deny"] + outcomes["terminate_session"],
        "held": outcomes["require_approval"],
        "shadow_differs": shadow,
        "rules": per_rule,
    }
