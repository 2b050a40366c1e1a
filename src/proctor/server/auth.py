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
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import HTTPException, Request

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


def require(request: Request, permission: str) -> Principal:
    """The principal if they hold ``permission``; else 403 naming the roles that do."""
    who = principal(request)
    if not who.can(permission):
        roles = ", ".join(r for r in ROLES if r in PERMISSIONS[permission])
        raise HTTPException(403, f"{permission!r} needs the role {roles}; {who.name} is {who.role}")
    return who
