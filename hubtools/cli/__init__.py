"""The ``hubtools`` command line: argument parsing and printing only, no logic.

One module per command or group, each with ``register(app)`` (``app.py`` calls them all); every command
calls one ``hubtools.runner`` function and prints its result through ``console.py``.
"""

from __future__ import annotations

from hubtools.cli.app import app, main

__all__ = ["app", "main"]
