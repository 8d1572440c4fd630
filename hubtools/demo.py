"""``hubtools demo``: the whole product, offline, on a CPU, in well under two minutes.

It starts the local hub in-process, publishes the tiny random-weight pipeline of the chosen family there
(``--family``: any family of the registry, the first by default; each names its own ``tiny_repo_id``), trains DreamBooth on the shipped DreamBench dog photos with the same
``train_and_push`` a real run uses, then loads the pushed model back from the hub with plain diffusers
(``DiffusionPipeline.from_pretrained``, or the base model plus ``load_lora_weights``) and draws one image.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubtools.config import RunConfig, apply_overrides
from hubtools.errors import ConfigError
from hubtools.families import DEFAULT_FAMILY, by_name, of_pipeline
from hubtools.resources import DEMO_CONCEPT_DIR
from hubtools.reporting import Reporter, SilentReporter
from hubtools.runner import train_and_push

DEMO_USER = "demo"
DEMO_REPO = f"{DEMO_USER}/nlwx-dog"


@dataclass
class DemoResult:
    run_dir: Path
    hub_data: Path
    repo_url: str
    grids: list[Path]
    reloaded_image: Path
    train: Any


def demo_repo(family: str = DEFAULT_FAMILY.name) -> str:
    return DEMO_REPO if family == DEFAULT_FAMILY.name else f"{DEMO_REPO}-{family}"


def demo_config(steps: int, family: str = DEFAULT_FAMILY.name) -> RunConfig:
    """The tiny model's recipe. Its weights are random, so it learns at a far larger rate than a real model
    would. Settings a family decides (its method, its guidance) are left to the family's defaults."""
    return apply_overrides(
        RunConfig(),
        {
            "model.base_model": by_name(family).tiny_repo_id,
            "concept.source": str(DEMO_CONCEPT_DIR),
            # One rare token (id 49260) with no meaning yet: what `hubtools identifier suggest` looks for.
            "concept.identifier": "nlwx",
            "concept.class_noun": "dog",
            "training.resolution": 64,
            "training.steps": steps,
            "training.learning_rate": 5e-4,
            "training.device": "cpu",
            "training.checkpoint_every": max(1, steps // 2),
            "training.keep_checkpoints": 2,
            "training.validation_every": max(1, steps // 2),
            "prior.num_class_images": 4,
            "prior.generation_steps": 4,
            "sampling.num_inference_steps": 10,
            "publish.repo_id": demo_repo(family),
        },
    )


def run_demo(out: Path, *, steps: int = 60, reporter: Reporter | None = None,
             family: str = DEFAULT_FAMILY.name) -> DemoResult:
    reporter = reporter or SilentReporter()
    chosen = by_name(family)
    from hubtools.hubenv import hub_progress_bars_hidden, point_clients_at
    from hubtools.localhub import serve_in_background
    from hubtools.tinymodel import publish_tiny_model

    out = Path(out)
    run_dir = out / "run"
    hub_data = out / "hub"
    if (run_dir / "hubtools.toml").exists():
        raise ConfigError(f"{out} already holds a demo run: remove it or pass another --out")
    # Random per-demo tokens: nothing to leak, and nothing written anywhere.
    tokens = {DEMO_USER: secrets.token_urlsafe(16), "hubtools": secrets.token_urlsafe(16)}
    with serve_in_background(hub_data, port=0, tokens=tokens) as hub:
        point_clients_at(hub.url)
        reporter.stage(f"local hub at {hub.url}")
        reporter.stage(f"publishing the tiny base model as {chosen.tiny_repo_id}")
        with hub_progress_bars_hidden():  # the stand-in base model's upload is scenery, not the user's push
            publish_tiny_model(hub.url, tokens["hubtools"], family=family)
        result = train_and_push(demo_config(steps, family), run_dir, token=tokens[DEMO_USER], reporter=reporter)
        repo_id = demo_repo(family)
        reporter.stage(f"loading {repo_id} back from the hub")
        lora_base = chosen.tiny_repo_id if result.train.method == "lora" else None
        reloaded = _generate_from_hub(repo_id, out / "from_hub.png", token=tokens[DEMO_USER], lora_base=lora_base)
    return DemoResult(
        run_dir=run_dir,
        hub_data=hub_data,
        repo_url=result.push.url,
        grids=list(getattr(result.samples, "grids", []) or []),
        reloaded_image=reloaded,
        train=result.train,
    )


def _generate_from_hub(repo_id: str, path: Path, token: str, lora_base: str | None = None) -> Path:
    """One image from the pushed repo, loaded as a user would: the pipeline, or the base plus the LoRA."""
    import torch
    from diffusers import DiffusionPipeline

    if lora_base:
        pipe = DiffusionPipeline.from_pretrained(lora_base, token=token)
        pipe.load_lora_weights(repo_id, token=token)
    else:
        pipe = DiffusionPipeline.from_pretrained(repo_id, token=token)
    pipe.set_progress_bar_config(disable=True)
    family = of_pipeline(pipe)
    extra = family.call_kwargs(dict(pipe.components[family.denoiser].config))
    if not family.pipeline_sizes_itself:  # such a pipeline draws 1024 px unless told; the tiny model is 64 px
        extra.update(height=64, width=64)
    image = pipe(prompt="a photo of nlwx dog on the beach", num_inference_steps=10,
                 generator=torch.Generator().manual_seed(0), **extra).images[0]
    image.resize((256, 256)).save(path)
    return path
