"""``hubtools train``: train DreamBooth into a run folder, without pushing; ``--resume`` continues a run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from hubtools.cli import console
from hubtools.cli import run_options as opt
from hubtools.cli.tables import plan_table, train_table


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)


@opt.with_run_flags(push=False)
def train_command(
    run: Annotated[Optional[Path], typer.Argument(
        metavar="RUN", help="Run folder (same as --out); with --resume, the run to continue.", show_default=False)] = None,
    *,
    flags: opt.RunFlags,
) -> None:
    """Train DreamBooth into a run folder (no push). `hubtools train RUN --resume` continues a run."""
    from hubtools import runner
    from hubtools.pipelines import quiet_weight_loading

    run_dir = run or flags.out
    quiet_weight_loading()
    with console.ConsoleReporter(progress=not flags.quiet) as reporter:
        if flags.resume:
            if run_dir is None:
                raise typer.BadParameter("--resume needs the run folder: hubtools train RUN --resume")
            with opt.resumable(run_dir, f"hubtools train {run_dir} --resume"):
                outcome = runner.resume_training(run_dir, force=flags.force, reporter=reporter)
        else:
            config = flags.config()
            run_dir = run_dir or opt.default_run_dir(config)
            if flags.dry_run:
                console.show(plan_table(runner.plan(config, run_dir, push=False, reporter=reporter)))
                return
            with opt.resumable(run_dir, f"hubtools train {run_dir} --resume"):
                outcome = runner.train(config, run_dir, reporter=reporter)
    console.show(train_table(outcome.train))
    console.result(str(outcome.run_dir), data={"run_dir": str(outcome.run_dir)})
