"""``proctor agent``: register agent versions, promote them through gates, roll back, diff.

Works on the database (``--db``, ``PROCTOR_DATABASE_URL``, or ``.proctor/proctor.db``); every
listing has ``--json``. Output goes through proctor.cli.output, shared by every command.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from proctor.cli.output import console
from proctor.cli.output import fail as _fail
from proctor.cli.output import print_json as _print_json

if TYPE_CHECKING:
    from rich.console import Console

    from proctor.registry.service import Registry

agent_app = typer.Typer(
    help="""The agent registry: content-hashed versions of whole agents (model, prompts, tool schemas,
policy bundle), deployed to environments through promotion gates.

  proctor agent push agents/triage/agent.yaml      register a version (identical content: no-op)

  proctor agent deploy support-triage@1.4.0 --env prod --approve bob:approver

  proctor agent changed support-triage --env prod  what changed since the last known-good

  proctor agent rollback support-triage --env prod

  proctor agent inventory --tool billing.refund --env prod

A version reference is a full id, an id prefix (6+ hex characters) or NAME@LABEL / NAME@PREFIX.
""",
    no_args_is_help=True,
)
env_app = typer.Typer(help="Environments (dev, staging and prod exist from the start).", no_args_is_help=True)
agent_app.add_typer(env_app, name="env")

DbOpt = Annotated[
    str | None,
    typer.Option("--db", envvar="PROCTOR_DATABASE_URL", help="Database URL (default: sqlite .proctor/proctor.db)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
EnvOpt = Annotated[str, typer.Option("--env", "-e", help="Environment (dev, staging, prod, or one you added).")]
ByOpt = Annotated[str | None, typer.Option("--by", help="Who does it (default: $USER).")]


def _console() -> Console:
    return console


def _registry(db: str | None) -> Registry:
    from proctor.registry.service import Registry
    from proctor.store import DatabaseURLError, open_engine

    try:
        return Registry(open_engine(db))
    except DatabaseURLError as exc:
        _fail(str(exc))


def _errors() -> tuple[type[BaseException], ...]:
    from proctor.policy.loader import PolicyError
    from proctor.store.registry import RegistryError

    return (PolicyError, RegistryError)


def _when(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


@agent_app.command("push")
def push(
    manifest: Annotated[Path, typer.Argument(help="An agent.yaml.")],
    by: ByOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register the version a manifest describes. Pushing identical content again is a no-op."""
    reg = _registry(db)
    try:
        res = reg.push(manifest, by=by)
    except _errors() as exc:
        _fail(str(exc))
    v = res.version
    if as_json:
        _print_json({"created": res.created, "version": v.to_dict(manifest=False)})
        return
    what = "registered" if res.created else "unchanged (already registered)"
    _console().print(f"{v.name} {v.short_id} ({v.label or 'no label'}): {what}", highlight=False)


@agent_app.command("sync")
def sync(
    directory: Annotated[Path, typer.Argument(help="A directory of agent.yaml / *.agent.yaml files.")],
    by: ByOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register every manifest under a directory (GitOps) and print what changed."""
    from proctor.registry.diff import changes_to_json, render_diff

    reg = _registry(db)
    try:
        items = reg.sync(directory, by=by)
    except _errors() as exc:
        _fail(str(exc))
    if as_json:
        _print_json([{"path": i.path, "name": i.name, "version_id": i.version_id, "created": i.created,
                      "previous": i.previous, "changes": changes_to_json(i.changes)} for i in items])
        return
    out = _console()
    for i in items:
        if not i.created:
            out.print(f"= {i.name} {i.version_id[:12]} unchanged", highlight=False)
        elif i.previous is None:
            out.print(f"+ {i.name} {i.version_id[:12]} new agent", highlight=False)
        else:
            out.print(f"~ {i.name} {i.previous[:12]} -> {i.version_id[:12]}", highlight=False)
            out.print(render_diff(i.changes), highlight=False, markup=False)


@agent_app.command("ls")
def ls(
    name: Annotated[str | None, typer.Argument(help="An agent: list its versions. Omit to list agents.")] = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List agents (with where each is deployed), or one agent's versions."""
    from rich.table import Table

    reg = _registry(db)
    if name is None:
        agents = reg.store.agents()
        if as_json:
            _print_json(agents)
            return
        t = Table("agent", "versions", "latest", "owner", "deployed")
        for a in agents:
            t.add_row(a["name"], str(a["versions"]), f"{a['latest']} {a['latest_label'] or ''}", a["owner"] or "",
                      ", ".join(f"{e}={v}" for e, v in sorted(a["deployed"].items())))
        _console().print(t)
        return
    versions = reg.store.list_versions(name)
    if not versions:
        _fail(f"no agent named {name!r}: see `proctor agent ls`")
    if as_json:
        _print_json([v.to_dict(manifest=False) for v in versions])
        return
    t = Table("version", "label", "created", "by", "model", "tools", "policy")
    for v in versions:
        t.add_row(v.short_id, v.label or "", _when(v.created_ns), v.created_by or "", v.model_id or "",
                  str(len(v.manifest.get("tools") or [])), (v.policy_name or "") + (f" {v.policy_hash[:8]}" if v.policy_hash else ""))
    _console().print(t)


@agent_app.command("show")
def show(
    ref: Annotated[str, typer.Argument(help="Version: id, id prefix, NAME@LABEL or NAME@PREFIX.")],
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one version: model, prompts (hashes), tools, policy, gates."""
    reg = _registry(db)
    try:
        v = reg.get(ref)
    except _errors() as exc:
        _fail(str(exc))
    if as_json:
        _print_json(v.to_dict())
        return
    m = v.manifest
    out = _console()
    out.print(f"[bold]{v.name}[/] {v.version_id}  ({v.label or 'no label'})", highlight=False)
    out.print(f"owner {v.owner or '-'} · labels {m.get('labels') or {}} · tier {m.get('tier')} · entrypoint "
              f"{m.get('entrypoint') or '-'}", highlight=False)
    out.print(f"model {m['model']['provider']}/{m['model']['id']} {m['model'].get('parameters') or ''}", highlight=False)
    for pname, p in (m.get("prompts") or {}).items():
        out.print(f"prompt {pname}: sha256 {p['sha256'][:12]}, {len(p['content'])} chars", highlight=False)
    for t in m.get("tools") or []:
        out.print(f"tool {t['name']} [{t['side_effect']}] {t.get('version') or ''} {t.get('source') or ''}",
                  highlight=False, markup=False)
    pol = m.get("policy")
    out.print(f"policy {pol['name']}@{pol['version']} {pol['hash'][:12]}" if pol else "policy -", highlight=False)
    out.print(f"gates {m.get('gates') or {}}", highlight=False)


@agent_app.command("diff")
def diff(
    a: Annotated[str, typer.Argument(help="The older version.")],
    b: Annotated[str, typer.Argument(help="The newer version.")],
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """What changed between two versions: model, prompts (unified diff), tools (breaking or not), policy rules, tier."""
    from proctor.registry.diff import changes_to_json, render_diff

    reg = _registry(db)
    try:
        va, vb, changes = reg.diff(a, b)
    except _errors() as exc:
        _fail(str(exc))
    if as_json:
        _print_json({"a": va.version_id, "b": vb.version_id, "changes": changes_to_json(changes)})
        return
    _console().print(f"{va.name} {va.short_id} -> {vb.name} {vb.short_id}", highlight=False)
    _console().print(render_diff(changes), highlight=False, markup=False)


@agent_app.command("changed")
def changed(
    name: Annotated[str, typer.Argument(help="Agent name.")],
    env: EnvOpt = "prod",
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """What changed in ENV since the last known-good version (the one live before the current)."""
    from proctor.registry.diff import changes_to_json, render_diff

    reg = _registry(db)
    try:
        cur, prev, changes = reg.what_changed(name, env)
    except _errors() as exc:
        _fail(str(exc))
    if as_json:
        _print_json({"current": cur and cur.version_id, "previous": prev and prev.version_id,
                     "changes": changes_to_json(changes)})
        return
    if prev is None:
        _console().print(f"{name} in {env}: {cur.short_id if cur else '-'} is the only version it has run",
                         highlight=False)
        return
    _console().print(f"{name} in {env}: {prev.short_id} (previous) -> {cur.short_id if cur else '-'} (live)",
                     highlight=False)
    _console().print(render_diff(changes), highlight=False, markup=False)


@agent_app.command("deploy")
def deploy(
    ref: Annotated[str, typer.Argument(help="Version to deploy.")],
    env: EnvOpt,
    approve: Annotated[list[str] | None, typer.Option("--approve", help="A sign-off NAME:ROLE (repeatable).")] = None,
    reason: Annotated[str, typer.Option(help="Why; recorded with the move.")] = "",
    evidence: Annotated[list[str] | None, typer.Option(help="A link or note (repeatable).")] = None,
    by: ByOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Point ENV at a version if its promotion gates pass. Refused moves are recorded too (exit 1)."""
    from proctor.registry.service import PromotionRefused

    approvals = []
    for a in approve or []:
        who, sep, role = a.partition(":")
        if not sep or not who or not role:
            _fail(f"--approve takes NAME:ROLE, got {a!r}")
        approvals.append((who, role))
    reg = _registry(db)
    try:
        d = reg.deploy(ref, env, by=by, reason=reason, evidence=evidence or [], approvals=approvals)
    except PromotionRefused as exc:
        if as_json:
            _print_json(exc.deployment.to_dict())
            raise typer.Exit(1) from None
        _fail(str(exc))
    except _errors() as exc:
        _fail(str(exc))
    if as_json:
        _print_json(d.to_dict())
        return
    prev = d.previous_version_id[:12] if d.previous_version_id else "nothing"
    _console().print(f"{d.agent} in {env}: {prev} -> {d.version_id[:12]} (move #{d.seq})", highlight=False)


@agent_app.command("rollback")
def rollback(
    name: Annotated[str, typer.Argument(help="Agent name.")],
    env: EnvOpt,
    reason: Annotated[str, typer.Option(help="Why; recorded with the move.")] = "",
    by: ByOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Put back the version that was live in ENV before the current one."""
    reg = _registry(db)
    try:
        d = reg.rollback(name, env, by=by, reason=reason)
    except _errors() as exc:
        _fail(str(exc))
    if as_json:
        _print_json(d.to_dict())
        return
    _console().print(f"{name} in {env}: rolled back {str(d.previous_version_id)[:12]} -> {d.version_id[:12]}",
                     highlight=False)


@agent_app.command("history")
def history(
    name: Annotated[str | None, typer.Argument(help="Agent name (omit for all).")] = None,
    env: Annotated[str | None, typer.Option("--env", "-e", help="Only this environment.")] = None,
    at: Annotated[str | None, typer.Option(help="Which version was live at this time (ISO, epoch or 15m ago).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Every move — applied, refused, rollback — with who, when, why and the gates' results."""
    from rich.table import Table

    from proctor.core.timeparse import parse_time_ns

    reg = _registry(db)
    if at is not None:
        if not name or not env:
            _fail("--at needs an agent name and --env")
        try:
            ts = parse_time_ns(at)
        except ValueError as exc:
            _fail(str(exc))
        d = reg.store.at(name, env, ts)
        if as_json:
            _print_json(d.to_dict() if d else None)
            return
        _console().print(f"{name} in {env} at {_when(ts)}: " + (f"{d.version_id[:12]} (since {_when(d.ts_ns)}, "
                         f"move #{d.seq} by {d.by})" if d else "nothing deployed"), highlight=False)
        return
    moves = reg.store.history(name, env, limit=limit)
    if as_json:
        _print_json([m.to_dict() for m in moves])
        return
    t = Table("when", "agent", "env", "#", "action", "status", "version", "from", "by", "reason / gates")
    for m in moves:
        failed = [g for g in m.gates if not g.get("passed")]
        note = m.reason + ("; " if m.reason and failed else "") + "; ".join(f"{g['gate']}: {g.get('detail', '')}" for g in failed)
        t.add_row(_when(m.ts_ns), m.agent, m.environment, str(m.seq), m.action,
                  "[green]applied[/]" if m.status == "applied" else "[red]refused[/]", m.version_id[:12],
                  (m.previous_version_id or "")[:12], m.by, note)
    _console().print(t)


@agent_app.command("inventory")
def inventory(
    tool: Annotated[str | None, typer.Option(help="Versions that may call this tool.")] = None,
    model: Annotated[str | None, typer.Option(help="Versions on this model id.")] = None,
    policy: Annotated[str | None, typer.Option(help="Versions pinning this bundle (name or hash prefix).")] = None,
    label: Annotated[str | None, typer.Option(help="KEY=VALUE label.")] = None,
    owner: Annotated[str | None, typer.Option(help="Owner.")] = None,
    env: Annotated[str | None, typer.Option("--env", "-e", help="Only versions live in this environment.")] = None,
    deployed: Annotated[bool, typer.Option(help="Only versions live somewhere.")] = False,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Blast radius: which versions (and where live) match a tool, model, policy, label or owner."""
    from rich.table import Table

    reg = _registry(db)
    inv = reg.store.inventory(tool=tool, model=model, policy=policy, label=label, owner=owner, env=env,
                              deployed_only=deployed)
    if as_json:
        _print_json({"filters": inv.filters, "versions": inv.rows})
        return
    t = Table("agent", "version", "label", "live in", "model", "owner", *(["tool side effect"] if tool else []))
    for r in inv.rows:
        t.add_row(r["name"], r["short_id"], r["label"] or "", ", ".join(r["deployed_in"]) or "-", r["model_id"] or "",
                  r["owner"] or "", *([r["tool"]["side_effect"] if r.get("tool") else ""] if tool else []))
    _console().print(t)


@env_app.command("ls")
def env_ls(db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """List environments."""
    envs = _registry(db).store.environments()
    if as_json:
        _print_json(envs)
        return
    for e in envs:
        _console().print(f"{e['name']}  {e['description'] or ''}", highlight=False)


@env_app.command("add")
def env_add(
    name: Annotated[str, typer.Argument(help="lowercase letters, digits, - and _.")],
    description: Annotated[str, typer.Option(help="What it is for.")] = "",
    db: DbOpt = None,
) -> None:
    """Add an environment (e.g. canary, eu-prod)."""
    try:
        _registry(db).store.add_environment(name, description)
    except _errors() as exc:
        _fail(str(exc))
    _console().print(f"environment {name} ready", highlight=False)


@agent_app.command("schemas")
def schemas(
    name: Annotated[str, typer.Argument(help="Agent name: its tools' pinned output schemas are compared.")],
    env: Annotated[str | None, typer.Option("--env", "-e", help="Pin from the version live here (default: newest).")]
    = None,
    window: Annotated[str, typer.Option(help="Window of traces to observe, e.g. 1h, 1d, 7d.")] = "1d",
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Tool output schemas observed in traces vs the pinned ones and vs the window before: fields added,
    removed or retyped, with an example span for each."""
    import time
    from dataclasses import asdict

    from proctor.core.timeparse import parse_time_ns
    from proctor.registry.schemas import drift_report

    reg = _registry(db)
    try:
        vid = reg.store.current(name, env) if env else None
        if env and vid is None:
            _fail(f"{name} is not deployed to {env}: see `proctor agent ls`")
        version = reg.get(vid) if vid else next(iter(reg.store.list_versions(name, limit=1)), None)
        if version is None:
            _fail(f"no agent named {name!r}: see `proctor agent ls`")
        now = time.time_ns()
        window_ns = now - parse_time_ns(window)
    except ValueError as exc:  # RegistryError and PolicyError are ValueErrors too
        _fail(str(exc))
    if window_ns <= 0:
        _fail(f"--window must be a duration such as 1h or 7d, got {window!r}")
    tools = version.manifest.get("tools") or []
    pinned = {t["name"]: t.get("output_schema") for t in tools}
    report = drift_report(reg.store.engine, pinned=pinned, window_ns=window_ns, now_ns=now, tools=list(pinned))
    if as_json:
        _print_json({"agent": name, "version": version.version_id, "window_ns": window_ns, "tools": [
            {"tool": d.tool, "calls": d.observed.calls if d.observed else 0,
             "vs_pinned": [asdict(c) for c in d.vs_pinned], "vs_earlier": [asdict(c) for c in d.vs_earlier]}
            for d in report]})
        return
    out = _console()
    out.print(f"{name} {version.short_id}: tool output schemas over the last {window}", highlight=False)
    for d in report:
        calls = d.observed.calls if d.observed else 0
        if not d.changed:
            out.print(f"  = {d.tool}: {calls} calls, matches", highlight=False)
            continue
        out.print(f"  ! {d.tool}: {calls} calls", highlight=False)
        for label, changes in (("vs pinned", d.vs_pinned), ("vs the window before", d.vs_earlier)):
            for c in changes:
                ex = f" e.g. `proctor spans show {c.example_span[1]}`" if c.example_span else ""
                out.print(f"      {label}: {c.kind} {c.path} {c.before} -> {c.after}{ex}", highlight=False)


@agent_app.command("json-schema")
def json_schema() -> None:
    """Print the agent manifest's JSON Schema (for editor completion in agent.yaml)."""
    import sys

    from proctor.registry.manifest import render_schema

    sys.stdout.write(render_schema())
