"""`hubtools hub ...`: run the local hub, and its admin commands (likes and downloads; tokens and the store's
upkeep are in ``hub_admin``)."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import typer

from hubtools.cli import console
from hubtools.errors import ConfigError

app = typer.Typer(help="The local Hub-compatible server: serve it; its tokens, likes and downloads; fsck, gc, backup.",
                  no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="hub")




def parse_tokens(values: list[str]) -> dict[str, str]:
    """``["alice=secret", ...]`` -> ``{"alice": "secret"}``; the token never appears in an error."""
    from hubtools.localhub.auth import INTERNAL_PUBLISHER
    from hubtools.localhub.naming import check_name_part

    tokens: dict[str, str] = {}
    for value in values:
        user, sep, token = value.partition("=")
        user = user.strip()
        if not sep or not user or not token:
            raise ConfigError("--token must look like USER=TOKEN, with a non-empty user and token.")
        try:
            check_name_part(user, "user name")
        except Exception:
            raise ConfigError(f"--token: {user!r} is not a valid user name (letters, digits, '-', '_', '.').") from None
        if user == INTERNAL_PUBLISHER:
            raise ConfigError(f"--token: the user {INTERNAL_PUBLISHER!r} is reserved for --with-tiny-model.")
        if user in tokens:
            raise ConfigError(f"--token: the user {user!r} is given twice; give each user one token.")
        tokens[user] = token
    if len(set(tokens.values())) != len(tokens):
        raise ConfigError("--token: two users have the same token; give each user its own.")
    return tokens


def parse_organizations(values: list[str]) -> dict[str, list[str]]:
    """``["acme=alice,bob", ...]`` -> ``{"acme": ["alice", "bob"]}``."""
    from hubtools.localhub.naming import check_name_part

    organizations: dict[str, list[str]] = {}
    for value in values:
        name, sep, members_text = value.partition("=")
        name = name.strip()
        members = [member.strip() for member in members_text.split(",") if member.strip()]
        if not sep or not name or not members:
            raise ConfigError("--org must look like NAME=USER1,USER2, with at least one member.")
        for part, what in ((name, "organization name"), *((member, "user name") for member in members)):
            try:
                check_name_part(part, what)
            except Exception:
                raise ConfigError(f"--org: {part!r} is not a valid {what} (letters, digits, '-', '_', '.').") from None
        if name in organizations:
            raise ConfigError(f"--org: the organization {name!r} is given twice; list all its members once.")
        organizations[name] = members
    return organizations


@app.command("serve")
def serve(
    data: Path = typer.Option(..., "--data", help="Folder for the hub's repos (created if missing)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(0, "--port", help="Port to listen on; 0 picks a free one."),
    token: list[str] = typer.Option(
        [], "--token", help="USER=TOKEN, a write token (repeatable). For tests and demos: every local user sees "
        "arguments; prefer --tokens-file or `hubtools hub token add`."
    ),
    tokens_file: Path | None = typer.Option(
        None, "--tokens-file", envvar="HUBTOOLS_HUB_TOKENS_FILE",
        help="File with one USER=TOKEN [read|write] per line ('#' comments); re-read when it changes.",
    ),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="PEM certificate: serve HTTPS (with --tls-key)."),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="PEM private key of --tls-cert."),
    org: list[str] = typer.Option(
        [], "--org", help="NAME=USER1,USER2: an organization whose members write to NAME/... (repeatable)."
    ),
    with_tiny_model: bool = typer.Option(
        False, "--with-tiny-model", help="Publish the tiny random-weight pipelines as hubtools/tiny-stable-diffusion, "
        "hubtools/tiny-stable-diffusion-xl and hubtools/tiny-flux."
    ),
) -> None:
    """Serve a Hub-compatible API until Ctrl-C. The first line printed is the endpoint URL."""
    from hubtools.localhub import serve_in_background
    from hubtools.localhub.auth import INTERNAL_PUBLISHER, tokens_file_warning
    from hubtools.localhub.server import is_loopback, remember_tiny_models, tiny_models_published

    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be between 0 and 65535, got {port}.")
    tokens = parse_tokens(token)
    organizations = parse_organizations(org)
    if INTERNAL_PUBLISHER in organizations:
        raise ConfigError(f"--org: the name {INTERNAL_PUBLISHER!r} is reserved for --with-tiny-model.")
    if with_tiny_model and tls_cert is not None and not os.environ.get("SSL_CERT_FILE"):
        raise ConfigError("--with-tiny-model publishes through the hub's own HTTPS endpoint: set SSL_CERT_FILE "
                          "to the CA of --tls-cert (as your clients do), or publish without TLS first.")
    if not is_loopback(host):
        if token:
            console.warning("--token puts tokens on the command line, where every user of this machine can read them "
                            "(ps); use --tokens-file or `hubtools hub token add` instead.")
        if tls_cert is None:
            console.warning(f"serving plain HTTP on {host}: tokens and files cross the network in clear; "
                            "pass --tls-cert and --tls-key.")
    if tokens_file is not None and tokens_file.is_file() and (warning := tokens_file_warning(tokens_file)):
        console.warning(warning)
    publisher_token = secrets.token_urlsafe(24) if with_tiny_model else None
    if publisher_token is not None:
        tokens[INTERNAL_PUBLISHER] = publisher_token
    with serve_in_background(data, host=host, port=port, tokens=tokens, tokens_file=tokens_file,
                             tls_cert=tls_cert, tls_key=tls_key, organizations=organizations) as hub:
        if not token and tokens_file is None and not hub.tokens.store.list():
            console.warning(f"no tokens yet: the hub is read-only until you add one "
                            f"(`hubtools hub token add USER --write --data {data}`).")
        if publisher_token is not None and tiny_models_published(hub):
            console.note("the tiny models are already published")
        elif publisher_token is not None:
            console.stage("publishing the tiny models ...")
            published = _publish_tiny_model_in_child(hub.url, publisher_token)
            for repo_id in published:
                console.note(f"published {repo_id}")
            remember_tiny_models(hub, published)
        # The URL goes first (and is flushed) so a script can read one line and start using the hub.
        console.result(hub.url, data={"url": hub.url})
        console.result(f"export HF_ENDPOINT={hub.url} HF_UPDATE_DOWNLOAD_COUNTS=0")
        console.note(f"serving {hub.data_dir} on {hub.url}; Ctrl-C stops it")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            console.note("stopped")


TOKEN_VARIABLE = "HUBTOOLS_PUBLISHER_TOKEN"


def _publish_tiny_model_in_child(url: str, token: str) -> list[str]:
    """Build and publish the tiny models (one per family) from a child process, so the server never loads
    torch (about 700 MiB it would keep for as long as it runs). The token travels in the environment, not
    argv. Returns the published repo ids."""
    import os
    import subprocess
    import sys

    from hubtools.errors import HubError

    env = {**os.environ, TOKEN_VARIABLE: token}
    result = subprocess.run([sys.executable, "-m", "hubtools", "hub", "publish-tiny-model", "--endpoint", url],
                            env=env, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no message"])[-1].replace(token, "***")
        raise HubError(f"publishing the tiny model failed: {last}")
    return result.stdout.strip().splitlines()


@app.command("publish-tiny-model", hidden=True)
def publish_tiny_model_command(
    endpoint: str = typer.Option(..., "--endpoint", help="The hub to publish to."),
) -> None:
    """Internal: what `serve --with-tiny-model` runs in a child process (token in HUBTOOLS_PUBLISHER_TOKEN)."""
    import os

    from hubtools.hubenv import hub_progress_bars_hidden, point_clients_at
    from hubtools.pipelines import quiet_weight_loading
    from hubtools.tinymodel import TINY_FAMILIES, publish_tiny_model

    token = os.environ.get(TOKEN_VARIABLE)
    if not token:
        raise ConfigError(f"publish-tiny-model is internal to `hub serve --with-tiny-model` ({TOKEN_VARIABLE} unset).")
    point_clients_at(endpoint)  # this hub's URL
    quiet_weight_loading()
    for family in TINY_FAMILIES:  # every family of the registry
        with hub_progress_bars_hidden():
            console.result(publish_tiny_model(endpoint, token, family=family))


def _set_counter(kind: str, data: Path, repo_id: str, value: int, repo_type: str) -> None:
    from hubtools.localhub import set_downloads, set_likes

    setter = set_likes if kind == "likes" else set_downloads
    setter(data, repo_id, value, repo_type=repo_type)
    console.result(f"{repo_id} ({repo_type}): {kind} = {value}",
                   data={"repo_id": repo_id, "repo_type": repo_type, kind: value})


@app.command("set-likes")
def set_likes_command(
    repo_id: str = typer.Argument(..., help="namespace/name of the repo."),
    likes: int = typer.Argument(..., help="The like count to set."),
    data: Path = typer.Option(..., "--data", help="The hub's data folder."),
    repo_type: str = typer.Option("model", "--repo-type", help="model, dataset or space."),
) -> None:
    """Set a repo's like count (the client can no longer like repos). Works while the hub runs."""
    _set_counter("likes", data, repo_id, likes, repo_type)


@app.command("set-downloads")
def set_downloads_command(
    repo_id: str = typer.Argument(..., help="namespace/name of the repo."),
    downloads: int = typer.Argument(..., help="The download count to set."),
    data: Path = typer.Option(..., "--data", help="The hub's data folder."),
    repo_type: str = typer.Option("model", "--repo-type", help="model, dataset or space."),
) -> None:
    """Set a repo's download count. Works while the hub runs."""
    _set_counter("downloads", data, repo_id, downloads, repo_type)


@app.command("seed")
def seed_command(
    seed_file: Path = typer.Argument(..., help="A JSON file: [{\"repo_id\": ..., \"likes\": N, \"downloads\": N, "
                                               "\"repo_type\": \"model\"}, ...]."),
    data: Path = typer.Option(..., "--data", help="The hub's data folder."),
) -> None:
    """Set likes and downloads of several repos from a seed file."""
    from hubtools.localhub.seed import apply_seed_file

    for line in apply_seed_file(data, seed_file):
        console.result(line)


from hubtools.cli import hub_admin  # noqa: E402  (registers its commands on ``app``)

hub_admin.register(app)
