"""Validation of what clients name: repo types, repo ids, paths in a repo, branch and tag names.

Everything a client sends is checked here before it reaches storage, so no name can point outside the
data folder (blobs are addressed by sha256 only; paths in a repo never touch the filesystem anyway).
"""

from __future__ import annotations

import re

from hubtools.hubnames import DEFAULT_BRANCH, NAME_RULES, is_valid_name_part
from hubtools.localhub.errors import BadRequest

REPO_TYPES = ("model", "dataset", "space")
# URL prefixes of resolve/LFS routes, as huggingface_hub.constants.REPO_TYPES_URL_PREFIXES.
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
RESERVED_NAMESPACES = {"api", "datasets", "spaces", "models", "static", "settings", "new"}

_REF_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")
MAX_PATH_LENGTH = 1000
MAX_SEGMENT_BYTES = 255  # what a client can save: the longest file name of common filesystems


def repo_type_from_plural(plural: str) -> str:
    if plural.endswith("s") and plural[:-1] in REPO_TYPES:
        return plural[:-1]
    raise BadRequest(f"Unknown repo type {plural!r}: use models, datasets or spaces.")


def check_repo_type(repo_type: str | None) -> str:
    repo_type = repo_type or "model"
    if repo_type not in REPO_TYPES:
        raise BadRequest(f"Unknown repo type {repo_type!r}: use model, dataset or space.")
    return repo_type


def check_name_part(part: str, what: str) -> str:
    if not is_valid_name_part(part):
        raise BadRequest(f"Invalid {what} {part!r}: use {NAME_RULES}.")
    return part


def check_repo_id(namespace: str, name: str) -> str:
    check_name_part(namespace, "namespace")
    check_name_part(name, "repo name")
    if namespace.lower() in RESERVED_NAMESPACES:
        raise BadRequest(f"Invalid namespace {namespace!r}: it is reserved.")
    if name.endswith(".git"):
        raise BadRequest(f"Invalid repo name {name!r}: it must not end with .git.")
    return f"{namespace}/{name}"


def check_path(path: str) -> str:
    """A file path inside a repo: relative, '/'-separated, no '.', '..', empty parts, backslashes or control chars."""
    if not isinstance(path, str) or not path:
        raise BadRequest("Invalid path in repo: it is empty.")
    if len(path) > MAX_PATH_LENGTH:
        raise BadRequest(f"Invalid path in repo: longer than {MAX_PATH_LENGTH} characters.")
    if "\\" in path or any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise BadRequest(f"Invalid path in repo {path!r}: no backslashes or control characters (NUL included).")
    if path.startswith("/"):
        raise BadRequest(f"Invalid path in repo {path!r}: it must be relative.")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise BadRequest(f"Invalid path in repo {path!r}: no '.', '..' or empty parts.")
    if parts[0] == ".git":
        raise BadRequest(f"Invalid path in repo {path!r}: .git is reserved.")
    if any(len(part.encode("utf-8")) > MAX_SEGMENT_BYTES for part in parts):
        raise BadRequest(f"Invalid path in repo: a file or folder name is longer than {MAX_SEGMENT_BYTES} bytes, "
                         "which clients cannot save.")
    return path


def check_ref_name(name: str, what: str = "branch") -> str:
    if (
        not isinstance(name, str)
        or not _REF_NAME.match(name)
        or ".." in name
        or "//" in name
        or name.endswith(("/", ".", ".lock"))
        or name.startswith("refs/")
    ):
        raise BadRequest(f"Invalid {what} name {name!r}: use letters, digits, '-', '_', '.' and '/'.")
    if name == "HEAD":  # git's name for the current branch: a ref of that name would shadow it
        raise BadRequest(f"Invalid {what} name 'HEAD': it is reserved.")
    return name
