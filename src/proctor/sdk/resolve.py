"""Runtime resolution: which registered version of an agent is deployed to an environment.

``proctor.session(agent="support-triage", env="prod")`` asks the registry (the database the
SDK writes to, or the guard's) which version is live there, stamps its label and hash on every
span of the session, and hands its pinned policy bundle to the guard for that session.

A deployment pointer is read at most once a second per (agent, environment), so a rollback
reaches new sessions within about a second; a session keeps the version it started with.
Versions are immutable, so a version's manifest (and the policy built from it) is cached for
good once read.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

POINTER_TTL_S = 1.0


@dataclass(frozen=True, slots=True)
class ResolvedVersion:
    agent: str
    environment: str
    version_id: str
    label: str  # the manifest's version label, else the short hash
    policy_hash: str | None
    policy_document: dict[str, Any] | None


_pointers: dict[tuple[str, str], tuple[float, str | None]] = {}
_versions: dict[str, ResolvedVersion] = {}
_policies: dict[str, Any] = {}
_lock = threading.Lock()


def _engine() -> Any:
    """The database to ask: the guard's, else the embedded store the SDK writes to."""
    from proctor.sdk import governance, setup

    g = governance.guard()
    if g is not None:
        return g.engine
    rt = setup._runtime
    return getattr(rt.exporter, "engine", None) if rt is not None else None


def resolve(agent: str, environment: str, engine: Any = None) -> ResolvedVersion | None:
    """The version of ``agent`` live in ``environment``, or None (not deployed, or no registry)."""
    engine = engine if engine is not None else _engine()
    if engine is None:
        return None
    key = (agent, environment)
    now = time.monotonic()
    hit = _pointers.get(key)
    if hit is not None and hit[0] > now:
        version_id = hit[1]
    else:
        from proctor.store.registry import RegistryStore

        try:
            version_id = RegistryStore(engine).current(agent, environment)
        except Exception:  # a store without the registry tables yet, or away: run unresolved
            version_id = None
        with _lock:
            _pointers[key] = (now + POINTER_TTL_S, version_id)
    if version_id is None:
        return None
    resolved = _versions.get(version_id)
    if resolved is None:
        from proctor.store.registry import RegistryStore

        v = RegistryStore(engine).get(version_id)
        policy = v.manifest.get("policy") or None
        resolved = ResolvedVersion(agent, environment, v.version_id, v.label or v.short_id,
                                   policy["hash"] if policy else None, policy["document"] if policy else None)
        with _lock:
            _versions[version_id] = resolved
    return resolved


def pinned_policy(resolved: ResolvedVersion, engine: Any = None) -> Any:
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
    from proctor.sdk import governance

    if governance.guard() is None:  # a pinned policy is enforced even if init() named none
        engine = engine if engine is not None else _engine()
        if engine is not None:
            governance.ensure_guard(engine)
    return ps


def forget() -> None:
    """Drop every cached pointer (tests; a process that must see a move at once)."""
    with _lock:
        _pointers.clear()
