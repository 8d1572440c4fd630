"""Issue 30: no run leaves anything in the system temp directory (the CLIP tokenizer is built once into the
user's cache, not into a new temp folder per run). Every command of tests/test_cli_commands.py and the demo's test
run with a temp dir of their own and check it is left empty."""

from __future__ import annotations


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
