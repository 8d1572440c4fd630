"""``hubtools train-and-push``: photos in, a DreamBooth model with grids and a card on the Hub out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from hubtools.cli import console
from hubtools.cli import run_options as opt
from hubtools.cli.tables import plan_table, train_table


def register(app: typer.Typer) -> None:
    app.command("train-and-push")(train_and_push_command)


def train_and_push_command(
    config_argument: Annotated[Optional[Path], typer.Argument(
        metavar="CONFIG", show_default=False,
        help="TOML config (same as --config), e.g. hackathon/pokeball-machine.toml.")] = None,
    config_file: opt.ConfigFile = None,
    out: opt.Out = None,
    base_model: opt.BaseModelFlag = None,
    vae: opt.Vae = None,
    concept: opt.Concept = None,
    identifier: opt.Identifier = None,
    class_noun: opt.ClassNoun = None,
    image_column: opt.ImageColumn = None,
    strict: opt.Strict = False,
    method: opt.Method = None,
    steps: opt.Steps = None,
    learning_rate: opt.LearningRate = None,
    resolution: opt.Resolution = None,
    device: opt.Device = None,
    memory: opt.Memory = None,
    mixed_precision: opt.MixedPrecision = None,
    train_text_encoder: opt.TrainTextEncoder = None,
    checkpoint_every: opt.CheckpointEvery = None,
    prior: opt.Prior = None,
    num_class_images: opt.NumClassImages = None,
    fidelity_curve: opt.FidelityCurve = None,
    repo: opt.Repo = None,
    private: opt.Private = None,
    hackathon: opt.Hackathon = None,
    evaluate: opt.Evaluate = None,
    settings: opt.Settings = [],  # noqa: B006 (typer reads the default, never mutates it)
    resume: opt.Resume = False,
    force: opt.Force = False,
    dry_run: opt.DryRun = False,
    quiet: opt.Quiet = False,
) -> None:
    """Prepare the photos, train DreamBooth, render grids and a card, and push it all in one commit."""
    from hubtools import runner
    from hubtools.pipelines import quiet_weight_loading

    if config_argument and config_file and config_argument != config_file:
        raise typer.BadParameter("give the config file once: as the argument or as --config")
    config = opt.build_config(config_file or config_argument, settings, {
        "model.base_model": base_model, "model.vae": vae, "concept.source": concept, "concept.identifier": identifier,
        "concept.class_noun": class_noun, "concept.image_column": image_column, "concept.strict": strict or None,
        "training.method": method, "training.steps": steps, "training.learning_rate": learning_rate,
        "training.resolution": resolution, "training.device": device, "training.memory": memory,
        "training.mixed_precision": mixed_precision, "training.train_text_encoder": train_text_encoder,
        "training.checkpoint_every": checkpoint_every, "prior.enabled": prior,
        "prior.num_class_images": num_class_images, "eval.during_training": fidelity_curve,
        "publish.repo_id": repo, "publish.private": private, "publish.hackathon_theme": hackathon,
        "eval.enabled": evaluate,
    })
    run_dir = out or opt.default_run_dir(config)
    quiet_weight_loading()
    with console.ConsoleReporter(progress=not quiet) as reporter:
        if dry_run:
            console.show(plan_table(runner.plan(config, run_dir, reporter=reporter)))
            return
        result = runner.train_and_push(None if resume else config, run_dir, resume=resume, force=force,
                                       reporter=reporter)
    console.show(train_table(result.train))
    console.result(f"run folder   {result.run_dir}")
    grids = getattr(result.samples, "grids", []) or []
    for grid in grids:
        console.result(f"grid         {grid}")
    console.result(f"card         {result.run_dir / 'README.md'}")
    console.result(result.push.url, data={"url": result.push.url, "run_dir": str(result.run_dir),
                                          "grids": [str(grid) for grid in grids], "card": str(result.run_dir / "README.md")})
