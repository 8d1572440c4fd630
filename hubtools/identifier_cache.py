"""The identifier check's report, cached in the user's cache (``$HUBTOOLS_CACHE/identifiers/``).

The check tokenizes the identifier with hubtools' CLIP tokenizer (built from the shipped merges) and the base
model's further tokenizers, and looks for better spellings: a few tenths of a second of every run's start-up,
always with the same answer for the same identifier, class noun, tokenizer files and hubtools version. Those make
the key; a report is computed once per key and read back after (issue 29: identifier analysis cached).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hubtools import __version__
from hubtools.atomic import write_json_atomic
from hubtools.usercache import user_cache

_FORMAT = 1  # bump when the report's keys or the check change meaning


def report_path(key: dict[str, Any]) -> Path:
    text = json.dumps({**key, "hubtools": __version__, "format": _FORMAT}, sort_keys=True)
    return user_cache("identifiers", hashlib.sha256(text.encode("utf-8")).hexdigest()[:32] + ".json")


def cached_report(key: dict[str, Any], compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The report of ``key``: read from the cache, else ``compute()``d and written there (a cache that cannot be
    read or written only costs the computation)."""
    path = report_path(key)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            return data
    except (OSError, ValueError):
        pass
    data = compute()
    try:
        write_json_atomic(path, data)
    except OSError:
        pass
    return data
