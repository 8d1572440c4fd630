"""The plan's estimated time (``hubtools.estimate``): the trained component's work from its parameter count and
the resolution, over the device's throughput, with what it is based on. No timing thresholds: the figure is
present, finite, and grows with the work asked for."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from hubtools.base_model import count_parameters
from hubtools.cli.app import main
from hubtools.config import RunConfig
from hubtools.estimate import (
    GPU_EFFICIENCY,
    Throughput,
    TimeEstimate,
    cpu_throughput,
    estimate_run_time,
    forward_flops,
    gpu_throughput,
    run_flops,
)
from hubtools.families import by_name
from hubtools.resources import DEMO_CONCEPT_DIR

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
FLAGS = ["--concept", str(DEMO_CONCEPT_DIR), "--identifier", "nlwx", "--class-noun", "dog", "--resolution", "64",
         "--device", "cpu", "--dry-run"]


def estimated(output: str) -> str:
    """The figure of the plan's 'estimated time' row ('~12 s')."""
    found = re.search(r"estimated time\s*│?\s*(~[^(]+?) \(", output)
    assert found, output
    return found.group(1)


def test_the_dry_run_shows_an_estimate_that_grows_with_the_steps(tmp_path, capsys, tiny_model_repo):
    figures = []
    for steps in ("10", "1000"):
        code = main(["train", "--base-model", tiny_model_repo, *FLAGS, "--steps", steps, "--out", str(tmp_path / steps)])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        text = " ".join(captured.out.replace("│", " ").split())
        assert "estimated time ~" in text and "trained parameters" in text and "float32 matmul probe" in text, text
        assert "loading, text encoders and VAE not counted" in text
        figures.append(estimated(captured.out))
    assert figures[0] != figures[1]

    from hubtools import runner

    def plan(steps: int):
        config = RunConfig.model_validate({
            "model": {"base_model": tiny_model_repo},
            "concept": {"source": str(DEMO_CONCEPT_DIR), "identifier": "nlwx", "class_noun": "dog"},
            "training": {"steps": steps, "resolution": 64, "device": "cpu"}})
        return runner.plan(config, tmp_path / "planned", push=False).estimate

    few, many = plan(10), plan(1000)
    assert isinstance(few, TimeEstimate) and math.isfinite(few.seconds) and few.seconds > 0
    assert many.parts["training"] == pytest.approx(100 * few.parts["training"])
    assert many.seconds > few.seconds and many.parts["grids"] > few.parts["grids"]  # more checkpoint rows


def test_the_cpu_probe_is_measured_once_and_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("HUBTOOLS_CACHE", str(tmp_path / "cache"))
    first = cpu_throughput()
    assert first.flops_per_second > 0 and "GFLOP/s" in first.basis
    assert (tmp_path / "cache" / "cpu-throughput.json").is_file()
    assert cpu_throughput() == first  # the same figure in every plan on this machine


@pytest.mark.parametrize(("name", "tflops"), [
    ("NVIDIA H100 80GB HBM3", 989), ("NVIDIA H100 PCIe", 756), ("NVIDIA H200", 989),
    ("NVIDIA A100-SXM4-80GB", 312), ("NVIDIA L40S", 362), ("NVIDIA L4", 121), ("NVIDIA GeForce RTX 4090", 165),
])
def test_known_gpus_are_their_datasheet_peak_at_an_assumed_efficiency(name, tflops):
    throughput = gpu_throughput(name)
    assert throughput.flops_per_second == pytest.approx(tflops * 1e12 * GPU_EFFICIENCY)
    assert f"{name}: {tflops} TFLOP/s bf16 peak (datasheet) at an assumed {GPU_EFFICIENCY:.0%} of it" in throughput.basis


def test_an_unknown_gpu_gives_no_figure_and_says_why():
    throughput = gpu_throughput("NVIDIA A10G")
    assert throughput.flops_per_second is None
    estimate = estimate_run_time(RunConfig.model_validate({"model": {"base_model": "x"}}), by_name("sd"), 10**9,
                                 throughput)
    assert estimate.seconds is None and estimate.text().startswith("no estimate: no bf16 figure for NVIDIA A10G")


def test_real_shapes_on_an_h100():
    """FLUX.1 [dev]'s 11.9B transformer at 1024 px: 0.5 FLOP a parameter and latent pixel (2 a token of 2x2
    pixels), ~97.5 TFLOP a forward pass; SD 1.5's UNet at 512 px: the 0.80 TFLOP FlopCounterMode counts."""
    flux_parameters = count_parameters("FluxTransformer2DModel",
                                       json.loads((BENCHMARKS / "flux_configs.json").read_text())["transformer"])
    assert forward_flops(by_name("flux"), flux_parameters, 1024) / 1e12 == pytest.approx(97.5, abs=0.1)
    assert forward_flops(by_name("sd"), 859_520_964, 512) / 1e12 == pytest.approx(0.80, abs=0.01)

    config = RunConfig.model_validate({"model": {"base_model": "x"}, "training": {
        "method": "lora", "steps": 1000, "resolution": 1024, "batch_size": 1, "gradient_checkpointing": True},
        "prior": {"enabled": False}})
    h100 = gpu_throughput("NVIDIA H100 80GB HBM3")
    estimate = estimate_run_time(config, by_name("flux"), flux_parameters, h100)
    # 1000 steps x 1 row x (forward + backward + recomputation) / (989 TFLOP/s x the assumed efficiency)
    assert estimate.parts["training"] == pytest.approx(1000 * 3 * 97.5e12 / (989e12 * GPU_EFFICIENCY), rel=0.01)
    assert set(estimate.parts) == {"training", "grids"} and "NVIDIA H100 80GB HBM3" in estimate.text()
    assert run_flops(config, by_name("flux"), flux_parameters)["training"] == pytest.approx(1000 * 3 * 97.5e12, rel=0.01)


def test_an_unreadable_base_model_gives_no_figure():
    estimate = estimate_run_time(RunConfig.model_validate({"model": {"base_model": "x"}}), None, None,
                                 Throughput(1e12, "test"))
    assert estimate.seconds is None and "not known now" in estimate.text()
