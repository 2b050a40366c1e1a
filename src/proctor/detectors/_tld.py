"""An offline public-suffix lookup.

tldextract (which presidio's email recognizer calls) downloads the Public Suffix List on first
use and only falls back to its bundled snapshot after the request fails; air-gapped, that is a
stack of logged tracebacks and, behind a black-holing firewall, a blocked scan. An extractor
built with no URLs and no disk cache reads the snapshot shipped inside the package and nothing
else.
"""

from __future__ import annotations

import threading
from typing import Any

_extractor: Any = None
_lock = threading.Lock()


def offline_extractor() -> Any:
    """The process-wide ``tldextract.TLDExtract`` that never touches the network or the disk."""
    global _extractor
    if _extractor is None:
        with _lock:
            if _extractor is None:
                import tldextract

                ext = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)
                ext("example.com")  # parse the snapshot now, not inside someone's time budget
                _extractor = ext
    return _extractor


def has_public_suffix(host: str) -> bool:
    """True when ``host`` ends in a known public suffix and has a registrable name before it."""
    result = offline_extractor()(host)
    return bool(result.suffix and result.domain)
