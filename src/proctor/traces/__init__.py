"""Layer 3: reading traces back: lists, trees with causal links, sessions, statistics."""

from proctor.traces.tree import build_tree, causal_links
from proctor.traces.views import (
    Ambiguous,
    NotFound,
    session_detail,
    session_list,
    span_detail,
    stats,
    trace_detail,
    trace_list,
)

__all__ = [
    "Ambiguous",
    "NotFound",
    "build_tree",
    "causal_links",
    "session_detail",
    "session_list",
    "span_detail",
    "stats",
    "trace_detail",
    "trace_list",
]
