"""The evaluation stage: generate with fixed seeds, embed, score; the run's model and its base model alike.

Generation sits behind ``ImageGenerator`` (prompts and seeds in, PIL images out), so the scoring can be
driven by any pipeline, including a tiny one in tests, and by the trainer's validation step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from PIL import Image

from hubtools.atomic import save_image_atomic
from hubtools.config import EvalConfig
from hubtools.errors import InputError
from hubtools.evaluation import metrics
from hubtools.evaluation.encoders import Encoders, load_encoders
from hubtools.evaluation.prompts import PromptSet, load_prompts
from hubtools.evaluation.result import EvalResult, PromptScore, Scores
from hubtools.imagefiles import image_files

ImageGenerator = Callable[[Sequence[str], Sequence[int]], list[Image.Image]]
# (what is being done, done so far, total): the CLI turns it into a progress bar.
Progress = Callable[[str, int, int], None]



@dataclass
class Generations:
    prompts: list[str]
    images: list[list[Image.Image]]  # images[i]: the n_per_prompt images of prompts[i]
    class_images: list[Image.Image]


# -- generation -------------------------------------------------------------------------------------


def pipeline_generator(pipe, *, num_inference_steps: int, guidance_scale: float, batch_size: int = 4) -> ImageGenerator:
    """Wrap a diffusers text-to-image pipeline; each image has its own seeded generator, so an image depends
    on its prompt and seed only, not on the batch it was drawn in."""

    def generate(prompts: Sequence[str], seeds: Sequence[int]) -> list[Image.Image]:
        device = getattr(pipe, "device", torch.device("cpu"))
        images: list[Image.Image] = []
        for start in range(0, len(prompts), batch_size):
            chunk_prompts = list(prompts[start : start + batch_size])
            generators = [torch.Generator(device=device).manual_seed(int(seed)) for seed in seeds[start : start + batch_size]]
            with torch.no_grad():
                output = pipe(prompt=chunk_prompts, num_inference_steps=num_inference_steps,
                              guidance_scale=guidance_scale, generator=generators, output_type="pil")
            images.extend(output.images)
        return images

    return generate


def eval_jobs(prompts: Sequence[str], seeds: Sequence[int], class_prompt: str | None = None,
              n_class_images: int = 0) -> list[tuple[str, int]]:
    """What the evaluation draws, in order: every prompt with every seed, then the class prompt with seeds
    0..n_class_images-1 (offset by seeds[0])."""
    jobs = [(prompt, seed) for prompt in prompts for seed in seeds]
    if class_prompt and n_class_images:
        first = seeds[0] if seeds else 0
        jobs += [(class_prompt, first + index) for index in range(n_class_images)]
    return jobs


def draw_batches(generate: ImageGenerator, jobs: Sequence[tuple[str, int]], batch_size: int,
                 numbers: Sequence[int] | None = None, *, progress: Progress | None = None,
                 label: str = "generating") -> dict[int, list[Image.Image]]:
    """Batch ``n`` of ``jobs`` (``batch_size`` each) for each ``n`` in ``numbers`` (None: all of them), by number.
    A batch is the same whoever draws it, so its images are too: several processes can split the batches."""
    count = -(-len(jobs) // batch_size)
    numbers = range(count) if numbers is None else list(numbers)
    total = sum(len(jobs[n * batch_size : (n + 1) * batch_size]) for n in numbers)
    drawn: dict[int, list[Image.Image]] = {}
    done = 0
    for number in numbers:
        chunk = jobs[number * batch_size : (number + 1) * batch_size]
        images = generate([prompt for prompt, _ in chunk], [seed for _, seed in chunk])
        if len(images) != len(chunk):
            raise RuntimeError(f"the generator returned {len(images)} images for {len(chunk)} prompts")
        drawn[number] = list(images)
        done += len(chunk)
        if progress:
            progress(label, done, total)
    return drawn


def assemble_generations(prompts: Sequence[str], seeds: Sequence[int], drawn: Mapping[int, Sequence[Image.Image]]
                         ) -> Generations:
    """The batches ``draw_batches`` drew (by one process or several), in order, as the prompts' images."""
    produced = [image for number in sorted(drawn) for image in drawn[number]]
    per_prompt = len(seeds)
    return Generations(
        prompts=list(prompts),
        images=[produced[i * per_prompt : (i + 1) * per_prompt] for i in range(len(prompts))],
        class_images=produced[len(prompts) * per_prompt :],
    )


def generate_eval_images(generate: ImageGenerator, prompts: Sequence[str], seeds: Sequence[int],
                         class_prompt: str | None = None, n_class_images: int = 0, *,
                         batch_size: int = 4, progress: Progress | None = None, label: str = "generating") -> Generations:
    """Every prompt with every seed, and the class prompt with seeds 0..n_class_images-1 (offset by seeds[0])."""
    jobs = eval_jobs(prompts, seeds, class_prompt, n_class_images)
    drawn = draw_batches(generate, jobs, batch_size, progress=progress, label=label)
    return assemble_generations(prompts, seeds, drawn)


# -- scoring ----------------------------------------------------------------------------------------


@dataclass
class RealEmbeddings:
    dino: torch.Tensor
    clip: torch.Tensor


def embed_real_images(real_images: Sequence[Image.Image], encoders: Encoders) -> RealEmbeddings:
    if not real_images:
        raise InputError("no real images of the subject to compare with: the run's concept/images/ is empty")
    return RealEmbeddings(dino=encoders.dino.embed_images(real_images), clip=encoders.clip.embed_images(real_images))


def real_image_scores(real: RealEmbeddings) -> Scores:
    """DINO and CLIP-I among the real photos themselves (distinct pairs), the paper's "real images" row."""
    return Scores(dino=metrics.mean_self_similarity(real.dino), clip_i=metrics.mean_self_similarity(real.clip),
                  n_images=real.dino.shape[0])


def score_generations(real: RealEmbeddings, prompts: Sequence[str], images: Sequence[Sequence[Image.Image]],
                      encoders: Encoders, class_images: Sequence[Image.Image] = ()) -> Scores:
    """DINO, CLIP-I, CLIP-T, DIV over the prompt generations and PRES over the class-prompt ones."""
    if len(prompts) != len(images) or not prompts or any(not group for group in images):
        raise ValueError("score_generations needs at least one image for each prompt")
    flat = [image for group in images for image in group]
    dino = encoders.dino.embed_images(flat)
    clip = encoders.clip.embed_images(flat)
    text = encoders.clip.embed_texts(list(prompts))
    counts = [len(group) for group in images]
    text_per_image = torch.repeat_interleave(text, torch.tensor(counts), dim=0)
    dino_groups = list(torch.split(dino, counts))
    clip_groups = list(torch.split(clip, counts))
    per_prompt = [
        PromptScore(
            prompt=prompt,
            dino=metrics.mean_pairwise_similarity(dino_group, real.dino),
            clip_i=metrics.mean_pairwise_similarity(clip_group, real.clip),
            clip_t=metrics.mean_paired_similarity(clip_group, text[index : index + 1].expand_as(clip_group)),
            div=metrics.diversity([dino_group]),
        )
        for index, (prompt, dino_group, clip_group) in enumerate(zip(prompts, dino_groups, clip_groups))
    ]
    pres = None
    if class_images:
        pres = metrics.mean_pairwise_similarity(encoders.dino.embed_images(list(class_images)), real.dino)
    return Scores(
        dino=metrics.mean_pairwise_similarity(dino, real.dino),
        clip_i=metrics.mean_pairwise_similarity(clip, real.clip),
        clip_t=metrics.mean_paired_similarity(clip, text_per_image),
        pres=pres,
        div=metrics.diversity(dino_groups),
        n_images=len(flat) + len(class_images),
        per_prompt=per_prompt,
    )


def evaluate_images(real_images: Sequence[Image.Image], generated: Mapping[str, Sequence[Image.Image]], *,
                    encoders: Encoders, class_images: Sequence[Image.Image] = ()) -> Scores:
    """Score images already generated: ``generated`` maps each prompt to its images. No diffusion model needed;
    this is also the light version a trainer can run at validation steps."""
    real = embed_real_images(real_images, encoders)
    return score_generations(real, list(generated), [list(group) for group in generated.values()], encoders, class_images)


def evaluate_generator(generate: ImageGenerator, real_images: Sequence[Image.Image], prompts: Sequence[str], *,
                       encoders: Encoders, seeds: Sequence[int] = (0,), class_prompt: str | None = None,
                       n_class_images: int = 0, batch_size: int = 4) -> Scores:
    """Generate and score in one call: the light evaluation a trainer can run at validation steps, e.g.
    ``evaluate_generator(pipeline_generator(pipe, num_inference_steps=25, guidance_scale=7.5), photos,
    prompts[:4], encoders=load_encoders(device=pipe.device))`` (encoders are loaded once and cached)."""
    generations = generate_eval_images(generate, prompts, seeds, class_prompt, n_class_images, batch_size=batch_size)
    real = embed_real_images(real_images, encoders)
    return score_generations(real, generations.prompts, generations.images, encoders, generations.class_images)


# -- the stage --------------------------------------------------------------------------------------


def load_real_images(run_dir: Path) -> list[Image.Image]:
    """The prepared concept photos of a run (``concept/images/``), in name order."""
    folder = Path(run_dir) / "concept" / "images"
    paths = image_files(folder)
    if not paths:
        raise InputError(f"{run_dir} has no prepared concept images in concept/images/: run `hubtools train` "
                         "(or `hubtools concept prepare`) for this run first")
    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(image.convert("RGB"))
    return images


def evaluate_run(run_dir: Path, cfg: EvalConfig | None = None, *, ours: ImageGenerator | None = None,
                 baseline: ImageGenerator | None = None, encoders: Encoders | None = None,
                 progress: Progress | None = None, token: str | None = None) -> EvalResult | None:
    """Measure a run folder's model (and its base model) on the prompt list; writes ``run_dir/eval.json``.

    ``ours`` / ``baseline`` replace the pipelines loaded from the run (tests, or a pipeline already in memory);
    ``encoders`` replaces the DINO / CLIP models named in ``cfg``. ``token`` is for private or gated models
    (None: the logged-in user's, as huggingface_hub finds it).

    Under several processes (``hubtools.distributed``) every process calls it: each draws its share of the
    batches (the batches one process would draw, in turn, each image with its own seed), the main process
    gathers them and scores them (it alone loads the encoders) and returns the result (the others: None). The
    images are byte for byte what one process draws.
    """
    from hubtools import distributed
    from hubtools.config import load_run_config
    from hubtools.devices import resolve_device
    from hubtools.runfolder import RunFolder

    cfg = cfg or EvalConfig()
    started = time.perf_counter()
    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    run_config = load_run_config(run_dir)
    identifier = run_config.concept.identifier
    class_noun = run_config.concept.class_noun
    if not identifier or not class_noun:
        raise InputError(f"{folder.config} names no identifier or class noun: set [concept] identifier and class_noun")
    prompt_set: PromptSet = load_prompts(cfg.prompts, class_noun)
    prompts = prompt_set.fill(identifier, class_noun)[: cfg.max_prompts]
    if ours is None:  # the run's own model is drawn: before any encoder is fetched, say it is not there
        folder.require_trained_model()
    class_prompt = run_config.class_prompt if cfg.n_class_images else None
    steps = cfg.num_inference_steps or run_config.sampling.num_inference_steps
    device = resolve_device(cfg.device)
    jobs = eval_jobs(prompts, cfg.seeds, class_prompt, cfg.n_class_images)
    batches = range(-(-len(jobs) // cfg.batch_size))

    def embed_photos() -> tuple[Encoders, RealEmbeddings]:
        real_images = load_real_images(run_dir)
        loaded = encoders
        if loaded is None:
            if progress:
                progress("loading encoders", 0, 1)
            loaded = load_encoders(cfg.dino_model, cfg.clip_model, device, token=token)
        return loaded, embed_real_images(real_images, loaded)

    # the main process alone scores: it loads the encoders (the others wait, and hear of a failure)
    scoring = distributed.main_only("loading the evaluation encoders", embed_photos)

    def measure(which: str, generate: ImageGenerator | None, load) -> Scores | None:
        label = f"generating ({which})"

        def draw_share() -> dict[int, list[Image.Image]]:
            mine = [number for number in batches if distributed.mine(number)]
            if not mine:  # more processes than batches: nothing to load for
                return {}
            drawing = generate
            if drawing is None:
                if progress:
                    progress(f"loading the {which} model", 0, 1)
                drawing = pipeline_generator(load(), num_inference_steps=steps, guidance_scale=cfg.guidance_scale,
                                             batch_size=cfg.batch_size)  # the pipeline is freed on return
            return draw_batches(drawing, jobs, cfg.batch_size, mine, progress=progress, label=label)

        shares = distributed.each(f"the evaluation images ({which})", draw_share)

        def score() -> Scores:
            generations = assemble_generations(prompts, cfg.seeds, {n: images for drawn in shares
                                                                    for n, images in drawn.items()})
            if cfg.save_images:
                _save_generations(folder.images / "eval" / which, generations, cfg.seeds)
            if progress:
                progress(f"scoring ({which})", 0, 1)
            assert scoring is not None
            used, real = scoring
            return score_generations(real, generations.prompts, generations.images, used, generations.class_images)

        return distributed.main_only(f"scoring the evaluation ({which})", score)

    from hubtools.pipelines import load_base_pipeline, load_run_pipeline, record_of_run

    ours_scores = measure("ours", ours, lambda: load_run_pipeline(run_dir, device=device, token=token))
    baseline_scores = None
    if cfg.baseline:
        baseline_scores = measure("base", baseline, lambda: load_base_pipeline(
            run_config.model, device=device, token=token, record=record_of_run(run_dir, run_config.model, token=token)))
    if scoring is None or ours_scores is None:
        return None  # not the main process
    used, real = scoring
    result = EvalResult(
        ours=ours_scores,
        baseline=baseline_scores,
        real=real_image_scores(real),
        identifier=identifier,
        class_noun=class_noun,
        base_model=run_config.model.base_model,
        prompt_source=prompt_set.source,
        prompts=prompts,
        class_prompt=class_prompt,
        n_per_prompt=cfg.n_per_prompt,
        n_class_images=cfg.n_class_images,
        seeds=cfg.seeds,
        num_inference_steps=steps,
        guidance_scale=cfg.guidance_scale,
        dino_model=used.dino.model_id,
        clip_model=used.clip.model_id,
        device=str(device),
        seconds=round(time.perf_counter() - started, 2),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    result.save(folder.eval_result)
    return result


def _save_generations(out_dir: Path, generations: Generations, seeds: Sequence[int]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for index, group in enumerate(generations.images):
        for seed, image in zip(seeds, group):
            save_image_atomic(image, out_dir / f"prompt{index:02d}-seed{seed}.png")
    for index, image in enumerate(generations.class_images):
        save_image_atomic(image, out_dir / f"class-{index:02d}.png")
