"""The policy every adapter spec runs under, and small helpers to read what the model saw."""

from __future__ import annotations

POLICY = """\
apiVersion: proctor/v1
kind: PolicyBundle
metadata: {name: adapters, version: "1"}
spec:
  mode: enforce
  default_effect: {read: allow, write: deny, external: deny, irreversible: deny}
  tools:
    - {name: get_weather, side_effect: read}
    - {name: get_current_time, side_effect: read}
    - {name: delete_db, side_effect: irreversible}
    - {name: refund, side_effect: write}
    - {name: exfiltrate, side_effect: external}
    - {name: read_config, side_effect: read}
    - {name: post_note, side_effect: read}
  rules:
    - id: refunds-small
      tools: refund
      when: args.amount_usd <= 50
      effect: allow
    - id: refunds-large
      tools: refund
      when: args.amount_usd > 50
      effect: require_approval
      message: Refunds above $50 need a human
    - id: stop-exfiltration
      tools: exfiltrate
      effect: terminate_session
      message: Exfiltration attempt
    - id: no-secrets-out
      kind: scanner
      scanner: secrets
      tools: read_config
      stages: [tool_result]
      effect: redact
    - id: no-secrets-in
      kind: scanner
      scanner: secrets
      tools: post_note
      stages: [tool_call]
      effect: redact
    - id: no-long-answers
      kind: llm
      when: llm.max_tokens > 1000
      effect: deny
      message: Answers are capped at 1000 tokens
"""

AWS_KEY = "AKIAIOSFODNN7EXAMPLE"  # AWS's documented example access key id: a secret to any scanner
CONFIG = f"region = eu-west-1\naws_access_key_id = {AWS_KEY}"

APPROVAL_TEXT = "Refused by policy rule refunds-large: Refunds above $50 need a human (approval id "
DENIAL_TEXT = "Refused by policy: default effect for irreversible tools"


def approval_id_in(text: str) -> str:
    """The approval id quoted in a refusal: ``… (approval id <id> is pending …``."""
    assert APPROVAL_TEXT in text, text
    return text.split("approval id ", 1)[1].split()[0]
