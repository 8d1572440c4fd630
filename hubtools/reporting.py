"""The one way a stage tells the user what is happening: a ``Reporter``.

Stages (preparing photos, class images, training, grids, evaluation, card, push) call a reporter and never
print or draw a bar themselves; the command line chooses who listens (``hubtools.cli.console``: the
terminal with rich bars, ``--quiet``, or one JSON object per event with ``--json``). Tests and library
callers pass nothing and get ``SilentReporter``. Under several processes (``accelerate launch``,
``torchrun``) only the main process reports: see ``is_main_process``.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Protocol


class Reporter(Protocol):
    """Where a stage says what it is doing. Paths of artifacts are relative to the run folder."""

    def stage(self, message: str) -> None:
        """A stage starts (``training``, ``pushing to ns/name``)."""

    def note(self, message: str) -> None:
        """Something the user should know that does not stop the run."""

    def warning(self, message: str) -> None:
        """Something probably wrong that does not stop the run."""

    def progress(self, what: str, done: int, total: int) -> None:
        """``done`` of ``total`` units of ``what`` ("training", "class images", "grids", "eval", ...)."""

    def metric(self, step: int, values: dict[str, float]) -> None:
        """Numbers measured at a training step (loss, lr, ...)."""

    def artifact(self, kind: str, path: str, step: int | None = None) -> None:
        """A file the run wrote that a user may want to look at (a grid, the loss curve, the card)."""

    def result(self, data: dict[str, Any]) -> None:
        """What the command hands back (the CLI reports it once the command is done)."""


class SilentReporter:
    """A ``Reporter`` that drops everything (library use, tests)."""

    def stage(self, message: str) -> None:
        pass

    def note(self, message: str) -> None:
        pass

    def warning(self, message: str) -> None:
        pass

    def progress(self, what: str, done: int, total: int) -> None:
        pass

    def metric(self, step: int, values: dict[str, float]) -> None:
        pass

    def artifact(self, kind: str, path: str, step: int | None = None) -> None:
        pass

    def result(self, data: dict[str, Any]) -> None:
        pass


class _WithoutProgress:
    """A reporter less its progress events (a library caller's ``progress=False``)."""

    def __init__(self, inner: Reporter) -> None:
        self._inner = inner

    def progress(self, what: str, done: int, total: int) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def reporter_or_silent(reporter: Reporter | None, *, progress: bool = True) -> Reporter:
    """The reporter a stage talks to: the one given, or silence. ``progress=False`` (kept for library callers
    of the stage functions) drops the progress events only."""
    chosen = reporter if reporter is not None else SilentReporter()
    return chosen if progress else _WithoutProgress(chosen)


def is_main_process() -> bool:
    """True unless this is a secondary process of a distributed run: the ``RANK`` that ``accelerate launch``
    and ``torchrun`` give each process, else accelerate's own state once it is set up."""
    if os.environ.get("RANK", "") not in ("", "0"):
        return False
    state = sys.modules.get("accelerate.state")  # never imported here only to ask: it brings torch
    if state is not None and state.PartialState._shared_state:  # set up already: ask it, set nothing up
        return bool(state.PartialState().is_main_process)
    return True

