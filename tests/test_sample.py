"""Sample grids: layout, labels, cell bookkeeping, determinism, checkpoints (full and LoRA)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from run_builders import build_run

from hubtools.config import RUN_CONFIG_FILENAME, load_run_config, save_config
from hubtools.errors import ConfigError
from hubtools.sample import SampleResult, render_samples


def _cell(run: Path, entry: dict, inset: int = 3) -> np.ndarray:
    x0, y0, x1, y1 = entry["box"]
    image = np.asarray(Image.open(run / entry["file"]).convert("RGB"))
    return image[y0 + inset:y1 - inset, x0 + inset:x1 - inset].astype(int)


def _cells(samples: dict, grid: str) -> list[dict]:
    return [c for c in samples["cells"] if c["grid"] == grid]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> tuple[Path, SampleResult]:
    run = build_run(tmp_path_factory.mktemp("full"))
    return run, render_samples(run, progress=False)


def test_writes_every_grid_and_describes_every_cell(full_run):
    run, result = full_run
    samples = json.loads((run / "images" / "samples.json").read_text())
    assert samples["grids"] == {"samples": "images/samples_grid.png", "guidance_sweep": "images/guidance_sweep.png",
                                "checkpoints": "images/checkpoints_grid.png"}
    for kind, file in samples["grids"].items():
        assert (run / file).is_file() and result.grid_files[kind] == run / file
    prompts = load_run_config(run).sample_prompts
    assert prompts[0] == "a photo of pkblz dog" and samples["prompts"] == prompts
    # 4 prompts x 3 seeds; x 2 guidance scales; 2 checkpoint rows (step 2, final step 4) x 4 prompts
    assert len(_cells(samples, "samples")) == 12
    assert len(_cells(samples, "guidance_sweep")) == 24
    ckpt = _cells(samples, "checkpoints")
    assert len(ckpt) == 8 and sorted({c["step"] for c in ckpt}) == [2, 4]
    assert {c["guidance"] for c in _cells(samples, "guidance_sweep")} == {7.0, 11.0}
    assert all({"prompt", "seed", "guidance", "step", "file", "row", "column", "box"} <= set(c) for c in samples["cells"])
    # 24 distinct (prompt, seed, guidance) images plus 4 from the step-2 checkpoint; shared cells drawn once
    assert result.images_generated == 28
    assert result.images_generated == 28


def test_cells_are_upscaled_and_labelled(full_run):
    run, _ = full_run
    samples = json.loads((run / "images" / "samples.json").read_text())
    grid = np.asarray(Image.open(run / "images" / "samples_grid.png").convert("RGB")).astype(int)
    cells = _cells(samples, "samples")
    x0, y0, x1, y1 = cells[0]["box"]
    assert x1 - x0 == 192 and y1 - y0 == 192  # 64 px upscaled x3, nearest: 3x3 blocks of one colour
    block = grid[y0:y0 + 3, x0:x0 + 3]
    assert (block == block[0, 0]).all()
    # every row has its prompt written in the left margin and every column its seed above the images
    for cell in [c for c in cells if c["column"] == 0]:
        margin = grid[cell["box"][1]:cell["box"][3], : x0 - 2]
        assert (margin.sum(axis=2) < 300).any(), f"no label for row {cell['row']}"
    for cell in [c for c in cells if c["row"] == 0]:
        header = grid[y0 - 25: y0 - 2, cell["box"][0]:cell["box"][2]]
        assert (header.sum(axis=2) < 500).any(), f"no label for column {cell['column']}"


def test_seeds_differ_and_sweep_reuses_the_same_seeds(full_run):
    run, _ = full_run
    samples = json.loads((run / "images" / "samples.json").read_text())
    grid = {(c["prompt"], c["seed"]): c for c in _cells(samples, "samples")}
    prompt = samples["prompts"][0]
    assert np.abs(_cell(run, grid[(prompt, 0)]) - _cell(run, grid[(prompt, 1)])).mean() > 5
    widget = np.asarray(Image.open(run / samples["widget"]["file"]).convert("RGB")).astype(int)
    assert np.array_equal(widget, _cell(run, grid[(prompt, 0)], inset=0))
    for cell in _cells(samples, "guidance_sweep"):
        if cell["guidance"] == 7.0:  # the first guidance group shows exactly the sample grid's images
            assert np.array_equal(_cell(run, cell), _cell(run, grid[(cell["prompt"], cell["seed"])]))


def test_checkpoint_rows_show_the_checkpoint_weights(full_run):
    run, _ = full_run
    samples = json.loads((run / "images" / "samples.json").read_text())
    by_step = {(c["step"], c["prompt"]): c for c in _cells(samples, "checkpoints")}
    final = {(c["prompt"], c["seed"]): c for c in _cells(samples, "samples")}
    for prompt in samples["prompts"]:
        early, last = _cell(run, by_step[(2, prompt)]), _cell(run, by_step[(4, prompt)])
        assert np.abs(early - last).mean() > 5
        assert np.array_equal(last, _cell(run, final[(prompt, 0)]))


def test_same_run_gives_byte_identical_pngs(full_run):
    run, result = full_run
    widget = result.widget_image.read_bytes()
    before = {kind: path.read_bytes() for kind, path in result.grid_files.items()}
    again = render_samples(run, progress=False)
    assert {kind: path.read_bytes() for kind, path in again.grid_files.items()} == before
    assert again.widget_image.read_bytes() == widget


def test_lora_run_samples_base_plus_lora_and_its_checkpoints(tmp_path):
    run = build_run(tmp_path, lora=True)
    result = render_samples(run, progress=False)
    samples = json.loads(result.samples_json.read_text())
    by_step = {(c["step"], c["prompt"]): c for c in _cells(samples, "checkpoints")}
    prompt = samples["prompts"][0]
    assert np.abs(_cell(run, by_step[(2, prompt)]) - _cell(run, by_step[(4, prompt)])).mean() > 5

    # the LoRA really changes the pictures: the same cell from the base model alone differs
    base = tmp_path / "plain"
    shutil.copytree(tmp_path / "base", base)  # the untouched base pipeline the LoRA was trained on
    shutil.copy(run / RUN_CONFIG_FILENAME, base / RUN_CONFIG_FILENAME)
    plain = json.loads(render_samples(base, progress=False).samples_json.read_text())
    plain_cell = next(c for c in _cells(plain, "samples") if c["prompt"] == prompt and c["seed"] == 0)
    lora_cell = next(c for c in _cells(samples, "samples") if c["prompt"] == prompt and c["seed"] == 0)
    assert np.abs(_cell(base, plain_cell) - _cell(run, lora_cell)).mean() > 5


def test_stale_grids_are_removed_when_the_config_no_longer_draws_them(full_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(full_run[0], run)
    config = load_run_config(run)
    config.sampling.guidance_scales = [9.0]
    config.sampling.seeds = [5]
    save_config(config, run / RUN_CONFIG_FILENAME)
    shutil.rmtree(run / "checkpoints")
    result = render_samples(run, progress=False)
    assert set(result.grid_files) == {"samples"} and result.grids == [result.samples_grid]
    assert not (run / "images" / "guidance_sweep.png").exists()
    assert not (run / "images" / "checkpoints_grid.png").exists()
    samples = json.loads(result.samples_json.read_text())
    assert {(c["seed"], c["guidance"]) for c in samples["cells"]} == {(5, 9.0)}
    assert Image.open(result.samples_grid).size[1] > 4 * 192


def test_not_a_run_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match="not a hubtools run folder"):
        render_samples(tmp_path, progress=False)


def test_sample_command_prints_the_grids(full_run, capsys):
    from hubtools.cli.app import main

    run, result = full_run
    assert main(["sample", str(run), "--quiet", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    for grid in result.grids:
        assert str(grid) in printed.replace("\n", "")
