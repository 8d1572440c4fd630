"""`hubtools eval RUN`."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the ``eval`` command to the root app."""
