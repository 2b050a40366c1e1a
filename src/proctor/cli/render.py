"""Terminal rendering of traces: tables and trees (rich)."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

_KIND_STYLE = {
    "agent": "bold magenta", "llm": "cyan", "tool": "green", "retrieval": "blue", "embedding": "blue",
    "chain": "white", "guardrail": "yellow", "handoff": "magenta", "other": "dim",
}


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 10_000:
        return f"{value / 1000:.1f}s"
    if value >= 1000:
        return f"{value / 1000:.2f}s"
    return f"{value:.0f}ms" if value >= 10 else f"{value:.1f}ms"


def _usd(value: float | None) -> str:
    if not value:
        return "-"
    return f"${value:.4f}" if value < 1 else f"${value:.2f}"


def traces_table(doc: dict[str, Any], width: int = 200) -> Table:
    """The trace list; on narrow terminals the less useful columns go, so the rest stay legible."""
    wide, medium = width >= 150, width >= 120
    table = Table(header_style="bold", pad_edge=False, box=box.HEAVY_HEAD if medium else box.SIMPLE_HEAD,
                  show_edge=medium, collapse_padding=not medium)
    table.add_column("trace", no_wrap=True)
    table.add_column("started (UTC)" if wide else "started", no_wrap=True)
    table.add_column("name", overflow="ellipsis", no_wrap=True, max_width=40 if wide else 28 if medium else 22)
    if medium:
        table.add_column("agent", overflow="ellipsis", no_wrap=True, max_width=20)
    if wide:
        table.add_column("session", no_wrap=True)
    table.add_column("spans", justify="right", no_wrap=True)
    table.add_column("duration", justify="right", no_wrap=True)
    if wide:
        table.add_column("tokens in/out", justify="right", no_wrap=True)
    table.add_column("cost", justify="right", no_wrap=True)
    table.add_column("status" if medium else "", no_wrap=True)
    for t in doc["traces"]:
        if medium:
            status = Text("error", style="bold red") if t["error_count"] else Text("ok", style="green")
        else:
            status = Text("✗", style="bold red") if t["error_count"] else Text("✓", style="green")
        started = (t["start_time"] or "")[:19].replace("T", " ")
        row: list[Any] = [t["trace_id"][:12], started if wide else started[11:], t.get("root_name") or ""]
        if medium:
            row.append(t.get("agent_name") or "")
        if wide:
            row.append((t.get("session_id") or "")[:12])
        row += [str(t["span_count"]), _ms(t["duration_ms"])]
        if wide:
            row.append(f"{t['input_tokens']}/{t['output_tokens']}")
        row += [_usd(t["cost_usd"]), status]
        table.add_row(*row)
    return table


def _span_label(s: dict[str, Any], trace_start: int, links_to: dict[str, list[str]]) -> Text:
    kind = s.get("kind") or "other"
    label = Text()
    label.append(f"{kind:<9}", style=_KIND_STYLE.get(kind, "white"))
    label.append(s["name"], style="bold" if kind in ("agent", "llm", "tool") else "")
    offset = (s["start_ns"] - trace_start) / 1e6
    label.append(f"  +{_ms(offset)} {_ms(s['duration_ms'])}", style="dim")
    if s.get("model"):
        label.append(f"  {s['model']}", style="cyan")
    if s.get("input_tokens") is not None or s.get("output_tokens") is not None:
        label.append(f"  {s.get('input_tokens') or 0}→{s.get('output_tokens') or 0} tok", style="dim")
    if s.get("cost_usd"):
        label.append(f"  {_usd(s['cost_usd'])}", style="yellow")
    for call in s.get("tool_calls") or ():
        label.append(f"  ⇢ {call.get('name') or '?'}({call['id']})", style="green")
    if s.get("tool_call_id"):
        label.append(f"  ⇠ {s['tool_call_id']}", style="green")
    for note in links_to.get(s["span_id"], ()):
        label.append(f"  {note}", style="magenta")
    if s.get("status") == "error":
        label.append(f"  ✗ {s.get('error_message') or 'error'}", style="bold red")
    if s.get("orphan"):
        label.append("  (parent not received)", style="dim italic")
    label.append(f"  [{s['span_id'][:8]}]", style="dim")
    return label


def trace_tree(doc: dict[str, Any]) -> Tree:
    t = doc["trace"]
    head = Text()
    head.append(f"trace {t['trace_id']}", style="bold")
    head.append(
        f"  {t['span_count']} spans · {_ms(t['duration_ms'])} · {t['input_tokens']}/{t['output_tokens']} tok"
        f" · {_usd(t['cost_usd'])}",
        style="dim",
    )
    if t.get("session_id"):
        head.append(f" · session {t['session_id']}", style="dim")
    if t["error_count"]:
        head.append(f" · {t['error_count']} error(s)", style="bold red")
    tree = Tree(head)
    links_to: dict[str, list[str]] = {}
    names = {s["span_id"]: s["name"] for s in doc["spans"]}
    for ln in doc.get("links", ()):
        if ln["type"] == "spawned_by":
            links_to.setdefault(ln["from"], []).append(f"↖ spawned by {names.get(ln['to'], ln['to'][:8])}")
    nodes: list[Tree] = []
    for s in doc["spans"]:
        depth = s["depth"]
        del nodes[depth:]
        parent = nodes[-1] if nodes else tree
        nodes.append(parent.add(_span_label(s, t["start_ns"], links_to)))
    return tree


def print_stats(console: Console, doc: dict[str, Any]) -> None:
    d = doc["duration_ms"]
    console.print(
        f"[bold]{doc['traces']}[/] traces · {doc['spans']} spans · {doc['errors']} errors · "
        f"{_usd(doc['cost_usd'])} · {doc['input_tokens']}/{doc['output_tokens']} tokens · "
        f"p50 {_ms(d['p50'])} · p95 {_ms(d['p95'])}"
    )
    for title, rows in (("by agent", doc["by_agent"]), ("by tool", doc["by_tool"])):
        if not rows:
            continue
        table = Table(title=title, title_justify="left", header_style="bold")
        for col in ("name", "count", "errors", "cost", "p50", "p95"):
            table.add_column(col, justify="left" if col == "name" else "right")
        for r in rows:
            table.add_row(
                r["name"], str(r["count"]), str(r["errors"]), _usd(r["cost_usd"]),
                _ms(r["duration_ms"]["p50"]), _ms(r["duration_ms"]["p95"]),
            )
        console.print(table)
