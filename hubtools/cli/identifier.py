"""`hubtools identifier ...` commands."""

from __future__ import annotations

import typer

app = typer.Typer(help="identifier commands", no_args_is_help=True)
