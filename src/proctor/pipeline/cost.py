"""Cost of model calls from genai-prices' bundled price data (never fetched at run time).

A direct ``genai_prices.calc_price`` costs ~100-200 µs, several times our whole per-span
budget. Most models have flat per-token prices, so for each (provider, model) we derive the
four per-token rates once by probing ``calc_price`` with unit usages, check that the price is
linear in them, and then price each span with four multiplications. Models with tiered or
otherwise non-linear prices keep the exact call (memoized on the whole usage).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

from proctor.core import Span, SpanKind

log = logging.getLogger(__name__)

_MTOK = 1_000_000
_USAGE_KINDS = frozenset({SpanKind.LLM.value, SpanKind.EMBEDDING.value})


@dataclass(frozen=True, slots=True)
class _Rates:
    # USD per token; cache tokens are a part of input tokens, as genai-prices counts them
    input: float
    output: float
    cache_read: float
    cache_write: float


_NOT_FOUND = object()


def _exact(model: str, provider: str | None, inp: int, out: int, cr: int, cw: int) -> float | None:
    from genai_prices import Usage, calc_price

    try:
        usage = Usage(input_tokens=inp, output_tokens=out, cache_read_tokens=cr, cache_write_tokens=cw)
        return float(calc_price(usage, model, provider_id=provider).total_price)
    except Exception:
        # A provider genai-prices does not know (a gateway, a self-hosted proxy): price the
        # model by its name alone. An unknown model stays unpriced rather than guessed.
        if provider is not None:
            return _exact(model, None, inp, out, cr, cw)
        return None


@lru_cache(maxsize=4096)
def _rates(model: str, provider: str | None) -> _Rates | object | None:
    """Per-token rates for a linear price, ``_NOT_FOUND`` for an unknown model, None if non-linear."""
    base_in = _exact(model, provider, _MTOK, 0, 0, 0)
    if base_in is None:
        return _NOT_FOUND
    out = _exact(model, provider, 0, _MTOK, 0, 0)
    cr = _exact(model, provider, _MTOK, 0, _MTOK, 0)
    cw = _exact(model, provider, _MTOK, 0, 0, _MTOK)
    if out is None or cr is None or cw is None:
        return None
    rates = _Rates(base_in / _MTOK, out / _MTOK, (cr - base_in) / _MTOK, (cw - base_in) / _MTOK)
    # Linearity check at a second, mixed point: tiered prices fail it.
    probe = (3 * _MTOK, 2 * _MTOK, _MTOK, _MTOK // 2)
    exact = _exact(model, provider, *probe)
    if exact is None or abs(_linear(rates, *probe) - exact) > 1e-9 * max(1.0, exact):
        return None
    return rates


def _linear(r: _Rates, inp: int, out: int, cr: int, cw: int) -> float:
    # genai-prices prices cached tokens at their own rate and the rest of the input at the
    # input rate; the probes above measured the cache rates as a difference to that.
    return inp * r.input + out * r.output + cr * r.cache_read + cw * r.cache_write


@lru_cache(maxsize=65536)
def _exact_cached(model: str, provider: str | None, inp: int, out: int, cr: int, cw: int) -> float | None:
    return _exact(model, provider, inp, out, cr, cw)


def price(model: str, provider: str | None, inp: int, out: int, cr: int = 0, cw: int = 0) -> float | None:
    """USD for one model call, or None when genai-prices does not know the model."""
    rates = _rates(model, provider)
    if rates is _NOT_FOUND:
        return None
    if isinstance(rates, _Rates):
        return _linear(rates, inp, out, cr, cw)
    return _exact_cached(model, provider, inp, out, cr, cw)


class CostProcessor:
    """Fills ``cost_usd`` on model-call spans that did not carry a cost of their own."""

    def process(self, batch: list[Span]) -> None:
        for s in batch:
            if s.cost_usd is not None or s.kind not in _USAGE_KINDS or not s.model:
                continue
            if s.input_tokens is None and s.output_tokens is None:
                continue
            cost = price(
                s.model, s.provider, s.input_tokens or 0, s.output_tokens or 0,
                s.cache_read_tokens or 0, s.cache_write_tokens or 0,
            )
            if cost is not None:
                s.cost_usd = cost
                s.cost_source = "genai-prices"
