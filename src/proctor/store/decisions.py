"""The decision log: every guard decision, append-only and hash-chained.

Each row's ``hash`` is ``sha256(prev_hash + canonical JSON of its content)`` (RFC 8785, see
:mod:`proctor.core.canonical`), where ``prev_hash`` is the previous row's hash and the first
row's is 64 zeros. The single-row ``decision_chain_head`` holds the last seq and hash. So:

* editing any field of a row breaks that row's hash;
* deleting or reordering rows breaks the seq sequence and the next row's ``prev_hash``;
* deleting the last rows leaves the head pointing past the end;
* adding a row without also rewriting the head leaves it pointing short of the end.

:meth:`DecisionLog.verify` checks all four (``proctor audit verify``). What a hash chain
cannot catch is someone with write access who rewrites a suffix *and* the head consistently;
anchoring the head hash elsewhere (exported, signed) closes that and is outside this module.

Appends from several processes are serialized on the head row (``SELECT ... FOR UPDATE`` on
PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite): the seq and prev_hash of a batch are read, and the
batch and new head written, in one transaction, so the chain never forks.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, insert, select, update

from proctor.core.canonical import canonical_json, sha256_hex
from proctor.store.budgets import retry_transaction, write_transaction
from proctor.store.schema import decision_chain_head as head_t
from proctor.store.schema import decisions as decisions_t

__all__ = ["GENESIS_HASH", "ChainVerification", "DecisionLog", "DecisionRecord", "chain_hash"]

GENESIS_HASH = "0" * 64
_MAX_PROBLEMS = 100


@dataclass(slots=True)
class DecisionRecord:
    """What a guard decided about one action. ``enforced`` is False in shadow mode (the
    decision was logged, not applied)."""

    decision_id: str
    ts_ns: int
    trace_id: str | None
    span_id: str | None
    session_id: str | None
    agent: str | None
    action: str  # tool | llm | llm_output | tool_result | input | ...
    target: str | None  # tool name or model
    effect: str
    enforced: bool = True
    rule_id: str | None = None
    policy_hash: str | None = None
    input_digest: str | None = None
    reasons: list[str] = field(default_factory=list)
    rule_kind: str | None = None  # the deciding rule's kind: loop, scanner, budget, tool, kill_switch, ...

    def to_dict(self) -> dict[str, Any]:
        # not asdict(): it deep-copies every value, ~10 us per record on the writer's hot path
        d = {name: getattr(self, name) for name in _CONTENT_FIELDS}
        d["reasons"] = list(self.reasons)
        return d


_CONTENT_FIELDS = tuple(f.name for f in fields(DecisionRecord))


def chain_hash(prev_hash: str, seq: int, content: dict[str, Any]) -> str:
    """The hash of row ``seq`` with these content fields, chained to ``prev_hash``.

    The seq is hashed too, so a row cannot be renumbered. ``ts_ns`` is hashed as a string:
    nanosecond timestamps exceed the integers RFC 8785 represents exactly (2**53).
    """
    doc = {name: content.get(name) for name in _CONTENT_FIELDS}
    doc["seq"] = seq
    doc["ts_ns"] = str(content["ts_ns"])
    doc["enforced"] = bool(content["enforced"])
    doc["reasons"] = list(content["reasons"])
    if doc.get("rule_kind") is None:  # rows logged before 0004 had no kind: their hashes stay valid
        doc.pop("rule_kind", None)
    return sha256_hex(prev_hash.encode("ascii") + _canonical(doc))


def _canonical(doc: dict[str, Any]) -> bytes:
    """RFC 8785 bytes for a decision's content, fast.

    The content is strings, None, booleans, a list of strings and integers below 2**53, under
    fixed ASCII keys. For exactly those, orjson with sorted keys writes the same bytes as
    RFC 8785 (same escapes, UTF-8 kept, keys in code-unit order; a test compares them over
    random strings) at ~1/30 of the cost of the pure-Python rfc8785 package, which stays the
    fallback for anything orjson refuses (lone surrogates).
    """
    try:
        return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return canonical_json(doc)


@dataclass(slots=True)
class ChainVerification:
    ok: bool
    checked: int
    problems: list[str]
    first_bad_seq: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _decode(row: Any) -> dict[str, Any]:
    d = dict(row._mapping)
    d["reasons"] = orjson.loads(d["reasons"])
    d["enforced"] = bool(d["enforced"])
    return d


class DecisionLog:
    """The append-only decision log in the database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def append(self, records: Sequence[DecisionRecord]) -> builtins.list[int]:
        """Append ``records`` in order, in one transaction; returns their seqs.

        Idempotent per ``decision_id``: a record already in the log (a retried batch), or
        repeated within the batch, is not appended again; its existing seq is returned. A writer
        that retries after an ambiguous failure (a commit whose answer was lost) therefore never
        duplicates a decision, and never loses a batch over a duplicate.
        """
        if not records:
            return []
        ids = list(dict.fromkeys(r.decision_id for r in records))
        for r in records:
            if not r.decision_id or not r.action or not r.effect:
                raise ValueError(f"a decision needs decision_id, action and effect: {r!r}")

        def attempt() -> builtins.list[int]:
            with write_transaction(self.engine) as conn:
                head = conn.execute(
                    select(head_t.c.seq, head_t.c.hash).where(head_t.c.id == 1).with_for_update()
                ).one_or_none()
                if head is None:
                    raise RuntimeError(
                        "the decision chain head row is missing: the log was tampered with or restored"
                        " partially; run 'proctor audit verify'"
                    )
                seq, prev = int(head.seq), str(head.hash)
                known = dict(conn.execute(
                    select(decisions_t.c.decision_id, decisions_t.c.seq).where(decisions_t.c.decision_id.in_(ids))
                ).all())
                rows: builtins.list[dict[str, Any]] = []
                seqs: builtins.list[int] = []
                for r in records:
                    if r.decision_id in known:
                        seqs.append(int(known[r.decision_id]))
                        continue
                    seq += 1
                    known[r.decision_id] = seq
                    content = r.to_dict()
                    h = chain_hash(prev, seq, content)
                    content.update(seq=seq, prev_hash=prev, hash=h, enforced=bool(r.enforced),
                                   reasons=orjson.dumps(list(r.reasons)).decode())
                    rows.append(content)
                    seqs.append(seq)
                    prev = h
                if rows:
                    conn.execute(insert(decisions_t), rows)
                    conn.execute(update(head_t).where(head_t.c.id == 1).values(seq=seq, hash=prev))
            return seqs

        return retry_transaction(attempt)

    def head(self) -> tuple[int, str]:
        """(last seq, its hash); (0, 64 zeros) for an empty log."""
        with self.engine.connect() as conn:
            row = conn.execute(select(head_t.c.seq, head_t.c.hash).where(head_t.c.id == 1)).one_or_none()
        return (0, GENESIS_HASH) if row is None else (int(row.seq), str(row.hash))

    def verify(self, *, chunk_size: int = 1000) -> ChainVerification:
        """Recompute the whole chain, in seq order, ``chunk_size`` rows at a time.

        Reads one consistent snapshot (a REPEATABLE READ transaction on PostgreSQL, one read
        transaction on SQLite), so appends running meanwhile are not mistaken for tampering.
        """
        problems: builtins.list[str] = []
        bad: builtins.list[int] = []

        def problem(seq: int, message: str) -> None:
            bad.append(seq)
            if len(problems) < _MAX_PROBLEMS:
                problems.append(message)

        checked = 0
        expected, prev, last_seq, last_hash = 1, GENESIS_HASH, 0, GENESIS_HASH
        with self._snapshot() as conn:
            head = conn.execute(select(head_t.c.seq, head_t.c.hash).where(head_t.c.id == 1)).one_or_none()
            for row in self._stream(conn, chunk_size):
                seq = int(row.seq)
                if seq > expected:
                    gap = f"seq {expected}" if seq == expected + 1 else f"seqs {expected}..{seq - 1}"
                    problem(expected, f"{gap} missing: rows were deleted")
                elif seq < expected:
                    problem(seq, f"seq {seq} is out of sequence: a row was inserted")
                if row.prev_hash != prev:
                    problem(seq, f"seq {seq}: prev_hash does not match the hash of seq {last_seq}: the chain is broken"
                            " here (a row before it was deleted, inserted or rewritten)")
                content = dict(row._mapping)
                try:
                    content["reasons"] = orjson.loads(content["reasons"])
                    intact = chain_hash(row.prev_hash, seq, content) == row.hash
                except (orjson.JSONDecodeError, TypeError, ValueError):  # unparseable or unhashable
                    intact = False
                if not intact:
                    problem(seq, f"seq {seq}: content does not match its hash: the row was edited")
                # Follow the stored hash, so one edited row is reported once, where it is.
                prev, last_seq, last_hash = row.hash, seq, row.hash
                expected = max(expected, seq) + 1
                checked += 1
        if head is None:
            problem(last_seq + 1, "the chain head row is missing")
        elif int(head.seq) != last_seq or head.hash != last_hash:
            head_seq = int(head.seq)
            if head_seq > last_seq:
                msg = (f"the head records seq {head_seq} but the log ends at seq {last_seq}:"
                       " the last rows were deleted")
            elif head_seq < last_seq:
                msg = f"the log ends at seq {last_seq} but the head records seq {head_seq}: rows were appended outside the log"
            else:
                msg = f"seq {last_seq}: its hash differs from the head's: the last row was rewritten"
            problem(min(head_seq, last_seq) + (0 if head_seq == last_seq else 1), msg)
        if len(bad) > _MAX_PROBLEMS:
            problems.append(f"... and {len(bad) - _MAX_PROBLEMS} more problems")
        return ChainVerification(ok=not bad, checked=checked, problems=problems,
                                 first_bad_seq=min(bad) if bad else None)

    def _snapshot(self) -> Connection:
        conn = self.engine.connect()
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        else:
            conn.exec_driver_sql("BEGIN")  # a deferred read transaction: one WAL snapshot throughout
        return conn

    @staticmethod
    def _stream(conn: Connection, chunk_size: int) -> Iterator[Any]:
        last = None
        c = decisions_t.c
        while True:
            stmt = select(decisions_t).order_by(c.seq).limit(chunk_size)
            if last is not None:
                stmt = stmt.where(c.seq > last)
            rows = conn.execute(stmt).all()
            yield from rows
            if len(rows) < chunk_size:
                return
            last = rows[-1].seq

    def for_trace(self, trace_id: str, span_id: str | None = None) -> builtins.list[dict[str, Any]]:
        """Every decision about a trace (or one span of it), oldest first (the trace view)."""
        c = decisions_t.c
        stmt = select(decisions_t).where(c.trace_id == trace_id)
        if span_id is not None:
            stmt = stmt.where(c.span_id == span_id)
        with self.engine.connect() as conn:
            return [_decode(r) for r in conn.execute(stmt.order_by(c.seq))]

    def list(
        self,
        *,
        session_id: str | None = None,
        trace_id: str | None = None,
        effect: str | None = None,
        agent: str | None = None,
        action: str | None = None,
        rule_id: str | None = None,
        enforced: bool | None = None,
        since_ns: int | None = None,
        until_ns: int | None = None,
        policy_hash: str | None = None,
        limit: int = 100,
        before_seq: int | None = None,
    ) -> builtins.list[dict[str, Any]]:
        """Decisions matching every filter given, newest first; ``before_seq`` pages back from the
        last seq of a page (a range scan of the primary key however far back). ``policy_hash``
        matches a prefix; ``since_ns``/``until_ns`` bound the decision time, until exclusive."""
        c = decisions_t.c
        stmt = select(decisions_t).order_by(c.seq.desc()).limit(max(1, limit))
        for col, value in ((c.session_id, session_id), (c.trace_id, trace_id), (c.effect, effect),
                           (c.agent, agent), (c.action, action), (c.rule_id, rule_id)):
            if value is not None:
                stmt = stmt.where(col == value)
        if enforced is not None:
            stmt = stmt.where(c.enforced.is_(enforced))
        if since_ns is not None:
            stmt = stmt.where(c.ts_ns >= since_ns)
        if until_ns is not None:
            stmt = stmt.where(c.ts_ns < until_ns)
        if policy_hash is not None:
            stmt = stmt.where(c.policy_hash.startswith(policy_hash, autoescape=True))
        if before_seq is not None:
            stmt = stmt.where(c.seq < before_seq)
        with self.engine.connect() as conn:
            return [_decode(r) for r in conn.execute(stmt)]
