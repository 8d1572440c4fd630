"""The training benchmark still runs where there is no GPU (tiny model)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")


BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_train.py"


def _load_bench():
    """benchmarks/bench_train.py as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("bench_train", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


@pytest.mark.slow
def test_benchmark_runs_on_cpu_with_the_tiny_model(tmp_path):
    bench = _load_bench()
    out = tmp_path / "results.json"
    assert bench.main(["--device", "cpu", "--steps", "3", "--profiles", "high,low", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["model"] == "hubtools tiny sd model" and report["denoiser_forward_gflops_batch2"] > 0
    by_profile = {row["profile"]: row for row in report["results"]}
    assert by_profile["high"]["method"] == "full" and by_profile["low"]["method"] == "lora"
    assert by_profile["low"]["settings"]["gradient_checkpointing"] is True
    assert all(row["steps_per_second"] > 0 and row["mfu"] is None for row in report["results"])


@pytest.mark.slow
@pytest.mark.parametrize("family", ["flux", "sd3", "qwen-image", "z-image"])
def test_benchmark_runs_for_flux_on_cpu(tmp_path, family):
    """The FLUX.1, SD3.5, Qwen-Image and Z-Image configurations: their profiles are LoRA ones, their FLOPs counted
    through the family."""
    bench = _load_bench()
    out = tmp_path / "results.json"
    assert bench.main(["--device", "cpu", "--family", family, "--steps", "2", "--profiles", "high",
                       "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["family"] == family and report["denoiser_forward_gflops_batch2"] > 0
    assert [row["method"] for row in report["results"]] == ["lora"]


@pytest.mark.slow
def test_benchmark_compares_one_bucket_with_the_square(tmp_path):
    """``--bucket``: the same profile trained on the square and on one portrait bucket, each with its steps/s."""
    bench = _load_bench()
    out = tmp_path / "results.json"
    assert bench.main(["--device", "cpu", "--steps", "2", "--profiles", "lora-fast", "--bucket", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["bucket"] == "56x72"  # the tiny SD model's 3:4-nearest bucket of 64 px (sides multiples of 8)
    rows = {row["size"]: row for row in report["results"]}
    assert set(rows) == {"64x64", "56x72"} and rows["56x72"]["bucketed"] and not rows["64x64"]["bucketed"]
    assert rows["56x72"]["settings"]["buckets"] == {"56x72": 1} and "buckets" not in rows["64x64"]["settings"]
    assert all(row["steps_per_second"] > 0 for row in rows.values())
