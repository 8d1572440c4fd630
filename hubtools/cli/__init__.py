"""The ``hubtools`` command line: argument parsing and pretty output only, no logic.

Each area has its own module here exposing a typer app (``hub``, ``concept``, ``identifier``,
``hackathon``) or plain commands (``run``: train-and-push, train, sample, card, push, demo; ``evaluate``: eval).
"""

from __future__ import annotations

from hubtools.cli.app import app, main

__all__ = ["app", "main"]
