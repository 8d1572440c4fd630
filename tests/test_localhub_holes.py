"""The holes issue 25 found in the local hub, each driven as an attacker or a user would, with the stock
clients where they have a call for it and raw HTTP where only an attacker would send it."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import uuid
from pathlib import Path

import httpx
import pytest
from huggingface_hub import HfApi

from hubtools.localhub import serve_in_background

ALICE, MALLORY, BOB, CAROL = "alice-holes-token", "mallory-holes-token", "bob-holes-token", "carol-holes-token"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("holes") / "data"


@pytest.fixture(scope="module")
def hub(data_dir):
    with serve_in_background(data_dir, tokens={"alice": ALICE, "mallory": MALLORY, "bob": BOB, "carol": CAROL},
                            organizations={"acme": ["bob"]}) as running:
        yield running


@pytest.fixture
def client(hub):
    with httpx.Client(base_url=hub.url, timeout=60) as http:
        yield http


def auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def ndjson(*items: dict) -> bytes:
    return b"".join(json.dumps(item).encode() + b"\n" for item in items)


def new_repo(hub, token: str, user: str, *, private: bool = False, **kwargs) -> str:
    repo_id = f"{user}/r-{uuid.uuid4().hex[:8]}"
    HfApi(endpoint=hub.url, token=token).create_repo(repo_id, private=private, **kwargs)
    return repo_id


# ---- blobs belong to repos ---------------------------------------------------------------------


def test_a_known_sha256_does_not_reach_another_repos_private_file(hub, client):
    secret = b"alice's private weights " + uuid.uuid4().bytes
    sha256 = hashlib.sha256(secret).hexdigest()
    private = new_repo(hub, ALICE, "alice", private=True)
    HfApi(endpoint=hub.url, token=ALICE).upload_file(path_or_fileobj=secret, path_in_repo="weights.bin",
                                                     repo_id=private)
    thief = new_repo(hub, MALLORY, "mallory")

    # The LFS batch answer on the thief's own repo says nothing about whether the object exists elsewhere:
    # it asks for the bytes, exactly as for an object nobody has.
    unknown = hashlib.sha256(b"nobody has this").hexdigest()
    answer = client.post(f"/{thief}.git/info/lfs/objects/batch", headers=auth(MALLORY), json={
        "operation": "upload", "transfers": ["basic"],
        "objects": [{"oid": sha256, "size": len(secret)}, {"oid": unknown, "size": 15}]}).json()
    stolen, nothing = answer["objects"]
    assert set(stolen) == set(nothing) and "upload" in stolen["actions"]

    # A commit naming the private blob is refused, the same way as for a blob nobody uploaded.
    body = ndjson({"key": "header", "value": {"summary": "steal"}},
                  {"key": "lfsFile", "value": {"path": "stolen.bin", "algo": "sha256", "oid": sha256,
                                               "size": len(secret)}})
    response = client.post(f"/api/models/{thief}/commit/main", content=body,
                           headers={**auth(MALLORY), "content-type": "application/x-ndjson"})
    assert 400 <= response.status_code < 500
    assert "never uploaded to this repo" in response.json()["error"]
    assert client.get(f"/{thief}/resolve/main/stolen.bin").status_code == 404

    # Whoever really has the bytes uploads them, and then the commit is theirs to make (deduplication
    # stays inside the store).
    HfApi(endpoint=hub.url, token=MALLORY).upload_file(path_or_fileobj=secret, path_in_repo="mine.bin",
                                                       repo_id=thief)
    assert client.get(f"/{thief}/resolve/main/mine.bin").content == secret


def test_the_data_folder_is_private_to_the_hubs_user(hub, data_dir):
    repo_id = new_repo(hub, ALICE, "alice")
    HfApi(endpoint=hub.url, token=ALICE).upload_file(path_or_fileobj=b"x" * 100, path_in_repo="x.bin",
                                                     repo_id=repo_id)
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((data_dir / "hub.sqlite").stat().st_mode) == 0o600
    blobs = [path for path in (data_dir / "blobs").rglob("*") if path.is_file()]
    assert blobs and {stat.S_IMODE(path.stat().st_mode) for path in blobs} == {0o600}
    assert stat.S_IMODE((data_dir / "blobs").stat().st_mode) == 0o700


# ---- every read verified -----------------------------------------------------------------------


def _flip_a_byte(data_dir: Path, content: bytes) -> Path:
    blob = data_dir / "blobs" / hashlib.sha256(content).hexdigest()[:2] / hashlib.sha256(content).hexdigest()[2:]
    damaged = bytearray(blob.read_bytes())
    damaged[len(damaged) // 2] ^= 0x01
    blob.write_bytes(bytes(damaged))
    return blob


@pytest.mark.parametrize("size", [1000, 2 * 1024 * 1024 + 17])  # one read, and streamed in chunks
def test_a_damaged_blob_is_never_downloaded_as_if_whole(hub, data_dir, tmp_path, caplog, size):
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    content = os.urandom(size)
    repo_id = new_repo(hub, ALICE, "alice")
    HfApi(endpoint=hub.url, token=ALICE).upload_file(path_or_fileobj=content, path_in_repo="model.bin",
                                                     repo_id=repo_id)
    blob = _flip_a_byte(data_dir, content)
    cache = tmp_path / "cache"
    with pytest.raises((HfHubHTTPError, OSError)):
        hf_hub_download(repo_id, "model.bin", endpoint=hub.url, cache_dir=cache, token=ALICE)
    assert not [path for path in cache.rglob("model.bin")]  # nothing damaged was cached
    assert not blob.exists() and (data_dir / "quarantine" / hashlib.sha256(content).hexdigest()).is_file()
    assert f"model {repo_id}@" in caplog.text and "model.bin" in caplog.text
    # The next reader gets a clear refusal too, not the damaged bytes.
    response = httpx.get(f"{hub.url}/{repo_id}/resolve/main/model.bin")
    assert response.status_code == 500 and "damaged" in response.json()["error"]

    # fsck names the repo, the revision and the path of the file that lost its blob.
    from hubtools.localhub.maintenance import fsck

    problems = "\n".join(fsck(data_dir).problems)
    assert repo_id in problems and "model.bin" in problems and "(main)" in problems


# ---- gates as on the Hub -----------------------------------------------------------------------


def _status_of(call) -> int:
    from huggingface_hub.errors import GatedRepoError

    try:
        call()
    except GatedRepoError as error:
        return error.response.status_code
    return 200


def _ask_access_on_the_page(hub, token: str, repo_id: str) -> None:
    """What a user does in a browser: sign in, open the repo's page, press "Request access"."""
    import re

    with httpx.Client(base_url=hub.url, timeout=30, follow_redirects=True) as browser:
        browser.post("/login", data={"token": token, "next": f"/{repo_id}"})
        page = browser.get(f"/{repo_id}").text
        assert 'id="request-access"' in page
        csrf = re.search(r'action="/' + re.escape(repo_id) + r'/ask-access" method="post">\s*<input type="hidden" '
                         r'name="csrf" value="([^"]+)"', page).group(1)
        after = browser.post(f"/{repo_id}/ask-access", data={"csrf": csrf}).text
        assert "access requested" in after or "access granted" in after


def test_a_manual_gate_holds_until_the_owner_accepts(hub, tmp_path):
    from huggingface_hub import hf_hub_download

    owner = HfApi(endpoint=hub.url, token=ALICE)
    repo_id = new_repo(hub, ALICE, "alice")
    owner.upload_file(path_or_fileobj=b"gated weights", path_in_repo="weights.bin", repo_id=repo_id)
    owner.upload_file(path_or_fileobj=b"# A gated model", path_in_repo="README.md", repo_id=repo_id)
    owner.update_repo_settings(repo_id, gated="manual")
    assert HfApi(endpoint=hub.url).model_info(repo_id).gated == "manual"  # the repo itself is public

    def download(token):
        return lambda: hf_hub_download(repo_id, "weights.bin", endpoint=hub.url, token=token,
                                       cache_dir=tmp_path / uuid.uuid4().hex)

    assert _status_of(download(False)) == 401
    assert _status_of(download(BOB)) == 403
    assert _status_of(download(ALICE)) == 200  # the owner always reads
    assert _status_of(lambda: hf_hub_download(repo_id, "README.md", endpoint=hub.url, token=False,
                                              cache_dir=tmp_path / "card")) == 200  # the card is open

    _ask_access_on_the_page(hub, BOB, repo_id)
    assert [r.username for r in owner.list_pending_access_requests(repo_id)] == ["bob"]
    assert _status_of(download(BOB)) == 403  # asking is not being granted
    owner.accept_access_request(repo_id, "bob")
    assert [r.username for r in owner.list_accepted_access_requests(repo_id)] == ["bob"]
    assert Path(hf_hub_download(repo_id, "weights.bin", endpoint=hub.url, token=BOB,
                                cache_dir=tmp_path / "bob")).read_bytes() == b"gated weights"
    owner.reject_access_request(repo_id, "bob", rejection_reason="Not this time.")
    assert _status_of(download(BOB)) == 403

    assert _status_of(download(CAROL)) == 403
    owner.grant_access(repo_id, "carol")
    assert _status_of(download(CAROL)) == 200
    # Only the repo's writers manage its gate.
    with pytest.raises(Exception) as refused:
        HfApi(endpoint=hub.url, token=BOB).grant_access(repo_id, "mallory")
    assert refused.value.response.status_code == 403


def test_an_auto_gate_opens_on_request(hub, tmp_path):
    from huggingface_hub import hf_hub_download

    owner = HfApi(endpoint=hub.url, token=ALICE)
    repo_id = new_repo(hub, ALICE, "alice")
    owner.upload_file(path_or_fileobj=b"auto", path_in_repo="weights.bin", repo_id=repo_id)
    owner.update_repo_settings(repo_id, gated="auto")
    assert _status_of(lambda: hf_hub_download(repo_id, "weights.bin", endpoint=hub.url, token=BOB,
                                              cache_dir=tmp_path / "a")) == 403
    _ask_access_on_the_page(hub, BOB, repo_id)
    assert _status_of(lambda: hf_hub_download(repo_id, "weights.bin", endpoint=hub.url, token=BOB,
                                              cache_dir=tmp_path / "b")) == 200


# ---- org-narrowed tokens narrow every write route ----------------------------------------------


def test_a_token_narrowed_to_an_org_acts_nowhere_else(hub, data_dir):
    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.errors import HfHubHTTPError

    from hubtools.localhub.tokenstore import TokenStore

    narrowed, _ = TokenStore(data_dir / "hub.sqlite").add("bob", "write", orgs=("acme",))
    elsewhere = new_repo(hub, ALICE, "alice")
    discussion = HfApi(endpoint=hub.url, token=ALICE).create_discussion(elsewhere, title="Open for comments")
    api = HfApi(endpoint=hub.url, token=narrowed)
    refused = {
        "pull request": lambda: api.create_pull_request(elsewhere, title="A narrowed PR"),
        "PR by commit": lambda: api.create_commit(elsewhere, operations=[CommitOperationAdd("x.txt", b"x")],
                                                  commit_message="x", create_pr=True),
        "discussion": lambda: api.create_discussion(elsewhere, title="A narrowed discussion"),
        "comment": lambda: api.comment_discussion(elsewhere, discussion.num, "narrowed words"),
        "like": lambda: HfApi(endpoint=hub.url).unlike(elsewhere, token=narrowed),  # the client has no like()
        "own namespace": lambda: api.create_repo("bob/not-in-acme"),
    }
    for what, call in refused.items():
        with pytest.raises(HfHubHTTPError) as error:
            call()
        assert error.value.response.status_code == 403, what
    liked = httpx.post(f"{hub.url}/api/models/{elsewhere}/like", headers=auth(narrowed))  # as the web page does
    assert liked.status_code == 403
    api.create_repo("acme/" + uuid.uuid4().hex[:8])  # its own namespace still works
    assert HfApi(endpoint=hub.url, token=BOB).create_pull_request(elsewhere, title="Bob's full token").num


# ---- bounded parsing ---------------------------------------------------------------------------


def test_deep_nesting_is_a_clean_400_without_a_traceback(hub, client, caplog):
    repo_id = new_repo(hub, ALICE, "alice")
    nested = b"[" * 100_000 + b"]" * 100_000
    answers = {
        "json route, anonymous": client.post("/api/validate-yaml", content=b'{"content": ' + nested + b"}"),
        "paths-info, anonymous": client.post(f"/api/models/{repo_id}/paths-info/main", content=nested,
                                             headers={"content-type": "application/json"}),
        "commit line": client.post(f"/api/models/{repo_id}/commit/main", content=nested + b"\n",
                                   headers={**auth(ALICE), "content-type": "application/x-ndjson"}),
        "card metadata": client.post("/api/validate-yaml", json={"content": "---\na: " + "[" * 100_000 + "\n---\n"}),
    }
    for what, response in answers.items():
        assert response.status_code == 400, (what, response.text)
        assert "nested too deeply" in response.json()["error"] or "Invalid YAML" in response.json()["error"], what
    assert "Traceback" not in caplog.text and "unexpected error" not in caplog.text


def test_a_60_mb_commit_line_is_refused_as_it_arrives(hub, client):
    repo_id = new_repo(hub, ALICE, "alice")

    def body():
        yield b'{"key": "header", "value": {"summary": "big"}}\n{"key": "file", "value": {"content": "'
        for _ in range(60):
            yield b"A" * (1024 * 1024)
        yield b'", "path": "big.txt", "encoding": "base64"}}\n'

    try:
        response = client.post(f"/api/models/{repo_id}/commit/main", content=body(),
                               headers={**auth(ALICE), "content-type": "application/x-ndjson"})
    except httpx.HTTPError:  # the server may answer and close before the client has sent it all
        response = None
    if response is not None:
        assert response.status_code == 413 and "line 2 too large" in response.json()["error"]
    assert [s.path for s in HfApi(endpoint=hub.url).list_repo_tree(repo_id)] == [".gitattributes"]


def test_text_fields_are_bounded_as_on_the_hub(hub):
    from huggingface_hub.errors import HfHubHTTPError

    repo_id = new_repo(hub, ALICE, "alice")
    api = HfApi(endpoint=hub.url, token=ALICE)
    for call in (lambda: api.create_discussion(repo_id, title="t" * 1024 * 1024),
                 lambda: api.create_pull_request(repo_id, title="A PR", description="d" * 1024 * 1024),
                 lambda: api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id,
                                         commit_message="m" * 1024 * 1024)):
        with pytest.raises(HfHubHTTPError) as error:
            call()
        assert error.value.response.status_code == 400 and "too long" in error.value.response.json()["error"]
    assert api.create_discussion(repo_id, title="t" * 200).num


# ---- the smaller points ------------------------------------------------------------------------


def test_names_the_clients_cannot_use_are_refused(hub, client):
    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.errors import HfHubHTTPError

    repo_id = new_repo(hub, ALICE, "alice")
    api = HfApi(endpoint=hub.url, token=ALICE)
    with pytest.raises(HfHubHTTPError) as head:
        api.create_branch(repo_id, branch="HEAD")
    assert head.value.response.status_code == 400
    for path in ("a" * 256 + ".txt", "folder/" + "é" * 128 + "/x.txt"):  # 259 bytes; 256 bytes in UTF-8
        with pytest.raises(HfHubHTTPError) as long_name:
            api.create_commit(repo_id, operations=[CommitOperationAdd(path, b"x")], commit_message="long")
        assert long_name.value.response.status_code == 400
    api.create_commit(repo_id, operations=[CommitOperationAdd("a" * 251 + ".txt", b"x")], commit_message="ok")


def test_repo_names_are_case_insensitive_as_on_the_hub(hub, tmp_path):
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(endpoint=hub.url, token=ALICE)
    repo_id = f"alice/CaseModel-{uuid.uuid4().hex[:6]}"
    api.create_repo(repo_id)
    api.upload_file(path_or_fileobj=b"weights", path_in_repo="w.bin", repo_id=repo_id)
    assert api.model_info(repo_id.lower()).id == repo_id  # any casing finds it; it answers with its name
    assert Path(hf_hub_download(repo_id.upper().replace("ALICE", "alice"), "w.bin", endpoint=hub.url,
                                cache_dir=tmp_path)).read_bytes() == b"weights"
    with pytest.raises(HfHubHTTPError) as taken:
        api.create_repo(repo_id.lower())
    assert taken.value.response.status_code == 409
    assert api.create_repo(repo_id.lower(), exist_ok=True).repo_id.lower() == repo_id.lower()


def test_a_damaged_parquet_is_not_shown_on_the_dataset_page(hub, data_dir, caplog):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table_file = data_dir.parent / "rows.parquet"
    pq.write_table(pa.table({"text": [f"row {i}" for i in range(50)]}), table_file)
    content = table_file.read_bytes()
    table_file.unlink()
    repo_id = new_repo(hub, ALICE, "alice", repo_type="dataset")
    HfApi(endpoint=hub.url, token=ALICE).upload_file(path_or_fileobj=content, path_in_repo="data.parquet",
                                                     repo_id=repo_id, repo_type="dataset")
    _flip_a_byte(data_dir, content)
    page = httpx.get(f"{hub.url}/datasets/{repo_id}")
    assert "row 7" not in page.text and "damaged" in page.text
    assert f"dataset {repo_id}@" in caplog.text
