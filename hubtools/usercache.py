"""The user's hubtools cache: ``$HUBTOOLS_CACHE``, else ``~/.cache/hubtools`` (class images, built tokenizers, torch's
compile caches)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def user_cache(*parts: str) -> Path:
    """A path under the user's hubtools cache (not created)."""
    base = os.environ.get("HUBTOOLS_CACHE") or Path.home() / ".cache" / "hubtools"
    return Path(base).expanduser().joinpath(*parts)


def keep_torch_caches_here() -> None:
    """torch keeps its compile caches in ``$TMPDIR/torchinductor_$USER`` unless told, and makes that folder as soon
    as ``torch._dynamo`` is imported (diffusers imports it): point it into this cache instead, so a run leaves
    nothing in the system temp folder and a compiled graph outlives a reboot. Before torch is imported; a
    ``TORCHINDUCTOR_CACHE_DIR`` the user set wins."""
    folder = user_cache("torchinductor")
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ and _writable(folder):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)


def _writable(folder: Path) -> bool:
    """Whether ``folder`` can be made: its nearest existing ancestor is a folder this process may write."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            return candidate.is_dir() and os.access(candidate, os.W_OK | os.X_OK)
    return False


def is_in_user_cache(path: str | os.PathLike) -> bool:
    """Whether ``path`` lies in the user's hubtools cache (an error there is about the cache, not the run)."""
    return Path(os.path.abspath(path)).is_relative_to(os.path.abspath(user_cache()))


def built_once(folder: Path, build: Callable[[Path], object]) -> Path:
    """``folder``, built by ``build(staging)`` the first time and reused after. Built beside it and renamed into
    place, so a reader never sees half a folder and two processes building at once both end with one whole."""
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        build(staging)
        os.rename(staging, folder)
    except OSError:
        if not folder.is_dir():  # not another process winning the race: a real failure
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder
