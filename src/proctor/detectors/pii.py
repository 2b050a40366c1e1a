"""PII detection with Presidio, configured to run offline.

Presidio's defaults assume a network: ``AnalyzerEngine()`` loads (and, if missing, downloads)
``en_core_web_lg``, and its email recognizer validates domains with tldextract, which fetches
the Public Suffix List. Here the NLP engine wraps an already-built spaCy pipeline (``spacy.blank
("en")`` unless an installed model is named), the recognizers are an explicit list of
Presidio's pattern recognizers, and the email recognizer checks domains against tldextract's
bundled snapshot. Nothing is downloaded, ever; naming a model that is not installed is an error.

A blank pipeline has a tokenizer and no NER, so names and places (PERSON, LOCATION) need a
model; the structured identifiers people paste into agents (emails, cards, phones, IBANs, SSNs,
IPs) are pattern-based and validated (Luhn, IBAN checksum, phonenumbers) and need none.

Building the engine takes 2-3 seconds (mostly importing spaCy and Presidio), so it is built
once per process per model, under a lock, and shared; ``PiiScanner.engine_build_s`` says how
long that took.
"""

from __future__ import annotations

import bisect
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proctor.detectors._budget import Budget, run_bounded
from proctor.detectors.base import Finding, ScanResult

__all__ = ["DEFAULT_PII_ENTITIES", "PiiScanner", "available_pii_entities"]

# Structured identifiers, all found by validated patterns. URL and DATE_TIME are available but
# off by default: agent traffic is full of both, and neither identifies a person on its own.
# US_PASSPORT, US_BANK_NUMBER and US_DRIVER_LICENSE are loaded for callers who lower the
# threshold; their patterns are so generic that Presidio scores them below 0.5 even in context.
DEFAULT_PII_ENTITIES: tuple[str, ...] = (
    "CREDIT_CARD",
    "CRYPTO",
    "EMAIL_ADDRESS",
    "IBAN_CODE",
    "IP_ADDRESS",
    "MEDICAL_LICENSE",
    "PHONE_NUMBER",
    "UK_NHS",
    "US_BANK_NUMBER",
    "US_DRIVER_LICENSE",
    "US_ITIN",
    "US_PASSPORT",
    "US_SSN",
)
# Added to the defaults when a spaCy model with NER is in use.
_NER_DEFAULT_ENTITIES: tuple[str, ...] = ("PERSON", "LOCATION")

# Presidio runs over the text in chunks so a long text can be abandoned between chunks and its
# findings so far reported. The overlap is wider than any pattern entity (an IBAN with spaces
# is at most 42 characters); context words further away than that are lost at chunk edges.
_CHUNK = 8_000
_OVERLAP = 200
# Six or more digits with phone punctuation between them: where a phone number can be. (Vanity
# numbers such as 1-800-FLOWERS are not looked for.)
_PHONE_CANDIDATE = re.compile(r"\+?\(?\d(?:[\s().\-/]{0,2}\d){5,30}")
_NOT_DIGIT = re.compile(r"\D")
_PHONE_MARGIN = 24


def _phone_windows(text: str) -> Iterable[tuple[int, int, bool]]:
    """``(start, end, single_international)`` windows around the digit runs of ``text``."""
    windows: list[list[int]] = []  # [lo, hi, candidates, starts with "+" and <= 15 digits]
    for m in _PHONE_CANDIDATE.finditer(text):
        lo = max(0, m.start() - _PHONE_MARGIN)
        while lo > 0 and not text[lo - 1].isspace():
            lo -= 1
        hi = min(len(text), m.end() + _PHONE_MARGIN)
        while hi < len(text) and not text[hi].isspace():
            hi += 1
        intl = int(m.group().startswith("+") and len(_NOT_DIGIT.sub("", m.group())) <= 15)
        if windows and lo <= windows[-1][1]:
            last = windows[-1]
            last[1] = max(last[1], hi)
            last[2] += 1
            last[3] = 0
        else:
            windows.append([lo, hi, 1, intl])
    for lo, hi, count, intl in windows:
        yield lo, hi, bool(intl and count == 1)


@dataclass(slots=True)
class _Engine:
    analyzer: Any  # presidio_analyzer.AnalyzerEngine
    entities: frozenset[str]
    has_ner: bool
    build_s: float


_engines: dict[str | None, _Engine] = {}
_engines_lock = threading.Lock()


def _build_engine(spacy_model: str | None) -> _Engine:
    started = time.perf_counter()
    import phonenumbers
    import spacy
    from presidio_analyzer import (
        AnalysisExplanation,
        AnalyzerEngine,
        EntityRecognizer,
        RecognizerRegistry,
        RecognizerResult,
    )
    from presidio_analyzer import predefined_recognizers as pr
    from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer
    from presidio_analyzer.nlp_engine import NerModelConfiguration, NlpArtifacts, SpacyNlpEngine

    from proctor.detectors._tld import offline_extractor

    if spacy_model is None:
        nlp = spacy.blank("en")
        has_ner = False
    else:
        if not (spacy.util.is_package(spacy_model) or Path(spacy_model).exists()):
            raise ValueError(
                f"spaCy model {spacy_model!r} is not installed; Proctor never downloads models. "
                f"Install it (pip install <wheel>) or leave spacy_model unset for pattern-only PII."
            )
        nlp = spacy.load(spacy_model)
        has_ner = "ner" in nlp.pipe_names

    class LoadedSpacyNlpEngine(SpacyNlpEngine):  # type: ignore[misc]
        """Presidio's spaCy engine around a pipeline we already built.

        ``SpacyNlpEngine.load`` would call ``spacy.cli.download`` for a missing model and probe
        for a GPU; this one is born loaded. A blank pipeline has no lemmatizer, so lemmas fall
        back to lowercased tokens: Presidio's context enhancer compares lemmas with context
        words ("call", "card", "ssn"), and without this it would never raise a score.
        """

        def __init__(self, loaded: Any, name: str) -> None:
            super().__init__(
                models=[{"lang_code": "en", "model_name": name}],
                ner_model_configuration=NerModelConfiguration(),
            )
            self.nlp = {"en": loaded}  # type: ignore[assignment]  # the base declares it None until load()

        def load(self) -> None:
            return None

        def _doc_to_nlp_artifact(self, doc: Any, language: str) -> Any:
            # Tokens as a list, not the Doc: the context enhancer walks the tokens once per
            # result, and iterating a Doc builds a Token object per step (quadratic and slow).
            tokens = list(doc)
            entities, scores = self._get_updated_entities(
                self._get_entities(doc), self._get_scores_for_entities(doc)
            )
            return NlpArtifacts(
                entities=entities,
                tokens=tokens,  # type: ignore[arg-type]  # a list of the Doc's tokens works the same
                tokens_indices=[t.idx for t in tokens],
                lemmas=[t.lemma_ or t.lower_ for t in tokens],
                nlp_engine=self,
                language=language,
                scores=scores,
            )

    class IndexedContextEnhancer(LemmaContextAwareEnhancer):  # type: ignore[misc]
        """Presidio's context enhancer, finding a result's token by bisection.

        The stock method scans the tokens from the start for every result, which makes a text
        with many findings quadratic in its length.
        """

        @staticmethod
        def _find_index_of_match_token(word: str, start: int, tokens: Any, tokens_indices: list[int]) -> int:
            if not tokens_indices:
                raise ValueError(f"Did not find word {word!r} in an empty list of tokens")
            i = max(0, bisect.bisect_right(tokens_indices, start) - 1)
            if start < tokens_indices[i] + len(tokens[i]) or i + 1 >= len(tokens_indices):
                return i
            return i + 1

    class OfflineEmailRecognizer(pr.EmailRecognizer):  # type: ignore[misc]
        """Presidio's email recognizer, validating the domain against the bundled suffix list."""

        def validate_result(self, pattern_text: str) -> bool:
            return bool(offline_extractor()(pattern_text).fqdn)

    class WindowedPhoneRecognizer(pr.PhoneRecognizer):  # type: ignore[misc]
        """Presidio's phone recognizer, run only where there are digits.

        Presidio runs python-phonenumbers' matcher over the whole text once per region (eight by
        default): about 10 ms per KB, more than every other recognizer together. Here the
        matcher runs over windows around runs of six or more digits (neighbouring runs share a
        window, and each window reaches out to whitespace at least 24 characters away, so the
        matcher sees the context it would have seen in the whole text), and a lone "+..."
        number is matched in one region, since it parses the same in all. Text without such
        digit runs costs nothing. Scores and context words are Presidio's. On 1,000 generated
        sentences full of numbers the results equal Presidio's except for 3, each a "+" number
        invalid for its country, of which Presidio reported a fragment found in another region.
        """

        def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
            metadata = {
                RecognizerResult.RECOGNIZER_NAME_KEY: getattr(self, "name", "PhoneRecognizer"),
                RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
            }
            results: list[Any] = []
            for lo, hi, single_international in _phone_windows(text):
                window = text[lo:hi]
                regions = self.supported_regions[:1] if single_international else self.supported_regions
                for region in regions:
                    for match in phonenumbers.PhoneNumberMatcher(
                        window, region, leniency=int(self.leniency or 1)
                    ):
                        results.append(
                            RecognizerResult(
                                entity_type=self.supported_entities[0],
                                start=lo + match.start,
                                end=lo + match.end,
                                score=self.SCORE,
                                analysis_explanation=AnalysisExplanation(
                                    recognizer=pr.PhoneRecognizer.__name__,
                                    original_score=self.SCORE,
                                    textual_explanation=f"Recognized as a phone number in region {region}",
                                ),
                                recognition_metadata=dict(metadata),
                            )
                        )
            return list(EntityRecognizer.remove_duplicates(results))

    nlp_engine = LoadedSpacyNlpEngine(nlp, spacy_model or "blank:en")
    recognizers: list[Any] = [
        pr.CreditCardRecognizer(),
        pr.CryptoRecognizer(),
        OfflineEmailRecognizer(),
        pr.IbanRecognizer(),
        pr.IpRecognizer(),
        pr.MacAddressRecognizer(),
        pr.MedicalLicenseRecognizer(),
        pr.NhsRecognizer(),
        WindowedPhoneRecognizer(),
        pr.UrlRecognizer(),
        pr.DateRecognizer(),
        pr.UsBankRecognizer(),
        pr.UsItinRecognizer(),
        pr.UsLicenseRecognizer(),
        pr.UsPassportRecognizer(),
        pr.UsSsnRecognizer(),
    ]
    if has_ner:
        recognizers.append(
            pr.SpacyRecognizer(
                supported_language="en", supported_entities=nlp_engine.get_supported_entities()
            )
        )
    registry = RecognizerRegistry(recognizers=recognizers, supported_languages=["en"])
    analyzer = AnalyzerEngine(
        registry=registry,
        nlp_engine=nlp_engine,
        supported_languages=["en"],
        context_aware_enhancer=IndexedContextEnhancer(),
    )
    # Warm up: recognizers load lazily on first use (phonenumbers metadata, compiled patterns);
    # do it here rather than inside the first caller's time budget.
    analyzer.analyze(text="Call 212-555-0199 or mail a@b.com, card 4111 1111 1111 1111.", language="en")
    entities = frozenset(analyzer.get_supported_entities("en"))
    return _Engine(
        analyzer=analyzer, entities=entities, has_ner=has_ner, build_s=time.perf_counter() - started
    )


def _engine(spacy_model: str | None) -> _Engine:
    engine = _engines.get(spacy_model)
    if engine is None:
        with _engines_lock:
            engine = _engines.get(spacy_model)
            if engine is None:
                engine = _build_engine(spacy_model)
                _engines[spacy_model] = engine
    return engine


def available_pii_entities(spacy_model: str | None = None) -> frozenset[str]:
    """Every entity name the engine for ``spacy_model`` can detect (builds it if needed)."""
    return _engine(spacy_model).entities


def _chunks(length: int) -> Iterable[tuple[int, int]]:
    start = 0
    while start < length:
        end = min(length, start + _CHUNK)
        yield start, end
        if end == length:
            return
        start = end - _OVERLAP


class PiiScanner:
    """Finds personal data in text with Presidio's pattern recognizers (and NER, given a model).

    ``entities`` defaults to ``DEFAULT_PII_ENTITIES`` (plus PERSON and LOCATION when the named
    spaCy model has NER); unknown names are refused. Findings below ``score_threshold`` are
    dropped. Constructing the first scanner builds the shared engine (2-3 s): do it at startup.
    """

    name = "pii"

    def __init__(
        self,
        entities: Iterable[str] | None = None,
        *,
        score_threshold: float = 0.5,
        spacy_model: str | None = None,
        max_chars: int = 100_000,
        timeout_s: float | None = 0.5,
    ) -> None:
        self._engine = _engine(spacy_model)
        if entities is None:
            wanted = set(DEFAULT_PII_ENTITIES)
            if self._engine.has_ner:
                wanted.update(_NER_DEFAULT_ENTITIES)
            wanted &= self._engine.entities
        else:
            wanted = set(entities)
            unknown = wanted - self._engine.entities
            if unknown:
                raise ValueError(
                    f"unknown PII entities {sorted(unknown)}; available: {sorted(self._engine.entities)}"
                )
        self.entities: tuple[str, ...] = tuple(sorted(wanted))
        self.score_threshold = score_threshold
        self.spacy_model = spacy_model
        self.max_chars = max_chars
        self.timeout_s = timeout_s

    @property
    def engine_build_s(self) -> float:
        """Seconds it took to build the shared engine this scanner uses (once per process)."""
        return self._engine.build_s

    def scan(self, text: str) -> ScanResult:
        return run_bounded(self._work, text, max_chars=self.max_chars, timeout_s=self.timeout_s)

    def _work(self, text: str, budget: Budget) -> None:
        if not self.entities or not text.strip():
            return
        analyzer = self._engine.analyzer
        entities = list(self.entities)
        seen: set[tuple[str, int, int]] = set()
        for lo, hi in _chunks(len(text)):
            if budget.exhausted():
                return
            results = analyzer.analyze(
                text=text[lo:hi],
                language="en",
                entities=entities,
                score_threshold=self.score_threshold,
            )
            for r in results:
                key = (r.entity_type, lo + r.start, lo + r.end)
                if key in seen:
                    continue  # found again in the overlap of two chunks
                seen.add(key)
                budget.findings.append(
                    Finding(
                        detector="pii", kind=r.entity_type, start=key[1], end=key[2], score=float(r.score)
                    )
                )
