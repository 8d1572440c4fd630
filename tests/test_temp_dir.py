"""Issue 30: no run leaves anything in the system temp directory (the CLIP tokenizer is built once into the
user's cache, not into a new temp folder per run; torch's compile caches go there too). Every command of
tests/test_cli_commands.py and the demo's test run with a temp dir of their own and check it is left empty. A
cache that cannot be written is the user's to fix: one line."""

from __future__ import annotations

import os
import subprocess
import sys


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


def test_torch_compile_caches_go_to_the_users_cache_when_it_can_be_written(tmp_path, monkeypatch):
    from hubtools.usercache import keep_torch_caches_here

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("HUBTOOLS_CACHE", str(tmp_path / "cache"))
    keep_torch_caches_here()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "cache" / "torchinductor")

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))  # the user's own choice wins
    keep_torch_caches_here()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "mine")

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("HUBTOOLS_CACHE", str(tmp_path / "a-file" / "cache"))  # cannot be made: torch's default
    keep_torch_caches_here()
    assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ


def test_a_cache_that_cannot_be_written_is_one_line(tmp_path):
    (tmp_path / "a-file").write_text("")
    cache = tmp_path / "a-file" / "cache"
    env = {key: value for key, value in os.environ.items() if key != "TORCHINDUCTOR_CACHE_DIR"}
    result = subprocess.run([sys.executable, "-m", "hubtools", "identifier", "check", "pkblz"], capture_output=True,
                            text=True, env={**env, "HUBTOOLS_CACHE": str(cache)}, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: the hubtools cache {cache} cannot be used (Not a directory: ")
    assert result.stderr.strip().endswith("set HUBTOOLS_CACHE to a folder you can write")
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
