"""Serving the studio: one studio per data folder (a lock the kernel drops even on SIGKILL), loopback
unless TLS or an explicit flag says otherwise, and the sign-in address printed once the port is bound."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

from hubtools.errors import ConfigError, HubtoolsError
from hubtools.folder_lock import hold_folder


def lock_data_dir(data_dir: Path) -> FileLock:
    return hold_folder(Path(data_dir) / "studio.lock",
                       HubtoolsError(f"a studio is already running on {data_dir}: open that one, or stop it first"))


def check_bind(host: str, *, tls: bool, allow_remote: bool) -> None:
    """Beyond this machine the sign-in token would cross the network in the clear: TLS, or say so."""
    from hubtools.localhub.server import is_loopback

    if not is_loopback(host) and not tls and not allow_remote:
        raise ConfigError(f"--host {host} is reachable from other machines: serve HTTPS (--tls-cert/--tls-key), "
                          "or pass --allow-remote-without-tls on a network you trust")


def serve(data_dir: Path, *, host: str = "127.0.0.1", port: int = 0, tls_cert: Path | None = None,
          tls_key: Path | None = None, allow_remote: bool = False, upload_limit: int | None = None,
          token: str | None = None, announce: Callable[[str], None] = print) -> None:
    """Run the studio until interrupted; ``announce`` gets the sign-in address (with the token) once."""
    import uvicorn

    from hubtools.localhub.server import check_tls_files
    from hubtools.studio.app import DEFAULT_UPLOAD_LIMIT, create_app

    tls = tls_cert is not None or tls_key is not None
    if tls and (tls_cert is None or tls_key is None):
        raise ConfigError("TLS needs both --tls-cert and --tls-key")
    check_bind(host, tls=tls, allow_remote=allow_remote)
    if tls:
        check_tls_files(tls_cert, tls_key)  # type: ignore[arg-type]
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = lock_data_dir(data_dir)
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            raise ConfigError(f"cannot listen on {host}:{port} ({error.strerror}): choose another --port") from None
        # Listen before the address is printed: a client that connects at once (a script, a test) waits in the
        # backlog until uvicorn accepts, instead of being refused while the server is still starting.
        sock.listen(2048)
        app = create_app(data_dir, token=token, upload_limit=upload_limit or DEFAULT_UPLOAD_LIMIT)
        bound = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        announce(f"{'https' if tls else 'http'}://{shown}:{bound}/?token={app.state.auth.token}")
        extra = {"ssl_certfile": str(tls_cert), "ssl_keyfile": str(tls_key)} if tls else {}
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=2, **extra)
        uvicorn.Server(config).run(sockets=[sock])
        app.state.worker.stop()
    finally:
        lock.release()
