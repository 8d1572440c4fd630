"""`hubtools hackathon ...` commands: themes, the submission check, the leaderboard, concept sets."""

from __future__ import annotations


import typer
from rich.table import Table
from rich.text import Text

from hubtools.cli import console
from hubtools.cli.console import styled

app = typer.Typer(help="DreamBooth Hackathon: themes, submission check, leaderboard, concept sets.",
                  no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="hackathon")


def _echo_json(data) -> None:
    console.data_json(data)


@app.command("themes")
def themes(as_json: bool = typer.Option(False, "--json", help="Print the themes as JSON.")) -> None:
    """The hackathon's themes and the tags an entry in each carries."""
    from hubtools.hackathon import load_themes

    all_themes = load_themes()
    if as_json:
        _echo_json([theme.to_dict() for theme in all_themes])
        return
    table = Table("theme", "", "description", "tags", title="DreamBooth Hackathon themes")
    for theme in all_themes:
        table.add_row(theme.name, theme.emoji, theme.description, ", ".join(theme.tags))
    console.result(table)
    console.result("enter with: hubtools train-and-push ... --hackathon THEME")


@app.command("check")
def check(
    repo_id: str = typer.Argument(..., help="The entry's model repo, namespace/name."),
    load: bool = typer.Option(False, "--load", help="Also load the pipeline with diffusers (downloads it)."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """Check an entry against every hackathon rule; exit 0 only when all pass."""
    from hubtools.hackathon import check_submission

    results = check_submission(repo_id, load=load)
    failed = [result for result in results if not result.passed]
    if as_json:
        _echo_json({"repo_id": repo_id, "passed": not failed, "rules": [r.to_dict() for r in results]})
    else:
        table = Table("rule", "result", title=f"hackathon check of {repo_id}")
        table.add_column("detail", overflow="fold")
        table.add_column("how to fix", overflow="fold")
        for result in results:
            table.add_row(result.rule, styled("pass", "green") if result.passed else styled("FAIL", "red"),
                          result.detail, result.fix or "")
        console.result(table)
        if failed:
            console.result(Text.assemble((f"{len(failed)} of {len(results)} rules fail", "red"), ": fix them and run the check again"))
        else:
            console.result(Text.assemble((f"all {len(results)} rules pass", "green"), f": {repo_id} is a valid entry"))
    if failed:
        raise SystemExit(1)  # typer.Exit's code is lost under main()'s standalone_mode=False


@app.command("leaderboard")
def leaderboard(
    theme: str | None = typer.Option(None, "--theme", help="Only this theme."),
    top: int | None = typer.Option(None, "--top", help="Only the N most liked entries per theme."),
    as_json: bool = typer.Option(False, "--json", help="Print the leaderboard as JSON."),
) -> None:
    """Hackathon entries ranked by likes, grouped by theme."""
    from hubtools.hackathon import leaderboard as build_leaderboard

    boards = build_leaderboard(theme, top)
    if as_json:
        _echo_json([board.to_dict() for board in boards])
        return
    for board in boards:
        if not board.entries:
            continue
        table = Table(title=board.title, title_justify="left")
        table.add_column("#")
        table.add_column("model", overflow="fold")
        table.add_column("likes")
        table.add_column("downloads")
        for entry in board.entries:
            table.add_row(str(entry.rank), entry.repo_id, str(entry.likes), str(entry.downloads))
        console.result(table)
    empty = [board.title for board in boards if not board.entries]
    if empty:  # one line for the themes nobody entered, not a table each
        console.result(styled(f"no entries yet: {', '.join(empty)}", "dim"))


@app.command("datasets")
def datasets(
    search: str | None = typer.Option(None, "--search", help="Also datasets whose name contains this."),
    as_json: bool = typer.Option(False, "--json", help="Print the datasets as JSON."),
) -> None:
    """Community concept sets to train on directly with --concept namespace/name."""
    from hubtools.hackathon import community_datasets

    found = community_datasets(search)
    if as_json:
        _echo_json([dataset.to_dict() for dataset in found])
        return
    table = Table(title="community concept sets")
    table.add_column("dataset", overflow="fold")
    table.add_column("likes")
    table.add_column("downloads")
    for dataset in found:
        table.add_row(dataset.repo_id, str(dataset.likes), str(dataset.downloads))
    if not found:
        table.add_row(styled("none found", "dim"), "", "")
    console.result(table)
    if found:
        console.result(f"train on one with: hubtools train-and-push --concept {found[0].repo_id} ...")
