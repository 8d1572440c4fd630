"""``hubtools sample RUN``: render the sample grids of a trained run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from hubtools.cli import console


def register(app: typer.Typer) -> None:
    app.command("sample")(sample_command)


def sample_command(
    run: Annotated[Path, typer.Argument(metavar="RUN", help="Run folder.", show_default=False)],
    device: Annotated[Optional[str], typer.Option("--device", help="auto, cpu or cuda.", show_default=False)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars (hubtools --quiet: results and errors only).")] = False,
) -> None:
    """Render the sample grids of a trained run (prompts x seeds, guidance sweep, checkpoints)."""
    from hubtools import runner
    from hubtools.pipelines import quiet_weight_loading

    quiet_weight_loading()
    with console.ConsoleReporter(progress=not quiet) as reporter:
        result = runner.sample(run, device=device, reporter=reporter)
    for grid in getattr(result, "grids", []) or []:
        console.result(str(grid), data={"grid": str(grid)})
