"""``proctor.init()``: wire OpenTelemetry to Proctor and enable installed instrumentors."""

from __future__ import annotations

import atexit
import importlib
import importlib.util
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from proctor.sdk.context import SessionStampProcessor
from proctor.sdk.recorder import SpanRecorder

log = logging.getLogger("proctor.sdk")

# library module -> instrumentor candidates (module, class), preferred first. One per library:
# two instrumentors on the same client would record every call twice.
INSTRUMENTORS: dict[str, list[tuple[str, str]]] = {
    "openai": [
        ("openinference.instrumentation.openai", "OpenAIInstrumentor"),
        ("opentelemetry.instrumentation.openai", "OpenAIInstrumentor"),
        ("opentelemetry.instrumentation.openai_v2", "OpenAIInstrumentor"),
    ],
    "anthropic": [
        ("openinference.instrumentation.anthropic", "AnthropicInstrumentor"),
        ("opentelemetry.instrumentation.anthropic", "AnthropicInstrumentor"),
    ],
    "agents": [("openinference.instrumentation.openai_agents", "OpenAIAgentsInstrumentor")],
    "langchain_core": [
        ("openinference.instrumentation.langchain", "LangChainInstrumentor"),
        ("opentelemetry.instrumentation.langchain", "LangchainInstrumentor"),
    ],
    "litellm": [("openinference.instrumentation.litellm", "LiteLLMInstrumentor")],
    "crewai": [("openinference.instrumentation.crewai", "CrewAIInstrumentor")],
    "mcp": [("openinference.instrumentation.mcp", "MCPInstrumentor")],
}


@dataclass
class _Runtime:
    provider: TracerProvider
    exporter: SpanExporter
    recorder: SpanRecorder
    instrumented: list[str] = field(default_factory=list)
    mode: str = "embedded"
    database_url: str | None = None  # the guard's database (the embedded store's too)


_lock = threading.Lock()
_runtime: _Runtime | None = None


def _enable_instrumentors(provider: TracerProvider) -> list[str]:
    enabled = []
    for library, candidates in INSTRUMENTORS.items():
        if importlib.util.find_spec(library) is None:
            continue
        for module, cls in candidates:
            try:
                if importlib.util.find_spec(module) is None:
                    continue
                instrumentor = getattr(importlib.import_module(module), cls)()
                if not instrumentor.is_instrumented_by_opentelemetry:
                    instrumentor.instrument(tracer_provider=provider)
                enabled.append(f"{module}.{cls}")
                break
            except Exception as exc:  # a broken instrumentor must not stop the agent
                log.warning("could not enable %s.%s: %s", module, cls, exc)
    return enabled


def init(
    url: str | None = None,
    *,
    service_name: str | None = None,
    database_url: str | None = None,
    instrument: bool = True,
    spool_dir: str | os.PathLike[str] | None = None,
    api_key: str | None = None,
    set_global: bool = True,
    policy: str | os.PathLike[str] | list[str | os.PathLike[str]] | None = None,
    approval_wait_s: float | None = None,
) -> TracerProvider:
    """Send this process's spans to Proctor. Safe to call more than once (later calls are no-ops).

    - ``url`` (or ``PROCTOR_URL``): a Proctor server; spans go there over OTLP/HTTP. While it is
      unreachable they wait in a bounded spool on disk (``spool_dir``, ``PROCTOR_SPOOL_DIR``,
      default ``.proctor/spool``) and are resent with backoff.
    - otherwise spans are written to the embedded store (``database_url``,
      ``PROCTOR_DATABASE_URL``, default ``.proctor/proctor.db``).
    - ``instrument``: enable the OpenInference / OpenLLMetry instrumentors that are installed,
      one per library.

    - ``policy`` (or ``PROCTOR_POLICY``, paths separated by ``:``): policy bundle files or
      directories. A guard then checks every ``@proctor.tool`` call (and ``proctor.llm_call``)
      inside ``proctor.session(...)``. Its shared state — budgets, approvals, kill switches,
      the decision log — lives in the database (``database_url`` / ``PROCTOR_DATABASE_URL``),
      which several processes and the server share. An invalid bundle raises PolicyError.
    - ``approval_wait_s``: block a tool call that needs approval up to this long (default: raise
      ``ApprovalPending`` at once, with a handle to wait on or resume with).

    Returns the tracer provider, for adding your own processors.
    """
    global _runtime
    with _lock:
        if _runtime is not None:
            return _runtime.provider
        url = url or os.environ.get("PROCTOR_URL")
        policy_paths = _policy_paths(policy)
        if policy_paths:
            _start_guard(policy_paths, database_url, approval_wait_s)
        resource = Resource.create(
            {"service.name": service_name or os.environ.get("OTEL_SERVICE_NAME") or "proctor-agent"}
        )
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(SessionStampProcessor())
        exporter: SpanExporter
        if url:
            from proctor.sdk.export import ProctorHTTPExporter

            spool = Path(spool_dir or os.environ.get("PROCTOR_SPOOL_DIR") or Path(".proctor") / "spool")
            exporter = ProctorHTTPExporter(url, spool_dir=spool, api_key=api_key or os.environ.get("PROCTOR_API_KEY"))
            mode = "http"
        else:
            from proctor.sdk.export import EmbeddedExporter

            exporter = EmbeddedExporter(database_url)
            mode = "embedded"
        # The agent's thread only appends to an in-memory queue; export runs in a worker thread.
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
        if set_global:
            trace.set_tracer_provider(provider)
        recorder = SpanRecorder(exporter, dict(resource.attributes))  # type: ignore[arg-type]
        _runtime = _Runtime(provider, exporter, recorder, mode=mode, database_url=database_url)
        if instrument:
            _runtime.instrumented = _enable_instrumentors(provider)
        atexit.register(shutdown)
        return provider


def _policy_paths(policy: object) -> list[str | os.PathLike[str]]:
    if policy is None:
        env = os.environ.get("PROCTOR_POLICY")
        return [p for p in env.split(os.pathsep) if p] if env else []
    if isinstance(policy, (str, os.PathLike)):
        return [policy]
    return list(policy)  # type: ignore[call-overload]


def _start_guard(paths: list[str | os.PathLike[str]], database_url: str | None, wait_s: float | None) -> None:
    from proctor.guard import Guard
    from proctor.sdk import governance
    from proctor.store.engine import open_engine

    g = Guard([Path(p) for p in paths], open_engine(database_url), approval_wait_s=wait_s)
    old = governance.use_guard(g)
    if old is not None:
        old.close()


def flush(timeout_s: float = 10.0) -> bool:
    """Export everything recorded so far; True when it all reached the store or server."""
    from proctor.sdk import governance

    g = governance.guard()
    if g is not None:
        g.flush(timeout_s)
    rt = _runtime
    if rt is None:
        return True
    recorded = rt.recorder.flush(timeout_s)
    return rt.provider.force_flush(int(timeout_s * 1000)) and recorded


def shutdown() -> None:
    """Flush and stop exporting. Spans still undelivered stay in the spool for the next run."""
    global _runtime
    from proctor.sdk import governance

    with _lock:
        rt, _runtime = _runtime, None
        g = governance.use_guard(None)
    if g is not None:
        try:
            g.close()
        except Exception:
            log.exception("closing the guard failed")
    if rt is not None:
        try:
            rt.recorder.flush(5.0)
            rt.provider.shutdown()  # shuts the exporter down too
            rt.recorder.shutdown(1.0)
        except Exception:
            log.exception("proctor shutdown failed")


def recorder() -> SpanRecorder | None:
    """The lightweight recorder for the SDK's own spans, or None before init()."""
    rt = _runtime
    return rt.recorder if rt is not None else None


def status() -> dict[str, object]:
    rt = _runtime
    if rt is None:
        return {"initialized": False}
    return {"initialized": True, "mode": rt.mode, "instrumented": list(rt.instrumented)}
