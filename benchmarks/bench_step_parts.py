"""Where a training step's time goes, in `hubtools train` and in diffusers' DreamBooth scripts (issue 29).

bench_sidebyside.py measures whole processes; this one looks inside the step. Each case of bench_sidebyside
(same tiny models, photos, settings, one thread, --variant matched or defaults) runs once per tool under a
small in-process timer that wraps library calls only, never the scripts' code (they run unchanged, through
runpy):

    step      the interval between two optimizer steps (`torch.optim.AdamW.step`), median over the run
    forward   the denoiser's forward (the family's UNet / transformer class), per step
    backward  `torch.Tensor.backward`, per step
    encode    the VAE's `encode` inside the loop (per step; 0 when the latents were cached before it)

All CPU time of the main thread (`time.thread_time`). `forward + backward + encode` is work both tools hand to
the same diffusers and peft modules with the same inputs: the script's step over that sum is the most any
tool running those modules eagerly can gain per step ("ceiling"). The import floor is the CPU time of a
process that only imports what both need (torch, diffusers' model code, transformers, peft).

    python benchmarks/bench_step_parts.py --diffusers-python difvenv/bin/python --scripts /path/to/dreambooth \\
        --torchvision-src tvsrc --work /tmp/parts --cases sdxl_lora,sd3_lora --steps 400
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_sidebyside as sbs  # noqa: E402  (a sibling script, not a package)

# the denoiser and VAE classes each family's step runs (diffusers' names: module, class)
DENOISERS = {
    "sd": ("diffusers.models.unets.unet_2d_condition", "UNet2DConditionModel"),
    "sdxl": ("diffusers.models.unets.unet_2d_condition", "UNet2DConditionModel"),
    "flux": ("diffusers.models.transformers.transformer_flux", "FluxTransformer2DModel"),
    "sd3": ("diffusers.models.transformers.transformer_sd3", "SD3Transformer2DModel"),
    "flux2": ("diffusers.models.transformers.transformer_flux2", "Flux2Transformer2DModel"),
    "flux2-klein": ("diffusers.models.transformers.transformer_flux2", "Flux2Transformer2DModel"),
    "qwen-image": ("diffusers.models.transformers.transformer_qwenimage", "QwenImageTransformer2DModel"),
    "z-image": ("diffusers.models.transformers.transformer_z_image", "ZImageTransformer2DModel"),
}
VAES = {
    "qwen-image": ("diffusers.models.autoencoders.autoencoder_kl_qwenimage", "AutoencoderKLQwenImage"),
    "flux2": ("diffusers.models.autoencoders.autoencoder_kl_flux2", "AutoencoderKLFlux2"),
    "flux2-klein": ("diffusers.models.autoencoders.autoencoder_kl_flux2", "AutoencoderKLFlux2"),
}
DEFAULT_VAE = ("diffusers.models.autoencoders.autoencoder_kl", "AutoencoderKL")

# Runs in the measured process: wraps the calls, runs the tool, writes what it timed to HUBTOOLS_PARTS_OUT.
TIMER = r'''
import atexit, functools, importlib, json, os, runpy, sys, time
import torch
clock = time.thread_time
totals, counts, stamps = {}, {}, []
in_loop = [False]

def wrap(owner, attr, key, *, loop_only=False):
    original = getattr(owner, attr)
    @functools.wraps(original)
    def timed(*args, **kwargs):
        started = clock()
        try:
            return original(*args, **kwargs)
        finally:
            if in_loop[0] or not loop_only:
                totals[key] = totals.get(key, 0.0) + clock() - started
                counts[key] = counts.get(key, 0) + 1
    setattr(owner, attr, timed)

def on_step(original):
    @functools.wraps(original)
    def step(*args, **kwargs):
        stamps.append(clock())
        in_loop[0] = True
        return original(*args, **kwargs)
    return step

spec = json.loads(os.environ["HUBTOOLS_PARTS_SPEC"])
denoiser = getattr(importlib.import_module(spec["denoiser"][0]), spec["denoiser"][1])
vae = getattr(importlib.import_module(spec["vae"][0]), spec["vae"][1])
wrap(denoiser, "forward", "forward", loop_only=True)
wrap(vae, "encode", "encode", loop_only=True)
wrap(torch.Tensor, "backward", "backward", loop_only=True)
torch.optim.AdamW.step = on_step(torch.optim.AdamW.step)

@atexit.register
def write():
    intervals = [b - a for a, b in zip(stamps, stamps[1:])]
    steps = max(len(stamps) - 1, 1)  # the parts are counted from the first optimizer step on: one step fewer
    with open(os.environ["HUBTOOLS_PARTS_OUT"], "w") as out:
        json.dump({"steps": len(stamps), "intervals": intervals,
                   "per_step": {key: totals[key] / steps for key in totals}, "counts": counts}, out)

sys.argv = spec["argv"]
if spec["script"]:
    runpy.run_path(spec["argv"][0], run_name="__main__")
else:
    from hubtools.cli.app import entry_point
    entry_point()
'''


def timed_run(python: str, argv: list[str], *, script: bool, denoiser: tuple[str, str], vae: tuple[str, str],
              env: dict[str, str], run_dir: Path) -> dict:
    """Run ``argv`` (a script's path and flags, or hubtools' CLI arguments) under TIMER in ``run_dir``; returns
    the step (median interval after the first tenth) and the per-step CPU seconds of forward, backward, encode."""
    env = {**env, "HUBTOOLS_PARTS_OUT": str(run_dir / "parts.json"),
           "HUBTOOLS_PARTS_SPEC": json.dumps({"argv": argv, "script": script, "denoiser": denoiser, "vae": vae})}
    with open(run_dir / "stderr.txt", "wb") as stderr:
        done = subprocess.run([python, "-c", TIMER], stdout=subprocess.DEVNULL, stderr=stderr, env=env, cwd=run_dir,
                              check=False)
    if done.returncode != 0:
        tail = (run_dir / "stderr.txt").read_text(errors="replace")[-1500:]
        raise SystemExit(f"{' '.join(argv[:2])} failed (exit {done.returncode}):\n{tail}")
    parts = json.loads((run_dir / "parts.json").read_text())
    warm = parts["intervals"][len(parts["intervals"]) // 10:]  # the first tenth warms up
    return {"step": statistics.median(warm), "steps": parts["steps"],
            **{key: parts["per_step"].get(key, 0.0) for key in ("forward", "backward", "encode")}}


def run_case(args: argparse.Namespace, name: str, contender: str) -> dict:
    case = sbs.CASES[name]
    run_dir = Path(args.work) / "runs" / name / contender
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    out = run_dir / "out"
    if contender == "hubtools":
        command = sbs.hubtools_command(args, case, args.steps, out)
        python, argv, script = command[0], ["hubtools", *command[3:]], False  # drop "python -m hubtools"
    else:
        command = sbs.diffusers_command(args, case, args.steps, out)
        python, argv, script = command[0], command[1:], True
    return timed_run(python, argv, script=script, denoiser=DENOISERS[case.family],
                     vae=VAES.get(case.family, DEFAULT_VAE), env=sbs.environment(args, contender, run_dir),
                     run_dir=run_dir)


def import_floor(args: argparse.Namespace, contender: str) -> float:
    """CPU seconds of a process that imports only what both tools load to train, in ``contender``'s venv and run
    environment (median of three)."""
    code = ("import torch, diffusers.models.modeling_utils, diffusers.models.unets.unet_2d_condition, "
            "transformers.models.clip.modeling_clip, peft")
    python = args.hubtools_python if contender == "hubtools" else args.diffusers_python
    run_dir = Path(args.work) / "import-floor" / contender
    run_dir.mkdir(parents=True, exist_ok=True)
    figures = []
    for _ in range(3):
        returncode, cpu, _, _ = sbs.measure([python, "-c", code], sbs.environment(args, contender, run_dir), run_dir)
        if returncode != 0:
            tail = (run_dir / "stderr.txt").read_text(errors="replace")[-1500:]
            raise SystemExit(f"the imports failed in {contender}'s venv (exit {returncode}):\n{tail}")
        figures.append(cpu)
    return statistics.median(figures)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sbs.add_shared_arguments(parser, work_holds="runs and parts.md")
    parser.add_argument("--cases", default="sd_lora,sd_full,sdxl_lora,flux_lora,sd3_lora",
                        help=f"of {', '.join(sbs.CASES)}")
    parser.add_argument("--steps", type=int, default=400, help="steps of each run (the first tenth warms up)")
    args = parser.parse_args(argv)
    args.shared_cache = False  # bench_sidebyside.environment reads it: a fresh HUBTOOLS_CACHE per run
    names = [name.strip() for name in args.cases.split(",") if name.strip()]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    args.models = args.models or str(work / "models")
    sbs.build_models(args, {sbs.CASES[name].family for name in names})

    lines = [f"Inside the step, variant `{args.variant}`, {args.steps} steps, {sbs.RESOLUTION} px, batch 1, one "
             f"thread; CPU-ms of the main thread per step. Machine: {sbs.machine()}; load before {sbs.loadavg()}.",
             "",
             "| case | tool | step | denoiser forward | backward | VAE encode | rest | ceiling |",
             "|---|---|---|---|---|---|---|---|"]
    for name in names:
        figures = {contender: run_case(args, name, contender) for contender in ("hubtools", "diffusers")}
        shared = sum(figures["hubtools"][key] for key in ("forward", "backward", "encode"))
        for contender, f in figures.items():
            rest = f["step"] - f["forward"] - f["backward"] - f["encode"]
            ceiling = f"{figures['diffusers']['step'] / shared:.2f}x" if contender == "hubtools" else ""
            lines.append(f"| {name} | {contender} | {f['step'] * 1000:.1f} | {f['forward'] * 1000:.1f} | "
                         f"{f['backward'] * 1000:.1f} | {f['encode'] * 1000:.1f} | {rest * 1000:.1f} | {ceiling} |")
        print(lines[-2], lines[-1], sep="\n", file=sys.stderr, flush=True)
    lines += ["", f"Import floor (torch, diffusers' model code, transformers' CLIP, peft): hubtools venv "
              f"{import_floor(args, 'hubtools'):.2f} CPU-s, diffusers venv "
              f"{import_floor(args, 'diffusers'):.2f} CPU-s; load after {sbs.loadavg()}."]
    report = "\n".join(lines) + "\n"
    (work / "parts.md").write_text(report, encoding="utf-8")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
