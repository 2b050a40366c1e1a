"""Where decision events go when the SDK records a span itself (no OTel span object to add an
event to). A module of its own so the SDK's tool wrapper can import it without the guard."""

from __future__ import annotations

import contextvars
from typing import Any

#: Set by the SDK while it records a span itself: decision events are appended here as
#: (name, time_ns, attributes) and encoded with the span.
pending_events: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar("proctor_events", default=None)
