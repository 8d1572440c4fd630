"""`hubtools concept ...` commands."""

from __future__ import annotations

import typer

app = typer.Typer(help="concept commands", no_args_is_help=True)
