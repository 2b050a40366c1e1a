"""Tool output schemas observed in stored traces, and how they drift.

A manifest pins each tool's ``output_schema``, but nothing stops the tool behind it from
changing: an upstream API renames a field, an id becomes a string, a price goes from integer
to float. The traces already hold every result, so the shape a tool *really* returns can be
inferred from them (genson) and compared with the pin and with what the same tool returned
in the window before. This module does that, per tool, and names a span that shows each
change so a human can open the trace.

Design decisions, so the reports stay useful rather than noisy:

* **Absence is not evidence.** Inference drops every ``required``: a field that some calls
  omit is optional, not removed. A field is reported removed only when *no* result of the
  later window has it. Likewise a type that stops appearing (``["string", "null"]`` becoming
  ``"string"`` because no call happened to return null) is not a change: ``type_changed``
  means the later side has a type the earlier side did not allow.
* **integer is a number.** JSON Schema's ``integer`` is a subset of ``number`` and genson
  widens to ``number`` as soon as one float is seen. So ``number`` → ``integer`` (a window
  where every price happened to be whole, or a pin of ``number`` observed as ``integer``) is
  no change, while ``integer`` → ``number`` is one: consumers that parse integers break on
  ``10.5``.
* **Type normalisation.** ``type`` as a string or a list, ``anyOf``/``oneOf`` (a union),
  ``allOf`` (an intersection), local ``$ref``, ``const``/``enum`` (their values' types) and
  OpenAPI ``nullable`` are all reduced to one node per path: a set of types (or "any"),
  properties and array items. Paths read ``customer.email``, ``items[].price``; array items
  are ``[]`` (``[].id`` for a tool returning a list), the root itself is ``$``.
* **Pins.** A pinned object that lists ``properties`` declares its fields: an observed field
  it does not list is ``field_added`` unless ``additionalProperties`` allows it (``true`` or
  a schema, which the field is then compared with). A pinned object without ``properties``,
  or an array without ``items``, constrains nothing below it.
* **What is read.** Tool spans (``kind = 'tool'``) with a result, minus failed calls (status
  ``error``): an error payload is not the tool's output shape and would read as drift.
  Reading is bounded: at most ``limit_per_tool`` spans per tool, newest first (the calls
  nearest the end of the window are the ones a drift report is about), fetched in batches by
  keyset pagination, one short-lived connection per batch so no read snapshot is held open
  while results are parsed.
* **Example spans need no second scan.** While reading, each (path, JSON type) records the
  first and last span where it occurred; a change's example is looked up there. Pinned-field
  removals take their example from the earlier window, when it has one.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from genson import SchemaBuilder
from sqlalchemy import Engine, and_, exists, or_, select

from proctor.store.schema import spans as spans_t
from proctor.store.schema import traces as traces_t

__all__ = [
    "SchemaChange",
    "ToolDrift",
    "ToolObservation",
    "compare_schemas",
    "drift_report",
    "infer_schema",
    "observe_tools",
]

# A path inside a result: property names, and None for "an item of this array".
Path = tuple[str | None, ...]
SpanRef = tuple[str, str]  # (trace_id, span_id)

FIELD_ADDED = "field_added"
FIELD_REMOVED = "field_removed"
TYPE_CHANGED = "type_changed"

_BATCH = 500  # rows per read; module-level so tests can exercise pagination with tiny batches
_MAX_DEPTH = 64  # deeper results are counted as unparsed: genson recurses and would overflow
_MAX_WITNESS_KEYS = 10_000  # (path, type) pairs remembered per tool: results keyed by ids are unbounded


# ---------------------------------------------------------------------------------------------
# Inference


def infer_schema(values: Iterable[Any]) -> dict[str, Any]:
    """The JSON schema genson infers for ``values``, relaxed and made deterministic.

    Every ``required`` is dropped (a field some calls omit is optional, not removed) and so is
    ``$schema``; types, properties, items and genson's ``anyOf`` are kept. Keys are sorted,
    type lists sorted and ``anyOf`` branches ordered canonically, so the same values in any
    order give the same document (it can be stored, hashed and diffed). An object node always
    carries ``properties`` (``{}`` when only empty objects were seen): in an *inferred* schema
    that records "no field observed", which is what lets a later field read as added.
    """
    builder = SchemaBuilder(schema_uri=None)
    for value in values:
        builder.add_object(value)
    relaxed = _relax(builder.to_schema())
    return relaxed if isinstance(relaxed, dict) else {}


def _canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _relax(node: Any) -> Any:
    if isinstance(node, list):
        return [_relax(v) for v in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key in sorted(node):
        value = node[key]
        if key in ("required", "$schema"):
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: _relax(sub) for name, sub in sorted(value.items())}
        elif key == "type" and isinstance(value, list):
            out[key] = sorted(value)
        elif key == "anyOf" and isinstance(value, list):
            out[key] = sorted((_relax(b) for b in value), key=_canonical)
        else:
            out[key] = _relax(value)
    t = out.get("type")
    if (t == "object" or (isinstance(t, list) and "object" in t)) and "properties" not in out:
        out["properties"] = {}
        out = dict(sorted(out.items()))
    return out


def _json_type(value: Any) -> str:
    """The JSON Schema type name of a parsed JSON value (bool before int: bool is an int)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "string"


def _shapes(value: Any) -> set[tuple[Path, str]] | None:
    """Every (path, type) in ``value``; None when it is nested deeper than ``_MAX_DEPTH``.
    Iterative, so a pathological result cannot overflow the stack here."""
    found: set[tuple[Path, str]] = set()
    stack: list[tuple[Path, Any]] = [((), value)]
    while stack:
        path, v = stack.pop()
        if len(path) > _MAX_DEPTH:
            return None
        found.add((path, _json_type(v)))
        if isinstance(v, dict):
            stack.extend(((*path, str(k)), sub) for k, sub in v.items())
        elif isinstance(v, list):
            stack.extend(((*path, None), sub) for sub in v)
    return found


def render_path(path: Path) -> str:
    """``("customer", "email")`` → ``customer.email``; ``("items", None, "price")`` →
    ``items[].price``; the root is ``$``."""
    if not path:
        return "$"
    out = ""
    for seg in path:
        if seg is None:
            out += "[]"
        else:
            out += f".{seg}" if out else seg
    return out


# ---------------------------------------------------------------------------------------------
# Normalised schemas and comparison


@dataclass(slots=True)
class _Node:
    """One path of a schema, reduced to what comparison needs.

    ``types`` None means any type (unconstrained, or unknown); ``properties`` None means the
    object's fields are not described; ``additional`` is the schema undeclared fields must
    match (None: undeclared fields are reported); ``items`` None means array items are not
    described.
    """

    types: frozenset[str] | None = None
    properties: dict[str, _Node] | None = None
    additional: _Node | None = None
    items: _Node | None = None


def _covered(t: str, allowed: frozenset[str] | None) -> bool:
    return allowed is None or t in allowed or (t == "integer" and "number" in allowed)


def _can_be(node: _Node, t: str) -> bool:
    return node.types is None or t in node.types


def _resolve_ref(root: Any, ref: str) -> Any:
    """A local JSON pointer (``#/$defs/customer``); None for anything else (remote refs are
    treated as unconstrained rather than fetched)."""
    if ref == "#":
        return root
    if not ref.startswith("#/"):
        return None
    node = root
    for raw in ref[2:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _normalize(schema: Any, root: Any, refs: frozenset[str] = frozenset()) -> _Node:
    if schema is False:
        return _Node(types=frozenset())
    if not isinstance(schema, Mapping):
        return _Node()  # True, {} or garbage: unconstrained
    ref = schema.get("$ref")
    if isinstance(ref, str):
        # a ref seen again on the same path is recursion (a tree of nodes): stop there
        target = None if ref in refs else _resolve_ref(root, ref)
        node = _normalize(target, root, refs | {ref}) if target is not None else _Node()
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        return _intersect(node, _normalize(rest, root, refs)) if rest else node

    combined = any(k in schema for k in ("anyOf", "oneOf", "allOf"))
    types: set[str] | None = None
    t = schema.get("type")
    if isinstance(t, str):
        types = {t}
    elif isinstance(t, list):
        types = {x for x in t if isinstance(x, str)}
    elif "const" in schema:
        types = {_json_type(schema["const"])}
    elif isinstance(schema.get("enum"), list):
        types = {_json_type(v) for v in schema["enum"]}
    elif not combined and ("properties" in schema or "additionalProperties" in schema):
        types = {"object"}
    elif not combined and ("items" in schema or "prefixItems" in schema):
        types = {"array"}
    if types is not None and schema.get("nullable") is True:
        types.add("null")

    props = schema.get("properties")
    properties = (
        {str(k): _normalize(v, root, refs) for k, v in props.items()} if isinstance(props, Mapping) else None
    )
    extra = schema.get("additionalProperties")
    additional = (
        _Node() if extra is True else _normalize(extra, root, refs) if isinstance(extra, Mapping) else None
    )
    item_nodes: list[_Node] = []
    items = schema.get("items")
    if isinstance(items, Mapping) or items is True:
        item_nodes.append(_normalize(items, root, refs))
    elif isinstance(items, list):  # draft 4 tuple form
        item_nodes.extend(_normalize(i, root, refs) for i in items)
    if isinstance(schema.get("prefixItems"), list):
        item_nodes.extend(_normalize(i, root, refs) for i in schema["prefixItems"])
    node = _Node(
        types=frozenset(types) if types is not None else None,
        properties=properties,
        additional=additional,
        items=_union_all(item_nodes) if item_nodes else None,
    )
    for key in ("anyOf", "oneOf"):
        branches = schema.get(key)
        if isinstance(branches, list) and branches:
            node = _intersect(node, _union_all([_normalize(b, root, refs) for b in branches]))
    branches = schema.get("allOf")
    if isinstance(branches, list):
        for b in branches:
            node = _intersect(node, _normalize(b, root, refs))
    return node


def _union_all(nodes: list[_Node]) -> _Node:
    out = nodes[0]
    for n in nodes[1:]:
        out = _union(out, n)
    return out


def _union(a: _Node, b: _Node) -> _Node:
    """What either of ``a`` or ``b`` allows (anyOf/oneOf). A branch that cannot be an object
    says nothing about properties, and likewise for arrays and items."""
    types = None if a.types is None or b.types is None else a.types | b.types
    obj = [n for n in (a, b) if _can_be(n, "object")]
    properties: dict[str, _Node] | None
    if not obj:
        properties = None
    elif any(n.properties is None and n.additional is None for n in obj):
        properties = None  # one branch allows any object: fields are not described
    else:
        properties = {}
        for n in obj:
            for k, sub in (n.properties or {}).items():
                properties[k] = _union(properties[k], sub) if k in properties else sub
    extras = [n.additional for n in obj if n.additional is not None]
    additional = _union_all(extras) if extras else None
    arr = [n.items for n in (a, b) if _can_be(n, "array")]
    items = None if not arr or any(i is None for i in arr) else _union_all([i for i in arr if i is not None])
    return _Node(types, properties, additional, items)


def _intersect(a: _Node, b: _Node) -> _Node:
    """What both ``a`` and ``b`` allow (allOf, or a node's own keywords beside anyOf). Fields
    are the union of both descriptions: a schema split over allOf parts still declares them all."""
    if a.types is None:
        types = b.types
    elif b.types is None:
        types = a.types
    else:
        types = frozenset(
            {t for t in a.types if _covered(t, b.types)} | {t for t in b.types if _covered(t, a.types)}
        )
    if a.properties is None or b.properties is None:
        properties = a.properties if b.properties is None else b.properties
    else:
        properties = dict(a.properties)
        for k, sub in b.properties.items():
            properties[k] = _intersect(properties[k], sub) if k in properties else sub
    # a side that lists fields without allowing others closes the object; otherwise extras
    # must satisfy whichever side(s) describe them
    closed = any(n.properties is not None and n.additional is None for n in (a, b))
    if closed:
        additional = None
    elif a.additional is not None and b.additional is not None:
        additional = _intersect(a.additional, b.additional)
    else:
        additional = a.additional if a.additional is not None else b.additional
    if a.items is None or b.items is None:
        items = a.items if b.items is None else b.items
    else:
        items = _intersect(a.items, b.items)
    return _Node(types, properties, additional, items)


def _render_types(types: frozenset[str] | None) -> Any:
    if types is None:
        return None
    if len(types) == 1:
        return next(iter(types))
    return sorted(types)


@dataclass(frozen=True, slots=True)
class SchemaChange:
    """One difference between an earlier (or pinned) schema and a later, observed one.

    ``before``/``after`` are the type(s) at ``path`` — a string, a sorted list, or None when
    the field is absent on that side (or its type unconstrained). ``example_span`` is
    (trace_id, span_id) of a span showing the new shape (added, type_changed) or of the last
    span that still had the field (removed); None when no such span was read.
    """

    tool: str
    kind: str  # "field_added" | "field_removed" | "type_changed"
    path: str
    before: Any
    after: Any
    example_span: SpanRef | None = None


@dataclass(frozen=True, slots=True)
class _Found:
    change: SchemaChange
    path: Path
    before_types: frozenset[str] | None


def _diff(tool: str, before: Any, after: Any) -> list[_Found]:
    out: list[_Found] = []
    _walk(tool, _normalize(before, before), _normalize(after, after), (), out)
    return out


def _walk(tool: str, b: _Node, a: _Node, path: Path, out: list[_Found]) -> None:
    def found(kind: str, p: Path, before: _Node | None, after: _Node | None) -> None:
        bt = before.types if before is not None else None
        change = SchemaChange(
            tool, kind, render_path(p), _render_types(bt), _render_types(after.types) if after else None
        )
        out.append(_Found(change, p, bt))

    if b.types is not None and a.types is not None and any(not _covered(t, b.types) for t in a.types):
        found(TYPE_CHANGED, path, b, a)
    if (
        a.properties is not None
        and (b.properties is not None or b.additional is not None)
        and _can_be(b, "object")
        and _can_be(a, "object")
    ):
        declared = b.properties or {}
        for k in sorted(declared.keys() - a.properties.keys()):
            found(FIELD_REMOVED, (*path, k), declared[k], None)
        for k in sorted(a.properties):
            sub = a.properties[k]
            if k in declared:
                _walk(tool, declared[k], sub, (*path, k), out)
            elif b.additional is not None:
                _walk(tool, b.additional, sub, (*path, k), out)
            else:
                found(FIELD_ADDED, (*path, k), None, sub)
    if b.items is not None and a.items is not None and _can_be(b, "array") and _can_be(a, "array"):
        _walk(tool, b.items, a.items, (*path, None), out)


def compare_schemas(tool: str, before: Mapping[str, Any], after: Mapping[str, Any]) -> list[SchemaChange]:
    """What changed from ``before`` (a pinned or earlier-observed schema) to ``after``.

    Structural: properties and array items are walked together; at each path the type sets
    are compared with ``integer`` counted inside ``number`` (see the module docstring). A new
    field or a removed one is reported once, not with every field beneath it. Changes come in
    walk order (a path's type before its fields, fields by name). No example spans here: this
    compares documents; :func:`drift_report` adds them from the traces.
    """
    return [f.change for f in _diff(tool, before, after)]


# ---------------------------------------------------------------------------------------------
# Reading tool results from the store


@dataclass(slots=True)
class _Seen:
    first_ns: int
    first: SpanRef
    last_ns: int
    last: SpanRef


@dataclass(slots=True)
class ToolObservation:
    """What one tool returned over the spans read.

    ``calls`` results were parsed and fed to inference; ``unparsed`` were not JSON (or nested
    deeper than inference can take) and were skipped. ``first_ns``/``last_ns`` bound the start
    times of every span read. ``witnesses`` maps (path, JSON type) to the first and last span
    where it occurred, which is how change reports name an example span without reading again.
    """

    tool: str
    calls: int
    unparsed: int
    schema: dict[str, Any]
    first_ns: int
    last_ns: int
    witnesses: dict[tuple[Path, str], _Seen] = field(default_factory=dict, repr=False, compare=False)


def _scope(since_ns: int | None, until_ns: int | None, agent: str | None) -> list[Any]:
    s = spans_t.c
    out: list[Any] = [
        s.kind == "tool",
        s.tool_name.is_not(None),
        s.tool_result.is_not(None),
        s.status != "error",
    ]
    if since_ns is not None:
        out.append(s.start_ns >= since_ns)
    if until_ns is not None:
        out.append(s.start_ns < until_ns)
    if agent is not None:
        # many frameworks stamp the agent on the agent span only: fall back to the trace's agent
        t = traces_t.c
        out.append(
            or_(
                s.agent_name == agent,
                and_(
                    s.agent_name.is_(None),
                    exists().where(t.trace_id == s.trace_id, t.agent_name == agent),
                ),
            )
        )
    return out


def _observe_one(engine: Engine, tool: str, scope: list[Any], limit: int) -> ToolObservation | None:
    """Read up to ``limit`` of ``tool``'s spans, newest first, by keyset pages of ``_BATCH``
    (start_ns, trace_id, span_id descending: ties on start time neither repeat nor skip)."""
    s = spans_t.c
    builder = SchemaBuilder(schema_uri=None)
    witnesses: dict[tuple[Path, str], _Seen] = {}
    calls = unparsed = read = 0
    first_ns = last_ns = 0
    cursor: tuple[int, str, str] | None = None
    while read < limit:
        want = min(_BATCH, limit - read)
        q = select(s.start_ns, s.trace_id, s.span_id, s.tool_result).where(*scope, s.tool_name == tool)
        if cursor is not None:
            c_start, c_trace, c_span = cursor
            q = q.where(
                or_(
                    s.start_ns < c_start,
                    and_(
                        s.start_ns == c_start,
                        or_(s.trace_id < c_trace, and_(s.trace_id == c_trace, s.span_id < c_span)),
                    ),
                )
            )
        q = q.order_by(s.start_ns.desc(), s.trace_id.desc(), s.span_id.desc()).limit(want)
        with engine.connect() as conn:
            rows = conn.execute(q).all()
        if not rows:
            break
        for start_ns, trace_id, span_id, raw in rows:
            if read == 0:
                last_ns = start_ns
            first_ns = start_ns
            read += 1
            try:
                value = orjson.loads(raw)
            except orjson.JSONDecodeError:
                unparsed += 1
                continue
            shapes = _shapes(value)
            if shapes is None:
                unparsed += 1
                continue
            builder.add_object(value)
            calls += 1
            ref = (trace_id, span_id)
            for key in shapes:
                seen = witnesses.get(key)
                if seen is None:
                    if len(witnesses) < _MAX_WITNESS_KEYS:
                        witnesses[key] = _Seen(start_ns, ref, start_ns, ref)
                else:  # rows come newest first, so this one is the earliest yet
                    seen.first_ns, seen.first = start_ns, ref
        if len(rows) < want:
            break  # the range is exhausted
        cursor = (rows[-1][0], rows[-1][1], rows[-1][2])
    if read == 0:
        return None
    schema = _relax(builder.to_schema()) if calls else {}
    return ToolObservation(tool, calls, unparsed, schema, first_ns, last_ns, witnesses)


def observe_tools(
    engine: Engine,
    *,
    since_ns: int | None = None,
    until_ns: int | None = None,
    tools: Iterable[str] | None = None,
    agent: str | None = None,
    limit_per_tool: int = 5000,
) -> dict[str, ToolObservation]:
    """Infer each tool's output schema from its stored results, start time in [since, until).

    ``tools`` limits the tools read (default: every tool with a result in the range);
    ``agent`` keeps the spans of that agent (the span's own agent, else its trace's). At most
    ``limit_per_tool`` spans are read per tool, newest first, in batches; a tool with no span
    in range is absent from the result. Inference equals :func:`infer_schema` over the parsed
    results.
    """
    if limit_per_tool < 1:
        raise ValueError(f"limit_per_tool must be at least 1, got {limit_per_tool}")
    scope = _scope(since_ns, until_ns, agent)
    if tools is None:
        q = select(spans_t.c.tool_name).where(*scope).distinct().order_by(spans_t.c.tool_name)
        with engine.connect() as conn:
            names = [r[0] for r in conn.execute(q)]
    else:
        names = sorted(set(tools))
    out: dict[str, ToolObservation] = {}
    for name in names:
        obs = _observe_one(engine, name, scope, limit_per_tool)
        if obs is not None:
            out[name] = obs
    return out


# ---------------------------------------------------------------------------------------------
# Drift


@dataclass(slots=True)
class ToolDrift:
    """One tool's report: the latest window's observation (None when the tool was not called
    with a result in it), its changes against the pinned schema and against the window before,
    and that earlier observation (None when there was none)."""

    tool: str
    observed: ToolObservation | None
    vs_pinned: list[SchemaChange]
    vs_earlier: list[SchemaChange]
    earlier: ToolObservation | None = None

    @property
    def changed(self) -> bool:
        return bool(self.vs_pinned or self.vs_earlier)


def _example(found: _Found, current: ToolObservation, previous: ToolObservation | None) -> SpanRef | None:
    """A span for one change: the earliest of the later window showing a new type at the path
    (added, type_changed), or the last one that still had the field (removed)."""
    change = found.change
    if change.kind == FIELD_REMOVED:
        if previous is None:
            return None
        best: _Seen | None = None
        for (path, _t), seen in previous.witnesses.items():
            if path == found.path and (best is None or seen.last_ns > best.last_ns):
                best = seen
        return best.last if best else None
    best = None
    for (path, t), seen in current.witnesses.items():
        if path != found.path or (change.kind == TYPE_CHANGED and _covered(t, found.before_types)):
            continue
        if best is None or seen.first_ns < best.first_ns:
            best = seen
    return best.first if best else None


def _changes(
    tool: str, before: Mapping[str, Any], current: ToolObservation, previous: ToolObservation | None
) -> list[SchemaChange]:
    return [
        replace(f.change, example_span=_example(f, current, previous))
        for f in _diff(tool, before, current.schema)
    ]


def drift_report(
    engine: Engine,
    *,
    pinned: Mapping[str, Mapping[str, Any] | None] | None = None,
    window_ns: int,
    now_ns: int | None = None,
    tools: Iterable[str] | None = None,
    agent: str | None = None,
    limit_per_tool: int = 5000,
) -> list[ToolDrift]:
    """Per tool, the schema observed in the latest window [now - window, now] compared with the
    window before it [now - 2·window, now - window) and with the pinned output schema.

    ``pinned`` maps tool names to their manifest ``output_schema`` (None or a missing entry:
    nothing pinned). A tool appears when it was observed in either window or is pinned; a side
    with no parsed result is not compared (a tool not called is not a tool that changed).
    Sorted by tool name.
    """
    if window_ns <= 0:
        raise ValueError(f"window_ns must be positive, got {window_ns}")
    now = time.time_ns() if now_ns is None else now_ns
    wanted = None if tools is None else set(tools)
    kw: dict[str, Any] = {"tools": wanted, "agent": agent, "limit_per_tool": limit_per_tool}
    latest = observe_tools(engine, since_ns=now - window_ns, until_ns=now + 1, **kw)
    earlier = observe_tools(engine, since_ns=now - 2 * window_ns, until_ns=now - window_ns, **kw)
    pins = {
        name: schema
        for name, schema in (pinned or {}).items()
        if schema is not None and (wanted is None or name in wanted)
    }
    report: list[ToolDrift] = []
    for name in sorted(set(latest) | set(earlier) | set(pins)):
        cur, prev = latest.get(name), earlier.get(name)
        baseline = prev if prev is not None and prev.calls else None
        vs_pinned: list[SchemaChange] = []
        vs_earlier: list[SchemaChange] = []
        if cur is not None and cur.calls:
            if name in pins:
                vs_pinned = _changes(name, pins[name], cur, baseline)
            if baseline is not None:
                vs_earlier = _changes(name, baseline.schema, cur, baseline)
        report.append(ToolDrift(name, cur, vs_pinned, vs_earlier, prev))
    return report
