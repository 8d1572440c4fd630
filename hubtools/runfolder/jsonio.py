"""JSON files of the run folder: written atomically, read back as ``None``/``[]`` when a stage has not run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hubtools.atomic import write_json_atomic

__all__ = ["read_json", "read_jsonl", "write_json_atomic"]


def read_json(path: Path) -> Any | None:
    """The JSON in ``path``, or None when the stage that writes it has not run."""
    path = Path(path)
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every complete row of a JSON-lines log (a line cut short by a crash is skipped); [] when absent."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
