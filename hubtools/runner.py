"""The orchestrator: one function per command, calling the stages in order, and nothing else.

    train-and-push:  preflight -> set_up_folder -> train_folder -> render_samples -> [evaluate] -> card -> push
    train:           preflight -> set_up_folder -> train_folder      (resume_training continues a run)

Under several processes (``torchrun``, ``accelerate launch``) every process runs the command; what happens
once runs on the main process through ``hubtools.distributed.on_main`` while the others wait.
    sample, evaluate, card, push: one stage on an existing run folder

The command line parses its flags, calls one of these functions and prints the typed result it gets
back. Everything else a user should read on the way (stages, notes, warnings, progress, metrics, artifacts)
goes through the one ``Reporter`` (``hubtools.reporting``) passed in, whatever the command, and on to each
stage; whether bars show is the reporter's business, not a flag passed beside it. Each stage is a plain
function of the run folder (``hubtools.runfolder``), so each command can be run, and re-run, on its own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubtools.config import RunConfig, load_run_config, parse_hub_ref, save_config
from hubtools.errors import ConfigError, HubError, HubtoolsError
from hubtools.reporting import Reporter, SilentReporter
from hubtools.runfolder import IdentifierRecord, RunFolder, TrainResult
from hubtools.runfolder.base_model import BaseModelRecord

logger = logging.getLogger("hubtools")


@dataclass
class Preflight:
    """What a new run will do, computed without loading any model (``--dry-run`` prints this)."""

    config: RunConfig  # resolved: every default that depends on another setting is filled in
    run_dir: Path
    instance_prompt: str
    class_prompt: str | None
    identifier_report: IdentifierRecord | None
    stages: list[str]
    notes: list[str] = field(default_factory=list)
    # The base model resolved (family, commit, size); None when the Hub could not be reached now: setting up
    # the run folder resolves it then, or fails saying why.
    base_model: BaseModelRecord | None = None
    # The estimated time (``hubtools.estimate``), made by ``plan`` (--dry-run, the studio); None elsewhere.
    estimate: Any | None = None


@dataclass
class TrainAndPushResult:
    run_dir: Path
    train: Any  # hubtools.training.TrainResult
    samples: Any  # hubtools.sample.SampleResult
    push: Any  # hubtools.publish.PushResult
    evaluation: Any | None = None


@dataclass
class TrainOutcome:
    run_dir: Path
    train: Any  # hubtools.training.TrainResult
    already_finished: bool = False  # resume_training on a run whose training had finished


# -- before anything is loaded ------------------------------------------------------------------------


def check_identifier_for(config: RunConfig, base_model: BaseModelRecord | None = None) -> IdentifierRecord | None:
    """The identifier report as the run folder keeps it (cached per identifier, class noun and tokenizer files:
    ``identifier_cache``); under ``concept.strict`` a doubtful identifier is an error."""
    from hubtools.families.tokenizers import further_tokenizers, tokenizer_fingerprint
    from hubtools.identifier import check_identifier
    from hubtools.identifier_cache import cached_report

    identifier = config.concept.identifier
    if not identifier:
        return None

    def compute() -> dict:
        return check_identifier(identifier, class_noun=config.concept.class_noun, other_tokenizers=further_tokenizers(
            config.model.base_model, config.model.revision)[0]).to_dict()

    fingerprint = tokenizer_fingerprint(config.model.base_model, base_model)
    report = IdentifierRecord.from_dict(compute() if fingerprint is None else cached_report(
        {"identifier": identifier.strip(), "class_noun": config.concept.class_noun, "tokenizers": fingerprint},
        compute))
    if config.concept.strict and report.warnings:
        raise ConfigError(
            f"identifier {identifier!r} is a doubtful choice: {report.warnings[0]} "
            "(see `hubtools identifier check`; drop --strict to train anyway)"
        )
    return report


def _resolve_base(config: RunConfig, token: str | None = None) -> BaseModelRecord | None:
    """The base model resolved once (``hubtools.base_model``: two small JSON files, no weights). A pipeline class
    no family handles fails here; a base model that cannot be read now gives None, left to ``set_up_folder``,
    which resolves it again before anything is written and says what is wrong."""
    from hubtools.base_model import resolve_base_model_record
    from hubtools.families import UnsupportedModelError

    try:
        return resolve_base_model_record(config.model, token=token)
    except UnsupportedModelError:
        raise
    except (HubtoolsError, OSError):
        return None


def _with_family_defaults(config: RunConfig, record: BaseModelRecord | None) -> RunConfig:
    """``config`` with the base model's family's defaults for the settings the user left unset."""
    if record is None:
        return config
    from hubtools.base_model import family_of
    from hubtools.families import apply_family_defaults

    return apply_family_defaults(config, family_of(record), record.denoiser_config)


def preflight(config: RunConfig, run_dir: Path, *, push: bool = True) -> Preflight:
    """Validate everything that can be validated before the first model is loaded."""
    config.require_subject()
    concept_source(config.concept.source or "")
    if push and not config.publish.repo_id:
        raise ConfigError("missing --repo: name the Hub repo to push to, as namespace/name (or use `hubtools train`)")
    if config.model.vae:
        from hubtools.pipelines import vae_source

        vae_source(config.model.vae)  # a path that is not there fails now, not after the concept set is prepared
    base_model = _resolve_base(config)
    resolved = _with_family_defaults(config, base_model).resolve()
    if base_model is not None:
        from hubtools.base_model import family_of

        family_of(base_model).check_method(resolved.training.method)  # a LoRA-only family refuses full here
    notes: list[str] = []
    from hubtools.basemodels import resolve_base_model

    moved_to, note = resolve_base_model(resolved.model.base_model)
    if note:
        notes.append(note)
        resolved.model.base_model = moved_to
    if resolved.publish.hackathon_theme:
        from hubtools.hackathon import get_theme

        get_theme(resolved.publish.hackathon_theme)  # an unknown theme fails here, not after training
    report = check_identifier_for(resolved, base_model)
    if report is not None:
        notes.extend(f"identifier: {warning}" for warning in report.warnings)
    stages = ["prepare concept set", "train"]
    if resolved.prior.enabled:
        stages.insert(1, f"class images ({resolved.prior.num_class_images}, cached)")
    stages.append("sample grids")
    if resolved.eval.enabled:
        stages.append("evaluate")
    stages.append("model card")
    if push:
        stages.append(f"push to {resolved.publish.repo_id}")
    return Preflight(
        config=resolved,
        run_dir=Path(run_dir),
        instance_prompt=resolved.instance_prompt,
        class_prompt=resolved.class_prompt if resolved.prior.enabled else None,
        identifier_report=report,
        stages=stages,
        notes=notes,
        base_model=base_model,
    )


def plan(config: RunConfig, run_dir: Path, *, push: bool = True, reporter: Reporter | None = None) -> Preflight:
    """``--dry-run``: the preflight, its notes reported, the estimated time; nothing is loaded or written."""
    checked = preflight(config, run_dir, push=push)
    _report_notes(checked.notes, reporter or SilentReporter())
    checked.estimate = estimate_time(checked)
    return checked


def estimate_time(checked: Preflight):
    """The run's estimated time (``hubtools.estimate.TimeEstimate``) from the base model's size and the device."""
    from hubtools.base_model import family_of
    from hubtools.estimate import device_throughput, estimate_run_time

    record = checked.base_model
    family = family_of(record) if record is not None else None
    return estimate_run_time(checked.config, family, record.parameter_count if record else None,
                             device_throughput(checked.config.training.device))


def _report_notes(notes: list[str], reporter: Reporter) -> None:
    for note in notes:
        reporter.note(note)


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


def check_push_access(repo_id: str, token: str | None) -> str:
    """Fail before training, not after, when the push could not succeed. Returns the user name."""
    from huggingface_hub import HfApi, get_token

    from hubtools.hub_errors import hub_errors
    from hubtools.hubenv import current_endpoint

    token = token or get_token()
    if not token:
        raise HubError(
            f"no Hugging Face token for {current_endpoint()}: run `hf auth login` or set HF_TOKEN "
            "(a token with write access), then run again"
        )
    with hub_errors("the token", action="check", token=token, missing=None):
        user = HfApi(token=token).whoami()
    namespaces = {user.get("name")} | {org.get("name") for org in user.get("orgs", []) or []}
    namespace = repo_id.split("/")[0]
    if namespace not in namespaces:
        raise HubError(
            f"your token belongs to {user.get('name')!r}, which cannot push to {repo_id}: "
            f"use --repo {user.get('name')}/{repo_id.split('/')[1]}"
        )
    return str(user.get("name"))


# -- stages on the run folder ---------------------------------------------------------------------------


def caption_note(captions: list[str], identifier: str) -> str | None:
    """Captions that came with the set win over the instance prompt; say so when they lack the identifier."""
    foreign = [caption for caption in captions if caption and identifier not in caption]
    if not foreign:
        return None
    return (f"{len(foreign)} of {len(captions)} captions from the concept set do not contain {identifier!r} "
            f"(e.g. {foreign[0]!r}): the subject will be learned under their words")


def set_up_folder(checked: Preflight, *, token: str | None = None, reporter: Reporter | None = None):
    """Create the run folder: prepared concept set, identifier report, then the resolved config."""
    from hubtools.concepts import prepare_concept
    from hubtools.base_model import family_of, resolve_base_model_record
    from hubtools.concepts.captions import CaptionRules
    reporter = reporter or SilentReporter()
    folder = RunFolder(checked.run_dir)
    if folder.config.exists():
        raise ConfigError(
            f"{checked.run_dir} already holds a run: continue it with --resume (a finished run goes on to the "
            "stages after training), or choose another --out"
        )
    source = concept_source(checked.config.concept.source or "")
    # a wrong base model fails now, not after the photos
    base_model = checked.base_model or resolve_base_model_record(checked.config.model, token=token)
    checked.run_dir.mkdir(parents=True, exist_ok=True)
    reporter.stage("preparing the concept set")
    concept = prepare_concept(
        source,
        folder.concept,
        resolution=checked.config.training.main_resolution,
        caption=checked.instance_prompt,
        min_images=checked.config.concept.min_images,
        strict=checked.config.concept.strict,
        allow_upscale=checked.config.concept.allow_upscale,
        image_column=checked.config.concept.image_column,
        token=token,
        reporter=reporter,
        buckets=checked.config.concept.buckets,
        size_multiple=family_of(base_model).size_multiple,
        captions=CaptionRules(template=checked.config.concept.caption_template,
                              identifier=checked.config.concept.identifier,
                              class_noun=checked.config.concept.class_noun,
                              prepend_identifier=checked.config.concept.prepend_identifier),
    )
    reporter.artifact("contact_sheet", folder.relative(folder.contact_sheet))
    reporter.stage(f"{len(concept.images)} concept images ready in {folder.concept}"
                   + _bucket_summary(concept.bucket_counts()))
    base_model.write(folder)
    if checked.identifier_report is not None:
        checked.identifier_report.write(folder)
    note = caption_note(concept.captions, checked.config.concept.identifier or "")
    if note:
        reporter.note(note)
    # Written last: a folder with a config is a run that can be trained and resumed.
    save_config(checked.config, folder.config)
    return concept


def _bucket_summary(counts: dict[str, int]) -> str:
    if not counts:
        return ""
    return " (buckets: " + ", ".join(f"{label}: {count}" for label, count in counts.items()) + ")"


def finished_training(run_dir: Path):
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


def interrupted_message(run_dir: Path, resume_command: str) -> str:
    """What a user reads after Ctrl-C stopped a run: where it stands, and the command that goes on from there."""
    folder = RunFolder(Path(run_dir))
    if not folder.config.is_file():
        return "interrupted before the run folder was set up: run the same command again"
    if finished_training(run_dir) is not None:
        return f"interrupted after training (the weights are saved): `{resume_command}` goes on from there"
    checkpoints = folder.list_checkpoints()
    config = load_run_config(run_dir)
    if checkpoints:
        return (f"interrupted: `{resume_command}` continues from the checkpoint of step {checkpoints[-1][0]} "
                f"(of {config.training.steps})")
    every = config.training.checkpoint_every
    where = f"before the first checkpoint (every {every} steps)" if every else "with no checkpoints (--checkpoint-every 0)"
    return f"interrupted {where}: `{resume_command}` trains from the start, the concept set and class images kept"


def train_folder(run_dir: Path, *, resume: bool = False, force: bool = False, token: str | None = None,
                 reporter: Reporter | None = None):
    """Train the run set up in ``run_dir``; with ``resume``, continue it from its last checkpoint."""
    from hubtools.base_model import record_of_run
    from hubtools.pipelines import check_device_for_model
    from hubtools.training import train_dreambooth

    config = load_run_config(run_dir)
    check_device_for_model(record_of_run(run_dir, config.model, token=token), config.training.device)
    return train_dreambooth(config, Path(run_dir), resume=resume, force=force, token=token, reporter=reporter)


def card_is_due(run_dir: Path, repo_id: str) -> bool:
    """The one place that decides whether the card is (re-)rendered before a push.

    It is when there is none, when it was written for another repo (its usage snippet names the repo), or
    when a record it shows (training, samples, evaluation) is newer than it. A card the user edited after
    the last stage is pushed as it is. The template kept by ``hubtools card --template`` is used again.
    """
    folder = RunFolder(Path(run_dir))
    records = [folder.train_result, folder.samples_json, folder.eval_result]
    card_time = folder.card.stat().st_mtime if folder.card.is_file() else None
    stale = card_time is None or any(path.is_file() and path.stat().st_mtime > card_time for path in records)
    return stale or repo_id != load_run_config(run_dir).publish.repo_id


# -- one function per command -----------------------------------------------------------------------------


def _join_processes(config: RunConfig) -> None:
    """Under ``torchrun`` / ``accelerate launch``: join the run's processes, so that the stages done once wait
    on the main process (``hubtools.distributed``); nothing for one process."""
    from hubtools import distributed

    if distributed.launched():
        from hubtools.devices import resolve_device

        distributed.set_up(cpu=resolve_device(config.training.device).type == "cpu")


def train(config: RunConfig, run_dir: Path, *, token: str | None = None,
          reporter: Reporter | None = None) -> TrainOutcome:
    """``hubtools train``: a new run folder, trained (no push). Under several processes the folder is set up
    once, by the main process."""
    from hubtools.distributed import on_main

    reporter = reporter or SilentReporter()
    _join_processes(config)
    checked = on_main("the preflight", lambda: preflight(config, run_dir, push=False))
    _report_notes(checked.notes, reporter)
    on_main("preparing the concept set", lambda: set_up_folder(checked, token=token, reporter=reporter))
    reporter.stage("training")
    return TrainOutcome(Path(run_dir), train_folder(run_dir, token=token, reporter=reporter))


def resume_training(run_dir: Path, *, force: bool = False, token: str | None = None,
                    reporter: Reporter | None = None) -> TrainOutcome:
    """``hubtools train RUN --resume``: continue a run from its last checkpoint (a finished one is left as it is)."""
    reporter = reporter or SilentReporter()
    finished = finished_training(run_dir)
    if finished is not None:
        reporter.note("training had already finished: nothing to resume")
        return TrainOutcome(Path(run_dir), finished, already_finished=True)
    reporter.stage("training")
    return TrainOutcome(Path(run_dir), train_folder(run_dir, resume=True, force=force, token=token, reporter=reporter))


def sample(run_dir: Path, *, device: str | None = None, reporter: Reporter | None = None):
    """``hubtools sample RUN``: the sample grids of a trained run."""
    from hubtools.devices import resolve_device
    from hubtools.sample import render_samples

    reporter = reporter or SilentReporter()
    RunFolder(Path(run_dir)).require_trained_model()
    reporter.stage("rendering sample grids")
    return render_samples(run_dir, device=resolve_device(device or "auto"), reporter=reporter)


def evaluate(run_dir: Path, *, token: str | None = None, reporter: Reporter | None = None, **settings: Any):
    """``hubtools eval RUN``: score the run; settings not given come from the run's ``[eval]`` section. Under
    several processes each draws its share of the images and the main process scores (the others get None)."""
    from hubtools.evaluation import EvalConfig, evaluate_run

    reporter = reporter or SilentReporter()
    saved = load_run_config(run_dir).eval
    chosen = {key: value for key, value in settings.items() if value is not None}
    reporter.stage("evaluating")
    # The stage reports (what, done, total) to a callable: the reporter's.
    result = evaluate_run(Path(run_dir), EvalConfig(**{**saved.model_dump(), **chosen}), progress=reporter.progress,
                          token=token)
    if result is not None:
        folder = RunFolder(Path(run_dir))
        reporter.artifact("eval", folder.relative(folder.eval_result))
    return result


def card(run_dir: Path, *, template: Path | None = None, repo_id: str | None = None,
         reporter: Reporter | None = None) -> Path:
    """``hubtools card RUN``: render the model card; returns its path."""
    from hubtools.card import render_model_card

    reporter = reporter or SilentReporter()
    RunFolder(Path(run_dir)).require_trained_model()  # a card would describe a model that is not there
    render_model_card(run_dir, template=template, repo_id=repo_id)
    if template is not None:
        reporter.note("the run keeps this template: later renders (push to another repo) use it too")
    reporter.artifact("card", "README.md")
    return RunFolder(Path(run_dir)).card


def push(run_dir: Path, repo_id: str | None = None, *, private: bool | None = None, checkpoints: bool | None = None,
         message: str | None = None, token: str | None = None, reporter: Reporter | None = None):
    """``hubtools push RUN [REPO]``: the run (model, card, grids, config) in one commit; safe to retry."""
    from hubtools.card import render_model_card
    from hubtools.publish import push_run

    reporter = reporter or SilentReporter()
    config = load_run_config(run_dir)
    repo_id = repo_id or config.publish.repo_id
    if not repo_id:
        raise ConfigError(f"name the repo: hubtools push {run_dir} namespace/name")
    RunFolder(Path(run_dir)).require_trained_model()  # before a card is rendered for it
    if card_is_due(run_dir, repo_id):
        render_model_card(run_dir, repo_id=repo_id)  # with the template `hubtools card --template` kept, if any
        reporter.artifact("card", "README.md")
    pushed = push_run(
        run_dir, repo_id, private=config.publish.private if private is None else private, token=token,
        checkpoints=config.publish.push_checkpoints if checkpoints is None else checkpoints,
        commit_message=message or config.publish.commit_message,
    )
    if not pushed.changed:
        reporter.note("nothing changed since the last push: no new commit")
    return pushed


def train_and_push(config: RunConfig | None, run_dir: Path, *, token: str | None = None, resume: bool = False,
                   force: bool = False, reporter: Reporter | None = None) -> TrainAndPushResult:
    """``hubtools train-and-push``: photos in, a model with grids and a card on the Hub out.

    With ``resume``, ``config`` is ignored: the run folder's own config is continued. Under ``torchrun`` /
    ``accelerate launch`` every process runs this: the checks, the concept set, the scoring, the card and
    the push happen once, on the main process, while the others wait (``hubtools.distributed``); every
    process trains, and draws its share of the class images, of the grids and of the evaluation images.
    """
    from hubtools.distributed import on_main

    reporter = reporter or SilentReporter()
    run_dir = Path(run_dir)
    if resume:
        config = load_run_config(run_dir)
        repo_id = config.publish.repo_id
        if not repo_id:
            raise ConfigError(f"the run in {run_dir} has no publish.repo_id: push it with `hubtools push {run_dir} NS/NAME`")
        _join_processes(config)
    else:
        assert config is not None
        _join_processes(config)
        checked = on_main("the preflight", lambda: preflight(config, run_dir))
        _report_notes(checked.notes, reporter)
        config, repo_id = checked.config, checked.config.publish.repo_id
    assert repo_id is not None
    user = on_main("checking the token", lambda: check_push_access(repo_id, token))
    reporter.stage(f"pushing as {user} to {repo_id} when training is done")
    if not resume:
        on_main("preparing the concept set", lambda: set_up_folder(checked, token=token, reporter=reporter))
    trained = on_main("reading the run", lambda: finished_training(run_dir)) if resume else None
    if trained is not None:
        reporter.stage(f"training finished before (step {trained.steps_done}): going on to the grids and the push")
    else:
        reporter.stage("training")
        trained = train_folder(run_dir, resume=resume, force=force, token=token, reporter=reporter)
    samples = sample(run_dir, reporter=reporter)  # every process draws its share; the main one writes
    evaluation = None
    if config.eval.enabled:
        evaluation = evaluate(run_dir, token=token, reporter=reporter)  # each process its share; main scores
    if card_is_due(run_dir, repo_id):
        reporter.stage("writing the model card")
    reporter.stage(f"pushing to {repo_id}")
    pushed = on_main("the push", lambda: push(run_dir, repo_id, token=token, reporter=reporter))
    return TrainAndPushResult(run_dir=run_dir, train=trained, samples=samples, push=pushed, evaluation=evaluation)
