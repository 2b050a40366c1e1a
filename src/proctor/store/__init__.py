"""Layer 2: the schema, migrations and repositories, on SQLite and PostgreSQL."""

from proctor.store.apikeys import ApiKey, ApiKeyError, ApiKeyNotFound, ApiKeys
from proctor.store.engine import DatabaseURLError, database_url, migrate, open_engine
from proctor.store.spans import CursorError, Page, SpanStore, TraceFilter, WriteResult
from proctor.store.writer import BatchWriter

__all__ = [
    "ApiKey",
    "ApiKeyError",
    "ApiKeyNotFound",
    "ApiKeys",
    "BatchWriter",
    "CursorError",
    "DatabaseURLError",
    "Page",
    "SpanStore",
    "TraceFilter",
    "WriteResult",
    "database_url",
    "migrate",
    "open_engine",
]
