"""`hubtools eval RUN`: measure a trained run like the DreamBooth paper and show it beside the base model."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the ``eval`` command to the root app."""
    app.command("eval")(eval_command)


def eval_command(
    run: Path = typer.Argument(..., metavar="RUN", help="The run folder (the --out of `hubtools train`).", show_default=False),
    prompts: str | None = typer.Option(None, "--prompts", help="dreambench, or a text file with one prompt per line "
                                       "({identifier} and {class_noun} are filled in). Default: the run's [eval] setting."),
    n_per_prompt: int | None = typer.Option(None, "--n-per-prompt", min=1, help="Images per prompt (seeds 0..N-1). Default: the run's [eval] n_per_prompt (4)."),
    n_class_images: int | None = typer.Option(None, "--n-class-images", min=0, help="Class-prompt images for PRES (0 skips PRES). Default: the run's [eval] n_class_images (16)."),
    max_prompts: int | None = typer.Option(None, "--max-prompts", min=1, help="Only the first N prompts, for a quick look."),
    steps: int | None = typer.Option(None, "--steps", min=1, help="Inference steps. Default: the run's [eval] num_inference_steps, else its sampling steps."),
    guidance: float | None = typer.Option(None, "--guidance", min=0, help="Classifier-free guidance scale. Default: the run's [eval] guidance_scale (7.5)."),
    seed: int | None = typer.Option(None, "--seed", help="First seed. Default: the run's [eval] seed (0)."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="Images generated at once. Default: the run's [eval] batch_size (4)."),
    device: str | None = typer.Option(None, "--device", help="auto, cpu or cuda. Default: the run's [eval] device (auto)."),
    baseline: bool | None = typer.Option(None, "--baseline/--no-baseline", help="Also measure the base model (default: the run's [eval] baseline, on)."),
    dino_model: str | None = typer.Option(None, "--dino-model", help="DINO ViT model id or folder. Default: the run's eval.dino_model (facebook/dino-vits16)."),
    clip_model: str | None = typer.Option(None, "--clip-model", help="CLIP model id or folder. Default: the run's eval.clip_model (openai/clip-vit-base-patch32)."),
    save_images: bool | None = typer.Option(None, "--save-images/--no-save-images", help="Also write the generated images to RUN/images/eval/ (default: the run's [eval] save_images)."),
) -> None:
    """Generate with fixed seeds on the DreamBench prompts and score DINO, CLIP-I, CLIP-T, PRES and DIV; writes RUN/eval.json.

    The run's [eval] settings apply; a flag overrides only its own setting."""
    from hubtools import runner
    from hubtools.cli import console
    from hubtools.cli.tables import eval_table
    from hubtools.errors import ConfigError

    if device is not None and device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda (got {device!r})")
    with console.ConsoleReporter() as reporter:
        result = runner.evaluate(
            run, reporter=reporter, prompts=prompts, n_per_prompt=n_per_prompt, n_class_images=n_class_images,
            max_prompts=max_prompts, num_inference_steps=steps, guidance_scale=guidance, seed=seed,
            batch_size=batch_size, device=device, baseline=baseline, save_images=save_images,
            dino_model=dino_model, clip_model=clip_model,
        )
    if result is None:  # another process than the main one, under torchrun: it drew its share
        return
    console.result(eval_table(result))
    console.result(f"wrote {Path(run) / 'eval.json'}")
