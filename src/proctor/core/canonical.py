"""Canonical JSON (RFC 8785, via the ``rfc8785`` package) and content hashing."""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785


def canonical_json(value: Any) -> bytes:
    """Serialize ``value`` as RFC 8785 canonical JSON (UTF-8 bytes).

    Raises ``ValueError``/``TypeError`` subclasses from rfc8785 for values JSON cannot
    represent (NaN, infinities, non-string keys, integers beyond IEEE 754 precision).
    """
    return rfc8785.dumps(value)


def sha256_hex(data: str | bytes) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()
