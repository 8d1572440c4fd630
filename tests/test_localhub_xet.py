"""The stock clients against the local hub with ``hf_xet`` installed and HF_HUB_DISABLE_XET unset (as in a
user's own shell): uploads that the Hub would take as regular files work, and land as the Hub keeps them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

from huggingface_hub import HfApi

_UPLOAD_SCRIPT = """
import io, os, sys
from pathlib import Path
from huggingface_hub import HfApi
from huggingface_hub.utils._runtime import is_xet_available

assert "HF_HUB_DISABLE_XET" not in os.environ and is_xet_available(), "this test needs hf_xet, enabled"
api = HfApi()
repo_id, folder = sys.argv[1], Path(sys.argv[2])
api.create_repo(repo_id)
api.upload_folder(folder_path=folder, repo_id=repo_id, commit_message="folder")
api.upload_file(path_or_fileobj=folder / "weights.safetensors", path_in_repo="again.safetensors", repo_id=repo_id)
print("ok")
"""


def _env_without_xet_switch(local_hub) -> dict[str, str]:
    env = {**os.environ, "HF_TOKEN": local_hub.token}
    env.pop("HF_HUB_DISABLE_XET", None)
    return env


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "upload"
    (folder / "images").mkdir(parents=True)
    (folder / "README.md").write_text("---\nlicense: mit\n---\n# hello\n")
    (folder / "weights.safetensors").write_bytes(os.urandom(300_000))
    for index in range(3):
        (folder / "images" / f"{index}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(5_000))
    return folder


def test_client_with_xet_enabled_uploads_with_no_setting(local_hub, tmp_path):
    repo_id = f"{local_hub.user}/xet-{uuid.uuid4().hex[:8]}"
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(_UPLOAD_SCRIPT), repo_id, str(_folder(tmp_path))],
                            env=_env_without_xet_switch(local_hub), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    info = HfApi(endpoint=local_hub.url).model_info(repo_id, files_metadata=True)
    siblings = {s.rfilename: s for s in info.siblings}
    assert set(siblings) == {".gitattributes", "README.md", "weights.safetensors", "again.safetensors",
                             "images/0.png", "images/1.png", "images/2.png"}
    # stored as the Hub keeps them: weights and images in LFS, the card as a regular file
    assert siblings["weights.safetensors"].lfs is not None and siblings["images/0.png"].lfs is not None
    assert siblings["weights.safetensors"].lfs.size == 300_000
    assert siblings["README.md"].lfs is None


def test_hf_cli_upload_with_xet_enabled(local_hub, tmp_path):
    repo_id = f"{local_hub.user}/xet-cli-{uuid.uuid4().hex[:8]}"
    hf = str(Path(sys.executable).with_name("hf"))
    env = _env_without_xet_switch(local_hub)
    folder = _folder(tmp_path)
    first = subprocess.run([hf, "upload", repo_id, str(folder), "."], env=env, capture_output=True, text=True,
                           timeout=300)
    assert first.returncode == 0, first.stderr
    commits = len(HfApi(endpoint=local_hub.url).list_repo_commits(repo_id))
    again = subprocess.run([hf, "upload", repo_id, str(folder), "."], env=env, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    # unchanged files are recognised (same oid as the client computes), so no empty commit
    assert len(HfApi(endpoint=local_hub.url).list_repo_commits(repo_id)) == commits
    assert "images/2.png" in HfApi(endpoint=local_hub.url).list_repo_files(repo_id)
