"""CEL conditions: compiled once, evaluated against a small context built per action.

Evaluating a compiled CEL program takes ~0.5 µs; handing Python values to it is what costs:
~4 µs per entry of a nested map (the conversion into CEL values), ~0.3 µs per top-level
scalar. So a condition receives only what it reads, in the cheapest shape:

- ``args.amount_usd`` (a plain field read, the usual case) is rewritten at compile time to a
  top-level variable ``args__amount_usd``; only that value is converted per decision;
- a variable used any other way (``has(args.x)``, ``size(args)``, ``args[k]``, macros) is passed
  as a map — projected to the fields named, when those are all it reads;
- a field the action does not have is simply absent, so the condition fails to evaluate
  exactly as it would on the full map (and the rule's fail mode applies).

The rewrite is an optimisation that must never change a result; tests compare both shapes.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from typing import Any

import cel

from proctor.policy.fastpath import compile_fast

#: Variables a condition may use.
VARIABLES: tuple[str, ...] = ("args", "tool", "agent", "session", "llm", "content", "stage")
_MAPS = ("args", "tool", "agent", "session", "llm")

_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
_IDENT_CHAR = re.compile(r"[A-Za-z0-9_]")
_FLAT_SEP = "__"


def _field_ref(var: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![A-Za-z0-9_.])({var})\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)(\s*\()?")


_FIELD_REFS = {v: _field_ref(v) for v in _MAPS}
_ANY_REFS = {v: re.compile(rf"(?<![A-Za-z0-9_.]){v}(?![A-Za-z0-9_])") for v in _MAPS}
_HAS_BEFORE = re.compile(r"has\s*\(\s*$")


class ConditionError(ValueError):
    """A CEL condition that does not compile, with the compiler's message."""


class Condition:
    """A compiled CEL condition and what it reads."""

    __slots__ = ("fast", "flat", "maps", "program", "source", "variables")

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            program = cel.compile(source)
        except Exception as e:  # the binding raises ValueError with the parser's caret diagram
            raise ConditionError(_first_line(str(e))) from None
        used = set(program.variables())
        unknown = sorted(v for v in used - set(VARIABLES) if not _bound_by_macro(source, v))
        if unknown:
            raise ConditionError(
                f"unknown variable {unknown[0]!r} in {source!r}; conditions may use {', '.join(VARIABLES)}"
            )
        self.variables: tuple[str, ...] = tuple(v for v in VARIABLES if v in used)
        code = _mask_literals(source)
        flat: list[tuple[str, str]] = []
        maps: dict[str, frozenset[str] | None] = {}
        edits: list[tuple[int, int, str]] = []
        for var in self.variables:
            if var not in _MAPS:
                maps[var] = None
                continue
            refs, how = _references(code, var)
            if how == "flat":
                flat.extend((var, f) for _, _, f in refs)
                edits.extend((s, e, f"{var}{_FLAT_SEP}{f}") for s, e, f in refs)
            else:
                maps[var] = frozenset(f for _, _, f in refs) if how == "projected" else None
        rewritten = source
        for start, end, name in sorted(edits, reverse=True):
            rewritten = rewritten[:start] + name + rewritten[end:]
        self.program = cel.compile(rewritten) if edits else program
        # a Python closure for the safe subset (see fastpath.py), or None: real CEL only
        self.fast: Callable[[Mapping[str, Any]], bool] | None = compile_fast(source)
        self.flat: tuple[tuple[str, str], ...] = tuple(dict.fromkeys(flat))
        self.maps: dict[str, frozenset[str] | None] = maps

    @property
    def arg_fields(self) -> frozenset[str] | None:
        """The argument fields read, or None when the whole ``args`` map is needed."""
        if "args" not in self.variables:
            return None
        if "args" in self.maps:
            return self.maps["args"]
        return frozenset(f for v, f in self.flat if v == "args")

    def evaluate(self, variables: dict[str, Any]) -> bool:
        """True when the condition holds. Raises on a run-time error (missing field, bad types);
        the caller applies the rule's fail mode."""
        return self.run(build_context(variables, ContextNeeds.of([self])))

    def run(self, context: cel.Context) -> bool:
        """Evaluate against a context from :func:`build_context` (shared by several conditions)."""
        try:
            result = self.program.execute(context)
        except RuntimeError as e:
            text = str(e)
            if _FLAT_SEP in text and "Undefined variable" in text:  # a flattened field is absent
                name = re.search(rf"'(\w+?){_FLAT_SEP}(\w+)'", text)
                raise KeyError(f"{name.group(1)}.{name.group(2)}" if name else text) from None
            raise
        if not isinstance(result, bool):
            raise TypeError(f"condition {self.source!r} returned {type(result).__name__}, not a bool")
        return result


def _references(code: str, var: str) -> tuple[list[tuple[int, int, str]], str]:
    """Field reads of ``var`` in literal-masked ``code`` and how they can be passed:
    "flat" (each as a top-level variable), "projected" (a map of those fields), or "full"."""
    refs: list[tuple[int, int, str]] = []
    covered: list[tuple[int, int]] = []
    how = "flat"
    for m in _FIELD_REFS[var].finditer(code):
        if m.group(3) is not None or m.group(2) in _MACROS:
            return [], "full"  # args.exists(...), args.size(): needs everything
        refs.append((m.start(), m.end(2), m.group(2)))
        covered.append((m.start(), m.end()))
        if _HAS_BEFORE.search(code[: m.start()]):
            how = "projected"  # has(args.x) needs a map to test for presence
    for m in _ANY_REFS[var].finditer(code):
        if not any(s <= m.start() < e for s, e in covered):
            return [], "full"  # bare `args`, args[...], size(args): needs everything
    return refs, how


class ContextNeeds:
    """The union of what a group of conditions reads, so one context serves them all."""

    __slots__ = ("flat", "maps")

    def __init__(self, flat: tuple[tuple[str, str, str], ...], maps: dict[str, frozenset[str] | None]) -> None:
        self.flat = flat  # (variable, field, flattened name)
        self.maps = maps  # variable -> projected fields, or None for the whole value

    @property
    def variables(self) -> tuple[str, ...]:
        names = {v for v, _, _ in self.flat} | set(self.maps)
        return tuple(v for v in VARIABLES if v in names)

    @property
    def arg_fields(self) -> frozenset[str] | None:
        if "args" in self.maps:
            return self.maps["args"]
        return frozenset(f for v, f, _ in self.flat if v == "args")

    @classmethod
    def of(cls, conditions: list[Condition]) -> ContextNeeds:
        flat: dict[tuple[str, str], None] = {}
        maps: dict[str, frozenset[str] | None] = {}
        for c in conditions:
            flat.update(dict.fromkeys(c.flat))
            for var, fields in c.maps.items():
                if var in maps and (maps[var] is None or fields is None):
                    maps[var] = None
                else:
                    maps[var] = (maps.get(var) or frozenset()) | fields if fields is not None else None
        return cls(tuple((v, f, f"{v}{_FLAT_SEP}{f}") for v, f in flat), maps)


_MISSING = object()


def build_context(variables: dict[str, Any], needs: ContextNeeds) -> cel.Context:
    ctx: dict[str, Any] = {}
    for var, fld, name in needs.flat:
        src = variables.get(var)
        if isinstance(src, dict):
            value = src.get(fld, _MISSING)
            if value is not _MISSING:
                ctx[name] = value
    for var, fields in needs.maps.items():
        value = variables.get(var)
        if fields is not None and isinstance(value, dict):
            value = {k: value[k] for k in fields if k in value}
        ctx[var] = {} if value is None and var != "content" else value
    return cel.Context(ctx)


def _first_line(message: str) -> str:
    # "Failed to parse expression '...': ERROR: <input>:1:20: Syntax error: ..." -> keep the useful part
    head = message.split("\n", 1)[0]
    if "ERROR: <input>:" in head:
        head = head.split("ERROR: <input>:", 1)[1]
        head = "column " + head.split(":", 1)[1].lstrip() if ":" in head else head
        # "column 20: Syntax error: ..."
    return head


def _bound_by_macro(source: str, name: str) -> bool:
    # Program.variables() includes names bound by comprehensions: `args.exists(k, k == 'x')`
    return re.search(rf"\.\s*(?:{'|'.join(_MACROS)})\s*\(\s*{re.escape(name)}\s*,", source) is not None


def _projected_arg_fields(source: str) -> frozenset[str] | None:
    """The argument fields a condition reads, or None when it needs the whole ``args`` map."""
    refs, how = _references(_mask_literals(source), "args")
    return None if how == "full" else frozenset(f for _, _, f in refs)


def _mask_literals(source: str) -> str:
    """``source`` with every string/bytes literal replaced by ``#`` and every ``//`` comment by
    spaces, keeping every position, so that only code is searched for variable references and
    the positions found can rewrite the original.

    A lexer rather than a regex, because CEL's literals have forms a simple pattern gets wrong:
    raw strings (``r'\\'`` ends at the second quote), triple-quoted strings (``'''it's'''``)
    and comments (``// don't``). Getting one wrong would hide a real ``args.x`` reference and
    the projection would then change a condition's result.
    """
    out: list[str] = []
    i, n = 0, len(source)
    while i < n:
        c = source[i]
        if c == "/" and source.startswith("//", i):
            end = source.find("\n", i)
            end = n if end < 0 else end
            out.append(" " * (end - i))
            i = end
            continue
        if c not in "'\"":
            out.append(c)
            i += 1
            continue
        # an r/R prefix (possibly with b/B) right before the quote makes it raw
        j = len(out)
        while j > 0 and out[j - 1] in "rRbB":
            j -= 1
        prefix = "".join(out[j:])
        raw = len(prefix) <= 2 and (j == 0 or not _IDENT_CHAR.match(out[j - 1])) and "r" in prefix.lower()
        quote = c * 3 if source.startswith(c * 3, i) else c
        start = i
        i += len(quote)
        while i < n and not source.startswith(quote, i):
            i += 2 if source[i] == "\\" and not raw else 1
        i += len(quote)
        out.append("#" * (i - start) if i <= n else "#" * (n - start))
    return "".join(out)


_cache: dict[str, Condition] = {}
_cache_lock = threading.Lock()


def compile_condition(source: str) -> Condition:
    """Compile (or fetch from the process-wide cache) a CEL condition."""
    cond = _cache.get(source)
    if cond is None:
        cond = Condition(source)
        with _cache_lock:
            if len(_cache) > 10_000:
                _cache.clear()
            _cache[source] = cond
    return cond
