"""The estimated time of a run, shown in the plan (``--dry-run`` and the studio's) before anything is loaded.

No speed of a real model on a GPU has been measured here, so the estimate is arithmetic, and says what it is
based on: the work of the trained component (its parameter count, from the base model's config, times the
latent pixels of the resolution times a per-family factor: forward FLOPs per parameter and latent pixel),
per training step (forward and backward, instance and class rows, recomputation under gradient
checkpointing) and per generated image (class images, sample grids, evaluation; two passes for guidance),
divided by a throughput figure of the device: a known GPU's dense bf16 peak from its datasheet at an assumed
efficiency, or on the CPU a short matmul probe. Model loading, the text encoders and the VAE are not counted.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hubtools.config import RunConfig
    from hubtools.families import Family

# Forward FLOPs per parameter and latent pixel: the family's own (the UNets', counted with torch's
# FlopCounterMode on the real shapes), else a transformer's, which applies each weight once per token (2 FLOPs a
# parameter and token, a token being patch x patch latent pixels), attention's quadratic part and the text tokens
# not counted.

# Dense bf16 tensor-core peaks (TFLOP/s, NVIDIA datasheets, without sparsity), matched on the name nvidia-smi
# gives, first match wins.
GPU_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    (r"\bB200\b", 2250.0),
    (r"\bH200\b", 989.0),
    (r"\bH100\b.*\bPCIe\b", 756.0),
    (r"\bH100\b.*\bNVL\b", 835.0),
    (r"\bH100\b", 989.0),
    (r"\bA100\b", 312.0),
    (r"\bL40S\b", 362.0),
    (r"\bL4\b", 121.0),
    (r"\bA10\b", 125.0),
    (r"\bRTX 4090\b", 165.0),
)
# The share of the peak the training reaches in these terms (only the trained component's linear work counted):
# an assumption, lower than the 30-40 % large transformer training reaches, since batches here are small and the
# attention, text encoders and VAE are left out. To be replaced by benchmarks/bench_train.py's measured MFU.
GPU_EFFICIENCY = 0.25
# On the CPU: the share of the probe's matmul speed the training kernels reach (convolutions, small shapes).
CPU_EFFICIENCY = 0.5
PROBE_FILE = "cpu-throughput.json"  # in the user's hubtools cache: the probe's figure per machine and thread count


@dataclass(frozen=True)
class Throughput:
    """FLOP/s the estimate divides by, and where the figure comes from."""

    flops_per_second: float | None  # None: no figure for this device
    basis: str


@dataclass(frozen=True)
class TimeEstimate:
    seconds: float | None  # None: nothing to divide by (an unknown GPU) or no parameter count
    parts: dict[str, float]  # seconds per stage: training, class images, grids, evaluation
    basis: str

    def text(self) -> str:
        if self.seconds is None:
            return f"no estimate: {self.basis}"
        parts = ", ".join(f"{name} {duration(seconds)}" for name, seconds in self.parts.items() if seconds)
        return f"~{duration(self.seconds)} ({parts}); {self.basis}"


def _count(parameters: int) -> str:
    return f"{parameters / 1e9:.2f}B" if parameters >= 1e8 else f"{parameters / 1e6:.2f}M"


def _flops(flops: float) -> str:
    return f"{flops / 1e12:.3g} TFLOP" if flops >= 1e11 else f"{flops / 1e9:.3g} GFLOP"


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 1 else "<1 s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


# -- the device --------------------------------------------------------------------------------------------


def gpu_name() -> str | None:
    """The first visible NVIDIA GPU's name, from nvidia-smi (no CUDA context is made: the studio's server asks
    too); None when there is none."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return None
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        answer = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True,
                                check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    names = [line.strip() for line in answer.stdout.splitlines() if line.strip()]
    return names[0] if answer.returncode == 0 and names else None


def gpu_throughput(name: str) -> Throughput:
    for pattern, tflops in GPU_BF16_TFLOPS:
        if re.search(pattern, name):
            return Throughput(tflops * 1e12 * GPU_EFFICIENCY,
                              f"{name}: {tflops:g} TFLOP/s bf16 peak (datasheet) at an assumed "
                              f"{GPU_EFFICIENCY:.0%} of it")
    return Throughput(None, f"no bf16 figure for {name} in hubtools' table (hubtools/estimate.py)")


def cpu_throughput(seconds: float = 0.05) -> Throughput:
    """A float32 matmul probe at this process's torch thread count, about ``seconds`` long; measured once per
    machine and thread count and kept in the user's hubtools cache, so that every plan (``--dry-run``, the
    studio's) says the same."""
    import torch

    threads = torch.get_num_threads()
    measured = _cached_probe(f"{platform.node()} {platform.machine()} {threads} threads",
                             lambda: _probe(torch, seconds))
    return Throughput(measured * CPU_EFFICIENCY,
                      f"CPU: a float32 matmul probe measured {measured / 1e9:.1f} GFLOP/s "
                      f"({threads} thread{'s' if threads != 1 else ''}), at an assumed {CPU_EFFICIENCY:.0%} of it")


def _probe(torch, seconds: float) -> float:
    size = 256
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)  # warm-up
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        torch.mm(a, b)
        done += 1
    return done * 2 * size**3 / (time.perf_counter() - started)


def _cached_probe(key: str, measure) -> float:
    import json

    from hubtools.atomic import write_json_atomic
    from hubtools.usercache import user_cache

    path = user_cache(PROBE_FILE)
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(kept.get(key), (int, float)) and kept[key] > 0:
            return float(kept[key])
    except (OSError, ValueError, AttributeError):
        kept = {}
    measured = float(measure())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, {**kept, key: measured})
    except OSError:
        pass  # a read-only cache: measured again next time
    return measured


def device_throughput(preference: str) -> Throughput:
    """The throughput of the device ``training.device`` (auto|cpu|cuda) will train on."""
    name = None if preference == "cpu" else gpu_name()
    if name is not None:
        return gpu_throughput(name)
    if preference == "cuda":
        return Throughput(None, "no GPU visible (--device cuda)")
    return cpu_throughput()


# -- the work ----------------------------------------------------------------------------------------------


def forward_flops(family: Family, parameters: int, resolution: int) -> float:
    """FLOPs of one forward pass of the trained component on one image of ``resolution`` px."""
    pixels = (resolution / family.vae_scale_factor) ** 2
    factor = family.forward_flops_per_parameter_and_pixel or 2.0 / family.patch_size**2
    return factor * parameters * pixels


def run_flops(config: RunConfig, family: Family, parameters: int) -> dict[str, float]:
    """FLOPs of each stage the plan runs (``config`` resolved), by stage."""
    training, prior, sampling = config.training, config.prior, config.sampling
    forward = forward_flops(family, parameters, training.main_resolution)
    passes = (3 if training.method == "full" else 2) + (1 if training.gradient_checkpointing else 0)
    rows = training.batch_size * training.gradient_accumulation_steps * (2 if prior.enabled else 1)
    work = {"training": training.steps * rows * passes * forward}
    if prior.enabled:
        work["class images"] = prior.num_class_images * prior.generation_steps * 2 * forward
    checkpoints = training.steps // training.checkpoint_every if training.checkpoint_every else 0
    prompts = len(sampling.prompts)
    images = prompts * len(sampling.seeds) * len(sampling.guidance_scales) + checkpoints * prompts
    work["grids"] = images * sampling.num_inference_steps * 2 * forward
    evaluation = config.eval
    if evaluation.enabled:
        count = _eval_prompt_count(config)
        drawn = (count * evaluation.n_per_prompt + evaluation.n_class_images) * (2 if evaluation.baseline else 1)
        steps = evaluation.num_inference_steps or sampling.num_inference_steps
        work["evaluation"] = drawn * steps * 2 * forward
    return work


def _eval_prompt_count(config: RunConfig) -> int:
    from hubtools.errors import HubtoolsError
    from hubtools.evaluation.prompts import load_prompts

    try:
        count = len(load_prompts(config.eval.prompts, config.concept.class_noun or "dog").templates)
    except (HubtoolsError, OSError):
        count = 25  # DreamBench's, when the prompt file cannot be read now
    return min(count, config.eval.max_prompts or count)


def estimate_run_time(config: RunConfig, family: Family | None, parameters: int | None,
                      throughput: Throughput) -> TimeEstimate:
    """The plan's estimate for ``config`` (resolved) on the base model ``family`` whose trained component has
    ``parameters``."""
    if family is None or not parameters:
        return TimeEstimate(None, {}, "the base model's size is not known now (it could not be read)")
    if throughput.flops_per_second is None:
        return TimeEstimate(None, {}, throughput.basis)
    work = run_flops(config, family, parameters)
    parts = {name: flops / throughput.flops_per_second for name, flops in work.items()}
    forward = forward_flops(family, parameters, config.training.main_resolution)
    basis = (f"from {_count(parameters)} trained parameters, {_flops(forward)} a forward pass at "
             f"{config.training.main_resolution} px, on {throughput.basis}; loading, text encoders and VAE not "
             "counted")
    return TimeEstimate(sum(parts.values()), parts, basis)
