"""Running the local hub: in a background thread (tests, the demo) or in the foreground (the CLI)."""

from __future__ import annotations

import ipaddress
import json
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from filelock import FileLock

from hubtools.errors import HubError
from hubtools.folder_lock import hold_folder
from hubtools.localhub.app import HubSettings, create_app
from hubtools.localhub.auth import Organizations, TokenBook
from hubtools.localhub.naming import check_repo_type
from hubtools.localhub.storage import Storage, StorageError
from hubtools.localhub.tokenstore import TokenStore

STARTUP_TIMEOUT_S = 30.0


@dataclass
class LocalHub:
    """A running local hub. ``url`` is what HF_ENDPOINT should be set to."""

    url: str
    data_dir: Path
    storage: Storage = field(repr=False)
    tokens: TokenBook = field(repr=False)

    def set_likes(self, repo_id: str, likes: int, repo_type: str = "model") -> None:
        set_likes(self.data_dir, repo_id, likes, repo_type=repo_type, storage=self.storage)

    def set_downloads(self, repo_id: str, n: int, repo_type: str = "model") -> None:
        set_downloads(self.data_dir, repo_id, n, repo_type=repo_type, storage=self.storage)


def _counter(data_dir: Path, repo_id: str, column: str, value: int, repo_type: str, storage: Storage | None) -> None:
    from hubtools.localhub.errors import HubHTTPError

    if value < 0:
        raise HubError(f"{column} must be 0 or more, got {value}.")
    storage = storage or open_storage(data_dir, create=False)
    try:
        storage.set_counter(check_repo_type(repo_type), repo_id, column, value)
    except HubHTTPError as error:
        raise HubError(f"{error.message} Check the repo id and --repo-type.") from None


def set_likes(data_dir: Path, repo_id: str, likes: int, *, repo_type: str = "model",
              storage: Storage | None = None) -> None:
    """Admin: set a repo's like count (the client can no longer like repos)."""
    _counter(data_dir, repo_id, "likes", likes, repo_type, storage)


def set_downloads(data_dir: Path, repo_id: str, n: int, *, repo_type: str = "model",
                  storage: Storage | None = None) -> None:
    """Admin: set a repo's download count."""
    _counter(data_dir, repo_id, "downloads", n, repo_type, storage)


def open_storage(data_dir: Path, *, create: bool = True) -> Storage:
    data_dir = Path(data_dir)
    if not create and not (data_dir / "hub.sqlite").is_file():
        raise HubError(f"{data_dir} is not a local hub data folder (no hub.sqlite): check --data.")
    if data_dir.exists() and not data_dir.is_dir():
        raise HubError(f"{data_dir} exists and is not a folder: pick another --data.")
    try:
        return Storage(data_dir)
    except OSError as error:
        raise HubError(f"Cannot use {data_dir} as the hub's data folder: {error.strerror}.") from None
    except StorageError as error:
        raise HubError(str(error)) from None


TINY_MODELS_RECORD = "tiny-models.json"  # in the data folder: what `serve --with-tiny-model` published


def tiny_models_published(hub: LocalHub) -> bool:
    """Whether the tiny models this hubtools publishes are already in the hub (so a restart skips the
    minute of building and uploading them): the record of the last publication, by this hubtools version,
    names repos whose main branch still holds a pipeline."""
    from hubtools import __version__
    from hubtools.localhub.errors import HubHTTPError

    try:
        record = json.loads((hub.data_dir / TINY_MODELS_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict) or record.get("hubtools") != __version__ or not record.get("repos"):
        return False
    for repo_id in record["repos"]:
        try:
            commit, _ = hub.storage.resolve("model", str(repo_id), "main")
        except HubHTTPError:
            return False
        if "model_index.json" not in commit.tree:
            return False
    return True


def remember_tiny_models(hub: LocalHub, repo_ids: list[str]) -> None:
    from hubtools import __version__
    from hubtools.atomic import write_json_atomic

    write_json_atomic(hub.data_dir / TINY_MODELS_RECORD, {"hubtools": __version__, "repos": repo_ids})


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_tls_files(cert: Path, key: Path) -> None:
    """Load the certificate and key now, so a wrong file is one clear line, not a server that never starts."""
    for option, path in (("--tls-cert", cert), ("--tls-key", key)):
        if not Path(path).is_file():
            raise HubError(f"{option}: {path} is not a file: give the PEM file of the server's {option[6:]}.")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(str(cert), str(key))
    except (ssl.SSLError, ValueError) as error:
        raise HubError(
            f"--tls-cert/--tls-key: cannot load {cert} with {key} ({error.__class__.__name__}): give a PEM "
            "certificate and the unencrypted PEM key that belongs to it."
        ) from None


def lock_data_dir(data_dir: Path, *, doing: str = "serve it") -> FileLock:
    """Hold the data folder for one server (or ``gc``): two at once would race each other's sweep and gc."""
    return hold_folder(Path(data_dir) / "server.lock",
                       HubError(f"A local hub is already serving {data_dir}: stop it first to {doing}."))


def check_organizations(organizations: dict[str, list[str]] | None, users: list[str]) -> Organizations:
    """Organizations -> members, checked: an organization is not also a user, and has members."""
    for name, members in (organizations or {}).items():
        if name in users:
            raise HubError(f"{name!r} is both a user and an organization: give the organization another name.")
        if not members:
            raise HubError(f"The organization {name!r} has no members: give it at least one user.")
    return Organizations(organizations)


def _build_server(data_dir: Path, host: str, port: int, tokens: dict[str, str] | None, *,
                  access_log: bool, settings: HubSettings | None = None, tokens_file: Path | None = None,
                  tls_cert: Path | None = None, tls_key: Path | None = None,
                  organizations: dict[str, list[str]] | None = None) -> tuple[uvicorn.Server, Storage, TokenBook]:
    orgs = check_organizations(organizations, list(tokens or {}))
    storage = open_storage(data_dir)
    # Nothing else uses the folder (the caller holds its lock): every temp file is an interrupted upload's.
    storage.blobs.sweep_stale_temp_files(older_than_s=0)
    token_book = TokenBook(tokens, tokens_file=tokens_file, store=TokenStore(storage.db_path))
    app = create_app(storage, token_book, settings, orgs)
    tls = {}
    if tls_cert is not None or tls_key is not None:
        if tls_cert is None or tls_key is None:
            raise HubError("TLS needs both --tls-cert and --tls-key.")
        check_tls_files(tls_cert, tls_key)
        tls = {"ssl_certfile": str(tls_cert), "ssl_keyfile": str(tls_key)}
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="info" if access_log else "warning",
        access_log=access_log,
        lifespan="off",
        h11_max_incomplete_event_size=256 * 1024,  # beyond the app's own 32 KiB limit (a clean 431)
        timeout_graceful_shutdown=5,
        **tls,
    )
    return uvicorn.Server(config), storage, token_book


def _bound_url(server: uvicorn.Server, host: str) -> str:
    port = server.servers[0].sockets[0].getsockname()[1]
    shown_host = f"[{host}]" if ":" in host else host
    scheme = "https" if server.config.ssl_certfile else "http"
    return f"{scheme}://{shown_host}:{port}"


@contextmanager
def serve_in_background(
    data_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    tokens: dict[str, str] | None = None,
    settings: HubSettings | None = None,
    tokens_file: Path | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    organizations: dict[str, list[str]] | None = None,
) -> Iterator[LocalHub]:
    """Start the local hub in a daemon thread and yield it once it accepts connections; stop it on exit.

    ``tokens`` (USER -> TOKEN, write tokens) add to the tokens of ``tokens_file`` and of the data folder's
    token store. With ``tls_cert`` and ``tls_key`` it serves HTTPS. ``organizations`` maps an
    organization's name to its members (users): members write to ``NAME/...`` and see its private repos.
    """
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    lock = lock_data_dir(Path(data_dir))
    try:
        server, storage, token_book = _build_server(
            Path(data_dir), host, port, tokens, access_log=False, settings=settings, tokens_file=tokens_file,
            tls_cert=tls_cert, tls_key=tls_key, organizations=organizations)
    except BaseException:
        lock.release()
        raise
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # not the main thread
    thread = threading.Thread(target=server.run, name="hubtools-localhub", daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            lock.release()
            raise HubError(f"The local hub did not start on {host}:{port} (is the port in use?).")
        time.sleep(0.02)
    try:
        yield LocalHub(url=_bound_url(server, host), data_dir=Path(data_dir).resolve(), storage=storage,
                       tokens=token_book)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        lock.release()
