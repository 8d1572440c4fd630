"""Small text helpers shared by the card, the CLI and the local hub's pages."""

from __future__ import annotations

from typing import Any


def human_size(size: int) -> str:
    """A byte count as the Hub shows it: ``512 B``, ``1.5 kB``, ``20.3 MB``, ``4.1 GB`` (powers of 1000)."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"  # pragma: no cover


def as_list(value: Any) -> list[Any]:
    """A card field that may be one value or a list (``tags: dog`` or ``tags: [dog, cat]``) as a list, without
    its empty entries."""
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    return [item for item in items if item is not None]


def as_text_list(value: Any) -> list[str]:
    """``as_list`` with each entry as text."""
    return [str(item) for item in as_list(value)]
