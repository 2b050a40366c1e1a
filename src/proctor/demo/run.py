"""``proctor demo``: start the server, run the SIMULATED fleet against it, show where to look.

The fleet reaches the server the way any agent would: the SDK in HTTP mode, OTLP over
loopback. Spans go into the default database (``--db``, ``PROCTOR_DATABASE_URL`` or
``.proctor/proctor.db``), so ``proctor traces ls`` works right after.

The fleet is governed: a guard with the demo's policy bundle (``demo/policy.yaml``) on the same
database checks every tool and model call, and a SIMULATED supervisor answers most approval
requests (``demo.governance``). Budgets, approvals and the hash-chained decision log are in
that database too, so ``proctor approvals ls``, ``proctor decisions ls`` and ``proctor audit
verify`` work right after as well.

The fleet's agents ship as manifests (``demo/agents``). Before the fleet starts, the demo syncs
that directory into the registry on the same database (GitOps: identical content is a no-op)
and deploys each version to its environment through its promotion gates, approved by a
SIMULATED release manager: support-triage 1.4.0, refund-agent and kb-researcher to prod, the
support-triage 1.5.0-rc.1 canary to staging. ``proctor agent ls`` and ``proctor agent diff``
work right after.

Auth is on in the demo, as it should be on any server: it makes two DEMO API keys (or reuses them):
``demo-fleet`` (operator), which the fleet's SDK sends, and ``you`` (admin), for the console,
whose login link it prints. Only their hashes are in the database; the secrets are written to
``demo-keys.json`` beside the SQLite database (mode 600) so the next demo can reuse them.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shlex
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console, Group, RenderableType
from rich.padding import Padding
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

import proctor.sdk
from proctor.demo.crm import CRM
from proctor.demo.fleet import (
    AGENTS,
    AGENTS_DIR,
    RELEASES,
    SEED,
    SUPPORT_TRIAGE,
    SUPPORT_TRIAGE_CANARY,
    Fleet,
    RunRecord,
)
from proctor.demo.governance import (
    POLICY,
    SIGN_OFF_LIMIT_USD,
    SUPERVISOR,
    GovernanceFigures,
    Supervisor,
    demo_guard,
    governance_figures,
)
from proctor.demo.model import MODELS
from proctor.policy.loader import PolicyError
from proctor.registry.service import Registry
from proctor.sdk.resolve import forget as forget_pointers
from proctor.store import ApiKeyNotFound, ApiKeys, DatabaseURLError, open_engine
from proctor.store import database_url as resolve_database_url
from proctor.store.approvals import ApprovalStore
from proctor.store.registry import RegistryError

SERVICE_NAME = "proctor-demo-fleet"
RELEASE_MANAGER = "demo-release-manager (simulated)"  # signs off the demo's deployments


class DemoError(RuntimeError):
    """The demo cannot start; the message says why and what to do."""


# The demo's API keys: (name, role). Labelled as demo keys wherever they are shown.
DEMO_KEYS = (("demo-fleet", "operator"), ("you", "admin"))
KEYS_FILE = "demo-keys.json"


def _keys_path(db_url: str) -> Path:
    """Beside the SQLite database when there is one, else under .proctor/ in the working directory."""
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database).parent / KEYS_FILE
    return Path(".proctor") / KEYS_FILE


def demo_keys(engine: Engine, path: Path, url: str) -> dict[str, str]:
    """The demo's keys (name -> secret), turning auth on: the ones saved in ``path`` if they are
    still valid in this database, else new ones. A demo key whose secret was lost (only its hash
    is stored) is revoked and made anew. The secrets are written to ``path``, readable by the
    owner only."""
    store = ApiKeys(engine)
    try:
        saved = json.loads(path.read_text()).get("keys", {})
    except (OSError, ValueError, AttributeError):
        saved = {}
    found: dict[str, str] = {}
    for name, role in DEMO_KEYS:
        entry = saved.get(name) if isinstance(saved, dict) else None
        secret = entry.get("key") if isinstance(entry, dict) else None
        key = store.verify(secret) if isinstance(secret, str) else None
        if isinstance(secret, str) and key is not None and key.name == name and key.role == role:
            found[name] = secret
            continue
        with contextlib.suppress(ApiKeyNotFound):
            if store.get(name).active:
                store.revoke(name)
        found[name] = store.create(name, role, by="proctor demo")[1]
    doc = {
        "note": "DEMO API keys made by `proctor demo` for its simulated fleet and for you; only their hashes are "
                "in the database. Revoke them with `proctor keys revoke NAME`.",
        "url": url,
        "keys": {name: {"key": found[name], "role": role, "login_url": f"{url}/login#key={found[name]}"}
                 for name, role in DEMO_KEYS},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=2)
    os.chmod(path, 0o600)  # an existing file keeps its mode through O_CREAT
    return found


@dataclass
class RegistryFigures:
    """What the demo registered and deployed before the fleet started."""

    directory: Path
    agents: int = 0
    versions: int = 0
    new: int = 0  # versions this demo registered (0 when an earlier demo already had)
    live: dict[str, list[str]] = field(default_factory=dict)  # environment -> ["name label", ...]
    problems: list[str] = field(default_factory=list)  # a refused deployment, a failed sync
    moves: list[str] = field(default_factory=list)  # the release and rollback made during the run


def release_fleet(engine: Engine, directory: Path = AGENTS_DIR) -> RegistryFigures:
    """Sync the demo's manifests into the registry and deploy each version (``RELEASES``).

    A version already live in its environment is left alone, so a demo on an earlier demo's
    database changes nothing; another version live there is replaced (the fleet runs these).
    A failed sync or a refused deployment is reported, not raised: the fleet runs from the
    manifests either way.
    """
    figures = RegistryFigures(directory)
    reg = Registry(engine)
    try:
        items = reg.sync(directory, by="proctor demo")
    except (RegistryError, PolicyError) as exc:
        figures.problems.append(f"sync {directory}: {exc}")
        return figures
    figures.agents, figures.versions = len({i.name for i in items}), len(items)
    figures.new = sum(1 for i in items if i.created)
    for spec, env in RELEASES:
        try:
            if reg.store.current(spec.name, env) != spec.version_id:
                reg.deploy(spec.version_id, env, agent=spec.name, by="proctor demo", reason="demo release",
                           approvals=[(RELEASE_MANAGER, "approver")])
        except (RegistryError, PolicyError) as exc:  # PromotionRefused is a RegistryError
            figures.problems.append(str(exc))
            continue
        figures.live.setdefault(env, []).append(f"{spec.name} {spec.version}")
    return figures


ALERT_RULES = Path(__file__).with_name("alerts.yaml")


class WebhookReceiver:
    """The demo's stand-in for a team's alert channel: an HTTP receiver on 127.0.0.1 that keeps
    every notification the server's alert rules send to it (the generic webhook JSON)."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        received = self.received = []  # type: list[tuple[int, dict[str, Any]]]

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with contextlib.suppress(ValueError):
                    received.append((time.time_ns(), json.loads(body)))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/alerts"
        self._thread = threading.Thread(target=self.server.serve_forever, name="demo-webhook", daemon=True)
        self._thread.start()
        self._shown = 0

    def rules_file(self, directory: Path) -> Path:
        """The demo's alert rules, with the webhook pointed at this receiver."""
        path = directory / "alerts.yaml"
        path.write_text(ALERT_RULES.read_text().replace("http://127.0.0.1:9/alerts", self.url))
        return path

    def new_lines(self) -> list[str]:
        """One console line per notification received since the last call."""
        out = []
        for _, doc in self.received[self._shown:]:
            action = f" → {doc['action']}" if doc.get("action") else ""
            out.append(f"alert: {doc['status'].upper()} {doc['rule_id']} ({doc['severity']}): {doc['summary']}{action}")
        self._shown = len(self.received)
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class CanaryRelease:
    """The SIMULATED release manager's script: promote the support-triage canary to prod a third
    of the way into the runs, and roll prod back two thirds in (``proctor agent rollback``).

    Running sessions resolve ``support-triage`` in prod through the registry, so the prod runs in
    between play the canary (within a second of the move: pointers are re-read once a second),
    and the runs after the rollback play 1.4.0 again. Fewer than 4 runs: no release. With no end
    (``runs`` 0): the promotion at run 8, the rollback at run 16.
    """

    def __init__(self, engine: Engine, runs: int, figures: RegistryFigures) -> None:
        self.registry = Registry(engine)
        self.figures = figures
        self.promote_at, self.rollback_at = (8, 16) if runs == 0 else (runs // 3, 2 * runs // 3)
        self.enabled = runs == 0 or runs >= 4

    def after(self, done: int) -> str | None:
        """The move due after ``done`` runs, made; its console line. None when nothing is due."""
        if not self.enabled or done not in (self.promote_at, self.rollback_at):
            return None
        name, canary = SUPPORT_TRIAGE.name, SUPPORT_TRIAGE_CANARY
        try:
            if done == self.promote_at:
                self.registry.deploy(canary.version_id, "prod", agent=name, by=RELEASE_MANAGER,
                                     reason="promote the canary from staging (scripted)",
                                     approvals=[(RELEASE_MANAGER, "approver")])
                line = f"release: {RELEASE_MANAGER} promoted {name} {canary.version} to prod"
            else:
                move = self.registry.rollback(name, "prod", by=RELEASE_MANAGER,
                                              reason="scripted rollback: shows `proctor agent rollback`; "
                                                     "`proctor agent changed` shows what the canary changed")
                back = self.registry.store.get(move.version_id)
                line = f"rollback: {RELEASE_MANAGER} rolled {name} in prod back to {back.label or back.short_id}"
        except (RegistryError, PolicyError) as exc:
            self.figures.problems.append(str(exc))
            return f"registry: {exc}"
        self.figures.moves.append(line)
        # This process made the move: its sessions need not wait out the pointer cache (other
        # processes see a move within a second).
        forget_pointers()
        return line


@dataclass
class DemoSummary:
    url: str
    database_url: str
    crm_path: str
    records: list[RunRecord] = field(default_factory=list)
    interrupted: bool = False
    governance: GovernanceFigures | None = None
    registry: RegistryFigures | None = None
    alerts: list[dict[str, Any]] = field(default_factory=list)  # notifications the local webhook received
    keys: dict[str, str] = field(default_factory=dict)  # the DEMO API keys: name -> secret (see DEMO_KEYS)
    keys_path: str = ""  # where they were written

    @property
    def login_url(self) -> str:
        return f"{self.url}/login#key={self.keys['you']}" if "you" in self.keys else self.url

    @property
    def trace_ids(self) -> list[str]:
        return [t for r in self.records for t in r.trace_ids]


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _crm_path(db_url: str, scratch: Path) -> Path:
    """Beside the SQLite database when there is one (to look at afterwards), else in ``scratch``."""
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database).parent / "demo-crm.db"
    return scratch / "demo-crm.db"


def run_demo(
    port: int = 7070,
    database_url: str | None = None,
    runs: int = 24,
    serve_after: bool = True,
    console: Console | None = None,
) -> DemoSummary:
    """Serve on 127.0.0.1:``port`` and play ``runs`` simulated agent runs (0: until Ctrl-C)."""
    console = console or Console()
    if runs < 0:
        raise DemoError("--runs takes 0 (keep going) or a positive number")
    if proctor.sdk.status()["initialized"]:
        raise DemoError("proctor.init() was already called in this process; run the demo in a process of its own")
    try:
        db_url = resolve_database_url(database_url)
    except DatabaseURLError as exc:
        raise DemoError(str(exc)) from exc
    if not _port_is_free(port):
        raise DemoError(
            f"port {port} on 127.0.0.1 is already in use (another `proctor serve` or demo?); "
            f"pick a free one with --port, e.g. `proctor demo --port {port + 1}`"
        )

    from proctor.server.run import start_in_thread

    scratch = tempfile.TemporaryDirectory(prefix="proctor-demo-")
    receiver = WebhookReceiver()
    try:
        server, thread = start_in_thread(host="127.0.0.1", port=port, database_url=database_url,
                                         alert_rules=str(receiver.rules_file(Path(scratch.name))))
    except OSError as exc:  # lost a race for the port after the check above
        receiver.close()
        raise DemoError(str(exc)) from exc
    url = f"http://127.0.0.1:{port}"
    crm: CRM | None = None
    supervisor: Supervisor | None = None
    engine: Engine | None = None
    summary = DemoSummary(url, db_url, "")
    try:
        engine = open_engine(db_url)  # the guard's shared state: the same database the server uses
        crm = CRM(_crm_path(db_url, Path(scratch.name)))
        summary.crm_path = str(crm.path)
        keys_path = _keys_path(db_url)
        summary.keys, summary.keys_path = demo_keys(engine, keys_path, url), str(keys_path)
        _print_banner(console, url, db_url, crm.path, summary)
        summary.registry = release_fleet(engine)
        for problem in summary.registry.problems:
            console.print(f"[yellow]registry: {problem}[/]", highlight=False)
        # set_global=False: OpenTelemetry lets a process set its global tracer provider once, so
        # a second demo in the same process (tests) would record into the first, shut-down one.
        # The fleet gets its tracer from this provider explicitly; tool spans go through the SDK's
        # recorder, which belongs to this init().
        provider = proctor.sdk.init(url=url, service_name=SERVICE_NAME, instrument=False,
                                    spool_dir=Path(scratch.name) / "spool", set_global=False,
                                    api_key=summary.keys["demo-fleet"])
        # The guard governs the fleet's sessions in this process: proctor.sdk.shutdown() closes it.
        proctor.sdk.use_guard(demo_guard(engine))
        started_ns = time.time_ns()
        supervisor = Supervisor(ApprovalStore(engine), crm.path, seed=SEED).start()
        fleet = Fleet(crm, seed=SEED, tracer=provider.get_tracer("proctor.demo"))
        release = CanaryRelease(engine, runs, summary.registry)
        summary.interrupted = _simulate(fleet, runs, console, summary.records, release.after, receiver.new_lines)
        proctor.sdk.flush()
        time.sleep(1.5)  # the last spans' alerts: the engine judges them within a second of arrival
        for line in receiver.new_lines():
            console.print(f"[bold red]{line}[/]", highlight=False)
        summary.alerts = [{**doc, "received_ns": ts} for ts, doc in receiver.received]
        summary.governance = governance_figures(engine, started_ns)
        _print_summary(console, summary, database_url, started_ns)
        if serve_after and not summary.interrupted:
            console.print(f"\n[bold]Serving on {url}[/] — press Ctrl-C to stop. Approve or deny a held refund "
                          "meanwhile and the fleet finishes it.")
            console.print(f"Open the console: [bold]{summary.login_url}[/]", highlight=False, soft_wrap=True)
            console.print("A tour: Alerts → runaway-loop → its trace shows where the loop breaker fired; "
                          "Approvals → the held refund → Approve; Agents → support-triage → compare the canary; "
                          "Audit → the chain verifies.", highlight=False)
            try:
                while thread.is_alive():
                    thread.join(0.5)
                    for record in fleet.resume_decided():
                        summary.records.append(record)
                        console.print(_run_row(record, console.width))
            except KeyboardInterrupt:
                console.print("stopping")
        return summary
    finally:
        if supervisor is not None:
            supervisor.stop()
        proctor.sdk.shutdown()
        server.should_exit = True
        thread.join(10)
        receiver.close()
        if crm is not None:
            crm.close()
        if engine is not None:
            engine.dispose()
        scratch.cleanup()


def _print_banner(console: Console, url: str, db_url: str, crm_path: Path, summary: DemoSummary) -> None:
    priced = " and ".join(MODELS)
    agents = ", ".join(f"{a.name} {a.version}" + (f" (and a {SUPPORT_TRIAGE_CANARY.version} canary)"
                                                   if a is SUPPORT_TRIAGE else "") for a in AGENTS)
    console.print(Panel(
        "[bold]This is a SIMULATED agent fleet.[/] The model is a scripted fake: no LLM is called and "
        "nothing leaves this machine. Token counts are estimated from the messages; costs are what those "
        f"tokens would cost on {priced} (genai-prices). The tools are real functions over a demo SQLite "
        f"CRM ({crm_path}).\n"
        f"Agents: {agents}, from the manifests in {AGENTS_DIR}. Every span carries [bold]proctor.simulated = true[/]; "
        f"service.name = {SERVICE_NAME}.\n"
        f"Governed by the policy in {POLICY}: every tool and model call is checked first. Approval requests are "
        f"answered by {SUPERVISOR}, a script that decides from the CRM's facts and leaves refunds above "
        f"${SIGN_OFF_LIMIT_USD:.0f} for you.",
        title="proctor demo", title_align="left", border_style="yellow",
    ))
    table = Table.grid(padding=(0, 2))
    table.add_row("Proctor server", f"[bold]{url}[/]")
    table.add_row("DEMO API keys", Text(f"you (admin) and demo-fleet (operator), in {summary.keys_path} "
                                        "(mode 600): auth is on, every request needs a key"))
    table.add_row("REST API", f"{url}/api/traces")
    table.add_row("API reference", f"{url}/reference")
    table.add_row("OTLP/HTTP in", f"{url}/v1/traces")
    table.add_row("database", make_url(db_url).render_as_string(hide_password=True))
    console.print(table)
    # on a line of its own, unwrapped: a terminal makes it one clickable link
    console.print(f"Open the console (logs you in with the DEMO admin key): [bold]{summary.login_url}[/]",
                  highlight=False, soft_wrap=True)


def _simulate(fleet: Fleet, runs: int, console: Console, records: list[RunRecord],
              after: Callable[[int], str | None] = lambda done: None,
              alerts: Callable[[], list[str]] = list) -> bool:
    """Play the runs; True when Ctrl-C stopped them early. ``after(n)`` runs after the n-th run
    (a scripted release); the line it returns is printed."""
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("simulating runs", total=runs or None)
        try:
            for _ in itertools.count() if runs == 0 else range(runs):
                for resumed in fleet.resume_decided():  # held refunds someone decided meanwhile
                    records.append(resumed)
                    progress.console.print(_run_row(resumed, console.width))
                record = fleet.run_next()
                records.append(record)
                progress.console.print(_run_row(record, console.width))
                progress.advance(task)
                line = after(len(records))
                if line:
                    progress.console.print(f"[bold cyan]{line}[/]", highlight=False)
                for alert in alerts():  # what the server's alert rules sent to the local webhook
                    progress.console.print(f"[bold red]{alert}[/]", highlight=False)
        except KeyboardInterrupt:
            progress.console.print("[yellow]interrupted: stopping the fleet[/]")
            return True
    return False


_EFFECT_STYLE = {"warn": "yellow", "redact": "yellow", "require_approval": "yellow", "deny": "red",
                 "terminate_session": "bold magenta"}
_APPROVAL_STYLE = {"approved": "green", "denied": "red", "pending": "bold yellow", "expired": "dim"}


def _policy_cell(r: RunRecord) -> Text:
    """What the guard did in the run: each rule that did more than allow, and what it did."""
    cell = Text()
    for rule, effect in r.rules.items():
        if cell:
            cell.append(", ")
        if effect == "require_approval" and r.approvals:
            statuses = list(dict.fromkeys(r.approvals.values()))
            cell.append(f"{rule} → ")
            for i, status in enumerate(statuses):
                cell.append(("/" if i else "") + status, style=_APPROVAL_STYLE.get(status, ""))
        else:
            cell.append(f"{rule}: ")
            cell.append(effect.replace("terminate_session", "terminated"), style=_EFFECT_STYLE.get(effect, ""))
    return cell


def _run_row(r: RunRecord, width: int) -> RenderableType:
    """One finished run in fixed-width columns; the policy and what the run was about when there is room."""
    if r.error:
        mark = "[bold red]✗[/]"
    elif r.stopped:
        mark = "[bold magenta]⊘[/]"
    elif r.tool_errors or r.refusals:
        mark = "[yellow]![/]"
    else:
        mark = "[green]✓[/]"
    n = len(r.trace_ids)
    outcome = f"{n} trace{'s' * (n != 1)}"
    if r.tool_errors:
        outcome += f" · [yellow]{r.tool_errors} tool error{'s' * (r.tool_errors != 1)}[/]"
    if r.refusals:
        outcome += f" · [red]{r.refusals} refused[/]"
    row = Table.grid(padding=(0, 1))
    widths = [1, 4, 25, 22, 24]
    cells: list[RenderableType] = [mark, f"#{r.index}", f"{r.agent} {r.version}", r.scenario, outcome]
    for w in widths:
        row.add_column(width=w, no_wrap=True, overflow="ellipsis")
    used = sum(widths) + len(widths)
    policy = _policy_cell(r)
    if width - used >= 64:  # room for what the guard did and what the run was about
        row.add_column(width=44, no_wrap=True, overflow="ellipsis")
        row.add_column(style="dim", width=width - used - 45, no_wrap=True, overflow="ellipsis")
        cells += [policy, r.note]
    elif width - used >= 16:  # room for one of them: the guard's part, if it did something
        row.add_column(style="" if policy else "dim", width=width - used, no_wrap=True, overflow="ellipsis")
        cells.append(policy or r.note)
    row.add_row(*cells)
    lines: list[RenderableType] = [row]
    if r.error:
        lines.append(Padding(Text(f"└ {r.error}", style="red"), (0, 0, 0, 6)))
    if r.stopped:
        lines.append(Padding(Text(f"└ {r.stopped}", style="magenta"), (0, 0, 0, 6)))
    return lines[0] if len(lines) == 1 else Group(*lines)


def _print_summary(console: Console, summary: DemoSummary, database_url: str | None, started_ns: int) -> None:
    records = summary.records
    if not records:
        console.print("no runs finished")
        return
    try:
        stats = httpx.get(f"{summary.url}/api/stats", params={"since": str(started_ns), "service": SERVICE_NAME},
                          headers=_bearer(summary), timeout=10).raise_for_status().json()
        console.print(
            f"\n[bold]{stats['traces']} traces[/] from {len(records)} runs · {stats['spans']} spans · "
            f"{stats['errors']} failed spans · {stats['input_tokens']}/{stats['output_tokens']} tokens · "
            f"${stats['cost_usd']:.4f} (simulated) · in {summary.database_url}"
        )
    except httpx.HTTPError as exc:  # the summary is a courtesy; the data is in the database either way
        console.print(f"\n[bold]{len(summary.trace_ids)} traces[/] from {len(records)} runs "
                      f"(could not read statistics: {exc})")

    gov = summary.governance
    if gov is not None:
        _print_governance(console, gov, records)
    if summary.registry is not None:
        _print_registry(console, summary.registry)

    db = f" --db {shlex.quote(database_url)}" if database_url else ""
    show = next((r for r in records if r.scenario == "refund_damaged_item" and r.trace_ids), records[0])
    failed = next((r for r in records if r.error), None)
    chat = next((r for r in records if len(r.trace_ids) > 1), None)
    examples = [
        (f"proctor traces ls{db}", "newest traces"),
        (f"proctor traces show {show.trace_ids[0][:12]}{db}" if show.trace_ids else "", "one run as a tree"),
        (f"proctor traces ls --status error{db}", "runs with a failed step"),
        (f"proctor traces show {failed.trace_ids[0][:12]}{db}" if failed and failed.trace_ids else "",
         "an agent that gave up"),
        (f"proctor sessions show {chat.session_id}{db}" if chat else "", "a multi-turn conversation"),
        (f"proctor stats{db}", "cost, tokens, latency by agent and tool"),
        (f"curl -H 'Authorization: Bearer {summary.keys.get('you', '')}' {summary.url}/api/traces",
         "the same data as JSON (with the DEMO admin key)"),
    ]
    if gov is not None:
        terminated = next((r for r in records if r.stopped and r.stopped.startswith("session terminated")), None)
        pending = gov.pending_ids[0] if gov.pending_ids else None
        examples += [
            (f"proctor approvals ls{db}", f"{len(gov.pending_ids)} held refund"
                                         f"{'s' * (len(gov.pending_ids) != 1)} waiting for a human"),
            (f"proctor approvals approve {pending}{db}" if pending else "",
             "approve one yourself (or deny it); the fleet finishes it while the demo serves"),
            (f"proctor decisions ls --effect deny{db}", "what the guard refused, and why"),
            (f"proctor sessions show {terminated.session_id}{db}" if terminated else "", "a session the guard ended"),
            (f"proctor audit verify{db}", "check the decision log's hash chain is intact"),
        ]
    if summary.registry is not None and summary.registry.versions:
        stable, canary = SUPPORT_TRIAGE, SUPPORT_TRIAGE_CANARY
        examples += [
            (f"proctor agent ls{db}", "the agents, and which version is live where"),
            (f"proctor agent diff {stable.name}@{stable.version} {canary.name}@{canary.version}{db}",
             "what the canary changes"),
            (f"proctor agent inventory --tool issue_refund --env prod{db}", "who can issue refunds in prod"),
        ]
    examples.append((f"proctor keys ls{db}", "the API keys: auth is on, with the DEMO keys"))
    console.print("\nTry:")
    for cmd, what in examples:
        if cmd:
            console.print(f"  [bold cyan]{cmd}[/]  [dim]# {what}[/]", highlight=False, soft_wrap=True)


def _bearer(summary: DemoSummary) -> dict[str, str]:
    return {"authorization": f"Bearer {summary.keys['you']}"} if "you" in summary.keys else {}


_EFFECT_ORDER = ("allow", "warn", "redact", "require_approval", "deny", "terminate_session")


def _print_governance(console: Console, gov: GovernanceFigures, records: list[RunRecord]) -> None:
    """The guard's figures: decisions by effect, approvals by outcome, sessions it ended."""
    effects = " · ".join(f"{gov.decisions[e]} {e}" for e in _EFFECT_ORDER if gov.decisions.get(e))
    shadow = f" · {gov.shadow} shadow (recorded, not enforced)" if gov.shadow else ""
    console.print(f"\n[bold]Governance[/] ({POLICY.parent.name}/{POLICY.name}): {gov.total} decisions · "
                  f"{effects or 'none'}{shadow}", highlight=False)
    a = gov.approvals
    pending = len(gov.pending_ids)
    console.print(
        f"  approvals: {a.get('approved', 0)} approved · {a.get('denied', 0)} denied"
        + (f" · {a['expired']} expired" if a.get("expired") else "")
        + f" · [bold yellow]{pending} pending[/] (above {SUPERVISOR}'s ${SIGN_OFF_LIMIT_USD:.0f}: yours to decide)",
        highlight=False)
    by_rule: dict[str, int] = {}
    for rule in gov.terminated.values():
        by_rule[rule] = by_rule.get(rule, 0) + 1
    ended = ", ".join(f"{rule} ×{n}" for rule, n in by_rule.items())
    budget = sum(1 for r in records if r.stopped and r.stopped.startswith("model call refused"))
    console.print(f"  sessions terminated: {len(gov.terminated)}" + (f" ({ended})" if ended else "")
                  + f" · runs stopped by a budget: {budget}", highlight=False)


def _print_registry(console: Console, reg: RegistryFigures) -> None:
    """The registry's line: what the demo registered, and what is live where."""
    where = " · ".join(f"{env}: {', '.join(names)}" for env, names in sorted(
        reg.live.items(), key=lambda kv: (kv[0] != "prod", kv[0])))
    console.print(f"\n[bold]Registry[/] ({reg.directory.parent.name}/{reg.directory.name}): {reg.agents} agents · "
                  f"{reg.versions} versions ({reg.new} new) · {where or 'nothing deployed'}", highlight=False)
    for move in reg.moves:
        console.print(f"  {move}", highlight=False)
    if reg.problems:
        console.print(f"  [yellow]{len(reg.problems)} problem{'s' * (len(reg.problems) != 1)}:[/] "
                      + "; ".join(reg.problems), highlight=False)
