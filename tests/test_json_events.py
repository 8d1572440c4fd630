"""``hubtools --json``: every command speaks one JSON event per stdout line, and nothing else there.

Each leaf of ``hubtools --help`` runs here with the global ``--json`` (a few in a subprocess as users run them,
the others through ``main`` in this process), and every line of its stdout must parse as an event of the
protocol (docs/architecture.md). ``--quiet`` leaves only results and errors.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hubtools.cli.app import main
from hubtools.resources import DEMO_CONCEPT_DIR

TINY = ["--resolution", "64", "--steps", "2", "--lr", "5e-4", "--device", "cpu", "--no-prior",
        "--checkpoint-every", "1"]
FIELDS = {
    "stage": {"message": str}, "note": {"message": str}, "warning": {"message": str},
    "progress": {"what": str, "done": int, "total": int}, "metric": {"step": int, "values": dict},
    "artifact": {"kind": str, "path": str}, "result": {"data": dict}, "error": {"message": str, "exit_code": int},
}


def parse_events(stdout: str) -> list[dict]:
    """Every stdout line as an event of the protocol (a line that is not one fails the test)."""
    events = []
    for line in stdout.splitlines():
        event = json.loads(line)
        assert isinstance(event.get("time"), float), line
        for name, kind in FIELDS[event["event"]].items():
            assert isinstance(event[name], kind), line
        events.append(event)
    return events


def run_json(capsys, *args, code: int = 0) -> list[dict]:
    """``hubtools --json ARGS`` in this process: its events (the exit code checked)."""
    returned = main(["--json", *map(str, args)])
    out = capsys.readouterr().out
    assert returned == code, out[-3000:]
    events = parse_events(out)
    if code:
        assert events[-1]["event"] == "error" and events[-1]["exit_code"] == code
    return events


def hubtools_json(*args, token: str | None = None, cwd: Path | None = None) -> tuple[subprocess.CompletedProcess, list[dict]]:
    env = {key: value for key, value in os.environ.items() if key not in ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_TOKEN")}
    if token:
        env["HF_TOKEN"] = token
    done = subprocess.run([sys.executable, "-m", "hubtools", "--json", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done, parse_events(done.stdout)


def kinds(events: list[dict]) -> set[str]:
    return {event["event"] for event in events}


@pytest.fixture(scope="module")
def encoder_dirs(tmp_path_factory) -> tuple[Path, Path]:
    from test_evaluation_run import build_tiny_encoder_folders

    return build_tiny_encoder_folders(tmp_path_factory.mktemp("encoders"))


def _small_config(path: Path, extra: str = "") -> Path:
    path.write_text("[sampling]\nnum_inference_steps = 2\nseeds = [0]\nguidance_scales = [7.0]\n"
                    'prompts = ["a photo of {identifier} {class_noun}"]\n' + extra, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def pushed(tmp_path_factory, tiny_model_repo, local_hub, encoder_dirs) -> tuple[Path, str, list[dict]]:
    """``hubtools --json train-and-push --eval`` in a subprocess: (run folder, repo id, its events)."""
    root = tmp_path_factory.mktemp("json")
    prompts = root / "prompts.txt"
    prompts.write_text("a photo of {identifier} {class_noun}\n", encoding="utf-8")
    config = _small_config(root / "eval.toml", (
        f'\n[eval]\nprompts = "{prompts.as_posix()}"\nn_per_prompt = 1\nn_class_images = 1\n'
        f'dino_model = "{encoder_dirs[0].as_posix()}"\nclip_model = "{encoder_dirs[1].as_posix()}"\n'
    ))
    repo_id = f"{local_hub.user}/json-events"
    _, events = hubtools_json("train-and-push", config, "--base-model", tiny_model_repo, "--concept", DEMO_CONCEPT_DIR,
                              "--identifier", "nlwx", "--class-noun", "dog", "--repo", repo_id, "--out", root / "run",
                              *TINY, "--eval", token=local_hub.token)
    return root / "run", repo_id, events


def test_train_and_push_emits_every_kind_of_event(pushed, local_hub):
    run, repo_id, events = pushed
    assert {"stage", "progress", "metric", "artifact", "result"} <= kinds(events)
    assert {event["what"] for event in events if event["event"] == "progress"} >= {"training", "grids"}
    losses = [event for event in events if event["event"] == "metric"]
    assert [event["step"] for event in losses] == [1, 2] and all("loss" in event["values"] for event in losses)
    artifacts = {(event["kind"], event["path"]) for event in events if event["event"] == "artifact"}
    assert {("grid", "images/samples_grid.png"), ("loss_curve", "images/loss_curve.png"), ("card", "README.md"),
            ("checkpoint", "checkpoints/checkpoint-000001")} <= artifacts
    assert all((run / path).exists() for _, path in artifacts)
    assert events[-1]["event"] == "result" and events[-1]["data"]["url"] == f"{local_hub.url}/{repo_id}"
    assert events[-1]["data"]["run_dir"] == str(run)


def test_quiet_prints_only_results(tmp_path, capsys):
    code = main(["--quiet", "train-and-push", "--concept", str(DEMO_CONCEPT_DIR), "--identifier", "nlwx",
                 "--class-noun", "dog", "--repo", "me/x", "--out", str(tmp_path / "run"), "--dry-run"])
    captured = capsys.readouterr()
    assert code == 0 and "a photo of nlwx dog" in captured.out and captured.err == ""
    assert main(["--quiet", "train-and-push", "--concept", "no/such/folder", "--identifier", "nlwx",
                 "--class-noun", "dog", "--repo", "me/x", "--dry-run"]) == 2
    assert capsys.readouterr().err.startswith("error: concept folder not found")


def test_an_error_is_an_event_with_the_exit_code(tmp_path, capsys):
    events = run_json(capsys, "train-and-push", "--concept", "no/such/folder", "--identifier", "nlwx",
                      "--class-noun", "dog", "--repo", "me/x", "--dry-run", code=2)
    assert events[-1]["message"].startswith("concept folder not found")
    usage = run_json(capsys, "train-and-push", "--no-such-flag", code=2)
    assert "--no-such-flag" in usage[-1]["message"]


def test_only_the_main_process_reports(monkeypatch, capsys):
    monkeypatch.setenv("RANK", "1")
    assert main(["--json", "identifier", "check", "nlwx"]) == 0
    assert capsys.readouterr().out == ""


def test_the_run_commands(pushed, tmp_path, capsys, tiny_model_repo, local_hub, encoder_dirs, hf_token):
    run, repo_id, _ = pushed
    trained = run_json(capsys, "train", "--config", _small_config(tmp_path / "small.toml"), "--base-model",
                       tiny_model_repo, "--concept", DEMO_CONCEPT_DIR, "--identifier", "nlwx", "--class-noun", "dog",
                       "--out", tmp_path / "train", *TINY)
    assert {"stage", "progress", "metric", "artifact"} <= kinds(trained)
    assert trained[-1]["data"] == {"run_dir": str(tmp_path / "train")}
    sampled = run_json(capsys, "sample", run, "--device", "cpu")
    assert any(event["event"] == "artifact" and event["kind"] == "grid" for event in sampled)
    evaluated = run_json(capsys, "eval", run, "--device", "cpu", "--no-baseline")
    assert any(event["event"] == "result" and "rows" in event["data"] for event in evaluated)
    carded = run_json(capsys, "card", run)
    assert carded[-1]["data"] == {"card": str(run / "README.md")}
    again = run_json(capsys, "push", run, repo_id)
    assert again[-1]["data"]["url"] == f"{local_hub.url}/{repo_id}"


def test_the_concept_identifier_and_hackathon_commands(tmp_path, capsys, local_hub, hf_token, tiny_model_repo):
    prepared = tmp_path / "prepared"
    assert "result" in kinds(run_json(capsys, "concept", "prepare", DEMO_CONCEPT_DIR, "--out", prepared,
                                      "--resolution", "64"))
    repo_id = f"{local_hub.user}/json-photos"
    assert run_json(capsys, "concept", "push", prepared, repo_id)[-1]["data"]["url"].endswith(repo_id)
    run_json(capsys, "concept", "pull", repo_id, "--out", tmp_path / "pulled", "--resolution", "64")
    assert run_json(capsys, "identifier", "check", "nlwx")
    assert len(run_json(capsys, "identifier", "suggest", "--n", "2", "--json")[-1]["data"]["items"]) == 2
    run_json(capsys, "identifier", "suggest", "--n", "2")
    run_json(capsys, "hackathon", "themes")
    run_json(capsys, "hackathon", "leaderboard")
    run_json(capsys, "hackathon", "datasets")
    failed = run_json(capsys, "hackathon", "check", tiny_model_repo, code=1)  # not an entry: rules fail
    assert any(event["event"] == "result" for event in failed)


def test_the_hub_admin_commands(tmp_path, capsys, tiny_model_repo, local_hub):
    data = tmp_path / "hub"
    added = run_json(capsys, "hub", "token", "add", "dora", "--write", "--data", data)
    token_id = next(event["data"]["token_id"] for event in added if event["event"] == "result")
    assert run_json(capsys, "hub", "token", "list", "--data", data)[-1]["data"]["rows"][0][0] == token_id
    run_json(capsys, "hub", "token", "revoke", token_id, "--data", data)
    run_json(capsys, "hub", "fsck", "--data", data)
    run_json(capsys, "hub", "gc", "--data", data, "--dry-run")
    run_json(capsys, "hub", "backup", tmp_path / "copy", "--data", data)
    hub_data = local_hub.data_dir
    assert run_json(capsys, "hub", "set-likes", tiny_model_repo, "3", "--data", hub_data)[-1]["data"]["likes"] == 3
    run_json(capsys, "hub", "set-downloads", tiny_model_repo, "5", "--data", hub_data)
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps([{"repo_id": tiny_model_repo, "likes": 4}]))
    run_json(capsys, "hub", "seed", seed, "--data", hub_data)
    # internal to `serve --with-tiny-model`: without its token it is one clear error event
    run_json(capsys, "hub", "publish-tiny-model", "--endpoint", local_hub.url, code=2)


def _first_event_of_a_server(*args: str) -> dict:
    """Start a server command with --json, read its first event, stop it with Ctrl-C; all its lines are events."""
    env = {key: value for key, value in os.environ.items() if key != "HF_TOKEN"}
    process = subprocess.Popen([sys.executable, "-m", "hubtools", "--json", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    try:
        first = parse_events(process.stdout.readline())[0]
    finally:
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=30)
    parse_events(out)
    return first


def test_hub_serve_speaks_json_from_its_first_line(tmp_path):
    first = _first_event_of_a_server("hub", "serve", "--data", str(tmp_path / "d"), "--port", "0",
                                     "--token", "carol=json-token")
    assert first["event"] == "result" and first["data"]["url"].startswith("http://127.0.0.1:")


def test_studio_speaks_json_from_its_first_line(tmp_path):
    first = _first_event_of_a_server("studio", "--data", str(tmp_path / "studio"), "--port", "0")
    assert first["event"] == "result" and first["data"]["text"].startswith("http://127.0.0.1:")


@pytest.mark.slow
def test_demo_speaks_json(tmp_path):
    _, events = hubtools_json("demo", "--out", tmp_path / "demo", "--steps", "2", cwd=tmp_path)
    assert {"stage", "progress", "metric", "artifact", "result"} <= kinds(events)
    assert events[-1]["data"]["url"].endswith("/demo/nlwx-dog")


COVERED_HERE = {
    "train-and-push": "test_train_and_push_emits_every_kind_of_event", "train": "test_the_run_commands",
    "sample": "test_the_run_commands", "eval": "test_the_run_commands", "card": "test_the_run_commands",
    "push": "test_the_run_commands", "demo": "test_demo_speaks_json",
    "hub serve": "test_hub_serve_speaks_json_from_its_first_line",
    "studio": "test_studio_speaks_json_from_its_first_line",
    **{f"hub {name}": "test_the_hub_admin_commands" for name in (
        "set-likes", "set-downloads", "seed", "publish-tiny-model", "token add", "token list", "token revoke",
        "fsck", "gc", "backup")},
    **{f"concept {name}": "test_the_concept_identifier_and_hackathon_commands" for name in ("prepare", "push", "pull")},
    **{f"identifier {name}": "test_the_concept_identifier_and_hackathon_commands" for name in ("check", "suggest")},
    **{f"hackathon {name}": "test_the_concept_identifier_and_hackathon_commands"
       for name in ("themes", "check", "leaderboard", "datasets")},
}


def test_every_command_runs_here_with_json():
    import typer

    from hubtools.cli.app import app
    from test_cli_commands import _leaves

    assert set(_leaves(typer.main.get_command(app))) == set(COVERED_HERE), "run each new command with --json here"
