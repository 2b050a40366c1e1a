"""Who is asking, and what their role lets them do.

Roles (DESIGN.md): viewer, operator, approver, admin. A request's principal is set on
``request.state.principal`` by the auth middleware; with no API key in the store, auth is off and
every request is the anonymous local admin (the server binds to 127.0.0.1 by default).

Permissions, by role:

=========  ======  ======  ========  =====
           viewer  operator approver  admin
=========  ======  ======  ========  =====
read         x       x        x        x     every GET: pages, /api, /metrics
ingest               x                 x     POST /v1/traces
operate              x                 x     guard API, kill switches, silences, deploy/rollback
approve                       x        x     approve or deny a held call
admin                                  x     API keys, policy and alert-rule reloads
=========  ======  ======  ========  =====

Auth is on while at least one unrevoked key exists (``proctor keys create``); see docs/auth.md.
:class:`AuthMiddleware` authenticates every request except ``/healthz``, ``/login``, ``/logout``, ``/favicon.ico``
and ``/static/``: ``Authorization: Bearer <key>`` (API clients, the SDK, the CLI) or the console's
``proctor_key`` cookie — a login token of its own, stored hashed, ended by log out, by its
key's revocation or after a week; never the key — which is HttpOnly and SameSite=Strict, and for which a state-changing
request must also come from the server's own origin (CSRF). It then checks the permission
:data:`RULES` names for the method and path; a handler whose rule depends on more than the path
calls :func:`require` itself (every console form handler does).

Keys are read from the database at most every 0.8 s per process (:class:`KeyCache`): a key
created or revoked by the CLI in another process takes effect within about a second (the
snapshot's age plus one query), and a request costs one SHA-256 and a dictionary lookup, not a
query.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, overload
from urllib.parse import quote, urlsplit

import anyio.to_thread
import orjson
from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine
from starlette.datastructures import Headers
from starlette.requests import cookie_parser

from proctor.store.apikeys import ApiKey, ApiKeyError, ApiKeyNotFound, ApiKeys, hash_secret, parse_secret

log = logging.getLogger(__name__)

ROLES = ("viewer", "operator", "approver", "admin")

PERMISSIONS: dict[str, frozenset[str]] = {
    "read": frozenset(ROLES),
    "ingest": frozenset({"operator", "admin"}),
    "operate": frozenset({"operator", "admin"}),
    "approve": frozenset({"approver", "admin"}),
    "admin": frozenset({"admin"}),
}


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    key_id: str | None = None
    anonymous: bool = False  # auth is off: no key exists, so everyone is the local admin

    def can(self, permission: str) -> bool:
        return self.role in PERMISSIONS[permission]


LOCAL_ADMIN = Principal("local", "admin", None, anonymous=True)


def principal(request: Request) -> Principal:
    """The request's principal (the local admin when no auth middleware ran: auth off)."""
    return getattr(request.state, "principal", None) or LOCAL_ADMIN


@overload
def acting_as(who: Principal, claimed: str) -> str: ...
@overload
def acting_as(who: Principal, claimed: str | None) -> str | None: ...
def acting_as(who: Principal, claimed: str | None) -> str | None:
    """The name to record for an action: the key's name when auth is on (a body cannot speak for
    someone else), else what the request claims (auth off: nobody is authenticated)."""
    return claimed if who.anonymous else who.name


def require(request: Request, permission: str) -> Principal:
    """The principal if they hold ``permission``; else 403 naming the roles that do."""
    who = principal(request)
    if not who.can(permission):
        raise HTTPException(403, refusal(who, permission))
    return who


def refusal(who: Principal, permission: str) -> str:
    """Why ``who`` may not do this: the permission, the roles that hold it, and their own role."""
    roles = ", ".join(r for r in ROLES if r in PERMISSIONS[permission])
    return f"{permission!r} needs the role {roles}; {who.name} is {who.role}"


# -- which permission a request needs ------------------------------------------------------------

COOKIE = "proctor_key"  # the console's login: a token of its own (not the key), HttpOnly, SameSite=Strict
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_ANY = frozenset({"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"})
_POST = frozenset({"POST"})

#: (methods, path prefix, permission), first match wins. Anything not listed needs "read" (that
#: is, a valid key when auth is on): every GET, and the console's own form handlers, which call
#: :func:`require` with the permission their action needs.
RULES: tuple[tuple[frozenset[str], str, str], ...] = (
    (_ANY, "/api/keys", "admin"),  # listing keys too: names and roles are an admin's business
    (_POST, "/v1/traces", "ingest"),
    (_ANY - SAFE_METHODS, "/api/guard/", "operate"),  # the decision API
    (_POST, "/api/kill-switches", "operate"),
    (frozenset({"POST", "DELETE"}), "/api/silences", "operate"),
    (_POST, "/api/agents/", "operate"),  # push, deploy, rollback
    (_POST, "/api/environments", "operate"),
    (_POST, "/api/approvals/", "approve"),  # approve, deny
    (_POST, "/api/policy/reload", "admin"),
    (_POST, "/api/alert-rules/", "admin"),  # reload, validate, test
    # The console's forms: any signed-in user reaches the handler, which checks the permission
    # itself (require()) so that a refusal is shown on the page, not as bare JSON.
    (_POST, "/approvals/", "read"),
    (_POST, "/killswitches", "read"),
    (_POST, "/alerts/silences", "read"),
)

#: Reachable without a key: liveness, the login and logout pages, the console's assets.
#: How long a console login lasts (it ends sooner if its key is revoked, or on log out).
LOGIN_TTL_S = 7 * 86400
LOGIN_CACHE_S = 5.0  # a login ended on another replica stops working there within this

OPEN_PATHS = frozenset({"/healthz", "/login", "/login.json", "/logout", "/favicon.ico"})
OPEN_PREFIXES = ("/static/",)
#: Answered with 401 JSON, never a redirect to the login page (machines read these).
_MACHINE_PREFIXES = ("/api/", "/v1/", "/metrics", "/healthz", "/openapi.json", "/static/")


def required_permission(method: str, path: str) -> str:
    """The permission ``method path`` needs, from :data:`RULES`. Anything not listed needs read
    when it is a safe method and admin when it changes something: a route added later without
    a rule fails closed."""
    for methods, prefix, permission in RULES:
        if method in methods and path.startswith(prefix):
            return permission
    return "read" if method in SAFE_METHODS else "admin"


def same_origin(headers: Headers) -> bool:
    """True when the request says it comes from a page of this server (Origin, else Referer,
    against Host). A browser always sends Origin on a cross-site POST, and scripts on another
    site cannot forge it."""
    host = headers.get("host")
    origin = headers.get("origin")
    source = origin if origin and origin != "null" else headers.get("referer")
    if not host or not source:
        return False
    parts = urlsplit(source)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()


def safe_next(target: str | None, default: str = "/") -> str:
    """``target`` if it is a path on this server (``/traces?agent=x``), else ``default``: the
    login page must never send anyone to another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    if any(ord(c) < 32 or ord(c) == 127 for c in target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or parts.path in ("/login", "/logout"):
        return default
    return target


# -- the key cache -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Snapshot:
    keys: dict[str, tuple[ApiKey, Principal]]  # key id -> (key, its principal)
    loaded: float  # monotonic seconds


class KeyCache:
    """The active keys, read from the database at most once per ``ttl_s`` (one query, however
    many requests and keys). An empty snapshot means auth is off.

    A key's last use is written at most once per ``touch_every_s`` per key, off the request's path.
    """

    def __init__(self, engine: Engine, ttl_s: float = 0.8, touch_every_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = ApiKeys(engine)
        self.ttl_s = ttl_s
        self.touch_every_ns = int(touch_every_s * 1e9)
        self._clock = clock
        self._snap: _Snapshot | None = None
        self._lock = threading.Lock()
        self._generation = 0  # bumped by invalidate(): a load that raced a change is not kept
        self._used: dict[str, int] = {}  # key id -> last use written (or being written), ns
        self._logins: dict[str, tuple[str, int, float]] = {}  # token hash -> (key id, expires ns, read at)

    def fresh(self) -> dict[str, tuple[ApiKey, Principal]] | None:
        """The snapshot if it is younger than ``ttl_s``, else None (then call :meth:`load`)."""
        snap = self._snap
        if snap is None or self._clock() - snap.loaded >= self.ttl_s:
            return None
        return snap.keys

    def load(self) -> dict[str, tuple[ApiKey, Principal]]:
        """The snapshot, read again if stale (blocking: call it from a thread in async code)."""
        with self._lock:  # concurrent requests that find it stale wait for one query
            keys = self.fresh()
            if keys is not None:
                return keys
            loaded, generation = self._clock(), self._generation
            keys = {k.id: (k, Principal(k.name, k.role, k.id)) for k in self.store.active()}
            if generation != self._generation:  # changed while we read: use it once, keep none
                return keys
            for k, _ in keys.values():
                if k.last_used_ns:
                    self._used[k.id] = max(self._used.get(k.id, 0), k.last_used_ns)
            self._snap = _Snapshot(keys, loaded)
            return keys

    def invalidate(self) -> None:
        """Forget the snapshot: the next request reads the keys again (after a change made here)."""
        self._generation += 1
        self._snap = None

    def auth_on(self) -> bool:
        return bool(self.load())

    @staticmethod
    def match(keys: dict[str, tuple[ApiKey, Principal]], secret: str) -> Principal | None:
        """The principal whose key ``secret`` is, in ``keys``; None if it is no active key's."""
        key_id = parse_secret(secret)
        found = keys.get(key_id) if key_id else None
        if found is None or not hmac.compare_digest(found[0].key_hash, hash_secret(secret)):
            return None
        return found[1]

    def due_touch(self, key_id: str) -> int | None:
        """Now, in ns, if the key's last use should be written now (and mark it written)."""
        now = time.time_ns()
        if now - self._used.get(key_id, 0) < self.touch_every_ns:
            return None
        self._used[key_id] = now
        return now

    # -- console logins (the cookie's token -> its key), re-read at most every LOGIN_CACHE_S --

    def login_cached(self, token: str) -> tuple[bool, str | None]:
        """(found in the cache, key id or None) for a console login token."""
        hit = self._logins.get(hash_secret(token))
        if hit is None or self._clock() - hit[2] >= LOGIN_CACHE_S or hit[1] <= time.time_ns():
            return False, None
        return True, hit[0]

    def login(self, token: str) -> str | None:
        """The key id of a console login (blocking: a database read when not cached)."""
        found = self.store.login_key(token)
        if len(self._logins) > 10_000:  # bounded: a flood of made-up tokens must not grow it
            self._logins.clear()
        if found is not None:
            self._logins[hash_secret(token)] = (found[0], found[1], self._clock())
        return found[0] if found else None

    def logout(self, token: str) -> None:
        self._logins.pop(hash_secret(token), None)
        self.store.close_login(token)

    def touch(self, key_id: str, when_ns: int) -> None:
        try:
            self.store.touch(key_id, when_ns)
        except Exception:  # bookkeeping: never worth failing a request or a log flood
            log.warning("could not record the use of API key %s", key_id, exc_info=True)


# -- the middleware ------------------------------------------------------------------------------

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _is_page(scope: Scope, headers: Headers) -> bool:
    """A person's browser asking for a console page: refused by a redirect to the login page."""
    path = scope["path"]
    if scope["method"] not in ("GET", "HEAD") or path.startswith(_MACHINE_PREFIXES) or path.endswith(".json"):
        return False
    if b"format=json" in scope.get("query_string", b""):
        return False
    return "text/html" in headers.get("accept", "")


#: Host names a browser may use to reach the server unless told otherwise (see allowed_hosts()).
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})


def allowed_hosts(extra: str | Iterable[str] | None = None, bound: str | None = None) -> frozenset[str]:
    """The Host names browsers may use: loopback, the address the server is bound to (unless it is
    a wildcard), and ``extra`` (names, or a comma-separated string such as PROCTOR_ALLOWED_HOSTS;
    default: that variable). ``*`` among them allows any."""
    if extra is None:
        extra = os.environ.get("PROCTOR_ALLOWED_HOSTS", "")
    names = [n.strip().lower() for n in (extra.split(",") if isinstance(extra, str) else extra) if n.strip()]
    if "*" in names:
        return frozenset({"*"})
    if bound and bound not in ("0.0.0.0", "::", ""):
        names.append(f"[{bound}]" if ":" in bound and not bound.startswith("[") else bound.lower())
    return LOOPBACK_HOSTS | frozenset(names)


def host_name(host: str) -> str:
    """``Host`` without its port, lower-cased: ``[::1]:7070`` -> ``[::1]``, ``a.example:80`` -> ``a.example``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class AuthMiddleware:
    """Sets ``request.state.principal`` and refuses what the principal may not do (ASGI, so
    that streamed responses, server-sent events included, pass through untouched).

    Browsers must also name a trusted host: a page on another domain that re-points its name at
    127.0.0.1 (DNS rebinding) would otherwise send same-origin requests the server cannot tell
    from the console's own, and with auth off act as the local admin. Requests without browser
    headers (Origin, Sec-Fetch-Site) — the SDK, the CLI, curl — are not affected."""

    def __init__(self, app: ASGIApp, keys: KeyCache, hosts: frozenset[str] = LOOPBACK_HOSTS) -> None:
        self.app = app
        self.keys = keys
        self.hosts = None if "*" in hosts else hosts

    async def _keys(self) -> dict[str, tuple[ApiKey, Principal]] | None:
        keys = self.keys.fresh()
        if keys is not None:
            return keys
        try:
            return await anyio.to_thread.run_sync(self.keys.load)
        except Exception:
            log.exception("cannot read the API keys")
            return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # No route uses WebSockets. Fail closed while auth is on (or unknown): one added later
        # must authenticate here before it can be reached.
        if scope["type"] == "websocket" and await self._keys() != {}:
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.hosts is not None:
            h = Headers(scope=scope)
            if ("origin" in h or "sec-fetch-site" in h) and host_name(h.get("host", "")) not in self.hosts:
                await _json(send, 403, f"this server does not answer browsers at {h.get('host', '')!r}: "
                                       "add the name with `proctor serve --allowed-host NAME` or "
                                       "PROCTOR_ALLOWED_HOSTS (protection against DNS rebinding)")
                return
        path: str = scope["path"]
        if path.startswith(OPEN_PREFIXES) or path == "/healthz":
            await self.app(scope, receive, send)
            return
        keys = await self._keys()
        if keys is None:
            await _json(send, 503, "cannot check credentials: the database is unavailable; retry later")
            return
        state = scope.setdefault("state", {})
        if not keys:  # auth off: no key exists
            state["principal"] = LOCAL_ADMIN
            await self.app(scope, receive, send)
            return

        headers = Headers(scope=scope)
        authorization = headers.get("authorization")
        who: Principal | None = None
        by_cookie = False
        if authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() == "bearer":
                who = KeyCache.match(keys, token.strip())
        else:
            login_token = cookie_parser(headers.get("cookie", "")).get(COOKIE)
            if login_token:
                by_cookie = True
                cached, key_id = self.keys.login_cached(login_token)
                if not cached:
                    try:
                        key_id = await anyio.to_thread.run_sync(self.keys.login, login_token)
                    except Exception:
                        log.exception("cannot read the console's logins")
                        await _json(send, 503, "cannot check the login: the database is unavailable; retry later")
                        return
                entry = keys.get(key_id) if key_id else None  # the key must still be active
                who = entry[1] if entry else None

        if path in OPEN_PATHS:  # the login page says who you are if it can, and never refuses
            if who is not None:
                state["principal"] = who
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        if who is None:
            if _is_page(scope, headers):
                query = scope.get("query_string", b"").decode("latin-1")
                target = quote(path + ("?" + query if query else ""), safe="")
                await _redirect(send, f"/login?next={target}", clear_cookie=by_cookie)
            elif authorization:
                await _json(send, 401, "invalid API key (unknown, malformed or revoked)", challenge=True)
            elif by_cookie:
                await _json(send, 401, "your console login is no longer valid (the key was revoked?): "
                                       "log in again at /login", challenge=True, clear_cookie=True)
            else:
                await _json(send, 401, "an API key is required: send 'Authorization: Bearer <key>' "
                                       "(create one with `proctor keys create NAME --role ROLE`)", challenge=True)
            return
        if by_cookie and method not in SAFE_METHODS and not same_origin(headers):
            await _json(send, 403, "cross-site request refused: a change made with the console's login must "
                                   "come from the console's own pages (Origin or Referer must match the host)")
            return
        state["principal"] = who
        permission = required_permission(method, path)
        if not who.can(permission):
            await _json(send, 403, refusal(who, permission))
            return
        when = self.keys.due_touch(who.key_id or "")
        if when is not None and who.key_id:
            asyncio.get_running_loop().run_in_executor(None, self.keys.touch, who.key_id, when)
        await self.app(scope, receive, send)


def _cookie_clear() -> tuple[bytes, bytes]:
    return b"set-cookie", f"{COOKIE}=; Max-Age=0; Path=/; HttpOnly; SameSite=Strict".encode()


async def _json(send: Send, status: int, detail: str, *, challenge: bool = False, clear_cookie: bool = False) -> None:
    body = orjson.dumps({"detail": detail})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if challenge:
        headers.append((b"www-authenticate", b'Bearer realm="proctor"'))
    if clear_cookie:
        headers.append(_cookie_clear())
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _redirect(send: Send, location: str, *, clear_cookie: bool = False) -> None:
    headers = [(b"location", location.encode("latin-1")), (b"content-length", b"0")]
    if clear_cookie:
        headers.append(_cookie_clear())
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


def cookie_header(token: str, *, secure: bool = False, max_age_s: int = LOGIN_TTL_S) -> str:
    """The Set-Cookie value that logs the console in with a login ``token`` (never an API key)."""
    return (f"{COOKIE}={token}; Max-Age={max_age_s}; Path=/; HttpOnly; SameSite=Strict"
            + ("; Secure" if secure else ""))


def clear_cookie_header() -> str:
    return _cookie_clear()[1].decode()


# -- the key API ---------------------------------------------------------------------------------

router = APIRouter(prefix="/api", tags=["auth"])


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64, description="Who holds the key; recorded as who acted.")
    role: Literal["viewer", "operator", "approver", "admin"]


def _key_cache(request: Request) -> KeyCache:
    return request.app.state.proctor.auth  # type: ignore[no-any-return]


def _doc(doc: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type="application/json")


@router.get("/keys", summary="API keys (never their secrets); auth is on while one is active")
def list_keys(
    request: Request,
    revoked: Annotated[bool, Query(description="Include revoked keys.")] = False,
) -> Response:
    require(request, "admin")
    keys = _key_cache(request).store.list(include_revoked=revoked)
    return _doc({"auth": "on" if any(k.active for k in keys) else "off", "keys": [k.to_dict() for k in keys]})


@router.post("/keys", status_code=201, summary="Create a key; its secret is in this answer and nowhere else")
def create_key(request: Request, body: KeyCreate) -> Response:
    who = require(request, "admin")
    cache = _key_cache(request)
    try:
        key, secret = cache.store.create(body.name, body.role, by=who.name)
    except ApiKeyError as exc:
        raise HTTPException(409 if "already named" in str(exc) else 400, str(exc)) from exc
    cache.invalidate()  # in effect on this server at once; on others within a second
    return _doc({"key": key.to_dict(), "secret": secret, "login_path": f"/login#key={secret}"}, 201)


@router.delete("/keys/{key_id}", summary="Revoke a key (by id, or an active key's name): refused from now on")
def revoke_key(request: Request, key_id: Annotated[str, Path(min_length=1, max_length=64)]) -> Response:
    require(request, "admin")
    cache = _key_cache(request)
    try:
        key = cache.store.revoke(key_id)
    except ApiKeyNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    cache.invalidate()
    return _doc({"key": key.to_dict()})
