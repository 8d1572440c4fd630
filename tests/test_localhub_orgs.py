"""Organizations on the local hub (``hub serve --org NAME=USER,...``): members write to NAME/..., others
get 403, whoami lists them, and hubtools' own commands publish under an organization."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from hubtools.cli.hub import parse_organizations
from hubtools.errors import ConfigError


@pytest.fixture
def member(local_hub) -> HfApi:
    return HfApi(endpoint=local_hub.url, token=local_hub.token)


@pytest.fixture
def outsider(local_hub) -> HfApi:
    return HfApi(endpoint=local_hub.url, token=local_hub.other_token)


def test_whoami_lists_the_organizations_of_the_user(member, outsider, local_hub):
    orgs = member.whoami(cache=False)["orgs"]
    assert [org["name"] for org in orgs] == [local_hub.org] and orgs[0]["type"] == "org"
    assert outsider.whoami(cache=False)["orgs"] == []
    assert [user.username for user in member.list_organization_members(local_hub.org)] == [local_hub.user]


def test_members_write_to_the_organization_and_others_get_403(member, outsider, local_hub):
    repo_id = f"{local_hub.org}/team-{uuid.uuid4().hex[:8]}"
    member.create_repo(repo_id, private=True)
    member.upload_file(path_or_fileobj=b"team work\n", path_in_repo="notes.txt", repo_id=repo_id)
    assert member.list_repo_files(repo_id) == [".gitattributes", "notes.txt"]
    with pytest.raises(RepositoryNotFoundError):  # private: members only
        outsider.model_info(repo_id)
    member.update_repo_settings(repo_id, private=False)
    assert outsider.model_info(repo_id).id == repo_id
    for attempt in (
        lambda: outsider.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id),
        lambda: outsider.create_repo(f"{local_hub.org}/intruder"),
        lambda: outsider.delete_repo(repo_id),
    ):
        with pytest.raises(HfHubHTTPError) as caught:
            attempt()
        assert caught.value.response.status_code == 403
    assert member.list_repo_files(repo_id) == [".gitattributes", "notes.txt"]


def test_hf_cli_uploads_to_the_organization(local_hub, tmp_path):
    repo_id = f"{local_hub.org}/cli-{uuid.uuid4().hex[:8]}"
    (tmp_path / "hello.txt").write_text("hello\n")
    env = {**os.environ, "HF_TOKEN": local_hub.token}
    hf = [str(Path(sys.executable).with_name("hf"))]  # the hf CLI installed with huggingface_hub
    created = subprocess.run([*hf, "repos", "create", repo_id], env=env, capture_output=True, text=True, timeout=120)
    assert created.returncode == 0, created.stderr
    uploaded = subprocess.run([*hf, "upload", repo_id, str(tmp_path / "hello.txt"), "hello.txt"], env=env,
                              capture_output=True, text=True, timeout=120)
    assert uploaded.returncode == 0, uploaded.stderr
    assert "hello.txt" in HfApi(endpoint=local_hub.url).list_repo_files(repo_id)


def test_org_flag_parsing():
    assert parse_organizations(["acme=alice,bob", "lab=carol"]) == {"acme": ["alice", "bob"], "lab": ["carol"]}
    for bad in (["acme"], ["acme="], ["=alice"], ["ac me=alice"], ["acme=alice", "acme=bob"]):
        with pytest.raises(ConfigError):
            parse_organizations(bad)


def test_serve_refuses_an_organization_named_like_a_user(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "hubtools", "hub", "serve", "--data", str(tmp_path / "data"),
         "--token", "alice=alice-token", "--org", "alice=alice"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert "both a user and an organization" in result.stderr and "Traceback" not in result.stderr


def test_train_and_push_publishes_under_an_organization(tmp_path, capsys, local_hub, tiny_model_repo, hf_token):
    from hubtools.cli.app import main
    from hubtools.hackathon import check_submission
    from hubtools.resources import DEMO_CONCEPT_DIR

    repo_id = f"{local_hub.org}/nlwx-dog-{uuid.uuid4().hex[:6]}"
    config = tmp_path / "small.toml"
    config.write_text("[prior]\ngeneration_steps = 2\n\n[sampling]\nnum_inference_steps = 2\nseeds = [0]\n")
    code = main(["train-and-push", "--config", str(config), "--base-model", tiny_model_repo, "--concept", str(DEMO_CONCEPT_DIR),
                 "--identifier", "nlwx", "--class-noun", "dog", "--repo", repo_id, "--out", str(tmp_path / "run"),
                 "--resolution", "64", "--steps", "2", "--device", "cpu", "--num-class-images", "2", "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.strip().splitlines()[-1] == f"{local_hub.url}/{repo_id}"
    assert "model_index.json" in HfApi().list_repo_files(repo_id)
    rules = {result.rule: result for result in check_submission(repo_id)}
    assert rules["public"].passed and rules["model-files"].passed
