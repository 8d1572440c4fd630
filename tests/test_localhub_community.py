"""The rest of the Hub API the stock clients call, against the local hub: likes, discussions and pull
requests, move, duplicate, the user's repo listing, super-squash, auth-check, filters, gating, Spaces."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from huggingface_hub import CommitOperationAdd, HfApi, get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError


@pytest.fixture
def other(local_hub) -> HfApi:
    return HfApi(endpoint=local_hub.url, token=local_hub.other_token)


@pytest.fixture
def repo_id(api, local_hub) -> str:
    repo_id = f"{local_hub.user}/com-{uuid.uuid4().hex[:8]}"
    api.create_repo(repo_id)
    api.upload_file(path_or_fileobj=b"v1\n", path_in_repo="a.txt", repo_id=repo_id)
    return repo_id


def _hf(local_hub, *args: str, token: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_TOKEN": token or local_hub.token}
    return subprocess.run([str(Path(sys.executable).with_name("hf")), *args], env=env, capture_output=True,
                          text=True, timeout=120)


def _like(local_hub, repo_id: str, token: str) -> None:
    """huggingface_hub has no like() (only unlike): the Hub's endpoint, as its web page calls it."""
    response = httpx.post(f"{local_hub.url}/api/models/{repo_id}/like", headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text


def test_likes_through_the_api_and_the_leaderboard_counts_them(api, other, local_hub):
    from hubtools.hackathon import HACKATHON_TAG, leaderboard

    repo_id = f"{local_hub.org}/liked-{uuid.uuid4().hex[:8]}"
    api.create_repo(repo_id)
    card = f"---\nlicense: mit\ntags:\n- {HACKATHON_TAG}\n- animal\n---\n# entry\n"
    api.upload_file(path_or_fileobj=card.encode(), path_in_repo="README.md", repo_id=repo_id)
    for token in (local_hub.token, local_hub.other_token, local_hub.other_token):  # twice is once
        _like(local_hub, repo_id, token)
    assert api.model_info(repo_id).likes == 2
    assert sorted(u.username for u in api.list_repo_likers(repo_id)) == ["other", "tester"]
    assert repo_id in other.list_liked_repos().models
    entries = [e for board in leaderboard() for e in board.entries if e.repo_id == repo_id]
    assert [e.likes for e in entries] == [2]
    other.unlike(repo_id)
    assert api.model_info(repo_id).likes == 1
    assert [u.username for u in api.list_repo_likers(repo_id)] == ["tester"]


def test_discussions_open_list_comment_rename_close(api, other, repo_id):
    discussion = other.create_discussion(repo_id, title="A question", description="How was it trained?")
    assert discussion.num == 1 and discussion.status == "open" and not discussion.is_pull_request
    other.comment_discussion(repo_id, 1, "any news?")
    api.rename_discussion(repo_id, 1, "A question about training")
    event = api.change_discussion_status(repo_id, 1, "closed", comment="answered in the card")
    assert event.new_status == "closed"
    details = api.get_discussion_details(repo_id, 1)
    assert details.title == "A question about training" and details.status == "closed"
    comments = [e.content for e in details.events if e.type == "comment"]
    assert comments == ["How was it trained?", "any news?", "answered in the card"]
    listed = list(api.get_repo_discussions(repo_id))
    assert [(d.num, d.status, d.author) for d in listed] == [(1, "closed", "other")]
    assert list(api.get_repo_discussions(repo_id, discussion_status="open")) == []
    with pytest.raises(HfHubHTTPError) as caught:  # neither author nor writer
        HfApi(endpoint=api.endpoint, token=None).comment_discussion(repo_id, 1, "anonymous")
    assert caught.value.response.status_code == 401


def test_an_outsider_opens_a_pull_request_and_the_owner_merges_it(api, other, local_hub, repo_id):
    info = other.create_commit(repo_id, operations=[CommitOperationAdd("b.txt", b"from other\n"),
                                                     CommitOperationAdd("a.txt", b"v2\n")],
                               commit_message="Improve things", create_pr=True)
    assert info.pr_num == 1
    other.create_commit(repo_id, operations=[CommitOperationAdd("c.txt", b"more\n")],
                        commit_message="One more", revision=info.pr_revision)
    with pytest.raises(HfHubHTTPError) as caught:  # outsiders only commit to their own pull requests
        other.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id)
    assert caught.value.response.status_code == 403
    prs = list(api.get_repo_discussions(repo_id, discussion_type="pull_request"))
    assert [(p.num, p.status, p.author, p.is_pull_request) for p in prs] == [(1, "open", "other", True)]
    details = api.get_discussion_details(repo_id, 1)
    assert [e.summary for e in details.events if e.type == "commit"] == ["Improve things", "One more"]
    assert details.target_branch == "refs/heads/main"
    with pytest.raises(HfHubHTTPError) as caught:  # only writers merge
        other.merge_pull_request(repo_id, 1)
    assert caught.value.response.status_code == 403
    api.upload_file(path_or_fileobj=b"unrelated\n", path_in_repo="z.txt", repo_id=repo_id)  # main moved on
    api.merge_pull_request(repo_id, 1, comment="thanks!")
    merged = api.get_discussion_details(repo_id, 1)
    assert merged.status == "merged" and merged.merge_commit_oid == api.model_info(repo_id).sha
    assert sorted(api.list_repo_files(repo_id)) == [".gitattributes", "a.txt", "b.txt", "c.txt", "z.txt"]
    path = hf_hub_download(repo_id, "a.txt", endpoint=local_hub.url, token=local_hub.token)
    assert Path(path).read_bytes() == b"v2\n"
    head = api.list_repo_commits(repo_id)[0]
    assert head.title == "Improve things" and len(api.list_repo_commits(repo_id)) == 4  # + the merge commit


def test_a_conflicting_pull_request_is_409_and_changes_nothing(api, repo_id):
    pr = api.create_pull_request(repo_id, title="Draft work")
    assert pr.status == "draft"
    api.create_commit(repo_id, operations=[CommitOperationAdd("a.txt", b"pr version\n")],
                      commit_message="change a", revision=f"refs/pr/{pr.num}")
    assert api.get_discussion_details(repo_id, pr.num).status == "open"
    api.upload_file(path_or_fileobj=b"main version\n", path_in_repo="a.txt", repo_id=repo_id)
    head = api.model_info(repo_id).sha
    with pytest.raises(HfHubHTTPError) as caught:
        api.merge_pull_request(repo_id, pr.num)
    assert caught.value.response.status_code == 409 and "a.txt" in str(caught.value)
    assert api.model_info(repo_id).sha == head and api.get_discussion_details(repo_id, pr.num).status == "open"


def test_move_keeps_the_old_name_working(api, local_hub, repo_id):
    new_id = f"{local_hub.org}/moved-{uuid.uuid4().hex[:8]}"
    result = _hf(local_hub, "repos", "move", repo_id, new_id)
    assert result.returncode == 0, result.stderr
    assert api.model_info(new_id).id == new_id
    assert api.model_info(repo_id).id == new_id  # the old name redirects, as on the Hub
    path = hf_hub_download(repo_id, "a.txt", endpoint=local_hub.url, token=local_hub.token, force_download=True)
    assert Path(path).read_bytes() == b"v1\n"
    api.upload_file(path_or_fileobj=b"after move\n", path_in_repo="b.txt", repo_id=new_id)
    assert "b.txt" in api.list_repo_files(repo_id)
    with pytest.raises(HfHubHTTPError) as caught:  # others cannot move it into their namespace
        HfApi(endpoint=local_hub.url, token=local_hub.other_token).move_repo(new_id, "other/stolen")
    assert caught.value.response.status_code == 403


def test_duplicate_copies_the_files_into_a_new_repo(api, other, local_hub, repo_id):
    copy = other.duplicate_repo(repo_id)
    copy_id = f"{local_hub.other_user}/{repo_id.split('/')[1]}"
    assert copy.repo_id == copy_id
    assert other.list_repo_files(copy_id) == [".gitattributes", "a.txt"]
    assert len(other.list_repo_commits(copy_id)) == 1
    with pytest.raises(HfHubHTTPError) as caught:
        other.duplicate_repo(repo_id)
    assert caught.value.response.status_code == 409


def test_hf_repos_ls_lists_the_users_repos_with_storage(api, local_hub, repo_id):
    mine = {item.id: item for item in api.list_user_repos()}
    assert repo_id in mine and mine[repo_id].type == "model" and mine[repo_id].storage > 0
    assert all(item_id.startswith(f"{local_hub.user}/") for item_id in mine)
    assert all(i.id.startswith(f"{local_hub.org}/") for i in api.list_user_repos(namespace=local_hub.org))
    result = _hf(local_hub, "repos", "ls")
    assert result.returncode == 0, result.stderr
    assert repo_id in result.stdout


def test_super_squash_keeps_the_files_and_one_commit(api, repo_id):
    for index in range(3):
        api.upload_file(path_or_fileobj=f"{index}\n".encode(), path_in_repo=f"f{index}.txt", repo_id=repo_id)
    files = api.list_repo_files(repo_id)
    api.super_squash_history(repo_id, commit_message="squashed")
    commits = api.list_repo_commits(repo_id)
    assert [c.title for c in commits] == ["squashed"]
    assert api.list_repo_files(repo_id) == files


def test_auth_check(api, other, local_hub, repo_id):
    api.auth_check(repo_id)
    other.auth_check(repo_id)
    private_id = f"{local_hub.user}/private-{uuid.uuid4().hex[:8]}"
    api.create_repo(private_id, private=True)
    api.auth_check(private_id)
    with pytest.raises(RepositoryNotFoundError):
        other.auth_check(private_id)
    with pytest.raises(HfHubHTTPError) as caught:
        HfApi(endpoint=local_hub.url, token="not-a-token").auth_check(repo_id)
    assert caught.value.response.status_code == 401


def test_an_invalid_token_is_401_everywhere(local_hub, repo_id):
    bad = HfApi(endpoint=local_hub.url, token="not-a-token")
    for call in (lambda: bad.model_info(repo_id), lambda: bad.list_repo_files(repo_id),
                 lambda: bad.list_models(author=local_hub.user), lambda: bad.list_repo_refs(repo_id),
                 lambda: get_hf_file_metadata(hf_hub_url(repo_id, "a.txt", endpoint=local_hub.url),
                                              token="not-a-token")):
        with pytest.raises(HfHubHTTPError) as caught:
            result = call()
            list(result) if result is not None and hasattr(result, "__iter__") else None
        assert caught.value.response.status_code == 401


def test_pipeline_tag_library_and_gated_are_stored_and_filtered(api, local_hub):
    prefix = f"flt{uuid.uuid4().hex[:6]}"
    t2i, other_id = f"{local_hub.user}/{prefix}-t2i", f"{local_hub.user}/{prefix}-text"
    for repo, card in ((t2i, "pipeline_tag: text-to-image\nlibrary_name: diffusers"),
                       (other_id, "pipeline_tag: text-generation\nlibrary_name: transformers")):
        api.create_repo(repo)
        api.upload_file(path_or_fileobj=f"---\n{card}\n---\n".encode(), path_in_repo="README.md", repo_id=repo)
    found = [m.id for m in api.list_models(search=prefix, pipeline_tag="text-to-image")]
    assert found == [t2i]
    assert [m.id for m in api.list_models(search=prefix, filter="transformers")] == [other_id]
    api.update_repo_settings(t2i, gated="auto")
    assert api.model_info(t2i).gated == "auto"
    assert [m.id for m in api.list_models(search=prefix, gated=True)] == [t2i]
    api.update_repo_settings(t2i, gated=False)
    assert api.model_info(t2i).gated is False


def test_space_sdk_is_stored_and_the_runtime_answers(api, local_hub):
    space_id = f"{local_hub.user}/space-{uuid.uuid4().hex[:8]}"
    api.create_repo(space_id, repo_type="space", space_sdk="gradio")
    assert api.space_info(space_id).sdk == "gradio"
    runtime = api.get_space_runtime(space_id)
    assert runtime.stage == "STOPPED" and runtime.hardware is None
