"""An agent that keeps calling a tool in one session until something stops it.

    python looping_agent.py SERVER_URL DATABASE_URL POLICY SESSION_ID

Bounded: at most 600 calls and 60 s. Prints ``STARTED`` once the first call has run, then on
being stopped ``STOPPED <exception> <epoch seconds> <calls made> <message>`` and exits 0.
Exit 5 if it ran out of calls or time without being stopped.
"""

from __future__ import annotations

import sys
import time

import proctor

MAX_CALLS = 600
MAX_S = 60.0


def main() -> int:
    server, db, policy, session_id = sys.argv[1:5]
    proctor.init(server, database_url=db, policy=policy, instrument=False, service_name="console-looping-agent")

    @proctor.tool(side_effect="read")
    def poll_inbox(page: int) -> int:
        return page

    t0 = time.monotonic()
    with proctor.session(agent="inbox-poller", session_id=session_id):
        for i in range(MAX_CALLS):
            if time.monotonic() - t0 > MAX_S:
                break
            try:
                poll_inbox(page=i)
            except (proctor.SessionTerminated, proctor.ActionDenied) as err:
                print("STOPPED", type(err).__name__, f"{time.time():.3f}", i, err, flush=True)
                proctor.flush(10)
                return 0
            if i == 0:
                print("STARTED", flush=True)
            time.sleep(0.1)
    print("NOT-STOPPED after", i + 1, "calls", flush=True)
    return 5


if __name__ == "__main__":
    sys.exit(main())
