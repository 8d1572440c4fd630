"""`hubtools hub serve` as a user runs it, and the admin commands for likes and downloads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid

import pytest
from huggingface_hub import HfApi

from hubtools.cli.app import main
from hubtools.families import FAMILIES
from hubtools.localhub import serve_in_background

USER_TOKEN = "cli-user-token"


def _start_serve(tmp_path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "hubtools", "hub", "serve", "--data", str(tmp_path / "data"), "--port", "0",
         "--token", f"carol={USER_TOKEN}", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )


def _stop(process: subprocess.Popen) -> tuple[str, str]:
    process.send_signal(signal.SIGINT)
    try:
        out, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:  # pragma: no cover - only when the server hangs
        process.kill()
        out, err = process.communicate()
    return out, err


@pytest.mark.slow
def test_serve_prints_the_url_first_and_publishes_the_tiny_models(tmp_path):
    process = _start_serve(tmp_path, "--with-tiny-model")
    try:
        url = process.stdout.readline().strip()
        hint = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and int(url.rsplit(":", 1)[1]) > 0
        assert hint == f"export HF_ENDPOINT={url} HF_UPDATE_DOWNLOAD_COUNTS=0"

        api = HfApi(endpoint=url, token=USER_TOKEN)
        assert api.whoami(cache=False)["name"] == "carol"
        for family in FAMILIES:
            tiny = api.model_info(family.tiny_repo_id)  # one tiny model per family of the registry
            assert "model_index.json" in {s.rfilename for s in tiny.siblings}
        api.create_repo("carol/from-cli")
        with pytest.raises(Exception) as caught:  # the internal publisher's namespace is not carol's
            api.create_repo("hubtools/not-mine")
        assert caught.value.response.status_code == 403
        with open(f"/proc/{process.pid}/maps") as maps:  # published from a child: torch never loaded here
            assert "libtorch" not in maps.read()
    finally:
        out, err = _stop(process)
    assert process.returncode == 0, err[-2000:]
    assert USER_TOKEN not in out + err
    assert (tmp_path / "data" / "hub.sqlite").is_file()
    assert sorted(os.listdir(tmp_path)) == ["data"]

    # A restart finds the tiny models in place and publishes nothing again (seconds, not a minute).
    process = _start_serve(tmp_path, "--with-tiny-model")
    try:
        url = process.stdout.readline().strip()
        commits = HfApi(endpoint=url).list_repo_commits("hubtools/tiny-stable-diffusion")
        assert len(commits) == 2  # the repo's initial commit and the one publication
    finally:
        out, err = _stop(process)
    assert "already published" in err and "publishing the tiny models" not in err, err[-2000:]


def test_serve_rejects_bad_tokens_with_one_line(tmp_path, capsys):
    assert main(["hub", "serve", "--data", str(tmp_path / "d"), "--token", "no-equals-sign"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "USER=TOKEN" in err and "Traceback" not in err
    assert main(["hub", "serve", "--data", str(tmp_path / "d"), "--token", "a=secret-1", "--token", "a=x"]) == 2
    err = capsys.readouterr().err
    assert "given twice" in err and "secret-1" not in err
    assert main(["hub", "serve", "--data", str(tmp_path / "d"), "--port", "70000"]) == 2
    assert not (tmp_path / "d").exists()


def test_set_likes_downloads_and_seed_reach_the_running_hub(tmp_path, capsys):
    data = tmp_path / "data"
    with serve_in_background(data, tokens={"dana": "dana-token"}) as hub:
        api = HfApi(endpoint=hub.url, token="dana-token")
        repo_id = f"dana/liked-{uuid.uuid4().hex[:6]}"
        api.create_repo(repo_id)
        api.create_repo(repo_id, repo_type="dataset")

        assert main(["hub", "set-likes", repo_id, "7", "--data", str(data)]) == 0
        assert main(["hub", "set-downloads", repo_id, "42", "--data", str(data)]) == 0
        assert f"{repo_id} (model): likes = 7" in capsys.readouterr().out
        info = api.model_info(repo_id)
        assert (info.likes, info.downloads) == (7, 42)

        seed = tmp_path / "seed.json"
        seed.write_text(json.dumps([{"repo_id": repo_id, "likes": 3},
                                    {"repo_id": repo_id, "repo_type": "dataset", "likes": 9, "downloads": 1}]))
        assert main(["hub", "seed", str(seed), "--data", str(data)]) == 0
        assert api.model_info(repo_id).likes == 3
        assert (api.dataset_info(repo_id).likes, api.dataset_info(repo_id).downloads) == (9, 1)

        assert main(["hub", "set-likes", "dana/missing", "1", "--data", str(data)]) == 2
        assert "not found" in capsys.readouterr().err
        assert main(["hub", "set-likes", repo_id, "-1", "--data", str(data)]) == 2
        assert main(["hub", "set-likes", repo_id, "1", "--data", str(data), "--repo-type", "bucket"]) == 2
        seed.write_text("{broken")
        assert main(["hub", "seed", str(seed), "--data", str(data)]) == 2
    assert main(["hub", "set-likes", repo_id, "1", "--data", str(tmp_path / "nowhere")]) == 2
    assert "not a local hub data folder" in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()
