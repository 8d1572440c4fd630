"""`hubtools hackathon ...` commands."""

from __future__ import annotations

import typer

app = typer.Typer(help="hackathon commands", no_args_is_help=True)
