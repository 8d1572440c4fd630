"""The changes of a pull request, file by file: what its page shows and the git-style unified diff the API
returns in a discussion's ``diff`` field (as the Hub's ``get_discussion_details`` has it).

A PR's changes are its head commit against the commit of the target branch it started from. Text files
diff line by line (``difflib``, three lines of context, git's headers); an LFS file diffs as git sees it,
by its pointer (so its sha256 and size changes show); another binary file is "Binary files ... differ".
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from hubtools.localhub.storage import Commit, Storage
from hubtools.localhub.trees import FileEntry, lfs_pointer

MAX_TEXT_DIFF_BYTES = 1024 * 1024  # larger text files are listed as changed, their lines not compared
_NO_NEWLINE = "\\ No newline at end of file\n"


@dataclass(frozen=True)
class FileChange:
    path: str
    status: str  # "added", "modified" or "deleted"
    old: FileEntry | None
    new: FileEntry | None
    binary: bool  # not diffed line by line: LFS, binary or too large
    hunks: str  # the unified diff's hunks ("@@ ..." onwards), "" for a binary file

    @property
    def lfs(self) -> bool:
        return bool((self.old and self.old.lfs) or (self.new and self.new.lfs))

    @property
    def added_lines(self) -> int:
        return sum(1 for line in self.hunks.splitlines() if line.startswith("+"))

    @property
    def removed_lines(self) -> int:
        return sum(1 for line in self.hunks.splitlines() if line.startswith("-"))


def changes_between(storage: Storage, base: Commit | None, head: Commit) -> list[FileChange]:
    """Every file that differs between ``base`` and ``head``, by path."""
    old_files = dict(base.tree.items()) if base is not None else {}
    new_files = dict(head.tree.items())
    changes = []
    for path in sorted(old_files.keys() | new_files.keys()):
        old, new = old_files.get(path), new_files.get(path)
        if old is not None and new is not None and old.git_oid == new.git_oid:
            continue
        status = "added" if old is None else "deleted" if new is None else "modified"
        changes.append(_change(storage, path, status, old, new))
    return changes


def _content(storage: Storage, entry: FileEntry | None) -> bytes | None:
    """What git compares: the pointer of an LFS file, the bytes of another (None: too large to compare)."""
    if entry is None:
        return b""
    if entry.lfs:
        return lfs_pointer(entry.sha256, entry.size)
    if entry.size > MAX_TEXT_DIFF_BYTES:
        return None
    return storage.blobs.read_blob(entry.sha256)


def _change(storage: Storage, path: str, status: str, old: FileEntry | None, new: FileEntry | None) -> FileChange:
    before, after = _content(storage, old), _content(storage, new)
    lfs = bool((old and old.lfs) or (new and new.lfs))
    if before is None or after is None or b"\0" in before[:8000] or b"\0" in after[:8000]:
        return FileChange(path, status, old, new, True, "")
    try:
        old_lines = before.decode("utf-8").splitlines(keepends=True)
        new_lines = after.decode("utf-8").splitlines(keepends=True)
    except UnicodeDecodeError:
        return FileChange(path, status, old, new, True, "")
    lines = list(difflib.unified_diff(old_lines, new_lines, n=3))[2:]  # git writes the ---/+++ lines itself
    hunks = "".join(line if line.endswith("\n") else line + "\n" + _NO_NEWLINE for line in lines)
    return FileChange(path, status, old, new, lfs, hunks)


def git_diff(changes: list[FileChange]) -> str:
    """The changes as ``git diff`` prints them (what the Hub's API returns for a pull request)."""
    out = []
    for change in changes:
        old_oid = change.old.git_oid[:7] if change.old else "0000000"
        new_oid = change.new.git_oid[:7] if change.new else "0000000"
        out.append(f"diff --git a/{change.path} b/{change.path}\n")
        if change.status == "added":
            out.append(f"new file mode 100644\nindex {old_oid}..{new_oid}\n")
        elif change.status == "deleted":
            out.append(f"deleted file mode 100644\nindex {old_oid}..{new_oid}\n")
        else:
            out.append(f"index {old_oid}..{new_oid} 100644\n")
        old_name = f"a/{change.path}" if change.old else "/dev/null"
        new_name = f"b/{change.path}" if change.new else "/dev/null"
        if change.hunks:
            out.append(f"--- {old_name}\n+++ {new_name}\n{change.hunks}")
        elif change.binary:
            out.append(f"Binary files {old_name} and {new_name} differ\n")
    return "".join(out)


def pull_request_changes(storage: Storage, repo_type: str, repo_id: str, base_oid: str | None,
                         head_oid: str | None) -> list[FileChange]:
    """A pull request's changes: its head against the commit it started from."""
    head = storage.get_commit(repo_type, repo_id, head_oid) if head_oid else None
    if head is None:
        return []
    base = storage.get_commit(repo_type, repo_id, base_oid) if base_oid else None
    return changes_between(storage, base, head)
