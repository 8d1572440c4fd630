"""Atomic writes: the old file or the new one, never half; no temp files left; the usual permissions."""

from __future__ import annotations

import os
import stat

import pytest
from PIL import Image

from hubtools.atomic import atomic_path, save_image_atomic, write_text_atomic


def test_written_files_have_the_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "a.toml", "x = 1\n")
        save_image_atomic(Image.new("RGB", (4, 4)), tmp_path / "b.png")
    finally:
        os.umask(old)
    for name in ("a.toml", "b.png"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "config.toml"
    write_text_atomic(target, "old = true\n")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("new = tr")
            raise RuntimeError("interrupted halfway")
    assert target.read_text() == "old = true\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


def test_parent_folders_are_made(tmp_path):
    write_text_atomic(tmp_path / "a" / "b" / "c.txt", "hi")
    assert (tmp_path / "a" / "b" / "c.txt").read_text() == "hi"


def test_replace_dir_swaps_a_folder_in_whole(tmp_path):
    from hubtools.atomic import replace_dir

    final, staged = tmp_path / "final", tmp_path / "staged"
    staged.mkdir()
    (staged / "a.txt").write_text("new")
    replace_dir(staged, final)  # nothing there yet: a plain rename
    assert (final / "a.txt").read_text() == "new" and not staged.exists()
    staged.mkdir()
    (staged / "b.txt").write_text("newer")
    replace_dir(staged, final)
    assert [p.name for p in final.iterdir()] == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]  # the old folder is gone, nothing left aside
