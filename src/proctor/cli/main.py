"""The ``proctor`` command.

Commands that read traces work on the local database by default (``--db``,
``PROCTOR_DATABASE_URL``, or ``.proctor/proctor.db``) or on a running server with
``--url``/``PROCTOR_URL``. Every listing has ``--json`` for scripts.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from proctor.cli.agent import agent_app
from proctor.cli.alerts import alerts_app
from proctor.cli.governance import approvals_app, audit_app, decisions_app, kill_app
from proctor.cli.keys import auth_headers, keys_app
from proctor.cli.output import console
from proctor.cli.output import fail as _fail
from proctor.cli.output import print_json as _print_json
from proctor.cli.policy import policy_app

if TYPE_CHECKING:
    from proctor.store import TraceFilter

app = typer.Typer(
    name="proctor",
    help="Proctor: a self-hosted AgentOps control plane. Start with `proctor demo` or `proctor serve`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
traces_app = typer.Typer(help="List and open traces.", no_args_is_help=True)
sessions_app = typer.Typer(help="List and open sessions (conversations).", no_args_is_help=True)
spans_app = typer.Typer(help="Open one span in full.", no_args_is_help=True)
app.add_typer(traces_app, name="traces")
app.add_typer(sessions_app, name="sessions")
app.add_typer(spans_app, name="spans")
app.add_typer(policy_app, name="policy")
app.add_typer(approvals_app, name="approvals")
app.add_typer(kill_app, name="kill")
app.add_typer(audit_app, name="audit")
app.add_typer(decisions_app, name="decisions")
app.add_typer(agent_app, name="agent")
app.add_typer(alerts_app, name="alerts")
app.add_typer(keys_app, name="keys")


UrlOpt = Annotated[
    str | None,
    typer.Option("--url", envvar="PROCTOR_URL", help="Read from a running server (e.g. http://127.0.0.1:7070; sends $PROCTOR_API_KEY)."),
]
DbOpt = Annotated[
    str | None,
    typer.Option("--db", envvar="PROCTOR_DATABASE_URL", help="Database URL (default: sqlite .proctor/proctor.db)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


class _Source:
    """Where read commands get their data: the HTTP API or the database directly."""

    def __init__(self, url: str | None, db: str | None) -> None:
        self.url = url.rstrip("/") if url else None
        self.db = db
        self._store: Any = None

    def store(self) -> Any:
        if self._store is None:
            from proctor.store import DatabaseURLError, SpanStore, open_engine

            try:
                self._store = SpanStore(open_engine(self.db))
            except DatabaseURLError as exc:
                _fail(str(exc))
        return self._store

    def get(self, path: str, params: dict[str, Any], local: Any) -> dict[str, Any]:
        if self.url:
            import httpx

            clean = {k: v for k, v in params.items() if v is not None}
            try:
                r = httpx.get(self.url + path, params=clean, headers=auth_headers(), timeout=30)
            except httpx.HTTPError as exc:
                _fail(f"cannot reach {self.url}: {exc}")
            if r.status_code >= 400:
                try:
                    detail = r.json().get("detail")
                except ValueError:
                    detail = r.text
                _fail(f"{r.status_code}: {detail}")
            return r.json()
        from proctor.store import CursorError
        from proctor.traces import Ambiguous, NotFound

        try:
            return local(self.store())
        except (NotFound, Ambiguous, CursorError) as exc:
            _fail(str(exc))


def _filter(**kw: Any) -> TraceFilter:
    from proctor.core.timeparse import TimeParseError, parse_time_ns
    from proctor.store import TraceFilter

    try:
        return TraceFilter(
            since_ns=parse_time_ns(kw["since"]) if kw.get("since") else None,
            until_ns=parse_time_ns(kw["until"]) if kw.get("until") else None,
            agent=kw.get("agent"), version=kw.get("version"), status=kw.get("status"), tool=kw.get("tool"),
            model=kw.get("model"), session_id=kw.get("session"), min_cost_usd=kw.get("min_cost"),
            min_duration_ms=kw.get("min_duration_ms"), text=kw.get("q"), decision=kw.get("decision"),
        )
    except TimeParseError as exc:
        _fail(str(exc))


# ---------------------------------------------------------------------------------------------
@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind. Stays on loopback unless you say otherwise.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 7070,
    db: DbOpt = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
    workers: Annotated[int, typer.Option(
        min=1, max=64, envvar="PROCTOR_WORKERS",
        help="Server processes. More than 1 spreads ingest over more cores (~85 MiB each).")] = 1,
    policy: Annotated[list[str] | None, typer.Option(
        "--policy", help="Policy bundle file or directory for the decision API at /api/guard (repeatable; "
                         "default: PROCTOR_POLICY, paths separated by ':').")] = None,
    approval_webhook: Annotated[str | None, typer.Option(
        "--approval-webhook", envvar="PROCTOR_APPROVAL_WEBHOOK",
        help="URL told of every new approval (a Slack-compatible JSON POST).")] = None,
    alert_rules: Annotated[list[str] | None, typer.Option(
        "--alert-rules", help="Alert rule file or directory, evaluated on the live span stream (repeatable; "
                              "default: PROCTOR_ALERT_RULES, paths separated by ':'). See `proctor alerts --help`.")
    ] = None,
    allowed_host: Annotated[list[str] | None, typer.Option(
        "--allowed-host", help="A host name browsers may use to reach the console besides 127.0.0.1 and "
                               "localhost, e.g. proctor.internal (repeatable; '*' for any; default: "
                               "PROCTOR_ALLOWED_HOSTS, comma-separated). Guards against DNS rebinding.")
    ] = None,
) -> None:
    """Run the server: OTLP receiver at /v1/traces, REST API at /api, OpenAPI at /openapi.json,
    Prometheus metrics at /metrics."""
    import os

    from proctor.server.run import run_server
    from proctor.store import DatabaseURLError

    if workers > 1 and (policy or os.environ.get("PROCTOR_POLICY")):
        _fail("--policy needs --workers 1: the decision API keeps sessions and permits in the memory of "
              "one process")
    if workers > 1 and (alert_rules or os.environ.get("PROCTOR_ALERT_RULES")):
        _fail("--alert-rules needs --workers 1: each worker would see only the spans it ingests")
    if allowed_host:  # through the environment: --workers N builds each worker's app from it
        os.environ["PROCTOR_ALLOWED_HOSTS"] = ",".join(allowed_host)
    try:
        run_server(workers=workers, host=host, port=port, database_url=db, log_level=log_level,
                   announce=console.print, policy=policy or None, approval_webhook=approval_webhook,
                   alert_rules=alert_rules or None)
    except DatabaseURLError as exc:
        _fail(str(exc))
    except ValueError as exc:
        from proctor.policy import PolicyError  # not before: it loads the policy engine

        if not isinstance(exc, PolicyError):
            raise
        from proctor.telemetry.rules import AlertRulesError

        what = "the alert rules were" if isinstance(exc, AlertRulesError) else "the policy was"
        _fail(f"{what} refused:\n" + "\n".join(f"  {p}" for p in exc.problems))


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="TCP port for the server.")] = 7070,
    db: DbOpt = None,
    runs: Annotated[int, typer.Option(help="Agent runs to simulate before idling (0: keep going).")] = 24,
    serve_after: Annotated[bool, typer.Option("--serve/--no-serve", help="Keep serving after the fleet finishes.")] = True,
) -> None:
    """Start the server and a SIMULATED agent fleet (scripted fake model, real tools, a SQLite CRM)."""
    from proctor.demo.run import DemoError, run_demo

    try:
        run_demo(port=port, database_url=db, runs=runs, serve_after=serve_after, console=console)
    except DemoError as exc:
        _fail(str(exc))


# ---------------------------------------------------------------------------------------------
@traces_app.command("ls")
def traces_ls(
    url: UrlOpt = None,
    db: DbOpt = None,
    since: Annotated[str | None, typer.Option(help="Started at/after: ISO time, epoch s, or 15m/2h/7d ago.")] = None,
    until: Annotated[str | None, typer.Option(help="Started before (same forms).")] = None,
    agent: Annotated[str | None, typer.Option(help="Agent name.")] = None,
    version: Annotated[str | None, typer.Option(help="Agent version label or hash.")] = None,
    status: Annotated[str | None, typer.Option(help="ok or error.")] = None,
    tool: Annotated[str | None, typer.Option(help="A tool called in the trace.")] = None,
    model: Annotated[str | None, typer.Option(help="A model called in the trace.")] = None,
    session: Annotated[str | None, typer.Option(help="Session (conversation) id.")] = None,
    min_cost: Annotated[float | None, typer.Option(help="Minimum cost in USD.")] = None,
    min_duration_ms: Annotated[float | None, typer.Option(help="Minimum duration in ms.")] = None,
    q: Annotated[str | None, typer.Option("-q", "--query", help="Free text over span names and attributes.")] = None,
    decision: Annotated[str | None, typer.Option(
        help="Traces where policy acted: deny, terminate_session, require_approval, redact, warn, or any.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Traces per page.")] = 20,
    cursor: Annotated[str | None, typer.Option(help="Page cursor printed by the previous page.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List traces, newest first, with filters."""
    if status not in (None, "ok", "error"):
        _fail("--status takes ok or error")
    from proctor.store.spans import DECISION_FILTERS

    if decision is not None and decision not in DECISION_FILTERS:
        _fail(f"--decision takes one of {', '.join(DECISION_FILTERS)}")
    params = dict(
        since=since, until=until, agent=agent, version=version, status=status, tool=tool, model=model,
        session=session, min_cost=min_cost, min_duration_ms=min_duration_ms, q=q, decision=decision,
    )
    src = _Source(url, db)
    from proctor.traces import trace_list

    flt = _filter(**params)  # parsed here too, so a bad --since fails before any request
    doc = src.get("/api/traces", {**params, "limit": limit, "cursor": cursor},
                  lambda st: trace_list(st, flt, limit=limit, cursor=cursor))
    if as_json:
        _print_json(doc)
        return
    from proctor.cli.render import traces_table

    if not doc["traces"]:
        console.print("no traces match" + ("" if any(params.values()) else " (send some with `proctor demo`)"))
        return
    console.print(traces_table(doc, console.width))
    if doc.get("next_cursor"):
        console.print(f"[dim]more: proctor traces ls --cursor {doc['next_cursor']} (same filters)[/]")


@traces_app.command("show")
def traces_show(
    trace_id: Annotated[str, typer.Argument(help="Trace id, or a unique prefix (at least 4 characters).")],
    url: UrlOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one trace as a tree: kinds, timings, tokens, cost, tool-call links and errors."""
    from proctor.traces import trace_detail

    src = _Source(url, db)
    doc = src.get(f"/api/traces/{trace_id}", {}, lambda st: trace_detail(st, trace_id))
    if as_json:
        _print_json(doc)
        return
    from proctor.cli.render import trace_tree

    console.print(trace_tree(doc))


@spans_app.command("show")
def spans_show(
    span_id: Annotated[str, typer.Argument(help="Span id, or a unique prefix (at least 4 characters).")],
    url: UrlOpt = None,
    db: DbOpt = None,
) -> None:
    """Print one span in full as JSON: canonical fields, raw attributes, events, resource."""
    from proctor.traces import span_detail

    src = _Source(url, db)
    _print_json(src.get(f"/api/spans/{span_id}", {}, lambda st: span_detail(st, span_id)))


@sessions_app.command("ls")
def sessions_ls(
    url: UrlOpt = None,
    db: DbOpt = None,
    since: Annotated[str | None, typer.Option(help="Started at/after: ISO time, epoch s, or 15m/2h/7d ago.")] = None,
    agent: Annotated[str | None, typer.Option(help="Agent name.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    cursor: Annotated[str | None, typer.Option()] = None,
    as_json: JsonOpt = False,
) -> None:
    """List sessions (conversations), most recent first."""
    from proctor.traces import session_list

    src = _Source(url, db)
    flt = _filter(since=since, agent=agent)
    doc = src.get("/api/sessions", {"since": since, "agent": agent, "limit": limit, "cursor": cursor},
                  lambda st: session_list(st, flt, limit=limit, cursor=cursor))
    if as_json:
        _print_json(doc)
        return
    from rich.table import Table

    table = Table(header_style="bold")
    for col in ("session", "started (UTC)", "agent", "user", "traces", "spans", "errors", "cost"):
        table.add_column(col)
    for s in doc["sessions"]:
        table.add_row(
            s["session_id"], (s["start_time"] or "")[:19].replace("T", " "), s.get("agent_name") or "",
            s.get("user_id") or "", str(s["trace_count"]), str(s["span_count"]), str(s["error_count"]),
            f"${s['cost_usd']:.4f}",
        )
    console.print(table)
    if doc.get("next_cursor"):
        console.print(f"[dim]more: proctor sessions ls --cursor {doc['next_cursor']}[/]")


@sessions_app.command("show")
def sessions_show(
    session_id: Annotated[str, typer.Argument(help="Session id.")],
    url: UrlOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one session: its traces in order."""
    from proctor.traces import session_detail

    src = _Source(url, db)
    doc = src.get(f"/api/sessions/{session_id}", {}, lambda st: session_detail(st, session_id))
    if as_json:
        _print_json(doc)
        return
    from proctor.cli.render import traces_table

    console.print(
        f"[bold]session {session_id}[/] · {doc['trace_count']} traces · ${doc['cost_usd']:.4f} · "
        f"{doc['error_count']} errors"
    )
    console.print(traces_table({"traces": doc["traces"]}, console.width))


@app.command()
def stats(
    url: UrlOpt = None,
    db: DbOpt = None,
    since: Annotated[str | None, typer.Option(help="Started at/after: ISO time, epoch s, or 15m/2h/7d ago.")] = None,
    agent: Annotated[str | None, typer.Option(help="Agent name.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Counts, cost, tokens and p50/p95 durations, overall, by agent and by tool."""
    from proctor.traces import stats as stats_view

    src = _Source(url, db)
    flt = _filter(since=since, agent=agent)
    doc = src.get("/api/stats", {"since": since, "agent": agent}, lambda st: stats_view(st, flt))
    if as_json:
        _print_json(doc)
        return
    from proctor.cli.render import print_stats

    print_stats(console, doc)


@app.command()
def version() -> None:
    """Print Proctor's version."""
    from proctor import __version__

    console.print(__version__)


def main() -> None:  # pragma: no cover
    # Line-buffer stdout even when it is a pipe or a file (`make demo | tee`), so the URL and
    # progress show up as they happen, not when the process exits.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
