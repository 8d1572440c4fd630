"""``hubtools card RUN``: render the run's model card (README.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from hubtools.cli import console


def register(app: typer.Typer) -> None:
    app.command("card")(card_command)


def card_command(
    run: Annotated[Path, typer.Argument(metavar="RUN", help="Run folder.", show_default=False)],
    template: Annotated[Optional[Path], typer.Option(
        "--template", help="Your own Jinja template instead of templates/model_card.md.j2.", show_default=False)] = None,
    repo: Annotated[Optional[str], typer.Option(
        "--repo", help="Repo id the card will live in (for its usage snippet).", show_default=False)] = None,
) -> None:
    """Render the run's model card (README.md) from the Jinja template."""
    from hubtools import runner

    with console.ConsoleReporter() as reporter:
        path = runner.card(run, template=template, repo_id=repo, reporter=reporter)
    console.result(str(path), data={"card": str(path)})
