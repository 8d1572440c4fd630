"""Likes and downloads from a seed file (JSON list of {repo_id, repo_type?, likes?, downloads?})."""

from __future__ import annotations

import json
from pathlib import Path

from hubtools.errors import InputError
from hubtools.localhub.server import open_storage, set_downloads, set_likes


def apply_seed_file(data_dir: Path, seed_file: Path) -> list[str]:
    """Apply every entry of ``seed_file`` to the hub in ``data_dir``; returns one line per change."""
    try:
        entries = json.loads(Path(seed_file).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"Seed file {seed_file} not found.") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise InputError(f"Seed file {seed_file} is not valid JSON ({error}); fix it and retry.") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("repo_id"), str)
                                                for e in entries):
        raise InputError(f"Seed file {seed_file} must be a JSON list of objects with a 'repo_id'.")
    storage = open_storage(data_dir, create=False)
    done = []
    for entry in entries:
        repo_type = entry.get("repo_type", "model")
        for key, setter in (("likes", set_likes), ("downloads", set_downloads)):
            if key in entry:
                value = entry[key]
                if not isinstance(value, int) or isinstance(value, bool):
                    raise InputError(f"Seed file {seed_file}: {key} of {entry['repo_id']} must be an integer.")
                setter(data_dir, entry["repo_id"], value, repo_type=repo_type, storage=storage)
                done.append(f"{entry['repo_id']} ({repo_type}): {key} = {value}")
    return done
