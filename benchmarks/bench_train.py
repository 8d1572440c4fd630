"""Training benchmark: steps/s, peak GPU memory and model-FLOPs utilisation per memory profile.

On a GPU it trains the real shapes of the chosen family (random weights built from ``sd15_configs.json``,
``sdxl_configs.json`` or ``flux_configs.json``, no download) at the family's resolution (SD 1.5: 512 px,
SDXL and FLUX.1: 1024 px), batch 1 + 1 class image, through the same ``train_dreambooth`` users run.
Without a GPU it runs the family's tiny model at 64 px, so the script itself stays tested.

    python benchmarks/bench_train.py                      # GPU: 800 steps per profile; CPU: 30, tiny model
    python benchmarks/bench_train.py --steps 200 --profiles high,low --out results.json
    python benchmarks/bench_train.py --family sdxl --profiles low          # SDXL LoRA at 1024 px
    python benchmarks/bench_train.py --family flux --profiles medium,low   # FLUX.1-dev LoRA
    python benchmarks/bench_train.py --family sd3 --variant medium --profiles low  # SD3.5 Medium LoRA
    python benchmarks/bench_train.py --family qwen-image --profiles low    # Qwen-Image LoRA
    python benchmarks/bench_train.py --bucket --profiles lora-fast         # one portrait bucket vs the square
    python benchmarks/bench_train.py --bucket 832x1216 --family sdxl --profiles low
    torchrun --nproc-per-node 8 benchmarks/bench_train.py --family flux --profiles fsdp-full  # FLUX.1 full, sharded
    torchrun --nproc-per-node 2 benchmarks/bench_train.py --family qwen-image --profiles fsdp-lora  # Qwen-Image LoRA

Under ``torchrun`` the main process builds the base and the run folders, every process trains, and the
report gives each GPU's peak memory (``peak_memory_gib_per_process``).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent

# name -> (config overrides, what it is). "lora-fast" is LoRA without the memory savers, for the speed target.
PROFILES = {
    "high": ({"memory": "high"}, "full fine-tune, AdamW"),
    "medium": ({"memory": "medium"}, "full fine-tune, 8-bit Adam, gradient checkpointing"),
    "low": ({"memory": "low"}, "LoRA r4, 8-bit Adam, gradient checkpointing"),
    "lora-fast": ({"memory": "manual", "method": "lora"}, "LoRA r4, AdamW, no checkpointing"),
    # under torchrun / accelerate launch: the trained weights, gradients and AdamW states split across the GPUs
    "fsdp-full": ({"memory": "manual", "method": "full", "distributed": "fsdp", "gradient_checkpointing": True},
                  "full fine-tune, FSDP2 across the launched processes, AdamW, gradient checkpointing"),
    "fsdp-lora": ({"memory": "manual", "method": "lora", "distributed": "fsdp", "gradient_checkpointing": True},
                  "LoRA r4, the frozen base sharded with FSDP2 across the launched processes, AdamW"),
}

# Dense peak tensor throughput (FLOP/s) for MFU, by GPU name and precision (vendor datasheets, SXM parts).
PEAK_FLOPS = {
    "H100": {"bf16": 989.4e12, "fp16": 989.4e12, "no": 494.7e12},
    "H200": {"bf16": 989.4e12, "fp16": 989.4e12, "no": 494.7e12},
    "A100": {"bf16": 312e12, "fp16": 312e12, "no": 156e12},
}


FAMILY_RESOLUTION = {"sd": 512, "sdxl": 1024, "flux": 1024}
FAMILY_MODEL = {"sd": "SD 1.5", "sdxl": "SDXL base 1.0", "flux": "FLUX.1-dev"}


def _family_names() -> list[str]:
    from hubtools.families import FAMILIES

    return [family.name for family in FAMILIES]


def _family_resolution(family: str) -> int:
    from hubtools.families import by_name

    return FAMILY_RESOLUTION.get(family) or by_name(family).default_resolution


def _family_model(family: str, variant: str | None) -> str:
    from hubtools.families import by_name

    if family in FAMILY_MODEL:
        return FAMILY_MODEL[family]
    chosen = by_name(family)
    return f"{chosen.title} {variant or chosen.benchmark_variants[0]}".strip()


def build_base(folder: Path, full_size: bool, family: str = "sd", variant: str | None = None) -> Path:
    """A random-weight pipeline of the family, tiny or of the real size, saved as a local base-model folder."""
    from hubtools.families import by_name

    if not full_size:
        by_name(family).build_tiny_pipeline().save_pretrained(folder, safe_serialization=True)
        return folder
    builders = {"sd": _build_sd15, "sdxl": _build_sdxl, "flux": _build_flux}
    if family in builders:
        pipe = builders[family]()
    else:  # a family that carries its own real shapes (benchmark_configs, build_full_size_pipeline)
        chosen = by_name(family)
        pipe = chosen.build_full_size_pipeline(json.loads((HERE / chosen.benchmark_configs).read_text()), variant)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def _clip_config(settings: dict, tokenizer):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(**settings, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)


def _build_sd15():
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from hubtools.tokenizer import build_clip_tokenizer

    configs = json.loads((HERE / "sd15_configs.json").read_text())
    tokenizer = build_clip_tokenizer()
    torch.manual_seed(0)
    text_config = CLIPTextConfig(**configs["text_encoder"], bos_token_id=tokenizer.bos_token_id,
                                 eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return StableDiffusionPipeline(
        unet=UNet2DConditionModel(**configs["unet"]), vae=AutoencoderKL(**configs["vae"]),
        text_encoder=CLIPTextModel(text_config), tokenizer=tokenizer, scheduler=PNDMScheduler(**configs["scheduler"]),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def _build_sdxl():
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from hubtools.tokenizer import build_clip_tokenizer

    configs = json.loads((HERE / "sdxl_configs.json").read_text())
    tokenizer = build_clip_tokenizer()
    tokenizer_2 = CLIPTokenizer.from_pretrained(tokenizer.name_or_path, pad_token="!")
    torch.manual_seed(0)
    return StableDiffusionXLPipeline(
        unet=UNet2DConditionModel(**configs["unet"]), vae=AutoencoderKL(**configs["vae"]),
        text_encoder=CLIPTextModel(_clip_config(configs["text_encoder"], tokenizer)),
        text_encoder_2=CLIPTextModelWithProjection(_clip_config(configs["text_encoder_2"], tokenizer)),
        tokenizer=tokenizer, tokenizer_2=tokenizer_2, scheduler=EulerDiscreteScheduler(**configs["scheduler"]),
        add_watermarker=False,
    )


def _build_flux():
    """Built in bf16 (as FLUX.1 ships): fp32 would be ~67 GB of random weights on disk."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5Config, T5EncoderModel

    from hubtools.tokenizer import build_clip_tokenizer, build_t5_tokenizer

    configs = json.loads((HERE / "flux_configs.json").read_text())
    tokenizer, tokenizer_2 = build_clip_tokenizer(), build_t5_tokenizer()
    torch.manual_seed(0)
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        transformer = FluxTransformer2DModel(**configs["transformer"])
        text_encoder_2 = T5EncoderModel(T5Config(**configs["text_encoder_2"], vocab_size=32128, is_encoder_decoder=False,
                                                 use_cache=False, pad_token_id=0, eos_token_id=1))
        text_encoder = CLIPTextModel(_clip_config(configs["text_encoder"], tokenizer))
        vae = AutoencoderKL(**configs["vae"])
    finally:
        torch.set_default_dtype(before)
    return FluxPipeline(transformer=transformer, vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                        tokenizer=tokenizer, tokenizer_2=tokenizer_2,
                        scheduler=FlowMatchEulerDiscreteScheduler(**configs["scheduler"]))


def make_run(root: Path, name: str, base: Path, *, steps: int, resolution: int, overrides: dict, device: str,
             bucket: tuple[int, int] | None = None):
    """A run folder with one instance image and a one-image class folder (generation is not benchmarked); with
    ``bucket`` (width, height) the image is one photo in that aspect-ratio bucket, as ``concept prepare`` writes it."""
    from hubtools.concepts.manifest import ManifestEntry, PreparedConcept, write_manifest, write_metadata
    from hubtools.config import RUN_CONFIG_FILENAME, RunConfig, save_config

    run = root / name
    (run / "concept" / "images").mkdir(parents=True)
    classes = root / f"class-images-{name}"
    classes.mkdir(exist_ok=True)
    width, height = bucket or (resolution, resolution)
    rng = np.random.default_rng(0)
    noise = lambda: Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))  # noqa: E731
    noise().save(run / "concept" / "images" / "00.png")
    noise().save(classes / "00.png")
    concept = run / "concept"
    entries = [ManifestEntry("accepted", "ok", path="00.png", output="images/00.png", original_size=[width, height],
                             bucket=[width, height], crop_box=[0, 0, width, height])] if bucket else []
    prepared = PreparedConcept(
        dir=concept, images=[concept / "images" / "00.png"], captions=["a photo of pkblz dog"],
        manifest_path=concept / "manifest.json", contact_sheet_path=concept / "contact_sheet.png",
        metadata_path=concept / "metadata.jsonl", source=str(concept), source_revision=None, resolution=resolution,
        counts={"accepted": 1, "rejected": 0, "duplicate": 0, "ignored": 0, "total": 1}, entries=entries,
        buckets=[[width, height]] if bucket else None,
    )
    write_metadata(prepared)
    write_manifest(prepared)
    cfg = RunConfig.model_validate({
        "model": {"base_model": str(base)},
        "concept": {"identifier": "pkblz", "class_noun": "dog"},
        "training": {"steps": steps, "resolution": resolution, "batch_size": 1, "cache_latents": True,
                     "mixed_precision": "auto", "device": device, "checkpoint_every": 0, "validation_every": 0,
                     **overrides},
        "prior": {"enabled": True, "source": str(classes), "num_class_images": 1},
    }).resolve()
    save_config(cfg, run / RUN_CONFIG_FILENAME)
    return cfg, run


def denoiser_forward_flops(base: Path, batch: int, resolution: int | tuple[int, int], device: torch.device) -> float:
    """FLOPs of one denoiser forward pass (UNet or FLUX transformer) on (instance + class) latents, through the
    family's own ``predict``, counted by PyTorch's FlopCounterMode."""
    from diffusers import DiffusionPipeline
    from torch.utils.flop_counter import FlopCounterMode

    from hubtools.families import of_pipeline

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    pipe = DiffusionPipeline.from_pretrained(base, torch_dtype=dtype).to(device)
    family = of_pipeline(pipe)
    parts = pipe.components
    with torch.no_grad():
        conditioning = family.encode_prompts({name: parts[name] for name in family.text_encoders},
                                             family.tokenize(parts, ["a photo of pkblz dog"] * batch, device))
        width, height = (resolution, resolution) if isinstance(resolution, int) else resolution
        vae_config = parts["vae"].config  # latent_channels, or z_dim for the video-style VAEs (Qwen-Image)
        channels = vae_config.get("latent_channels") or vae_config.get("z_dim")
        latents = torch.randn(batch, channels, height // family.vae_scale_factor, width // family.vae_scale_factor,
                              device=device, dtype=dtype)
        with FlopCounterMode(display=False) as counter:
            family.predict(parts[family.denoiser], latents, torch.tensor([500.0] * batch, device=device), conditioning)
    del pipe, parts
    return float(counter.get_total_flops())


def pick_bucket(text: str | None, resolution: int, family: str) -> tuple[int, int] | None:
    """The bucket of ``--bucket``: WIDTHxHEIGHT as given, or ``auto``: the 3:4 portrait bucket of the area."""
    from hubtools.concepts.buckets import auto_buckets, nearest_bucket, parse_buckets
    from hubtools.families import by_name

    if text is None:
        return None
    multiple = by_name(family).size_multiple
    if text == "auto":
        return nearest_bucket((3, 4), auto_buckets(resolution, multiple)).as_tuple()
    return parse_buckets(text, multiple)[0].as_tuple()


def peak_flops(precision: str) -> float | None:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((table.get(precision) for key, table in PEAK_FLOPS.items() if key in name), None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--steps", type=int, default=None, help="default: 800 on GPU, 30 on CPU")
    parser.add_argument("--profiles", default=",".join(PROFILES), help=f"comma-separated, from {', '.join(PROFILES)}")
    parser.add_argument("--family", choices=_family_names(), default="sd",
                        help="sd (SD 1.5 shapes), sdxl (SDXL base), flux (FLUX.1-dev), or any other family hubtools trains")
    parser.add_argument("--variant", default=None,
                        help="the family's variant to build, where it has several (its benchmark_variants; default the first)")
    parser.add_argument("--resolution", type=int, default=None,
                        help="default: the family's on GPU (512 SD 1.5, 1024 SDXL/FLUX), 64 on CPU (tiny)")
    parser.add_argument("--bucket", nargs="?", const="auto", default=None, metavar="WxH",
                        help="also train on one aspect-ratio bucket (WIDTHxHEIGHT; alone: the 3:4 bucket of the "
                             "resolution's area) and compare its steps/s with the square's")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)

    from hubtools.training import train_dreambooth

    gpu = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = "cuda" if gpu else "cpu"
    steps = args.steps or (800 if gpu else 30)
    resolution = args.resolution or (_family_resolution(args.family) if gpu else 64)
    model = f"{_family_model(args.family, args.variant)} shapes, random weights" if gpu else f"hubtools tiny {args.family} model"
    from hubtools import distributed

    distributed.set_up(cpu=not gpu)  # under torchrun: the main process builds, every process trains
    main = distributed.is_main()
    results = []
    tmp = distributed.on_main("the benchmark folder", lambda: tempfile.mkdtemp(prefix="hubtools-bench-"))
    try:
        root = Path(tmp)
        started = time.perf_counter()
        base = distributed.on_main("building the base", lambda: build_base(
            root / "base", full_size=gpu, family=args.family, variant=args.variant))
        if main:
            print(f"built the {model} in {time.perf_counter() - started:.0f}s", file=sys.stderr)
        bucket = pick_bucket(args.bucket, resolution, args.family)
        shapes = [None] + ([bucket] if bucket else [])
        forwards = distributed.on_main("counting FLOPs", lambda: {
            shape: denoiser_forward_flops(base, batch=2, resolution=shape or resolution, device=torch.device(device))
            for shape in shapes})
        forward = forwards[None]
        for name, shape in [(p.strip(), shape) for p in args.profiles.split(",") if p.strip() for shape in shapes]:
            overrides, summary = PROFILES[name]
            label = f"{shape[0]}x{shape[1]}" if shape else f"{resolution}x{resolution}"
            cfg, run = distributed.on_main("the run folder", lambda: make_run(
                root, f"run-{name}-{label}", base, steps=steps, resolution=resolution, overrides=overrides,
                device=device, bucket=shape))
            gc.collect()
            if gpu:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            result = train_dreambooth(cfg, run, progress=main)
            peaks = distributed.each("peak memory", lambda: result.peak_memory_bytes)
            # fwd + bwd: ~3 forward passes for a full fine-tune; LoRA skips the frozen weights' gradients (~2)
            flops_per_step = forwards[shape] * (3 if result.method == "full" else 2)
            peak = peak_flops(result.mixed_precision)
            achieved = flops_per_step * (result.steps_per_second or 0)
            results.append({
                "profile": name, "what": summary, "method": result.method, "steps": steps,
                "size": label, "bucketed": shape is not None,
                "steps_per_second": result.steps_per_second, "peak_memory_gib":
                    round(result.peak_memory_bytes / 2**30, 2) if result.peak_memory_bytes else None,
                "mixed_precision": result.mixed_precision, "achieved_tflops": round(achieved / 1e12, 4),
                "mfu": round(achieved / peak, 4) if peak else None, "final_loss": result.final_loss,
                "settings": result.settings, "processes": result.num_processes,
                "peak_memory_gib_per_process": [round(p / 2**30, 2) if p else None for p in peaks],
            })
            if main:
                print(json.dumps(results[-1]), file=sys.stderr)
        distributed.barrier("the end of the benchmark")
    finally:
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
    if not main:
        return 0
    report = {
        "device": torch.cuda.get_device_name() if gpu else f"CPU ({platform.processor() or platform.machine()}, "
                                                           f"{torch.get_num_threads()} threads)",
        "model": model, "family": args.family,
        "resolution": resolution, "bucket": f"{bucket[0]}x{bucket[1]}" if bucket else None,
        "batch": "1 instance + 1 class", "denoiser_forward_gflops_batch2": round(forward / 1e9, 3),
        "versions": _versions(), "results": results,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


def _versions() -> dict[str, str]:
    import accelerate
    import diffusers
    import peft
    import transformers

    versions = {"python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
                "transformers": transformers.__version__, "accelerate": accelerate.__version__, "peft": peft.__version__}
    try:
        import bitsandbytes

        versions["bitsandbytes"] = bitsandbytes.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        versions["cuda"] = torch.version.cuda or ""
    return versions


if __name__ == "__main__":
    sys.exit(main())
