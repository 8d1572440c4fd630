"""Publishing a run: exactly the files a user needs, in one commit, and nothing when nothing changed.

The repo receives the model (a diffusers pipeline folder, or the LoRA weights), the card, the images, the
resolved config, train_result.json, eval.json, logs/metrics.jsonl and the concept contact sheet. It never
receives checkpoints, optimizer states, caches, TensorBoard events, class images or the concept photos
themselves (those are the user's to publish as a dataset).

One ``create_commit`` carries every change, with the remote head as ``parent_commit``: the Hub applies a
commit whole or not at all, so a push killed mid-upload leaves main as it was, and the retry uploads what
is missing. Files are compared with the remote tree first (git blob sha1, or LFS sha256), so re-pushing an
unchanged run makes no commit. With ``checkpoints=True`` each checkpoint's weights go to a ``step-N``
branch made from main, so ``from_pretrained(repo, revision="step-N")`` loads that checkpoint.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubtools.config import (
    RUN_CONFIG_FILENAME, RunConfig, check_repo_id, load_run_config, local_name, save_config,
)
from hubtools.errors import ConfigError, HubError
from hubtools.hashing import file_digest
from hubtools.hub_errors import hub_errors
from hubtools.hubnames import DEFAULT_BRANCH
from hubtools.runfolder import (
    RunFolder, TrainResult, checkpoint_files, is_managed, published_files, read_json, write_json_atomic,
)
from hubtools.runfolder.layout import SCRUBBED_JSON

_RETRY_HINT = "push again; nothing is half-written, commits are all or nothing"


@dataclass
class PushResult:
    url: str  # the repo's page
    repo_id: str
    commit_sha: str  # main's head after the push (the previous head when nothing changed)
    commit_url: str | None  # None when nothing changed
    changed: bool
    files: list[str]  # the run's files in the repo, as paths in the repo
    deleted: list[str] = field(default_factory=list)
    branches: dict[str, str] = field(default_factory=dict)  # step-N -> commit sha, with checkpoints=True


# -- what a run pushes -----------------------------------------------------------------------------------


def write_shared_copies(run_dir: Path) -> None:
    """The config and JSON records as they are published, with the paths of this machine cut off."""
    run = RunFolder(Path(run_dir))
    if run.config.is_file():
        save_config(load_run_config(run.root).shareable(), run.shared / RUN_CONFIG_FILENAME)
    for name in SCRUBBED_JSON:
        if (run.root / name).is_file():
            write_json_atomic(run.shared / name, without_local_paths(read_json(run.root / name)))


def without_local_paths(data: Any) -> Any:
    """``data`` with every absolute local path (``/home/me/run/checkpoints/...``) cut to its last part."""
    if isinstance(data, dict):
        return {key: without_local_paths(value) for key, value in data.items()}
    if isinstance(data, list):
        return [without_local_paths(value) for value in data]
    if isinstance(data, str) and Path(data).expanduser().is_absolute():
        return local_name(data)
    return data


# -- the push ---------------------------------------------------------------------------------------------


def push_run(run_dir: Path, repo_id: str, *, private: bool = False, token: str | None = None,
             checkpoints: bool = False, commit_message: str | None = None) -> PushResult:
    """Push the run to ``repo_id`` (created if needed) in one commit; a no-op when nothing changed."""
    from huggingface_hub import HfApi

    check_repo_id(repo_id)
    run = RunFolder(Path(run_dir))
    config = load_run_config(run.root)
    run.require_trained_model()
    if not run.card.is_file():
        raise ConfigError(f"run {run.root} has no model card to push: `hubtools card {run.root}` writes it")
    token = _resolve_token(token)
    api = HfApi(token=token)

    with hub_errors(repo_id, action="push to", token=token, missing=None, retry_hint=_RETRY_HINT,
                    status_hints={401: f"check that your token can write to {repo_id.split('/')[0]}",
                                  403: f"check that your token can write to {repo_id.split('/')[0]}",
                                  412: "the repo changed during the push: push again"}):
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
        repo_id = repo_url.repo_id or repo_id
        write_shared_copies(run.root)
        files = published_files(run)
        main = _push_tree(api, repo_id, DEFAULT_BRANCH, files, commit_message or default_commit_message(run.root, config),
                          delete_stale=True)
        branches: dict[str, str] = {}
        if checkpoints:
            for step, folder in run.list_checkpoints():
                weights = checkpoint_files(run, folder)
                if not weights:
                    continue
                branch = f"step-{step}"
                api.create_branch(repo_id, branch=branch, revision=main.head, exist_ok=True)
                pushed = _push_tree(api, repo_id, branch, weights,
                                    f"Checkpoint at step {step} of {repo_id.split('/')[-1]}", delete_stale=False)
                branches[branch] = pushed.head
    return PushResult(
        url=str(repo_url), repo_id=repo_id, commit_sha=main.head, commit_url=main.commit_url,
        changed=main.changed, files=sorted(files), deleted=main.deleted, branches=branches,
    )


def default_commit_message(run_dir: Path, config: RunConfig) -> str:
    run = RunFolder(Path(run_dir))
    train = TrainResult.read(run)
    method = "LoRA" if run.is_lora else "fine-tune"
    steps = (train.steps_done if train else None) or config.training.steps
    subject = f"{config.concept.identifier or ''} {config.concept.class_noun or ''}".strip() or "a subject"
    return f"DreamBooth {method} of {subject}: {steps} steps, card and sample grids (hubtools)"


@dataclass
class _Pushed:
    head: str
    changed: bool
    commit_url: str | None
    deleted: list[str]


def _push_tree(api, repo_id: str, revision: str, files: dict[str, Path], message: str, *,
               delete_stale: bool) -> _Pushed:
    """One commit on ``revision`` adding what differs from the remote tree (and deleting stale paths)."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    head = api.repo_info(repo_id, revision=revision).sha
    remote = {item.path: item for item in api.list_repo_tree(repo_id, revision=revision, recursive=True)
              if hasattr(item, "blob_id")}
    additions = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(local))
                 for path, local in files.items() if not _same_file(local, remote.get(path))]
    stale = sorted(path for path in remote if delete_stale and path not in files and is_managed(path))
    deletions = [CommitOperationDelete(path_in_repo=path) for path in stale]
    if not additions and not deletions:
        return _Pushed(head=head, changed=False, commit_url=None, deleted=[])
    description = "\n".join([f"- add {op.path_in_repo}" for op in additions] + [f"- delete {p}" for p in stale])
    info = api.create_commit(repo_id, additions + deletions, commit_message=message, commit_description=description,
                             revision=revision, parent_commit=head)
    if info.oid == head:  # the client found every file unchanged after all (it skips no-op commits itself)
        return _Pushed(head=head, changed=False, commit_url=None, deleted=[])
    return _Pushed(head=info.oid, changed=True, commit_url=info.commit_url, deleted=stale)


def _same_file(local: Path, remote) -> bool:
    """Whether the remote file holds exactly the local bytes (LFS: sha256; regular: git blob sha1)."""
    if remote is None or remote.size != local.stat().st_size:
        return False
    if remote.lfs is not None:
        return file_digest(local, hashlib.sha256()) == remote.lfs.sha256
    sha1 = hashlib.sha1(b"blob %d\0" % local.stat().st_size)
    return file_digest(local, sha1) == remote.blob_id


# -- tokens and errors ---------------------------------------------------------------------------------------


def _resolve_token(token: str | None) -> str:
    """The given token, else ``HF_TOKEN``, else the one saved by ``hf auth login``."""
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise HubError("no Hub token: set HF_TOKEN or run `hf auth login` (a token with write access)")
    return token
