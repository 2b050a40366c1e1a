"""The SIMULATED agent fleet: three agents, their agent loop, and the scenarios they play.

- ``support-triage`` works the support queue and chats with customers. It delegates to two
  sub-agents through tool calls (agents as tools): ``transfer_to_refund_agent`` runs
  ``refund-agent``, ``ask_kb_researcher`` runs ``kb-researcher``. Each sub-agent run is an
  ``invoke_agent`` span nested under the tool span that started it, in the same trace and
  session, so the trace shows who spawned whom.
- ``kb-researcher`` also runs on its own for long research jobs.

One run is one session (conversation) of one to three user turns; each turn is one trace.
The agent loop is the ordinary one (call the model, run the tool calls it asks for, feed the
results back, stop at a final answer); only the model is scripted (``demo.model``). The
scenarios, customers and arguments are chosen by a seeded generator, so a seed replays the
same fleet; session ids are fresh on every run so that two demos never share a session.
"""

from __future__ import annotations

import inspect
import random
import re
import time
import uuid
from collections.abc import Callable, Generator
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

import proctor
from proctor.demo.crm import CRM, crm_tools
from proctor.demo.model import (
    CallTools,
    Decision,
    ScriptedModel,
    SimulatedProviderError,
    ToolFailure,
    call,
    failure_response,
    parallel,
    provider_error,
    say,
    text_message,
    tool_response,
)
from proctor.sdk import current_session

SEED = 7


@dataclass(frozen=True, slots=True)
class AgentSpec:
    name: str
    version: str
    model: str
    description: str
    instructions: str
    tools: tuple[str, ...]
    max_model_calls: int = 16
    max_consecutive_tool_failures: int = 3


SUPPORT_TRIAGE = AgentSpec(
    "support-triage", "1.4.0", "gpt-4o-mini",
    "Works the support queue: answers customers, delegates refunds and policy questions.",
    "You are Acme's support triage agent. Verify the customer with lookup_customer before discussing "
    "orders. Never issue refunds yourself: hand them to the refund agent. Ask the KB researcher when a "
    "policy question comes up and cite article ids. Keep replies short and friendly.",
    ("get_ticket", "lookup_customer", "list_orders", "send_email", "ask_kb_researcher",
     "transfer_to_refund_agent"),
)
# the canary: same agent, next version, another model
SUPPORT_TRIAGE_CANARY = replace(SUPPORT_TRIAGE, version="1.5.0-rc.1", model="claude-3-5-haiku")
REFUND_AGENT = AgentSpec(
    "refund-agent", "2.1.3", "gpt-4o-mini",
    "Checks an order and issues or refuses a refund.",
    "You are the refund agent. Check the order belongs to the customer, refund at most what is still "
    "refundable, and answer with JSON: {\"status\": \"refunded\"|\"refused\", ...}.",
    ("list_orders", "issue_refund"),
)
KB_RESEARCHER = AgentSpec(
    "kb-researcher", "0.9.2", "claude-3-5-haiku",
    "Searches the help center and answers with cited articles.",
    "You research Acme's help center. Search, follow related topics until the question is covered, "
    "and answer with the article ids you relied on.",
    ("search_kb",),
)
AGENTS = (SUPPORT_TRIAGE, REFUND_AGENT, KB_RESEARCHER)


class AgentFailed(RuntimeError):
    """The agent loop gave up: too many failed tool calls in a row, or too many model calls."""


_JSON_TYPES = {"str": "string", "float": "number", "int": "integer", "bool": "boolean"}


def tool_definition(name: str, fn: Callable[..., Any]) -> dict[str, Any]:
    """The function's JSON Schema definition, as it would be sent to a model."""
    props: dict[str, Any] = {}
    required = []
    for p in inspect.signature(fn).parameters.values():
        ann = str(p.annotation).replace(" | None", "")
        props[p.name] = {"type": _JSON_TYPES.get(ann, "string")}
        if p.default is inspect.Parameter.empty:
            required.append(p.name)
    doc = (inspect.getdoc(fn) or "").split("\n")[0]
    return {"type": "function", "name": name, "description": doc,
            "parameters": {"type": "object", "properties": props, "required": required}}


@dataclass
class Conversation:
    """One agent's side of a session: its scripted model and the message history so far."""

    spec: AgentSpec
    model: ScriptedModel
    session_id: str
    user: str
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Plan:
    scenario: str
    spec: AgentSpec
    user: str
    turns: list[str]
    script: Generator[Decision, Any, None]
    note: str  # one line for the console


@dataclass
class RunRecord:
    """What one run did, for the console summary and tests."""

    index: int
    scenario: str
    agent: str
    version: str
    session_id: str
    user: str
    note: str
    trace_ids: list[str] = field(default_factory=list)
    tool_errors: int = 0  # failed tool calls, sub-agents' included
    error: str | None = None  # why the run ended early, if it did


def _retrying(decision: CallTools, attempts: int = 3) -> Generator[Decision, Any, Any]:
    """Call a tool, and call it again while it fails with a retryable error."""
    result: Any = None
    for attempt in range(attempts):
        if attempt:
            decision = replace(decision, thought=f"That timed out; trying again ({attempt + 1}/{attempts}).")
        result = yield decision
        if not (isinstance(result, ToolFailure) and result.retryable):
            break
    return result


def _usd(x: float) -> str:
    return f"{x:.2f} USD"


class Fleet:
    """Runs the simulated agents against a CRM; ``run_next()`` plays one scenario as one session."""

    # the first runs walk through every scenario once; then they come in shuffled rounds in
    # which each scenario appears as many times as its weight
    SCENARIOS: tuple[tuple[str, int], ...] = (
        ("refund_damaged_item", 3), ("order_status_flaky_crm", 2), ("refund_refused", 2),
        ("crm_shard_down", 1), ("research_briefing", 1), ("clarify_then_refund", 2), ("order_status", 3),
    )

    def __init__(self, crm: CRM, *, seed: int = SEED, tracer: trace.Tracer | None = None,
                 latency: bool = True) -> None:
        self.crm = crm
        self.latency = latency  # False: no simulated waits (tests)
        self.tracer = tracer or trace.get_tracer("proctor.demo")
        self.rng = random.Random(seed)
        # recorded tools: callables with .call_with_id (see proctor.sdk.tools)
        self.tools: dict[str, Any] = crm_tools(crm)
        self.tools["transfer_to_refund_agent"] = proctor.tool(
            name="transfer_to_refund_agent", side_effect="write")(self.transfer_to_refund_agent)
        self.tools["ask_kb_researcher"] = proctor.tool(name="ask_kb_researcher", side_effect="read")(
            self.ask_kb_researcher)
        self.definitions = {name: tool_definition(name, fn) for name, fn in self.tools.items()}
        self.runs = 0
        self._deck: list[str] = []
        self.trace_id: str | None = None  # of the top-level turn running now
        self.tool_errors = 0

    # -- the agent loop -------------------------------------------------------------------
    def _model(self, spec: AgentSpec, script: Generator[Decision, Any, None]) -> ScriptedModel:
        return ScriptedModel(spec.model, script, random.Random(self.rng.getrandbits(64)), tracer=self.tracer,
                             latency=self.latency)

    def run_turn(self, convo: Conversation, user_text: str, *, scenario: str | None = None) -> str:
        """One user turn: one ``invoke_agent`` span, model calls and tool calls until a final answer."""
        spec = convo.spec
        user_msg = text_message("user", user_text)
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "invoke_agent",
            "proctor.span.kind": "agent",
            "gen_ai.agent.description": spec.description,
            "gen_ai.request.model": spec.model,
            "gen_ai.input.messages": orjson.dumps([user_msg]).decode(),
        }
        if scenario:
            attrs["proctor.demo.scenario"] = scenario
        # proctor.session() stamps who is acting on every span inside. The agent span itself is
        # made here rather than by session(span=True), which takes OpenTelemetry's global tracer
        # provider: the demo does not set that one (see demo.run).
        with (
            proctor.session(agent=spec.name, version=spec.version, user=convo.user, session_id=convo.session_id,
                            span=False, attributes={"proctor.simulated": True}),
            self.tracer.start_as_current_span(f"invoke_agent {spec.name}", attributes=attrs,
                                              record_exception=False, set_status_on_exception=False) as span,
        ):
            if scenario:  # a top-level turn: its span is the trace's root
                self.trace_id = format(span.get_span_context().trace_id, "032x")
            convo.history.append(user_msg)
            try:
                answer = self._loop(convo, [self.definitions[n] for n in spec.tools])
            except BaseException as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}" if str(exc)
                                       else type(exc).__name__))
                span.set_attribute("error.type", type(exc).__qualname__)
                raise
            span.set_attribute("gen_ai.output.messages", orjson.dumps([convo.history[-1]]).decode())
            return answer

    def _loop(self, convo: Conversation, tool_defs: list[dict[str, Any]]) -> str:
        spec = convo.spec
        failures = provider_retries = 0
        for _ in range(spec.max_model_calls):
            try:
                reply = convo.model.chat(convo.history, system=spec.instructions, tools=tool_defs)
            except SimulatedProviderError as exc:
                if not exc.retryable or provider_retries >= 2:
                    raise
                provider_retries += 1
                if self.latency:
                    time.sleep(0.005 * 2**provider_retries)  # backoff, compressed for the demo
                continue
            convo.history.append(reply.message)
            if not reply.tool_calls:
                return reply.text or ""
            parts = []
            for tc in reply.tool_calls:
                try:
                    result = self.tools[tc.name].call_with_id(tc.id, **tc.arguments)
                    failures = 0
                except Exception as exc:  # like agent frameworks: the model sees the error and decides
                    failures += 1
                    self.tool_errors += 1
                    if failures >= spec.max_consecutive_tool_failures:
                        raise AgentFailed(
                            f"{tc.name} failed {failures} times in a row, last: {type(exc).__name__}: {exc}"
                        ) from exc
                    result = failure_response(exc)
                parts.append(tool_response(tc.id, result))
            convo.history.append({"role": "tool", "parts": parts})
        raise AgentFailed(f"{spec.name} made {spec.max_model_calls} model calls without a final answer")

    def _sub_agent(self, spec: AgentSpec, task: str, script: Generator[Decision, Any, None]) -> str:
        info = current_session()  # the parent's session: same conversation id and end user
        session_id = info.session_id if info else uuid.uuid4().hex
        user = (info.user if info else None) or "unknown"
        return self.run_turn(Conversation(spec, self._model(spec, script), session_id, user), task)

    # -- sub-agents, exposed to support-triage as tools -----------------------------------
    def transfer_to_refund_agent(self, customer_id: str, order_id: str, reason: str,
                                 amount_usd: float | None = None) -> dict[str, Any]:
        """Hand a refund to the refund agent; it checks the order and issues or refuses the refund."""
        task = f"Refund order {order_id} for customer {customer_id}. Reason: {reason}." + (
            f" Requested amount: {_usd(amount_usd)}." if amount_usd is not None else " Refund what is refundable.")
        answer = self._sub_agent(REFUND_AGENT, task, refund_script(customer_id, order_id, reason, amount_usd))
        return orjson.loads(answer)

    def ask_kb_researcher(self, question: str) -> dict[str, Any]:
        """Ask the knowledge-base researcher a policy question; the answer cites article ids."""
        answer = self._sub_agent(KB_RESEARCHER, question, research_script(question, max_searches=2))
        return {"answer": answer}

    # -- runs -----------------------------------------------------------------------------
    def next_scenario(self) -> str:
        if not self._deck:
            if self.runs == 0:
                self._deck = [n for n, _ in reversed(self.SCENARIOS)]
            else:  # each scenario as often as its weight, shuffled: spread out, unlike independent draws
                self._deck = [n for n, w in self.SCENARIOS for _ in range(w)]
                self.rng.shuffle(self._deck)
        return self._deck.pop()

    def run_next(self) -> RunRecord:
        """Play the next scenario as one session; errors end up in the trace, not raised."""
        scenario = self.next_scenario()
        plan: Plan = getattr(self, f"_plan_{scenario}")()
        self.runs += 1
        record = RunRecord(self.runs, scenario, plan.spec.name, plan.spec.version, "sess_" + uuid.uuid4().hex[:20],
                           plan.user, plan.note)
        convo = Conversation(plan.spec, self._model(plan.spec, plan.script), record.session_id, plan.user)
        self.tool_errors = 0
        for text in plan.turns:
            self.trace_id = None
            try:
                self.run_turn(convo, text, scenario=scenario)
            except Exception as exc:
                record.error = f"{type(exc).__name__}: {exc}"
            finally:
                if self.trace_id:
                    record.trace_ids.append(self.trace_id)
            if record.error:
                break
            pause = self.rng.uniform(0.005, 0.02)  # the user reading and typing, compressed
            if self.latency:
                time.sleep(pause)
        record.tool_errors = self.tool_errors
        return record

    # -- scenario plans: who writes in, about what ----------------------------------------
    def _pick(self, items: list[Any]) -> Any:
        return items[self.rng.randrange(len(items))]

    def _refundable(self, shard_health: str = "ok") -> tuple[dict[str, Any], dict[str, Any]]:
        """A customer and one of their delivered, unrefunded orders (any order when none is left)."""
        pairs = [(c, o) for c in self.crm.customers(shard_health) for o in self.crm.orders_of(c["id"])]
        good = [(c, o) for c, o in pairs if o["status"] == "delivered"]
        return self._pick(good or pairs)

    def _triage(self) -> AgentSpec:
        return SUPPORT_TRIAGE_CANARY if self.rng.random() < 0.25 else SUPPORT_TRIAGE

    def _plan_refund_damaged_item(self) -> Plan:
        customer, order = self._refundable()
        tid = self.crm.open_ticket(customer["id"], order["id"], f"{order['item']} arrived damaged",
                                   f"My {order['item'].lower()} arrived cracked. Photo attached. I'd like a refund.")
        return Plan("refund_damaged_item", self._triage(), customer["id"], [f"New ticket {tid}."],
                    triage_refund_script(tid, "damaged in shipping"), f"{order['id']} arrived damaged")

    def _plan_refund_refused(self) -> Plan:
        refunded = [(c, o) for c in self.crm.customers("ok") for o in self.crm.orders_of(c["id"])
                    if o["status"] == "refunded"]
        if refunded and self.rng.random() < 0.6:
            customer, order = self._pick(refunded)
            amount, body = None, f"I returned the {order['item'].lower()} weeks ago. Please refund it."
        else:
            customer, order = self._refundable()
            amount = round(order["total_usd"] * 1.5, 2)
            body = f"The {order['item'].lower()} was late, so I want {_usd(amount)} back including my time."
        tid = self.crm.open_ticket(customer["id"], order["id"], f"Refund for {order['item']}", body)
        return Plan("refund_refused", self._triage(), customer["id"], [f"New ticket {tid}."],
                    triage_refund_script(tid, "customer request", amount),
                    f"refund {order['id']} again" if amount is None else f"refund {_usd(amount)} on {order['id']}")

    def _plan_crm_shard_down(self) -> Plan:
        customer = self._pick(self.crm.customers("down"))
        order = self._pick(self.crm.orders_of(customer["id"]))
        tid = self.crm.open_ticket(customer["id"], order["id"], f"{order['item']} stopped working",
                                   "It worked for a week and now it won't turn on.")
        return Plan("crm_shard_down", self._triage(), customer["id"], [f"New ticket {tid}."],
                    triage_refund_script(tid, "faulty item"), f"customer on {customer['shard']}")

    def _plan_order_status_flaky_crm(self) -> Plan:
        customer = self._pick(self.crm.customers("flaky"))
        order = self._pick(self.crm.orders_of(customer["id"]))
        turns = [f"Hi, it's {customer['email']}. Where is my {order['item'].lower()}? Order {order['id']}.",
                 "Could you email me the tracking number, please?"]
        return Plan("order_status_flaky_crm", self._triage(), customer["id"], turns,
                    order_status_script(customer["email"], order["id"], email_after=True),
                    f"where is {order['id']}?")

    def _plan_order_status(self) -> Plan:
        customer = self._pick(self.crm.customers("ok"))
        order = self._pick(self.crm.orders_of(customer["id"]))
        turns = [f"Hello, {customer['email']} here. Has order {order['id']} shipped yet?"]
        return Plan("order_status", self._triage(), customer["id"], turns,
                    order_status_script(customer["email"], order["id"]), f"has {order['id']} shipped?")

    def _plan_clarify_then_refund(self) -> Plan:
        customer, order = self._refundable()
        turns = [f"hi, i want my money back for the {order['item'].lower()}",
                 f"It's {customer['email']}", "Yes please."]
        return Plan("clarify_then_refund", self._triage(), customer["id"], turns,
                    clarify_refund_script(customer["email"], order["item"]), f"refund {order['id']} in chat")

    def _plan_research_briefing(self) -> Plan:
        question = ("Prepare this week's support briefing: what the help center says about refunds, returns, "
                    "damaged items and EU shipping. Cite article ids.")
        return Plan("research_briefing", KB_RESEARCHER, self._pick(["ops:rkhan", "ops:mlopez"]), [question],
                    research_script(question, max_searches=9, rate_limited_at=4), "weekly support briefing")


# -- scripts: what the SIMULATED model "decides" at each step ----------------------------------
def triage_refund_script(ticket_id: str, reason: str, amount_usd: float | None = None) -> Generator[Decision, Any, None]:
    ticket = yield call("get_ticket", ticket_id=ticket_id, thought="Reading the ticket first.")
    customer = yield from _retrying(call("lookup_customer", email=ticket["email"],
                                         thought="Verifying the customer before touching the order."))
    if isinstance(customer, ToolFailure):
        yield say(f"I could not verify the customer for {ticket_id}: {customer.message}. Escalating to a human.")
        return
    policy = yield call("ask_kb_researcher", question=f"Which refund policy applies to a ticket titled "
                                                      f"'{ticket['subject']}'?")
    args: dict[str, Any] = {"customer_id": customer["id"], "order_id": ticket["order_id"], "reason": reason}
    if amount_usd is not None:
        args["amount_usd"] = amount_usd
    result = yield call("transfer_to_refund_agent", thought="Policy checked; handing this to the refund agent.",
                        **args)
    first = customer["name"].split()[0]
    if isinstance(result, ToolFailure) or result.get("status") != "refunded":
        why = result.message if isinstance(result, ToolFailure) else result.get("reason", "not refundable")
        yield call("send_email", to=customer["email"], subject=f"About your refund request ({ticket_id})",
                   body=f"Hi {first}, we could not refund order {ticket['order_id']}: {why}. Reply to this email "
                        "if you think that is wrong and a person will look at it.")
        yield say(f"Ticket {ticket_id}: refund refused ({why}). Customer informed.")
        return
    kb = policy.get("answer", "") if isinstance(policy, dict) else ""
    cites = ", ".join(sorted(set(re.findall(r"KB-\d+", kb)))) or "policy"
    mail = yield call("send_email", to=customer["email"], subject=f"Your refund for order {result['order_id']}",
                      body=f"Hi {first}, we refunded {_usd(result['amount_usd'])} to your original payment method; "
                           "it shows up within 5-10 business days. Sorry for the trouble!")
    yield say(f"Ticket {ticket_id}: refunded {_usd(result['amount_usd'])} on {result['order_id']} "
              f"({result['refund_id']}) per {cites}; customer notified ({mail['message_id']}).")


def _status_line(order: dict[str, Any]) -> str:
    status = order["status"]
    if status == "processing":
        return f"order {order['id']} ({order['item']}) is still being prepared and has not shipped yet."
    if status == "shipped":
        return f"order {order['id']} ({order['item']}) shipped and is on its way, tracking {order['tracking']}."
    if status in ("refunded", "partially_refunded"):
        return f"order {order['id']} ({order['item']}) was {status.replace('_', ' ')} ({_usd(order['refunded_usd'])})."
    return f"order {order['id']} ({order['item']}) was delivered; tracking {order['tracking']}."


def order_status_script(email: str, order_id: str, *, email_after: bool = False) -> Generator[Decision, Any, None]:
    customer = yield from _retrying(call("lookup_customer", email=email, thought="Let me find your account."))
    if isinstance(customer, ToolFailure):
        yield say("Sorry, our customer system is not answering right now. Please try again in a few minutes.")
        return
    orders = yield call("list_orders", customer_id=customer["id"])
    order = next((o for o in orders if o["id"] == order_id), None)
    if order is None:
        yield say(f"I can't find order {order_id} on your account. Could you double-check the number?")
        return
    yield say(f"Thanks {customer['name'].split()[0]}! Your {_status_line(order)}")
    if not email_after:
        return
    yield call("send_email", to=customer["email"], subject=f"Tracking for order {order_id}",
               body=f"Your {_status_line(order)}")
    yield say("Done, it's in your inbox. Anything else?")


def clarify_refund_script(email: str, item: str) -> Generator[Decision, Any, None]:
    yield say("Sorry to hear that! Which email address is on your account, so I can find the order?")
    customer = yield from _retrying(call("lookup_customer", email=email))
    orders = yield call("list_orders", customer_id=customer["id"])
    order = next((o for o in orders if o["item"] == item), orders[0])
    refundable = round(order["total_usd"] - order["refunded_usd"], 2)
    yield say(f"I found order {order['id']}: {order['item']}, {_usd(order['total_usd'])}, {order['status']}. "
              f"Shall I refund {_usd(refundable)} to your original payment method?")
    result = yield call("transfer_to_refund_agent", customer_id=customer["id"], order_id=order["id"],
                        reason="customer asked in chat")
    if isinstance(result, ToolFailure) or result.get("status") != "refunded":
        why = result.message if isinstance(result, ToolFailure) else result.get("reason")
        yield say(f"I'm sorry, I couldn't refund that order: {why}.")
        return
    yield call("send_email", to=email, subject=f"Refund for order {order['id']}",
               body=f"We refunded {_usd(result['amount_usd'])}. It shows up within 5-10 business days.")
    yield say(f"Done! {_usd(result['amount_usd'])} is on its way back ({result['refund_id']}); I emailed you a receipt.")


def refund_script(customer_id: str, order_id: str, reason: str,
                  amount_usd: float | None) -> Generator[Decision, Any, None]:
    orders = yield call("list_orders", customer_id=customer_id, thought=f"Checking that {order_id} is theirs.")
    order = next((o for o in orders if o["id"] == order_id), None) if isinstance(orders, list) else None
    if order is None:
        yield say(orjson.dumps({"status": "refused", "order_id": order_id,
                                "reason": f"order {order_id} does not belong to {customer_id}"}).decode())
        return
    amount = amount_usd
    if amount is None:
        remaining = order["total_usd"] - order["refunded_usd"]
        # nothing left? it asks for the total anyway, and the CRM itself refuses a second refund
        amount = remaining if remaining > 0 else order["total_usd"]
    result = yield call("issue_refund", order_id=order_id, amount_usd=round(amount, 2), reason=reason)
    if isinstance(result, ToolFailure):
        doc = {"status": "refused", "order_id": order_id, "reason": result.message}
    else:
        doc = {"status": "refunded", **{k: result[k] for k in ("order_id", "refund_id", "amount_usd")}}
    yield say(orjson.dumps(doc).decode())


_TOPICS = frozenset({"refund", "refunds", "return", "returns", "damaged", "damage", "shipping", "eu", "warranty",
                     "cancel", "cancellation", "account", "email", "customs", "partial"})


def research_script(question: str, *, max_searches: int,
                    rate_limited_at: int | None = None) -> Generator[Decision, Any, None]:
    """Search the topics the question names, then follow the related topics of what was found."""
    words = re.findall(r"[a-z-]+", question.lower())
    queue = list(dict.fromkeys(w for w in words if w in _TOPICS)) or [question]
    searched: set[str] = set()
    found: dict[str, dict[str, Any]] = {}
    steps = 0
    while queue and len(searched) < max_searches:
        batch: list[CallTools] = []
        # fan out on the first step of a long job, then one search at a time
        while queue and len(batch) < (2 if max_searches > 4 and steps == 0 else 1):
            q = queue.pop(0)
            if q not in searched:
                searched.add(q)
                batch.append(call("search_kb", query=q))
        if not batch:
            continue
        steps += 1
        if rate_limited_at is not None and steps == rate_limited_at:
            yield provider_error(429, "Rate limit reached for output tokens per minute")
        results = yield parallel(*batch, thought="Following the related topics." if steps > 1 else None)
        for hits in results if len(batch) > 1 else [results]:
            if isinstance(hits, ToolFailure):
                continue
            for hit in hits:
                found.setdefault(hit["id"], hit)
                queue += [t.replace("-", " ") for t in hit["related"] if t.replace("-", " ") not in searched]
    if not found:
        yield say("I found nothing in the help center about that.")
        return
    lines = [f"- {h['title']} ({hid}): {h['snippet']}" for hid, h in sorted(found.items())]
    yield say(f"Found {len(found)} relevant articles after {len(searched)} searches:\n" + "\n".join(lines))
