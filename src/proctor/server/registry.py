"""The agent registry over HTTP: everything ``proctor agent ...`` does, as JSON.

Versions, environments and the deployment history live in the store, so this API and the CLI
see the same registry. The server cannot read a client's files, so a push uploads the
manifest's text together with the contents of the files it names (prompts, tool schemas, the
policy bundle), keyed by the relative path the manifest uses; they are resolved in a temporary
directory exactly as ``proctor agent push`` resolves them on disk, so the same content is the
same version whichever way it arrives. A manifest may name only files it uploaded: the server
never reads a path of its own on a client's behalf.

Errors: a refused manifest is 400 with every problem (source, line, where, message); an
unknown version is 404; a deploy refused by its gates is 409 and carries the recorded refusal
(a move is recorded whether applied or refused); nothing to roll back to is 409; an unknown
environment and other bad requests are 400.
"""

from __future__ import annotations

import os
import posixpath
import tempfile
import time
from dataclasses import asdict
from pathlib import Path as FsPath
from typing import TYPE_CHECKING, Annotated, Any

import orjson
from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from proctor.core.timeparse import parse_time_ns
from proctor.server.auth import acting_as, require
from proctor.store.registry import RegistryError, RegistryStore, StoredVersion, UnknownVersion

if TYPE_CHECKING:
    # Imported when first needed: manifests pull in the policy engine (CEL, JSON Schema).
    from proctor.policy.loader import PolicyError
    from proctor.registry.manifest import AgentVersion
    from proctor.registry.service import Registry

router = APIRouter(prefix="/api", tags=["registry"])

Name = Annotated[str, Field(min_length=1, max_length=256)]
Text = Annotated[str, Field(max_length=2000)]
EnvName = Annotated[str, Field(min_length=1, max_length=64)]

MAX_FILES = 200
MAX_FILE_CHARS = 5_000_000
MAX_UPLOAD_CHARS = 20_000_000


# -- request bodies -----------------------------------------------------------------------------

class _Body(BaseModel):
    # A misspelt field is an error, not silently ignored (an "aprovals" list must not vanish).
    model_config = ConfigDict(extra="forbid")


def _relative(key: str) -> str | None:
    """A manifest-relative path in POSIX form, normalized (``./a/../b`` -> ``b``); None when it
    is absolute, empty, or not a file path at all."""
    if not key or "\x00" in key or "\\" in key or key.startswith("/"):
        return None
    norm = posixpath.normpath(key)
    if norm in (".", "..") or norm.endswith("/..") or norm.startswith("/"):
        return None
    return norm


class PushBody(_Body):
    manifest: Annotated[str, Field(min_length=1, max_length=1_000_000)] = Field(
        description="The agent.yaml's text (YAML, or JSON).")
    files: dict[str, Annotated[str, Field(max_length=MAX_FILE_CHARS)]] = Field(
        default_factory=dict,
        description="The contents of the files the manifest names (prompts, schema files, the policy bundle), "
                    "keyed by the path the manifest uses, relative to the manifest (e.g. prompts/system.md, "
                    "../policies/support.yaml).")
    path: Annotated[str, Field(min_length=1, max_length=1000)] = Field(
        "agent.yaml", description="The manifest's name as the client knows it; used in problem reports.")
    by: Name | None = Field(None, description="Who registers it (recorded as created_by).")

    @field_validator("files")
    @classmethod
    def _files(cls, files: dict[str, str]) -> dict[str, str]:
        if len(files) > MAX_FILES:
            raise ValueError(f"at most {MAX_FILES} files per push")
        if sum(len(v) for v in files.values()) > MAX_UPLOAD_CHARS:
            raise ValueError(f"at most {MAX_UPLOAD_CHARS} characters of files per push")
        out: dict[str, str] = {}
        for key, content in files.items():
            norm = _relative(key)
            if norm is None:
                raise ValueError(f"file key {key!r} must be a relative file path, with / as separator")
            if norm in out and out[norm] != content:
                raise ValueError(f"file keys name {norm!r} twice, with different contents")
            out[norm] = content
        return out


class Approval(_Body):
    name: Name = Field(description="Who signs off.")
    role: Name = Field(description="The role they sign off as, matched against the gates' approvals.")


class DeployBody(_Body):
    ref: Name = Field(description="The version: full id, id prefix (6+ hex), label, or NAME@LABEL / NAME@PREFIX.")
    env: EnvName
    by: Name = Field(description="Who deploys.")
    reason: Text = ""
    evidence: Annotated[list[Annotated[str, Field(max_length=2000)]], Field(max_length=100)] = Field(
        default_factory=list, description="Links or notes, recorded with the move.")
    approvals: Annotated[list[Approval], Field(max_length=100)] = Field(
        default_factory=list, description="Sign-offs given with the deploy.")


class RollbackBody(_Body):
    env: EnvName
    by: Name = Field(description="Who rolls back.")
    reason: Text = ""


class EnvironmentBody(_Body):
    name: EnvName = Field(description="lowercase letters, digits, - and _")
    description: Text = ""


# -- helpers ------------------------------------------------------------------------------------

def _json(doc: Any, status: int = 200) -> Response:
    # orjson bytes as they are, like proctor.server.api
    return Response(orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS, default=str), status_code=status,
                    media_type="application/json")


def _store(request: Request) -> RegistryStore:
    return RegistryStore(request.app.state.proctor.engine)


def _registry(request: Request) -> Registry:
    from proctor.registry.service import Registry

    return Registry(request.app.state.proctor.engine)


def _error(exc: RegistryError, status: int = 400) -> HTTPException:
    """UnknownVersion is 404; any other registry refusal is ``status``."""
    return HTTPException(404 if isinstance(exc, UnknownVersion) else status, str(exc))


def _known_environment(store: RegistryStore, env: str) -> None:
    names = [e["name"] for e in store.environments()]
    if env not in names:
        raise HTTPException(400, f"unknown environment {env!r} (known: {', '.join(sorted(names))}; "
                                 "add one with POST /api/environments)")


def _version(store: RegistryStore, ref: str, agent: str | None = None) -> StoredVersion:
    try:
        v = store.get(ref, agent)
    except RegistryError as exc:
        raise _error(exc) from exc
    if agent is not None and v.name != agent:
        raise HTTPException(400, f"{ref!r} is a version of {v.name}, not of {agent}")
    return v


def _problems(exc: PolicyError, status: int = 400) -> Response:
    problems = [{"source": p.source, "line": p.line, "where": p.where, "message": p.message} for p in exc.problems]
    n = len(problems)
    return _json({"detail": f"manifest refused ({n} problem{'s' * (n != 1)})", "problems": problems}, status)


AgentName = Annotated[str, Path(max_length=256, description="Agent name (metadata.name of its manifest).")]
EnvQuery = Annotated[str, Query(min_length=1, max_length=64, description="Environment, e.g. prod.")]
Limit = Annotated[int, Query(ge=1, le=10_000)]


# -- push: resolving an upload ------------------------------------------------------------------

def _file_refs(doc: Any) -> list[tuple[tuple[str | int, ...], str, str]]:
    """(path in the document, the relative path, what it is) for every file a manifest names.
    Defensive: a document that fails the schema still has its well-typed references listed."""
    spec = doc.get("spec") if isinstance(doc, dict) else None
    if not isinstance(spec, dict):
        return []
    refs: list[tuple[tuple[str | int, ...], str, str]] = []
    prompts = spec.get("prompts")
    if isinstance(prompts, dict):
        refs += [(("spec", "prompts", k), v, "prompt") for k, v in prompts.items() if isinstance(v, str)]
    tools = spec.get("tools")
    if isinstance(tools, list):
        for i, t in enumerate(tools):
            if isinstance(t, dict):
                refs += [(("spec", "tools", i, key), t[key], "schema") for key in ("input_schema", "output_schema")
                         if isinstance(t.get(key), str)]
    if isinstance(spec.get("policy"), str):
        refs.append((("spec", "policy"), spec["policy"], "policy bundle"))
    return refs


def _set(doc: dict[str, Any], path: tuple[str | int, ...], value: str) -> None:
    node: Any = doc
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


def resolve_upload(body: PushBody) -> AgentVersion:
    """The version an uploaded manifest and its files describe: the same id ``proctor agent
    push`` gives the same content on disk. Raises PolicyError (ManifestError) with every problem."""
    import jsonschema

    from proctor.policy.loader import (
        PolicyError,
        Problem,
        _dotted,
        _line_of,
        parse_documents,
        schema_problems,
    )
    from proctor.registry.manifest import MANIFEST_SCHEMA, ManifestError, resolve_manifest

    source = body.path
    docs = parse_documents(body.manifest, source)
    if len(docs) != 1:
        raise ManifestError([Problem(source, 1, "", f"expected one Agent document, found {len(docs)}")])
    doc, lines = docs[0]
    problems = schema_problems(jsonschema.Draft202012Validator(MANIFEST_SCHEMA), doc, lines, source)
    refs = _file_refs(doc)
    wanted: dict[str, str] = {}
    for where, rel, what in refs:
        norm = _relative(rel)
        if norm is None:
            message = f"{what} file {rel!r} must be a path relative to the manifest"
        elif norm not in body.files:
            message = f"{what} file {rel!r} was not uploaded: put its content in files[{norm!r}]"
        else:
            wanted[norm] = body.files[norm]
            continue
        problems.append(Problem(source, _line_of(lines, where), _dotted(where), message))
    if problems:
        raise ManifestError(sorted(problems, key=lambda p: p.line))

    with tempfile.TemporaryDirectory(prefix="proctor-push-") as tmp:
        # The manifest sits deep enough that every "../" the upload uses stays inside tmp.
        depth = max([0, *(next(i for i, part in enumerate(k.split("/")) if part != "..") for k in wanted)])
        base = FsPath(tmp).joinpath(*(f".manifest-{i}" for i in range(depth)))
        base.mkdir(parents=True, exist_ok=True)  # "../x" goes through it, even when nothing is in it
        written: dict[str, str] = {}
        for norm, content in wanted.items():
            target = os.path.normpath(base / norm)
            placed = target.startswith(tmp + os.sep) and written.setdefault(target, norm) == norm
            try:
                if placed:
                    FsPath(target).parent.mkdir(parents=True, exist_ok=True)
                    FsPath(target).write_text(content, encoding="utf-8", newline="")
            except OSError:  # e.g. "prompts" named as a file and as a directory
                placed = False
            if not placed:
                raise ManifestError([Problem(source, 1, "", f"file {norm!r} cannot be placed next to the others")])
        for where, rel, _what in refs:
            _set(doc, where, _relative(rel) or rel)  # paths are not hashed: normalizing one changes nothing
        try:
            return resolve_manifest(doc, lines, source, base)
        except PolicyError as exc:  # e.g. the policy bundle's own problems, named by the temporary path
            raise ManifestError([Problem(os.path.relpath(p.source, base) if p.source.startswith(tmp) else p.source,
                                         p.line, p.where, p.message.replace(str(base) + os.sep, ""))
                                 for p in exc.problems]) from None


# -- agents and versions ------------------------------------------------------------------------

@router.get("/agents", summary="Agents: versions count, newest version, and where each is deployed")
def list_agents(request: Request) -> Response:
    return _json({"agents": _store(request).agents()})


@router.get("/agents/{name}/versions", summary="One agent's versions, newest first")
def list_agent_versions(request: Request, name: AgentName, limit: Limit = 100) -> Response:
    versions = _store(request).list_versions(name, limit=limit)
    if not versions:
        raise HTTPException(404, f"no agent named {name!r}")
    return _json({"agent": name, "versions": [v.to_dict(manifest=False) for v in versions]})


@router.get("/versions/{ref}", summary="One version in full, with its resolved manifest")
def get_version(
    request: Request,
    ref: Annotated[str, Path(max_length=256, description="Full id, id prefix (6+ hex), NAME@LABEL or NAME@PREFIX.")],
) -> Response:
    return _json(_version(_store(request), ref).to_dict())


@router.get("/versions", summary="Inventory (blast radius): versions matching every filter, and where each is live")
def inventory(
    request: Request,
    tool: Annotated[str | None, Query(max_length=256, description="Versions that may call this tool.")] = None,
    model: Annotated[str | None, Query(max_length=256, description="Versions on this model id.")] = None,
    policy: Annotated[str | None, Query(max_length=256, description="Bundle name or hash prefix.")] = None,
    label: Annotated[str | None, Query(max_length=512, pattern=r"^[^=]+=", description="KEY=VALUE.")] = None,
    owner: Annotated[str | None, Query(max_length=256)] = None,
    env: Annotated[str | None, Query(max_length=64, description="Only versions live in this environment.")] = None,
    deployed: Annotated[bool, Query(description="Only versions live somewhere.")] = False,
) -> Response:
    inv = _store(request).inventory(tool=tool, model=model, policy=policy, label=label, owner=owner, env=env,
                                    deployed_only=deployed)
    return _json({"filters": inv.filters, "versions": inv.rows})


@router.post("/agents/push", summary="Register a version from an uploaded manifest and its files "
                                     "(201 new; 200 if identical content is already registered)")
def push(request: Request, body: PushBody) -> Response:
    from proctor.policy.loader import PolicyError

    who = require(request, "operate")
    try:
        v = resolve_upload(body)
    except PolicyError as exc:
        return _problems(exc)
    try:
        res = _store(request).push(v.name, v.version_id, v.manifest, by=acting_as(who, body.by))
    except RegistryError as exc:
        raise _error(exc) from exc
    return _json({"created": res.created, "version": res.version.to_dict(manifest=False)},
                 201 if res.created else 200)


# -- moves --------------------------------------------------------------------------------------

@router.post("/agents/{name}/deploy", summary="Point an environment at a version if its gates pass "
                                              "(409 with the recorded refusal if not)")
def deploy(request: Request, name: AgentName, body: DeployBody) -> Response:
    from proctor.registry.service import PromotionRefused

    who = require(request, "operate")
    reg = _registry(request)
    version = _version(reg.store, body.ref, name)
    try:
        d = reg.deploy(version.version_id, body.env, by=acting_as(who, body.by), reason=body.reason, evidence=body.evidence,
                       approvals=[(a.name, a.role) for a in body.approvals], agent=name)
    except PromotionRefused as exc:
        return _json({**exc.deployment.to_dict(), "detail": str(exc)}, 409)
    except RegistryError as exc:  # an unknown environment
        raise _error(exc) from exc
    return _json(d.to_dict())


@router.post("/agents/{name}/rollback", summary="Put back the version live before the current one "
                                                "(409 if there is none)")
def rollback(request: Request, name: AgentName, body: RollbackBody) -> Response:
    who = require(request, "operate")
    reg = _registry(request)
    _known_environment(reg.store, body.env)
    try:
        d = reg.rollback(name, body.env, by=acting_as(who, body.by), reason=body.reason)
    except RegistryError as exc:
        raise _error(exc, 409) from exc
    return _json(d.to_dict())


@router.get("/agents/{name}/history", summary="Every move of an agent, newest first: applied, refused, "
                                              "rollbacks, with who, why and the gates' results")
def history(
    request: Request, name: AgentName,
    env: Annotated[str | None, Query(max_length=64, description="Only this environment.")] = None,
    limit: Limit = 50,
) -> Response:
    moves = _store(request).history(name, env, limit=limit)
    return _json({"agent": name, "environment": env, "deployments": [m.to_dict() for m in moves]})


@router.get("/agents/{name}/live", summary="The version live in an environment now, with its pinned policy "
            "bundle: what proctor.session(agent, env) runs (404 if none is deployed there)")
def live(request: Request, name: AgentName, env: EnvQuery) -> Response:
    store = _store(request)
    version_id = store.current(name, env)
    if version_id is None:
        _known_environment(store, env)
        raise HTTPException(404, f"no version of {name!r} is deployed to {env!r}")
    v = store.get(version_id)
    policy = v.manifest.get("policy") or None
    return _json({"agent": name, "environment": env, "version_id": v.version_id, "short_id": v.short_id,
                  "label": v.label, "policy": {"hash": policy["hash"], "document": policy["document"]}
                  if policy else None})


@router.get("/agents/{name}/at", summary="The deployment live in an environment at a time (null if none)")
def deployed_at(
    request: Request, name: AgentName, env: EnvQuery,
    t: Annotated[str, Query(max_length=64, description="ISO 8601, epoch seconds, or 15m/2h/7d ago.")],
) -> Response:
    try:
        # integers exactly: through float, a nanosecond timestamp loses its last digits
        ts = parse_time_ns(int(t) if t.strip().isdigit() else t)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc
    d = _store(request).at(name, env, ts)
    return _json({"agent": name, "environment": env, "at_ns": ts, "deployment": d.to_dict() if d else None})


# -- diffs --------------------------------------------------------------------------------------

@router.get("/diff", summary="What changed between two versions: model, prompts, tools, policy, tier")
def diff(
    request: Request,
    a: Annotated[str, Query(min_length=1, max_length=256, description="The older version.")],
    b: Annotated[str, Query(min_length=1, max_length=256, description="The newer version.")],
) -> Response:
    from proctor.registry.diff import changes_to_json

    try:
        va, vb, changes = _registry(request).diff(a, b)
    except RegistryError as exc:
        raise _error(exc) from exc
    return _json({"a": va.version_id, "b": vb.version_id, "changes": changes_to_json(changes)})


@router.get("/agents/{name}/changed", summary="The live version in an environment against the one live "
                                              "before it (404 if nothing is live)")
def changed(request: Request, name: AgentName, env: EnvQuery = "prod") -> Response:
    from proctor.registry.diff import changes_to_json

    reg = _registry(request)
    _known_environment(reg.store, env)
    try:
        cur, prev, changes = reg.what_changed(name, env)
    except RegistryError as exc:  # not deployed there
        raise HTTPException(404, str(exc)) from exc
    return _json({"current": cur and cur.version_id, "previous": prev and prev.version_id,
                  "changes": changes_to_json(changes)})


# -- environments -------------------------------------------------------------------------------

@router.get("/environments", summary="Environments (dev, staging and prod exist from the start)")
def list_environments(request: Request) -> Response:
    return _json({"environments": _store(request).environments()})


@router.post("/environments", summary="Add an environment (201; 200 if it already exists, unchanged)")
def add_environment(request: Request, body: EnvironmentBody) -> Response:
    require(request, "operate")
    store = _store(request)
    existed = any(e["name"] == body.name for e in store.environments())
    try:
        store.add_environment(body.name, body.description)
    except RegistryError as exc:
        raise _error(exc) from exc
    env = next(e for e in store.environments() if e["name"] == body.name)
    return _json(env, 200 if existed else 201)


# -- tool output schemas ------------------------------------------------------------------------

@router.get("/agents/{name}/schemas", summary="Tool output schemas observed in traces against the pinned "
                                              "ones and the window before: fields added, removed, retyped")
def schemas(
    request: Request, name: AgentName,
    env: Annotated[str | None, Query(max_length=64, description="Pin from the version live here "
                                                                "(default: the newest version).")] = None,
    window: Annotated[str, Query(pattern=r"^\s*\d+(\.\d+)?\s*[smhdwSMHDW]\s*$",
                                 description="Window of traces to observe, e.g. 1h, 1d, 7d.")] = "1d",
) -> Response:
    from proctor.registry.schemas import drift_report

    store = _store(request)
    if env is not None:
        vid = store.current(name, env)
        if vid is None:
            raise HTTPException(404, f"{name} is not deployed to {env}")
        version = _version(store, vid)
    else:
        newest = store.list_versions(name, limit=1)
        if not newest:
            raise HTTPException(404, f"no agent named {name!r}")
        version = newest[0]
    now = time.time_ns()
    window_ns = now - parse_time_ns(window, now_ns=now)
    if window_ns <= 0:
        raise HTTPException(400, f"window must be a positive duration such as 1h or 7d, got {window!r}")
    pinned = {t["name"]: t.get("output_schema") for t in version.manifest.get("tools") or []}
    report = drift_report(store.engine, pinned=pinned, window_ns=window_ns, now_ns=now, tools=list(pinned))
    return _json({"agent": name, "version": version.version_id, "window_ns": window_ns, "tools": [
        {"tool": d.tool, "calls": d.observed.calls if d.observed else 0, "changed": d.changed,
         "pinned": pinned.get(d.tool) is not None,
         "vs_pinned": [asdict(c) for c in d.vs_pinned], "vs_earlier": [asdict(c) for c in d.vs_earlier]}
        for d in report]})
