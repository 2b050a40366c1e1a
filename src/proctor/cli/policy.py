"""``proctor policy``: lint, test, explain and backtest policy bundles before they ship.

Everything runs locally on bundle files (and, for ``backtest``, on the trace database); the
decisions come from the same engine the guard uses (:mod:`proctor.policy.engine`), and the
logic lives in :mod:`proctor.policy.testing` — this module reads options and prints.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from proctor.cli.output import fail as _fail
from proctor.cli.output import print_json as _print_json

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from proctor.policy.engine import PolicySet
    from proctor.policy.loader import Problem
    from proctor.policy.testing import Backtest, Explanation, RuleTrace

policy_app = typer.Typer(
    help="Check policy bundles before they ship: lint, test cases, explain a decision, backtest on traces.",
    no_args_is_help=True,
)

# soft wrap: a line too long for the terminal wraps there, not in the text (copyable, greppable)
console = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)

PolicyOpt = Annotated[
    list[Path] | None,
    typer.Option("--policy", "-p", envvar="PROCTOR_POLICY",
                 help="Bundle file or directory (repeatable; default: $PROCTOR_POLICY)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
DbOpt = Annotated[
    str | None,
    typer.Option("--db", envvar="PROCTOR_DATABASE_URL", help="Database URL (default: sqlite .proctor/proctor.db)."),
]

_EFFECT_STYLE = {"allow": "green", "warn": "yellow", "redact": "yellow", "require_approval": "bold yellow",
                 "deny": "bold red", "terminate_session": "bold red"}


def _plain(text: str) -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def _effect(effect: str | None) -> str:
    if not effect:
        return ""
    return f"[{_EFFECT_STYLE.get(effect, 'white')}]{effect}[/]"


def _problems_and_exit(problems: list[Problem], what: str) -> NoReturn:
    for p in problems:
        _plain(str(p))
    files = len({p.source for p in problems})
    _fail(f"{what}: {len(problems)} problem{'s' * (len(problems) != 1)} in {files} file{'s' * (files != 1)}")


def _load_policy(paths: list[Path] | None) -> PolicySet:
    from proctor.policy.engine import PolicySet
    from proctor.policy.loader import PolicyError, bundle_files, load_bundles

    if not paths:
        _fail("no policy: pass --policy FILE_OR_DIR (or set PROCTOR_POLICY)")
    if not bundle_files(paths):
        _fail(f"no bundle files (*.yaml, *.yml) in {', '.join(map(str, paths))}")
    try:
        return PolicySet(load_bundles(paths))
    except PolicyError as e:
        _problems_and_exit(e.problems, "invalid policy")


def _json_object(text: str | None, option: str) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as e:
        _fail(f"{option} is not JSON: {e}")
    if not isinstance(value, dict):
        _fail(f"{option} must be a JSON object, like '{{\"amount_usd\": 80}}'")
    return value


# ---------------------------------------------------------------------------------------------
@policy_app.command("lint")
def lint_cmd(
    paths: Annotated[list[Path], typer.Argument(help="Bundle files or directories (their *.yaml, *.yml).")],
    strict: Annotated[bool, typer.Option("--strict", help="Fail on warnings too.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Validate bundles: every problem as file:line, warnings for likely mistakes, a line per good bundle."""
    from proctor.policy.testing import lint, scope_text

    report = lint(paths)
    failed = bool(report.problems) or (strict and bool(report.warnings))
    if as_json:
        _print_json(report.to_dict())
        raise typer.Exit(1 if failed else 0)
    for p in report.problems:
        _plain(str(p))
    for w in report.warnings:
        console.print(escape(str(w)).replace("warning:", "[yellow]warning:[/]", 1), highlight=False, soft_wrap=True)
    if report.problems:
        files = len({p.source for p in report.problems})
        _fail(f"{len(report.problems)} problem{'s' * (len(report.problems) != 1)} in {files} "
              f"file{'s' * (files != 1)}; nothing was loaded")
    for b in report.bundles:
        mode = "" if b.mode == "enforce" else f"  [yellow]{b.mode}[/]"
        console.print(f"[green]ok[/]  [bold]{escape(b.ref)}[/]  {b.hash[:12]}  {len(b.rules)} rules  "
                      f"scope: {escape(scope_text(b))}{mode}  [dim]{escape(b.source)}[/]", highlight=False)
    n = len(report.warnings)
    if n:
        console.print(f"{n} warning{'s' * (n != 1)}", style="yellow")
    if failed:
        raise typer.Exit(1)


# ---------------------------------------------------------------------------------------------
@policy_app.command("test")
def test_cmd(
    cases_file: Annotated[Path, typer.Argument(help="A YAML file of cases (see examples/policies/*.cases.yaml).")],
    policy: Annotated[list[Path] | None, typer.Option(
        "--policy", "-p", help="Bundle file or directory (repeatable); overrides the file's `policy:`.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run each case through the policy and compare the decision with what it expects (like `opa test`)."""
    from proctor.policy.loader import PolicyError
    from proctor.policy.testing import load_cases, run_cases

    try:
        cf = load_cases(cases_file)
    except PolicyError as e:
        _problems_and_exit(e.problems, "invalid cases file")
    paths = list(policy or cf.policy)
    if not paths:
        _fail(f"{cases_file}: no policy: add `policy: [bundle.yaml]` to the file or pass --policy")
    ps = _load_policy(paths)
    results = run_cases(ps, cf.cases)
    failed = [r for r in results if not r.passed]
    if as_json:
        _print_json({
            "cases_file": str(cases_file), "policy": [b.ref for b in ps.bundles], "policy_hash": ps.hash,
            "passed": len(results) - len(failed), "failed": len(failed), "cases": [r.to_dict() for r in results],
        })
        raise typer.Exit(1 if failed else 0)
    width = min(max(len(r.case.name) for r in results), 50)
    for r in results:
        d = r.decision
        name = escape(r.case.name.ljust(width))
        got = f"{_effect(d.effect)} by {escape(d.rule_id or 'default')}"
        if d.shadow_effect:
            got += f" (shadow: {_effect(d.shadow_effect)})"
        if r.passed:
            console.print(f"[green]PASS[/]  {name}  {got}", highlight=False)
        else:
            console.print(f"[bold red]FAIL[/]  {name}  {escape('; '.join(r.failures))} — got {got}  "
                          f"[dim]{escape(r.case.source)}:{r.case.line}[/]", highlight=False)
    refs = ", ".join(b.ref for b in ps.bundles)
    summary = f"{len(results)} cases: {len(results) - len(failed)} passed, {len(failed)} failed"
    console.print(f"{summary} · policy {escape(refs)} ({ps.hash[:12]})",
                  style="bold red" if failed else "bold green", highlight=False)
    if failed:
        raise typer.Exit(1)


# ---------------------------------------------------------------------------------------------
@policy_app.command("explain")
def explain_cmd(
    policy: PolicyOpt = None,
    agent: Annotated[str | None, typer.Option(help="Agent name.")] = None,
    tool: Annotated[str | None, typer.Option(help="Tool about to be called.")] = None,
    args: Annotated[str | None, typer.Option("--args", help="Tool arguments as a JSON object.")] = None,
    env: Annotated[str | None, typer.Option("--env", help="Environment (prod, staging, ...).")] = None,
    label: Annotated[list[str] | None, typer.Option("--label", help="Session label KEY=VALUE (repeatable).")] = None,
    stage: Annotated[str | None, typer.Option(
        help="tool_call (default with --tool), llm_call (default with --model), tool_result, llm_output, input.")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model about to be called (llm_call).")] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", min=0, help="The call's max_tokens.")] = None,
    session: Annotated[str | None, typer.Option(
        help='Session counters visible to CEL as `session`, a JSON object: {"tool_calls": 12}.')] = None,
    content: Annotated[str | None, typer.Option(help="Content visible to CEL as `content`.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show how the policy decides one action: bundles in scope, side-effect class, tier, every rule and why."""
    from proctor.policy.model import STAGES, Action
    from proctor.policy.testing import explain, session_view

    stage = stage or ("tool_call" if tool else "llm_call" if model else None)
    if stage is None:
        _fail("say what the action is: --tool NAME (a tool call) or --model NAME (a model call)")
    if stage not in STAGES:
        _fail(f"--stage must be one of {', '.join(STAGES)}")
    if stage in ("tool_call", "tool_result") and not tool:
        _fail(f"a {stage} needs --tool")
    labels: dict[str, str] = {}
    for item in label or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _fail(f"--label takes KEY=VALUE, got {item!r}")
        labels[key] = value
    ps = _load_policy(policy)
    action = Action(stage, agent, env, labels, None, tool, _json_object(args, "--args"), model, max_tokens,
                    content, session_view(None, **_json_object(session, "--session")))
    ex = explain(ps, action)
    if as_json:
        _print_json(ex.to_dict())
        return
    _print_explanation(ex)


def _rule_name(ex: Explanation, r: RuleTrace) -> str:
    return f"{r.bundle}/{r.id}" if r.bundle and len(ex.bundles) > 1 else r.id


def _print_explanation(ex: Explanation) -> None:
    from proctor.policy.testing import scope_text, short_json

    a, d = ex.action, ex.decision
    who = f"{a.agent or '(no agent)'}" + (f" in {a.environment}" if a.environment else "")
    if a.labels:
        who += " " + ",".join(f"{k}={v}" for k, v in a.labels.items())
    if a.stage in ("tool_call", "tool_result"):
        what = f"{a.stage} {a.tool}({short_json(a.args, 100)})"
    else:
        what = f"{a.stage} {a.model or '(any model)'}" + (f" max_tokens={a.max_tokens}" if a.max_tokens else "")
    console.print(f"[bold]action[/]    {escape(what)} by {escape(who)}", highlight=False)
    for bt in ex.bundles:
        mark = "[green]✓[/]" if bt.applies else "[dim]✗[/]"
        mode = "" if bt.bundle.mode == "enforce" else " [yellow](shadow bundle)[/]"
        line = f"{mark} {escape(bt.bundle.ref)} {bt.bundle.hash[:12]}{mode}  "
        line += escape(bt.reason if not bt.applies else f"scope: {scope_text(bt.bundle)}")
        console.print(f"[bold]bundle[/]    {line}", highlight=False)
    if not any(bt.applies for bt in ex.bundles):
        console.print("[bold]bundle[/]    [yellow]no bundle applies: nothing governs this action[/]")
    t = ex.target
    if t["kind"] == "tool":
        extra = ", untrusted output" if t["untrusted_output"] else ""
        console.print(f"[bold]tool[/]      {escape(str(t['name']))}: [bold]{t['side_effect']}[/] "
                      f"[dim]({escape(t['from'])}{extra})[/]", highlight=False)
    tier = f"{ex.tier['tier']}: {ex.tier['effect']}"
    if "shadow_tier" in ex.tier:
        tier += f" [yellow](shadow bundles: {ex.tier['shadow_tier']})[/]"
    console.print(f"[bold]tier[/]      {tier}", highlight=False)
    if ex.rules:
        console.print("[bold]rules[/]")
        width = max(len(_rule_name(ex, r)) for r in ex.rules)
        for r in ex.rules:
            mark = {"matched": "[green]●[/]", "error": "[red]●[/]"}.get(r.status, "[dim]·[/]")
            result = {"matched": "matched", "error": "matched (condition error)", "not_matched": "not matched",
                      "skipped": "skipped", "stateful": "judged at run time"}[r.status]
            pad = " " * (len("terminate_session") - len(r.effect or r.rule_effect))
            if r.status in ("matched", "error"):
                effect = _effect(r.effect) + pad
                result = f"[bold]{result}[/]" if r.enforced else f"[yellow]{result}, shadow[/]"
            else:
                effect = f"[dim]{r.rule_effect}[/]{pad}"
                result = f"[dim]{result}[/]"
            if r.decided:
                result += " [bold]→ decides[/]"
            where = f"  [dim]line {r.line}[/]" if r.line else ""
            console.print(f"  {mark} {escape(_rule_name(ex, r).ljust(width))}  {effect}  {result}{where}",
                          highlight=False)
            console.print(f"      [dim]{escape(r.reason)}[/]", highlight=False)
    dflt = ex.default
    per = ", ".join(f"{k}: {v}" for k, v in dflt["by_bundle"].items())
    used = "applied: no rule decided" if dflt["applied"] else "not applied: a rule decided"
    console.print(f"[bold]default[/]   {_effect(dflt['effect'])} for {dflt['class']} "
                  f"[dim]({escape(per) or 'no bundle'}) — {used}[/]", highlight=False)
    by = d.rule_id or "the default"
    line = f"[bold]decision[/]  {_effect(d.effect)} by {escape(by)}"
    if d.message:
        line += f" — {escape(d.message)}"
    if d.shadow_effect:
        line += f"  [yellow](shadow rules would make it {d.shadow_effect})[/]"
    console.print(line, highlight=False)
    for note in ex.notes:
        console.print(f"[red]note[/]      {escape(note)}")


# ---------------------------------------------------------------------------------------------
@policy_app.command("backtest")
def backtest_cmd(
    policy: PolicyOpt = None,
    db: DbOpt = None,
    since: Annotated[str, typer.Option(help="Traces started at/after: ISO time, epoch s, or 15m/2h/7d ago.")] = "7d",
    agent: Annotated[str | None, typer.Option(help="Only this agent's calls.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Replay at most this many calls, newest traces first.")]
    = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=10, max=10_000,
                                            help="Rows read per query.")] = 1000,
    as_json: JsonOpt = False,
) -> None:
    """Replay stored tool and model calls through a candidate policy; list every decision that would change."""
    from proctor.core.timeparse import TimeParseError, parse_time_ns
    from proctor.policy.testing import Backtest
    from proctor.store import DatabaseURLError, open_engine

    ps = _load_policy(policy)
    try:
        since_ns = parse_time_ns(since)
    except TimeParseError as e:
        _fail(str(e))
    try:
        engine = open_engine(db)
    except DatabaseURLError as e:
        _fail(str(e))
    bt = Backtest(ps)
    t0 = time.monotonic()
    try:
        traces = _replay(engine, bt, since_ns=since_ns, agent=agent, limit=limit, batch_size=batch_size)
    finally:
        engine.dispose()
    if as_json:
        _print_json({**bt.to_dict(), "since": since, "since_ns": since_ns, "agent": agent, "traces": traces,
                     "seconds": round(time.monotonic() - t0, 3)})
        return
    _print_backtest(bt, traces, since, time.monotonic() - t0)


def _count_traces(engine: Engine, since_ns: int) -> int:
    from sqlalchemy import func, select

    from proctor.store.schema import traces as traces_t

    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(traces_t)
                                .where(traces_t.c.start_ns >= since_ns)).scalar() or 0)


def _call_rows(engine: Engine, *, since_ns: int, agent: str | None, batch_size: int
               ) -> Iterator[tuple[list[dict[str, Any]], int]]:
    """Pages of stored tool and LLM span rows, newest traces first: (rows, traces finished).

    Memory stays bounded: traces are paged by (start_ns, trace_id) on the trace list's index,
    and the spans of each page of traces in key order, ``batch_size`` rows at a time.
    """
    from sqlalchemy import and_, or_, select

    from proctor.policy.testing import SPAN_COLUMNS
    from proctor.store.schema import spans as spans_t
    from proctor.store.schema import traces as traces_t

    t, s = traces_t.c, spans_t.c
    trace_page = max(10, batch_size // 10)
    cols = [s[c] for c in SPAN_COLUMNS]
    last_trace: tuple[int, str] | None = None
    while True:
        q = select(t.trace_id, t.start_ns).where(t.start_ns >= since_ns)
        if last_trace is not None:
            q = q.where(or_(t.start_ns < last_trace[0], and_(t.start_ns == last_trace[0], t.trace_id < last_trace[1])))
        with engine.connect() as conn:
            page = conn.execute(q.order_by(t.start_ns.desc(), t.trace_id.desc()).limit(trace_page)).all()
        if not page:
            return
        ids = [r.trace_id for r in page]
        last_span: tuple[str, str] | None = None
        while True:
            sq = select(*cols).where(s.trace_id.in_(ids), s.kind.in_(("tool", "llm")))
            if agent:
                sq = sq.where(s.agent_name == agent)
            if last_span is not None:
                sq = sq.where(or_(s.trace_id > last_span[0], and_(s.trace_id == last_span[0],
                                                                   s.span_id > last_span[1])))
            with engine.connect() as conn:
                result = conn.execute(sq.order_by(s.trace_id, s.span_id).limit(batch_size))
                keys = list(result.keys())
                rows = [dict(zip(keys, row, strict=True)) for row in result]
            done = len(rows) < batch_size
            if rows:
                last_span = (rows[-1]["trace_id"], rows[-1]["span_id"])
            rows.sort(key=lambda r: (-r["start_ns"], r["span_id"]))  # newest first within the page
            yield rows, (len(ids) if done else 0)
            if done:
                break
        last_trace = (page[-1].start_ns, page[-1].trace_id)


def _replay(engine: Engine, bt: Backtest, *, since_ns: int, agent: str | None, limit: int | None,
            batch_size: int) -> int:
    """Feed stored calls to the backtest with a progress bar; return how many traces had calls replayed."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    total = _count_traces(engine, since_ns)
    traces = 0
    page_traces: set[str] = set()  # of the current page of traces: bounded by its size
    columns = (TextColumn("[bold]replaying"), BarColumn(), MofNCompleteColumn(), TextColumn("traces"),
               TextColumn("· {task.fields[calls]} calls · {task.fields[changed]} changed"), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as progress:
        task = progress.add_task("replay", total=total, calls=0, changed=0)
        for rows, finished in _call_rows(engine, since_ns=since_ns, agent=agent, batch_size=batch_size):
            room = None if limit is None else limit - bt.replayed - sum(bt.skipped.values())
            if room is not None:
                rows = rows[: max(0, room)]
            bt.add_rows(rows)
            page_traces.update(r["trace_id"] for r in rows)
            progress.update(task, advance=finished, calls=bt.replayed, changed=bt.changed)
            full = room is not None and room <= len(rows)
            if finished or full:
                traces += len(page_traces)
                page_traces.clear()
            if full:
                break
    return traces


def _print_backtest(bt: Backtest, traces: int, since: str, seconds: float) -> None:
    from proctor.policy.testing import short_json

    refs = ", ".join(b.ref for b in bt.policy.bundles)
    console.print(f"[bold]backtest[/] of {escape(refs)} ({bt.policy.hash[:12]}) on the calls of {traces} traces "
                  f"since {escape(since)}: {bt.replayed} replayed in {seconds:.1f}s, "
                  f"[bold]{bt.changed} would change[/]", highlight=False)
    if bt.skipped:
        skipped = ", ".join(f"{n} {why}" for why, n in bt.skipped.items())
        console.print(f"[dim]skipped: {escape(skipped)}[/]")
    if bt.session_dependent:
        console.print(f"[dim]{bt.session_dependent} calls met conditions on `session`, judged as at the start of "
                      "a session (counters at 0): a backtest replays calls one by one[/]")
    if bt.before_sources.get("assumed"):
        console.print(f"[dim]{bt.before_sources['assumed']} calls had no recorded decision: counted as allow "
                      "(they ran)[/]")
    if not bt.replayed:
        console.print("no tool or model calls in that window" + (" (try a longer --since)" if since else ""))
        return
    table = Table(header_style="bold", box=None, pad_edge=False, padding=(0, 1))
    table.add_column("before")
    table.add_column("")
    table.add_column("after")
    table.add_column("calls", justify="right")
    for row in bt.summary():
        mark = "[bold]changed[/]" if row["changed"] else "[dim]same[/]"
        table.add_row(_effect(row["before"]), "→", _effect(row["after"]), str(row["count"]), mark)
    console.print(table)
    if not bt.changes:
        return
    console.print("[bold]changes[/] (newest first)")
    for c in sorted(bt.changes, key=lambda c: -c.call.start_ns):
        call, d = c.call, c.after
        target = call.tool if call.stage == "tool_call" else call.model
        detail = short_json(call.args, 70) if call.stage == "tool_call" else (
            f"max_tokens={call.max_tokens}" if call.max_tokens is not None else "")
        console.print(f"  {_effect(call.before)} → {_effect(d.effect)}  [bold]{escape(d.rule_id or 'default')}[/]  "
                      f"{escape(call.agent or '-')}  {escape(target or '-')} {escape(detail)}", highlight=False)
        console.print(f"    [dim]trace {call.trace_id} span {call.span_id} · /traces/{call.trace_id} · "
                      f"proctor traces show {call.trace_id}[/]", highlight=False)


# ---------------------------------------------------------------------------------------------
@policy_app.command("schema")
def schema_cmd() -> None:
    """Print the JSON Schema of a policy bundle (docs/policy-bundle.schema.json)."""
    from proctor.policy.schema import render_schema

    sys.stdout.write(render_schema())
