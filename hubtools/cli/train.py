"""``hubtools train``: train DreamBooth into a run folder, without pushing; ``--resume`` continues a run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from hubtools.cli import console
from hubtools.cli import run_options as opt
from hubtools.cli.tables import plan_table, train_table


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)


def train_command(
    run: Annotated[Optional[Path], typer.Argument(metavar="RUN", 
        help="Run folder (same as --out); with --resume, the run to continue.", show_default=False)] = None,
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
    settings: opt.Settings = [],  # noqa: B006 (typer reads the default, never mutates it)
    resume: opt.Resume = False,
    force: opt.Force = False,
    dry_run: opt.DryRun = False,
    quiet: opt.Quiet = False,
) -> None:
    """Train DreamBooth into a run folder (no push). `hubtools train RUN --resume` continues a run."""
    from hubtools import runner
    from hubtools.pipelines import quiet_weight_loading

    run_dir = run or out
    quiet_weight_loading()
    with console.ConsoleReporter(progress=not quiet) as reporter:
        if resume:
            if run_dir is None:
                raise typer.BadParameter("--resume needs the run folder: hubtools train RUN --resume")
            outcome = runner.resume_training(run_dir, force=force, reporter=reporter)
        else:
            config = opt.build_config(config_file, settings, {
                "model.base_model": base_model, "model.vae": vae, "concept.source": concept, "concept.identifier": identifier,
                "concept.class_noun": class_noun, "concept.image_column": image_column,
                "concept.strict": strict or None, "training.method": method, "training.steps": steps,
                "training.learning_rate": learning_rate, "training.resolution": resolution,
                "training.device": device, "training.memory": memory, "training.mixed_precision": mixed_precision,
                "training.train_text_encoder": train_text_encoder, "training.checkpoint_every": checkpoint_every,
                "prior.enabled": prior, "prior.num_class_images": num_class_images,
                "eval.during_training": fidelity_curve,
            })
            run_dir = run_dir or opt.default_run_dir(config)
            if dry_run:
                console.show(plan_table(runner.plan(config, run_dir, push=False, reporter=reporter)))
                return
            outcome = runner.train(config, run_dir, reporter=reporter)
    console.show(train_table(outcome.train))
    console.result(str(outcome.run_dir), data={"run_dir": str(outcome.run_dir)})
