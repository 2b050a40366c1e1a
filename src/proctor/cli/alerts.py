"""``proctor alerts``: the alert history, silences, and checking rule files before they ship.

``ls``, ``show``, ``silence``, ``silences`` and ``unsilence`` work on the database directly
(``--db``, ``PROCTOR_DATABASE_URL``, or ``.proctor/proctor.db``), where the server's alert engine
records every alert; a running server picks up a new or revoked silence within seconds. ``lint``
reads rule files only; ``test`` replays the spans and decisions stored in the database through
rule files, as the engine would have seen them live, and lists what would have fired.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from proctor.cli.output import fail as _fail
from proctor.cli.output import print_json as _print_json

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from proctor.policy.loader import Problem
    from proctor.store.alerts import AlertStore
    from proctor.telemetry.rules import RuleSet

alerts_app = typer.Typer(
    help="""Alerts raised by alert rules on the live stream: list and open them, silence them, and check
rule files (kind: AlertRules) before the server loads them.

  proctor alerts ls --status open                   what is pending or firing now

  proctor alerts show 3f9c                          one alert: evidence (traces) and its history

  proctor alerts silence --rule 'cost-*' --match agent=support --for 2h --comment "known incident"

  proctor alerts silences                           active silences; unsilence ID to lift one

  proctor alerts lint alerts/                       every problem as file:line

  proctor alerts test alerts/fleet.yaml --since 24h what would have fired on stored data
""",
    no_args_is_help=True,
)

# soft wrap: a line too long for the terminal wraps there, not in the text (copyable, greppable)
console = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)

DbOpt = Annotated[
    str | None,
    typer.Option("--db", envvar="PROCTOR_DATABASE_URL", help="Database URL (default: sqlite .proctor/proctor.db)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
RuleFiles = Annotated[list[Path], typer.Argument(help="Alert rule files or directories (their *.yaml, *.yml).")]

STATUSES = ("open", "pending", "firing", "resolved")
_STATUS_STYLE = {"pending": "yellow", "firing": "bold red", "resolved": "green"}
_SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}


# -- helpers ------------------------------------------------------------------------------------

def _engine(db: str | None) -> Engine:
    from proctor.store import DatabaseURLError, open_engine

    try:
        return open_engine(db)
    except DatabaseURLError as exc:
        _fail(str(exc))


def _store(engine: Engine) -> AlertStore:
    from proctor.store.alerts import AlertStore

    return AlertStore(engine)


def _when(ns: int | None) -> str:
    if not ns:
        return "-"
    return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _span(seconds: float) -> str:
    s = abs(seconds)
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{s / 60:.0f}m"
    if s < 86400:
        return f"{s / 3600:.1f}h".replace(".0h", "h")
    return f"{s / 86400:.1f}d".replace(".0d", "d")


def _ago(ns: int | None, now: int) -> str:
    if not ns:
        return "-"
    delta = (now - ns) / 1e9
    return f"{_span(delta)} ago" if delta >= 0 else f"in {_span(delta)}"


def _group(group: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in group.items()) or "-"


def _value(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def _styled(text: str, styles: dict[str, str]) -> str:
    style = styles.get(text)
    return f"[{style}]{escape(text)}[/]" if style else escape(text)


def _plain(text: str) -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def _problems_and_exit(problems: list[Problem], what: str) -> NoReturn:
    for p in problems:
        _plain(str(p))
    files = len({p.source for p in problems})
    _fail(f"{what}: {len(problems)} problem{'s' * (len(problems) != 1)} in {files} file{'s' * (files != 1)}")


def _load(paths: list[Path]) -> RuleSet:
    from proctor.telemetry.rules import AlertRulesError, load_rules, rule_files

    files = rule_files(paths)
    if not files:
        _fail(f"no rule files (*.yaml, *.yml) in {', '.join(map(str, paths))}")
    try:
        return load_rules(files)
    except AlertRulesError as exc:
        _problems_and_exit(exc.problems, "alert rules refused")


def _by(by: str | None) -> str:
    if by:
        return by
    import getpass

    try:
        return getpass.getuser()
    except (OSError, KeyError):
        _fail("say who silences with --by NAME (no user name to default to)")


# -- alerts -------------------------------------------------------------------------------------

@alerts_app.command("ls")
def alerts_ls(
    status: Annotated[str | None, typer.Option(
        help="open (pending or firing), pending, firing or resolved (default: all).")] = None,
    rule: Annotated[str | None, typer.Option(help="Only this rule's alerts (its id).")] = None,
    since: Annotated[str | None, typer.Option(
        help="Started at/after: ISO time, epoch s, or 15m/2h/7d ago.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many, newest first.")] = 50,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List alerts, newest first. Example: proctor alerts ls --status firing --since 1h"""
    from proctor.core.timeparse import TimeParseError, parse_time_ns
    from proctor.telemetry.service import alert_json

    if status is not None and status not in STATUSES:
        _fail(f"--status takes {', '.join(STATUSES)}; got {status!r}")
    try:
        since_ns = parse_time_ns(since) if since else None
    except TimeParseError as exc:
        _fail(str(exc))
    engine = _engine(db)
    try:
        rows = _store(engine).list(status=status, rule_id=rule, since_ns=since_ns, limit=limit)
    finally:
        engine.dispose()
    if as_json:
        _print_json({"alerts": [alert_json(a) for a in rows]})
        return
    if not rows:
        what = f"{status} alerts" if status else "alerts"
        console.print(f"no {what}" + (f" of rule {escape(rule)}" if rule else "")
                      + (f" since {escape(since)}" if since else ""))
        return
    from rich.table import Table

    now = time.time_ns()
    # columns that are empty for every row are left out: the rest get the room
    cols = ["id", "rule", "status", "severity", "group", "value", "started (UTC)", "fired"]
    cols += [name for name, used in (("resolved", any(a.resolved_ns for a in rows)),
                                     ("action", any(a.action for a in rows)),
                                     ("silenced", any(a.silenced_by for a in rows))) if used]
    table = Table(header_style="bold", box=None, pad_edge=False, padding=(0, 1))
    for col in cols:
        table.add_column(col, no_wrap=True, overflow="ellipsis", justify="right" if col == "value" else "left")
    for a in rows:
        started = dt.datetime.fromtimestamp(a.started_ns / 1e9, tz=dt.UTC).strftime("%m-%d %H:%M:%S")
        cells = {"id": a.id[:8], "rule": escape(a.rule_id), "status": _styled(a.status, _STATUS_STYLE),
                 "severity": _styled(a.severity, _SEVERITY_STYLE), "group": escape(_group(a.group)),
                 "value": _value(a.value), "started (UTC)": started, "fired": _ago(a.fired_ns, now),
                 "resolved": _ago(a.resolved_ns, now), "action": escape((a.action or "").split(":")[0]),
                 "silenced": escape((a.silenced_by or "")[:8])}
        table.add_row(*(cells[c] for c in cols))
    console.print(table)
    console.print(f"[dim]{len(rows)} alert{'s' * (len(rows) != 1)}; open one with: proctor alerts show ID[/]")


@alerts_app.command("show")
def alerts_show(
    alert_id: Annotated[str, typer.Argument(help="Alert id, or a unique prefix (at least 4 characters).")],
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one alert: what fired and why, its evidence (traces to open), and its history in order."""
    from proctor.telemetry.service import alert_json

    if not alert_id.replace("-", "").isalnum():  # ids are hex: % or _ would be LIKE wildcards
        _fail(f"not an alert id: {alert_id!r}")
    engine = _engine(db)
    try:
        store = _store(engine)
        rec = store.get(alert_id)
        if rec is None:
            _fail(f"no alert {alert_id!r} (or the prefix is not unique): see `proctor alerts ls`")
        events = store.events(rec.id)
    finally:
        engine.dispose()
    if as_json:
        _print_json({**alert_json(rec), "events": events})
        return
    now = time.time_ns()
    console.print(f"[bold]alert {rec.id}[/]  {_styled(rec.status, _STATUS_STYLE)}  "
                  f"{_styled(rec.severity, _SEVERITY_STYLE)}")
    rows = [
        ("rule", escape(rec.rule_id)),
        ("summary", escape(rec.summary)),
        ("group", escape(_group(rec.group))),
        ("value", _value(rec.value)),
        ("started", f"{_when(rec.started_ns)} UTC ({_ago(rec.started_ns, now)})"),
    ]
    if rec.fired_ns:
        rows.append(("fired", f"{_when(rec.fired_ns)} UTC ({_ago(rec.fired_ns, now)})"))
    if rec.resolved_ns:
        rows.append(("resolved", f"{_when(rec.resolved_ns)} UTC ({_ago(rec.resolved_ns, now)})"))
    if rec.action:
        rows.append(("action", escape(rec.action)))
    if rec.silenced_by:
        rows.append(("silenced", f"by silence {escape(rec.silenced_by)} (notifications muted)"))
    labels = {k: v for k, v in rec.labels.items()}
    if labels:
        rows.append(("labels", escape(" ".join(f"{k}={v}" for k, v in labels.items()))))
    for k, v in rows:
        console.print(f"  [bold]{k:<9}[/] {v}")
    traces = rec.evidence.get("trace_ids") or []
    decisions = rec.evidence.get("decision_ids") or []
    console.print("  [bold]evidence[/]" + ("" if traces or decisions else " none recorded"))
    for t in traces:
        console.print(f"    trace {escape(t)}  [dim]proctor traces show {escape(t)}[/]")
    for d in decisions:
        console.print(f"    decision {escape(d)}  [dim]proctor decisions ls[/]")
    console.print("  [bold]events[/]" + ("" if events else " none"))
    for e in events:
        detail = {k: v for k, v in (e.get("detail") or {}).items() if v is not None}
        text = " ".join(f"{k}={v}" for k, v in detail.items())
        kind = _styled(e["kind"], _STATUS_STYLE) + " " * max(0, 13 - len(e["kind"]))
        console.print(f"    {_when(e['ts_ns'])}  {kind} {escape(text)}")


# -- silences -----------------------------------------------------------------------------------

@alerts_app.command("silence")
def alerts_silence(
    for_: Annotated[str, typer.Option("--for", help="How long: 30m, 2h, 1d.")],
    comment: Annotated[str, typer.Option(help="Why (shown with the silence).")],
    rule: Annotated[str | None, typer.Option(help="Rule id, or a glob on it (cost-*).")] = None,
    match: Annotated[list[str] | None, typer.Option(
        "--match", help="KEY=VALUE: the alert's group or label must have this value (agent=support; "
                        "repeatable, all must match).")] = None,
    by: Annotated[str | None, typer.Option("--by", envvar="USER", show_envvar=False,
                                           help="Who silences (default: $USER, else your login name).")] = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Mute notifications of matching alerts for a while (they are still recorded and contained).

    Example: proctor alerts silence --rule 'cost-*' --match agent=support --for 2h --comment "known spike"
    """
    from proctor.core.timeparse import parse_duration_s

    matchers: dict[str, str] = {}
    if rule:
        matchers["rule"] = rule
    for m in match or []:
        key, sep, value = m.partition("=")
        if not sep or not key.strip():
            _fail(f"--match takes KEY=VALUE (e.g. agent=support), got {m!r}")
        if key.strip() == "rule":
            _fail("use --rule for the rule id")
        matchers[key.strip()] = value
    if not matchers:
        _fail("say what to silence: --rule GLOB and/or --match KEY=VALUE")
    try:
        duration_s = parse_duration_s(for_)
    except ValueError as exc:
        _fail(f"--for: {exc}")
    if duration_s <= 0:
        _fail("--for must be longer than 0 (e.g. 1h)")
    who = _by(by)
    engine = _engine(db)
    try:
        s = _store(engine).add_silence(matchers, duration_s=duration_s, comment=comment, by=who)
    except ValueError as exc:
        _fail(str(exc))
    finally:
        engine.dispose()
    from proctor.server.alerts import silence_json

    if as_json:
        _print_json(silence_json(s))
        return
    console.print(f"[bold]silenced[/] {escape(_group(s.matchers))} until {_when(s.expires_ns)} UTC "
                  f"(silence {s.id}); a running server applies it within seconds")
    console.print(f"[dim]lift it with: proctor alerts unsilence {s.id}[/]")


@alerts_app.command("silences")
def alerts_silences(
    show_all: Annotated[bool, typer.Option("--all", help="Expired and revoked ones too.")] = False,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List silences, newest first (by default the active ones)."""
    from proctor.server.alerts import silence_json

    now = time.time_ns()
    engine = _engine(db)
    try:
        store = _store(engine)
        rows = store.silences() if show_all else store.silences(active_at=now)
    finally:
        engine.dispose()
    docs = [silence_json(s, now) for s in rows]
    if as_json:
        _print_json({"silences": docs})
        return
    if not docs:
        console.print("no silences" if show_all else "no active silences (--all for expired and revoked ones)")
        return
    from rich.table import Table

    table = Table(header_style="bold")
    for col in ("id", "matchers", "state", "expires", "by", "comment"):
        table.add_column(col, no_wrap=col in ("id", "state"), overflow="fold")
    styles = {"active": "bold yellow", "expired": "dim", "revoked": "dim"}
    for d in docs:
        end = d["revoked_ns"] or d["expires_ns"]
        table.add_row(d["id"], escape(_group(d["matchers"])), _styled(d["state"], styles),
                      f"{_when(end)} ({_ago(end, now)})", escape(d["created_by"]), escape(d["comment"]))
    console.print(table)


@alerts_app.command("unsilence")
def alerts_unsilence(
    silence_id: Annotated[str, typer.Argument(help="Silence id (or a unique prefix, from `proctor alerts silences`).")],
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke a silence: matching alerts notify again from now on."""
    from proctor.server.alerts import silence_json

    engine = _engine(db)
    try:
        store = _store(engine)
        target = silence_id
        if len(silence_id) >= 4:  # a unique prefix will do
            ids = [s.id for s in store.silences() if s.id.startswith(silence_id)]
            if silence_id not in ids and len(ids) > 1:
                _fail(f"{silence_id!r} matches {len(ids)} silences: give more of the id")
            if silence_id not in ids and len(ids) == 1:
                target = ids[0]
        s = store.revoke_silence(target)
    finally:
        engine.dispose()
    if s is None:
        _fail(f"no silence {silence_id!r}: see `proctor alerts silences --all`")
    if as_json:
        _print_json(silence_json(s))
        return
    console.print(f"[green]revoked[/] silence {s.id} ({escape(_group(s.matchers))})")


# -- rule files ---------------------------------------------------------------------------------

@alerts_app.command("lint")
def alerts_lint(
    paths: RuleFiles,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Validate alert rule files: every problem as file:line: where: message (exit 1), else one line
    per rule. Example: proctor alerts lint alerts/"""
    from proctor.telemetry.rules import AlertRulesError, load_rules, rule_files

    files = rule_files(paths)
    if not files:
        _fail(f"no rule files (*.yaml, *.yml) in {', '.join(map(str, paths))}")
    try:
        rules = load_rules(files)
    except AlertRulesError as exc:
        if as_json:
            _print_json({"valid": False, "problems": [
                {"source": p.source, "line": p.line, "where": p.where, "message": p.message} for p in exc.problems]})
            raise typer.Exit(1) from None
        _problems_and_exit(exc.problems, "alert rules refused")
    if as_json:
        _print_json({"valid": True, "rules": [r.to_dict() for r in rules.rules], "sources": rules.sources,
                     "hash": rules.hash, "notifiers": [{"id": n["id"], "type": n["type"]} for n in rules.notifiers]})
        return
    for r in rules.rules:
        extra = f"  action: {r.action}" if r.action else ""
        notify = ", ".join(r.notify) or "nobody"
        console.print(f"[green]ok[/]  [bold]{escape(r.id)}[/]  {r.signal}  when {escape(r.when.source)}  "
                      f"{_styled(r.severity, _SEVERITY_STYLE)}  → {escape(notify)}{escape(extra)}  "
                      f"[dim]{escape(r.source)}:{r.line}[/]")
    n = len(rules.rules)
    console.print(f"{n} rule{'s' * (n != 1)} OK in {len(rules.sources)} file{'s' * (len(rules.sources) != 1)} "
                  f"({rules.hash[:12]})")


def _count_events(engine: Engine, since_ns: int, until_ns: int) -> int:
    from sqlalchemy import func, select

    from proctor.store.schema import decisions as decisions_t
    from proctor.store.schema import spans as spans_t

    with engine.connect() as conn:
        spans = conn.execute(select(func.count()).select_from(spans_t).where(
            spans_t.c.end_ns > since_ns, spans_t.c.end_ns <= until_ns)).scalar() or 0
        decisions = conn.execute(select(func.count()).select_from(decisions_t).where(
            decisions_t.c.ts_ns > since_ns, decisions_t.c.ts_ns <= until_ns)).scalar() or 0
    return int(spans) + int(decisions)


@alerts_app.command("test")
def alerts_test(
    paths: RuleFiles,
    since: Annotated[str, typer.Option(help="Replay from: ISO time, epoch s, or 15m/2h/7d ago.")] = "1h",
    until: Annotated[str | None, typer.Option(help="Replay until (same forms; default: now).")] = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Replay stored spans and decisions through rule files, in event time, and list what would have
    fired. Nothing is stored or sent. Example: proctor alerts test alerts/fleet.yaml --since 24h"""
    from proctor.core.timeparse import TimeParseError, parse_time_ns
    from proctor.telemetry.service import replay

    rules = _load(paths)
    now = time.time_ns()
    try:
        since_ns = parse_time_ns(since, now_ns=now)
        until_ns = parse_time_ns(until, now_ns=now) if until else now
    except TimeParseError as exc:
        _fail(str(exc))
    if until_ns <= since_ns:
        _fail("--until must be after --since")
    engine = _engine(db)
    t0 = time.monotonic()
    try:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        total = _count_events(engine, since_ns, until_ns) if err.is_terminal else None
        columns = (TextColumn("[bold]replaying"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("spans and decisions"), TimeElapsedColumn())
        with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as progress:
            task = progress.add_task("replay", total=total)
            result = replay(rules, engine, since_ns, until_ns,
                            progress=lambda n: progress.update(task, completed=n))
    finally:
        engine.dispose()
    seconds = time.monotonic() - t0
    polled = sorted({r.signal for r in rules.rules} & {"budget", "approval_backlog", "ingest_stalled"})
    if as_json:
        _print_json({**result.to_dict(), "rules": len(rules.rules), "seconds": round(seconds, 3),
                     "not_replayed_signals": polled})
        return
    if result.fired:
        from rich.table import Table

        table = Table(header_style="bold")
        for col in ("rule", "group", "value", "fired (UTC)", "resolved", "summary", "evidence"):
            table.add_column(col, overflow="fold", no_wrap=col == "fired (UTC)",
                             justify="right" if col == "value" else "left")
        for a in result.fired:
            traces = a.evidence.get("trace_ids") or []
            decisions = a.evidence.get("decision_ids") or []
            evidence = f"trace {traces[-1]}" if traces else f"decision {decisions[-1]}" if decisions else "-"
            resolved = "-" if not a.resolved_ns else f"after {_span((a.resolved_ns - (a.fired_ns or 0)) / 1e9)}"
            table.add_row(escape(a.rule_id), escape(_group(a.group)), _value(a.value), _when(a.fired_ns), resolved,
                          escape(a.summary), escape(evidence))
        console.print(table)
    n = len(result.fired)
    console.print(f"replayed {result.spans} span{'s' * (result.spans != 1)} and {result.decisions} "
                  f"decision{'s' * (result.decisions != 1)} from {_when(since_ns)} to {_when(until_ns)} UTC "
                  f"through {len(rules.rules)} rule{'s' * (len(rules.rules) != 1)} in {seconds:.1f}s: "
                  f"[bold]{n} alert{'s' * (n != 1)} would have fired[/]")
    if result.fired:
        first = [t for a in result.fired for t in (a.evidence.get("trace_ids") or [])[-1:]]
        if first:
            console.print(f"[dim]open the evidence: proctor traces show {first[0]}[/]")
    if result.condition_errors:
        console.print(f"[yellow]{result.condition_errors} condition evaluations failed[/] (a missing variable "
                      "or a type error counts as not holding)")
    if polled:
        console.print(f"[dim]not replayed (polled live, not stored): {', '.join(polled)}[/]")
    if not result.spans and not result.decisions:
        console.print("[dim]nothing stored in that window: try a longer --since[/]")
