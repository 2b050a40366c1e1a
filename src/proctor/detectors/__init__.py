"""Layer 1: content scanners (PII, secrets, prompt injection) and provenance (taint).

Pure functions and small classes over plain Python values. Each scanner is bounded in input
size and in time and says when it was cut short (``ScanResult.truncated`` / ``timed_out``);
what to do then is the caller's fail mode, not the scanner's. Nothing here touches the network:
Presidio runs on a blank spaCy pipeline with its pattern recognizers, tldextract reads its
bundled suffix list, and detect-secrets never verifies a candidate.

Importing this package is cheap; Presidio, spaCy and detect-secrets load when a scanner is
first built.
"""

from proctor.detectors.base import Finding, Scanner, ScanResult, redact_text, redact_value, scan_value
from proctor.detectors.injection import HEURISTICS, Heuristic, InjectionClassifier, InjectionScanner
from proctor.detectors.pii import DEFAULT_PII_ENTITIES, PiiScanner, available_pii_entities
from proctor.detectors.secrets import DEFAULT_OFF_SECRET_TYPES, SecretScanner, available_secret_types
from proctor.detectors.taint import TaintHit, TaintTracker, Token, extract_tokens

__all__ = [
    "DEFAULT_OFF_SECRET_TYPES",
    "DEFAULT_PII_ENTITIES",
    "HEURISTICS",
    "Finding",
    "Heuristic",
    "InjectionClassifier",
    "InjectionScanner",
    "PiiScanner",
    "ScanResult",
    "Scanner",
    "SecretScanner",
    "TaintHit",
    "TaintTracker",
    "Token",
    "available_pii_entities",
    "available_secret_types",
    "extract_tokens",
    "redact_text",
    "redact_value",
    "scan_value",
]
