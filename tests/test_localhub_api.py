"""The local hub driven by the real huggingface_hub client: repos, uploads, downloads, refs, listings, cards."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import httpx
import pytest
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    ModelCard,
    ModelCardData,
    get_hf_file_metadata,
    hf_hub_download,
    hf_hub_url,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)


@pytest.fixture
def repo_id(api, local_hub) -> str:
    repo_id = f"{local_hub.user}/api-{uuid.uuid4().hex[:8]}"
    api.create_repo(repo_id)
    return repo_id


def _download(local_hub, repo_id, filename, **kwargs) -> bytes:
    path = hf_hub_download(repo_id, filename, endpoint=local_hub.url, token=local_hub.token, **kwargs)
    return Path(path).read_bytes()


def test_whoami_names_the_token_owner(api, local_hub):
    assert api.whoami()["name"] == local_hub.user
    assert HfApi(endpoint=local_hub.url, token=local_hub.other_token).whoami(cache=False)["name"] == "other"
    with pytest.raises(HfHubHTTPError) as caught:
        HfApi(endpoint=local_hub.url, token="not-a-token").whoami(cache=False)
    assert caught.value.response.status_code == 401


def test_new_repo_has_an_initial_commit_and_a_second_create_is_409(api, local_hub, repo_id):
    assert api.list_repo_files(repo_id) == [".gitattributes"]
    commits = api.list_repo_commits(repo_id)
    assert len(commits) == 1 and len(commits[0].commit_id) == 40
    assert "*.safetensors filter=lfs" in _download(local_hub, repo_id, ".gitattributes").decode()

    with pytest.raises(HfHubHTTPError) as caught:
        api.create_repo(repo_id)
    assert caught.value.response.status_code == 409
    assert caught.value.response.json()["url"] == f"{local_hub.url}/{repo_id}"
    assert api.create_repo(repo_id, exist_ok=True) == f"{local_hub.url}/{repo_id}"


def test_text_goes_inline_binaries_go_lfs_and_both_download_intact(api, local_hub, repo_id, tmp_path):
    weights = os.urandom(50_000)
    api.upload_file(path_or_fileobj=b"hello hub\n", path_in_repo="notes/hello.txt", repo_id=repo_id)
    api.upload_file(path_or_fileobj=weights, path_in_repo="unet/model.safetensors", repo_id=repo_id)
    blob = b"\x00\x01binary without an lfs extension"
    api.upload_file(path_or_fileobj=blob, path_in_repo="raw.dat", repo_id=repo_id)

    entries = {entry.path: entry for entry in api.list_repo_tree(repo_id, recursive=True)}
    assert entries["notes/hello.txt"].lfs is None
    assert entries["unet/model.safetensors"].lfs.sha256 == hashlib.sha256(weights).hexdigest()
    assert entries["raw.dat"].lfs is not None  # binary content goes LFS whatever its name
    assert {"notes", "unet"} <= set(entries)  # directory entries in a recursive listing

    assert _download(local_hub, repo_id, "notes/hello.txt") == b"hello hub\n"
    assert _download(local_hub, repo_id, "unet/model.safetensors") == weights
    assert _download(local_hub, repo_id, "raw.dat") == blob

    metadata = get_hf_file_metadata(hf_hub_url(repo_id, "unet/model.safetensors", endpoint=local_hub.url),
                                    token=local_hub.token)
    assert metadata.commit_hash == api.model_info(repo_id).sha
    assert metadata.etag == hashlib.sha256(weights).hexdigest()
    assert metadata.size == len(weights)


def test_create_commit_with_several_operations_keeps_old_revisions_readable(api, local_hub, repo_id):
    first = api.create_commit(repo_id, commit_message="three files", operations=[
        CommitOperationAdd("a.txt", b"a1"),
        CommitOperationAdd("dir/b.txt", b"b1"),
        CommitOperationAdd("dir/sub/c.bin", os.urandom(1000)),
    ])
    second = api.create_commit(repo_id, commit_message="rewrite", operations=[
        CommitOperationAdd("a.txt", b"a2"),
        CommitOperationDelete("dir/b.txt"),
        CommitOperationDelete("dir/sub/", is_folder=True),
        CommitOperationAdd("new.txt", b"n"),
    ])
    assert sorted(api.list_repo_files(repo_id)) == [".gitattributes", "a.txt", "new.txt"]
    assert sorted(api.list_repo_files(repo_id, revision=first.oid)) == [
        ".gitattributes", "a.txt", "dir/b.txt", "dir/sub/c.bin"]
    assert _download(local_hub, repo_id, "a.txt", revision=first.oid) == b"a1"
    assert _download(local_hub, repo_id, "a.txt", revision=second.oid) == b"a2"
    titles = [commit.title for commit in api.list_repo_commits(repo_id)]
    assert titles == ["rewrite", "three files", "initial commit"]


def test_parent_commit_mismatch_is_412(api, repo_id):
    head = api.model_info(repo_id).sha
    api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id)
    with pytest.raises(HfHubHTTPError) as caught:
        api.create_commit(repo_id, operations=[CommitOperationAdd("y.txt", b"y")], commit_message="stale",
                          parent_commit=head)
    assert caught.value.response.status_code == 412
    assert "y.txt" not in api.list_repo_files(repo_id)
    api.create_commit(repo_id, operations=[CommitOperationAdd("y.txt", b"y")], commit_message="fresh",
                      parent_commit=api.model_info(repo_id).sha)
    assert "y.txt" in api.list_repo_files(repo_id)


def test_branches_tags_and_revision_downloads(api, local_hub, repo_id, tmp_path):
    api.upload_file(path_or_fileobj=b"main", path_in_repo="file.txt", repo_id=repo_id)
    api.create_tag(repo_id, tag="v1")
    api.create_branch(repo_id, branch="dev")
    api.create_branch(repo_id, branch="dev", exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=_folder(tmp_path, {"file.txt": b"dev", "w.bin": b"\0" * 64}),
                      revision="dev")

    refs = api.list_repo_refs(repo_id)
    assert {branch.name for branch in refs.branches} == {"main", "dev"}
    assert [tag.name for tag in refs.tags] == ["v1"]
    assert _download(local_hub, repo_id, "file.txt", revision="v1") == b"main"
    assert _download(local_hub, repo_id, "file.txt", revision="dev") == b"dev"

    folder = snapshot_download(repo_id, revision="dev", allow_patterns=["*.txt"], endpoint=local_hub.url,
                               token=local_hub.token, local_dir=tmp_path / "snap")
    assert sorted(p.name for p in Path(folder).iterdir() if not p.name.startswith(".")) == ["file.txt"]
    assert (Path(folder) / "file.txt").read_bytes() == b"dev"

    with pytest.raises(RevisionNotFoundError):
        api.list_repo_files(repo_id, revision="no-such-branch")
    with pytest.raises(EntryNotFoundError):
        _download(local_hub, repo_id, "missing.txt")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(f"{local_hub.user}/no-such-repo-{uuid.uuid4().hex[:6]}")

    api.delete_tag(repo_id, tag="v1")
    api.delete_branch(repo_id, branch="dev")
    refs = api.list_repo_refs(repo_id)
    assert [branch.name for branch in refs.branches] == ["main"] and refs.tags == []


def test_pull_request_commit_lands_on_a_quoted_pr_ref(api, local_hub, repo_id):
    info = api.create_commit(repo_id, operations=[CommitOperationAdd("pr.txt", b"pr")], commit_message="pr",
                             create_pr=True)
    assert info.pr_url.endswith("/discussions/1")
    assert "pr.txt" not in api.list_repo_files(repo_id)
    refs = api.list_repo_refs(repo_id, include_pull_requests=True)
    assert [ref.ref for ref in refs.pull_requests] == ["refs/pr/1"]
    assert _download(local_hub, repo_id, "pr.txt", revision="refs/pr/1") == b"pr"


def test_list_models_search_author_filter_sort_limit(api, local_hub):
    tag = f"tag-{uuid.uuid4().hex[:8]}"
    ids = []
    for index, likes in enumerate([3, 10, 1]):
        repo_id = f"{local_hub.user}/{tag}-{index}"
        api.create_repo(repo_id)
        card = ModelCard.from_template(ModelCardData(tags=[tag, "dreambooth"], license="mit"))
        card.push_to_hub(repo_id, token=local_hub.token)
        local_hub.set_likes(repo_id, likes)
        local_hub.set_downloads(repo_id, 100 - likes)
        ids.append(repo_id)

    by_likes = [m.id for m in api.list_models(filter=tag, sort="likes")]
    assert by_likes == [ids[1], ids[0], ids[2]]
    by_downloads = [m.id for m in api.list_models(filter=[tag, "dreambooth"], sort="downloads")]
    assert by_downloads == [ids[2], ids[0], ids[1]]
    assert [m.id for m in api.list_models(filter=tag, sort="last_modified")] == ids[::-1]
    assert [m.id for m in api.list_models(search=tag, sort="likes", limit=1)] == [ids[1]]
    assert list(api.list_models(filter=tag, author="other")) == []
    models = list(api.list_models(search=f"{tag}-1", author=local_hub.user))
    assert [(m.id, m.likes, m.downloads) for m in models] == [(ids[1], 10, 90)]
    assert "license:mit" in models[0].tags


def test_model_info_reports_card_tags_siblings_and_counts(api, local_hub, repo_id):
    card = ModelCard("---\nlicense: apache-2.0\ntags:\n- dog\nbase_model: hubtools/tiny-stable-diffusion\n---\n# hi\n")
    card.push_to_hub(repo_id, token=local_hub.token)
    local_hub.set_likes(repo_id, 4)
    info = api.model_info(repo_id, files_metadata=True)
    assert info.card_data.license == "apache-2.0"
    assert {"dog", "license:apache-2.0", "base_model:hubtools/tiny-stable-diffusion"} <= set(info.tags)
    assert {sibling.rfilename for sibling in info.siblings} == {".gitattributes", "README.md"}
    assert info.likes == 4 and info.private is False and info.last_modified is not None
    assert ModelCard.load(repo_id, token=local_hub.token).data.tags == ["dog"]


def test_validate_yaml_answers_json_on_error(local_hub):
    good = httpx.post(f"{local_hub.url}/api/validate-yaml", json={"repoType": "model", "content": "---\na: 1\n---\n"})
    assert good.status_code == 200
    bad = httpx.post(f"{local_hub.url}/api/validate-yaml", json={"repoType": "model", "content": "---\na: [1\n---\n"})
    assert bad.status_code == 400 and "YAML" in bad.json()["error"]
    ModelCard("---\nlicense: mit\n---\nbody").validate()  # the client's own call: no error raised


def test_range_requests_get_206_and_bad_ranges_416(api, local_hub, repo_id):
    api.upload_file(path_or_fileobj=bytes(range(256)) * 4, path_in_repo="r.bin", repo_id=repo_id)
    url = hf_hub_url(repo_id, "r.bin", endpoint=local_hub.url)
    headers = {"authorization": f"Bearer {local_hub.token}"}
    part = httpx.get(url, headers={**headers, "Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == bytes(range(10, 20))
    assert part.headers["content-range"] == "bytes 10-19/1024"
    tail = httpx.get(url, headers={**headers, "Range": "bytes=-4"})
    assert tail.status_code == 206 and tail.content == bytes(range(252, 256))
    assert httpx.get(url, headers={**headers, "Range": "bytes=5000-"}).status_code == 416


def test_paths_info_and_tree_with_last_commit(api, repo_id):
    api.upload_file(path_or_fileobj=b"1", path_in_repo="d/one.txt", repo_id=repo_id)
    second = api.upload_file(path_or_fileobj=b"2", path_in_repo="two.txt", repo_id=repo_id)
    infos = {info.path: info for info in api.get_paths_info(repo_id, ["d", "two.txt", "nope.txt"], expand=True)}
    assert set(infos) == {"d", "two.txt"}
    assert infos["two.txt"].size == 1 and infos["two.txt"].last_commit.oid == second.oid
    assert infos["d"].last_commit.oid != second.oid
    top = {entry.path for entry in api.list_repo_tree(repo_id)}
    assert top == {".gitattributes", "d", "two.txt"}
    assert [entry.path for entry in api.list_repo_tree(repo_id, path_in_repo="d")] == ["d/one.txt"]
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree(repo_id, path_in_repo="missing"))


def test_private_repos_are_invisible_to_others_until_made_public(api, local_hub):
    repo_id = f"{local_hub.user}/private-{uuid.uuid4().hex[:8]}"
    api.create_repo(repo_id, private=True)
    api.upload_file(path_or_fileobj=b"secret", path_in_repo="s.txt", repo_id=repo_id)
    other = HfApi(endpoint=local_hub.url, token=local_hub.other_token)
    anonymous = HfApi(endpoint=local_hub.url, token=False)
    for client in (other, anonymous):
        with pytest.raises(RepositoryNotFoundError):
            client.model_info(repo_id)
        assert repo_id not in {m.id for m in client.list_models(author=local_hub.user)}
    url = hf_hub_url(repo_id, "s.txt", endpoint=local_hub.url)
    assert httpx.get(url).status_code == 404
    assert httpx.get(url, headers={"authorization": f"Bearer {local_hub.other_token}"}).status_code == 404
    assert api.model_info(repo_id).private is True

    api.update_repo_settings(repo_id, private=False)
    assert other.model_info(repo_id).private is False
    assert httpx.get(url).content == b"secret"


def test_delete_repo(api, local_hub, repo_id):
    api.delete_repo(repo_id)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(repo_id)
    api.delete_repo(repo_id, missing_ok=True)
    with pytest.raises(RepositoryNotFoundError):
        api.delete_repo(repo_id)


def test_dataset_repos_have_their_own_namespace_of_ids(api, local_hub):
    repo_id = f"{local_hub.user}/same-name-{uuid.uuid4().hex[:8]}"
    api.create_repo(repo_id, repo_type="dataset")
    api.upload_file(path_or_fileobj=b"d", path_in_repo="d.txt", repo_id=repo_id, repo_type="dataset")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(repo_id)
    assert api.dataset_info(repo_id).siblings[-1].rfilename == "d.txt"
    assert _download(local_hub, repo_id, "d.txt", repo_type="dataset") == b"d"
    local_hub.set_likes(repo_id, 2, repo_type="dataset")
    assert [(d.id, d.likes) for d in api.list_datasets(search=repo_id.split("/")[1])] == [(repo_id, 2)]


def _folder(root: Path, files: dict[str, bytes]) -> Path:
    folder = root / f"folder-{uuid.uuid4().hex[:6]}"
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    return folder
