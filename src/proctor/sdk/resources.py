"""Who is acting, as OTLP resource attributes.

OpenTelemetry fixes a span's resource when its tracer provider is made, but one process may
run several agents (and versions of one agent) side by side. ``proctor.session`` stamps the
agent's name, version label and content hash on each span; on export, spans are regrouped so
that each (agent, version, hash) gets a ``ResourceSpans`` of its own whose resource carries
those attributes beside the process's (``service.name`` ...). The span attributes stay too,
so a backend that reads only one of the two still sees them.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans

AGENT_RESOURCE_KEYS = ("gen_ai.agent.name", "gen_ai.agent.version", "proctor.agent.version_hash")
_KEYS = frozenset(AGENT_RESOURCE_KEYS)

Identity = tuple[tuple[str, str], ...]


def identity_of(attrs: dict[str, Any]) -> Identity:
    """The agent identity among a span's attributes, in AGENT_RESOURCE_KEYS order."""
    return tuple((k, v) for k in AGENT_RESOURCE_KEYS if isinstance(v := attrs.get(k), str) and v)


def identity_attributes(ident: Identity) -> list[KeyValue]:
    return [KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in ident]


def hoist_agent_identity(req: ExportTraceServiceRequest) -> ExportTraceServiceRequest:
    """``req`` with each agent version's spans under a resource that names it.

    Returned unchanged (the same object) when no span names an agent the resource does not.
    """
    if not any(kv.key in _KEYS for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans
               for kv in s.attributes):
        return req
    out = ExportTraceServiceRequest()
    for rs in req.resource_spans:
        already = {kv.key for kv in rs.resource.attributes}
        groups: dict[Identity, ResourceSpans] = {}
        for ss in rs.scope_spans:
            scopes: dict[Identity, Any] = {}
            for span in ss.spans:
                found = {kv.key: kv.value.string_value for kv in span.attributes
                         if kv.key in _KEYS and kv.key not in already}
                ident = identity_of(found)
                target = scopes.get(ident)
                if target is None:
                    group = groups.get(ident)
                    if group is None:
                        group = groups[ident] = out.resource_spans.add()
                        group.resource.CopyFrom(rs.resource)
                        group.resource.attributes.extend(identity_attributes(ident))
                        group.schema_url = rs.schema_url
                    target = scopes[ident] = group.scope_spans.add()
                    target.scope.CopyFrom(ss.scope)
                    target.schema_url = ss.schema_url
                target.spans.append(span)
    return out
