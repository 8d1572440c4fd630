"""The local hub's store looks after itself: leftovers of a killed upload are swept on start, `hubtools hub
fsck` checks everything and changes nothing, `hubtools hub gc` frees only unreferenced blobs, and
`hubtools hub backup` copies a running hub into a folder another hub serves. Commands run as a user runs
them (subprocesses); the clients are the stock `huggingface_hub`.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.hf_api import RepoFile

from hubtools.localhub import serve_in_background
from hubtools.localhub.storage import git_blob_oid

ALICE = "alice-upkeep-token"


def _hubtools(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hubtools", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def _serve(data: Path, tokens_file: Path) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "hubtools", "hub", "serve", "--data", str(data), "--port", "0",
         "--tokens-file", str(tokens_file)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=data.parent,
    )
    url = process.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:"), process.stderr.read() if not url else url
    return process, url


def _blob(data: Path, content: bytes) -> Path:
    sha256 = hashlib.sha256(content).hexdigest()
    return data / "blobs" / sha256[:2] / sha256[2:]


def test_killed_mid_upload_restarts_clean_and_fsck_agrees(tmp_path):
    data = tmp_path / "data"
    tokens_file = tmp_path / "tokens.txt"
    tokens_file.write_text(f"alice={ALICE} write\n")
    tokens_file.chmod(0o600)
    weights = os.urandom(50_000)
    big = os.urandom(3 * 1024 * 1024)
    big_sha = hashlib.sha256(big).hexdigest()

    process, url = _serve(data, tokens_file)
    api = HfApi(endpoint=url, token=ALICE)
    try:
        api.create_repo("alice/model")
        api.upload_file(path_or_fileobj=weights, path_in_repo="w.safetensors", repo_id="alice/model")
        # An LFS upload that stops after its first megabyte, as a client on a slow link would be cut off.
        batch = httpx.post(f"{url}/alice/model.git/info/lfs/objects/batch",
                           headers={"Authorization": f"Bearer {ALICE}"},
                           json={"operation": "upload", "objects": [{"oid": big_sha, "size": len(big)}]})
        href = batch.json()["objects"][0]["actions"]["upload"]["href"]
        release = threading.Event()

        def body():
            yield big[: 1024 * 1024]
            release.wait(60)

        def upload():
            try:
                httpx.put(href, content=body(), headers={"Content-Length": str(len(big))}, timeout=60)
            except Exception:  # noqa: BLE001 - the server dies under it, then the body stops short
                pass

        uploader = threading.Thread(target=upload, daemon=True)
        uploader.start()
        deadline = time.monotonic() + 60
        while not any(path.stat().st_size > 0 for path in (data / "tmp").iterdir()):
            assert time.monotonic() < deadline, "the upload never reached the server's temp folder"
            time.sleep(0.05)
    finally:
        process.kill()  # SIGKILL: no clean-up of any kind
        process.communicate()
        release.set()
    assert list((data / "tmp").iterdir()), "the killed upload should have left its temp file"

    process, url = _serve(data, tokens_file)
    try:
        assert list((data / "tmp").iterdir()) == []  # swept on start
        fsck = _hubtools("hub", "fsck", "--data", str(data), cwd=tmp_path)
        assert fsck.returncode == 0 and "no problems found" in fsck.stdout, fsck.stdout + fsck.stderr
        api = HfApi(endpoint=url, token=ALICE)
        local = api.hf_hub_download("alice/model", "w.safetensors", cache_dir=tmp_path / "cache")
        assert Path(local).read_bytes() == weights
        api.upload_file(path_or_fileobj=big, path_in_repo="big.safetensors", repo_id="alice/model")  # the retry
        local = api.hf_hub_download("alice/model", "big.safetensors", cache_dir=tmp_path / "cache")
        assert Path(local).read_bytes() == big
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    fsck = _hubtools("hub", "fsck", "--data", str(data), cwd=tmp_path)
    assert fsck.returncode == 0 and "checked 1 repos, 3 commits, 3 blobs" in fsck.stdout, fsck.stdout


def test_gc_after_deleting_a_repo_frees_its_blobs_and_keeps_every_other_repo_whole(tmp_path):
    data = tmp_path / "data"
    gone_only, shared, old_weights, new_weights, dev_only = (os.urandom(20_000) for _ in range(5))
    with serve_in_background(data, tokens={"alice": ALICE}) as hub:
        api = HfApi(endpoint=hub.url, token=ALICE)
        api.create_repo("alice/gone")
        api.create_commit("alice/gone", [CommitOperationAdd("only.safetensors", gone_only),
                                         CommitOperationAdd("shared.safetensors", shared),
                                         CommitOperationAdd("README.md", b"# a repo about to go\n")],
                          commit_message="gone")
        api.create_repo("alice/kept", repo_type="dataset")
        api.create_commit("alice/kept", [CommitOperationAdd("shared.safetensors", shared),
                                         CommitOperationAdd("w.safetensors", old_weights)],
                          commit_message="first", repo_type="dataset")
        api.upload_file(path_or_fileobj=new_weights, path_in_repo="w.safetensors", repo_id="alice/kept",
                        repo_type="dataset")  # old_weights now only in the history
        api.create_branch("alice/kept", branch="dev", repo_type="dataset")
        api.upload_file(path_or_fileobj=dev_only, path_in_repo="dev.bin", repo_id="alice/kept",
                        repo_type="dataset", revision="dev")
        api.create_tag("alice/kept", tag="v1", repo_type="dataset")
        api.delete_file("shared.safetensors", "alice/kept", repo_type="dataset")  # only in the history now
        api.delete_repo("alice/gone")
        running = _hubtools("hub", "gc", "--data", str(data), cwd=tmp_path)
        assert running.returncode == 2 and "stop it first" in running.stderr  # never beside a live server

    dry = _hubtools("hub", "gc", "--dry-run", "--data", str(data), cwd=tmp_path)
    assert dry.returncode == 0 and dry.stdout.startswith("would remove 2 blobs"), dry.stdout
    assert _blob(data, gone_only).is_file()
    result = _hubtools("hub", "gc", "--data", str(data), cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("removed 2 blobs (20"), result.stdout
    assert not _blob(data, gone_only).exists() and not _blob(data, b"# a repo about to go\n").exists()
    for kept in (shared, old_weights, new_weights, dev_only):
        assert _blob(data, kept).is_file()
    again = _hubtools("hub", "gc", "--data", str(data), cwd=tmp_path)
    assert again.stdout.startswith("removed 0 blobs")
    fsck = _hubtools("hub", "fsck", "--data", str(data), cwd=tmp_path)
    assert fsck.returncode == 0 and "no problems found" in fsck.stdout, fsck.stdout

    with serve_in_background(data) as hub:
        api = HfApi(endpoint=hub.url)
        commits = api.list_repo_commits("alice/kept", repo_type="dataset")
        commits += api.list_repo_commits("alice/kept", repo_type="dataset", revision="dev")
        checked = sum(_check_every_file_of(api, "alice/kept", commit.commit_id, tmp_path) for commit in commits)
        assert checked >= 10
        first = next(commit.commit_id for commit in commits if commit.title == "first")
        old = api.hf_hub_download("alice/kept", "w.safetensors", repo_type="dataset", revision=first,
                                  cache_dir=tmp_path / "cache")
        assert Path(old).read_bytes() == old_weights


def _check_every_file_of(api: HfApi, repo_id: str, revision: str, tmp_path: Path) -> int:
    checked = 0
    for item in api.list_repo_tree(repo_id, revision=revision, recursive=True, repo_type="dataset"):
        if isinstance(item, RepoFile):
            local = api.hf_hub_download(repo_id, item.path, revision=revision, repo_type="dataset",
                                        cache_dir=tmp_path / "cache")
            content = Path(local).read_bytes()
            if item.lfs is not None:
                assert hashlib.sha256(content).hexdigest() == item.lfs.sha256
            else:
                assert git_blob_oid(content) == item.blob_id
            checked += 1
    return checked


def test_fsck_reports_a_corrupt_and_a_missing_blob_and_changes_nothing(tmp_path):
    data = tmp_path / "data"
    first, second = os.urandom(10_000), os.urandom(10_000)
    with serve_in_background(data, tokens={"alice": ALICE}) as hub:
        api = HfApi(endpoint=hub.url, token=ALICE)
        api.create_repo("alice/m")
        api.upload_file(path_or_fileobj=first, path_in_repo="a.safetensors", repo_id="alice/m")
        api.upload_file(path_or_fileobj=second, path_in_repo="b.safetensors", repo_id="alice/m")
        api.delete_file(".gitattributes", "alice/m")  # a file of the base tree: a deletion marker row
    corrupted = _blob(data, first)
    corrupted.write_bytes(b"X" + first[1:])
    _blob(data, second).unlink()
    before = {path: path.read_bytes() for path in data.rglob("*") if path.is_file()}

    result = _hubtools("hub", "fsck", "--data", str(data), cwd=tmp_path)
    assert result.returncode == 1
    assert f"problem: blob {hashlib.sha256(first).hexdigest()} is corrupt" in result.stdout
    assert f"b.safetensors: blob {hashlib.sha256(second).hexdigest()} is missing" in result.stdout
    assert "2 problem(s) found" in result.stderr
    after = {path: path.read_bytes() for path in data.rglob("*") if path.is_file() and path.name != "hub.sqlite-shm"}
    assert {path: content for path, content in before.items() if path.name != "hub.sqlite-shm"} == after


def test_backup_during_concurrent_commits_serves_every_commit_it_holds_whole(tmp_path):
    data, copy = tmp_path / "data", tmp_path / "backup"

    def content(i: int) -> dict[str, bytes]:
        return {f"notes/{i}.txt": f"commit {i}\n".encode(), f"weights/{i}.safetensors": bytes([i % 256]) * 30_000}

    done: list[int] = []
    stop = threading.Event()
    with serve_in_background(data, tokens={"alice": ALICE}) as hub:
        api = HfApi(endpoint=hub.url, token=ALICE)
        api.create_repo("alice/busy")

        def committer():
            i = 0
            while not stop.is_set():
                api.create_commit("alice/busy", [CommitOperationAdd(path, body) for path, body in content(i).items()],
                                  commit_message=f"commit {i}")
                done.append(i)
                i += 1

        thread = threading.Thread(target=committer, daemon=True)
        thread.start()
        while len(done) < 3:
            time.sleep(0.05)
        result = _hubtools("hub", "backup", str(copy), "--data", str(data), cwd=tmp_path)
        during = len(done)
        while len(done) < during + 2:  # commits go on after the snapshot
            time.sleep(0.05)
        stop.set()
        thread.join(timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("backed up 1 repos, "), result.stdout

    fsck = _hubtools("hub", "fsck", "--data", str(copy), cwd=tmp_path)
    assert fsck.returncode == 0 and "no problems found" in fsck.stdout, fsck.stdout
    with serve_in_background(copy) as hub:
        api = HfApi(endpoint=hub.url)
        commits = api.list_repo_commits("alice/busy")
        numbered = [commit for commit in commits if commit.title.startswith("commit ")]
        assert 3 <= len(numbered) < len(done)
        for commit in numbered:
            upto = int(commit.title.split()[1])
            files = set(api.list_repo_files("alice/busy", revision=commit.commit_id))
            expected = {path: body for i in range(upto + 1) for path, body in content(i).items()}
            assert files == {".gitattributes", *expected}
            for path in (f"notes/{upto}.txt", f"weights/{upto}.safetensors", "weights/0.safetensors"):
                local = api.hf_hub_download("alice/busy", path, revision=commit.commit_id, cache_dir=tmp_path / "c")
                assert Path(local).read_bytes() == expected[path]


def test_backup_of_a_damaged_or_missing_blob_stops_with_one_line_and_leaves_no_blob_under_its_name(tmp_path):
    data = tmp_path / "data"
    weights, notes = os.urandom(40_000), b"notes\n"
    with serve_in_background(data, tokens={"alice": ALICE}) as hub:
        api = HfApi(endpoint=hub.url, token=ALICE)
        api.create_repo("alice/damaged")
        api.create_commit("alice/damaged", [CommitOperationAdd("w.safetensors", weights),
                                            CommitOperationAdd("notes.txt", notes)], commit_message="add")
    stored = _blob(data, weights)
    stored.write_bytes(weights[:-1] + bytes([weights[-1] ^ 1]))  # one bit flipped on disk

    copy = tmp_path / "backup"
    result = _hubtools("hub", "backup", str(copy), "--data", str(data), cwd=tmp_path)
    sha256 = hashlib.sha256(weights).hexdigest()
    assert result.returncode != 0
    assert f"The hub's blob {sha256} is corrupt: run `hubtools hub fsck`" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    copied = {path.relative_to(copy).as_posix() for path in copy.rglob("*") if path.is_file()}
    assert f"blobs/{sha256[:2]}/{sha256[2:]}" not in copied
    assert not any(p.startswith("blobs/") and p.endswith(".partial") for p in copied)
    assert "hub.sqlite" not in copied  # only hub.sqlite.partial: the copy never looks like a finished backup

    stored.unlink()
    again = _hubtools("hub", "backup", str(tmp_path / "backup2"), "--data", str(data), cwd=tmp_path)
    assert again.returncode != 0 and f"The hub's blob {sha256} is missing" in again.stderr, again.stderr
    assert not list((tmp_path / "backup2" / "blobs").rglob("*.partial"))
