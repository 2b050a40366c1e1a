"""Runtime resolution: which registered version of an agent is deployed to an environment.

``proctor.session(agent="support-triage", env="prod")`` asks the registry which version is
live there, stamps its label and hash on every span of the session, and hands its pinned
policy bundle to the guard for that session. The registry asked is the one the spans go to:
the Proctor server (``GET /api/agents/{name}/live``) when ``init()`` was given a URL, else the
embedded store, else the guard's database.

A deployment pointer is read at most once a second per (agent, environment), so a rollback
reaches new sessions within about a second; a session keeps the version it started with.
Versions are immutable, so a version's manifest (and the policy built from it) is cached for
good once read. When the server cannot be reached, the last pointer read is used (and a
warning logged); with none, the session runs unresolved.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

log = logging.getLogger("proctor.sdk")

POINTER_TTL_S = 1.0
HTTP_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class ResolvedVersion:
    """A registered version as a session needs it (the same wherever it is deployed)."""

    agent: str
    version_id: str
    label: str  # the manifest's version label, else the short hash
    policy_hash: str | None
    policy_document: dict[str, Any] | None


_pointers: dict[tuple[str, str, str], tuple[float, str | None]] = {}  # (registry, agent, env)
_versions: dict[str, ResolvedVersion] = {}
_policies: dict[str, Any] = {}
_warned: set[tuple[str, str, str]] = set()
_lock = threading.Lock()


def _engine() -> Any:
    """The database the process writes to: the embedded store's, else the guard's."""
    from proctor.sdk import governance, setup

    rt = setup._runtime
    engine = getattr(rt.exporter, "engine", None) if rt is not None else None
    if engine is not None:
        return engine
    g = governance.guard()
    return g.engine if g is not None else None


def _server() -> Any:
    """The HTTP exporter when spans go to a Proctor server, else None."""
    from proctor.sdk import setup

    rt = setup._runtime
    return rt.exporter if rt is not None and rt.mode == "http" else None


def _warn_once(agent: str, environment: str, what: str) -> None:
    key = (agent, environment, what)
    if key not in _warned:
        _warned.add(key)
        log.warning("proctor: resolving %s in %s: %s", agent, environment, what)


def _from_store(engine: Any, agent: str, environment: str) -> ResolvedVersion | bool | None:
    """The live version from a database; False when the registry could not be read."""
    from proctor.store.registry import RegistryStore

    store = RegistryStore(engine)
    try:
        version_id = store.current(agent, environment)
    except Exception:  # a store without the registry tables yet, or away: run unresolved
        return False
    if version_id is None:
        return None
    resolved = _versions.get(version_id)
    if resolved is None:
        v = store.get(version_id)
        policy = v.manifest.get("policy") or None
        resolved = ResolvedVersion(agent, v.version_id, v.label or v.short_id,
                                   policy["hash"] if policy else None, policy["document"] if policy else None)
    return resolved


def _from_server(exporter: Any, agent: str, environment: str) -> ResolvedVersion | bool | None:
    """The live version from the server's registry; False when the server could not answer."""
    import httpx

    try:
        r = exporter.api.get(f"/api/agents/{quote(agent, safe='')}/live", params={"env": environment},
                             timeout=HTTP_TIMEOUT_S)
    except httpx.HTTPError as exc:
        _warn_once(agent, environment, f"the server at {exporter.base_url} is unreachable ({exc})")
        return False
    if r.status_code == 404:
        return None
    if r.status_code != 200:
        _warn_once(agent, environment, f"the server answered {r.status_code}: {r.text[:200]}")
        return None if r.status_code == 400 else False  # 400: unknown environment
    doc = r.json()
    policy = doc.get("policy") or None
    return ResolvedVersion(agent, doc["version_id"], doc.get("label") or doc["short_id"],
                           policy["hash"] if policy else None, policy["document"] if policy else None)


def resolve(agent: str, environment: str, engine: Any = None) -> ResolvedVersion | None:
    """The version of ``agent`` live in ``environment``, or None (not deployed, or no registry).

    ``engine``: the database whose registry to ask; by default the one the spans go to."""
    server = _server() if engine is None else None
    if server is None:
        engine = engine if engine is not None else _engine()
        if engine is None:
            return None
    where = server.base_url if server is not None else engine.url.render_as_string(hide_password=True)
    key = (where, agent, environment)
    now = time.monotonic()
    hit = _pointers.get(key)
    if hit is not None and hit[0] > now:
        return _versions.get(hit[1]) if hit[1] is not None else None
    found = _from_server(server, agent, environment) if server is not None else _from_store(engine, agent, environment)
    if found is False:  # could not ask: keep what was last read, if anything, and ask again next time
        return _versions.get(hit[1]) if hit is not None and hit[1] is not None else None
    with _lock:
        if isinstance(found, ResolvedVersion):
            _versions.setdefault(found.version_id, found)
        _pointers[key] = (now + POINTER_TTL_S, found.version_id if isinstance(found, ResolvedVersion) else None)
    return _versions[found.version_id] if isinstance(found, ResolvedVersion) else None


def policy_set(resolved: ResolvedVersion) -> Any:
    """The PolicySet of the version's pinned bundle (built once per bundle hash), or None."""
    if resolved.policy_document is None or resolved.policy_hash is None:
        return None
    ps = _policies.get(resolved.policy_hash)
    if ps is None:
        import yaml

        from proctor.policy.engine import PolicySet
        from proctor.policy.loader import load_bundle_text

        ps = PolicySet(load_bundle_text(yaml.safe_dump(resolved.policy_document, sort_keys=False),
                                        f"{resolved.agent}@{resolved.label} (pinned)"))
        with _lock:
            _policies[resolved.policy_hash] = ps
    return ps


def pinned_policy(resolved: ResolvedVersion, engine: Any = None) -> Any:
    """:func:`policy_set`, with the process guard made if there is none yet.

    A pinned bundle is enforced even if ``init()`` named no policy: a guard is made on first
    need, on the database the process writes to (with a server URL: ``PROCTOR_DATABASE_URL``,
    else the local ``.proctor/proctor.db``), where its budgets, approvals and decision log live.
    """
    ps = policy_set(resolved)
    if ps is None:
        return None
    from proctor.sdk import governance

    if governance.guard() is None:
        engine = engine if engine is not None else _engine()
        if engine is None:
            from proctor.sdk import setup
            from proctor.store.engine import open_engine

            rt = setup._runtime
            engine = open_engine(rt.database_url if rt is not None else None)
        governance.ensure_guard(engine)
    return ps


def forget() -> None:
    """Drop every cached pointer (tests; a process that must see a move at once)."""
    with _lock:
        _pointers.clear()
        _warned.clear()
