"""An agent whose refund needs a human: it asks, waits for the decision, then tries again.

    python refund_agent.py SERVER_URL DATABASE_URL POLICY SESSION_ID

Prints, one per line (flushed, for the test to read as they come):

* ``PENDING <approval id>``  — the guard held the call and asked for approval;
* ``STATUS <status>``        — what the wait ended with (approved, denied, expired, pending);
* ``REFUND-RAN <order>``     — the tool body really ran (only after an approval);
* ``PROCEEDED <result>``     — the retried call was released and returned;
* ``DENIED <message>``       — the retried call was refused (ActionDenied).

Exit 0 after PROCEEDED or DENIED; 3 if the guard did not hold the first call; 4 if the wait
timed out (nobody decided within 90 s).
"""

from __future__ import annotations

import sys

import proctor

WAIT_S = 90.0


def main() -> int:
    server, db, policy, session_id = sys.argv[1:5]
    proctor.init(server, database_url=db, policy=policy, instrument=False, service_name="console-refund-agent")

    @proctor.tool(side_effect="irreversible")
    def issue_refund(order_id: str, amount_usd: float) -> str:
        print("REFUND-RAN", order_id, flush=True)
        return f"refunded {amount_usd} on {order_id}"

    with proctor.session(agent="refund-agent", session_id=session_id):
        try:
            issue_refund(order_id="O-7731", amount_usd=129.5)
        except proctor.ApprovalPending as err:
            print("PENDING", err.approval.id, flush=True)
            status = err.approval.wait(WAIT_S)
            print("STATUS", status, flush=True)
            if status == "pending":
                return 4
        else:
            print("NOT-HELD: the guard let a $129.50 refund through without approval", flush=True)
            return 3
        try:
            # the same call again: the guard finds the decision by the call's digest
            result = issue_refund(order_id="O-7731", amount_usd=129.5)
        except proctor.ActionDenied as err:
            print("DENIED", err.decision.message or err, flush=True)
        else:
            print("PROCEEDED", result, flush=True)
    proctor.flush(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
