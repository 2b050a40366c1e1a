"""Output shared by every ``proctor`` command: the consoles, errors, and JSON.

A module of its own so that sub-command modules (policy, governance, agent) can import it at
load time without importing :mod:`proctor.cli.main`, which imports them.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import orjson
import typer
from rich.console import Console
from rich.markup import escape

console = Console()
err = Console(stderr=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``error: message`` on stderr (brackets in it are shown, not read as markup) and exit."""
    err.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def print_json(doc: Any) -> None:
    opts = orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS  # SQLAlchemy row keys are str subclasses
    sys.stdout.write(orjson.dumps(doc, option=opts, default=str).decode() + "\n")
