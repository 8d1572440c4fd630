"""Auth, privacy and bad input: every case gets a clean 4xx and nothing outside the data folder is touched."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import threading
import uuid
from pathlib import Path

import httpx
import pytest
from huggingface_hub import HfApi

from hubtools.localhub import HubSettings, serve_in_background

ALICE, BOB = "alice-token-1", "bob-token-2"
MAX_JSON = 64 * 1024
MAX_COMMIT = 256 * 1024


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sandbox")


@pytest.fixture(scope="module")
def hub(sandbox):
    settings = HubSettings(max_json_body=MAX_JSON, max_commit_body=MAX_COMMIT)
    with serve_in_background(sandbox / "data", tokens={"alice": ALICE, "bob": BOB}, settings=settings) as running:
        yield running


@pytest.fixture(autouse=True)
def nothing_outside_the_data_folder(sandbox, hub):
    cwd_before = set(os.listdir(os.getcwd()))
    yield
    assert sorted(os.listdir(sandbox)) == ["data"]
    assert set(os.listdir(os.getcwd())) == cwd_before
    for path in sandbox.rglob("*"):
        assert "evil" not in path.name and "passwd" not in path.name
    for path in (sandbox / "data" / "blobs").rglob("*"):
        relative = path.relative_to(sandbox / "data" / "blobs").as_posix().replace("/", "")
        assert all(c in "0123456789abcdef" for c in relative), path


@pytest.fixture
def client(hub):
    with httpx.Client(base_url=hub.url, timeout=30) as http:
        yield http


@pytest.fixture
def repo(hub) -> str:
    repo_id = f"alice/r-{uuid.uuid4().hex[:8]}"
    api = HfApi(endpoint=hub.url, token=ALICE)
    api.create_repo(repo_id)
    api.upload_file(path_or_fileobj=b"keep me", path_in_repo="keep.txt", repo_id=repo_id)
    return repo_id


def auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def ndjson(*items: dict) -> bytes:
    return b"".join(json.dumps(item).encode() + b"\n" for item in items)


HEADER = {"key": "header", "value": {"summary": "test"}}


def post_commit(client, repo_id: str, body: bytes, token: str = ALICE) -> httpx.Response:
    return client.post(f"/api/models/{repo_id}/commit/main", content=body,
                       headers={**auth(token), "content-type": "application/x-ndjson"})


def files_of(hub, repo_id: str) -> list[str]:
    return sorted(HfApi(endpoint=hub.url, token=ALICE).list_repo_files(repo_id))


def test_writes_need_a_valid_token(client, repo):
    body = {"name": f"x-{uuid.uuid4().hex[:6]}", "organization": "alice"}
    assert client.post("/api/repos/create", json=body).status_code == 401
    assert client.post("/api/repos/create", json=body, headers=auth("wrong")).status_code == 401
    commit = ndjson(HEADER, {"key": "file", "value": {"path": "a.txt", "content": "YQ==", "encoding": "base64"}})
    assert client.post(f"/api/models/{repo}/commit/main", content=commit).status_code == 401
    assert client.post(f"/api/models/{repo}/preupload/main", json={"files": []}).status_code == 401
    batch = {"operation": "upload", "objects": [{"oid": "0" * 64, "size": 1}]}
    assert client.post(f"/{repo}.git/info/lfs/objects/batch", json=batch).status_code == 401
    response = client.get("/api/whoami-v2", headers=auth("wrong"))
    assert response.status_code == 401 and "wrong" not in response.text


def test_another_users_namespace_is_403(client, hub, repo):
    assert client.post("/api/repos/create", json={"name": "stolen", "organization": "alice"},
                       headers=auth(BOB)).status_code == 403
    commit = ndjson(HEADER, {"key": "file", "value": {"path": "evil.txt", "content": "YQ==", "encoding": "base64"}})
    assert post_commit(client, repo, commit, token=BOB).status_code == 403
    assert client.post(f"/api/models/{repo}/branch/bob", json={}, headers=auth(BOB)).status_code == 403
    assert client.put(f"/api/models/{repo}/settings", json={"private": True}, headers=auth(BOB)).status_code == 403
    assert client.request("DELETE", "/api/repos/delete", json={"name": repo.split("/")[1], "organization": "alice"},
                          headers=auth(BOB)).status_code == 403
    assert files_of(hub, repo) == [".gitattributes", "keep.txt"]


def test_private_repos_are_404_everywhere_for_others(client, hub):
    repo_id = f"alice/p-{uuid.uuid4().hex[:8]}"
    HfApi(endpoint=hub.url, token=ALICE).create_repo(repo_id, private=True)
    urls = [f"/api/models/{repo_id}", f"/api/models/{repo_id}/tree/main", f"/api/models/{repo_id}/refs",
            f"/api/models/{repo_id}/commits/main", f"/{repo_id}/resolve/main/.gitattributes"]
    for url in urls:
        for headers in ({}, auth(BOB)):
            response = client.get(url, headers=headers)
            assert response.status_code == 404, url
            assert response.headers["x-error-code"] == "RepoNotFound"
        assert client.get(url, headers=auth(ALICE)).status_code == 200
    assert client.post(f"/api/models/{repo_id}/paths-info/main", data={"paths": ".gitattributes"},
                       headers=auth(BOB)).status_code == 404


BAD_PATHS = ["../evil.txt", "a/../../evil.txt", "/abs/evil.txt", "dir\\evil.txt", "nul\x00evil.txt", "./evil.txt",
             "a//evil.txt", "", ".git/config", "x" * 1200]


@pytest.mark.parametrize("bad_path", BAD_PATHS)
def test_bad_paths_in_a_commit_are_400(client, hub, repo, bad_path):
    for operation in (
        {"key": "file", "value": {"path": bad_path, "content": "ZXZpbA==", "encoding": "base64"}},
        {"key": "deletedFile", "value": {"path": bad_path}},
    ):
        response = post_commit(client, repo, ndjson(HEADER, operation))
        assert response.status_code == 400, response.text
        assert "error" in response.json()
    preupload = client.post(f"/api/models/{repo}/preupload/main",
                            json={"files": [{"path": bad_path, "sample": "", "size": 1}]}, headers=auth(ALICE))
    assert preupload.status_code == 400
    assert files_of(hub, repo) == [".gitattributes", "keep.txt"]


@pytest.mark.parametrize("suffix", ["%2e%2e/%2e%2e/hub.sqlite", "..%2F..%2Fhub.sqlite", "%2Fetc%2Fpasswd",
                                    "a%5Cevil", "a%00evil", "keep.txt%2F..%2F..%2Fhub.sqlite"])
def test_bad_paths_in_urls_are_rejected(client, repo, suffix):
    for url in (f"/{repo}/resolve/main/{suffix}", f"/api/models/{repo}/tree/main/{suffix}"):
        response = client.get(url, headers=auth(ALICE))
        assert 400 <= response.status_code < 500, (url, response.status_code)
        assert b"SQLite" not in response.content and b"root:" not in response.content


@pytest.mark.parametrize("name, organization", [
    ("a..b", None), ("-lead", None), ("a--b", None), ("x" * 97, None), ("sp ace", None), ("ok.git", None),
    ("", None), ("fine", "../alice"), ("fine", "api"), (["list"], None),
])
def test_invalid_repo_ids_are_400(client, name, organization):
    response = client.post("/api/repos/create", json={"name": name, "organization": organization},
                           headers=auth(ALICE))
    assert response.status_code == 400, response.text
    assert response.json()["error"]


def test_invalid_ids_in_urls_are_4xx(client):
    for url in ("/api/models/al%2Fice/x", "/api/models/alice/%2e%2e", "/api/models/alice/a%00b",
                "/api/unknowns/alice/x", "/alice/..%2F..%2Fx/resolve/main/f"):
        assert 400 <= client.get(url).status_code < 500, url


def test_oversized_headers_and_bodies_are_refused(client, repo):
    response = client.get("/api/models", headers={"x-padding": "a" * 40_000})
    assert response.status_code == 431 and "too large" in response.json()["error"]
    assert client.get("/api/models?" + "q=1&" * 10_000).status_code == 431
    too_big_json = {"name": "x", "padding": "a" * (MAX_JSON + 1)}
    assert client.post("/api/repos/create", json=too_big_json, headers=auth(ALICE)).status_code == 413
    content = base64.b64encode(os.urandom(MAX_COMMIT)).decode()
    too_big_commit = ndjson(HEADER, {"key": "file", "value": {"path": "big.txt", "content": content}})
    assert post_commit(client, repo, too_big_commit).status_code == 413

    def chunks():  # no Content-Length: the limit must hold on the streamed body too
        yield ndjson(HEADER)
        for _ in range(MAX_COMMIT // 1024 + 1):
            yield b" " * 1024

    response = client.post(f"/api/models/{repo}/commit/main", content=chunks(), headers=auth(ALICE))
    assert response.status_code == 413


def _batch(client, repo: str, oid: str, size: int) -> dict:
    response = client.post(f"/{repo}.git/info/lfs/objects/batch", headers=auth(ALICE),
                           json={"operation": "upload", "transfers": ["basic"], "hash_algo": "sha256",
                                 "objects": [{"oid": oid, "size": size}]})
    assert response.status_code == 200
    return response.json()["objects"][0]


def test_lfs_upload_must_match_its_oid(client, hub, repo):
    content = os.urandom(4096)
    oid = hashlib.sha256(content).hexdigest()
    actions = _batch(client, repo, oid, len(content))["actions"]
    wrong = bytearray(content)
    wrong[0] ^= 0xFF
    assert client.put(actions["upload"]["href"], content=bytes(wrong)).status_code == 400
    assert client.put(actions["upload"]["href"], content=content + b"x").status_code == 400
    assert not (hub.data_dir / "blobs" / oid[:2] / oid[2:]).exists()
    assert list((hub.data_dir / "tmp").iterdir()) == []
    lfs_line = {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": oid, "size": len(content)}}
    assert post_commit(client, repo, ndjson(HEADER, lfs_line)).status_code == 400

    assert client.put(actions["upload"]["href"], content=content).status_code == 200
    assert client.post(actions["verify"]["href"], json={"oid": oid, "size": len(content)},
                       headers=auth(ALICE)).status_code == 200
    assert post_commit(client, repo, ndjson(HEADER, lfs_line)).status_code == 200
    assert (hub.data_dir / "blobs" / oid[:2] / oid[2:]).read_bytes() == content
    assert "actions" not in _batch(client, repo, oid, len(content))  # already stored: nothing to upload
    assert client.put(f"{hub.url}/api/lfs-upload/not-a-ticket", content=b"x").status_code == 404
    bad_oid = client.post(f"/{repo}.git/info/lfs/objects/batch", headers=auth(ALICE),
                          json={"operation": "upload", "objects": [{"oid": "../../evil", "size": 1}]})
    assert bad_oid.status_code == 400


@pytest.mark.parametrize("body", [
    b"this is not json\n",
    ndjson({"key": "file", "value": {"path": "a.txt", "content": "YQ=="}}),  # no header
    ndjson(HEADER, HEADER),
    ndjson(HEADER, {"key": "rmrf", "value": {"path": "a.txt"}}),
    ndjson(HEADER, {"key": "file", "value": "not an object"}),
    ndjson(HEADER, {"key": "file", "value": {"path": "a.txt", "content": "***not base64***"}}),
    ndjson(HEADER, {"key": "file", "value": {"path": "a.txt", "content": 42}}),
    ndjson(HEADER, {"key": "lfsFile", "value": {"path": "a.bin", "oid": "f" * 64, "algo": "sha256"}}),
    ndjson(HEADER, {"key": "lfsFile", "value": {"path": "a.bin", "oid": "../../x", "algo": "sha256"}}),
    ndjson(HEADER, {"key": "deletedFile", "value": {"path": "missing.txt"}}),
    ndjson(HEADER, {"key": "file", "value": {"path": "keep.txt/inside", "content": "YQ=="}}),
    b"[1, 2]\n",
    b"\xff\xfe\x00garbage\n",
])
def test_malformed_commits_are_4xx_and_change_nothing(client, hub, repo, body):
    response = post_commit(client, repo, body)
    assert 400 <= response.status_code < 500, response.text
    assert isinstance(response.json()["error"], str)
    assert files_of(hub, repo) == [".gitattributes", "keep.txt"]


@pytest.mark.parametrize("method, url, body", [
    ("POST", "/api/repos/create", b"{not json"),
    ("POST", "/api/repos/create", b"[1, 2, 3]"),
    ("POST", "/api/models/{repo}/preupload/main", b'{"files": "nope"}'),
    ("POST", "/api/models/{repo}/preupload/main", b'{"files": [{"path": "a", "sample": "!!", "size": 1}]}'),
    ("POST", "/api/models/{repo}/preupload/main", b'{"files": [{"path": "a", "sample": "", "size": -1}]}'),
    ("POST", "/api/models/{repo}/branch/bad..name", b"{}"),
    ("POST", "/api/models/{repo}/branch/ok", b'{"startingPoint": "nowhere"}'),
    ("POST", "/api/models/{repo}/tag/main", b'{"tag": 5}'),
    ("POST", "/{repo}.git/info/lfs/objects/batch", b'{"operation": "download", "objects": []}'),
    ("POST", "/{repo}.git/info/lfs/objects/batch", b'{"operation": "upload", "objects": [{"oid": 1}]}'),
    ("PUT", "/api/models/{repo}/settings", b'{"private": "yes"}'),
    ("GET", "/api/models?limit=many", b""),
    ("GET", "/api/models?sort=random", b""),
    ("GET", "/no/such/endpoint/at/all", b""),
    ("POST", "/api/validate-yaml", b'{"content": 5}'),
    ("POST", "/xet-cas/v1/shards", b"not a shard"),  # a hub token is no Xet token: 401
    ("POST", "/xet-cas/v1/xorbs/default/nothex", b""),
])
def test_malformed_requests_are_clean_4xx(client, repo, method, url, body):
    response = client.request(method, url.format(repo=repo), content=body, headers=auth(ALICE))
    assert 400 <= response.status_code < 500, response.text
    assert isinstance(response.json()["error"], str)


def test_downloads_are_served_while_commits_land(client, hub, repo):
    api = HfApi(endpoint=hub.url, token=ALICE)
    payload = os.urandom(512 * 1024)
    api.upload_file(path_or_fileobj=payload, path_in_repo="big.bin", repo_id=repo)
    pinned = api.model_info(repo).sha
    failures: list[str] = []
    stop = threading.Event()

    def download_repeatedly() -> None:
        with httpx.Client(base_url=hub.url, timeout=30) as http:
            while not stop.is_set():
                response = http.get(f"/{repo}/resolve/{pinned}/big.bin", headers=auth(ALICE))
                if response.status_code != 200 or response.content != payload:
                    failures.append(f"{response.status_code} {len(response.content)}")

    readers = [threading.Thread(target=download_repeatedly) for _ in range(3)]
    for reader in readers:
        reader.start()
    try:
        for index in range(8):
            api.upload_file(path_or_fileobj=os.urandom(256 * 1024), path_in_repo=f"w{index}.bin", repo_id=repo)
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert failures == []
    assert len(api.list_repo_commits(repo)) == 2 + 1 + 8


_CRASH_SCRIPT = """
import os, sys
from pathlib import Path
from hubtools.localhub.storage import AddFile, FileEntry, Storage, git_blob_oid

storage = Storage(Path(sys.argv[1]))
original = Storage._insert_commit

def insert_then_die(*args, **kwargs):
    original(*args, **kwargs)  # the new commit row is written inside the open transaction...
    os._exit(17)               # ...and the process dies before the ref moves and the transaction commits

Storage._insert_commit = staticmethod(insert_then_die)
content = b"new content"
sha = storage.blobs.put_bytes(content)
storage.commit("model", "alice/crash", "main", [AddFile("new.txt", FileEntry(sha, len(content), git_blob_oid(content), False))],
               title="doomed", message="", author="alice")
"""


def test_a_crash_mid_commit_leaves_the_old_tree(tmp_path):
    from hubtools.localhub.storage import Storage

    data = tmp_path / "crash-data"
    storage = Storage(data)
    storage.create_repo("model", "alice/crash", "alice", False)
    before, _ = storage.resolve("model", "alice/crash", "main")
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(_CRASH_SCRIPT), str(data)], timeout=120)
    assert result.returncode == 17

    reopened = Storage(data)
    after, _ = reopened.resolve("model", "alice/crash", "main")
    assert after.oid == before.oid and set(after.tree) == {".gitattributes"}
    assert [c.oid for c in reopened.history("model", "alice/crash", after)] == [before.oid]
    count = reopened.db.connect().execute("SELECT COUNT(*) FROM commits WHERE repo_id = 'alice/crash'").fetchone()[0]
    assert count == 1


def test_tokens_never_reach_the_data_folder_or_responses(client, hub, repo):
    for path in hub.data_dir.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert ALICE.encode() not in content and BOB.encode() not in content, path
    response = client.post("/api/repos/create", json={"name": "x"}, headers=auth(ALICE + "x"))
    assert ALICE not in response.text and ALICE not in str(response.headers)
