"""``hubtools push RUN [REPO]``: push a run to the Hub in one commit."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from hubtools.cli import console


def register(app: typer.Typer) -> None:
    app.command("push")(push_command)


def push_command(
    run: Annotated[Path, typer.Argument(metavar="RUN", help="Run folder.", show_default=False)],
    repo: Annotated[Optional[str], typer.Argument(metavar="REPO", 
        help="namespace/name (default: the run's publish.repo_id).", show_default=False)] = None,
    private: Annotated[bool, typer.Option("--private", help="Create the repo private.")] = False,
    checkpoints: Annotated[Optional[bool], typer.Option(
        "--checkpoints/--no-checkpoints", show_default=False,
        help="Also push each checkpoint to a step-N branch (default: the run's publish.push_checkpoints).")] = None,
    message: Annotated[Optional[str], typer.Option(
        "--message", "-m", help="Commit message.", show_default=False)] = None,
) -> None:
    """Push a run (model, card, grids, config) to the Hub in one commit. Safe to retry."""
    from hubtools import runner

    # token=None: huggingface_hub finds HF_TOKEN or the stored login itself.
    with console.ConsoleReporter() as reporter:
        result = runner.push(run, repo, private=private or None, checkpoints=checkpoints, message=message,
                             reporter=reporter)
    console.result(result.url, data={"url": result.url, "run_dir": str(run)})
