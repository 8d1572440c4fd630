"""``hubtools demo``: the whole product end to end, offline, on a CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import typer

from hubtools.cli import console
from hubtools.cli.tables import train_table
from hubtools.families import DEFAULT_FAMILY, names_in_words

DEMO_PAGES_PORT = 8080  # where the demo's closing lines suggest serving its hub again, to browse its pages


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)


def demo_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Where the demo's run and hub data go.")] = Path("hubtools-demo"),
    steps: Annotated[int, typer.Option("--steps", min=1, help="Training steps of the tiny model.")] = 60,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars (hubtools --quiet: results and errors only).")] = False,
    family: Annotated[str, typer.Option("--family", help=f"Model family of the tiny model: {names_in_words()}.")] = DEFAULT_FAMILY.name,
) -> None:
    """Everything end to end, offline, on a CPU: local hub, tiny model, train, grids, card, push, reload."""
    from hubtools.demo import run_demo
    from hubtools.pipelines import quiet_weight_loading

    quiet_weight_loading()
    with console.ConsoleReporter(progress=not quiet) as reporter:
        result = run_demo(out, steps=steps, reporter=reporter, family=family)
    console.show(train_table(result.train))
    console.result(f"run folder      {result.run_dir}")
    for grid in result.grids:
        console.result(f"grid            {grid}")
    console.result(f"card            {result.run_dir / 'README.md'}")
    console.result(f"reloaded image  {result.reloaded_image}")
    console.result(f"hub data        {result.hub_data}")
    # The demo's hub stops with the demo: the last line is the model's page once the hub is served again.
    console.result(f"browse it again hubtools hub serve --data {result.hub_data} --port {DEMO_PAGES_PORT}")
    page = f"http://127.0.0.1:{DEMO_PAGES_PORT}{urlsplit(result.repo_url).path}"
    console.result(page, data={"url": result.repo_url, "page": page, "run_dir": str(result.run_dir),
                               "grids": [str(grid) for grid in result.grids], "hub_data": str(result.hub_data),
                               "reloaded_image": str(result.reloaded_image)})
