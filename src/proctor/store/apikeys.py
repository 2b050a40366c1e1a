"""API keys: who may call the server, and in which role.

A key's secret is ``pk_<id>_<random>``: the id finds the row in one indexed lookup, the random
part (256 bits, ``secrets.token_urlsafe``) is what makes it unguessable. Only the SHA-256 of the
whole secret is stored, never the secret itself: it is shown once, when the key is created. A
plain hash (no salt, no slow KDF) is enough because the secret is random and long; a slow hash
would only slow down every request.

Auth is on while at least one key is unrevoked (see :mod:`proctor.server.auth`). A key is never
deleted: revoking it keeps the row (who had access, and when) and frees its name for a new key.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from proctor.store.budgets import write_transaction
from proctor.store.schema import api_keys as keys_t
from proctor.store.schema import console_sessions as sessions_t

__all__ = ["ROLES", "ApiKey", "ApiKeyError", "ApiKeyNotFound", "ApiKeys", "hash_secret", "parse_secret"]

#: The roles a key may hold, least to most (the same tuple as proctor.server.auth.ROLES).
ROLES = ("viewer", "operator", "approver", "admin")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
_SECRET_RE = re.compile(r"pk_([0-9a-f]{12})_[A-Za-z0-9_-]{20,100}")
_LOGIN_RE = re.compile(r"ps_[A-Za-z0-9_-]{40,100}")
_PREFIX_CHARS = 20  # "pk_" + 12-hex id + "_" + 4 random characters: enough to tell keys apart on screen


class ApiKeyError(ValueError):
    """A key cannot be created or revoked as asked; the message says why."""


class ApiKeyNotFound(ApiKeyError, LookupError):
    pass


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_secret(secret: str) -> str | None:
    """The key id inside a well-formed secret, else None."""
    m = _SECRET_RE.fullmatch(secret)
    return m.group(1) if m else None


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    name: str
    role: str
    prefix: str  # the secret's first characters, to recognise a key; not enough to use it
    created_ns: int
    created_by: str | None
    revoked_ns: int | None
    last_used_ns: int | None
    key_hash: str  # sha256 hex of the secret; never in to_dict()

    @property
    def active(self) -> bool:
        return self.revoked_ns is None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "role": self.role, "prefix": self.prefix,
                "created_ns": self.created_ns, "created_by": self.created_by, "revoked_ns": self.revoked_ns,
                "last_used_ns": self.last_used_ns, "active": self.active}


def _row(r: Any) -> ApiKey:
    return ApiKey(r.id, r.name, r.role, r.prefix, int(r.created_ns), r.created_by,
                  None if r.revoked_ns is None else int(r.revoked_ns),
                  None if r.last_used_ns is None else int(r.last_used_ns), r.key_hash)


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ApiKeyError(f"invalid key name {name!r}: 1 to 64 letters, digits and . _ @ + - "
                          "(starting with a letter or digit), e.g. alice, ci-deploy, ops@example.com")
    return name


def validate_role(role: str) -> str:
    if role not in ROLES:
        raise ApiKeyError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    return role


class ApiKeys:
    """The API keys in the database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, name: str, role: str, *, by: str | None = None) -> tuple[ApiKey, str]:
        """A new key and its secret. The secret is not stored anywhere: show it now or lose it.
        Raises ApiKeyError for a bad name or role, or a name an active key already has."""
        validate_name(name)
        validate_role(role)
        key_id = secrets.token_hex(6)
        secret = f"pk_{key_id}_{secrets.token_urlsafe(32)}"
        key = ApiKey(key_id, name, role, secret[:_PREFIX_CHARS], time.time_ns(), by, None, None, hash_secret(secret))
        values = {"id": key.id, "name": key.name, "role": key.role, "key_hash": key.key_hash,
                  "prefix": key.prefix, "created_ns": key.created_ns, "created_by": key.created_by}
        try:
            with write_transaction(self.engine) as conn:
                taken = conn.execute(select(keys_t.c.id).where(keys_t.c.name == name,
                                                               keys_t.c.revoked_ns.is_(None))).first()
                if taken is not None:
                    raise ApiKeyError(f"an active key is already named {name!r} (id {taken.id}); "
                                      "revoke it first or pick another name")
                conn.execute(insert(keys_t).values(values))
        except IntegrityError as exc:  # a concurrent create won the race for the name
            raise ApiKeyError(f"an active key is already named {name!r}") from exc
        return key, secret

    def list(self, *, include_revoked: bool = False) -> builtins.list[ApiKey]:
        """Keys, oldest first; revoked ones only when asked."""
        stmt = select(keys_t).order_by(keys_t.c.created_ns, keys_t.c.id)
        if not include_revoked:
            stmt = stmt.where(keys_t.c.revoked_ns.is_(None))
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(stmt)]

    def get(self, ref: str) -> ApiKey:
        """A key by id, else the active key of that name. Raises ApiKeyNotFound."""
        with self.engine.connect() as conn:
            row = conn.execute(select(keys_t).where(keys_t.c.id == ref)).first()
            if row is None:
                row = conn.execute(select(keys_t).where(keys_t.c.name == ref, keys_t.c.revoked_ns.is_(None))).first()
        if row is None:
            raise ApiKeyNotFound(f"no key with id {ref!r} and no active key named {ref!r}")
        return _row(row)

    def revoke(self, ref: str) -> ApiKey:
        """Revoke a key (by id or active name); servers refuse it within a second. Revoking a
        revoked key changes nothing and returns it."""
        key = self.get(ref)
        if not key.active:
            return key
        now = time.time_ns()
        with write_transaction(self.engine) as conn:
            conn.execute(update(keys_t).where(keys_t.c.id == key.id, keys_t.c.revoked_ns.is_(None))
                         .values(revoked_ns=now))
        return self.get(key.id)

    def active(self) -> builtins.list[ApiKey]:
        """Every unrevoked key, in one query (servers cache this snapshot for a second)."""
        return self.list()

    def any_active(self) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(select(keys_t.c.id).where(keys_t.c.revoked_ns.is_(None)).limit(1)).first() is not None

    def verify(self, secret: str) -> ApiKey | None:
        """The active key whose secret this is, else None (unknown, malformed or revoked)."""
        key_id = parse_secret(secret)
        if key_id is None:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(select(keys_t).where(keys_t.c.id == key_id)).first()
        if row is None or row.revoked_ns is not None:
            return None
        return _row(row) if hmac.compare_digest(row.key_hash, hash_secret(secret)) else None

    def touch(self, key_id: str, when_ns: int | None = None) -> None:
        """Record that a key was used (servers do this at most once a minute per key)."""
        with self.engine.begin() as conn:
            conn.execute(update(keys_t).where(keys_t.c.id == key_id).values(last_used_ns=when_ns or time.time_ns()))

    # -- the console's logins -------------------------------------------------------------------

    def open_login(self, key_id: str, ttl_s: float) -> str:
        """A console login for ``key_id``: a random token for the browser's cookie (only its hash
        is stored). It lasts ``ttl_s`` at most, and no longer than the key."""
        token = "ps_" + secrets.token_urlsafe(32)
        now = time.time_ns()
        with self.engine.begin() as conn:
            # an expired login is never read again: drop those while we are here
            conn.execute(delete(sessions_t).where(sessions_t.c.expires_ns <= now))
            conn.execute(insert(sessions_t).values(token_hash=hash_secret(token), key_id=key_id, created_ns=now,
                                                   expires_ns=now + int(ttl_s * 1e9)))
        return token

    def login_key(self, token: str) -> tuple[str, int] | None:
        """(key id, expiry ns) of an unexpired console login, else None. Whether the key is
        still active is the caller's to check (against its snapshot of active keys)."""
        if not _LOGIN_RE.fullmatch(token):
            return None
        with self.engine.connect() as conn:
            row = conn.execute(select(sessions_t.c.key_id, sessions_t.c.expires_ns)
                               .where(sessions_t.c.token_hash == hash_secret(token))).first()
        if row is None or row.expires_ns <= time.time_ns():
            return None
        return str(row.key_id), int(row.expires_ns)

    def close_login(self, token: str) -> None:
        """Log a console login out (its token stops working at once on this server)."""
        with self.engine.begin() as conn:
            conn.execute(delete(sessions_t).where(sessions_t.c.token_hash == hash_secret(token)))
