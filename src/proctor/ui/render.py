"""Rendering console pages: one Jinja2 environment, and ``page()``, which gives every page its JSON twin.

A page handler returns a plain, JSON-safe dict (its *context*). ``page()`` registers it twice:

* ``/traces``       — the HTML page, the context rendered through a template;
* ``/traces.json``  — the same context as JSON (also served for ``/traces?format=json`` and for
  requests that send ``Accept: application/json`` without ``text/html``).

So whatever a page shows can be fetched by a script without scraping, and the two cannot drift.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from proctor import __version__
from proctor.core.timeparse import format_ns
from proctor.server.auth import Principal, principal

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

#: The navigation bar, in order: (path, label, key). ``key`` is what ``active`` names in a context.
NAV: list[tuple[str, str, str]] = [
    ("/", "Overview", "overview"),
    ("/traces", "Traces", "traces"),
    ("/sessions", "Sessions", "sessions"),
    ("/agents", "Agents", "agents"),
    ("/policies", "Policies", "policies"),
    ("/approvals", "Approvals", "approvals"),
    ("/alerts", "Alerts", "alerts"),
    ("/killswitches", "Kill switches", "killswitches"),
    ("/audit", "Audit", "audit"),
]


# --- filters --------------------------------------------------------------------------------------
def _duration(ms: float | int | None) -> str:
    """12 ms, 1.25 s, 3 m 05 s — a human duration from milliseconds."""
    if ms is None:
        return "–"
    ms = float(ms)
    if ms < 1:
        return f"{ms * 1000:.0f} µs"
    if ms < 1000:
        return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.1f} ms"
    s = ms / 1000
    if s < 60:
        return f"{s:.2f} s"
    m, s = divmod(int(s), 60)
    if m < 60:
        return f"{m} m {s:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} m"


def _usd(v: float | int | None) -> str:
    if v is None:
        return "–"
    v = float(v)
    if v == 0:
        return "$0"
    if abs(v) < 0.01:
        return f"${v:.5f}"
    return f"${v:,.2f}"


def _time(ns: int | None) -> str:
    return (format_ns(int(ns)) or "–") if ns else "–"


def _pretty(value: Any) -> str:
    """Pretty JSON for the inspector; strings that hold JSON are parsed first."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


def _short(value: str | None, n: int = 8) -> str:
    return (value or "")[:n]


def _qs(request: Request, **changes: Any) -> str:
    """The current query string with ``changes`` applied (None removes a key): for pagination links."""
    params = dict(request.query_params)
    for k, v in changes.items():
        if v is None or v == "":
            params.pop(k, None)
        else:
            params[k] = str(v)
    return ("?" + urlencode(params)) if params else ""


env = Environment(
    loader=FileSystemLoader(str(TEMPLATES)),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,  # a misspelt variable fails the page (and its test), not silently blank
    trim_blocks=True,
    lstrip_blocks=True,
)
env.filters.update(duration=_duration, usd=_usd, time=_time, pretty=_pretty, short=_short)
env.globals.update(NAV=NAV, version=__version__, qs=_qs)


def principal_of(request: Request) -> Principal:
    """Who is asking (set by the server's auth middleware; the anonymous local admin when auth is off)."""
    return principal(request)


def json_response(doc: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS, default=str),
                    status_code=status_code, media_type="application/json")


def wants_json(request: Request) -> bool:
    if request.query_params.get("format") == "json":
        return True
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def json_twin_url(request: Request) -> str:
    path = request.url.path
    twin = "/overview.json" if path == "/" else path.rstrip("/") + ".json"
    return twin + (("?" + request.url.query) if request.url.query else "")


def render(request: Request, template: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    html = env.get_template(template).render(
        request=request, principal=principal_of(request), json_url=json_twin_url(request), **context
    )
    return HTMLResponse(html, status_code=status_code)


def page(router: APIRouter, path: str, template: str, *, json_path: str | None = None
         ) -> Callable[[Callable[..., dict[str, Any]]], Callable[..., dict[str, Any]]]:
    """Register ``fn`` (returning a context dict) as an HTML page at ``path`` and JSON at ``path.json``.

    The handler must take ``request: Request``; FastAPI reads its other parameters (path and
    query) from its signature as usual. Raise ``fastapi.HTTPException`` for 4xx: the HTML route
    renders it as an error page, the JSON route as ``{"detail": ...}``.
    """

    def deco(fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        @functools.wraps(fn)
        def as_json(*args: Any, **kwargs: Any) -> Response:
            return json_response(fn(*args, **kwargs))

        @functools.wraps(fn)
        def as_html(*args: Any, **kwargs: Any) -> Response:
            ctx = fn(*args, **kwargs)
            if wants_json(kwargs["request"]):
                return json_response(ctx)
            return render(kwargs["request"], template, ctx)

        # the .json route first: "/traces/{trace_id}" would otherwise capture "abc.json" as the id
        router.add_api_route(json_path or (path.rstrip("/") + ".json"), as_json, methods=["GET"],
                             include_in_schema=False)
        router.add_api_route(path, as_html, methods=["GET"], include_in_schema=False, response_class=HTMLResponse)
        return fn

    return deco
