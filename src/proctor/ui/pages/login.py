"""Logging in to the console with an API key, and out.

``GET /login`` shows a form to paste a key; ``POST /login`` checks it and sets the ``proctor_key``
cookie (HttpOnly, SameSite=Strict), then sends the browser to ``next``, a path on this server.
A login link ``/login#key=pk_...`` (what ``proctor keys create`` prints) carries the key in the
URL fragment, which browsers never send: ``static/js/login.js`` reads it, clears it from the
address bar and history, and posts it. ``GET /logout`` clears the cookie.

These pages are open without a key (see :data:`proctor.server.auth.OPEN_PATHS`), and render
themselves: the generic ``render()`` would show a visitor who is not logged in as the local
admin of a server whose auth is off.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import parse_qs

import anyio.to_thread
import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from proctor.server.auth import (
    COOKIE,
    LOCAL_ADMIN,
    LOGIN_TTL_S,
    KeyCache,
    Principal,
    clear_cookie_header,
    cookie_header,
    safe_next,
    same_origin,
)
from proctor.ui.render import env, json_response

router = APIRouter(tags=["console"])

_MAX_BODY = 8192  # a key is ~60 characters; nothing bigger is a login
NextQuery = Annotated[str, Query(alias="next", max_length=2000, description="Where to go once logged in.")]


def _cache(request: Request) -> KeyCache:
    return request.app.state.proctor.auth  # type: ignore[no-any-return]


def _signed_in(request: Request) -> Principal | None:
    """Who the request's cookie or key says (set by the auth middleware), if auth is on."""
    who = getattr(request.state, "principal", None)
    return who if isinstance(who, Principal) and not who.anonymous else None


def _context(request: Request, auth_on: bool, next_path: str, error: str | None = None) -> dict[str, Any]:
    who = _signed_in(request)
    return {"active": "", "auth": "on" if auth_on else "off", "next": next_path, "error": error,
            "signed_in": {"name": who.name, "role": who.role} if who else None}


def _page(request: Request, ctx: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    shown = (_signed_in(request) if ctx["auth"] == "on" else LOCAL_ADMIN)  # None: nobody yet
    html = env.get_template("login.html").render(request=request, principal=shown, json_url="/login.json", **ctx)
    return HTMLResponse(html, status_code=status_code, headers={"cache-control": "no-store"})


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
async def login_page(request: Request, next_path: NextQuery = "/") -> Response:
    auth_on = await anyio.to_thread.run_sync(_cache(request).auth_on)
    return _page(request, _context(request, auth_on, safe_next(next_path)))


@router.get("/login.json", include_in_schema=False)
async def login_json(request: Request, next_path: NextQuery = "/") -> Response:
    """Whether auth is on, and who this request is logged in as (null: nobody)."""
    auth_on = await anyio.to_thread.run_sync(_cache(request).auth_on)
    return json_response(_context(request, auth_on, safe_next(next_path)))


def _form(body: bytes, json_body: bool) -> dict[str, str]:
    if json_body:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return {}
        return {k: v for k, v in doc.items() if isinstance(v, str)} if isinstance(doc, dict) else {}
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items() if v}


@router.post("/login", include_in_schema=False)
async def login(request: Request) -> Response:
    """Check the key; set the cookie and go to ``next`` (a form), or answer JSON (login.js)."""
    json_body = request.headers.get("content-type", "").split(";")[0].strip().lower() == "application/json"
    body = await request.body()
    form = _form(body[:_MAX_BODY], json_body) if len(body) <= _MAX_BODY else {}
    secret, next_path = form.get("key", "").strip(), safe_next(form.get("next"))

    def refuse(status: int, message: str) -> Response:
        if json_body:
            return json_response({"detail": message}, status)
        return _page(request, _context(request, True, next_path, message), status)

    # A page of another site must not log this browser in (into someone else's key, say).
    if (request.headers.get("origin") or request.headers.get("referer")) and not same_origin(request.headers):
        return refuse(403, "cross-site login refused: log in from this server's own login page")
    cache = _cache(request)
    keys = await anyio.to_thread.run_sync(cache.load)
    if not keys:  # auth off: nothing to check, nobody to be
        if json_body:
            return json_response({"ok": True, "auth": "off", "next": next_path})
        return RedirectResponse(next_path, 303)
    who = KeyCache.match(keys, secret)
    if who is None and secret:
        # not in this second's snapshot: maybe created a moment ago in another process
        key = await anyio.to_thread.run_sync(cache.store.verify, secret)
        if key is not None:
            cache.invalidate()  # so the page we send them to knows the key too
            who = Principal(key.name, key.role, key.id)
    if who is None:
        return refuse(401, "that key is not valid: unknown, mistyped or revoked" if secret else "paste an API key")
    # the cookie carries a login token of its own, never the key: cookies reach every port of a host
    token = await anyio.to_thread.run_sync(cache.store.open_login, who.key_id or "", LOGIN_TTL_S)
    cookie = cookie_header(token, secure=request.url.scheme == "https")
    if json_body:
        response: Response = json_response({"ok": True, "auth": "on", "next": next_path, "name": who.name,
                                            "role": who.role})
    else:
        response = RedirectResponse(next_path, 303)
    response.headers.append("set-cookie", cookie)
    response.headers["cache-control"] = "no-store"
    return response


@router.get("/logout", include_in_schema=False)
def logout(request: Request) -> Response:
    token = request.cookies.get(COOKIE)
    if token:
        _cache(request).logout(token)  # the token stops working now, not when the cookie expires
    response = RedirectResponse("/login", 303)
    response.headers.append("set-cookie", clear_cookie_header())
    return response
