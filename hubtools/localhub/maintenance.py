"""Upkeep of a local hub's data folder: ``fsck`` (check, change nothing), ``gc`` (free unreferenced blobs)
and ``backup`` (a consistent copy of a running hub).

They read the tables of ``schema.py`` (the ``files`` rows of every commit name the blobs) through their own
read-only SQLite connections (``schema.open_read_only``):

- ``fsck`` opens the database read-only and reads it in one transaction, so it can run beside a live
  server; blobs are immutable and written before the commit that names them, so the snapshot's blobs
  are all on disk. Blobs newer than the snapshot are only "not referenced" (reported, not a problem).
- ``gc`` holds the data folder's server lock: with no server running, no upload is in flight, so a
  blob no stored commit names is garbage (blobs of deleted repos, abandoned uploads), and a blob a
  commit names is never removed. Commits a deleted branch leaves behind stay stored (still reachable
  by their id, as on the Hub), and so do their blobs.
- ``backup`` copies the database with SQLite's online backup API (one step: one consistent snapshot)
  and then the blobs that snapshot names, each verified against its sha256. The database lands last
  (renamed into place), so an interrupted backup never looks like a hub.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from hubtools.errors import HubError
from hubtools.localhub.schema import SchemaError, open_read_only
from hubtools.localhub.trees import git_blob_oid, lfs_pointer

_SHA256 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1024 * 1024
_MAX_LISTED = 20  # problems of one kind listed before "... and N more"
_USES_SHOWN = 5  # files named for one bad or missing blob before "and N more files"


def _require_hub(data_dir: Path) -> Path:
    db_path = Path(data_dir) / "hub.sqlite"
    if not db_path.is_file():
        raise HubError(f"{data_dir} is not a local hub data folder (no hub.sqlite): check --data.")
    return db_path


def _read_only(db_path: Path) -> sqlite3.Connection:
    try:
        return open_read_only(db_path)
    except SchemaError as error:
        raise HubError(str(error)) from None


def _blob_files(blobs_dir: Path) -> tuple[dict[str, Path], list[Path]]:
    """sha256 -> path of every blob on disk, and the files that are not blobs by their name."""
    blobs: dict[str, Path] = {}
    strays: list[Path] = []
    for path in sorted(blobs_dir.rglob("*")):
        if path.is_dir():
            continue
        relative = path.relative_to(blobs_dir).parts
        name = "".join(relative)
        if len(relative) == 2 and len(relative[0]) == 2 and _SHA256.fullmatch(name):
            blobs[name] = path
        else:
            strays.append(path)
    return blobs, strays


def _hash_file(path: Path, *, git: bool = False) -> tuple[str, int, str | None]:
    """(sha256, size, git blob oid when asked) of a file, read in chunks."""
    sha256 = hashlib.sha256()
    size = path.stat().st_size
    git_hash = hashlib.sha1(b"blob %d\0" % size) if git else None
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            sha256.update(chunk)
            if git_hash is not None:
                git_hash.update(chunk)
    return sha256.hexdigest(), size, git_hash.hexdigest() if git_hash is not None else None


def _limited(lines: list[str]) -> list[str]:
    if len(lines) <= _MAX_LISTED:
        return lines
    return lines[:_MAX_LISTED] + [f"... and {len(lines) - _MAX_LISTED} more like these"]


# ---- fsck --------------------------------------------------------------------------------------


@dataclass
class FsckReport:
    repos: int = 0
    commits: int = 0
    blobs: int = 0
    blob_bytes: int = 0
    problems: list[str] = field(default_factory=list)
    unreferenced_blobs: int = 0
    unreferenced_bytes: int = 0
    temp_files: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def fsck(data_dir: Path) -> FsckReport:
    """Check every blob against its sha256 and every commit's files against the blobs. Changes nothing."""
    data_dir = Path(data_dir)
    report = FsckReport()
    with closing(_read_only(_require_hub(data_dir))) as db:
        db.execute("BEGIN")  # one snapshot for every query below
        report.repos = db.execute("SELECT COUNT(*) FROM repos").fetchone()[0]
        commits = db.execute("SELECT seq, oid, repo_type, repo_id, parent FROM commits").fetchall()
        uses = db.execute(
            "SELECT f.sha256, f.size, f.git_oid, f.lfs, f.path, c.repo_type, c.repo_id, c.oid "
            "FROM files f JOIN commits c ON c.seq = f.commit_seq WHERE f.deleted = 0"
        ).fetchall()
        missing_bases = db.execute(
            "SELECT c.repo_type, c.repo_id, c.oid, c.base_seq FROM commits c WHERE c.base_seq IS NOT NULL "
            "AND c.base_seq NOT IN (SELECT seq FROM commits)"
        ).fetchall()
        orphan_rows = db.execute(
            "SELECT COUNT(*) FROM files WHERE commit_seq NOT IN (SELECT seq FROM commits)").fetchone()[0]
        refs = db.execute("SELECT repo_type, repo_id, kind, name, commit_oid FROM refs").fetchall()
        repos = set(db.execute("SELECT repo_type, repo_id FROM repos").fetchall())
        db.execute("COMMIT")
    report.commits = len(commits)

    # The database's own links: refs -> commits, commits -> parents and repos.
    commit_repo = {oid: (repo_type, repo_id) for _, oid, repo_type, repo_id, _ in commits}
    problems: list[str] = []
    for repo_type, repo_id, kind, name, commit_oid in refs:
        if commit_repo.get(commit_oid) != (repo_type, repo_id):
            problems.append(f"{repo_type} {repo_id}: {kind} {name} points at commit {commit_oid}, which is not stored.")
    for _, oid, repo_type, repo_id, parent in commits:
        if (repo_type, repo_id) not in repos:
            problems.append(f"commit {oid} belongs to {repo_type} {repo_id}, which does not exist.")
        elif parent is not None and commit_repo.get(parent) != (repo_type, repo_id):
            problems.append(f"{repo_type} {repo_id}: commit {oid} has parent {parent}, which is not stored.")
    for repo_type, repo_id, oid, base_seq in missing_bases:
        problems.append(f"{repo_type} {repo_id}: commit {oid} is stored over base commit #{base_seq}, which is gone.")
    if orphan_rows:
        problems.append(f"{orphan_rows} file rows belong to no commit.")

    # Every commit's files against the blobs; a bad or missing blob is named with every file that uses it.
    heads: dict[str, list[str]] = defaultdict(list)
    for _, _, _, name, commit_oid in refs:
        heads[commit_oid].append(name)

    def where(repo_type: str, repo_id: str, commit_oid: str, file_path: str) -> str:
        names = f" ({', '.join(sorted(heads[commit_oid]))})" if heads.get(commit_oid) else ""
        return f"{repo_type} {repo_id}@{commit_oid[:7]}{names} {file_path}"

    def users(entries: list[tuple]) -> str:
        shown = [where(e[5], e[6], e[7], e[4]) for e in entries[:_USES_SHOWN]]
        more = f" and {len(entries) - _USES_SHOWN} more files" if len(entries) > _USES_SHOWN else ""
        return "; ".join(shown) + more

    blobs, strays = _blob_files(data_dir / "blobs")
    used_by: dict[str, list[tuple]] = defaultdict(list)
    for use in uses:
        used_by[use[0]].append(use)
    git_checked = {sha for sha, entries in used_by.items() if any(not entry[3] for entry in entries)}
    missing, corrupt, mismatched = [], [], []
    for sha256, path in blobs.items():
        actual, size, git_oid = _hash_file(path, git=sha256 in git_checked)
        report.blobs += 1
        report.blob_bytes += size
        if actual != sha256:
            used = f"; used by {users(used_by[sha256])}" if sha256 in used_by else "; used by no commit"
            corrupt.append(f"blob {sha256} is corrupt: its content hashes to {actual}{used}.")
            continue
        if sha256 not in used_by:
            report.unreferenced_blobs += 1
            report.unreferenced_bytes += size
            continue
        for _, expected_size, expected_git, lfs, file_path, repo_type, repo_id, commit_oid in used_by[sha256]:
            place = where(repo_type, repo_id, commit_oid, file_path)
            if size != expected_size:
                mismatched.append(f"{place}: the commit says {expected_size} bytes, its blob {sha256} has {size}.")
            elif (git_blob_oid(lfs_pointer(sha256, size)) if lfs else git_oid) != expected_git:
                mismatched.append(f"{place}: its git oid {expected_git} does not match its content.")
    quarantined = data_dir / "quarantine"
    for sha256, entries in used_by.items():
        if sha256 not in blobs:
            why = " (set aside in quarantine/ after it failed its check on a read)" if (
                quarantined / sha256).exists() else ""
            first = entries[0]
            more = f"; also used by {users(entries[1:])}" if len(entries) > 1 else ""
            missing.append(f"{where(first[5], first[6], first[7], first[4])}: blob {sha256} is missing{why}{more}.")
    for kind in (missing, corrupt, mismatched, problems):
        report.problems.extend(_limited(kind))
    report.problems.extend(_limited([f"unexpected file in blobs/: {path.relative_to(data_dir)}" for path in strays]))
    tmp_dir = data_dir / "tmp"
    report.temp_files = sum(1 for _ in tmp_dir.iterdir()) if tmp_dir.is_dir() else 0
    return report


# ---- gc ----------------------------------------------------------------------------------------


@dataclass
class GcResult:
    removed_blobs: int
    freed_bytes: int
    kept_blobs: int
    temp_files_removed: int


def gc(data_dir: Path, *, dry_run: bool = False) -> GcResult:
    """Remove the blobs no commit names (with no server running: it takes the server's lock)."""
    from hubtools.localhub.server import lock_data_dir

    data_dir = Path(data_dir)
    db_path = _require_hub(data_dir)
    lock = lock_data_dir(data_dir, doing="collect garbage (it may be receiving blobs a commit is about to name)")
    try:
        with closing(_read_only(db_path)) as db:
            referenced = {row[0] for row in db.execute("SELECT DISTINCT sha256 FROM files WHERE deleted = 0")}
        blobs, _ = _blob_files(data_dir / "blobs")
        removed = freed = 0
        for sha256, path in blobs.items():
            if sha256 in referenced:
                continue
            removed += 1
            freed += path.stat().st_size
            if not dry_run:
                path.unlink()
                try:
                    path.parent.rmdir()  # the shard folder, once empty
                except OSError:
                    pass
        temp_files = [path for path in (data_dir / "tmp").glob("*") if path.is_file()]
        if not dry_run:
            for path in temp_files:
                path.unlink()
        return GcResult(removed, freed, len(blobs) - removed, len(temp_files))
    finally:
        lock.release()


# ---- backup ------------------------------------------------------------------------------------


@dataclass
class BackupResult:
    repos: int
    commits: int
    blobs: int
    blob_bytes: int


def backup(data_dir: Path, destination: Path) -> BackupResult:
    """Copy a (possibly running) hub to ``destination``, a new or empty folder; a hub served from it
    serves the same repos."""
    data_dir, destination = Path(data_dir), Path(destination)
    db_path = _require_hub(data_dir)
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise HubError(f"{destination} exists and is not an empty folder: back up into a new folder.")
    if destination.resolve().is_relative_to(data_dir.resolve()):
        raise HubError(f"{destination} is inside the hub's data folder: back up somewhere else.")
    destination.mkdir(parents=True, exist_ok=True)
    partial = destination / "hub.sqlite.partial"
    with closing(_read_only(db_path)) as source, closing(sqlite3.connect(partial, isolation_level=None)) as copy:
        source.backup(copy)  # all pages in one step: one consistent snapshot, even while commits happen
        copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file; the server turns WAL back on
        repos = copy.execute("SELECT COUNT(*) FROM repos").fetchone()[0]
        commits = copy.execute("SELECT COUNT(*) FROM commits").fetchone()[0]
        wanted = copy.execute(
            "SELECT sha256, MAX(size) FROM files WHERE deleted = 0 GROUP BY sha256").fetchall()
    blob_bytes = 0
    for sha256, size in wanted:
        blob_bytes += _copy_blob(data_dir, destination, sha256, size)
    _copy_xorbs(data_dir, destination)
    (destination / "tmp").mkdir(exist_ok=True)
    os.replace(partial, destination / "hub.sqlite")
    return BackupResult(repos, commits, len(wanted), blob_bytes)


def _copy_xorbs(data_dir: Path, destination: Path) -> None:
    """Xet xorbs are kept (never collected) because the clients remember what they uploaded and later send
    only a shard naming those xorbs: a restored hub must still hold them. Each is checked against its name."""
    from hubtools.localhub.xet.format import XetFormatError, verified_xorb

    source_dir = data_dir / "xet" / "xorbs"
    if not source_dir.is_dir():
        return
    for source in sorted(source_dir.rglob("*")):
        if not source.is_file() or source.name.endswith(".partial"):
            continue
        body = source.read_bytes()
        try:
            verified_xorb(body, source.name)
        except XetFormatError:
            raise HubError(f"The hub's xorb {source.name} is corrupt: run `hubtools hub fsck`; the backup is incomplete.") from None
        _write_durably(destination / source.relative_to(data_dir), [body])


def _copy_blob(data_dir: Path, destination: Path, sha256: str, size: int) -> int:
    relative = Path("blobs") / sha256[:2] / sha256[2:]
    digest = hashlib.sha256()

    def chunks() -> Iterator[bytes]:
        with (data_dir / relative).open("rb") as reader:
            while chunk := reader.read(_CHUNK):
                digest.update(chunk)
                yield chunk

    def intact(temp: Path) -> None:
        if digest.hexdigest() != sha256 or temp.stat().st_size != size:
            raise HubError(f"The hub's blob {sha256} is corrupt: run `hubtools hub fsck`; the backup is incomplete.")

    try:
        _write_durably(destination / relative, chunks(), check=intact)
    except FileNotFoundError:
        raise HubError(f"The hub's blob {sha256} is missing: run `hubtools hub fsck`; the backup is incomplete.") from None
    return size


def _write_durably(target: Path, chunks: Iterable[bytes], *, check: Callable[[Path], None] | None = None) -> None:
    """``chunks`` into ``target.partial`` (folders 0700), on disk before it is renamed over ``target``: a backup
    interrupted midway leaves ``.partial`` files, never a short blob under its real name. ``check(temp)`` may
    refuse the written file (it raises); the partial file is removed then."""
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temp = target.with_name(target.name + ".partial")
    try:
        with temp.open("wb") as writer:
            for chunk in chunks:
                writer.write(chunk)
            writer.flush()
            os.fsync(writer.fileno())
        if check is not None:
            check(temp)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    os.replace(temp, target)
