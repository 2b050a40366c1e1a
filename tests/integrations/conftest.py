"""Shared by the adapter specs: one small policy bundle and a guard on a fresh SQLite store.

The bundle, in words:

- ``get_weather`` is a read: allowed;
- ``delete_db`` is irreversible: denied by the default effect (no rule allows it);
- ``refund`` is a write: allowed up to $50 (``refunds-small``), above that it needs a human
  (``refunds-large``, require_approval);
- ``exfiltrate`` ends the session (``stop-exfiltration``, terminate_session);
- ``read_config`` is a read whose results are scanned for secrets, which are redacted
  (``no-secrets-out``); ``post_note`` is a read whose arguments are redacted the same way
  (``no-secrets-in``);
- a model call asking for more than 1000 output tokens is denied (``no-long-answers``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from proctor.guard import Guard
from proctor.store.decisions import DecisionLog
from proctor.store.engine import open_engine

from .support import POLICY


@pytest.fixture
def policy_path(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path


@pytest.fixture
def guard(policy_path: Path, tmp_path: Path) -> Iterator[Guard]:
    g = Guard(policy_path, open_engine(f"sqlite:///{tmp_path / 'p.db'}"))
    yield g
    g.close()
    g.engine.dispose()


@pytest.fixture
def decisions(guard: Guard) -> Callable[..., list[dict[str, Any]]]:
    """``decisions(target=None, session_id=None)``: the decision log rows, oldest first."""

    def read(target: str | None = None, session_id: str | None = None) -> list[dict[str, Any]]:
        assert guard.flush(), "the decision log writer did not drain"
        rows = DecisionLog(guard.engine).list(session_id=session_id, limit=1000)
        return [r for r in reversed(rows) if target is None or r["target"] == target]

    return read
