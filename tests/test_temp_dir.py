"""Issue 30: no run leaves anything in the system temp directory (the CLIP tokenizer is built once into the
user's cache, not into a new temp folder per run)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hubtools.resources import DEMO_CONCEPT_DIR

TINY = ["--resolution", "64", "--steps", "2", "--lr", "5e-4", "--device", "cpu", "--no-prior",
        "--checkpoint-every", "0", "--set", "sampling.num_inference_steps=2", "--set", "sampling.seeds=[0]",
        "--set", "sampling.guidance_scales=[7.0]"]


def _hubtools_with_tmpdir(tmpdir: Path, *args, token: str | None = None, cwd: Path | None = None) -> None:
    env = {key: value for key, value in os.environ.items() if key not in ("HF_TOKEN", "TMPDIR", "TEMP", "TMP")}
    env["TMPDIR"] = str(tmpdir)
    if token:
        env["HF_TOKEN"] = token
    done = subprocess.run([sys.executable, "-m", "hubtools", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def test_train_and_push_leaves_nothing_in_the_temp_dir(tmp_path, tiny_model_repo, local_hub):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    _hubtools_with_tmpdir(tmpdir, "train-and-push", "--base-model", tiny_model_repo, "--concept", DEMO_CONCEPT_DIR,
                          "--identifier", "nlwx", "--class-noun", "dog", "--repo", f"{local_hub.user}/no-temp",
                          "--out", tmp_path / "run", *TINY, token=local_hub.token)
    assert sorted(p.name for p in tmpdir.iterdir()) == []


@pytest.mark.slow
def test_the_demo_leaves_nothing_in_the_temp_dir(tmp_path):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    _hubtools_with_tmpdir(tmpdir, "demo", "--out", tmp_path / "demo", "--steps", "2", cwd=tmp_path)
    assert sorted(p.name for p in tmpdir.iterdir()) == []


def test_the_clip_tokenizer_is_built_once_into_the_users_cache(tmp_path, monkeypatch):
    from hubtools import tokenizer

    monkeypatch.setenv("HUBTOOLS_CACHE", str(tmp_path / "cache"))
    tokenizer._cached_folder.cache_clear()
    tokenizer._tokenizer_files.cache_clear()
    try:
        first = tokenizer.build_clip_tokenizer()
        folder = tokenizer._tokenizer_files()
        assert folder.parent == tmp_path / "cache" / "tokenizers" and (folder / "vocab.json").is_file()
        built = (folder / "vocab.json").stat().st_mtime_ns
        tokenizer._tokenizer_files.cache_clear()  # a new process: found, not built again
        second = tokenizer.build_clip_tokenizer()
        assert (folder / "vocab.json").stat().st_mtime_ns == built
        assert first("a photo of nlwx dog").input_ids == second("a photo of nlwx dog").input_ids
        assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no staging folder left beside it
    finally:
        tokenizer._cached_folder.cache_clear()
        tokenizer._tokenizer_files.cache_clear()
