"""What changed between two agent versions: a semantic diff of resolved manifests.

Two resolved manifests (``docs/registry.md``: plain dicts, files already read, tools sorted by
name, the policy bundle's document inlined) are compared part by part, and every difference
becomes one :class:`Change` naming its *area*, its *kind*, *where* it is and a one-line
summary a human reads::

    diff_versions(older, newer)   # -> [Change, ...] in a fixed order
    render_diff(changes)          # -> text; prompts as unified diffs
    changes_to_json(changes)      # -> [dict, ...] for the API and ``--json``

Pure functions: no I/O, no clock, the same inputs always give the same list, in the order of
:data:`AREAS` and then by ``path``.

What is compared, and how:

- **model** — provider, id and any other model field (``model_changed``); each parameter
  added, removed or changed (``parameter_changed``: ``before`` is ``None`` for an added one,
  ``after`` is ``None`` for a removed one).
- **prompt** — by name: ``prompt_added`` / ``prompt_removed`` / ``prompt_changed``, with the
  unified diff (3 lines of context) in ``detail`` and the contents' sha256 in ``before`` /
  ``after``.
- **tool** — by name: ``tool_added`` / ``tool_removed``; for a tool in both, its description,
  side effect, version and source, and its input and output schemas keyword by keyword (see
  *Schema compatibility* below: each schema change says whether it breaks callers).
- **policy** — ``policy_added`` / ``policy_removed``; the bundle's name or version
  (``policy_bundle_changed``; a hash change is reported on its own only when nothing in the
  document explains it); rules matched by ``id`` (``policy_rule_added`` / ``_removed`` /
  ``_changed``, naming each changed field), ``default_effect`` per side-effect class
  (``policy_default_changed``), the tool catalogue by name (``policy_catalogue_changed``),
  ``mode`` (``policy_mode_changed``), ``scope`` (``policy_scope_changed``),
  ``capabilities`` (``policy_capability_changed``) and anything else in the document
  (``policy_document_changed``).
- **tier** (``tier_changed``), **gates** per gate (``gates_changed``), **entrypoint**
  (``entrypoint_changed``).
- **metadata** — ``label`` (the human version label; ``label_changed``), ``owner``,
  ``description``, each entry of ``labels`` (``labels_changed``), the agent's ``name``
  (``name_changed``) and any other top-level field (``field_changed``), so nothing that changes
  the content hash goes unreported.

Schema compatibility
--------------------

A tool's schemas are judged from the *caller's* side: the agent (the model) sends input that
must satisfy ``input_schema``, and reads output described by ``output_schema``. A change that
lets *fewer* inputs through can reject a call the agent makes today; a change that lets *more*
outputs through can hand the agent something it does not expect. So each change is first
classified by what it does to the set of values the schema accepts — it *widens* it, *narrows*
it, *changes* it (neither a subset nor a superset), or is an annotation — and then judged:

========================================  ============  ============
change                                    input         output
========================================  ============  ============
required property added                   breaking      compatible
optional property added                   compatible    compatible
property removed                          compatible    breaking
  (…when ``additionalProperties`` is      breaking      breaking
  false, or a schema, or
  ``patternProperties`` is set, after)
optional property becomes required        breaking      compatible
required property becomes optional        compatible    breaking
type widened (``integer`` -> ``number``,  compatible    breaking
  ``string`` -> ``[string, null]``,
  type removed)
type narrowed (or a type added)           breaking      compatible
type changed (``string`` -> ``integer``)  breaking      breaking
enum gains values (or is removed)         compatible    breaking
enum loses values (or is added)           breaking      compatible
enum gains some and loses others          breaking      breaking
bound tightened (maxLength, maximum,      breaking      compatible
  exclusiveMaximum, maxItems,
  maxProperties lowered or added;
  the min… ones raised or added)
bound loosened (the reverse, or removed)  compatible    breaking
pattern / format added                    breaking      compatible
pattern / format removed                  compatible    breaking
pattern / format changed                  breaking      breaking
uniqueItems turned on                     breaking      compatible
uniqueItems turned off                    compatible    breaking
additionalProperties closed (true ->      breaking      compatible
  false or a schema; schema -> false)
additionalProperties opened (reverse)     compatible    breaking
whole schema added (from ``null``)        breaking      compatible
whole schema removed (to ``null``)        compatible    breaking
annotation (description, title,           compatible    compatible
  examples, default, $comment,
  deprecated, readOnly, writeOnly)
anything else (anyOf, oneOf, allOf, not,  breaking      breaking
  $ref, if/then, prefixItems, a
  malformed keyword…): "unclassified
  schema change"
========================================  ============  ============

The diff recurses into ``properties`` (path ``….properties.<name>``), ``items`` and
``additionalProperties`` schemas, and reports each change with its path, the keyword last
(``tools.lookup_customer.input_schema.properties.email.type``); property-level changes (added,
removed, required or not) are reported at the property's path. When a type changes outright
(neither wider nor narrower), the rest of that node is not compared: its keywords meant
something else before. ``null``, ``true`` and ``{}`` all mean "anything"; ``false`` means
"nothing". A schema rewritten into an equivalent form (``"string"`` -> ``["string"]``) is
reported once, as compatible, so that every content change is accounted for.

Adding an optional input property is judged compatible even though, strictly, it constrains a
key that was unconstrained before: callers built against the old schema do not send it.
Removing an output property is judged breaking even when the output is closed: a reader may
rely on a field that was only sometimes there.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["AREAS", "Change", "changes_to_json", "diff_versions", "render_diff", "unified_prompt_diff"]

#: The areas, in the order changes are listed.
AREAS: Final[tuple[str, ...]] = (
    "model", "prompt", "tool", "policy", "tier", "metadata", "gates", "entrypoint",
)
_AREA_RANK: Final = {area: i for i, area in enumerate(AREAS)}


@dataclass(frozen=True, slots=True)
class Change:
    """One difference between two agent versions.

    ``breaking`` is set for tool schema changes only: ``True`` when a caller built against the
    older version may fail against the newer one, ``False`` when it is compatible; ``None``
    elsewhere (whether a new model or a stricter policy "breaks" an agent is for an evaluation
    to say, not a diff). ``detail`` carries the unified diff of a prompt.
    """

    area: str
    kind: str
    path: str
    summary: str
    before: Any = None
    after: Any = None
    breaking: bool | None = None
    detail: str = ""


# ---------------------------------------------------------------------------------------------
# public API


def diff_versions(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[Change]:
    """Every change from resolved manifest ``a`` (older) to ``b`` (newer), in a fixed order.

    Identical manifests give ``[]``. The order is :data:`AREAS`, then ``path``, then ``kind``.
    """
    if not isinstance(a, Mapping) or not isinstance(b, Mapping):
        raise TypeError("diff_versions compares two resolved manifests (mappings)")
    out: list[Change] = []
    _diff_model(a.get("model"), b.get("model"), out)
    _diff_prompts(a.get("prompts"), b.get("prompts"), out)
    _diff_tools(a.get("tools"), b.get("tools"), out)
    _diff_policy(a.get("policy"), b.get("policy"), out)
    _diff_scalar(a.get("tier"), b.get("tier"), out, area="tier", kind="tier_changed", path="tier")
    _diff_metadata(a, b, out)
    _diff_gates(a.get("gates"), b.get("gates"), out)
    _diff_scalar(a.get("entrypoint"), b.get("entrypoint"), out,
                 area="entrypoint", kind="entrypoint_changed", path="entrypoint")
    if not out and not _same(a, b):  # a safety net: every content change is reported
        out.append(Change("metadata", "field_changed", "", "content changed (not itemised)"))
    return sorted(out, key=_order)


def changes_to_json(changes: list[Change]) -> list[dict[str, Any]]:
    """The changes as JSON-ready dicts, every field present (``before`` / ``after`` copied)."""
    return [dataclasses.asdict(c) for c in changes]


_RESET = "\x1b[0m"
_BOLD = "\x1b[1m"
_RED = "\x1b[31m"
_GREEN = "\x1b[32m"
_YELLOW = "\x1b[33m"
_CYAN = "\x1b[36m"
_BOLD_RED = "\x1b[1;31m"


def render_diff(changes: list[Change], *, color: bool = False) -> str:
    """The changes as text for a terminal: a count, then each area with a line per change.

    A line starts with ``+`` (added), ``-`` (removed), ``!`` (a breaking schema change) or
    ``~`` (changed); a prompt change is followed by its unified diff, indented. ``color`` adds
    ANSI colours. No changes renders as ``no changes``.
    """
    if not changes:
        return "no changes"

    def paint(text: str, code: str) -> str:
        return f"{code}{text}{_RESET}" if color and code else text

    n = len(changes)
    broken = sum(1 for c in changes if c.breaking)
    head = f"{n} change{'' if n == 1 else 's'}"
    if broken:
        head += f", {broken} breaking"
    lines = [head]
    area = None
    for c in changes:
        if c.area != area:
            area = c.area
            lines.append(paint(area, _BOLD))
        mark = _mark(c)
        lines.append(paint(f"  {mark} {c.summary}", _MARK_COLOUR[mark]))
        for d in c.detail.splitlines():
            lines.append("    " + paint(d, _diff_colour(d)))
    return "\n".join(lines)


def _mark(c: Change) -> str:
    if c.breaking:
        return "!"
    if c.kind.endswith("_added"):
        return "+"
    if c.kind.endswith("_removed"):
        return "-"
    if c.area != "tool":  # an entry of a mapping (a parameter, a label, a gate) added or removed
        if c.before is None and c.after is not None:
            return "+"
        if c.after is None and c.before is not None:
            return "-"
    return "~"


_MARK_COLOUR: Final = {"!": _BOLD_RED, "+": _GREEN, "-": _RED, "~": _YELLOW}


def _diff_colour(line: str) -> str:
    if line.startswith(("+++", "---")):
        return _BOLD
    if line.startswith("@@"):
        return _CYAN
    if line.startswith("+"):
        return _GREEN
    if line.startswith("-"):
        return _RED
    return ""


# ---------------------------------------------------------------------------------------------
# values: comparing and showing


_MISSING: Final = object()


def _norm(v: Any) -> Any:
    """A JSON value as canonical JSON sees it: ``1.0`` is ``1``, ``True`` is not ``1``."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, Mapping):
        return {str(k): _norm(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_norm(x) for x in v]
    return v


def _key(v: Any) -> str:
    if v is _MISSING:
        return "\x00missing"
    return json.dumps(_norm(v), sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def _same(a: Any, b: Any) -> bool:
    return _key(a) == _key(b)


_BARE = re.compile(r"[\w.:/*@+\-]+")


def _fmt(v: Any, limit: int = 80) -> str:
    """A value in a summary: bare words bare, other strings quoted, the rest as JSON; an absent
    value is ``(unset)``."""
    if v is _MISSING:
        return "(unset)"
    if isinstance(v, str):
        text = v if _BARE.fullmatch(v) else "'" + v.replace("\n", "\\n") + "'"
    else:
        text = json.dumps(_norm(v), sort_keys=True, ensure_ascii=False, separators=(", ", ": "),
                          default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _arrow(a: Any, b: Any) -> str:
    return f"{_fmt(a)} -> {_fmt(b)}"


def _order(c: Change) -> tuple[int, str, str, str]:
    return (_AREA_RANK.get(c.area, len(AREAS)), c.path, c.kind, c.summary)


def _mapping(v: Any) -> dict[str, Any] | None:
    """``v`` as a dict (``None`` is empty), or ``None`` when it is not a mapping at all."""
    if v is None:
        return {}
    if isinstance(v, Mapping):
        return {str(k): x for k, x in v.items()}
    return None


def _get(m: Mapping[str, Any], key: str) -> Any:
    return m.get(key, _MISSING)


def _plain(v: Any) -> Any:
    return None if v is _MISSING else v


def _diff_scalar(a: Any, b: Any, out: list[Change], *, area: str, kind: str, path: str,
                 noun: str | None = None) -> None:
    if not _same(a, b):
        out.append(Change(area, kind, path, f"{noun or path} {_arrow(a, b)}", _plain(a), _plain(b)))


def _diff_entries(a: Any, b: Any, out: list[Change], *, area: str, kind: str, path: str,
                  noun: str, sep: str = " ", whole: str | None = None, short_change: bool = False) -> None:
    """A mapping compared entry by entry (a non-mapping as one value, named ``whole`` or
    ``noun``); ``noun`` names an entry in a summary (``gate policy_lint: true -> false``,
    ``labels.data: a -> b``); ``short_change`` writes a changed entry as ``key a -> b``."""
    ma, mb = _mapping(a), _mapping(b)
    if ma is None or mb is None:
        _diff_scalar(a, b, out, area=area, kind=kind, path=path, noun=whole or noun)
        return
    for k in sorted(ma.keys() | mb.keys()):
        va, vb = _get(ma, k), _get(mb, k)
        if _same(va, vb):
            continue
        name = f"{noun}{sep}{k}"
        if va is _MISSING:
            summary = f"{name} added: {_fmt(vb)}"
        elif vb is _MISSING:
            summary = f"{name} removed (was {_fmt(va)})"
        else:
            summary = f"{k} {_arrow(va, vb)}" if short_change else f"{name}: {_arrow(va, vb)}"
        out.append(Change(area, kind, f"{path}.{k}", summary, _plain(va), _plain(vb)))


# ---------------------------------------------------------------------------------------------
# model, prompts, metadata, gates


def _diff_model(a: Any, b: Any, out: list[Change]) -> None:
    ma, mb = _mapping(a), _mapping(b)
    if ma is None or mb is None:
        _diff_scalar(a, b, out, area="model", kind="model_changed", path="model")
        return
    for k in sorted(ma.keys() | mb.keys()):
        if k == "parameters":
            _diff_parameters(ma.get(k), mb.get(k), out)
        else:
            _diff_scalar(_get(ma, k), _get(mb, k), out, area="model", kind="model_changed",
                         path=f"model.{k}", noun=f"model {k}")


def _diff_parameters(a: Any, b: Any, out: list[Change]) -> None:
    _diff_entries(a, b, out, area="model", kind="parameter_changed", path="model.parameters", noun="parameter",
                  whole="parameters", short_change=True)


def _prompt_text(v: Any) -> str | None:
    if isinstance(v, str):
        return v
    if isinstance(v, Mapping) and isinstance(v.get("content"), str):
        return str(v["content"])
    return None


def _prompt_hash(v: Any) -> str | None:
    if isinstance(v, Mapping) and isinstance(v.get("sha256"), str):
        return str(v["sha256"])
    text = _prompt_text(v)
    return None if text is None else hashlib.sha256(text.encode()).hexdigest()


def _diff_lines(text: str) -> list[str]:
    """Lines split on ``\\n`` only, each ending in one; a last line without one says so."""
    parts = text.split("\n")
    lines = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1] + "\n\\ No newline at end of file\n")
    return lines


def unified_prompt_diff(name: str, before: str | None, after: str | None) -> str:
    """The unified diff (3 lines of context) of a prompt; ``None`` is an absent prompt."""
    old = f"a/prompts/{name}" if before is not None else "/dev/null"
    new = f"b/prompts/{name}" if after is not None else "/dev/null"
    lines = difflib.unified_diff(_diff_lines(before or ""), _diff_lines(after or ""),
                                 fromfile=old, tofile=new, n=3)
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines).rstrip("\n")


def _diff_prompts(a: Any, b: Any, out: list[Change]) -> None:
    pa, pb = _mapping(a), _mapping(b)
    if pa is None or pb is None:
        _diff_scalar(a, b, out, area="prompt", kind="prompt_changed", path="prompts", noun="prompts")
        return
    for name in sorted(pa.keys() | pb.keys()):
        va, vb = _get(pa, name), _get(pb, name)
        if _same(va, vb):
            continue
        ta = None if va is _MISSING else _prompt_text(va)
        tb = None if vb is _MISSING else _prompt_text(vb)
        path = f"prompts.{name}"
        if va is _MISSING:
            out.append(Change("prompt", "prompt_added", path, f"prompt {name} added ({_nlines(tb)})",
                              None, _prompt_hash(vb), detail=unified_prompt_diff(name, None, tb or "")))
            continue
        if vb is _MISSING:
            out.append(Change("prompt", "prompt_removed", path, f"prompt {name} removed ({_nlines(ta)})",
                              _prompt_hash(va), None, detail=unified_prompt_diff(name, ta or "", None)))
            continue
        ha, hb = _prompt_hash(va), _prompt_hash(vb)
        if ta is not None and tb is not None and ta != tb:
            detail = unified_prompt_diff(name, ta, tb)
            plus = sum(1 for d in detail.splitlines() if d.startswith("+") and not d.startswith("+++"))
            minus = sum(1 for d in detail.splitlines() if d.startswith("-") and not d.startswith("---"))
            summary = f"prompt {name} changed: +{plus} -{minus} lines"
        else:
            detail = ""
            summary = f"prompt {name} changed ({_short(ha)} -> {_short(hb)})"
        out.append(Change("prompt", "prompt_changed", path, summary, ha, hb, detail=detail))


def _nlines(text: str | None) -> str:
    n = len(_diff_lines(text or ""))
    return f"{n} line{'' if n == 1 else 's'}"


def _short(h: Any) -> str:
    return str(h)[:12] if h else "(none)"


_METADATA: Final = {
    "name": ("name_changed", "name"),
    "label": ("label_changed", "label"),
    "owner": ("owner_changed", "owner"),
    "description": ("description_changed", "description"),
}
#: Top-level fields compared elsewhere (or, for labels, entry by entry).
_SECTIONS: Final = frozenset({"model", "prompts", "tools", "policy", "tier", "gates", "entrypoint", "labels"})


def _diff_metadata(a: Mapping[str, Any], b: Mapping[str, Any], out: list[Change]) -> None:
    for key in sorted(set(a) | set(b)):
        if key in _SECTIONS:
            continue
        kind, noun = _METADATA.get(key, ("field_changed", key))
        _diff_scalar(_get(a, key), _get(b, key), out, area="metadata", kind=kind, path=key, noun=noun)
    _diff_entries(a.get("labels"), b.get("labels"), out, area="metadata", kind="labels_changed",
                  path="labels", noun="labels", sep=".")


def _diff_gates(a: Any, b: Any, out: list[Change]) -> None:
    _diff_entries(a, b, out, area="gates", kind="gates_changed", path="gates", noun="gate")


# ---------------------------------------------------------------------------------------------
# tools


def _by_name(v: Any, field: str = "name") -> dict[str, Any] | None:
    """A list of named entries (or a mapping) keyed by name; ``None`` if it is neither."""
    if v is None:
        return {}
    if isinstance(v, Mapping):
        return {str(k): x for k, x in v.items()}
    if not isinstance(v, list):
        return None
    found: dict[str, Any] = {}
    for i, entry in enumerate(v):
        name = entry.get(field) if isinstance(entry, Mapping) else None
        key = str(name) if name is not None else f"#{i}"
        if key in found:
            key = f"{key}#{i}"
        found[key] = entry
    return found


_TOOL_FIELDS: Final = {
    "description": ("tool_description_changed", "description"),
    "side_effect": ("tool_side_effect_changed", "side effect"),
    "version": ("tool_version_changed", "version"),
    "source": ("tool_source_changed", "source"),
}


def _diff_tools(a: Any, b: Any, out: list[Change]) -> None:
    ta, tb = _by_name(a), _by_name(b)
    if ta is None or tb is None:
        _diff_scalar(a, b, out, area="tool", kind="tool_changed", path="tools", noun="tools")
        return
    for name in sorted(ta.keys() | tb.keys()):
        va, vb = _get(ta, name), _get(tb, name)
        if _same(va, vb):
            continue
        path = f"tools.{name}"
        if va is _MISSING:
            out.append(Change("tool", "tool_added", path, f"tool {name} added{_side(vb)}", None, vb))
        elif vb is _MISSING:
            out.append(Change("tool", "tool_removed", path, f"tool {name} removed{_side(va)}", va, None))
        else:
            _diff_tool(name, va, vb, out)


def _side(tool: Any) -> str:
    se = tool.get("side_effect") if isinstance(tool, Mapping) else None
    return f" ({se})" if isinstance(se, str) else ""


def _diff_tool(name: str, a: Any, b: Any, out: list[Change]) -> None:
    ma, mb = _mapping(a), _mapping(b)
    path = f"tools.{name}"
    if ma is None or mb is None:
        _diff_scalar(a, b, out, area="tool", kind="tool_changed", path=path, noun=f"tool {name}")
        return
    for key in sorted(ma.keys() | mb.keys()):
        va, vb = _get(ma, key), _get(mb, key)
        if _same(va, vb):
            continue
        if key in ("input_schema", "output_schema"):
            _diff_tool_schema(name, key[: -len("_schema")], _plain(va), _plain(vb), out)
            continue
        kind, noun = _TOOL_FIELDS.get(key, ("tool_changed", key))
        out.append(Change("tool", kind, f"{path}.{key}", f"tool {name} {noun} {_arrow(va, vb)}",
                          _plain(va), _plain(vb)))


# ---------------------------------------------------------------------------------------------
# tool schemas (the compatibility rules are in the module docstring)

_WIDEN, _NARROW, _CHANGE, _NEUTRAL = "widen", "narrow", "change", "neutral"

_ANNOTATIONS: Final = ("$comment", "default", "deprecated", "description", "examples", "readOnly",
                       "title", "writeOnly")
#: Bounds where a lower value accepts fewer values, and where a higher one does.
_UPPER: Final = ("exclusiveMaximum", "maxItems", "maxLength", "maxProperties", "maximum")
_LOWER: Final = ("exclusiveMinimum", "minItems", "minLength", "minProperties", "minimum")
_STRING_CONSTRAINTS: Final = ("format", "pattern")


class _SchemaDiff:
    """The changes between two versions of one tool schema, with their breaking verdicts."""

    def __init__(self, tool: str, side: str, out: list[Change]) -> None:
        self.tool = tool
        self.side = side  # "input" | "output"
        self.out = out
        self.base = f"tools.{tool}.{side}_schema"
        self.kind = f"tool_{side}_schema_changed"

    def breaking(self, effect: str) -> bool:
        """Input breaks when it narrows; output breaks when it widens; a change breaks both."""
        if effect == _NEUTRAL:
            return False
        if effect == _WIDEN:
            return self.side == "output"
        if effect == _NARROW:
            return self.side == "input"
        return True

    def emit(self, where: tuple[str, ...], at: tuple[str, ...], what: str, breaking: bool,
             before: Any = None, after: Any = None) -> None:
        """A change described at schema node ``where`` and located at ``where + at``."""
        path = ".".join((self.base, *where, *at))
        loc = _where(where)
        verdict = "breaking" if breaking else "compatible"
        summary = f"tool {self.tool} {self.side}{' ' + loc if loc else ''}: {what} ({verdict})"
        self.out.append(Change("tool", self.kind, path, summary, _plain(before), _plain(after), breaking))

    def whole(self, a: Any, b: Any) -> None:
        """Compare two schemas, one of them possibly ``None`` (no schema)."""
        n = len(self.out)
        if a is None and not _permissive(b):
            self.emit((), (), f"{self.side} schema added", self.breaking(_NARROW), None, b)
        elif b is None and not _permissive(a):
            self.emit((), (), f"{self.side} schema removed", self.breaking(_WIDEN), a, None)
        else:
            self.node(a, b, ())
        if len(self.out) == n and not _same(a, b):
            self.emit((), (), f"{self.side} schema rewritten (equivalent)", False, a, b)

    def node(self, a: Any, b: Any, where: tuple[str, ...]) -> None:
        if _same(a, b):
            return
        sa, sb = _schema(a), _schema(b)
        if sa is None or sb is None:  # a boolean false schema, or not a schema at all
            if a is False and sb is not None:
                self.emit(where, (), "schema false (nothing) -> a schema", self.breaking(_WIDEN), a, b)
            elif b is False and sa is not None:
                self.emit(where, (), "schema -> false (nothing)", self.breaking(_NARROW), a, b)
            else:
                self.emit(where, (), "unclassified schema change", True, a, b)
            return
        handled: set[str] = set()
        if not self.types(sa, sb, where, handled):
            return  # the type changed outright: the node's other keywords meant something else
        self.enums(sa, sb, where, handled)
        self.bounds(sa, sb, where, handled)
        self.object(sa, sb, where, handled)
        self.items(sa, sb, where, handled)
        for key in sorted(sa.keys() | sb.keys()):
            if key in handled:
                continue
            va, vb = _get(sa, key), _get(sb, key)
            if _same(va, vb):
                continue
            if key in _ANNOTATIONS:
                self.emit(where, (key,), f"{key} {_arrow(va, vb)}", False, va, vb)
            else:
                self.emit(where, (key,), f"unclassified schema change ({key})", True, va, vb)

    def types(self, a: dict[str, Any], b: dict[str, Any], where: tuple[str, ...],
              handled: set[str]) -> bool:
        """Compare ``type``; ``False`` when it changed outright (neither wider nor narrower)."""
        if not (_valid_type(a.get("type")) and _valid_type(b.get("type"))):
            return True  # left to the generic comparison: unclassified
        handled.add("type")
        ta, tb = _types(a), _types(b)
        wider, narrower = _subtypes(ta, tb), _subtypes(tb, ta)
        if wider and narrower:
            return True  # the same set of types, perhaps written differently
        text = f"type {_fmt_types(ta)} -> {_fmt_types(tb)}"
        if wider:
            self.emit(where, ("type",), f"{text} (widened)", self.breaking(_WIDEN), a.get("type"), b.get("type"))
            return True
        if narrower:
            self.emit(where, ("type",), f"{text} (narrowed)", self.breaking(_NARROW), a.get("type"), b.get("type"))
            return True
        self.emit(where, ("type",), f"{text} (changed)", self.breaking(_CHANGE), a.get("type"), b.get("type"))
        return False

    def enums(self, a: dict[str, Any], b: dict[str, Any], where: tuple[str, ...], handled: set[str]) -> None:
        (oka, ea), (okb, eb) = _enum(a), _enum(b)
        if not (oka and okb):
            return  # malformed: unclassified
        handled.update(("enum", "const"))
        keyword = "enum" if "enum" in a or "enum" in b else "const"
        va, vb = a.get(keyword), b.get(keyword)
        if ea is None and eb is None:
            return
        if ea is None:
            self.emit(where, (keyword,), f"{keyword} added: {_fmt(vb)}", self.breaking(_NARROW), va, vb)
            return
        if eb is None:
            self.emit(where, (keyword,), f"{keyword} removed (was {_fmt(va)})", self.breaking(_WIDEN), va, vb)
            return
        gained = [v for k, v in eb.items() if k not in ea]
        lost = [v for k, v in ea.items() if k not in eb]
        if gained and lost:
            what, effect = f"enum gained {_fmt_values(gained)}; lost {_fmt_values(lost)}", _CHANGE
        elif gained:
            what, effect = f"enum gained {_fmt_values(gained)}", _WIDEN
        elif lost:
            what, effect = f"enum lost {_fmt_values(lost)}", _NARROW
        else:
            return  # the same values, reordered or written as const
        self.emit(where, ("enum",), what, self.breaking(effect), va, vb)

    def bounds(self, a: dict[str, Any], b: dict[str, Any], where: tuple[str, ...], handled: set[str]) -> None:
        for key in (*_UPPER, *_LOWER):
            va, vb = _get(a, key), _get(b, key)
            if _same(va, vb):
                handled.add(key)
                continue
            if not (_bound(va) and _bound(vb)):
                continue  # e.g. draft-4 boolean exclusiveMaximum: unclassified
            handled.add(key)
            if va is _MISSING:
                effect = _NARROW
            elif vb is _MISSING:
                effect = _WIDEN
            else:
                lower = vb < va
                effect = _NARROW if lower == (key in _UPPER) else _WIDEN
            word = "tightened" if effect == _NARROW else "loosened"
            self.emit(where, (key,), f"{key} {_arrow(va, vb)} ({word})", self.breaking(effect), va, vb)
        for key in _STRING_CONSTRAINTS:
            va, vb = _get(a, key), _get(b, key)
            handled.add(key)
            if _same(va, vb):
                continue
            if va is _MISSING:
                what, effect = f"{key} added: {_fmt(vb)}", _NARROW
            elif vb is _MISSING:
                what, effect = f"{key} removed (was {_fmt(va)})", _WIDEN
            else:
                what, effect = f"{key} {_arrow(va, vb)}", _CHANGE
            self.emit(where, (key,), what, self.breaking(effect), va, vb)
        ua, ub = a.get("uniqueItems", False), b.get("uniqueItems", False)
        if isinstance(ua, bool) and isinstance(ub, bool):
            handled.add("uniqueItems")
            if ua != ub:
                effect = _NARROW if ub else _WIDEN
                self.emit(where, ("uniqueItems",), f"uniqueItems {_arrow(ua, ub)}", self.breaking(effect),
                          _get(a, "uniqueItems"), _get(b, "uniqueItems"))

    def object(self, a: dict[str, Any], b: dict[str, Any], where: tuple[str, ...], handled: set[str]) -> None:
        pa, pb = _mapping(a.get("properties")), _mapping(b.get("properties"))
        ra, rb = _required(a), _required(b)
        xa, xb = _extra(a.get("additionalProperties", True)), _extra(b.get("additionalProperties", True))
        if pa is None or pb is None or ra is None or rb is None or xa is None or xb is None:
            return  # malformed: unclassified
        handled.update(("properties", "required", "additionalProperties"))
        for name in sorted(pa.keys() | pb.keys() | ra | rb):
            at = ("properties", name)
            da, db = name in pa, name in pb
            qa, qb = name in ra, name in rb
            if da and db:
                self.node(pa[name], pb[name], (*where, *at))
            if db and not da:
                if qb:
                    self.emit(where, at, f"required property {name} added", self.breaking(_NARROW), None, pb[name])
                else:
                    self.emit(where, at, f"optional property {name} added", False, None, pb[name])
                continue
            if da and not db:
                word = "required property" if qa else "property"
                if self.side == "output":
                    broken = True  # the agent may rely on it
                else:  # callers may still send it: fine unless the object is now closed to it
                    broken = xb != "any" or "patternProperties" in b or (qb and not qa)
                self.emit(where, at, f"{word} {name} removed", broken, pa[name], None)
                continue
            if qa != qb:
                if qb:
                    what, effect = f"property {name} optional -> required", _NARROW
                else:
                    what, effect = f"property {name} required -> optional", _WIDEN
                self.emit(where, at, what, self.breaking(effect), qa, qb)
        if xa == xb == "schema":
            self.node(a["additionalProperties"], b["additionalProperties"], (*where, "additionalProperties"))
        elif xa != xb:
            effect = _WIDEN if _EXTRA_RANK[xb] > _EXTRA_RANK[xa] else _NARROW
            self.emit(where, ("additionalProperties",),
                      f"additionalProperties {_arrow(a.get('additionalProperties'), b.get('additionalProperties'))}"
                      f" ({'opened' if effect == _WIDEN else 'closed'})",
                      self.breaking(effect), _get(a, "additionalProperties"), _get(b, "additionalProperties"))

    def items(self, a: dict[str, Any], b: dict[str, Any], where: tuple[str, ...], handled: set[str]) -> None:
        va, vb = _get(a, "items"), _get(b, "items")
        if not (_item_schema(va) and _item_schema(vb)):
            return  # tuple form: unclassified
        handled.add("items")
        if _same(va, vb):
            return
        if _permissive(_plain(va)) and not _permissive(_plain(vb)):
            self.emit(where, ("items",), "items schema added", self.breaking(_NARROW), va, vb)
        elif _permissive(_plain(vb)) and not _permissive(_plain(va)):
            self.emit(where, ("items",), "items schema removed", self.breaking(_WIDEN), va, vb)
        else:
            self.node(_plain(va), _plain(vb), (*where, "items"))


def _diff_tool_schema(tool: str, side: str, a: Any, b: Any, out: list[Change]) -> None:
    _SchemaDiff(tool, side, out).whole(a, b)


def _schema(v: Any) -> dict[str, Any] | None:
    """A schema as a dict: ``None`` / ``true`` are ``{}``; ``false`` or a non-schema is ``None``."""
    if v is None or v is True:
        return {}
    if isinstance(v, Mapping):
        return {str(k): x for k, x in v.items()}
    return None


def _permissive(v: Any) -> bool:
    """Whether a schema accepts anything (``None``, ``true``, ``{}``, or annotations only)."""
    s = _schema(v)
    return s is not None and all(k in _ANNOTATIONS for k in s)


def _where(where: tuple[str, ...]) -> str:
    """A node's location for people: ``address.city``, ``tags[]``, ``meta.*``."""
    text = ""
    i = 0
    while i < len(where):
        seg = where[i]
        if seg == "properties" and i + 1 < len(where):
            text += ("." if text else "") + where[i + 1]
            i += 2
            continue
        if seg == "items":
            text += "[]"
        elif seg == "additionalProperties":
            text += ("." if text else "") + "*"
        else:
            text += ("." if text else "") + seg
        i += 1
    return text


def _valid_type(t: Any) -> bool:
    return t is None or isinstance(t, str) or (isinstance(t, list) and all(isinstance(x, str) for x in t))


def _types(s: Mapping[str, Any]) -> frozenset[str] | None:
    """The JSON types a schema allows; ``None`` for any."""
    t = s.get("type")
    if t is None:
        return None
    return frozenset([t] if isinstance(t, str) else t)


def _subtypes(a: frozenset[str] | None, b: frozenset[str] | None) -> bool:
    """Whether every value of a type in ``a`` has a type in ``b`` (an integer is a number)."""
    if b is None:
        return True
    if a is None:
        return False
    return all(t in b or (t == "integer" and "number" in b) for t in a)


def _fmt_types(t: frozenset[str] | None) -> str:
    return "any" if t is None else "|".join(sorted(t))


def _enum(s: Mapping[str, Any]) -> tuple[bool, dict[str, Any] | None]:
    """Whether ``enum`` / ``const`` is well formed, and the allowed values by canonical key
    (``None`` for no restriction)."""
    if "enum" in s:
        values = s["enum"]
        if not isinstance(values, list):
            return False, None
        return True, {_key(v): v for v in values}
    if "const" in s:
        return True, {_key(s["const"]): s["const"]}
    return True, None


def _fmt_values(values: list[Any]) -> str:
    return ", ".join(_fmt(v, limit=40) for v in values)


def _bound(v: Any) -> bool:
    return v is _MISSING or (isinstance(v, int | float) and not isinstance(v, bool))


def _required(s: Mapping[str, Any]) -> set[str] | None:
    r = s.get("required", [])
    if not isinstance(r, list) or not all(isinstance(x, str) for x in r):
        return None
    return set(r)


_EXTRA_RANK: Final = {"none": 0, "schema": 1, "any": 2}


def _extra(v: Any) -> str | None:
    """``additionalProperties`` as ``any`` / ``schema`` / ``none``; ``None`` if malformed."""
    if v is False:
        return "none"
    if v is True or _permissive(v) or v is None:
        return "any"
    if isinstance(v, Mapping):
        return "schema"
    return None


def _item_schema(v: Any) -> bool:
    return v is _MISSING or v is None or isinstance(v, bool | Mapping)


# ---------------------------------------------------------------------------------------------
# policy


def _bundle_id(p: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": p.get("name"), "version": p.get("version"), "hash": p.get("hash")}


def _bundle_text(p: Mapping[str, Any]) -> str:
    text = str(p.get("name") or "(unnamed)")
    if p.get("version") is not None:
        text += f" v{p['version']}"
    return text


def _diff_policy(a: Any, b: Any, out: list[Change]) -> None:
    if a is None and b is None:
        return
    if a is None and isinstance(b, Mapping):
        out.append(Change("policy", "policy_added", "policy", f"policy {_bundle_text(b)} added",
                          None, _bundle_id(b)))
        return
    if b is None and isinstance(a, Mapping):
        out.append(Change("policy", "policy_removed", "policy", f"policy {_bundle_text(a)} removed",
                          _bundle_id(a), None))
        return
    if not (isinstance(a, Mapping) and isinstance(b, Mapping)):
        _diff_scalar(a, b, out, area="policy", kind="policy_bundle_changed", path="policy", noun="policy")
        return
    n = len(out)
    _diff_policy_document(a.get("document"), b.get("document"), out)
    explained = len(out) > n
    named = [k for k in ("name", "version") if not _same(a.get(k), b.get(k))]
    rehashed = not _same(a.get("hash"), b.get("hash"))
    if named:
        summary = f"policy bundle {_bundle_text(a)} -> {_bundle_text(b)}"
    elif rehashed and not explained:
        summary = f"policy bundle {_bundle_text(b)} hash {_short(a.get('hash'))} -> {_short(b.get('hash'))}"
    else:
        summary = ""
    if summary:
        out.append(Change("policy", "policy_bundle_changed", "policy", summary, _bundle_id(a), _bundle_id(b)))
    other = sorted((set(a) | set(b)) - {"name", "version", "hash", "document"})
    for key in other:
        _diff_scalar(_get(a, key), _get(b, key), out, area="policy", kind="policy_bundle_changed",
                     path=f"policy.{key}", noun=f"policy {key}")


_RULE_FIELDS: Final = ("kind", "tools", "side_effects", "models", "agents", "when", "effect", "message",
                       "fail_mode", "scope", "limits", "per", "capacity", "refill_per_second", "detector",
                       "threshold", "window", "scanner", "stages", "entities", "sources", "args")
_SPEC_HANDLED: Final = frozenset({"rules", "default_effect", "tools", "mode", "scope", "capabilities"})


def _rule_fields(*rules: Mapping[str, Any]) -> list[str]:
    keys = {k for r in rules for k in r} - {"id"}
    known = [k for k in _RULE_FIELDS if k in keys]
    return known + sorted(keys - set(_RULE_FIELDS))


def _diff_policy_document(a: Any, b: Any, out: list[Change]) -> None:
    da, db = _mapping(a), _mapping(b)
    if da is None or db is None:
        _diff_scalar(a, b, out, area="policy", kind="policy_document_changed", path="policy.document",
                     noun="policy document")
        return
    sa, sb = _mapping(da.get("spec")), _mapping(db.get("spec"))
    if sa is None or sb is None:
        _diff_scalar(da.get("spec"), db.get("spec"), out, area="policy", kind="policy_document_changed",
                     path="policy.spec", noun="policy spec")
        sa, sb = {}, {}
    _diff_rules(sa.get("rules"), sb.get("rules"), out)
    _diff_entries(sa.get("default_effect"), sb.get("default_effect"), out, area="policy",
                  kind="policy_default_changed", path="policy.default_effect", noun="default effect for")
    _diff_catalogue(sa.get("tools"), sb.get("tools"), out)
    _diff_scalar(_get(sa, "mode"), _get(sb, "mode"), out, area="policy", kind="policy_mode_changed",
                 path="policy.mode", noun="policy mode")
    _diff_entries(sa.get("scope"), sb.get("scope"), out, area="policy", kind="policy_scope_changed",
                  path="policy.scope", noun="policy scope")
    _diff_scalar(_get(sa, "capabilities"), _get(sb, "capabilities"), out, area="policy",
                 kind="policy_capability_changed", path="policy.capabilities", noun="policy capabilities")
    for key in sorted((sa.keys() | sb.keys()) - _SPEC_HANDLED):
        _diff_scalar(_get(sa, key), _get(sb, key), out, area="policy", kind="policy_document_changed",
                     path=f"policy.spec.{key}", noun=f"policy spec.{key}")
    ma, mb = _mapping(da.get("metadata")), _mapping(db.get("metadata"))
    if ma is None or mb is None:
        _diff_scalar(da.get("metadata"), db.get("metadata"), out, area="policy",
                     kind="policy_document_changed", path="policy.metadata", noun="policy metadata")
    else:  # name and version are the bundle's, reported with it
        for key in sorted((ma.keys() | mb.keys()) - {"name", "version"}):
            _diff_scalar(_get(ma, key), _get(mb, key), out, area="policy", kind="policy_document_changed",
                         path=f"policy.metadata.{key}", noun=f"policy metadata.{key}")
    for key in sorted((da.keys() | db.keys()) - {"spec", "metadata"}):
        _diff_scalar(_get(da, key), _get(db, key), out, area="policy", kind="policy_document_changed",
                     path=f"policy.{key}", noun=f"policy {key}")


def _diff_rules(a: Any, b: Any, out: list[Change]) -> None:
    ra, rb = _by_name(a, "id"), _by_name(b, "id")
    if ra is None or rb is None:
        _diff_scalar(a, b, out, area="policy", kind="policy_rule_changed", path="policy.rules",
                     noun="policy rules")
        return
    for rid in sorted(ra.keys() | rb.keys()):
        va, vb = _get(ra, rid), _get(rb, rid)
        if _same(va, vb):
            continue
        path = f"policy.rules.{rid}"
        if va is _MISSING:
            out.append(Change("policy", "policy_rule_added", path, f"rule {rid} added{_rule_brief(vb)}", None, vb))
        elif vb is _MISSING:
            out.append(Change("policy", "policy_rule_removed", path, f"rule {rid} removed{_rule_brief(va)}",
                              va, None))
        elif isinstance(va, Mapping) and isinstance(vb, Mapping):
            parts = [f"{f} {_arrow(_get(va, f), _get(vb, f))}" for f in _rule_fields(va, vb)
                     if not _same(_get(va, f), _get(vb, f))]
            out.append(Change("policy", "policy_rule_changed", path, f"rule {rid}: " + "; ".join(parts), va, vb))
        else:
            out.append(Change("policy", "policy_rule_changed", path, f"rule {rid} {_arrow(va, vb)}", va, vb))


def _rule_brief(rule: Any) -> str:
    if not isinstance(rule, Mapping):
        return ""
    parts = [f"{f} {_fmt(rule[f])}" for f in _rule_fields(rule)]
    return ": " + "; ".join(parts) if parts else ""


def _diff_catalogue(a: Any, b: Any, out: list[Change]) -> None:
    ca, cb = _by_name(a), _by_name(b)
    if ca is None or cb is None:
        _diff_scalar(a, b, out, area="policy", kind="policy_catalogue_changed", path="policy.tools",
                     noun="policy tool catalogue")
        return
    for name in sorted(ca.keys() | cb.keys()):
        va, vb = _get(ca, name), _get(cb, name)
        if _same(va, vb):
            continue
        path = f"policy.tools.{name}"
        if va is _MISSING:
            summary = f"catalogue entry {name} added{_entry_brief(vb)}"
        elif vb is _MISSING:
            summary = f"catalogue entry {name} removed{_entry_brief(va)}"
        elif isinstance(va, Mapping) and isinstance(vb, Mapping):
            keys = sorted((va.keys() | vb.keys()) - {"name"})
            parts = [f"{k} {_arrow(_get(va, k), _get(vb, k))}" for k in keys if not _same(_get(va, k), _get(vb, k))]
            summary = f"catalogue entry {name}: " + "; ".join(parts)
        else:
            summary = f"catalogue entry {name} {_arrow(va, vb)}"
        out.append(Change("policy", "policy_catalogue_changed", path, summary, _plain(va), _plain(vb)))


def _entry_brief(entry: Any) -> str:
    if not isinstance(entry, Mapping):
        return ""
    parts = [f"{k} {_fmt(entry[k])}" for k in sorted(entry) if k != "name"]
    return f" ({'; '.join(parts)})" if parts else ""
