"""``hubtools studio``: train, watch and publish from the browser (the same runner, a web front end)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from hubtools.cli import console


def register(app: typer.Typer) -> None:
    app.command("studio")(studio_command)


def studio_command(
    data: Annotated[Path, typer.Option("--data", help="Folder for the jobs, their photos and runs, and the queue.")] = Path("studio-data"),
    port: Annotated[int, typer.Option("--port", help="Port (0: any free one).")] = 7860,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (beyond loopback: TLS or --allow-remote-without-tls).")] = "127.0.0.1",
    tls_cert: Annotated[Optional[Path], typer.Option("--tls-cert", help="PEM certificate, to serve HTTPS.", show_default=False)] = None,
    tls_key: Annotated[Optional[Path], typer.Option("--tls-key", help="PEM key of --tls-cert.", show_default=False)] = None,
    allow_remote: Annotated[bool, typer.Option("--allow-remote-without-tls", help="Serve plain HTTP beyond loopback (a network you trust).")] = False,
    max_upload_mb: Annotated[int, typer.Option("--max-upload-mb", help="Largest photo accepted, in MB.")] = 50,
) -> None:
    """Serve the studio: photos to a published model in the browser. Open the address it prints (with its token)."""
    from hubtools.studio.server import serve

    def announce(url: str) -> None:
        console.result(url)
        console.info("hubtools studio: open the address above to sign in (the token is printed only now); Ctrl+C stops it")

    serve(data, host=host, port=port, tls_cert=tls_cert, tls_key=tls_key, allow_remote=allow_remote,
          upload_limit=max_upload_mb * 2**20, announce=announce)
