"""``hubtools train-and-push``: photos in, a DreamBooth model with grids and a card on the Hub out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from hubtools.cli import console
from hubtools.cli import run_options as opt
from hubtools.cli.tables import eval_table, plan_table, train_table


def register(app: typer.Typer) -> None:
    app.command("train-and-push")(train_and_push_command)


@opt.with_run_flags(push=True)
def train_and_push_command(
    config_argument: Annotated[Optional[Path], typer.Argument(
        metavar="CONFIG", show_default=False,
        help="TOML config (same as --config), e.g. hackathon/pokeball-machine.toml.")] = None,
    *,
    flags: opt.RunFlags,
) -> None:
    """Prepare the photos, train DreamBooth, render grids and a card, and push it all in one commit."""
    from hubtools import runner
    from hubtools.pipelines import quiet_weight_loading

    if config_argument and flags.config_file and config_argument != flags.config_file:
        raise typer.BadParameter("give the config file once: as the argument or as --config")
    config = flags.config(config_argument)
    run_dir = flags.out or opt.default_run_dir(config)
    quiet_weight_loading()
    with console.ConsoleReporter(progress=not flags.quiet) as reporter:
        if flags.dry_run:
            console.show(plan_table(runner.plan(config, run_dir, reporter=reporter)))
            return
        with opt.resumable(run_dir, f"hubtools train-and-push --out {run_dir} --resume"):
            result = runner.train_and_push(None if flags.resume else config, run_dir, resume=flags.resume,
                                           force=flags.force, reporter=reporter)
    console.show(train_table(result.train))
    if result.evaluation is not None:  # the same figures as the card's table, without opening a file
        console.show(eval_table(result.evaluation))
    console.result(f"run folder   {result.run_dir}")
    grids = getattr(result.samples, "grids", []) or []
    for grid in grids:
        console.result(f"grid         {grid}")
    console.result(f"card         {result.run_dir / 'README.md'}")
    console.result(result.push.url, data={"url": result.push.url, "run_dir": str(result.run_dir),
                                          "grids": [str(grid) for grid in grids], "card": str(result.run_dir / "README.md")})
