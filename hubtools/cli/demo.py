"""``hubtools demo``: the whole product end to end, offline, on a CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hubtools.cli import console
from hubtools.cli.tables import train_table


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)


def demo_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Where the demo's run and hub data go.")] = Path("hubtools-demo"),
    steps: Annotated[int, typer.Option("--steps", min=1, help="Training steps of the tiny model.")] = 60,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Everything end to end, offline, on a CPU: local hub, tiny model, train, grids, card, push, reload."""
    from hubtools.demo import run_demo
    from hubtools.pipelines import quiet_weight_loading

    quiet_weight_loading()
    with console.ConsoleReporter(progress=not quiet) as reporter:
        result = run_demo(out, steps=steps, progress=not quiet, reporter=reporter)
    console.show(train_table(result.train))
    console.result(f"run folder      {result.run_dir}")
    for grid in result.grids:
        console.result(f"grid            {grid}")
    console.result(f"card            {result.run_dir / 'README.md'}")
    console.result(f"reloaded image  {result.reloaded_image}")
    console.result(f"hub data        {result.hub_data}")
    console.result(f"browse it again hubtools hub serve --data {result.hub_data}")
    console.result(result.repo_url)
