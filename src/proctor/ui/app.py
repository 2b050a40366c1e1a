"""Mounting the console on the server: static assets, every page's router, HTML error pages."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from proctor.ui.pages import ROUTERS
from proctor.ui.render import STATIC, render, wants_json

#: Paths that belong to machines, not people: their errors stay JSON whatever the Accept header.
_MACHINE_PREFIXES = ("/api/", "/v1/", "/metrics", "/healthz", "/openapi.json", "/static/")


def _is_page(request: Request) -> bool:
    path = request.url.path
    return (not path.startswith(_MACHINE_PREFIXES) and not path.endswith(".json")
            and not wants_json(request) and "text/html" in request.headers.get("accept", ""))


class VersionedStatic(StaticFiles):
    """Static assets; a URL that names the release (``?v=0.1.0``, as the templates write them)
    is cached by the browser for good, so a page's second visit asks for nothing but the page."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code == 200:
            versioned = b"v=" in scope.get("query_string", b"")
            response.headers["cache-control"] = ("public, max-age=31536000, immutable" if versioned
                                                 else "no-cache")
        return response


def mount_console(app: FastAPI) -> None:
    app.mount("/static", VersionedStatic(directory=str(STATIC)), name="static")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:  # browsers ask for it whatever the page says
        return RedirectResponse("/static/favicon.svg", status_code=301)

    for router in ROUTERS:
        app.include_router(router)

    @app.exception_handler(StarletteHTTPException)
    async def _errors(request: Request, exc: StarletteHTTPException) -> Response:
        if _is_page(request):
            return render(request, "error.html", {"status": exc.status_code, "detail": exc.detail,
                                                   "active": ""}, status_code=exc.status_code)
        return await http_exception_handler(request, exc)
