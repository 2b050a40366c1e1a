"""What every content scanner shares: the finding type, the result type, walking nested values
and redacting what was found.

Scanners look at plain strings. Agent traffic is nested JSON (tool arguments, message lists), so
``scan_value`` flattens a value's string leaves into one text, scans it once (one time budget,
one trip to the worker pool) and maps each finding back to the JSON path of the leaf it came
from. ``redact_value`` walks the value the same way, so a finding's path always names the leaf
that ``redact_value`` rewrites: the two never parse paths, they compute them identically.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "Finding",
    "ScanResult",
    "Scanner",
    "child_path",
    "iter_leaves",
    "redact_text",
    "redact_value",
    "scan_value",
]

# Leaves are joined with a NUL between newlines: a line break for line-based scanners, and a
# character that is neither a word character nor whitespace, so patterns built from \w, \s and
# \b (every pattern we ship) cannot run from one leaf into the next. A finding that still
# crosses a boundary is clipped to the leaf it starts in rather than dropped.
_LEAF_SEPARATOR = "\n\x00\n"
# Deeper nesting than this is not JSON anyone meant to send; stop walking and say so.
_MAX_DEPTH = 64
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
_LABEL_CHARS = re.compile(r"[^A-Za-z0-9]+")


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing a scanner found: which detector, what kind, where, and how sure it is."""

    detector: str  # "pii" | "secrets" | "injection"
    kind: str  # "EMAIL_ADDRESS", "AWS Access Key", "instruction_override", ...
    start: int  # offsets into the scanned string (the leaf's string for scan_value)
    end: int
    score: float
    path: str = ""  # JSON path of the string inside a nested value, e.g. "args.body"


@dataclass(slots=True)
class ScanResult:
    """Findings plus the two ways a scan can be incomplete, which the caller's fail mode acts on."""

    findings: list[Finding]
    truncated: bool  # the input was longer than max_chars and only a prefix was scanned
    timed_out: bool  # the scan exceeded its time budget; findings are what was known by then
    elapsed_s: float

    @property
    def complete(self) -> bool:
        """True when the whole input was scanned within the budget."""
        return not (self.truncated or self.timed_out)


@runtime_checkable
class Scanner(Protocol):
    """Anything with a name that turns a string into a ScanResult."""

    name: str

    def scan(self, text: str) -> ScanResult: ...


def child_path(parent: str, key: object) -> str:
    """The path of ``parent[key]``: ``a.b`` for identifier keys, ``a[2]`` for list items,
    ``a["x y"]`` for any other key, so every leaf has one unambiguous path."""
    if isinstance(key, int) and not isinstance(key, bool):
        return f"{parent}[{key}]"
    text = str(key)
    if _IDENTIFIER.fullmatch(text):
        return f"{parent}.{text}" if parent else text
    return f"{parent}[{json.dumps(text, ensure_ascii=False)}]"


def _leaf_text(value: object) -> str | None:
    if isinstance(value, str):
        return value
    # Numbers are scanned as text too: a card number or a phone number often travels as an int.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def iter_leaves(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Yield ``(path, text)`` for every string or number inside dicts, lists and tuples, in
    document order. Dict keys are not leaves. Nesting deeper than 64 levels is not walked."""
    return _iter_leaves(value, path, [])


def _iter_leaves(value: Any, path: str, cut: list[bool]) -> Iterator[tuple[str, str]]:
    # ``cut`` gets an entry when a container is left unwalked for being too deep.
    stack: list[tuple[str, Any, int]] = [(path, value, 0)]
    while stack:
        p, v, depth = stack.pop()
        text = _leaf_text(v)
        if text is not None:
            yield p, text
        elif isinstance(v, dict | list | tuple):
            if depth >= _MAX_DEPTH:
                cut.append(True)
            elif isinstance(v, dict):
                stack.extend((child_path(p, k), item, depth + 1) for k, item in reversed(v.items()))
            else:
                stack.extend((child_path(p, i), v[i], depth + 1) for i in range(len(v) - 1, -1, -1))


def scan_value(scanner: Scanner, value: Any, *, path: str = "", max_chars: int = 200_000) -> ScanResult:
    """Scan every string (and number) leaf of a nested value and fill each finding's path.

    At most ``max_chars`` characters of leaf text are collected (the rest sets ``truncated``);
    the scanner applies its own size and time bounds on top. Findings are reported with offsets
    into their leaf's text.
    """
    if isinstance(value, str) and not path:
        # The common case needs no joining or mapping back.
        if len(value) <= max_chars:
            return scanner.scan(value)
        result = scanner.scan(value[:max_chars])
        result.truncated = True
        return result

    paths: list[str] = []
    starts: list[int] = []
    lengths: list[int] = []
    parts: list[str] = []
    offset = 0
    budget = max_chars
    truncated = False
    cut: list[bool] = []
    for leaf_path, text in _iter_leaves(value, path, cut):
        if budget <= 0:
            truncated = True
            break
        if len(text) > budget:
            text = text[:budget]
            truncated = True
        budget -= len(text)
        paths.append(leaf_path)
        starts.append(offset)
        lengths.append(len(text))
        parts.append(text)
        offset += len(text) + len(_LEAF_SEPARATOR)
    truncated = truncated or bool(cut)

    if not parts:
        return ScanResult(findings=[], truncated=truncated, timed_out=False, elapsed_s=0.0)

    result = scanner.scan(_LEAF_SEPARATOR.join(parts))
    mapped: list[Finding] = []
    for f in result.findings:
        i = bisect.bisect_right(starts, f.start) - 1
        if i < 0:
            continue
        leaf_start = starts[i]
        start = f.start - leaf_start
        end = min(f.end - leaf_start, lengths[i])
        if start >= lengths[i]:
            continue  # inside the separator: an artifact of joining, not content
        mapped.append(replace(f, start=start, end=end, path=paths[i]))
    return ScanResult(
        findings=mapped,
        truncated=truncated or result.truncated,
        timed_out=result.timed_out,
        elapsed_s=result.elapsed_s,
    )


def _label(kind: str) -> str:
    label = _LABEL_CHARS.sub("_", kind).strip("_").upper()
    return f"<{label or 'REDACTED'}>"


def redact_text(text: str, findings: Iterable[Finding]) -> str:
    """Replace each finding's span with ``<KIND>`` (upper snake case: ``<EMAIL_ADDRESS>``,
    ``<AWS_ACCESS_KEY>``). Overlapping spans merge into one, labelled by the widest finding,
    so nothing is left half-redacted.

    Not presidio-anonymizer: its "replace" operator does the same splice, but only for
    Presidio's own result type, and findings here come from three detectors and carry JSON
    paths. One small function redacts them all alike.
    """
    spans = sorted(
        ((max(0, f.start), min(len(text), f.end), f.kind) for f in findings if f.end > f.start),
        key=lambda s: (s[0], -s[1]),
    )
    if not spans:
        return text
    merged: list[list[Any]] = []  # [start, end, kind, width of the kind's own span]
    for start, end, kind in spans:
        if start >= end:
            continue
        if merged and start < merged[-1][1]:
            last = merged[-1]
            if end - start > last[3]:
                last[2], last[3] = kind, end - start
            last[1] = max(last[1], end)
        else:
            merged.append([start, end, kind, end - start])
    out: list[str] = []
    pos = 0
    for start, end, kind, _ in merged:
        out.append(text[pos:start])
        out.append(_label(kind))
        pos = end
    out.append(text[pos:])
    return "".join(out)


def redact_value(value: Any, findings: Iterable[Finding], *, path: str = "") -> Any:
    """Return a copy of ``value`` with the leaves named by the findings' paths redacted.

    Paths are recomputed while walking, exactly as ``scan_value`` computed them, so pass the
    same root ``path`` that was given to ``scan_value`` (default ``""``). A redacted number
    becomes a string. Leaves without findings, and the input itself, are left untouched.
    """
    by_path: dict[str, list[Finding]] = {}
    for f in findings:
        by_path.setdefault(f.path, []).append(f)
    if not by_path:
        return value
    return _redact(value, path, by_path, 0)


def _redact(value: Any, path: str, by_path: dict[str, list[Finding]], depth: int) -> Any:
    text = _leaf_text(value)
    if text is not None:
        hits = by_path.get(path)
        return redact_text(text, hits) if hits else value
    if depth >= _MAX_DEPTH:
        return value
    if isinstance(value, dict):
        return {k: _redact(v, child_path(path, k), by_path, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, child_path(path, i), by_path, depth + 1) for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return tuple(_redact(v, child_path(path, i), by_path, depth + 1) for i, v in enumerate(value))
    return value
