"""The agent registry's tables: immutable versions, environments, and the deployment history.

Versions are keyed by their content hash and never change; pushing the same content again is
a no-op. Environments hold a pointer per agent, moved only by appending to ``deployments``
(refused moves are appended too). Movers of one (agent, environment) lock its head row, so
concurrent promotions are serialized and none is lost; the history answers "which version was
running in prod at time T".
"""

from __future__ import annotations

import builtins
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, and_, insert, or_, select, update

from proctor.store.budgets import insert_if_absent, retry_transaction, write_transaction
from proctor.store.schema import agent_version_tools as tools_t
from proctor.store.schema import agent_versions as versions_t
from proctor.store.schema import deployment_heads as heads_t
from proctor.store.schema import deployments as deployments_t
from proctor.store.schema import environments as envs_t

_ENV_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class RegistryError(ValueError):
    """A registry request that cannot be carried out (unknown version, unknown environment...)."""


class UnknownVersion(RegistryError, LookupError):
    pass


@dataclass(slots=True)
class StoredVersion:
    version_id: str
    name: str
    label: str | None
    owner: str | None
    model_provider: str | None
    model_id: str | None
    policy_name: str | None
    policy_hash: str | None
    tier: str | None
    labels: dict[str, str]
    manifest: dict[str, Any]
    created_ns: int
    created_by: str | None

    @property
    def short_id(self) -> str:
        return self.version_id[:12]

    def to_dict(self, *, manifest: bool = True) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__slots__ if k != "manifest"}  # type: ignore[attr-defined]
        d["short_id"] = self.short_id
        d["tools"] = [t["name"] for t in self.manifest.get("tools", [])]
        if manifest:
            d["manifest"] = self.manifest
        return d


@dataclass(slots=True)
class Deployment:
    id: str
    agent: str
    environment: str
    seq: int
    action: str
    status: str
    version_id: str
    previous_version_id: str | None
    by: str
    reason: str
    evidence: list[Any]
    gates: list[dict[str, Any]]
    ts_ns: int

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}  # type: ignore[attr-defined]


@dataclass(slots=True)
class PushResult:
    version: StoredVersion
    created: bool  # False: identical content was already registered


@dataclass(slots=True)
class Inventory:
    filters: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)


def _version(row: Any) -> StoredVersion:
    m = row._mapping
    return StoredVersion(
        version_id=m["version_id"], name=m["name"], label=m["label"], owner=m["owner"],
        model_provider=m["model_provider"], model_id=m["model_id"], policy_name=m["policy_name"],
        policy_hash=m["policy_hash"], tier=m["tier"], labels=orjson.loads(m["labels"]),
        manifest=orjson.loads(m["manifest"]), created_ns=m["created_ns"], created_by=m["created_by"],
    )


def _deployment(row: Any) -> Deployment:
    m = row._mapping
    return Deployment(
        id=m["id"], agent=m["agent"], environment=m["environment"], seq=m["seq"], action=m["action"],
        status=m["status"], version_id=m["version_id"], previous_version_id=m["previous_version_id"],
        by=m["by"], reason=m["reason"], evidence=orjson.loads(m["evidence"]), gates=orjson.loads(m["gates"]),
        ts_ns=m["ts_ns"],
    )


class RegistryStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- versions ------------------------------------------------------------------------------

    def push(self, name: str, version_id: str, manifest: dict[str, Any], *, by: str | None = None) -> PushResult:
        """Register a resolved manifest under its content hash; identical content is a no-op."""
        if manifest.get("name") != name:
            raise RegistryError(f"manifest name {manifest.get('name')!r} does not match {name!r}")
        model = manifest.get("model") or {}
        policy = manifest.get("policy") or {}
        row = {
            "version_id": version_id, "name": name, "label": manifest.get("label"), "owner": manifest.get("owner"),
            "model_provider": model.get("provider"), "model_id": model.get("id"),
            "policy_name": policy.get("name"), "policy_hash": policy.get("hash"), "tier": manifest.get("tier"),
            "labels": orjson.dumps(manifest.get("labels") or {}, option=orjson.OPT_SORT_KEYS).decode(),
            "manifest": orjson.dumps(manifest, option=orjson.OPT_SORT_KEYS).decode(),
            "created_ns": time.time_ns(), "created_by": by,
        }

        def attempt() -> PushResult:
            with write_transaction(self.engine) as conn:
                # RETURNING, not rowcount: psycopg reports -1 for INSERT ... ON CONFLICT DO NOTHING here
                res = conn.execute(insert_if_absent(conn, versions_t).returning(versions_t.c.version_id), row)
                created = res.first() is not None
                if created:
                    tools = [{"version_id": version_id, "tool_name": t["name"], "side_effect": t["side_effect"]}
                             for t in manifest.get("tools") or []]
                    if tools:
                        conn.execute(insert(tools_t), tools)
                stored = conn.execute(select(versions_t).where(versions_t.c.version_id == version_id)).one()
            return PushResult(_version(stored), created)

        return retry_transaction(attempt)

    def get(self, ref: str, agent: str | None = None) -> StoredVersion:
        """A version by full id, unique id prefix (≥ 6 characters), or ``name@label``/``name@prefix``."""
        name, _, key = ref.rpartition("@") if "@" in ref else (agent or "", "", ref)
        key = key.strip().lower() if re.fullmatch(r"[0-9a-fA-F]{6,64}", key.strip()) else key.strip()
        c = versions_t.c
        with self.engine.connect() as conn:
            q = select(versions_t).where(or_(c.version_id.startswith(key, autoescape=True), c.label == key))
            if name:
                q = q.where(c.name == name)
            rows = conn.execute(q.order_by(c.created_ns.desc()).limit(20)).all()
        if not rows:
            where = f" of {name}" if name else ""
            raise UnknownVersion(f"no version{where} matches {key!r}: see `proctor agent ls`")
        exact = [r for r in rows if r._mapping["version_id"] == key]
        if exact:
            return _version(exact[0])
        ids = {r._mapping["version_id"] for r in rows}
        by_label = [r for r in rows if r._mapping["label"] == key]
        if len(ids) > 1 and len(by_label) != 1 and not (by_label and len({r._mapping["name"] for r in by_label}) == 1):
            raise RegistryError(f"{ref!r} matches several versions: {', '.join(sorted(i[:12] for i in ids))}")
        return _version((by_label or rows)[0])

    def list_versions(self, name: str | None = None, *, limit: int = 100) -> builtins.list[StoredVersion]:
        c = versions_t.c
        q = select(versions_t)
        if name:
            q = q.where(c.name == name)
        with self.engine.connect() as conn:
            return [_version(r) for r in conn.execute(q.order_by(c.created_ns.desc()).limit(limit))]

    def agents(self) -> builtins.list[dict[str, Any]]:
        """One row per agent: versions count, newest version, and where it is deployed."""
        out: dict[str, dict[str, Any]] = {}
        for v in self.list_versions(limit=10_000):
            a = out.setdefault(v.name, {"name": v.name, "versions": 0, "latest": v.short_id,
                                        "latest_label": v.label, "owner": v.owner, "deployed": {}})
            a["versions"] += 1
        with self.engine.connect() as conn:
            for h in conn.execute(select(heads_t).where(heads_t.c.version_id.is_not(None))):
                if h.agent in out:
                    out[h.agent]["deployed"][h.environment] = h.version_id[:12]
        return sorted(out.values(), key=lambda a: a["name"])

    # -- environments --------------------------------------------------------------------------

    def environments(self) -> builtins.list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(select(envs_t).order_by(envs_t.c.created_ns, envs_t.c.name))]

    def add_environment(self, name: str, description: str = "") -> None:
        if not _ENV_NAME.match(name):
            raise RegistryError(f"environment names are lowercase letters, digits, - and _: {name!r}")
        with write_transaction(self.engine) as conn:
            conn.execute(insert_if_absent(conn, envs_t), [{"name": name, "description": description,
                                                           "created_ns": time.time_ns()}])

    def _check_environment(self, conn: Connection, env: str) -> None:
        if conn.execute(select(envs_t.c.name).where(envs_t.c.name == env)).first() is None:
            known = [r[0] for r in conn.execute(select(envs_t.c.name).order_by(envs_t.c.name))]
            raise RegistryError(f"unknown environment {env!r} (known: {', '.join(known)}; add one with "
                                f"`proctor agent env add NAME`)")

    # -- deployments ---------------------------------------------------------------------------

    def current(self, agent: str, env: str) -> str | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(heads_t.c.version_id).where(
                heads_t.c.agent == agent, heads_t.c.environment == env)).first()
        return row[0] if row else None

    def record_move(self, agent: str, env: str, version_id: str, *, action: str, applied: bool, by: str,
                    reason: str, evidence: builtins.list[Any], gates: builtins.list[dict[str, Any]],
                    expect_current: str | object | None = ...) -> Deployment:
        """Append a move (applied or refused) and, if applied, move the pointer — atomically.

        ``expect_current``: when given, the move is refused if the pointer changed since the
        caller read it (the gates were evaluated against that state).
        """
        def attempt() -> Deployment:
            with write_transaction(self.engine) as conn:
                self._check_environment(conn, env)
                if conn.execute(select(versions_t.c.name).where(versions_t.c.version_id == version_id)).first() is None:
                    raise UnknownVersion(f"no version {version_id[:12]} is registered: push it first")
                now = time.time_ns()
                conn.execute(insert_if_absent(conn, heads_t), [{"agent": agent, "environment": env, "version_id": None,
                                                                "seq": 0, "updated_ns": now}])
                q = select(heads_t).where(heads_t.c.agent == agent, heads_t.c.environment == env)
                if conn.dialect.name == "postgresql":
                    q = q.with_for_update()
                head = conn.execute(q).one()
                ok = applied
                gate_list = list(gates)
                if expect_current is not ... and head.version_id != expect_current:
                    ok = False
                    gate_list.append({"gate": "concurrency", "passed": False,
                                      "detail": f"{env} moved to {str(head.version_id)[:12]} while this move was "
                                                "being checked; check again"})
                seq = int(head.seq) + 1
                row = {"id": uuid.uuid4().hex, "agent": agent, "environment": env, "seq": seq, "action": action,
                       "status": "applied" if ok else "refused", "version_id": version_id,
                       "previous_version_id": head.version_id, "by": by, "reason": reason,
                       "evidence": orjson.dumps(evidence).decode(), "gates": orjson.dumps(gate_list).decode(),
                       "ts_ns": now}
                conn.execute(insert(deployments_t), [row])
                values: dict[str, Any] = {"seq": seq, "updated_ns": now}
                if ok:
                    values["version_id"] = version_id
                conn.execute(update(heads_t).where(and_(heads_t.c.agent == agent, heads_t.c.environment == env))
                             .values(**values))
                stored = conn.execute(select(deployments_t).where(deployments_t.c.id == row["id"])).one()
            return _deployment(stored)

        return retry_transaction(attempt)

    def history(self, agent: str | None = None, env: str | None = None, *, limit: int = 100,
                status: str | None = None) -> builtins.list[Deployment]:
        c = deployments_t.c
        q = select(deployments_t)
        if agent:
            q = q.where(c.agent == agent)
        if env:
            q = q.where(c.environment == env)
        if status:
            q = q.where(c.status == status)
        with self.engine.connect() as conn:
            return [_deployment(r) for r in conn.execute(q.order_by(c.ts_ns.desc(), c.seq.desc()).limit(limit))]

    def at(self, agent: str, env: str, ts_ns: int) -> Deployment | None:
        """The applied deployment that was current in ``env`` at ``ts_ns``."""
        c = deployments_t.c
        with self.engine.connect() as conn:
            row = conn.execute(select(deployments_t).where(
                c.agent == agent, c.environment == env, c.status == "applied", c.ts_ns <= ts_ns,
            ).order_by(c.seq.desc()).limit(1)).first()
        return _deployment(row) if row else None

    def previous_good(self, agent: str, env: str) -> str | None:
        """The version that was live in ``env`` before the current one (the rollback target)."""
        current = self.current(agent, env)
        for d in self.history(agent, env, status="applied", limit=1000):
            if d.version_id != current:
                return d.version_id
        return None

    # -- inventory -----------------------------------------------------------------------------

    def inventory(self, *, tool: str | None = None, model: str | None = None, policy: str | None = None,
                  label: str | None = None, owner: str | None = None, env: str | None = None,
                  deployed_only: bool = False) -> Inventory:
        """Versions (and where they are deployed) matching every filter given.

        ``tool``: a tool name the version may call; ``model``: model id; ``policy``: bundle name or
        hash prefix; ``label``: ``key=value``; ``env``: only versions deployed there now.
        """
        c = versions_t.c
        q = select(versions_t)
        if tool:
            q = q.where(c.version_id.in_(select(tools_t.c.version_id).where(tools_t.c.tool_name == tool)))
        if model:
            q = q.where(c.model_id == model)
        if policy:
            q = q.where(or_(c.policy_name == policy, c.policy_hash.startswith(policy, autoescape=True)))
        if owner:
            q = q.where(c.owner == owner)
        with self.engine.connect() as conn:
            versions = [_version(r) for r in conn.execute(q.order_by(c.name, c.created_ns.desc()))]
            heads = [(h.agent, h.environment, h.version_id) for h in conn.execute(select(heads_t))]
        if label:
            k, _, v = label.partition("=")
            versions = [x for x in versions if x.labels.get(k) == v]
        deployed: dict[str, list[str]] = {}
        for _agent, environment, vid in heads:
            if vid:
                deployed.setdefault(vid, []).append(environment)
        rows = []
        for x in versions:
            envs = sorted(deployed.get(x.version_id, []))
            if env and env not in envs:
                continue
            if deployed_only and not envs:
                continue
            d = x.to_dict(manifest=False)
            d["deployed_in"] = envs
            if tool:
                d["tool"] = next((t for t in x.manifest.get("tools", []) if t["name"] == tool), None)
            rows.append(d)
        return Inventory({"tool": tool, "model": model, "policy": policy, "label": label, "owner": owner,
                          "env": env}, rows)
