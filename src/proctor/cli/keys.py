"""``proctor keys``: API keys for the server, and the credential the CLI sends to one.

Keys are managed in the database directly (``--db``, ``PROCTOR_DATABASE_URL``, or
``.proctor/proctor.db``), like the other commands that take ``--db``: whoever can write the
database is an admin already. A running server sees a new or revoked key within a second.

Commands that talk to a server (``--url``) send ``PROCTOR_API_KEY`` as ``Authorization: Bearer``
(:func:`auth_headers`).
"""

from __future__ import annotations

import datetime as dt
import os
from typing import TYPE_CHECKING, Annotated, Any

import typer

from proctor.cli.output import console
from proctor.cli.output import fail as _fail
from proctor.cli.output import print_json as _print_json

if TYPE_CHECKING:
    from proctor.store.apikeys import ApiKeys

API_KEY_ENV = "PROCTOR_API_KEY"
ROLES = ("viewer", "operator", "approver", "admin")  # proctor.server.auth.ROLES, without importing FastAPI

keys_app = typer.Typer(
    help="""API keys: who may use the server, and in which role. Auth is on while one key is active.

Roles: viewer (read), operator (read, ingest spans, the decision API, kill switches, silences,
deploy and roll back), approver (read, approve or deny held calls), admin (everything, and keys,
policy and alert-rule reloads).

  proctor keys create alice --role admin      prints the key once, and a console login link

  proctor keys ls                             active keys (never their secrets)

  proctor keys revoke alice                   refused by servers within a second

Clients send the key as 'Authorization: Bearer <key>'; the CLI sends $PROCTOR_API_KEY with --url.
""",
    no_args_is_help=True,
)

DbOpt = Annotated[
    str | None,
    typer.Option("--db", envvar="PROCTOR_DATABASE_URL", help="Database URL (default: sqlite .proctor/proctor.db)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def auth_headers() -> dict[str, str]:
    """The headers that carry ``PROCTOR_API_KEY`` to a server (none when it is unset)."""
    key = os.environ.get(API_KEY_ENV, "").strip()
    return {"authorization": f"Bearer {key}"} if key else {}


def _when(ns: int | None) -> str:
    if not ns:
        return "-"
    return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _keys(db: str | None) -> ApiKeys:
    from proctor.store import DatabaseURLError, open_engine
    from proctor.store.apikeys import ApiKeys

    try:
        return ApiKeys(open_engine(db))
    except DatabaseURLError as exc:
        _fail(str(exc))


def _user() -> str | None:
    import getpass

    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return None


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="Who holds the key (a person or a service); recorded as who acted.")],
    role: Annotated[str, typer.Option(help="viewer, operator, approver or admin.")],
    db: DbOpt = None,
    server: Annotated[str, typer.Option(
        "--server", envvar="PROCTOR_URL", show_envvar=False,
        help="The server's address, for the login link (default: $PROCTOR_URL, else http://127.0.0.1:7070).")
    ] = "http://127.0.0.1:7070",
    as_json: JsonOpt = False,
) -> None:
    """Create a key and print its secret. It is shown this once: only its hash is stored."""
    from proctor.store.apikeys import ApiKeyError

    if role not in ROLES:
        _fail(f"--role takes {', '.join(ROLES)}; got {role!r}")
    store = _keys(db)
    try:
        was_on = store.any_active()
        key, secret = store.create(name, role, by=_user())
        admins = [k for k in store.active() if k.role == "admin"]
    except ApiKeyError as exc:
        _fail(str(exc))
    finally:
        store.engine.dispose()
    link = f"{server.rstrip('/')}/login#key={secret}"
    if as_json:
        _print_json({"key": key.to_dict(), "secret": secret, "login_url": link})
        return
    console.print(f"created key [bold]{key.name}[/] ({key.role}), id {key.id}", highlight=False)
    console.print("\nThe key (shown once: only its hash is stored; keep it somewhere safe):\n")
    console.print(f"  {secret}\n", highlight=False, soft_wrap=True, markup=False)
    console.print("Use it:", highlight=False)
    console.print(f"  export {API_KEY_ENV}={secret}   [dim]# the CLI (--url) and proctor.init() send it[/]",
                  highlight=False, soft_wrap=True)
    console.print(f"  curl -H 'Authorization: Bearer {secret}' {server.rstrip('/')}/api/traces",
                  highlight=False, soft_wrap=True, markup=False)
    console.print(f"  console login link: {link}", highlight=False, soft_wrap=True, markup=False)
    if not was_on:
        console.print("\n[bold yellow]Auth is now ON:[/] every request to a server on this database needs a key "
                      "(running servers notice within a second).", highlight=False)
    if not admins:
        console.print("[yellow]No admin key exists:[/] nobody can manage keys over HTTP; "
                      "`proctor keys create NAME --role admin` makes one.", highlight=False)


@keys_app.command("ls")
def keys_ls(
    db: DbOpt = None,
    show_all: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """List keys (never their secrets): name, role, who made them, when last used."""
    store = _keys(db)
    try:
        keys = store.list(include_revoked=show_all)
        auth_on = store.any_active()
    finally:
        store.engine.dispose()
    doc: dict[str, Any] = {"auth": "on" if auth_on else "off", "keys": [k.to_dict() for k in keys]}
    if as_json:
        _print_json(doc)
        return
    if not keys:
        console.print("no keys: auth is off (anyone who can reach the server acts as admin). "
                      "Create one with `proctor keys create NAME --role admin`.")
        return
    from rich import box
    from rich.table import Table

    # the id is the start of the secret (pk_<id>_...): enough to recognise a key, and to revoke it
    table = Table(header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("id", "name", "role", "created (UTC)", "last used (UTC)", "status"):
        # narrow terminals wrap the times and fold long names rather than drop a column
        table.add_column(col, no_wrap=col in ("id", "role"), overflow="fold", min_width=6 if col == "name" else None)
    for k in keys:
        status = "[green]active[/]" if k.active else f"[dim]revoked {_when(k.revoked_ns)[:16]}[/]"
        table.add_row(k.id, k.name, k.role, _when(k.created_ns)[:16], _when(k.last_used_ns)[:16], status)
    console.print(table)
    console.print(f"[dim]auth is {'on' if auth_on else 'off'}[/]", highlight=False)


@keys_app.command("revoke")
def keys_revoke(
    ref: Annotated[str, typer.Argument(metavar="NAME|ID", help="The key's id, or an active key's name.")],
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke a key: servers refuse it within a second. The row stays, for the record."""
    from proctor.store.apikeys import ApiKeyError

    store = _keys(db)
    try:
        key = store.revoke(ref)
        auth_on = store.any_active()
    except ApiKeyError as exc:
        _fail(str(exc))
    finally:
        store.engine.dispose()
    if as_json:
        _print_json({"key": key.to_dict(), "auth": "on" if auth_on else "off"})
        return
    console.print(f"revoked key [bold]{key.name}[/] ({key.role}), id {key.id}", highlight=False)
    if not auth_on:
        console.print("[bold yellow]No active key is left: auth is OFF[/] (anyone who can reach the server acts "
                      "as admin).", highlight=False)
