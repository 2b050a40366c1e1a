"""The agents pages: the registry (issue 4) as people read it.

* ``/agents``          — every agent: its versions, the newest, where each environment points, owner, labels;
* ``/agents/{name}``   — one agent: versions (newest first), deployments per environment, every move
  (applied and refused: who, when, why, the gates' results, evidence);
* ``/versions/{ref}``  — one version in full: model, parameters, prompts, tools and their schemas, policy;
* ``/diff?a=&b=``      — two versions side by side: prompts as a two-column line diff, the rest as
  before → after rows, tool-schema changes marked breaking or compatible;
* ``/inventory``       — the blast radius: versions by tool, model, policy, label, owner, environment.

The data comes from what ``/api/agents…`` and ``proctor agent …`` call (:class:`RegistryStore`,
:class:`Registry`, :mod:`proctor.registry.diff`); this module only arranges it for a page.
Laying two prompts out side by side is presentation, so it lives here (on :mod:`difflib`).
"""

from __future__ import annotations

import difflib
import re
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request

from proctor.store.registry import RegistryError, RegistryStore, StoredVersion, UnknownVersion
from proctor.ui.render import page

router = APIRouter(tags=["console"])

#: Environments every registry has, shown first and in this order; others follow by name.
KNOWN_ENVIRONMENTS = ("dev", "staging", "prod")
MAX_VERSIONS = 10_000  # what RegistryStore.agents() reads too
AGENT_VERSIONS = 500  # versions listed on one agent's page
HISTORY = 200  # moves listed on one agent's page
CONTEXT_LINES = 3  # unchanged prompt lines kept around a change; longer runs are folded

AgentName = Annotated[str, Path(max_length=256)]
Ref = Annotated[str, Path(max_length=256)]
Filter = Annotated[str | None, Query(max_length=256)]


def _store(request: Request) -> RegistryStore:
    return RegistryStore(request.app.state.proctor.engine)


def environment_order(names: list[str]) -> list[str]:
    """dev, staging, prod first (those that exist), then the others by name."""
    known = [e for e in KNOWN_ENVIRONMENTS if e in names]
    return known + sorted(n for n in names if n not in KNOWN_ENVIRONMENTS)


def _environments(store: RegistryStore) -> list[str]:
    return environment_order([e["name"] for e in store.environments()])


def brief(v: StoredVersion) -> dict[str, Any]:
    """A version as a link shows it: its label (or short id) and its full id."""
    return {"version_id": v.version_id, "short_id": v.short_id, "label": v.label, "name": v.name,
            "display": v.label or v.short_id, "created_ns": v.created_ns, "model_id": v.model_id,
            "ref": f"{v.name}@{v.label}" if v.label else v.version_id}


def _get(store: RegistryStore, ref: str) -> StoredVersion:
    """A version by any reference the API takes; 404 when none matches, 400 when several do."""
    try:
        return store.get(ref)
    except UnknownVersion as exc:
        raise HTTPException(404, str(exc)) from exc
    except RegistryError as exc:
        raise HTTPException(400, str(exc)) from exc


# -- /agents -----------------------------------------------------------------------------------

@page(router, "/agents", "agents.html")
def agents_page(request: Request) -> dict[str, Any]:
    store = _store(request)
    versions = store.list_versions(limit=MAX_VERSIONS)  # newest first
    by_short = {v.short_id: v for v in versions}
    newest: dict[str, StoredVersion] = {}
    for v in versions:
        newest.setdefault(v.name, v)
    agents = []
    for a in store.agents():
        latest = newest.get(a["name"])
        deployed = {}
        for env, short in a["deployed"].items():
            dv = by_short.get(short)
            deployed[env] = brief(dv) if dv else {"short_id": short, "version_id": short, "label": None,
                                                "display": short, "ref": short}
        agents.append({**a, "deployed": deployed, "labels": latest.labels if latest else {},
                       "latest": brief(latest) if latest else None,
                       "description": (latest.manifest.get("description") if latest else None) or ""})
    return {"active": "agents", "environments": _environments(store), "agents": agents}


# -- /agents/{name} ----------------------------------------------------------------------------

@page(router, "/agents/{name}", "agent.html")
def agent_page(request: Request, name: AgentName) -> dict[str, Any]:
    store = _store(request)
    versions = store.list_versions(name, limit=AGENT_VERSIONS)
    if not versions:
        raise HTTPException(404, f"no agent named {name!r}: see /agents")
    known = {v.version_id: v for v in versions}

    def ref_of(version_id: str | None) -> dict[str, Any] | None:
        if version_id is None:
            return None
        v = known.get(version_id)
        if v is None:  # older than the versions listed
            try:
                v = known[version_id] = store.get(version_id)
            except RegistryError:
                return {"version_id": version_id, "short_id": version_id[:12], "label": None,
                        "display": version_id[:12], "ref": version_id}
        return brief(v)

    moves = store.history(name, limit=HISTORY)
    envs = _environments(store)
    deployments: list[dict[str, Any]] = []
    live_in: dict[str, list[str]] = {}
    for env in envs:
        current = store.current(name, env)
        if current is None and not any(m.environment == env for m in moves):
            deployments.append({"environment": env, "version": None, "since_ns": None, "by": None,
                                "previous": None, "moves": 0})
            continue
        since = next((m for m in moves if m.environment == env and m.status == "applied"
                      and m.version_id == current), None)
        previous = store.previous_good(name, env) if current else None
        if current:
            live_in.setdefault(current, []).append(env)
        deployments.append({"environment": env, "version": ref_of(current), "since_ns": since.ts_ns if since else None,
                            "by": since.by if since else None, "previous": ref_of(previous),
                            "moves": sum(1 for m in moves if m.environment == env)})
    rows = []
    for i, v in enumerate(versions):
        d = v.to_dict(manifest=False)
        d["deployed_in"] = live_in.get(v.version_id, [])
        d["prompts"] = sorted((v.manifest.get("prompts") or {}).keys())
        d["older"] = brief(versions[i + 1]) if i + 1 < len(versions) else None
        rows.append(d)
    history = []
    for m in moves:
        d = m.to_dict()
        d["version"] = ref_of(m.version_id)
        d["previous"] = ref_of(m.previous_version_id)
        history.append(d)
    prod = next((d for d in deployments if d["environment"] == "prod"), None)
    changed = None
    if prod and prod["version"] and prod["previous"]:
        changed = {"a": prod["previous"]["version_id"], "b": prod["version"]["version_id"],
                   "href": f"/diff?a={prod['previous']['version_id']}&b={prod['version']['version_id']}"}
    newest = versions[0]
    return {
        "active": "agents",
        "name": name,
        "owner": newest.owner,
        "labels": newest.labels,
        "description": newest.manifest.get("description") or "",
        "versions": rows,
        "versions_truncated": len(versions) == AGENT_VERSIONS,
        "deployments": deployments,
        "history": history,
        "history_truncated": len(moves) == HISTORY,
        "what_changed_in_prod": changed,
        "choices": [brief(v) for v in versions],
    }


# -- /versions/{ref} ---------------------------------------------------------------------------

def _prompts(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for name, p in sorted((manifest.get("prompts") or {}).items()):
        content = p.get("content") if isinstance(p, dict) else p
        text = content if isinstance(content, str) else ""
        out.append({"name": name, "content": text, "sha256": p.get("sha256") if isinstance(p, dict) else None,
                    "lines": len(text.splitlines())})
    return out


@page(router, "/versions/{ref}", "version.html")
def version_page(request: Request, ref: Ref) -> dict[str, Any]:
    store = _store(request)
    v = _get(store, ref)
    siblings = store.list_versions(v.name, limit=AGENT_VERSIONS)
    ids = [s.version_id for s in siblings]
    i = ids.index(v.version_id) if v.version_id in ids else -1
    older = brief(siblings[i + 1]) if 0 <= i < len(siblings) - 1 else None
    newer = brief(siblings[i - 1]) if i > 0 else None
    deployed_in = [env for env in _environments(store) if store.current(v.name, env) == v.version_id]
    policy = v.manifest.get("policy") or None
    rules = (policy.get("document") or {}).get("spec", {}).get("rules") or [] if policy else []
    return {
        "active": "agents",
        "agent_version": v.to_dict(),  # not "version": that is the console's own, in every template
        "display": v.label or v.short_id,
        "prompts": _prompts(v.manifest),
        "policy": {"name": policy.get("name"), "version": policy.get("version"), "hash": policy.get("hash"),
                   "rules": len(rules)} if policy else None,
        "deployed_in": deployed_in,
        "older": older,
        "newer": newer,
    }


# -- /diff -------------------------------------------------------------------------------------

_TOKENS = re.compile(r"\s+|\w+|[^\w\s]")


def _segments(left: str, right: str) -> tuple[list[list[Any]], list[list[Any]]]:
    """Two versions of one line as [text, changed] segments, word by word. Lines with little in
    common are marked changed whole: a word-level diff of them only scatters highlights."""
    ta, tb = _TOKENS.findall(left), _TOKENS.findall(right)
    sm = difflib.SequenceMatcher(None, ta, tb, autojunk=False)
    if sm.ratio() < 0.3:
        return [[left, True]], [[right, True]]
    sa: list[list[Any]] = []
    sb: list[list[Any]] = []

    def put(out: list[list[Any]], text: str, changed: bool) -> None:
        if not text:
            return
        if out and out[-1][1] == changed:
            out[-1][0] += text
        else:
            out.append([text, changed])

    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        put(sa, "".join(ta[i1:i2]), tag != "equal")
        put(sb, "".join(tb[j1:j2]), tag != "equal")
    return sa, sb


def side_by_side(before: str | None, after: str | None, context: int = CONTEXT_LINES) -> list[dict[str, Any]]:
    """Rows of a two-column line diff: ``{"tag", "left_no", "left", "right_no", "right"}`` where
    tag is equal, change, delete, insert, or skip (``count`` unchanged lines folded away), and
    left/right are [text, changed] segments (None where that side has no line)."""
    a = (before or "").splitlines()
    b = (after or "").splitlines()
    sm = difflib.SequenceMatcher(None, a, b, autojunk=False)
    ops = sm.get_opcodes()
    rows: list[dict[str, Any]] = []

    def equal(i: int, j: int) -> None:
        rows.append({"tag": "equal", "left_no": i + 1, "left": [[a[i], False]], "right_no": j + 1,
                     "right": [[b[j], False]]})

    for n, (tag, i1, i2, j1, j2) in enumerate(ops):
        if tag == "equal":
            first, last = n == 0, n == len(ops) - 1
            keep_head = 0 if first else context
            keep_tail = 0 if last else context
            length = i2 - i1
            if length <= keep_head + keep_tail + 1 or len(ops) == 1:
                for k in range(length):
                    equal(i1 + k, j1 + k)
                continue
            for k in range(keep_head):
                equal(i1 + k, j1 + k)
            rows.append({"tag": "skip", "count": length - keep_head - keep_tail,
                         "left_no": None, "left": None, "right_no": None, "right": None})
            for k in range(length - keep_tail, length):
                equal(i1 + k, j1 + k)
            continue
        la, lb = a[i1:i2], b[j1:j2]
        for k in range(max(len(la), len(lb))):
            left = la[k] if k < len(la) else None
            right = lb[k] if k < len(lb) else None
            if left is not None and right is not None:
                sl, sr = _segments(left, right)
                rows.append({"tag": "change", "left_no": i1 + k + 1, "left": sl, "right_no": j1 + k + 1, "right": sr})
            elif left is not None:
                rows.append({"tag": "delete", "left_no": i1 + k + 1, "left": [[left, True]],
                             "right_no": None, "right": None})
            else:
                rows.append({"tag": "insert", "left_no": None, "left": None, "right_no": j1 + k + 1,
                             "right": [[right, True]]})
    return rows


def _prompt_text(manifest: dict[str, Any], name: str) -> str | None:
    p = (manifest.get("prompts") or {}).get(name)
    if p is None:
        return None
    content = p.get("content") if isinstance(p, dict) else p
    return content if isinstance(content, str) else ""


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


@page(router, "/diff", "diff.html")
def diff_page(request: Request, a: Filter = None, b: Filter = None, agent: Filter = None) -> dict[str, Any]:
    from proctor.registry.diff import changes_to_json
    from proctor.registry.service import Registry

    a, b, agent = a or None, b or None, agent or None
    reg = Registry(request.app.state.proctor.engine)
    store = reg.store
    agents = [x["name"] for x in store.agents()]
    ctx: dict[str, Any] = {"active": "agents", "agents": agents, "agent": agent, "a": None, "b": None,
                           "choices": [], "changes": None, "prompts": [], "summary": None, "notes": []}
    if (a is None) != (b is None):
        raise HTTPException(400, "choose two versions: a (the older) and b (the newer)")
    if a is None and agent is not None:  # an agent alone: its two newest versions
        newest = store.list_versions(agent, limit=2)
        if not newest:
            raise HTTPException(404, f"no agent named {agent!r}: see /agents")
        if len(newest) < 2:
            ctx["notes"].append(f"{agent} has one version only: nothing to compare it with yet")
        else:
            a, b = newest[1].version_id, newest[0].version_id
    if a is not None and b is not None:
        va, vb = _get(store, a), _get(store, b)
        _, _, changes = reg.diff(va.version_id, vb.version_id)
        ctx["agent"] = agent = agent or vb.name
        ctx["a"], ctx["b"] = brief(va), brief(vb)
        if va.name != vb.name:
            ctx["notes"].append(f"these are versions of two agents: {va.name} and {vb.name}")
        if va.created_ns > vb.created_ns:
            ctx["notes"].append(f"{brief(va)['display']} (left) is newer than {brief(vb)['display']} (right): "
                                "the diff reads from left to right")
        items = changes_to_json(changes)
        for c in items:
            c["scalar"] = _is_scalar(c["before"]) and _is_scalar(c["after"])
        ctx["changes"] = items
        ctx["prompts"] = [
            {"name": c["path"].split(".", 1)[1], "kind": c["kind"], "summary": c["summary"],
             "rows": side_by_side(_prompt_text(va.manifest, c["path"].split(".", 1)[1]),
                                  _prompt_text(vb.manifest, c["path"].split(".", 1)[1]))}
            for c in items if c["area"] == "prompt" and c["path"].startswith("prompts.")]
        ctx["summary"] = {"changes": len(items), "breaking": sum(1 for c in items if c["breaking"]),
                          "compatible": sum(1 for c in items if c["breaking"] is False),
                          "areas": sorted({c["area"] for c in items}, key=_area_rank)}
    if agent is not None:
        ctx["choices"] = [brief(v) for v in store.list_versions(agent, limit=AGENT_VERSIONS)]
    return ctx


def _area_rank(area: str) -> int:
    from proctor.registry.diff import AREAS

    return AREAS.index(area) if area in AREAS else len(AREAS)


# -- /inventory --------------------------------------------------------------------------------

@page(router, "/inventory", "inventory.html")
def inventory_page(
    request: Request, tool: Filter = None, model: Filter = None, policy: Filter = None,
    label: Annotated[str | None, Query(max_length=512)] = None, owner: Filter = None,
    env: Annotated[str | None, Query(max_length=64)] = None, deployed: bool = False,
) -> dict[str, Any]:
    store = _store(request)
    filters = {"tool": tool or None, "model": model or None, "policy": policy or None, "label": label or None,
               "owner": owner or None, "env": env or None}
    # What the filters can choose from: every value the registry holds.
    options: dict[str, set[str]] = {"tool": set(), "model": set(), "policy": set(), "label": set(), "owner": set()}
    for v in store.list_versions(limit=MAX_VERSIONS):
        options["tool"].update(t["name"] for t in v.manifest.get("tools") or [])
        if v.model_id:
            options["model"].add(v.model_id)
        if v.policy_name:
            options["policy"].add(v.policy_name)
        if v.owner:
            options["owner"].add(v.owner)
        options["label"].update(f"{k}={x}" for k, x in v.labels.items())
    ctx: dict[str, Any] = {"active": "agents", "filters": {**filters, "deployed": deployed},
                           "options": {k: sorted(s) for k, s in options.items()},
                           "environments": _environments(store), "versions": [], "agents": 0, "error": None}
    if filters["label"] and "=" not in filters["label"].lstrip("="):
        ctx["error"] = f"label filter {filters['label']!r} must be KEY=VALUE, e.g. data=customer"
        return ctx
    inv = store.inventory(**filters, deployed_only=deployed)
    ctx["versions"] = inv.rows
    ctx["agents"] = len({r["name"] for r in inv.rows})
    return ctx
