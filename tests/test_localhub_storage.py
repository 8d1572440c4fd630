"""The local hub's storage: per-commit file tables, the migration of the first (JSON-tree) layout, short
commit ids, and commits that leave older commits untouched. Driven through the stock client."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import uuid

import pytest
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError

from hubtools.localhub import serve_in_background
from hubtools.localhub.schema import SCHEMA_VERSION
from hubtools.localhub.storage import DEFAULT_GITATTRIBUTES, git_blob_oid

TOKEN = "storage-test-token"

_V1_SCHEMA = """
CREATE TABLE repos (
    repo_type TEXT NOT NULL, repo_id TEXT NOT NULL, owner TEXT NOT NULL, private INTEGER NOT NULL,
    created_at TEXT NOT NULL, likes INTEGER NOT NULL DEFAULT 0, downloads INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (repo_type, repo_id)
);
CREATE TABLE commits (
    oid TEXT PRIMARY KEY, repo_type TEXT NOT NULL, repo_id TEXT NOT NULL, parent TEXT,
    title TEXT NOT NULL, message TEXT NOT NULL, author TEXT NOT NULL, date TEXT NOT NULL, tree TEXT NOT NULL
);
CREATE INDEX commits_by_repo ON commits (repo_type, repo_id);
CREATE TABLE refs (
    repo_type TEXT NOT NULL, repo_id TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL,
    commit_oid TEXT NOT NULL, PRIMARY KEY (repo_type, repo_id, kind, name)
);
"""


def _write_v1_data_folder(data) -> tuple[str, str]:
    """A data folder as the first layout wrote it: one repo, two commits, trees as JSON."""
    import hashlib

    blobs = {}
    for content in (DEFAULT_GITATTRIBUTES.encode(), b"old weights\n"):
        sha = hashlib.sha256(content).hexdigest()
        (data / "blobs" / sha[:2]).mkdir(parents=True, exist_ok=True)
        (data / "blobs" / sha[:2] / sha[2:]).write_bytes(content)
        blobs[content] = [sha, len(content), git_blob_oid(content), False]
    first = {".gitattributes": blobs[DEFAULT_GITATTRIBUTES.encode()]}
    second = {**first, "nested/notes.txt": blobs[b"old weights\n"]}
    db = sqlite3.connect(data / "hub.sqlite")
    db.executescript(_V1_SCHEMA)
    db.execute("INSERT INTO repos VALUES ('model', 'alice/old', 'alice', 0, '2026-01-01T00:00:00.000Z', 3, 4)")
    db.execute("INSERT INTO commits VALUES ('a' * 40, 'model', 'alice/old', NULL, 'initial commit', '', 'alice', "
               "'2026-01-01T00:00:00.000Z', ?)".replace("'a' * 40", f"'{'a' * 40}'"), (json.dumps(first),))
    db.execute("INSERT INTO commits VALUES (?, 'model', 'alice/old', ?, 'add notes', '', 'alice', "
               "'2026-01-02T00:00:00.000Z', ?)", ("b" * 40, "a" * 40, json.dumps(second)))
    db.execute("INSERT INTO refs VALUES ('model', 'alice/old', 'branch', 'main', ?)", ("b" * 40,))
    db.commit()
    db.close()
    return "a" * 40, "b" * 40


def test_a_first_layout_data_folder_is_migrated_on_open(tmp_path):
    data = tmp_path / "old-hub"
    first, second = _write_v1_data_folder(data)
    with serve_in_background(data, tokens={"alice": TOKEN}) as hub:
        api = HfApi(endpoint=hub.url, token=TOKEN)
        info = api.model_info("alice/old")
        assert info.sha == second and info.likes == 3 and info.downloads == 4
        assert api.list_repo_files("alice/old") == [".gitattributes", "nested/notes.txt"]
        assert api.list_repo_files("alice/old", revision=first) == [".gitattributes"]
        path = hf_hub_download("alice/old", "nested/notes.txt", endpoint=hub.url, token=TOKEN,
                               cache_dir=tmp_path / "cache")
        assert open(path, "rb").read() == b"old weights\n"
        api.upload_file(path_or_fileobj=b"new\n", path_in_repo="new.txt", repo_id="alice/old")
        assert [c.commit_id for c in api.list_repo_commits("alice/old")][1:] == [second, first]
    db = sqlite3.connect(data / "hub.sqlite")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert "tree" not in {row[1] for row in db.execute("PRAGMA table_info(commits)")}


def test_a_data_folder_of_a_newer_layout_is_refused_in_one_line(tmp_path):
    data = tmp_path / "future-hub"
    data.mkdir()
    db = sqlite3.connect(data / "hub.sqlite")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    result = subprocess.run([sys.executable, "-m", "hubtools", "hub", "serve", "--data", str(data), "--token", f"alice={TOKEN}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "newer hubtools" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.fixture
def repo_id(api, local_hub) -> str:
    repo_id = f"{local_hub.user}/storage-{uuid.uuid4().hex[:8]}"
    api.create_repo(repo_id)
    return repo_id


def test_short_commit_ids_work_as_revisions_and_parent_commits(api, local_hub, repo_id):
    first = api.upload_file(path_or_fileobj=b"one\n", path_in_repo="a.txt", repo_id=repo_id).oid
    api.upload_file(path_or_fileobj=b"two\n", path_in_repo="a.txt", repo_id=repo_id)
    path = hf_hub_download(repo_id, "a.txt", revision=first[:7], endpoint=local_hub.url, token=local_hub.token)
    assert open(path, "rb").read() == b"one\n"
    assert api.model_info(repo_id, revision=first[:10]).sha == first
    head = api.model_info(repo_id).sha
    api.create_commit(repo_id, operations=[CommitOperationAdd("b.txt", b"b\n")], commit_message="short parent",
                      parent_commit=head[:7])
    with pytest.raises(HfHubHTTPError) as caught:
        api.create_commit(repo_id, operations=[CommitOperationAdd("c.txt", b"c\n")], commit_message="stale",
                          parent_commit=head[:7])
    assert caught.value.response.status_code == 412


def test_every_commit_keeps_its_own_file_list(api, local_hub, repo_id):
    operations = [CommitOperationAdd(f"data/{i // 10}/f{i}.txt", f"{i}\n".encode()) for i in range(40)]
    big = api.create_commit(repo_id, operations=operations, commit_message="forty").oid
    api.create_commit(repo_id, operations=[CommitOperationDelete("data/1/"), CommitOperationAdd("data/x.txt", b"x")],
                      commit_message="change")
    files_then = api.list_repo_files(repo_id, revision=big)
    files_now = api.list_repo_files(repo_id)
    assert len(files_then) == 41 and "data/1/f10.txt" in files_then and "data/x.txt" not in files_then
    assert len(files_now) == 32 and "data/x.txt" in files_now and not any(f.startswith("data/1/") for f in files_now)
    top = [entry.path for entry in api.list_repo_tree(repo_id, path_in_repo="data")]
    assert top == ["data/0", "data/2", "data/3", "data/x.txt"]
    nested = [entry.path for entry in api.list_repo_tree(repo_id, path_in_repo="data", recursive=True)]
    assert len(nested) == 3 + 30 + 1
    with pytest.raises(HfHubHTTPError) as caught:  # a file where a folder is
        api.create_commit(repo_id, operations=[CommitOperationAdd("data/2", b"clash")], commit_message="clash")
    assert caught.value.response.status_code == 409
    assert api.list_repo_files(repo_id) == files_now


def test_trees_stay_right_across_change_sets_and_whole_tree_rewrites(tmp_path):
    """Random commits (adds, overwrites, deletes, folder deletes) on two branches, checked against a plain
    dict after every commit, old commits included; enough changes to pass ``delta_limit`` several times."""
    import random

    from hubtools.localhub.storage import AddFile, DeleteFile, DeleteFolder, FileEntry, Storage
    from hubtools.localhub.trees import delta_limit

    storage = Storage(tmp_path / "hub")
    storage.create_repo("model", "alice/r", "alice", False)
    rng = random.Random(0)
    blobs = []
    for index in range(5):
        content = f"blob {index}\n".encode()
        blobs.append(FileEntry(storage.blobs.put_bytes(content), len(content), git_blob_oid(content), False))
    initial, _ = storage.resolve("model", "alice/r", "main")
    expected = {initial.oid: dict(initial.tree.items())}
    heads = {"main": initial.oid}
    storage.create_ref("model", "alice/r", "branch", "side", initial.oid)
    heads["side"] = initial.oid
    for step in range(60):
        branch = "main" if step % 3 else "side"
        model = dict(expected[heads[branch]])
        operations = []
        for _ in range(rng.randint(1, 60)):
            roll = rng.random()
            existing = sorted(p for p in model if p != ".gitattributes")
            if roll < 0.9 or not existing:
                path = f"d{rng.randint(0, 5)}/f{rng.randint(0, 199)}.txt"
                entry = rng.choice(blobs)
                operations.append(AddFile(path, entry))
                model[path] = entry
            elif roll < 0.99:
                path = rng.choice(existing)
                operations.append(DeleteFile(path))
                del model[path]
            else:
                folder = rng.choice(existing).split("/")[0]
                operations.append(DeleteFolder(folder))
                model = {p: e for p, e in model.items() if not p.startswith(folder + "/")}
        oid = storage.commit("model", "alice/r", branch, operations, title=f"step {step}", message="", author="alice")
        heads[branch] = oid
        expected[oid] = model
        for checked in (expected if step % 10 == 9 else [oid]):  # old commits too, now and then
            tree_model = expected[checked]
            commit = storage.get_commit("model", "alice/r", checked)
            assert dict(commit.tree.items()) == tree_model
            assert len(commit.tree) == len(tree_model)
            assert commit.tree.folders() == sorted({p.rsplit("/", 1)[0] for p in tree_model if "/" in p})
        for path in ("d0/f1.txt", "d5/f60.txt", "nope.txt"):
            assert storage.get_commit("model", "alice/r", oid).tree.get(path) == model.get(path)
    rows = storage.db.connect().execute("SELECT COUNT(*) FROM files").fetchone()[0]
    whole_trees = storage.db.connect().execute("SELECT COUNT(*) FROM commits WHERE base_seq IS NULL").fetchone()[0]
    assert whole_trees >= 2  # the limit was passed: some commits wrote the whole tree again
    assert rows < sum(len(model) for model in expected.values())  # and most wrote only their changes
    assert delta_limit(10_000) == 400
