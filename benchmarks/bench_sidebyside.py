"""Side by side: `hubtools train` against diffusers' own DreamBooth example scripts, start to finish (issue 29).

Each case trains the same tiny model on the same photos with the same settings in both tools, one thread per
process, as separate processes run one after the other and interleaved (hubtools, script, hubtools, script, ...),
each at two lengths (--steps LONG,SHORT). Every process is measured by the kernel (os.wait4): CPU seconds (user +
system, the figure that load from other processes disturbs least), wall seconds and peak RSS. From the medians
over the repetitions:

    per step  = (CPU(LONG) - CPU(SHORT)) / (LONG - SHORT)
    start-up  = CPU(SHORT) - SHORT * per step      (imports, loading, data, saving: all that is not a step)
    whole run = CPU(LONG)

The diffusers scripts are read from --scripts (a folder holding diffusers' examples/dreambooth/*.py, e.g. from a
diffusers checkout at the tag under test); they run unchanged with `python script.py` in their own venv
(--diffusers-python). Nothing of them is copied here. The table (Markdown) and one JSON line per process go to
--work; the table also names the machine, the versions in both venvs and the load average before and after.

    python benchmarks/bench_sidebyside.py --diffusers-python /path/difvenv/bin/python \\
        --scripts /path/diffusers/examples/dreambooth --work /tmp/sbs --cases sd_lora --reps 5

--variant matched (default) gives both the same work: hubtools encodes latents every step
(training.cache_latents=false, as the scripts do) and the SD scripts precompute text embeddings (hubtools always
caches a frozen text encoder's output). --variant defaults runs each tool as it comes: hubtools with its cached
latents, the scripts without --pre_compute_text_embeddings.

torchvision: the scripts import it. Where its wheel does not load beside the installed torch (the CUDA wheels next
to a CPU torch), pass --torchvision-src, a folder where the torchvision wheel is unpacked: the scripts then import
its pure-Python sources (only torchvision.transforms is used) through a stand-in package written under --work.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONCEPT = ROOT / "hubtools" / "data" / "dreambench" / "dog"
IDENTIFIER, CLASS_NOUN = "sks", "dog"
INSTANCE_PROMPT = f"a photo of {IDENTIFIER} {CLASS_NOUN}"
RESOLUTION = 64
RANK = 4
VERSIONED = ("torch", "diffusers", "transformers", "accelerate", "peft", "huggingface_hub", "safetensors",
             "bitsandbytes", "numpy", "scipy", "matplotlib")


@dataclass(frozen=True)
class Case:
    family: str  # hubtools' family name (the tiny model it builds)
    method: str  # lora or full
    lr: str
    script: str  # file name in --scripts
    script_args: tuple[str, ...] = ()  # what matches hubtools' recipe in that script
    precompute_flag: bool = False  # the script has --pre_compute_text_embeddings (the SD scripts)


CASES = {
    "sd_lora": Case("sd", "lora", "1e-4", "train_dreambooth_lora.py", ("--rank", str(RANK)), precompute_flag=True),
    "sd_full": Case("sd", "full", "2e-6", "train_dreambooth.py", precompute_flag=True),
    "sdxl_lora": Case("sdxl", "lora", "1e-4", "train_dreambooth_lora_sdxl.py", ("--rank", str(RANK))),
    # hubtools' FLUX.1 recipe: alpha = rank, guidance 1 in training, logit-normal timestep density
    "flux_lora": Case("flux", "lora", "1e-4", "train_dreambooth_lora_flux.py",
                      ("--rank", str(RANK), "--lora_alpha", str(RANK), "--guidance_scale", "1.0",
                       "--weighting_scheme", "logit_normal")),
    "sd3_lora": Case("sd3", "lora", "1e-4", "train_dreambooth_lora_sd3.py",
                     ("--rank", str(RANK), "--weighting_scheme", "logit_normal")),
    # the newer families follow their script's defaults (uniform timesteps, its guidance, 512 caption tokens)
    # (FLUX.2 [dev]'s script loads a PixtralProcessor, images and all, which the tiny model does not carry)
    "flux2_lora": Case("flux2", "lora", "1e-4", "train_dreambooth_lora_flux2.py",
                       ("--rank", str(RANK), "--lora_alpha", str(RANK))),
    # the script's --text_encoder_out_layers default (10 20 30) is not Flux2KleinPipeline's (9 18 27), which
    # hubtools uses and the tiny 28-layer encoder reaches
    "flux2_klein_lora": Case("flux2-klein", "lora", "1e-4", "train_dreambooth_lora_flux2_klein.py",
                             ("--rank", str(RANK), "--lora_alpha", str(RANK), "--text_encoder_out_layers", "9", "18",
                              "27")),
    "qwen_image_lora": Case("qwen-image", "lora", "1e-4", "train_dreambooth_lora_qwen_image.py",
                            ("--rank", str(RANK), "--lora_alpha", str(RANK))),
    "z_image_lora": Case("z-image", "lora", "1e-4", "train_dreambooth_lora_z_image.py",
                         ("--rank", str(RANK), "--lora_alpha", str(RANK))),
}


@dataclass
class Run:
    case: str
    contender: str  # hubtools or diffusers
    steps: int
    rep: int
    returncode: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0
    peak_rss_mib: float = 0.0
    load_before: list[float] = field(default_factory=list)
    load_after: list[float] = field(default_factory=list)
    error_tail: str = ""


def hubtools_command(args: argparse.Namespace, case: Case, steps: int, out: Path) -> list[str]:
    command = [args.hubtools_python, "-m", "hubtools", "train", "--base-model", str(Path(args.models) / case.family),
               "--concept", args.concept, "--identifier", IDENTIFIER, "--class-noun", CLASS_NOUN,
               "--method", case.method, "--steps", str(steps), "--lr", case.lr, "--resolution", str(RESOLUTION),
               "--device", "cpu", "--mixed-precision", "no", "--checkpoint-every", "0", "--no-prior",
               "--set", "training.batch_size=1", "--set", "training.seed=0", "--set", f"training.lora_rank={RANK}",
               "--set", "training.lr_scheduler=constant", "--set", "training.lr_warmup_steps=0",
               "--set", "training.validation_every=0", "--out", str(out)]
    if args.variant == "matched":
        command += ["--set", "training.cache_latents=false"]
    return command


def diffusers_command(args: argparse.Namespace, case: Case, steps: int, out: Path) -> list[str]:
    command = [args.diffusers_python, str(Path(args.scripts) / case.script),
               "--pretrained_model_name_or_path", str(Path(args.models) / case.family),
               "--instance_data_dir", args.concept, "--instance_prompt", INSTANCE_PROMPT, "--output_dir", str(out),
               "--resolution", str(RESOLUTION), "--train_batch_size", "1", "--max_train_steps", str(steps),
               "--learning_rate", case.lr, "--lr_scheduler", "constant", "--lr_warmup_steps", "0", "--seed", "0",
               "--mixed_precision", "no", "--checkpointing_steps", "1000000000", "--center_crop", *case.script_args]
    if case.precompute_flag and args.variant == "matched":
        command.append("--pre_compute_text_embeddings")
    return command


def environment(args: argparse.Namespace, contender: str, run_dir: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HOME": str(Path(args.work) / "hf_home"),
                "HUBTOOLS_CACHE": str(Path(args.work) / "hubtools-cache" if args.shared_cache
                                      else run_dir / "hubtools-cache")})
    if contender == "hubtools" and args.hubtools_pythonpath:
        env["PYTHONPATH"] = args.hubtools_pythonpath
    if contender == "diffusers" and args.torchvision_src:
        env["PYTHONPATH"] = str(torchvision_stand_in(Path(args.work), Path(args.torchvision_src)))
    return env


def torchvision_stand_in(work: Path, source: Path) -> Path:
    """A `torchvision` package whose search path is the unpacked wheel's sources, skipping its __init__ (which
    loads compiled ops): `torchvision.transforms` is torchvision's own code, unchanged."""
    if not (source / "torchvision" / "transforms").is_dir():
        raise SystemExit(f"--torchvision-src {source}: no torchvision/transforms/ there (unpack the wheel into it)")
    package = work / "torchvision-stand-in" / "torchvision"
    package.mkdir(parents=True, exist_ok=True)
    version = "0"
    version_file = source / "torchvision" / "version.py"
    for line in version_file.read_text(encoding="utf-8").splitlines() if version_file.is_file() else []:
        if line.startswith("__version__"):
            version = line.split("=", 1)[1].strip().strip("'\"")
    (package / "__init__.py").write_text(f"__path__ = [{str(source / 'torchvision')!r}]\n__version__ = {version!r}\n",
                                         encoding="utf-8")
    return package.parent


def loadavg() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def measure(command: list[str], env: dict[str, str], run_dir: Path) -> tuple[int, float, float, float]:
    """(return code, CPU seconds, wall seconds, peak RSS MiB) of one process, from the kernel's own accounting."""
    started = time.perf_counter()
    with open(run_dir / "stdout.txt", "wb") as stdout, open(run_dir / "stderr.txt", "wb") as stderr:
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=env, cwd=run_dir)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    return process.returncode, usage.ru_utime + usage.ru_stime, wall, usage.ru_maxrss / 1024


def one_run(args: argparse.Namespace, name: str, contender: str, steps: int, rep: int) -> Run:
    case = CASES[name]
    run_dir = Path(args.work) / "runs" / name / contender / f"steps{steps}-rep{rep}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    out = run_dir / "out"
    build = hubtools_command if contender == "hubtools" else diffusers_command
    run = Run(name, contender, steps, rep, load_before=loadavg())
    run.returncode, cpu, wall, rss = measure(build(args, case, steps, out), environment(args, contender, run_dir),
                                             run_dir)
    run.cpu_s, run.wall_s, run.peak_rss_mib, run.load_after = round(cpu, 3), round(wall, 3), round(rss, 1), loadavg()
    if run.returncode != 0:
        run.error_tail = (run_dir / "stderr.txt").read_text(errors="replace")[-2000:]
    elif not args.keep_runs:
        shutil.rmtree(run_dir)
    return run


def build_models(args: argparse.Namespace, families: set[str]) -> None:
    """The tiny models of hubtools' families, saved once under --models (built by hubtools' own builders)."""
    missing = sorted(family for family in families if not (Path(args.models) / family / "model_index.json").is_file())
    if not missing:
        return
    code = ("import sys, torch\ntorch.set_num_threads(1)\nfrom hubtools.families import by_name\n"
            "for family in sys.argv[2:]:\n"
            "    by_name(family).build_tiny_pipeline().save_pretrained(f'{sys.argv[1]}/{family}', safe_serialization=True)\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if args.hubtools_pythonpath:
        env["PYTHONPATH"] = args.hubtools_pythonpath
    subprocess.run([args.hubtools_python, "-c", code, args.models, *missing], check=True, env=env)


def versions(python: str) -> dict[str, str]:
    code = ("import importlib.metadata as m, json, sys\nout = {'python': sys.version.split()[0]}\n"
            f"for name in {VERSIONED!r}:\n"
            "    try:\n        out[name] = m.version(name)\n    except m.PackageNotFoundError:\n        pass\n"
            "print(json.dumps(out))")
    result = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False)
    return json.loads(result.stdout) if result.returncode == 0 else {"error": result.stderr[-200:]}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        memory = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    except (OSError, IndexError, ValueError):
        memory = float("nan")
    return f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB RAM, {platform.system()} {platform.release()}"


def summarize(runs: list[Run], long: int, short: int) -> list[dict]:
    """One row per (case, contender): medians, per step, start-up, and the script-over-hubtools ratios."""
    rows = []
    for name in dict.fromkeys(run.case for run in runs):
        figures = {}
        for contender in ("hubtools", "diffusers"):
            def median(steps: int, what: str, contender: str = contender, name: str = name) -> float | None:
                values = [getattr(run, what) for run in runs if (run.case, run.contender, run.steps) ==
                          (name, contender, steps) and run.returncode == 0]
                return statistics.median(values) if values else None
            cpu_long, cpu_short = median(long, "cpu_s"), median(short, "cpu_s")
            if cpu_long is None or cpu_short is None:
                figures[contender] = None
                continue
            per_step = (cpu_long - cpu_short) / (long - short)
            figures[contender] = {"per_step_s": per_step, "startup_s": cpu_short - short * per_step,
                                  "whole_s": cpu_long, "wall_s": median(long, "wall_s"),
                                  "peak_rss_mib": median(long, "peak_rss_mib"),
                                  "reps": sum(1 for run in runs if (run.case, run.contender, run.steps, run.returncode)
                                              == (name, contender, long, 0))}
        rows.append({"case": name, **figures})
    return rows


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def table(rows: list[dict], long: int, short: int) -> str:
    lines = [(f"| case | tool | per step (CPU-ms) | start-up (CPU-s) | whole {long}-step run (CPU-s) | wall (s) | "
              "peak RSS (MiB) | reps |"), "|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        for contender in ("hubtools", "diffusers"):
            f = row.get(contender)
            if f is None:
                lines.append(f"| {row['case']} | {contender} | failed | | | | | |")
                continue
            lines.append(f"| {row['case']} | {contender} | {f['per_step_s'] * 1000:.1f} | {f['startup_s']:.2f} | "
                         f"{f['whole_s']:.2f} | {f['wall_s']:.2f} | {f['peak_rss_mib']:.0f} | {f['reps']} |")
        h, d = row.get("hubtools"), row.get("diffusers")
        if h and d:
            lines.append(f"| {row['case']} | **script / hubtools** | **{ratio(d['per_step_s'], h['per_step_s'])}** | "
                         f"**{ratio(d['startup_s'], h['startup_s'])}** | **{ratio(d['whole_s'], h['whole_s'])}** | "
                         f"{ratio(d['wall_s'], h['wall_s'])} | {ratio(d['peak_rss_mib'], h['peak_rss_mib'])} | |")
    return "\n".join(lines)


def add_shared_arguments(parser: argparse.ArgumentParser, *, work_holds: str) -> None:
    """The flags that say where the two tools, the scripts, the models and the photos are, and which variant runs
    (bench_step_parts.py takes the same)."""
    parser.add_argument("--diffusers-python", required=True, help="python of the venv the diffusers scripts run in")
    parser.add_argument("--scripts", required=True, help="folder holding diffusers' examples/dreambooth scripts")
    parser.add_argument("--work", required=True, help=f"scratch folder: {work_holds}")
    parser.add_argument("--hubtools-python", default=sys.executable, help="python with hubtools installed")
    parser.add_argument("--hubtools-pythonpath", default="", help="PYTHONPATH for hubtools (a checkout to run)")
    parser.add_argument("--models", default="", help="tiny models folder (default WORK/models; built when missing)")
    parser.add_argument("--concept", default=str(DEFAULT_CONCEPT), help="folder of instance photos")
    parser.add_argument("--variant", choices=("matched", "defaults"), default="matched",
                        help="the same work in both tools, or each tool's defaults")
    parser.add_argument("--torchvision-src", default="", help="unpacked torchvision wheel, for the stand-in package")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_shared_arguments(parser, work_holds="runs, results.jsonl, table.md")
    parser.add_argument("--cases", default="sd_lora,sd_full,sdxl_lora,flux_lora", help=f"of {', '.join(CASES)}")
    parser.add_argument("--steps", default="300,30", help="LONG,SHORT")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--shared-cache", action="store_true",
                        help="one HUBTOOLS_CACHE for every hubtools run (a returning user: built tokenizer files, "
                             "identifier reports); default: a fresh one per run (a first run)")
    parser.add_argument("--keep-runs", action="store_true", help="keep every run folder (default: failed ones only)")
    args = parser.parse_args(argv)

    names = [name.strip() for name in args.cases.split(",") if name.strip()]
    unknown = [name for name in names if name not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(CASES)}")
    long, short = sorted((int(value) for value in args.steps.split(",")), reverse=True)
    missing = [CASES[name].script for name in names if not (Path(args.scripts) / CASES[name].script).is_file()]
    if missing:
        parser.error(f"--scripts {args.scripts} has no {', '.join(missing)}")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    args.models = args.models or str(work / "models")
    build_models(args, {CASES[name].family for name in names})

    header = {"machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "load_before": loadavg(),
              "hubtools_venv": versions(args.hubtools_python), "diffusers_venv": versions(args.diffusers_python),
              "variant": args.variant, "steps": [long, short], "reps": args.reps}
    runs: list[Run] = []
    with open(work / "results.jsonl", "a", encoding="utf-8") as results:
        results.write(json.dumps({"header": header}) + "\n")
        for rep in range(args.reps):
            for name in names:
                for steps in (short, long):
                    for contender in ("hubtools", "diffusers"):
                        run = one_run(args, name, contender, steps, rep)
                        runs.append(run)
                        results.write(json.dumps(run.__dict__) + "\n")
                        results.flush()
                        status = "ok" if run.returncode == 0 else f"FAILED (exit {run.returncode})"
                        print(f"rep {rep} {name} {contender} {steps} steps: {run.cpu_s:.1f} CPU-s, "
                              f"{run.wall_s:.1f} s, {run.peak_rss_mib:.0f} MiB, load {run.load_after[0]} {status}",
                              file=sys.stderr, flush=True)
                        if run.returncode != 0:
                            print(run.error_tail, file=sys.stderr)

    def described(venv: dict) -> str:
        return ", ".join(f"{key} {value}" for key, value in venv.items())

    lines = [
        (f"Side by side, variant `{args.variant}`{', shared hubtools cache' if args.shared_cache else ''}, "
         f"{args.reps} repetition(s), {long} and {short} steps, "
         f"{RESOLUTION} px, batch 1, one thread per process; medians of CPU seconds (user + system)."),
        (f"Machine: {header['machine']}. Started {header['started']}; load average before "
         f"{header['load_before']}, after {loadavg()}."),
        f"hubtools venv: {described(header['hubtools_venv'])}.",
        f"diffusers venv: {described(header['diffusers_venv'])}.",
    ]
    only = sorted(set(header["hubtools_venv"]) ^ set(header["diffusers_venv"]))
    if only:  # diffusers and transformers import some of these whenever they are installed (scipy: ~2 CPU-s)
        lines.append(f"Installed in one venv only: {', '.join(only)} (start-up differs by their imports).")
    report = "\n".join([*lines, "", table(summarize(runs, long, short), long, short), ""])
    (work / "table.md").write_text(report, encoding="utf-8")
    print(report)
    return 0 if all(run.returncode == 0 for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
