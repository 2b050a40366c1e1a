"""A small SQLite CRM for the demo fleet, and the real tools the agents call on it.

The data is fictional and seeded deterministically. The tools really read and write the
database: a refund changes an order's status, an email lands in the ``outbox`` table, so a
second refund of the same order is refused the way a real system would refuse it.

Failures are deterministic too. Each customer lives on a CRM shard; ``SHARD_HEALTH`` says how
that shard behaves: ``flaky`` times out on the first lookup of each customer and then answers
(the agent retries), ``down`` always times out (the agent gives up and the run fails).
"""

from __future__ import annotations

import random
import re
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import proctor

SEED = 20250601
_EPOCH = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)

SHARD_HEALTH = {"us-east": "ok", "eu-west": "flaky", "ap-south": "down"}

SCHEMA = """
CREATE TABLE customers (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL UNIQUE, tier TEXT NOT NULL,
    shard TEXT NOT NULL, created_at TEXT NOT NULL
);
CREATE TABLE orders (
    id TEXT PRIMARY KEY, customer_id TEXT NOT NULL REFERENCES customers(id), item TEXT NOT NULL,
    total_usd REAL NOT NULL, status TEXT NOT NULL, placed_at TEXT NOT NULL, tracking TEXT
);
CREATE TABLE tickets (
    id TEXT PRIMARY KEY, customer_id TEXT NOT NULL REFERENCES customers(id), order_id TEXT,
    subject TEXT NOT NULL, body TEXT NOT NULL, status TEXT NOT NULL, created_at TEXT NOT NULL
);
CREATE TABLE refunds (
    id TEXT PRIMARY KEY, order_id TEXT NOT NULL REFERENCES orders(id), amount_usd REAL NOT NULL,
    reason TEXT NOT NULL, created_at TEXT NOT NULL
);
CREATE TABLE outbox (
    id TEXT PRIMARY KEY, to_addr TEXT NOT NULL, subject TEXT NOT NULL, body TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE kb_articles (
    id TEXT PRIMARY KEY, title TEXT NOT NULL, body TEXT NOT NULL, tags TEXT NOT NULL
);
"""

# (id, name, email, tier, shard)
CUSTOMERS = [
    ("C-1001", "Ana Souza", "ana.souza@example.com", "plus", "us-east"),
    ("C-1002", "Jun Chen", "jun.chen@example.com", "standard", "us-east"),
    ("C-1003", "Marta Nowak", "marta.nowak@example.com", "standard", "eu-west"),
    ("C-1004", "Lars Eriksen", "lars.eriksen@example.com", "plus", "eu-west"),
    ("C-1005", "Priya Raman", "priya.raman@example.com", "standard", "ap-south"),
    ("C-1006", "Sam Okafor", "sam.okafor@example.com", "standard", "us-east"),
]
# (id, customer, item, status); totals and dates come from the seeded generator
ORDERS = [
    ("O-2001", "C-1001", "Countertop blender", "delivered"),
    ("O-2002", "C-1001", "Chef's knife set", "delivered"),
    ("O-2003", "C-1002", "Wireless headphones", "delivered"),
    ("O-2004", "C-1002", "Phone stand", "refunded"),
    ("O-2005", "C-1003", "Espresso grinder", "shipped"),
    ("O-2006", "C-1003", "Milk frother", "delivered"),
    ("O-2007", "C-1004", "Standing desk mat", "delivered"),
    ("O-2008", "C-1005", "Rice cooker", "delivered"),
    ("O-2009", "C-1006", "Running shoes", "delivered"),
    ("O-2010", "C-1006", "Water bottle", "processing"),
]
# (id, customer, order, subject, body)
TICKETS = [
    ("T-3001", "C-1002", "O-2004", "Phone stand wobbles", "Already sent it back, just checking the refund."),
    ("T-3002", "C-1003", "O-2005", "Where is my grinder?", "Ordered two weeks ago, tracking hasn't moved."),
    ("T-3003", "C-1006", None, "Change my email", "Please use my work address from now on."),
]
# (id, title, body, tags); tags double as "related" topics the researcher follows
KB = [
    ("KB-101", "Return window",
     "Unused items can be returned within 30 days of delivery. Start a return from the order page; "
     "we email a prepaid label.", "returns refunds"),
    ("KB-102", "How refunds are issued",
     "Refunds go to the original payment method and take 5-10 business days to appear. A refund can be "
     "issued once per order, up to the order total.", "refunds partial-refunds"),
    ("KB-103", "Items damaged in shipping",
     "If an item arrives damaged, send a photo within 14 days. We refund the full order total or ship a "
     "replacement, customer's choice; no return needed.", "damage refunds carriers"),
    ("KB-104", "Partial refunds",
     "A partial refund is allowed for missing parts or cosmetic damage the customer keeps. It counts "
     "against the order total.", "partial-refunds refunds"),
    ("KB-105", "Shipping times and carriers",
     "Standard shipping takes 3-5 business days in the US and 5-9 to the EU. Tracking updates can lag "
     "24 hours behind the parcel.", "shipping carriers eu"),
    ("KB-106", "International shipping and customs (EU)",
     "EU orders ship DDP: duties are prepaid, the customer owes nothing on delivery. Customs checks can "
     "add 2-3 days.", "eu shipping customs"),
    ("KB-107", "Warranty claims",
     "Electrical items carry a 2-year warranty. Faults after the return window go to a warranty repair, "
     "not a refund.", "warranty returns"),
    ("KB-108", "Cancelling an order",
     "Orders can be cancelled until they ship. A processing order is cancelled, not refunded.",
     "cancellation refunds"),
    ("KB-109", "Changing the account email",
     "Customers change their email under Account > Profile; support can change it after verifying the "
     "last order number.", "account"),
]


class CRMError(Exception):
    """A failure the CRM reports to the caller; ``retryable`` tells an agent whether to try again."""

    retryable = False


class NotFoundError(CRMError):
    pass


class UpstreamTimeout(CRMError, TimeoutError):
    retryable = True


class RefundRefused(CRMError):
    pass


def _iso(dt: datetime) -> str:
    return dt.isoformat(timespec="seconds").replace("+00:00", "Z")


class CRM:
    """The demo CRM: one SQLite file, created fresh and seeded from ``seed``."""

    def __init__(self, path: str | Path, *, seed: int = SEED, latency: bool = True) -> None:
        self.path = Path(path)
        self.path.unlink(missing_ok=True)
        self.db = sqlite3.connect(self.path, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.latency = latency
        self._rng = random.Random(seed)
        self._lookups: dict[str, int] = {}  # customer id -> lookups, for the flaky shard
        self._clock = _EPOCH + timedelta(days=30)
        self._seq = {"T": 3100, "R": 4100, "M": 5100}
        self.db.executescript(SCHEMA)
        self._seed()

    def _seed(self) -> None:
        rng = self._rng
        with self.db:
            for cid, name, email, tier, shard in CUSTOMERS:
                created = _EPOCH - timedelta(days=rng.randint(60, 900))
                self.db.execute("INSERT INTO customers VALUES (?,?,?,?,?,?)",
                                (cid, name, email, tier, shard, _iso(created)))
            for oid, cid, item, status in ORDERS:
                total = round(rng.uniform(14, 260), 2)
                placed = _EPOCH + timedelta(days=rng.randint(0, 20), minutes=rng.randint(0, 1440))
                tracking = None if status == "processing" else f"1Z{rng.getrandbits(40):010X}"
                self.db.execute("INSERT INTO orders VALUES (?,?,?,?,?,?,?)",
                                (oid, cid, item, total, status, _iso(placed), tracking))
                if status == "refunded":
                    self.db.execute("INSERT INTO refunds VALUES (?,?,?,?,?)",
                                    ("R-4001", oid, total, "returned by customer", _iso(placed + timedelta(days=9))))
            for ticket_id, ticket_cid, ticket_oid, subject, body in TICKETS:
                self.db.execute("INSERT INTO tickets VALUES (?,?,?,?,?,?,?)",
                                (ticket_id, ticket_cid, ticket_oid, subject, body, "open",
                                 _iso(_EPOCH + timedelta(days=25))))
            self.db.executemany("INSERT INTO kb_articles VALUES (?,?,?,?)", KB)

    def close(self) -> None:
        self.db.close()

    # -- helpers --------------------------------------------------------------------------
    def _now(self) -> str:
        self._clock += timedelta(minutes=self._rng.randint(3, 40))
        return _iso(self._clock)

    def _next_id(self, prefix: str) -> str:
        self._seq[prefix] += 1
        return f"{prefix}-{self._seq[prefix]}"

    def _wait(self, low_ms: float = 1.0, high_ms: float = 6.0) -> None:
        # the round trip to a CRM service; the SQLite work itself takes microseconds
        if self.latency:
            time.sleep(self._rng.uniform(low_ms, high_ms) / 1000)

    def _one(self, sql: str, *args: Any) -> dict[str, Any] | None:
        row = self.db.execute(sql, args).fetchone()
        return dict(row) if row else None

    def _all(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute(sql, args)]

    # -- the world (not tools): what customers do between agent runs ----------------------
    def open_ticket(self, customer_id: str, order_id: str | None, subject: str, body: str) -> str:
        tid = self._next_id("T")
        with self.db:
            self.db.execute("INSERT INTO tickets VALUES (?,?,?,?,?,?,?)",
                            (tid, customer_id, order_id, subject, body, "open", self._now()))
        return tid

    def customers(self, shard_health: str | None = None) -> list[dict[str, Any]]:
        rows = self._all("SELECT * FROM customers ORDER BY id")
        return [r for r in rows if shard_health is None or SHARD_HEALTH[r["shard"]] == shard_health]

    def orders_of(self, customer_id: str) -> list[dict[str, Any]]:
        return self._all("SELECT * FROM orders WHERE customer_id = ? ORDER BY id", customer_id)

    def order(self, order_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM orders WHERE id = ?", order_id)

    def outbox(self) -> list[dict[str, Any]]:
        return self._all("SELECT * FROM outbox ORDER BY id")

    # -- tools ----------------------------------------------------------------------------
    def lookup_customer(self, email: str | None = None, customer_id: str | None = None) -> dict[str, Any]:
        """Find a customer by email address or by customer id."""
        if email:
            row = self._one("SELECT * FROM customers WHERE lower(email) = lower(?)", email.strip())
        elif customer_id:
            row = self._one("SELECT * FROM customers WHERE id = ?", customer_id.strip())
        else:
            raise ValueError("lookup_customer needs an email or a customer_id")
        if row is None:
            self._wait()
            raise NotFoundError(f"no customer with email {email!r}" if email else f"no customer {customer_id!r}")
        health = SHARD_HEALTH[row["shard"]]
        attempt = self._lookups[row["id"]] = self._lookups.get(row["id"], 0) + 1
        if health == "down" or (health == "flaky" and attempt == 1):
            self._wait(20, 35)  # a 2 s client timeout, compressed for the demo
            raise UpstreamTimeout(f"crm-{row['shard']} did not answer within 2.0 s (simulated timeout)")
        self._wait()
        return {k: row[k] for k in ("id", "name", "email", "tier", "created_at")}

    def list_orders(self, customer_id: str) -> list[dict[str, Any]]:
        """List a customer's orders, oldest first, with status and totals."""
        self._wait()
        if self._one("SELECT id FROM customers WHERE id = ?", customer_id) is None:
            raise NotFoundError(f"no customer {customer_id!r}")
        rows = self._all(
            "SELECT o.*, COALESCE((SELECT SUM(amount_usd) FROM refunds r WHERE r.order_id = o.id), 0)"
            " AS refunded_usd FROM orders o WHERE customer_id = ? ORDER BY placed_at", customer_id)
        return [{k: r[k] for k in ("id", "item", "total_usd", "status", "placed_at", "tracking", "refunded_usd")}
                for r in rows]

    def get_ticket(self, ticket_id: str) -> dict[str, Any]:
        """Read a support ticket: who wrote it (customer id), about which order, and what they wrote."""
        # The subject and body are the customer's own words: untrusted content (see demo/policy.yaml).
        # The customer's email address is deliberately not part of it: it comes from the CRM
        # (lookup_customer), so replying to the customer never copies an address out of a ticket.
        self._wait()
        row = self._one("SELECT * FROM tickets WHERE id = ?", ticket_id)
        if row is None:
            raise NotFoundError(f"no ticket {ticket_id!r}")
        return row

    def issue_refund(self, order_id: str, amount_usd: float, reason: str) -> dict[str, Any]:
        """Refund part or all of an order to the original payment method."""
        self._wait(3, 9)
        order = self._one("SELECT * FROM orders WHERE id = ?", order_id)
        if order is None:
            raise NotFoundError(f"no order {order_id!r}")
        if amount_usd <= 0:
            raise ValueError(f"refund amount must be positive, got {amount_usd}")
        if order["status"] == "processing":
            raise RefundRefused(f"order {order_id} has not shipped yet: cancel it instead of refunding")
        refunded = self.db.execute("SELECT COALESCE(SUM(amount_usd), 0), MAX(id) FROM refunds WHERE order_id = ?",
                                   (order_id,)).fetchone()
        already, last_refund = float(refunded[0]), refunded[1]
        if already >= order["total_usd"] - 0.005:
            raise RefundRefused(f"order {order_id} was already refunded in full ({last_refund})")
        if amount_usd > order["total_usd"] - already + 0.005:
            raise RefundRefused(
                f"amount {amount_usd:.2f} USD exceeds what is refundable on order {order_id}: "
                f"{order['total_usd'] - already:.2f} USD of {order['total_usd']:.2f} USD"
            )
        rid = self._next_id("R")
        full = amount_usd >= order["total_usd"] - already - 0.005
        with self.db:
            self.db.execute("INSERT INTO refunds VALUES (?,?,?,?,?)", (rid, order_id, amount_usd, reason, self._now()))
            self.db.execute("UPDATE orders SET status = ? WHERE id = ?",
                            ("refunded" if full else "partially_refunded", order_id))
        return {"refund_id": rid, "order_id": order_id, "amount_usd": round(amount_usd, 2), "status": "issued"}

    def send_email(self, to: str, subject: str, body: str) -> dict[str, Any]:
        """Send an email to a customer (queued in the outbox)."""
        self._wait(4, 12)
        if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-z]{2,}", to):
            raise ValueError(f"not an email address: {to!r}")
        mid = self._next_id("M")
        with self.db:
            self.db.execute("INSERT INTO outbox VALUES (?,?,?,?,?)", (mid, to, subject, body, self._now()))
        return {"message_id": mid, "queued": True}

    def search_kb(self, query: str, top_k: int = 3) -> list[dict[str, Any]]:
        """Search the help-center articles; returns the best matches with related topics."""
        self._wait(2, 8)
        words = {w for w in re.findall(r"[a-z0-9-]+", query.lower()) if len(w) > 1}
        scored = []
        for r in self._all("SELECT * FROM kb_articles ORDER BY id"):
            tags = r["tags"].split()
            text = f"{r['title']} {r['body']}".lower()
            score = sum(3 for w in words if w in tags) + sum(1 for w in words if w in text)
            if score:
                scored.append((-score, r["id"], r, tags))
        scored.sort(key=lambda x: x[:2])
        return [
            {"id": r["id"], "title": r["title"], "snippet": r["body"][:140], "related": tags, "score": -neg}
            for neg, _, r, tags in scored[:top_k]
        ]


# tool name -> side effect class
SIDE_EFFECTS = {
    "lookup_customer": "read",
    "list_orders": "read",
    "get_ticket": "read",
    "issue_refund": "irreversible",
    "send_email": "external",
    "search_kb": "read",
}


def crm_tools(crm: CRM) -> dict[str, Callable[..., Any]]:
    """The CRM's tools, each recorded as an ``execute_tool`` span by ``@proctor.tool``."""
    return {
        name: proctor.tool(name=name, side_effect=effect)(getattr(crm, name))
        for name, effect in SIDE_EFFECTS.items()
    }
