"""The ASGI application: OTLP receiver, REST API, health."""

from __future__ import annotations

import inspect
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from sqlalchemy import Engine

from proctor import __version__
from proctor.pipeline import Pipeline
from proctor.server.alerts import router as alerts_router
from proctor.server.api import router as api_router
from proctor.server.auth import AuthMiddleware, KeyCache
from proctor.server.auth import allowed_hosts as auth_allowed_hosts
from proctor.server.auth import router as auth_router
from proctor.server.governance import PermitTable, build_guard, policy_paths
from proctor.server.governance import router as governance_router
from proctor.server.metrics import router as metrics_router
from proctor.server.otlp import ReceiverLimits, make_receiver
from proctor.server.registry import router as registry_router
from proctor.store import BatchWriter, SpanStore, open_engine
from proctor.telemetry.feeds import DecisionFeed
from proctor.telemetry.metrics import ProctorMetrics
from proctor.telemetry.service import AlertService, rule_paths

if TYPE_CHECKING:  # the guard (CEL, YAML, JSON Schema) is imported only when a policy is loaded
    from proctor.guard import Guard


@dataclass
class ServerState:
    engine: Engine
    store: SpanStore
    writer: BatchWriter
    pipeline: Pipeline
    started_ns: int
    guard: Guard | None = None  # the decision API's guard, when a policy is loaded
    policy_paths: list[str] = field(default_factory=list)
    permits: PermitTable = field(default_factory=PermitTable)
    # telemetry (issue 5): Prometheus metrics, and the decision-log feed they (and alerts) read
    metrics: ProctorMetrics | None = None
    decisions: DecisionFeed | None = None
    alerts: AlertService | None = None  # alert rules on the live stream, silences, history
    auth: KeyCache | None = None  # the API keys, re-read at most every 0.8 s (server/auth.py)


def create_app(
    database_url: str | None = None,
    *,
    limits: ReceiverLimits | None = None,
    policy: str | list[str] | None = None,
    approval_webhook: str | None = None,
    alert_rules: str | list[str] | None = None,
    console_url: str | None = None,
    allowed_hosts: frozenset[str] | None = None,
) -> FastAPI:
    """Build the app on ``database_url`` (default: PROCTOR_DATABASE_URL or .proctor/proctor.db).

    ``policy``: bundle files or directories for the decision API (default: PROCTOR_POLICY,
    paths separated by os.pathsep); an invalid bundle raises PolicyError naming file:line.
    ``approval_webhook`` (default: PROCTOR_APPROVAL_WEBHOOK) is told of every new approval.
    ``alert_rules`` (default: PROCTOR_ALERT_RULES): alert rule files or directories; an invalid
    file raises AlertRulesError naming file:line. ``console_url``: the server's address as
    notifications should link to it. ``allowed_hosts``: the Host names browsers may use (see
    :func:`proctor.server.auth.allowed_hosts`; default: loopback plus PROCTOR_ALLOWED_HOSTS, where ``*`` allows any).
    """
    engine = open_engine(database_url)
    paths = policy_paths(policy)
    try:
        guard = build_guard(engine, paths, approval_webhook)
    except Exception:
        engine.dispose()
        raise
    store = SpanStore(engine)
    writer = BatchWriter(store)
    state = ServerState(engine, store, writer, Pipeline(writer), time.time_ns(), guard, paths)
    # --- telemetry (issue 5): /metrics over the span stream, the decision log and approvals ---
    metrics = state.metrics = ProctorMetrics(engine)
    decisions = state.decisions = DecisionFeed(engine)
    state.pipeline.subscribe(metrics.on_spans)
    decisions.subscribe(metrics.on_decisions)
    try:
        alerts = state.alerts = AlertService(engine, rule_paths(alert_rules), console_url=console_url,
                                             record_span=lambda span: state.pipeline.submit([span]))
    except Exception:
        engine.dispose()
        raise
    state.pipeline.subscribe(alerts.engine.on_spans)
    decisions.subscribe(alerts.engine.on_decisions)
    # --- end telemetry

    @asynccontextmanager
    async def lifespan(_app: FastAPI):  # type: ignore[no-untyped-def]
        writer.start()
        decisions.start()  # telemetry: tail the decision log
        metrics.start()  # telemetry: tick() every second, ending idle sessions
        alerts.start()  # telemetry: the alert engine's thread (ticks every second)
        yield
        writer.close()
        if guard is not None:
            guard.close()  # stops the kill-switch watcher, flushes the decision log
        decisions.close()  # telemetry
        alerts.close()  # telemetry
        metrics.close()  # telemetry
        engine.dispose()

    extra: dict[str, Any] = {}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters:
        # FastAPI >= 0.160 traces its own requests whenever a global tracer provider is set.
        # When the SDK runs in the same process (demo, tests, embedded use) every OTLP request
        # would make spans that are exported back to us, and so on: a feedback loop.
        extra["telemetry"] = {"tracing": False, "metrics": False, "logs": False}
    app = FastAPI(
        title="Proctor",
        version=__version__,
        description="Self-hosted AgentOps control plane: traces, governance, telemetry and evaluation.",
        lifespan=lifespan,
        # Swagger UI and ReDoc load from a CDN: off, for air-gapped installs. The console's
        # /reference page renders the same OpenAPI document from vendored assets.
        docs_url=None,
        redoc_url=None,
        **extra,
    )
    app.state.proctor = state
    # auth: on while an API key exists; every request but /healthz, /login, /static is checked
    state.auth = KeyCache(engine)
    hosts = allowed_hosts if allowed_hosts is not None else auth_allowed_hosts()
    app.add_middleware(AuthMiddleware, keys=state.auth, hosts=hosts)
    app.add_api_route(
        "/v1/traces",
        make_receiver(state.pipeline, limits),
        methods=["POST"],
        summary="OTLP/HTTP trace receiver (protobuf or JSON, gzip optional)",
        include_in_schema=True,
    )
    app.include_router(api_router)
    app.include_router(governance_router)
    app.include_router(registry_router)
    app.include_router(metrics_router)  # telemetry: GET /metrics
    app.include_router(alerts_router)  # telemetry: /api/alerts, /api/alert-rules, /api/silences
    app.include_router(auth_router)  # auth: /api/keys

    # imported here: the console's pages import proctor.server.auth, so importing proctor.ui
    # first (a test, a tool) would otherwise go round proctor.server.app back into proctor.ui
    from proctor.ui import mount_console

    mount_console(app)  # the web console: pages at /, /traces, ... and /static

    @app.get("/healthz", summary="Liveness and the database in use")
    def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "version": __version__,
            "database": engine.dialect.name,
            "uptime_s": round((time.time_ns() - state.started_ns) / 1e9, 3),
        }

    return app
