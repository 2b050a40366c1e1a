"""The ASGI application: OTLP receiver, REST API, health."""

from __future__ import annotations

import inspect
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from sqlalchemy import Engine

from proctor import __version__
from proctor.pipeline import Pipeline
from proctor.server.api import router as api_router
from proctor.server.otlp import ReceiverLimits, make_receiver
from proctor.store import BatchWriter, SpanStore, open_engine


@dataclass
class ServerState:
    engine: Engine
    store: SpanStore
    writer: BatchWriter
    pipeline: Pipeline
    started_ns: int


def create_app(database_url: str | None = None, *, limits: ReceiverLimits | None = None) -> FastAPI:
    """Build the app on ``database_url`` (default: PROCTOR_DATABASE_URL or .proctor/proctor.db)."""
    engine = open_engine(database_url)
    store = SpanStore(engine)
    writer = BatchWriter(store)
    state = ServerState(engine, store, writer, Pipeline(writer), time.time_ns())

    @asynccontextmanager
    async def lifespan(_app: FastAPI):  # type: ignore[no-untyped-def]
        writer.start()
        yield
        writer.close()
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
        **extra,
    )
    app.state.proctor = state
    app.add_api_route(
        "/v1/traces",
        make_receiver(state.pipeline, limits),
        methods=["POST"],
        summary="OTLP/HTTP trace receiver (protobuf or JSON, gzip optional)",
        include_in_schema=True,
    )
    app.include_router(api_router)

    @app.get("/healthz", summary="Liveness and the database in use")
    def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "version": __version__,
            "database": engine.dialect.name,
            "uptime_s": round((time.time_ns() - state.started_ns) / 1e9, 3),
        }

    return app
