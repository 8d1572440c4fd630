"""The run commands: ``train-and-push``, ``train``, ``sample``, ``card``, ``push`` and ``demo``.

``train-and-push`` and ``train`` share one table of options (``_run_options``); each command's signature
is that table less the options it has no use for, so a flag means the same thing everywhere.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

import typer
from rich.table import Table

from hubtools.cli.app import app, console, err_console
from hubtools.config import RunConfig, apply_overrides, describe_precision, load_config

# CLI option name -> dotted RunConfig key. Options missing here steer the command, not the run.
DEMO_PAGES_PORT = 8080  # where the demo's closing lines suggest serving its hub again

OVERRIDES = {
    "base_model": "model.base_model",
    "revision": "model.revision",
    "concept": "concept.source",
    "identifier": "concept.identifier",
    "class_noun": "concept.class_noun",
    "instance_prompt": "concept.instance_prompt",
    "image_column": "concept.image_column",
    "strict": "concept.strict",
    "method": "training.method",
    "steps": "training.steps",
    "learning_rate": "training.learning_rate",
    "resolution": "training.resolution",
    "batch_size": "training.batch_size",
    "seed": "training.seed",
    "lora_rank": "training.lora_rank",
    "train_text_encoder": "training.train_text_encoder",
    "mixed_precision": "training.mixed_precision",
    "memory": "training.memory",
    "gradient_checkpointing": "training.gradient_checkpointing",
    "use_8bit_adam": "training.use_8bit_adam",
    "device": "training.device",
    "checkpoint_every": "training.checkpoint_every",
    "keep_checkpoints": "training.keep_checkpoints",
    "validation_every": "training.validation_every",
    "prior": "prior.enabled",
    "class_prompt": "prior.class_prompt",
    "num_class_images": "prior.num_class_images",
    "prior_loss_weight": "prior.loss_weight",
    "class_images": "prior.source",
    "repo": "publish.repo_id",
    "private": "publish.private",
    "hackathon": "publish.hackathon_theme",
    "push_checkpoints": "publish.push_checkpoints",
    "evaluate": "eval.enabled",
    "fidelity_curve": "eval.during_training",
}


def _run_options(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML config; flags override it."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default: runs/<repo or identifier>)."),
    base_model: Optional[str] = typer.Option(None, help="Base model: Hub id or local diffusers folder."),
    revision: Optional[str] = typer.Option(None, help="Base model branch, tag or commit."),
    concept: Optional[str] = typer.Option(None, help="Photos of the subject: a folder or a Hub dataset ns/name or ns/name@rev."),
    identifier: Optional[str] = typer.Option(None, help="Rare token naming the subject (see `hubtools identifier suggest`)."),
    class_noun: Optional[str] = typer.Option(None, help="What the subject is: dog, ball, jellyfish..."),
    instance_prompt: Optional[str] = typer.Option(None, help="Training prompt template ({identifier}, {class_noun})."),
    image_column: Optional[str] = typer.Option(None, help="Image column of a Hub dataset (detected when unset)."),
    strict: Optional[bool] = typer.Option(None, "--strict", help="Fail on a rejected image or a doubtful identifier."),
    method: Optional[str] = typer.Option(None, help="full (fine-tune the UNet) or lora."),
    steps: Optional[int] = typer.Option(None, help="Training steps (default 800)."),
    learning_rate: Optional[float] = typer.Option(None, "--learning-rate", "--lr", help="Default 2e-6 full, 1e-4 LoRA."),
    resolution: Optional[int] = typer.Option(None, help="Training resolution in pixels (default 512)."),
    batch_size: Optional[int] = typer.Option(None, help="Instance images per step (default 1)."),
    seed: Optional[int] = typer.Option(None, help="Seed of everything random in the run."),
    lora_rank: Optional[int] = typer.Option(None, help="LoRA rank (default 4)."),
    train_text_encoder: Optional[bool] = typer.Option(None, "--train-text-encoder/--freeze-text-encoder"),
    mixed_precision: Optional[str] = typer.Option(None, help="auto, no, fp16 or bf16."),
    memory: Optional[str] = typer.Option(None, help="auto picks a memory profile from the free GPU memory."),
    gradient_checkpointing: Optional[bool] = typer.Option(None, "--gradient-checkpointing/--no-gradient-checkpointing"),
    use_8bit_adam: Optional[bool] = typer.Option(None, "--8bit-adam/--no-8bit-adam", help="Needs the [bnb] extra."),
    device: Optional[str] = typer.Option(None, help="auto, cpu or cuda."),
    checkpoint_every: Optional[int] = typer.Option(None, help="Save a resumable checkpoint every N steps."),
    keep_checkpoints: Optional[int] = typer.Option(None, help="How many checkpoints to keep (default 2)."),
    validation_every: Optional[int] = typer.Option(None, help="Render a validation grid every N steps."),
    prior: Optional[bool] = typer.Option(None, "--prior/--no-prior", help="Prior preservation (default on)."),
    class_prompt: Optional[str] = typer.Option(None, help="Class prompt template (default 'a photo of a {class_noun}')."),
    num_class_images: Optional[int] = typer.Option(None, help="Class images for prior preservation (default 100)."),
    prior_loss_weight: Optional[float] = typer.Option(None, help="Weight of the prior loss (default 1.0)."),
    class_images: Optional[str] = typer.Option(None, help="Use these class images (folder or Hub dataset) instead of generating."),
    repo: Optional[str] = typer.Option(None, help="Hub repo to push to: namespace/name."),
    private: Optional[bool] = typer.Option(None, "--private/--public", help="Visibility of a new repo."),
    hackathon: Optional[str] = typer.Option(None, help="Enter the DreamBooth hackathon under this theme."),
    push_checkpoints: Optional[bool] = typer.Option(None, "--push-checkpoints", help="Push each checkpoint to a step-N branch."),
    evaluate: Optional[bool] = typer.Option(None, "--eval/--no-eval", help="Evaluate (DINO, CLIP-I, CLIP-T) before pushing."),
    fidelity_curve: Optional[bool] = typer.Option(
        None, "--fidelity-curve/--no-fidelity-curve",
        help="Score each validation grid with DINO against the photos: a fidelity curve beside the loss.",
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in the run folder from its last checkpoint."),
    force: bool = typer.Option(False, "--force", help="With --resume: continue even though the config changed."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and print the plan; load and train nothing."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """The options shared by train-and-push and train (this function only holds their declarations)."""


def _command(name: str, exclude: set[str], extra: list[inspect.Parameter] | None = None):
    """Register ``impl`` under ``name`` with the shared options less ``exclude`` (plus ``extra`` first)."""

    def decorate(impl: Callable[..., None]) -> Callable[..., None]:
        shared = [p for p in inspect.signature(_run_options, eval_str=True).parameters.values() if p.name not in exclude]

        def command(**kwargs: Any) -> None:
            from hubtools.models import quiet_weight_loading

            quiet_weight_loading()
            impl(**kwargs)

        command.__signature__ = inspect.Signature((extra or []) + shared)  # type: ignore[attr-defined]
        command.__doc__ = impl.__doc__
        command.__name__ = impl.__name__
        app.command(name)(command)
        return impl

    return decorate


def build_config(options: dict[str, Any]) -> RunConfig:
    base = load_config(options["config"]) if options.get("config") else RunConfig()
    overrides = {key: options.get(name) for name, key in OVERRIDES.items()}
    return apply_overrides(base, overrides, flags=_flag_names())


def _flag_names() -> dict[str, str]:
    """``"training.steps" -> "--steps"``: the flag a user typed for each setting, for error messages."""
    parameters = inspect.signature(_run_options, eval_str=True).parameters
    names = {}
    for name, key in OVERRIDES.items():
        declared = [d.split("/")[0] for d in getattr(parameters[name].default, "param_decls", ()) if d.startswith("--")]
        names[key] = declared[0] if declared else "--" + name.replace("_", "-")
    return names


def default_run_dir(config: RunConfig) -> Path:
    name = (config.publish.repo_id or "").split("/")[-1] or f"{config.concept.identifier}-{config.concept.class_noun}"
    return Path("runs") / "".join(c if c.isalnum() or c in "-_." else "-" for c in name)


def print_plan(plan) -> None:
    table = Table(title="hubtools: the plan", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    cfg = plan.config
    table.add_row("run folder", str(plan.run_dir))
    table.add_row("base model", f"{cfg.model.base_model}" + (f" @ {cfg.model.revision}" if cfg.model.revision else ""))
    table.add_row("concept set", str(cfg.concept.source))
    table.add_row("instance prompt", plan.instance_prompt)
    if plan.class_prompt:
        table.add_row("prior preservation", f"{cfg.prior.num_class_images} x '{plan.class_prompt}', weight {cfg.prior.loss_weight}")
    table.add_row("training", f"{cfg.training.method}, {cfg.training.steps} steps, lr {cfg.training.learning_rate:g}, "
                  f"{cfg.training.resolution} px, batch {cfg.training.batch_size}, seed {cfg.training.seed}")
    table.add_row("sampling", f"{len(cfg.sampling.prompts)} prompts x {len(cfg.sampling.seeds)} seeds, "
                  f"guidance {', '.join(f'{g:g}' for g in cfg.sampling.guidance_scales)}")
    if cfg.publish.repo_id:
        visibility = "private" if cfg.publish.private else "public"
        theme = f", hackathon theme {cfg.publish.hackathon_theme}" if cfg.publish.hackathon_theme else ""
        table.add_row("push to", f"{cfg.publish.repo_id} ({visibility}{theme})")
    report = plan.identifier_report
    if report:
        table.add_row("identifier", f"{report['text']!r}: {report['num_tokens']} token(s) {report['tokens']}")
    table.add_row("stages", " -> ".join(plan.stages))
    console.print(table)
    for note in plan.notes:
        err_console.print(f"[yellow]note:[/] {note}", highlight=False)


def _stage(message: str) -> None:
    err_console.print(f"[bold cyan]==>[/] {message}", highlight=False)


def print_train_summary(result: Any) -> None:
    data = result.to_dict() if hasattr(result, "to_dict") else dict(result)
    table = Table(title="training", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("steps", f"{data.get('steps_done')} / {data.get('steps_total')}")
    if data.get("final_loss") is not None:
        table.add_row("final loss", f"{data['final_loss']:.4f}")
    if data.get("wall_seconds") is not None:
        table.add_row("time", f"{data['wall_seconds']:.1f} s ({data.get('steps_per_second') or 0:.2f} steps/s)")
    if data.get("peak_memory_bytes"):
        table.add_row("peak GPU memory", f"{data['peak_memory_bytes'] / 2**30:.2f} GiB")
    table.add_row("device", f"{data.get('device')}, {describe_precision(data.get('mixed_precision'))}")
    for weight in data.get("weight_files") or []:
        table.add_row("weights", f"{weight['path']} (sha256 {weight['sha256'][:12]}…)")
    console.print(table)


_CONFIG_ARGUMENT = inspect.Parameter(
    "config_file", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Optional[Path],
    default=typer.Argument(None, help="TOML config (same as --config), e.g. hackathon/pokeball-machine.toml."),
)


@_command("train-and-push", exclude=set(), extra=[_CONFIG_ARGUMENT])
def train_and_push_command(**options: Any) -> None:
    """Prepare the photos, train DreamBooth, render grids and a card, and push it all in one commit."""
    from hubtools.runner import plan_run, train_and_push

    config_file = options.pop("config_file")
    if config_file and options["config"] and config_file != options["config"]:
        raise typer.BadParameter("give the config file once: as the argument or as --config")
    options["config"] = options["config"] or config_file
    config = build_config(options)
    run_dir = options["out"] or default_run_dir(config)
    if options["dry_run"]:
        print_plan(plan_run(config, run_dir))
        return
    result = train_and_push(config, run_dir, resume=options["resume"], force=options["force"],
                            progress=not options["quiet"], report=_stage)
    print_train_summary(result.train)
    console.print(f"run folder   {result.run_dir}", highlight=False)
    for grid in getattr(result.samples, "grids", []) or []:
        console.print(f"grid         {grid}", highlight=False)
    console.print(f"card         {result.run_dir / 'README.md'}", highlight=False)
    if not getattr(result.push, "changed", True):
        console.print("push         nothing changed since the last push", highlight=False)
    console.print(result.push.url, highlight=False)


_RUN_ARGUMENT = inspect.Parameter(
    "run", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Optional[Path],
    default=typer.Argument(None, help="Run folder (same as --out); with --resume, the run to continue."),
)


@_command("train", exclude={"repo", "private", "hackathon", "push_checkpoints", "evaluate"}, extra=[_RUN_ARGUMENT])
def train_command(**options: Any) -> None:
    """Train DreamBooth into a run folder (no push). `hubtools train RUN --resume` continues a run."""
    from hubtools.runner import completed_training, plan_run, start_run, train_run

    run_dir = options.pop("run") or options["out"]
    if options["resume"]:
        if run_dir is None:
            raise typer.BadParameter("--resume needs the run folder: hubtools train RUN --resume")
        result = completed_training(run_dir)
        if result is not None:
            err_console.print("training had already finished: nothing to resume", highlight=False)
        else:
            result = train_run(run_dir, resume=True, force=options["force"], progress=not options["quiet"])
        print_train_summary(result)
        console.print(str(run_dir), highlight=False)
        return
    config = build_config(options)
    run_dir = run_dir or default_run_dir(config)
    plan = plan_run(config, run_dir, push=False)
    if options["dry_run"]:
        print_plan(plan)
        return
    for note in plan.notes:
        err_console.print(f"[yellow]note:[/] {note}", highlight=False)
    _stage("preparing the concept set")
    start_run(plan, progress=not options["quiet"])
    _stage("training")
    result = train_run(run_dir, progress=not options["quiet"])
    print_train_summary(result)
    console.print(str(run_dir), highlight=False)


@app.command("sample")
def sample_command(
    run: Path = typer.Argument(..., help="Run folder."),
    device: Optional[str] = typer.Option(None, help="auto, cpu or cuda."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Render the sample grids of a trained run (prompts x seeds, guidance sweep, checkpoints)."""
    from hubtools.models import quiet_weight_loading, resolve_device
    from hubtools.sample import render_samples

    quiet_weight_loading()
    result = render_samples(run, device=resolve_device(device or "auto"), progress=not quiet)
    for grid in getattr(result, "grids", []) or []:
        console.print(str(grid), highlight=False)


@app.command("card")
def card_command(
    run: Path = typer.Argument(..., help="Run folder."),
    template: Optional[Path] = typer.Option(None, help="Your own Jinja template instead of templates/model_card.md.j2."),
    repo: Optional[str] = typer.Option(None, help="Repo id the card will live in (for its usage snippet)."),
) -> None:
    """Render the run's model card (README.md) from the Jinja template."""
    from hubtools.card import render_model_card

    render_model_card(run, template=template, repo_id=repo)
    console.print(str(Path(run) / "README.md"), highlight=False)
    if template is not None:
        err_console.print("the run keeps this template: later renders (push to another repo) use it too",
                          highlight=False)


@app.command("push")
def push_command(
    run: Path = typer.Argument(..., help="Run folder."),
    repo: Optional[str] = typer.Argument(None, help="namespace/name (default: the run's publish.repo_id)."),
    private: bool = typer.Option(False, "--private", help="Create the repo private."),
    checkpoints: Optional[bool] = typer.Option(
        None, "--checkpoints/--no-checkpoints",
        help="Also push each checkpoint to a step-N branch (default: the run's publish.push_checkpoints).",
    ),
    message: Optional[str] = typer.Option(None, "--message", "-m", help="Commit message."),
) -> None:
    """Push a run (model, card, grids, config) to the Hub in one commit. Safe to retry."""
    from hubtools.card import render_model_card
    from hubtools.config import load_run_config
    from hubtools.publish import push_run

    config = load_run_config(run)
    repo_id = repo or config.publish.repo_id
    if not repo_id:
        raise typer.BadParameter("name the repo: hubtools push RUN namespace/name")
    if not (Path(run) / "README.md").is_file() or repo_id != config.publish.repo_id:
        render_model_card(run, repo_id=repo_id)  # with the template `hubtools card --template` kept, if any
    if checkpoints is None:
        checkpoints = config.publish.push_checkpoints
    result = push_run(run, repo_id, private=private or config.publish.private, checkpoints=checkpoints,
                      commit_message=message or config.publish.commit_message)
    if not result.changed:
        err_console.print("nothing changed since the last push: no new commit", highlight=False)
    console.print(result.url, highlight=False)


@app.command("demo")
def demo_command(
    out: Path = typer.Option(Path("hubtools-demo"), "--out", "-o", help="Where the demo's run and hub data go."),
    steps: int = typer.Option(60, help="Training steps of the tiny model."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Everything end to end, offline, on a CPU: local hub, tiny model, train, grids, card, push, reload."""
    from hubtools.demo import run_demo
    from hubtools.models import quiet_weight_loading

    quiet_weight_loading()
    result = run_demo(out, steps=steps, progress=not quiet, report=_stage)
    print_train_summary(result.train)
    console.print(f"run folder      {result.run_dir}", highlight=False)
    for grid in result.grids:
        console.print(f"grid            {grid}", highlight=False)
    console.print(f"card            {result.run_dir / 'README.md'}", highlight=False)
    console.print(f"reloaded image  {result.reloaded_image}", highlight=False)
    console.print(f"hub data        {result.hub_data}", highlight=False)
    # The demo's hub stops with the demo: the last line is the model's page once the hub is served again.
    page = f"http://127.0.0.1:{DEMO_PAGES_PORT}/{urlsplit(result.repo_url).path.lstrip('/')}"
    console.print(f"browse it again hubtools hub serve --data {result.hub_data} --port {DEMO_PAGES_PORT}", highlight=False)
    console.print(page, highlight=False)
