"""benchmarks/bench_sidebyside.py: the arithmetic of its table and the commands it runs (the diffusers scripts
themselves need their own venv, so the end-to-end run is documented in benchmarks/README.md, not run here)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_sidebyside.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_sidebyside", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_sidebyside"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_per_step_start_up_and_ratios_come_from_the_medians_of_two_lengths(bench):
    Run = bench.Run
    runs = []
    for rep, noise in enumerate((0.0, 0.4, -0.2)):  # medians ignore the odd one out
        runs += [Run("sd_lora", "hubtools", 300, rep, cpu_s=8 + 300 * 0.02 + noise, wall_s=20, peak_rss_mib=600),
                 Run("sd_lora", "hubtools", 30, rep, cpu_s=8 + 30 * 0.02 + noise, wall_s=10, peak_rss_mib=590),
                 Run("sd_lora", "diffusers", 300, rep, cpu_s=9 + 300 * 0.04, wall_s=30, peak_rss_mib=500),
                 Run("sd_lora", "diffusers", 30, rep, cpu_s=9 + 30 * 0.04, wall_s=12, peak_rss_mib=480)]
    runs.append(Run("sd_lora", "diffusers", 300, 3, returncode=1, cpu_s=1.0))  # a failed run counts for nothing
    [row] = bench.summarize(runs, 300, 30)
    hub, script = row["hubtools"], row["diffusers"]
    assert hub["per_step_s"] == pytest.approx(0.02) and hub["startup_s"] == pytest.approx(8.0)
    assert script["per_step_s"] == pytest.approx(0.04) and script["startup_s"] == pytest.approx(9.0)
    assert (hub["whole_s"], hub["reps"], script["reps"]) == (pytest.approx(14.0), 3, 3)
    text = bench.table([row], 300, 30)
    assert "| sd_lora | **script / hubtools** | **2.00x** | **1.12x** | **1.50x** | 1.50x | 0.83x | |" in text
    assert "| sd_lora | hubtools | 20.0 | 8.00 | 14.00 | 20.00 | 600 | 3 |" in text


def test_both_tools_get_the_same_work(bench, tmp_path):
    args = argparse.Namespace(
        hubtools_python="py", diffusers_python="dpy", scripts="/scripts", models="/models", concept="/photos",
        variant="matched")
    hub = bench.hubtools_command(args, bench.CASES["sd_lora"], 30, tmp_path / "out")
    script = bench.diffusers_command(args, bench.CASES["sd_lora"], 30, tmp_path / "out")
    assert hub[:4] == ["py", "-m", "hubtools", "train"] and "training.cache_latents=false" in hub
    assert script[:2] == ["dpy", "/scripts/train_dreambooth_lora.py"] and "--pre_compute_text_embeddings" in script
    for flag, value in (("--steps", "30"), ("--lr", "1e-4"), ("--resolution", "64")):
        assert hub[hub.index(flag) + 1] == value
    assert script[script.index("--max_train_steps") + 1] == "30" and script[script.index("--rank") + 1] == "4"
    args.variant = "defaults"  # each tool as it comes
    assert "training.cache_latents=false" not in bench.hubtools_command(args, bench.CASES["sd_lora"], 30, tmp_path)
    assert "--pre_compute_text_embeddings" not in bench.diffusers_command(args, bench.CASES["sd_lora"], 30, tmp_path)


def test_the_torchvision_stand_in_points_at_the_unpacked_sources(bench, tmp_path):
    source = tmp_path / "wheel"
    (source / "torchvision" / "transforms").mkdir(parents=True)
    (source / "torchvision" / "version.py").write_text("__version__ = '0.28.0'\n")
    folder = bench.torchvision_stand_in(tmp_path / "work", source)
    (source / "torchvision" / "transforms" / "__init__.py").write_text("WHERE = 'the unpacked sources'\n")
    seen = subprocess.run([sys.executable, "-c", "import torchvision, torchvision.transforms as t; print(t.WHERE, torchvision.__version__)"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(folder)}, check=True)
    assert seen.stdout.split() == ["the", "unpacked", "sources", "0.28.0"]


def test_each_process_gets_one_thread_offline_and_its_own_or_a_shared_hubtools_cache(bench, tmp_path):
    args = argparse.Namespace(work=str(tmp_path), hubtools_pythonpath="", torchvision_src="", shared_cache=False)
    first = bench.environment(args, "hubtools", tmp_path / "run-1")
    assert (first["OMP_NUM_THREADS"], first["HF_HUB_OFFLINE"]) == ("1", "1") and "PYTHONPATH" not in first
    assert first["HUBTOOLS_CACHE"] != bench.environment(args, "hubtools", tmp_path / "run-2")["HUBTOOLS_CACHE"]
    args.shared_cache = True  # a returning user
    assert first["HUBTOOLS_CACHE"] != bench.environment(args, "hubtools", tmp_path / "run-1")["HUBTOOLS_CACHE"]
    assert len({bench.environment(args, "hubtools", tmp_path / f"run-{n}")["HUBTOOLS_CACHE"] for n in (1, 2)}) == 1
