"""Pushing runs to the local hub with the real huggingface_hub client: one commit, no-op re-pushes,
stale files, checkpoint branches, token hygiene, usage snippets that run, and interrupted pushes."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from huggingface_hub import HfApi, ModelCard, hf_hub_download, snapshot_download
from run_builders import build_run

from hubtools.card import render_model_card
from hubtools.config import load_config, load_run_config
from hubtools.errors import HubError
from hubtools.publish import PushResult, push_run
from hubtools.runfolder import RunFolder, published_files
from hubtools.sample import render_samples

IMAGE_LINK = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")
FORBIDDEN = re.compile(r"(^|/)(checkpoints|class_images|\.cache|tensorboard)/|optimizer|random_states|^concept/images/")


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _finished_run(root: Path, repo_id: str, *, samples: bool = False, **kwargs) -> Path:
    run = build_run(root, **kwargs)
    if samples:  # only where a test looks at the grids: sampling is the slow part of building a run
        render_samples(run, progress=False)
    render_model_card(run, repo_id=repo_id)
    return run


def _commits(api: HfApi, repo_id: str, revision: str = "main") -> list[str]:
    return [c.commit_id for c in api.list_repo_commits(repo_id, revision=revision)]


@pytest.fixture(scope="module")
def full_push(local_hub, tiny_model_repo, tmp_path_factory) -> tuple[Path, str, PushResult]:
    repo_id = f"{local_hub.user}/publish-full"
    run = _finished_run(tmp_path_factory.mktemp("full"), repo_id, samples=True, base_model=tiny_model_repo)
    return run, repo_id, push_run(run, repo_id, token=local_hub.token)


def test_push_is_one_commit_of_exactly_the_run_files(full_push, api):
    run, repo_id, result = full_push
    assert result.changed and result.repo_id == repo_id
    assert result.url.rstrip("/").endswith(repo_id) and result.commit_url
    commits = _commits(api, repo_id)
    assert commits[0] == result.commit_sha and len(commits) == 2  # the repo's first commit, then ours
    remote = set(api.list_repo_files(repo_id)) - {".gitattributes"}
    assert remote == set(result.files) == set(published_files(RunFolder(run)))
    assert {"README.md", "hubtools.toml", "train_result.json", "logs/metrics.jsonl", "model_index.json",
            "unet/diffusion_pytorch_model.safetensors", "images/samples_grid.png", "images/guidance_sweep.png",
            "images/checkpoints_grid.png", "images/loss_curve.png", "images/samples.json", "images/widget.png",
            "images/validation/step-000002.png", "concept/contact_sheet.png"} <= remote
    assert not [path for path in remote if FORBIDDEN.search(path)]
    # the run folder has all of these, and none of them was pushed
    assert (run / "checkpoints" / "checkpoint-000002" / "optimizer.bin").is_file()
    assert (run / "class_images").is_dir() and (run / ".cache").is_dir() and (run / "concept" / "images").is_dir()


def test_pushed_card_loads_with_its_metadata_and_every_image(full_push, api, local_hub):
    run, repo_id, _ = full_push
    card = ModelCard.load(repo_id, token=local_hub.token)
    data = card.data
    assert data.license == "apache-2.0"  # the tiny base model's licence, read from its card on the hub
    assert data.library_name == "diffusers" and data.pipeline_tag == "text-to-image"
    assert data.base_model == "hubtools/tiny-stable-diffusion"
    assert {"dreambooth", "stable-diffusion", "text-to-image"} <= set(data.tags) and "lora" not in data.tags
    assert data.instance_prompt == "a photo of pkblz dog" and data.datasets == ["tester/pkblz-dog"]
    assert data.widget[0]["output"]["url"] == "images/widget.png"
    remote = set(api.list_repo_files(repo_id))
    images = IMAGE_LINK.findall(card.text) + [data.widget[0]["output"]["url"]]
    assert len(images) >= 6
    assert set(images) <= remote
    card.validate()
    # the card's list of files names what the repo holds
    listed = re.findall(r"^- `([^`]+)`: ", card.text.split("## Files", 1)[1].split("## ", 1)[0], flags=re.MULTILINE)
    assert {"model_index.json", "hubtools.toml", "images/", "logs/metrics.jsonl", "concept/contact_sheet.png"} <= set(listed)
    for name in listed:
        assert name in remote or any(path.startswith(name) for path in remote if name.endswith("/")), name
    info = api.model_info(repo_id)
    assert "dreambooth" in info.tags and info.pipeline_tag == "text-to-image"


def test_repush_of_an_unchanged_run_makes_no_commit(full_push, api, local_hub):
    run, repo_id, first = full_push
    again = push_run(run, repo_id, token=local_hub.token)
    assert not again.changed and again.commit_url is None
    assert again.commit_sha == first.commit_sha == _commits(api, repo_id)[0]
    assert len(_commits(api, repo_id)) == 2


def test_changes_and_stale_files_make_one_commit_and_hand_added_files_stay(local_hub, api, tiny_model_repo, tmp_path):
    repo_id = f"{local_hub.user}/publish-stale"
    run = _finished_run(tmp_path, repo_id, base_model=tiny_model_repo)
    push_run(run, repo_id, token=local_hub.token)
    api.upload_file(path_or_fileobj=b"my notes", path_in_repo="notes.md", repo_id=repo_id)
    before = _commits(api, repo_id)

    (run / "images" / "loss_curve.png").unlink()
    (run / "train_result.json").write_text((run / "train_result.json").read_text().replace("0.1234", "0.2"))
    result = push_run(run, repo_id, token=local_hub.token, commit_message="Retrain")
    assert result.changed and result.deleted == ["images/loss_curve.png"]
    commits = api.list_repo_commits(repo_id)
    assert len(commits) == len(before) + 1 and commits[0].title == "Retrain"
    remote = set(api.list_repo_files(repo_id))
    assert "images/loss_curve.png" not in remote and "notes.md" in remote
    assert '"final_loss": 0.2' in Path(hf_hub_download(repo_id, "train_result.json")).read_text()


def test_checkpoints_go_to_step_branches_without_optimizer_state(local_hub, api, tiny_model_repo, tmp_path):
    from diffusers import StableDiffusionPipeline

    repo_id = f"{local_hub.user}/publish-branches"
    run = _finished_run(tmp_path, repo_id, base_model=tiny_model_repo)
    result = push_run(run, repo_id, token=local_hub.token, checkpoints=True)
    assert set(result.branches) == {"step-2"}
    assert {b.name for b in api.list_repo_refs(repo_id).branches} == {"main", "step-2"}
    branch_files = set(api.list_repo_files(repo_id, revision="step-2"))
    assert not [path for path in branch_files if FORBIDDEN.search(path)]
    checkpoint_unet = run / "checkpoints" / "checkpoint-000002" / "unet" / "diffusion_pytorch_model.safetensors"
    remote_unet = hf_hub_download(repo_id, "unet/diffusion_pytorch_model.safetensors", revision="step-2")
    assert _sha256(remote_unet) == _sha256(checkpoint_unet) != _sha256(run / "unet" / "diffusion_pytorch_model.safetensors")
    StableDiffusionPipeline.from_pretrained(repo_id, revision="step-2")  # a loadable pipeline at that step
    # main holds the final model, and pushing again changes no branch
    assert not [path for path in api.list_repo_files(repo_id) if FORBIDDEN.search(path)]
    again = push_run(run, repo_id, token=local_hub.token, checkpoints=True)
    assert not again.changed and again.branches == result.branches


def test_token_is_nowhere(full_push, local_hub, tmp_path):
    run, repo_id, _ = full_push
    token = local_hub.token.encode()
    for path in run.rglob("*"):
        if path.is_file():
            assert token not in path.read_bytes(), path
    snapshot = Path(snapshot_download(repo_id, local_dir=tmp_path / "snapshot"))
    files = [p for p in snapshot.rglob("*") if p.is_file()]
    assert len(files) > 10
    for path in files:
        assert token not in path.read_bytes(), path



def test_paths_of_this_machine_stay_on_it(local_hub, api, tmp_path):
    """A local base model and photo folder appear by their last name only, in the card and the pushed config."""
    photos = tmp_path / "my" / "secret" / "photos" / "dog"
    photos.mkdir(parents=True)
    repo_id = f"{local_hub.user}/publish-local-paths"
    run = _finished_run(tmp_path, repo_id, concept_source=str(photos), checkpoints=False)
    push_run(run, repo_id, token=local_hub.token)
    pushed = Path(snapshot_download(repo_id, local_dir=tmp_path / "snapshot"))
    for path in pushed.rglob("*"):
        if path.is_file() and path.suffix in {".md", ".toml", ".json", ".jsonl"}:
            assert str(tmp_path).encode() not in path.read_bytes(), path
    shared = load_config(pushed / "hubtools.toml")
    assert shared.concept.source == "dog" and shared.model.base_model == "base"
    assert "The photos came from a local folder (`dog`)" in (pushed / "README.md").read_text()
    # the run keeps the real paths: resuming and re-sampling still find the photos and the base model
    assert load_run_config(run).concept.source == str(photos)

def test_hub_errors_are_one_line_and_never_show_the_token(full_push, local_hub, monkeypatch, tmp_path):
    run, _, _ = full_push
    with pytest.raises(HubError) as refused:
        push_run(run, f"{local_hub.other_user}/publish-not-mine", token=local_hub.token)
    message = str(refused.value)
    assert "publish-not-mine" in message and "\n" not in message and local_hub.token not in message

    bad_token = "tester-secret-token-but-wrong"
    with pytest.raises(HubError) as bad:
        push_run(run, f"{local_hub.user}/publish-bad-token", token=bad_token)
    assert bad_token not in str(bad.value) and "\n" not in str(bad.value)

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "no-login"))
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(tmp_path / "no-login" / "token"))
    with pytest.raises(HubError, match="HF_TOKEN or run `hf auth login`"):
        push_run(run, f"{local_hub.user}/publish-no-token")


def test_token_from_the_environment(full_push, hf_token, api):
    run, _, _ = full_push
    result = push_run(run, "tester/publish-from-env")  # no token argument: HF_TOKEN, as a user's shell has it
    assert result.changed and "README.md" in api.list_repo_files("tester/publish-from-env")


def _run_card_snippet(repo_id: str, cwd: Path, local_hub) -> subprocess.CompletedProcess:
    snippet = re.findall(r"```python\n(.*?)```", ModelCard.load(repo_id).text, flags=re.DOTALL)[0]
    env = {**os.environ, "HF_ENDPOINT": local_hub.url, "HF_HUB_DISABLE_XET": "1", "HF_TOKEN": local_hub.token}
    return subprocess.run([sys.executable, "-c", snippet], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow  # two fresh interpreters importing torch and diffusers
def test_usage_snippets_of_pushed_cards_run(full_push, local_hub, tiny_model_repo, tmp_path):
    from PIL import Image

    # full fine-tune: the pipeline from the repo
    _, repo_id, _ = full_push
    (tmp_path / "full").mkdir()
    done = _run_card_snippet(repo_id, tmp_path / "full", local_hub)
    assert done.returncode == 0, done.stderr[-2000:]
    assert Image.open(tmp_path / "full" / "pkblz-dog.png").size == (64, 64)

    # LoRA: the base model from the hub, then the repo's LoRA weights over it
    lora_repo = f"{local_hub.user}/publish-lora"
    sha = HfApi().model_info(tiny_model_repo).sha
    run = _finished_run(tmp_path / "lora-run", lora_repo, lora=True, base_model=tiny_model_repo, base_revision=sha)
    push_run(run, lora_repo, token=local_hub.token)
    remote = set(HfApi().list_repo_files(lora_repo))
    assert "pytorch_lora_weights.safetensors" in remote and "model_index.json" not in remote
    assert "lora" in ModelCard.load(lora_repo).data.tags
    (tmp_path / "lora").mkdir()
    done = _run_card_snippet(lora_repo, tmp_path / "lora", local_hub)
    assert done.returncode == 0, done.stderr[-2000:]
    assert Image.open(tmp_path / "lora" / "pkblz-dog.png").size == (64, 64)


# -- an interrupted push ---------------------------------------------------------------------------------


class _SlowUploadProxy:
    """A TCP proxy to the local hub that stalls uploads part-way (an LFS upload, or a commit whose files
    travel inline: the hub asks for files up to 10 MB inline) and says when one is stuck there.

    Stalling (rather than slowing) makes sure the push cannot finish before the test kills it."""

    def __init__(self, upstream_port: int, after_bytes: int = 256 * 1024) -> None:
        self.upstream_port, self.after_bytes = upstream_port, after_bytes
        self.uploading = threading.Event()
        self.closed = threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self.sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, from_client: bool) -> None:
        uploaded = 0
        try:
            while chunk := source.recv(65536):
                if from_client and (uploaded or b"PUT /api/lfs-upload/" in chunk or b"/commit/main " in chunk):
                    uploaded += len(chunk)
                    if uploaded > self.after_bytes:
                        self.uploading.set()
                        self.closed.wait()
                        return
                target.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.closed.set()
        self.server.close()
        for sock in self.sockets:
            sock.close()


def test_push_killed_mid_upload_leaves_main_unchanged_and_the_retry_completes(local_hub, api, tiny_model_repo, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    repo_id = f"{local_hub.user}/publish-interrupted"
    run = _finished_run(tmp_path, repo_id, base_model=tiny_model_repo)
    first = push_run(run, repo_id, token=local_hub.token)
    unet_path = "unet/diffusion_pytorch_model.safetensors"
    old_unet = _sha256(run / unet_path)

    # new weights (several MB, an LFS file) and a new card, pushed by a process killed mid-upload
    weights = load_file(run / unet_path)
    save_file({name: tensor + 0.01 * torch.ones_like(tensor) for name, tensor in weights.items()}, run / unet_path)
    new_unet = _sha256(run / unet_path)
    assert (run / unet_path).stat().st_size > 2 * 256 * 1024
    render_model_card(run, repo_id=repo_id)

    proxy = _SlowUploadProxy(int(local_hub.url.rsplit(":", 1)[1]))
    env = {**os.environ, "HF_ENDPOINT": proxy.url, "HF_HUB_DISABLE_XET": "1", "HF_TOKEN": local_hub.token}
    script = f"from hubtools.publish import push_run; push_run({str(run)!r}, {repo_id!r})"
    pusher = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proxy.uploading.wait(timeout=120), pusher.communicate(timeout=5)
        pusher.kill()
        pusher.wait(timeout=30)
    finally:
        proxy.close()
        if pusher.poll() is None:
            pusher.kill()
    assert pusher.returncode != 0

    # main is exactly as the first push left it
    assert _commits(api, repo_id)[0] == first.commit_sha
    assert api.model_info(repo_id, files_metadata=True).sha == first.commit_sha
    remote_unet = next(s for s in api.model_info(repo_id, files_metadata=True).siblings if s.rfilename == unet_path)
    assert remote_unet.lfs.sha256 == old_unet

    # the retry completes it in one commit
    retried = push_run(run, repo_id, token=local_hub.token)
    assert retried.changed and _commits(api, repo_id)[:2] == [retried.commit_sha, first.commit_sha]
    assert _sha256(hf_hub_download(repo_id, unet_path, revision=retried.commit_sha)) == new_unet
    assert Path(hf_hub_download(repo_id, "README.md", revision=retried.commit_sha)).read_text() == (run / "README.md").read_text()
    assert not push_run(run, repo_id, token=local_hub.token).changed


def test_hackathon_entry_passes_the_submission_check(local_hub, api, tiny_model_repo, tmp_path):
    from hubtools.config import RUN_CONFIG_FILENAME, load_run_config, save_config
    from hubtools.hackathon import check_submission

    repo_id = f"{local_hub.user}/publish-animal"
    run = build_run(tmp_path, base_model=tiny_model_repo, checkpoints=False)
    config = load_run_config(run)
    config.publish.hackathon_theme = "animal"
    save_config(config, run / RUN_CONFIG_FILENAME)
    (run / "images" / "samples.json").unlink(missing_ok=True)
    card = render_model_card(run, repo_id=repo_id)
    assert {"dreambooth-hackathon", "animal"} <= set(card.data.tags)
    assert card.data.widget[-1] == {"text": "a photo of pkblz dog swimming in a coral reef"}
    assert "## DreamBooth Hackathon: Animal" in card.text
    push_run(run, repo_id, token=local_hub.token)
    results = check_submission(repo_id, token=local_hub.token)
    assert [r for r in results if not r.passed] == [], results


def test_push_command(full_push, hf_token, capsys, tmp_path):
    from hubtools.cli.app import main

    run, repo_id, first = full_push
    run = Path(shutil.copytree(run, tmp_path / "run"))  # the command re-renders the card for the repo it is given
    assert main(["push", str(run), repo_id]) == 0
    out = capsys.readouterr()
    assert "nothing changed" in out.err and repo_id in out.out
    assert main(["push", str(run), "other/publish-not-mine"]) == 2
    out = capsys.readouterr()
    assert out.err.startswith("error: could not push to other/publish-not-mine: HTTP 40") and hf_token not in out.err + out.out
    assert "Traceback" not in out.err



def test_push_command_keeps_a_custom_card_template_and_follows_push_checkpoints(
    local_hub, api, tiny_model_repo, hf_token, tmp_path, capsys
):
    from hubtools.cli.app import main
    from hubtools.config import RUN_CONFIG_FILENAME, load_run_config, save_config

    first_repo, second_repo = f"{local_hub.user}/publish-template-a", f"{local_hub.user}/publish-template-b"
    run = _finished_run(tmp_path, first_repo, base_model=tiny_model_repo)
    config = load_run_config(run)
    config.publish.push_checkpoints = True
    save_config(config, run / RUN_CONFIG_FILENAME)
    template = tmp_path / "mine.md.j2"
    template.write_text("---\n{{ card_data }}\n---\n\n# {{ model_name }}, carded my way\n")
    assert main(["card", str(run), "--template", str(template), "--repo", first_repo]) == 0
    template.unlink()  # the run keeps its own copy
    assert main(["push", str(run), second_repo]) == 0  # another repo: the card is rendered again, from the copy
    capsys.readouterr()
    card = ModelCard.load(hf_hub_download(second_repo, "README.md"))
    assert card.text.strip() == "# publish-template-b, carded my way"
    assert "card_template.md.j2" not in api.list_repo_files(second_repo)
    assert {b.name for b in api.list_repo_refs(second_repo).branches} == {"main", "step-2"}

def test_bad_repo_id_and_unreachable_hub_are_one_line_errors(full_push, local_hub, tmp_path):
    from hubtools.errors import ConfigError

    run = Path(shutil.copytree(full_push[0], tmp_path / "run"))
    with pytest.raises(ConfigError, match="namespace/name"):
        push_run(run, "no-namespace", token=local_hub.token)
    with socket.socket() as sock:  # a port with nothing listening
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    env = {**os.environ, "HF_ENDPOINT": dead, "HF_HUB_DISABLE_XET": "1", "HF_TOKEN": local_hub.token}
    done = subprocess.run([sys.executable, "-m", "hubtools", "push", str(run), "tester/publish-unreachable"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"error: could not reach the Hub at {dead} to push to tester/publish-unreachable")
    assert "Traceback" not in done.stderr and local_hub.token not in done.stderr + done.stdout
