"""``proctor approvals``, ``proctor kill``, ``proctor audit``, ``proctor decisions``.

Governance from the terminal. Like the read commands, each works on the database directly
(``--db``, ``PROCTOR_DATABASE_URL``, or ``.proctor/proctor.db``) or through a running server
(``--url``/``PROCTOR_URL``), and every listing has ``--json``.

Output goes through :mod:`proctor.cli.output`, shared by every command.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from proctor.cli.keys import auth_headers
from proctor.cli.output import console
from proctor.cli.output import fail as _fail
from proctor.cli.output import print_json as _print_json

if TYPE_CHECKING:
    from rich.console import Console
    from sqlalchemy import Engine

approvals_app = typer.Typer(
    help="Human approvals: list the calls waiting for a decision, approve or deny them.",
    no_args_is_help=True,
)
kill_app = typer.Typer(
    help="""Kill switches: stop an agent, a session or every side effect, everywhere, within a second.

Scopes:

  global — every call of every agent is refused; sessions end

  agent:NAME — every call of agent NAME is refused; its sessions end

  session:ID — every call in session ID is refused; the session ends

  writes_off — side-effecting tools (write, external, irreversible) are refused; reads and model calls go on

  writes_off:agent:NAME — the same, for agent NAME only

  approvals_only — every side-effecting call needs a human's approval (alert containment sets it per agent)

  approvals_only:agent:NAME — the same, for agent NAME only

Example: proctor kill on agent:support-triage --reason "refund loop"
""",
    no_args_is_help=True,
)
audit_app = typer.Typer(help="Check the hash-chained decision log for tampering.", no_args_is_help=True)
decisions_app = typer.Typer(help="The decision log: what the guards decided, and why.", no_args_is_help=True)

UrlOpt = Annotated[
    str | None,
    typer.Option("--url", envvar="PROCTOR_URL", help="Use a running server (e.g. http://127.0.0.1:7070; sends $PROCTOR_API_KEY)."),
]
DbOpt = Annotated[
    str | None,
    typer.Option("--db", envvar="PROCTOR_DATABASE_URL", help="Database URL (default: sqlite .proctor/proctor.db)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
ByOpt = Annotated[str | None, typer.Option("--by", envvar="USER", show_envvar=False,
                                           help="Who decides (default: $USER, else your login name).")]

APPROVAL_STATUSES = ("pending", "approved", "denied", "expired", "consumed", "all")
EFFECTS = ("allow", "warn", "redact", "require_approval", "deny", "terminate_session")


def _console() -> Console:
    return console


def _when(ns: int | None) -> str:
    if not ns:
        return "-"
    return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


class _Source:
    """Where governance commands act: the HTTP API (``--url``) or the store (``--db``)."""

    def __init__(self, url: str | None, db: str | None) -> None:
        self.url = url.rstrip("/") if url else None
        self.db = db

    def call(self, method: str, path: str, local: Callable[[Engine], Any], *,
             params: dict[str, Any] | None = None, body: dict[str, Any] | None = None) -> Any:
        """``method path`` on the server, or ``local(engine)`` on the database. Errors (unknown
        id, already decided, unreachable server) end the command with a clear message."""
        if self.url:
            return self._http(method, path, params, body)
        from proctor.store import DatabaseURLError, open_engine
        from proctor.store.approvals import ApprovalError

        try:
            engine = open_engine(self.db)
        except DatabaseURLError as exc:
            _fail(str(exc))
        try:
            return local(engine)
        except (ApprovalError, ValueError) as exc:  # the stores' messages are meant for people
            _fail(str(exc))
        finally:
            engine.dispose()

    def _http(self, method: str, path: str, params: dict[str, Any] | None, body: dict[str, Any] | None) -> Any:
        import httpx

        base = self.url or ""
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            r = httpx.request(method, base + path, params=clean, json=body, headers=auth_headers(), timeout=30)
        except httpx.HTTPError as exc:
            _fail(f"cannot reach {base}: {exc}")
        if r.status_code >= 400:
            try:
                detail: Any = r.json().get("detail")
            except ValueError:
                detail = r.text
            if isinstance(detail, list):  # FastAPI validation errors
                detail = "; ".join(f"{'.'.join(map(str, e.get('loc', [])[1:]))}: {e.get('msg')}" for e in detail)
            _fail(f"{r.status_code}: {detail}")
        return r.json()


def _by(by: str | None) -> str:
    if by:
        return by
    import getpass

    try:
        return getpass.getuser()  # $LOGNAME, $USER, ... or the account name
    except (OSError, KeyError):
        _fail("say who decides with --by NAME (no user name to default to)")


# -- approvals ----------------------------------------------------------------------------------

def _approval_list(engine: Engine, status: str, limit: int) -> dict[str, Any]:
    from proctor.store.approvals import ApprovalStore

    store = ApprovalStore(engine)
    rows = store.list(None if status == "all" else status, limit=limit)
    return {"approvals": [a.to_dict() for a in rows], "pending": store.pending_count()}


@approvals_app.command("ls")
def approvals_ls(
    status: Annotated[str, typer.Option(
        help="pending (waiting, unexpired), approved, denied, expired, consumed (used), or all.")] = "pending",
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many, newest first.")] = 50,
    url: UrlOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List approvals, newest first (by default the ones waiting for a human)."""
    if status not in APPROVAL_STATUSES:
        _fail(f"--status takes {', '.join(APPROVAL_STATUSES)}; got {status!r}")
    doc = _Source(url, db).call("GET", "/api/approvals", lambda e: _approval_list(e, status, limit),
                                params={"status": status, "limit": limit})
    if as_json:
        _print_json(doc)
        return
    console = _console()
    if not doc["approvals"]:
        console.print(f"no {'' if status == 'all' else status + ' '}approvals")
        return
    from rich.table import Table

    table = Table(header_style="bold")
    for col in ("id", "requested (UTC)", "agent", "tool", "arguments", "rule", "status", "decided by"):
        table.add_column(col, no_wrap=True, overflow="ellipsis", min_width=32 if col == "id" else None,
                         max_width=40 if col == "arguments" else None)
    styles = {"pending": "bold yellow", "approved": "green", "consumed": "green", "denied": "red", "expired": "dim"}
    for a in doc["approvals"]:
        args = ", ".join(f"{k}={v!r}" for k, v in (a.get("arguments") or {}).items())
        table.add_row(a["id"], _when(a["requested_ns"]), a.get("agent") or "", a["tool"], args[:60],
                      a.get("rule_id") or "", f"[{styles.get(a['status'], '')}]{a['status']}[/]",
                      a.get("decided_by") or "")
    console.print(table)
    if status != "pending" and doc.get("pending"):
        console.print(f"[dim]{doc['pending']} pending: proctor approvals ls[/]")


@approvals_app.command("show")
def approvals_show(
    approval_id: Annotated[str, typer.Argument(help="Approval id (from `proctor approvals ls`).")],
    url: UrlOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one approval: the held call and its arguments, the rule, who decided and when."""
    from proctor.store.approvals import ApprovalStore

    a = _Source(url, db).call("GET", f"/api/approvals/{approval_id}",
                              lambda e: ApprovalStore(e).get(approval_id).to_dict())
    if as_json:
        _print_json(a)
        return
    import orjson

    console = _console()
    console.print(f"[bold]approval {a['id']}[/]  {a['status']}")
    rows = [
        ("call", f"{a['tool']} by {a.get('agent') or '?'} in session {a.get('session_id') or '?'}"),
        ("rule", f"{a.get('rule_id') or '?'}" + (f": {a['message']}" if a.get("message") else "")),
        ("requested", _when(a["requested_ns"]) + " UTC"),
        ("expires", _when(a["expires_ns"]) + " UTC" + (" (if nobody decides)" if a["status"] == "pending" else "")),
    ]
    if a.get("decided_by"):
        rows.append(("decided", f"{a['status'] if a['status'] != 'consumed' else 'approved'} by {a['decided_by']} "
                                f"at {_when(a['decided_ns'])} UTC" + (f": {a['decision_reason']}"
                                                                      if a.get("decision_reason") else "")))
    if a.get("consumed_ns"):
        rows.append(("used", _when(a["consumed_ns"]) + " UTC"))
    rows.append(("policy", a.get("policy_hash") or "?"))
    for k, v in rows:
        console.print(f"  [bold]{k:<10}[/] {v}", highlight=False)
    console.print("  [bold]arguments[/]")
    args = orjson.dumps(a.get("arguments") or {}, option=orjson.OPT_INDENT_2, default=str).decode()
    console.print("    " + args.replace("\n", "\n    "), highlight=False, markup=False)


def _decide(approval_id: str, approved: bool, by: str | None, reason: str, url: str | None, db: str | None,
            as_json: bool) -> None:
    from proctor.store.approvals import ApprovalStore

    who = _by(by)
    verb = "approve" if approved else "deny"
    a = _Source(url, db).call(
        "POST", f"/api/approvals/{approval_id}/{verb}",
        lambda e: ApprovalStore(e).decide(approval_id, approved=approved, by=who, reason=reason).to_dict(),
        body={"by": who, "reason": reason})
    if as_json:
        _print_json(a)
        return
    done = "[green]approved[/]" if approved else "[red]denied[/]"
    # with auth on, the server records the key's name, not --by
    _console().print(f"{done} {a['id']}: {a['tool']} for {a.get('agent') or '?'} (by {a.get('decided_by') or who}"
                     + (f": {reason})" if reason else ")"), highlight=False)


@approvals_app.command("approve")
def approvals_approve(
    approval_id: Annotated[str, typer.Argument(help="Approval id (from `proctor approvals ls`).")],
    by: ByOpt = None,
    reason: Annotated[str, typer.Option(help="Why; recorded with the decision.")] = "",
    url: UrlOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Approve a pending call: the agent's next attempt at exactly that call runs, once."""
    _decide(approval_id, True, by, reason, url, db, as_json)


@approvals_app.command("deny")
def approvals_deny(
    approval_id: Annotated[str, typer.Argument(help="Approval id (from `proctor approvals ls`).")],
    by: ByOpt = None,
    reason: Annotated[str, typer.Option(help="Why; recorded with the decision and shown to the agent.")] = "",
    url: UrlOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Deny a pending call."""
    _decide(approval_id, False, by, reason, url, db, as_json)


# -- kill switches ------------------------------------------------------------------------------

ScopeArg = Annotated[str, typer.Argument(
    help="global, agent:NAME, session:ID, writes_off[:agent:NAME] or approvals_only[:agent:NAME] "
         "(see `proctor kill --help`).")]


def _set_switch(scope: str, active: bool, by: str | None, reason: str, url: str | None, db: str | None) -> None:
    from proctor.store.killswitches import KillSwitches, validate_scope

    try:
        validate_scope(scope)
    except ValueError as exc:
        _fail(str(exc))
    who = _by(by)
    _Source(url, db).call(
        "POST", "/api/kill-switches",
        lambda e: KillSwitches(e).set(scope, active=active, by=who, reason=reason).to_dict(),
        body={"scope": scope, "active": active, "by": who, "reason": reason})
    state = "[bold red]ON[/]" if active else "[green]off[/]"
    note = " — running guards refuse within a second" if active else ""
    _console().print(f"kill switch {scope} is {state}{note}" + (f" ({reason})" if reason else ""), highlight=False)


@kill_app.command("on")
def kill_on(
    scope: ScopeArg,
    reason: Annotated[str, typer.Option(help="Why; shown to the agents refused and in the log.")] = "",
    by: Annotated[str | None, typer.Option("--by", envvar="USER", show_envvar=False,
                                           help="Who (default: $USER, else your login name).")] = None,
    url: UrlOpt = None,
    db: DbOpt = None,
) -> None:
    """Turn a kill switch on (scopes: global, agent:NAME, session:ID, writes_off[:agent:NAME], approvals_only[:agent:NAME])."""
    _set_switch(scope, True, by, reason, url, db)


@kill_app.command("off")
def kill_off(
    scope: ScopeArg,
    reason: Annotated[str, typer.Option(help="Why it is safe again.")] = "",
    by: Annotated[str | None, typer.Option("--by", envvar="USER", show_envvar=False,
                                           help="Who (default: $USER, else your login name).")] = None,
    url: UrlOpt = None,
    db: DbOpt = None,
) -> None:
    """Turn a kill switch off (sessions it already ended stay ended)."""
    _set_switch(scope, False, by, reason, url, db)


def _switch_list(engine: Engine) -> dict[str, Any]:
    from proctor.store.killswitches import KillSwitches

    switches = KillSwitches(engine).list()
    return {"kill_switches": [s.to_dict() for s in switches], "active": [s.scope for s in switches if s.active]}


@kill_app.command("ls")
def kill_ls(url: UrlOpt = None, db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """List kill switches, on and off, most recently changed first."""
    doc = _Source(url, db).call("GET", "/api/kill-switches", _switch_list)
    if as_json:
        _print_json(doc)
        return
    console = _console()
    if not doc["kill_switches"]:
        console.print("no kill switches set")
        return
    from rich.table import Table

    table = Table(header_style="bold")
    for col in ("scope", "state", "changed (UTC)", "by", "reason"):
        table.add_column(col)
    for s in doc["kill_switches"]:
        table.add_row(s["scope"], "[bold red]ON[/]" if s["active"] else "[green]off[/]", _when(s["updated_ns"]),
                      s["set_by"], s["reason"])
    console.print(table)


# -- the decision log ---------------------------------------------------------------------------

def _verify(engine: Engine) -> dict[str, Any]:
    from proctor.store.decisions import DecisionLog

    return DecisionLog(engine).verify().to_dict()


@audit_app.command("verify")
def audit_verify(url: UrlOpt = None, db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Recompute the decision log's hash chain. Exit 0 if intact; exit 1, naming each edited,
    deleted or inserted row, if not."""
    doc = _Source(url, db).call("GET", "/api/audit/verify", _verify)
    if as_json:
        _print_json(doc)
    elif doc["ok"]:
        _console().print(f"ok: {doc['checked']} decisions, chain intact")
    else:
        from proctor.cli.output import err

        err.print(f"[bold red]the decision log was tampered with[/] ({doc['checked']} decisions checked, "
                  f"first bad seq {doc['first_bad_seq']}):")
        for p in doc["problems"]:
            err.print(f"  {p}", highlight=False, markup=False)
    if not doc["ok"]:
        raise typer.Exit(1)


def _decision_list(engine: Engine, **kw: Any) -> dict[str, Any]:
    from proctor.store.decisions import DecisionLog

    rows = DecisionLog(engine).list(**kw)
    more = len(rows) == kw["limit"] and rows[-1]["seq"] > 1
    return {"decisions": rows, "next_before_seq": rows[-1]["seq"] if more else None}


@decisions_app.command("ls")
def decisions_ls(
    session: Annotated[str | None, typer.Option(help="Only this session.")] = None,
    effect: Annotated[str | None, typer.Option(help=f"Only this effect: {', '.join(EFFECTS)}.")] = None,
    trace: Annotated[str | None, typer.Option(help="Only decisions on this trace.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many, newest first.")] = 50,
    before: Annotated[int | None, typer.Option(min=1, help="Older than this seq (to page back).")] = None,
    url: UrlOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List guard decisions, newest first."""
    if effect is not None and effect not in EFFECTS:
        _fail(f"--effect takes {', '.join(EFFECTS)}; got {effect!r}")
    params = {"session_id": session, "effect": effect, "trace_id": trace, "limit": limit, "before_seq": before}
    doc = _Source(url, db).call("GET", "/api/decisions", lambda e: _decision_list(e, **params), params=params)
    if as_json:
        _print_json(doc)
        return
    console = _console()
    if not doc["decisions"]:
        console.print("no decisions match")
        return
    from rich.table import Table

    styles = {"allow": "green", "warn": "yellow", "redact": "yellow", "require_approval": "bold yellow",
              "deny": "red", "terminate_session": "bold red"}
    table = Table(header_style="bold")
    for col in ("seq", "time (UTC)", "session", "agent", "action", "target", "effect", "rule", "reason"):
        table.add_column(col, overflow="ellipsis", no_wrap=col != "reason")
    for d in doc["decisions"]:
        effect_text = f"[{styles.get(d['effect'], '')}]{d['effect']}[/]" + ("" if d["enforced"] else " [dim](shadow)[/]")
        table.add_row(str(d["seq"]), _when(d["ts_ns"]), d.get("session_id") or "", d.get("agent") or "",
                      d["action"], d.get("target") or "", effect_text, d.get("rule_id") or "default",
                      (d.get("reasons") or [""])[0])
    console.print(table)
    if doc.get("next_before_seq"):
        console.print(f"[dim]more: proctor decisions ls --before {doc['next_before_seq']} (same filters)[/]")


__all__ = ["approvals_app", "audit_app", "decisions_app", "kill_app"]
