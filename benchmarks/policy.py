"""Policy decision latency, guard overhead per tool call, and each scanner on its own.

    .venv/bin/python benchmarks/policy.py [--decisions 20000] [--calls 5000] [--json]

Prints one table per part:

1. decisions: PolicySet.evaluate (tool rules, CEL conditions, tiers, defaults) for bundles of
   10, 100 and 1,000 rules, over a mix of tool calls; p50/p99/mean in µs.
2. guard: Guard.check_tool + Guard.tool_result per tool call on the 100-rule bundle, with loop
   detectors and a rate limit but no content scanners and no budgets; the decision log is on
   (appended by its writer thread). Then the same through ``@proctor.tool`` inside a session,
   against the bare decorator, to show what the guard adds to an SDK tool call.
3. budgets: one reserve + settle round trip (an atomic counter update in the store) on SQLite
   and on PostgreSQL (if reachable).
4. scanners: PII (Presidio, pattern recognizers on a blank spaCy pipeline), secrets
   (detect-secrets), injection heuristics, and the taint check — each alone on ~1 KB and ~20 KB.

Not a timed test: the numbers depend on the machine; the README quotes a run with its date.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine_info
from proctor.policy import Action, PolicySet, load_bundle_text

PG_URL = os.environ.get("PROCTOR_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def make_bundle(n_rules: int, seed: int = 7) -> tuple[str, list[str]]:
    """A synthetic but realistic bundle: a tool catalogue, per-tool rules with CEL conditions
    over arguments, some glob rules over families of tools, and a default-deny for writes."""
    rnd = random.Random(seed)
    n_tools = max(5, n_rules // 5)
    families = ["crm", "billing", "tickets", "mail", "files", "search", "deploy", "db"]
    tools = [f"{families[i % len(families)]}.op{i}" for i in range(n_tools)]
    side = ["read", "write", "external", "irreversible"]
    lines = [
        "apiVersion: proctor/v1",
        "kind: PolicyBundle",
        f"metadata: {{name: bench-{n_rules}, version: '1'}}",
        "spec:",
        "  default_effect: {read: allow, write: deny, external: deny, irreversible: deny}",
        "  tools:",
    ]
    for i, t in enumerate(tools):
        lines.append(f"    - {{name: '{t}', side_effect: {side[i % 4]}}}")
    lines.append("  rules:")
    conds = [
        "args.amount_usd <= {v}",
        "args.amount_usd > {v}",
        "args.count < {v} && args.region == 'eu'",
        "size(args.recipients) <= {v}",
        "args.path.startsWith('/tmp/') || args.count == {v}",
        "session.tool_calls < {v}",
    ]
    effects = ["allow", "allow", "deny", "require_approval", "warn", "allow"]
    for r in range(n_rules):
        if r % 10 == 9:  # a family-wide glob rule
            fam = families[r % len(families)]
            lines.append(f"    - {{id: r{r}, tools: '{fam}.*', side_effects: [irreversible], effect: require_approval}}")
            continue
        t = tools[r % n_tools]
        c = conds[r % len(conds)].format(v=rnd.randint(5, 500))
        lines.append(f"    - {{id: r{r}, tools: '{t}', when: \"{c}\", effect: {effects[r % len(effects)]}}}")
    return "\n".join(lines) + "\n", tools


def sample_args(rnd: random.Random) -> dict[str, Any]:
    return {
        "amount_usd": rnd.randint(1, 600),
        "count": rnd.randint(1, 600),
        "region": rnd.choice(["eu", "us"]),
        "recipients": ["a@corp.example"] * rnd.randint(0, 5),
        "path": rnd.choice(["/tmp/x", "/etc/passwd"]),
        "note": "customer asked twice about the invoice for order 1182",
    }


def percentiles(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    return {
        "p50_us": round(s[len(s) // 2] * 1e6, 1),
        "p99_us": round(s[int(len(s) * 0.99)] * 1e6, 1),
        "mean_us": round(statistics.fmean(s) * 1e6, 1),
    }


def time_each(fn: Callable[[int], Any], n: int) -> list[float]:
    out = []
    clock = time.perf_counter
    for i in range(n):
        t0 = clock()
        fn(i)
        out.append(clock() - t0)
    return out


def bench_decisions(n: int) -> list[dict[str, Any]]:
    rows = []
    for n_rules in (10, 100, 1000):
        text, tools = make_bundle(n_rules)
        ps = PolicySet(load_bundle_text(text))
        rnd = random.Random(1)
        actions = [Action("tool_call", agent="bench", tool=rnd.choice(tools), args=sample_args(rnd),
                          session={"tool_calls": rnd.randint(0, 50)}) for _ in range(2000)]
        for a in actions[:500]:  # warm the per-tool caches, as a running guard has them
            ps.evaluate(a)
        samples = time_each(lambda i, ps=ps, actions=actions: ps.evaluate(actions[i % len(actions)]), n)
        rows.append({"rules": n_rules, "tools": len(tools), **percentiles(samples)})
    return rows


def bench_guard(n: int, tmp: Path) -> list[dict[str, Any]]:
    from proctor.guard import Guard, PolicyViolation
    from proctor.store.engine import open_engine

    text, tools = make_bundle(100)
    text += (
        "    - {id: loop-repeat, kind: loop, detector: repeat, threshold: 50, window: 20, effect: warn}\n"
        "    - {id: loop-flip, kind: loop, detector: oscillation, threshold: 20, effect: warn}\n"
        "    - {id: storm, kind: loop, detector: error_storm, threshold: 50, window: 20, effect: warn}\n"
        "    - {id: rate, kind: rate_limit, per: agent, capacity: 1000000, refill_per_second: 1000, effect: deny}\n"
    )
    path = tmp / "bench.yaml"
    path.write_text(text)
    engine = open_engine(f"sqlite:///{tmp / 'guard.db'}")
    g = Guard(path, engine, watch_kill_switches=True)
    rnd = random.Random(2)
    reads = [t for i, t in enumerate(tools) if i % 4 == 0]
    calls = [(rnd.choice(reads), sample_args(rnd)) for _ in range(1000)]
    rows = []

    def one(i: int) -> None:
        tool, args = calls[i % len(calls)]
        gs = g.session(f"s{i // 200}", agent="bench")
        try:
            permit = g.check_tool(gs, tool, args)
        except PolicyViolation:
            return
        g.tool_result(permit, {"ok": True, "i": i})

    for i in range(500):
        one(i)
    samples = time_each(one, n)
    rows.append({"path": "Guard.check_tool + tool_result (100 rules, loops, rate limit)", **percentiles(samples)})
    g.flush()

    # through the SDK: @proctor.tool in a session, guard on vs off
    import proctor
    from proctor.sdk import governance

    proctor.init(database_url=f"sqlite:///{tmp / 'sdk.db'}", instrument=False, set_global=False)

    @proctor.tool(name=reads[0])
    def lookup(amount_usd: int, count: int, region: str, recipients: list[str], path: str, note: str) -> dict:
        return {"ok": True}

    args = calls[0][1]
    for label, guard_on in (("@proctor.tool in a session, no guard", False),
                            ("@proctor.tool in a session, guard on", True)):
        governance.use_guard(g if guard_on else None)
        with proctor.session(agent="bench", session_id=f"sdk-{guard_on}", span=False):
            for _ in range(300):
                lookup(**args)
            samples = time_each(lambda i: lookup(**args), n)
        rows.append({"path": label, **percentiles(samples)})
    governance.use_guard(None)
    proctor.shutdown()
    g.close()
    return rows


def bench_budgets(n: int, tmp: Path) -> list[dict[str, Any]]:
    from sqlalchemy import text as sql

    from proctor.store.budgets import BudgetLedger
    from proctor.store.engine import open_engine

    rows = []
    urls = [("sqlite", f"sqlite:///{tmp / 'budget.db'}")]
    schema = f"bench_{os.getpid()}"
    try:
        from sqlalchemy import create_engine

        admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        urls.append(("postgresql", f"{PG_URL}?options=-csearch_path%3D{schema}"))
    except Exception as e:  # no PostgreSQL here: report SQLite only
        print(f"(PostgreSQL not reachable: {e})", file=sys.stderr)
        admin = None
    for name, url in urls:
        engine = open_engine(url)
        ledger = BudgetLedger(engine)
        part = ("session:bench|b", "usd")
        limits = {part: 1e12}

        def one(i: int, ledger: BudgetLedger = ledger, part: tuple[str, str] = part,
                limits: dict[tuple[str, str], float] = limits) -> None:
            res = ledger.reserve({part: 0.01}, limits=limits)
            ledger.settle(res, {part: 0.005})  # type: ignore[arg-type]

        for i in range(20):
            one(i)
        samples = time_each(one, n)
        rows.append({"engine": name, "op": "reserve + settle", **percentiles(samples)})
        engine.dispose()
    if admin is not None:
        with admin.connect() as c:
            c.execute(sql(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
    return rows


def bench_scanners(n: int) -> list[dict[str, Any]]:
    from proctor.detectors import InjectionScanner, PiiScanner, SecretScanner, TaintTracker

    para = ("Hello, my order 1182 arrived damaged. Please refund it to the card on file or call me on "
            "+1 415 555 0100. My colleague jane.doe@example.com can confirm. Thanks for the quick help! ")
    texts = {"1 KB": (para * 8)[:1024], "20 KB": (para * 120)[:20480]}
    t0 = time.perf_counter()
    pii = PiiScanner()
    pii.scan("warm up")
    build_s = time.perf_counter() - t0
    scanners: list[tuple[str, Any]] = [("pii (presidio)", pii), ("secrets (detect-secrets)", SecretScanner()),
                                       ("injection (heuristics)", InjectionScanner())]
    rows = []
    for name, sc in scanners:
        for size, text in texts.items():
            sc.scan(text)
            reps = max(20, n // (20 if size == "20 KB" else 4))
            samples = time_each(lambda i, sc=sc, text=text: sc.scan(text), reps)
            rows.append({"scanner": name, "input": size, **percentiles(samples)})
    tracker = TaintTracker()
    tracker.observe("tool:fetch_ticket", texts["20 KB"])
    args = {"to": "someone@corp.example", "subject": "your refund", "body": texts["1 KB"]}
    samples = time_each(lambda i: tracker.check(args), max(50, n // 4))
    rows.append({"scanner": "taint check (args ~1 KB)", "input": "1 KB", **percentiles(samples)})
    rows.append({"scanner": "pii engine construction (once per process)", "input": "-",
                 "p50_us": round(build_s * 1e6), "p99_us": None, "mean_us": None})
    return rows


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    print(f"\n{title}")
    print("  ".join(c.ljust(widths[c]) for c in cols))
    print("  ".join("-" * widths[c] for c in cols))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in cols))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--decisions", type=int, default=20000, help="decisions timed per bundle size")
    ap.add_argument("--calls", type=int, default=5000, help="guarded tool calls timed")
    ap.add_argument("--budget-ops", type=int, default=300, help="reserve+settle round trips timed per engine")
    ap.add_argument("--scans", type=int, default=400, help="scans timed per scanner on 1 KB (fewer on 20 KB)")
    ap.add_argument("--skip", action="append", default=[], choices=["decisions", "guard", "budgets", "scanners"])
    ap.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = ap.parse_args()
    report: dict[str, Any] = {"machine": machine_info()}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if "decisions" not in args.skip:
            report["decisions"] = bench_decisions(args.decisions)
        if "guard" not in args.skip:
            report["guard"] = bench_guard(args.calls, tmp)
        if "budgets" not in args.skip:
            report["budgets"] = bench_budgets(args.budget_ops, tmp)
        if "scanners" not in args.skip:
            report["scanners"] = bench_scanners(args.scans)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    m = report["machine"]
    print(f"# {m['date']} · {m['nproc']} cores · {m['cpu_model']} · Python {m['python']} · load {m['loadavg_1m']}")
    print_table("Policy decision (PolicySet.evaluate), target p50 <= 20 µs, p99 <= 100 µs at 100 rules",
                report.get("decisions", []))
    print_table("Guard overhead per tool call (no content scanners), target <= 50 µs", report.get("guard", []))
    print_table("Budget reservation round trip (store)", report.get("budgets", []))
    print_table("Scanners, each on its own", report.get("scanners", []))


if __name__ == "__main__":
    main()
