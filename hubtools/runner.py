"""``train-and-push``: the stages called in order, and nothing else.

    start_run (config + concept set + identifier check) -> train -> sample -> [eval] -> card -> push

Each stage is a plain function of the run folder (``hubtools.runfolder``), so ``hubtools train``,
``sample``, ``card`` and ``push`` can each be run, and re-run, on their own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hubtools.config import RunConfig, load_run_config, parse_hub_ref, save_config
from hubtools.errors import ConfigError, HubError, first_line
from hubtools.runfolder import RunFolder, TrainResult, write_identifier_report

Report = Callable[[str], None]
logger = logging.getLogger("hubtools")


def _quiet(_: str) -> None:
    pass


@dataclass
class RunPlan:
    """What a run will do, computed without loading any model (``--dry-run`` prints this)."""

    config: RunConfig
    run_dir: Path
    instance_prompt: str
    class_prompt: str | None
    identifier_report: dict[str, Any] | None
    stages: list[str]
    notes: list[str] = field(default_factory=list)


@dataclass
class TrainAndPushResult:
    run_dir: Path
    train: Any  # hubtools.training.TrainResult
    samples: Any  # hubtools.sample.SampleResult
    push: Any  # hubtools.publish.PushResult
    evaluation: Any | None = None


# -- planning ---------------------------------------------------------------------------------------


def check_identifier_for(config: RunConfig) -> dict[str, Any] | None:
    """The identifier report as a dict; under ``concept.strict`` a doubtful identifier is an error."""
    from hubtools.identifier import check_identifier

    identifier = config.concept.identifier
    if not identifier:
        return None
    report = check_identifier(identifier, class_noun=config.concept.class_noun)
    if config.concept.strict and report.warnings:
        raise ConfigError(
            f"identifier {identifier!r} is a doubtful choice: {report.warnings[0]} "
            "(see `hubtools identifier check`; drop --strict to train anyway)"
        )
    return report.to_dict()


def plan_run(config: RunConfig, run_dir: Path, *, push: bool = True) -> RunPlan:
    """Validate everything that can be validated before the first model is loaded."""
    config.require_subject()
    concept_source(config.concept.source or "")
    if push and not config.publish.repo_id:
        raise ConfigError("missing --repo: name the Hub repo to push to, as namespace/name (or use `hubtools train`)")
    resolved = config.resolve()
    notes: list[str] = []
    from hubtools.basemodels import resolve_base_model

    moved_to, note = resolve_base_model(resolved.model.base_model)
    if note:
        notes.append(note)
        resolved.model.base_model = moved_to
    if resolved.publish.hackathon_theme:
        from hubtools.hackathon import get_theme

        get_theme(resolved.publish.hackathon_theme)  # an unknown theme fails here, not after training
    report = check_identifier_for(resolved)
    if report and report.get("warnings"):
        notes.extend(f"identifier: {warning}" for warning in report["warnings"])
    stages = ["prepare concept set", "train"]
    if resolved.prior.enabled:
        stages.insert(1, f"class images ({resolved.prior.num_class_images}, cached)")
    stages.append("sample grids")
    if resolved.eval.enabled:
        stages.append("evaluate")
    stages.append("model card")
    if push:
        stages.append(f"push to {resolved.publish.repo_id}")
    return RunPlan(
        config=resolved,
        run_dir=Path(run_dir),
        instance_prompt=resolved.instance_prompt,
        class_prompt=resolved.class_prompt if resolved.prior.enabled else None,
        identifier_report=report,
        stages=stages,
        notes=notes,
    )


# -- stages -------------------------------------------------------------------------------------------


def concept_source(source: str) -> Path | str:
    """A local folder (as a Path) or a Hub dataset reference (as a str); anything else is a user error."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ConfigError(f"--concept {source} is a file: give the folder that holds the photos")
    if parse_hub_ref(source) is not None:
        return source
    raise ConfigError(f"concept folder not found: {source} (give a folder of photos, or a Hub dataset as namespace/name)")


def caption_note(captions: list[str], identifier: str) -> str | None:
    """Captions that came with the set win over the instance prompt; say so when they lack the identifier."""
    foreign = [caption for caption in captions if caption and identifier not in caption]
    if not foreign:
        return None
    return (f"{len(foreign)} of {len(captions)} captions from the concept set do not contain {identifier!r} "
            f"(e.g. {foreign[0]!r}): the subject will be learned under their words")


def start_run(plan: RunPlan, *, token: str | None = None, progress: bool = True):
    """Create the run folder: resolved config, prepared concept set, identifier report."""
    from hubtools.concepts import prepare_concept
    from hubtools.pipelines import resolve_base_revision

    folder = RunFolder(plan.run_dir)
    if folder.config.exists():
        raise ConfigError(
            f"{plan.run_dir} already holds a run: continue it with --resume (a finished run goes on to the "
            "stages after training), or choose another --out"
        )
    source = concept_source(plan.config.concept.source or "")
    resolve_base_revision(plan.config.model, token=token)  # a wrong base model fails now, not after the photos
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    concept = prepare_concept(
        source,
        folder.concept,
        resolution=plan.config.training.resolution,
        caption=plan.instance_prompt,
        min_images=plan.config.concept.min_images,
        strict=plan.config.concept.strict,
        allow_upscale=plan.config.concept.allow_upscale,
        image_column=plan.config.concept.image_column,
        token=token,
        progress=progress,
    )
    if plan.identifier_report is not None:
        write_identifier_report(folder, plan.identifier_report)
    note = caption_note(concept.captions, plan.config.concept.identifier or "")
    if note:
        plan.notes.append(note)
    # Written last: a folder with a config is a run that can be trained and resumed.
    save_config(plan.config, folder.config)
    return concept


def check_push_access(repo_id: str, token: str | None) -> str:
    """Fail before training, not after, when the push could not succeed. Returns the user name."""
    from huggingface_hub import HfApi, get_token

    from hubtools.hubenv import current_endpoint

    token = token or get_token()
    if not token:
        raise HubError(
            f"no Hugging Face token for {current_endpoint()}: run `hf auth login` or set HF_TOKEN "
            "(a token with write access), then run again"
        )
    try:
        user = HfApi(token=token).whoami()
    except OSError as error:
        message = first_line(str(error).replace(token, "***"))
        raise HubError(f"the Hub at {current_endpoint()} refused the token: {message} (check HF_TOKEN or `hf auth login`)") from None
    namespaces = {user.get("name")} | {org.get("name") for org in user.get("orgs", []) or []}
    namespace = repo_id.split("/")[0]
    if namespace not in namespaces:
        raise HubError(
            f"your token belongs to {user.get('name')!r}, which cannot push to {repo_id}: "
            f"use --repo {user.get('name')}/{repo_id.split('/')[1]}"
        )
    return str(user.get("name"))


def completed_training(run_dir: Path):
    """The ``TrainResult`` of a run whose training already finished (all steps, weights on disk), else None."""
    folder = RunFolder(Path(run_dir))
    done = TrainResult.read(folder)
    if done is None or not folder.config.is_file():
        return None
    if done.steps_done < load_run_config(run_dir).training.steps:
        return None  # more steps were asked for since: a resume trains them
    if not all((folder.root / entry.path).is_file() for entry in done.weight_files):
        return None
    return done


def train_run(run_dir: Path, *, resume: bool = False, force: bool = False, token: str | None = None,
              progress: bool = True):
    """Train the run in ``run_dir``; with ``resume``, continue it (a finished run is returned as it is)."""
    from hubtools.pipelines import check_device_for_model
    from hubtools.training import train_dreambooth

    if resume and (finished := completed_training(run_dir)) is not None:
        return finished
    config = load_run_config(run_dir)
    check_device_for_model(config.model, config.training.device, token=token)
    return train_dreambooth(config, Path(run_dir), resume=resume, force=force, token=token, progress=progress)


def evaluate_if_enabled(run_dir: Path, config: RunConfig, *, token: str | None = None, progress: bool = True):
    if not config.eval.enabled:
        return None
    from hubtools.evaluation import evaluate_run

    return evaluate_run(Path(run_dir), config.eval, progress=progress, token=token)


def train_and_push(config: RunConfig, run_dir: Path, *, token: str | None = None, resume: bool = False,
                   force: bool = False, progress: bool = True, report: Report = _quiet) -> TrainAndPushResult:
    """The product's main job: photos in, a model with grids and a card on the Hub out."""
    from hubtools.card import render_model_card
    from hubtools.publish import push_run
    from hubtools.sample import render_samples

    run_dir = Path(run_dir)
    if resume:
        config = load_run_config(run_dir)
        repo_id = config.publish.repo_id
        if not repo_id:
            raise ConfigError(f"the run in {run_dir} has no publish.repo_id: push it with `hubtools push {run_dir} NS/NAME`")
    else:
        plan = plan_run(config, run_dir)
        repo_id = plan.config.publish.repo_id
        for note in plan.notes:
            report(f"note: {note}")
    assert repo_id is not None
    user = check_push_access(repo_id, token)
    report(f"pushing as {user} to {repo_id} when training is done")
    if not resume:
        report("preparing the concept set")
        concept = start_run(plan, token=token, progress=progress)
        report(f"{len(concept.images)} concept images ready in {RunFolder(run_dir).concept}")
        note = caption_note(concept.captions, plan.config.concept.identifier or "")
        if note:
            report(f"note: {note}")
        config = plan.config
    trained = completed_training(run_dir) if resume else None
    if trained is not None:
        report(f"training finished before (step {trained.steps_done}): going on to the grids and the push")
    else:
        report("training")
        trained = train_run(run_dir, resume=resume, force=force, token=token, progress=progress)
    report("rendering sample grids")
    samples = render_samples(run_dir, progress=progress)
    evaluation = evaluate_if_enabled(run_dir, config, token=token, progress=progress)
    report("writing the model card")
    render_model_card(run_dir, repo_id=repo_id)
    report(f"pushing to {repo_id}")
    pushed = push_run(run_dir, repo_id, private=config.publish.private, token=token,
                      checkpoints=config.publish.push_checkpoints, commit_message=config.publish.commit_message)
    return TrainAndPushResult(run_dir=run_dir, train=trained, samples=samples, push=pushed, evaluation=evaluation)
