"""Every command of ``hubtools --help``, run as a user runs it: ``python -m hubtools ...`` in a subprocess,
with its default output (progress bars on, no ``--quiet``), on the tiny model and the session's local hub.

Whatever else a test checks, a command must never end in ``unexpected error`` or a traceback. The three
regression tests of issue #15 are here too: ``--eval`` in train-and-push, ``[concept]`` eaten as markup,
and the caption note that ``hubtools train`` never showed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from hubtools.resources import DEMO_CONCEPT_DIR

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = ["--resolution", "64", "--steps", "2", "--lr", "5e-4", "--device", "cpu", "--no-prior",
        "--checkpoint-every", "0"]


def user_env(token: str | None = None) -> dict[str, str]:
    """The test session's environment (local hub, caches) less the switches a user would not have set."""
    # TORCHINDUCTOR_CACHE_DIR: torch sets it in this process once torch._dynamo is imported; a user has none
    env = {key: value for key, value in os.environ.items()
           if key not in ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_TOKEN", "TORCHINDUCTOR_CACHE_DIR")}
    if token:
        env["HF_TOKEN"] = token
    return env


def hubtools(*args, token: str | None = None, cwd: Path | None = None, timeout: int = 600,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m hubtools ARGS`` as a user runs it (in ``env``, default ``user_env(token)``), with a temp dir of
    its own that it must leave empty (issue 30: nothing of a run stays behind in the system temp directory)."""
    temp_dir = Path(tempfile.mkdtemp(prefix="hubtools-cli-tmp-"))
    try:
        result = subprocess.run([sys.executable, "-m", "hubtools", *map(str, args)], capture_output=True, text=True,
                                env={**(user_env(token) if env is None else env), "TMPDIR": str(temp_dir)}, cwd=cwd,
                                timeout=timeout)
        output = result.stdout + result.stderr
        assert "unexpected error" not in output and "Traceback" not in output, output[-4000:]
        left = sorted(p.name for p in temp_dir.iterdir())
        assert left == [], f"`hubtools {' '.join(map(str, args[:2]))}` left {left} in its temp dir"
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    return result


def _small_config(path: Path, extra: str = "") -> Path:
    path.write_text(
        "[sampling]\nnum_inference_steps = 2\nseeds = [0]\nguidance_scales = [7.0]\n"
        'prompts = ["a photo of {identifier} {class_noun}"]\n' + extra,
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="module")
def encoder_dirs(tmp_path_factory) -> tuple[Path, Path]:
    from test_evaluation_run import build_tiny_encoder_folders

    return build_tiny_encoder_folders(tmp_path_factory.mktemp("encoders"))


@pytest.fixture(scope="module")
def captioned_photos(tmp_path_factory) -> Path:
    """The demo's dog photos with captions that do not name the identifier."""
    folder = tmp_path_factory.mktemp("captioned")
    rows = []
    for photo in sorted(DEMO_CONCEPT_DIR.iterdir()):
        if photo.suffix.lower() in (".jpg", ".jpeg", ".png"):
            shutil.copy(photo, folder / photo.name)
            rows.append(json.dumps({"file_name": photo.name, "text": "a dog on the grass"}))
    (folder / "metadata.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_repo, captioned_photos) -> tuple[Path, subprocess.CompletedProcess]:
    """``hubtools train`` of a tiny run: (run folder, the finished process)."""
    root = tmp_path_factory.mktemp("cli")
    run = root / "run"
    result = hubtools("train", "--config", _small_config(root / "small.toml"), "--base-model", tiny_model_repo,
                      "--concept", captioned_photos, "--identifier", "nlwx", "--class-noun", "dog", "--out", run, *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    return run, result


# -- the three bugs of issue #15 ---------------------------------------------------------------------------


def test_train_shows_the_caption_note(trained):
    run, result = trained
    assert "captions from the concept set do not contain 'nlwx'" in " ".join(result.stderr.split())
    assert result.stdout.strip().splitlines()[-1] == str(run)


def test_train_speaks_in_hubtools_voice_only(trained):
    """Stages, notes and warnings on stderr, and the Hub's own download bars (real transfers): nothing the
    libraries say at import or load time (bitsandbytes' kernel fetch, diffusers' and transformers' loading)."""
    _, result = trained
    ours = ("==> ", "note: ", "warning: ", "Fetching ")
    foreign = [line for line in result.stderr.splitlines() if line.strip() and not line.lstrip().startswith(ours)]
    assert foreign == [], result.stderr[-3000:]


def test_dry_run_without_concept_names_the_config_section():
    result = hubtools("train-and-push", "--config", "hackathon/pokeball-machine.toml", "--dry-run", cwd=REPO_ROOT)
    assert result.returncode == 2
    assert "set them in the config's [concept] section" in " ".join(result.stderr.split()), result.stderr


def test_train_and_push_with_eval_on_default_output(tmp_path, tiny_model_repo, local_hub, encoder_dirs):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a photo of {identifier} {class_noun}\n", encoding="utf-8")
    config = _small_config(tmp_path / "eval.toml", (
        f'\n[eval]\nprompts = "{prompts.as_posix()}"\nn_per_prompt = 1\n'
        f'dino_model = "{encoder_dirs[0].as_posix()}"\nclip_model = "{encoder_dirs[1].as_posix()}"\n'
    ))
    repo_id = f"{local_hub.user}/cli-eval"
    result = hubtools("train-and-push", config, "--base-model", tiny_model_repo, "--concept", DEMO_CONCEPT_DIR,
                      "--identifier", "nlwx", "--class-noun", "dog", "--repo", repo_id, "--out", tmp_path / "run",
                      *TINY, "--eval", token=local_hub.token)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == f"{local_hub.url}/{repo_id}"
    assert json.loads((tmp_path / "run" / "eval.json").read_text())["ours"]["dino"] is not None
    assert "DINO" in (tmp_path / "run" / "README.md").read_text(encoding="utf-8")


# -- bracketed messages reach the user as written --------------------------------------------------------


def test_a_bracketed_error_from_eval_prints_as_written(tmp_path):
    (tmp_path / "hubtools.toml").write_text('[model]\nbase_model = "hubtools/tiny-stable-diffusion"\n')
    result = hubtools("eval", tmp_path)
    assert result.returncode == 2 and "set [concept] identifier and class_noun" in " ".join(result.stderr.split())


def test_a_bracketed_error_from_concept_prepare_prints_as_written(tmp_path):
    result = hubtools("concept", "prepare", "not/a/folder/here", "--out", tmp_path / "out")
    assert result.returncode == 2 and "namespace/name[@revision]" in " ".join(result.stderr.split()), result.stderr


@pytest.mark.parametrize("message", [
    "prior.source 'x' is neither a folder nor a Hub dataset id (namespace/name[@revision])",
    "a photo called [red].jpg, and [bold]this[/bold] is not bold",
    "set them in the config's [concept] section",
])
def test_the_console_prints_brackets_as_themselves(message, capsys):
    from hubtools.cli import console

    console.error(message)
    console.note(message)
    console.result(message)
    captured = capsys.readouterr()
    assert captured.err == f"error: {message}\nnote: {message}\n" and captured.out == f"{message}\n"


# -- every other command ---------------------------------------------------------------------------------------


def test_train_resume_of_a_finished_run(trained):
    run, _ = trained
    result = hubtools("train", run, "--resume")
    assert result.returncode == 0 and "nothing to resume" in result.stderr


def test_ctrl_c_in_training_says_how_to_go_on_and_resume_does(tmp_path, tiny_model_repo):
    """Ctrl-C (SIGINT) as a user presses it, progress bars on: exit 130 and one line naming the checkpoint and
    the command that continues from it; that command then finishes the run."""
    import signal
    import time

    run = tmp_path / "run"
    temp_dir = tmp_path / "tmp"
    temp_dir.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "hubtools", "train", "--base-model", tiny_model_repo, "--concept", DEMO_CONCEPT_DIR,
         "--identifier", "nlwx", "--class-noun", "dog", "--out", run, "--resolution", "64", "--steps", "150",
         "--checkpoint-every", "10", "--device", "cpu", "--no-prior"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**user_env(), "TMPDIR": str(temp_dir), "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 240
    while not (run / "checkpoints" / "checkpoint-000010").is_dir() and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"error: interrupted: `hubtools train {run} --resume` continues from the checkpoint of "
                           "step "), err[-2000:]
    assert last.endswith(" (of 150)") and "Traceback" not in err
    stopped_at = int(last.split("checkpoint of step ")[1].split()[0])
    assert 10 <= stopped_at < 150 and list(temp_dir.iterdir()) == []

    resumed = hubtools("train", run, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"150 steps from step {stopped_at}" in resumed.stderr
    assert json.loads((run / "train_result.json").read_text())["steps_done"] == 150


def test_stages_after_training_refuse_a_run_that_has_not_trained_naming_the_command_that_does(tmp_path, capsys):
    """A run stopped before its weights were saved: card, push, sample and eval say so in one line (before a card
    is written or an encoder fetched), naming `train RUN --resume`, the command that works on that folder."""
    from hubtools.cli.app import main
    from test_training_support import make_run

    _, run = make_run(tmp_path, base=tmp_path)  # set up, never trained
    expected = f"error: run {run} has no trained model yet: `hubtools train {run} --resume` trains it"
    for command in (["card", run], ["push", run, "me/x"], ["sample", run], ["eval", run]):
        assert main([str(part) for part in command]) == 2, command
        assert capsys.readouterr().err.strip().splitlines()[-1] == expected, command
    assert not (run / "README.md").exists()


def test_sample(trained):
    run, _ = trained
    result = hubtools("sample", run, "--device", "cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    grids = [Path(line) for line in result.stdout.split()]
    assert grids and all(grid.suffix == ".png" and grid.is_file() for grid in grids)


def test_card(trained, tmp_path):
    run, _ = trained
    template = tmp_path / "card.md.j2"
    template.write_text("---\n{{ card_data }}\n---\n# {{ model_name }} [by hand]\n", encoding="utf-8")
    result = hubtools("card", run, "--template", template, "--repo", "tester/by-hand")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(run / "README.md")
    assert "[by hand]" in (run / "README.md").read_text(encoding="utf-8")
    assert "note: the run keeps this template" in result.stderr


def test_push_and_hackathon_check(trained, local_hub):
    run, _ = trained
    repo_id = f"{local_hub.user}/cli-push"
    result = hubtools("push", run, repo_id, token=local_hub.token)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == f"{local_hub.url}/{repo_id}"
    again = hubtools("push", run, repo_id, token=local_hub.token)
    assert again.returncode == 0 and "nothing changed since the last push" in again.stderr

    check = hubtools("hackathon", "check", repo_id)
    assert check.returncode == 1 and "rules fail" in check.stdout  # not a hackathon entry: rules fail, cleanly


def test_eval(trained, encoder_dirs):
    run, _ = trained
    result = hubtools("eval", run, "--max-prompts", "1", "--n-per-prompt", "1", "--n-class-images", "1",
                      "--steps", "2", "--device", "cpu", "--dino-model", encoder_dirs[0],
                      "--clip-model", encoder_dirs[1])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "CLIP-T" in result.stdout and (run / "eval.json").is_file()


def test_train_and_push_dry_run_and_set(tmp_path):
    base = ["train-and-push", "--concept", DEMO_CONCEPT_DIR, "--identifier", "nlwx", "--class-noun", "dog",
            "--repo", "me/x", "--out", tmp_path / "run", "--dry-run"]
    result = hubtools(*base, "--set", "sampling.seeds=[0, 1]", "--set", "training.steps=7",
                      "--vae", "someone/sdxl-vae-fp16-fix")
    assert result.returncode == 0, result.stderr
    assert "4 prompts x 2 seeds" in result.stdout and "7 steps" in result.stdout
    assert "someone/sdxl-vae-fp16-fix" in result.stdout
    typo = hubtools(*base, "--set", "training.stepz=3")
    assert typo.returncode == 2 and "--set training.stepz: unknown setting (did you mean training.steps?)" in typo.stderr
    bad = hubtools(*base, "--set", "training.resolution=100")
    assert bad.returncode == 2 and "--set (training.resolution): must be a multiple of 8" in bad.stderr


def test_concept_prepare_push_and_pull(tmp_path, local_hub):
    prepared = tmp_path / "prepared"
    result = hubtools("concept", "prepare", DEMO_CONCEPT_DIR, "--out", prepared, "--resolution", "64")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "accepted" in result.stdout and (prepared / "manifest.json").is_file()
    repo_id = f"{local_hub.user}/cli-photos"
    pushed = hubtools("concept", "push", prepared, repo_id, "--identifier", "nlwx", "--class-noun", "dog",
                      token=local_hub.token)
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    pulled = hubtools("concept", "pull", repo_id, "--out", tmp_path / "pulled", "--resolution", "64")
    assert pulled.returncode == 0, pulled.stderr[-3000:]
    assert "revision:" in pulled.stdout


def test_identifier_check_and_suggest():
    check = hubtools("identifier", "check", "nlwx")
    assert check.returncode == 0 and "single token" in check.stdout
    suggest = hubtools("identifier", "suggest", "--n", "3", "--json")
    assert suggest.returncode == 0 and len(json.loads(suggest.stdout)) == 3


def test_hackathon_themes_leaderboard_and_datasets(local_hub):
    for args in (["themes"], ["leaderboard"], ["datasets"]):
        result = hubtools("hackathon", *args)
        assert result.returncode == 0, (args, result.stderr[-3000:])


def test_hub_set_likes_set_downloads_and_seed(tmp_path, local_hub, tiny_model_repo):
    data = local_hub.data_dir
    assert hubtools("hub", "set-likes", tiny_model_repo, "3", "--data", data).returncode == 0
    assert hubtools("hub", "set-downloads", tiny_model_repo, "5", "--data", data).returncode == 0
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps([{"repo_id": tiny_model_repo, "likes": 4, "downloads": 6}]))
    result = hubtools("hub", "seed", seed, "--data", data)
    assert result.returncode == 0, result.stderr


# Where each leaf of `hubtools --help` runs in a subprocess with its default output.
COVERED = {
    "train-and-push": "test_train_and_push_with_eval_on_default_output",
    "train": "test_train_shows_the_caption_note",
    "sample": "test_sample",
    "eval": "test_eval",
    "card": "test_card",
    "push": "test_push_and_hackathon_check",
    "demo": "test_demo_runs_offline_end_to_end",  # tests/test_train_and_push.py
    "studio": "test_bad_uploads_get_a_verdict_per_file_and_nothing_lands_outside_the_data_folder",  # tests/test_studio.py
    "hub serve": "test_serve_prints_the_url_first_and_publishes_the_tiny_models",  # tests/test_localhub_cli.py
    "hub set-likes": "test_hub_set_likes_set_downloads_and_seed",
    "hub set-downloads": "test_hub_set_likes_set_downloads_and_seed",
    "hub seed": "test_hub_set_likes_set_downloads_and_seed",
    # `serve --with-tiny-model` runs it in a child process, as users never do by hand (it is hidden)
    "hub publish-tiny-model": "test_serve_prints_the_url_first_and_publishes_the_tiny_models",
    "hub token add": "test_team_server_over_https_with_scoped_tokens",  # tests/test_localhub_team.py
    "hub token list": "test_team_server_over_https_with_scoped_tokens",
    "hub token revoke": "test_team_server_over_https_with_scoped_tokens",
    "hub fsck": "test_killed_mid_upload_restarts_clean_and_fsck_agrees",  # tests/test_localhub_upkeep.py
    "hub gc": "test_gc_after_deleting_a_repo_frees_its_blobs_and_keeps_every_other_repo_whole",
    "hub backup": "test_backup_during_concurrent_commits_serves_every_commit_it_holds_whole",
    "concept prepare": "test_concept_prepare_push_and_pull",
    "concept push": "test_concept_prepare_push_and_pull",
    "concept pull": "test_concept_prepare_push_and_pull",
    "identifier check": "test_identifier_check_and_suggest",
    "identifier suggest": "test_identifier_check_and_suggest",
    "hackathon themes": "test_hackathon_themes_leaderboard_and_datasets",
    "hackathon check": "test_push_and_hackathon_check",
    "hackathon leaderboard": "test_hackathon_themes_leaderboard_and_datasets",
    "hackathon datasets": "test_hackathon_themes_leaderboard_and_datasets",
}


def _leaves(command, prefix: str = "") -> list[str]:
    if hasattr(command, "commands"):  # a group
        return [leaf for name, sub in command.commands.items() for leaf in _leaves(sub, f"{prefix}{name} ")]
    return [prefix.strip()]


def test_every_command_runs_in_a_subprocess_test():
    import typer

    from hubtools.cli.app import app

    leaves = set(_leaves(typer.main.get_command(app)))
    assert leaves == set(COVERED), "add a subprocess test for each new command, and list it in COVERED"
    sources = "".join(path.read_text(encoding="utf-8") for path in Path(__file__).parent.glob("test_*.py"))
    assert all(f"def {name}(" in sources for name in COVERED.values())


def test_every_help_is_clean(capsys):
    """No stray type column, no markup left in the text (typer's rich help once showed `<bool>` for each flag)."""
    from hubtools.cli.app import main

    for leaf in COVERED:
        assert main([*leaf.split(), "--help"]) == 0, leaf
        out = capsys.readouterr().out
        assert out.startswith("Usage: hubtools"), leaf
        assert "<bool>" not in out and "[/" not in out and "\\[" not in out, leaf
