"""`hubtools hub token ...` (access tokens, effective on a running hub), `fsck`, `gc` and `backup`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from hubtools.cli import console
from hubtools.errors import ConfigError
from hubtools.formatting import human_size

token_app = typer.Typer(help="Access tokens of a local hub: add, list, revoke. Effective at once.",
                        no_args_is_help=True)


DATA_OPTION_HELP = "The hub's data folder."


def register(app: typer.Typer) -> None:
    app.add_typer(token_app, name="token")
    app.command("fsck")(fsck_command)
    app.command("gc")(gc_command)
    app.command("backup")(backup_command)


def _token_store(data: Path, *, create: bool):
    from hubtools.localhub.server import open_storage
    from hubtools.localhub.tokenstore import TokenStore

    return TokenStore(open_storage(data, create=create).db_path)


@token_app.command("add")
def token_add(
    user: str = typer.Argument(..., help="The user the token acts as (its namespace)."),
    data: Path = typer.Option(..., "--data", help="The hub's data folder (created if missing)."),
    write: bool = typer.Option(False, "--write/--read", help="A write token, or a read token (the default)."),
    org: list[str] = typer.Option(
        [], "--org", help="Write only in this namespace (repeatable; name USER too to keep their own). "
        "Without --org a write token writes every namespace its user may write."
    ),
    name: str = typer.Option("", "--name", help="A label to recognise the token by in `token list`."),
) -> None:
    """Create a token and print it ONCE: it is stored only as a hash and cannot be shown again."""
    from hubtools.localhub.auth import INTERNAL_PUBLISHER
    from hubtools.localhub.errors import HubHTTPError
    from hubtools.localhub.naming import check_name_part

    for value, what in ((user, "user name"), *((namespace, "--org namespace") for namespace in org)):
        try:
            check_name_part(value, what)
        except HubHTTPError as error:
            raise ConfigError(error.message) from None
    if user == INTERNAL_PUBLISHER:
        raise ConfigError(f"the user {INTERNAL_PUBLISHER!r} is reserved for --with-tiny-model; pick another user.")
    if org and not write:
        raise ConfigError("--org restricts where a write token writes: add --write (a read token reads "
                          "whatever its user may see).")
    created = not (data / "hub.sqlite").is_file()
    token, stored = _token_store(data, create=True).add(user, "write" if write else "read", tuple(org), name)
    if created:
        console.note(f"created the hub data folder {data}")
    console.result(token, data={"token": token, "token_id": stored.token_id, "user": user, "role": stored.role,
                                "orgs": list(stored.orgs)})
    scope = f", writes only in {', '.join(stored.orgs)}" if stored.orgs else ""
    console.note(f"token {stored.token_id} for {user} ({stored.role}{scope}). This is the only time it is shown: "
                 "hand it over now (`hf auth login`, or HF_TOKEN).")


@token_app.command("list")
def token_list(data: Path = typer.Option(..., "--data", help=DATA_OPTION_HELP)) -> None:
    """List the tokens (ids, users, roles; never the tokens themselves)."""
    tokens = _token_store(data, create=False).list()
    if not tokens:
        console.result("no tokens: add one with `hubtools hub token add USER --data DIR`", data={"tokens": []})
        return
    table = Table("id", "user", "role", "writes in", "name", "created")
    for column in (table.columns[0], table.columns[2], table.columns[5]):
        column.no_wrap = True
    for token in tokens:
        writes_in = "-" if token.role == "read" else (", ".join(token.orgs) or "user + orgs")
        table.add_row(token.token_id, token.user, token.role, writes_in, token.name, token.created_at)
    console.result(table)


@token_app.command("revoke")
def token_revoke(
    token_id: str = typer.Argument(..., help="The token's id, as `hubtools hub token list` shows it."),
    data: Path = typer.Option(..., "--data", help=DATA_OPTION_HELP),
) -> None:
    """Revoke a token: its next request gets 401, also on a running hub."""
    revoked = _token_store(data, create=False).revoke(token_id)
    if revoked is None:
        raise ConfigError(f"no token with id {token_id!r}: see `hubtools hub token list --data {data}`.")
    console.result(f"revoked token {revoked.token_id} of {revoked.user}",
                   data={"revoked": revoked.token_id, "user": revoked.user})


def fsck_command(data: Path = typer.Option(..., "--data", help=DATA_OPTION_HELP)) -> None:
    """Check every blob's sha256 and every commit's files; change nothing (exit 1 on problems; safe while the
    hub runs)."""
    from hubtools.localhub.maintenance import fsck

    report = fsck(data)
    console.result(f"checked {report.repos} repos, {report.commits} commits, {report.blobs} blobs ({human_size(report.blob_bytes)})")
    if report.unreferenced_blobs:
        console.result(f"{report.unreferenced_blobs} blobs ({human_size(report.unreferenced_bytes)}) are referenced by no "
                       "commit: `hubtools hub gc` frees them")
    if report.temp_files:
        console.result(f"{report.temp_files} files in tmp/: uploads in progress, or leftovers the next start sweeps")
    if report.ok:
        console.result("no problems found")
        return
    for problem in report.problems:
        console.result(f"problem: {problem}")
    console.error(f"{len(report.problems)} problem(s) found: restore from a backup, or re-push the files named "
                  "above.")
    raise typer.Exit(1)


def gc_command(
    data: Path = typer.Option(..., "--data", help=DATA_OPTION_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would be removed."),
) -> None:
    """Remove the blobs no stored commit references (deleted repos, abandoned uploads). Stop the hub first."""
    from hubtools.localhub.maintenance import gc

    result = gc(data, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    console.result(f"{verb} {result.removed_blobs} blobs ({human_size(result.freed_bytes)}) and {result.temp_files_removed} "
                   f"leftover temp files; kept {result.kept_blobs} referenced blobs")


def backup_command(
    destination: Path = typer.Argument(..., help="A new (or empty) folder for the copy."),
    data: Path = typer.Option(..., "--data", help=DATA_OPTION_HELP),
) -> None:
    """Copy a hub, even a running one, into a new folder that `hubtools hub serve --data` serves as is."""
    from hubtools.localhub.maintenance import backup

    result = backup(data, destination)
    console.result(f"backed up {result.repos} repos, {result.commits} commits and {result.blobs} blobs "
                   f"({human_size(result.blob_bytes)}) to {destination}")
