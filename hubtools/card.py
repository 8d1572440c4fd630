"""The model card (``RUN/README.md``): metadata through ``ModelCardData``, body from a Jinja template.

Everything the card says is read from the run folder (resolved config, train_result.json, identifier.json,
concept manifest, samples.json, eval.json); optional parts that a run lacks are left out rather than shown
empty. The YAML header is written by huggingface_hub from ``ModelCardData`` so it is always what the Hub
parses; the template only lays out the body (``templates/model_card.md.j2``, or the user's own).
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

from hubtools.atomic import write_text_atomic
from hubtools.base_model import BaseModelRecord, record_of_run
from hubtools.config import RunConfig, describe_precision, is_local_path, load_run_config, local_name, parse_hub_ref
from hubtools.errors import InputError
from hubtools.formatting import human_size
from hubtools.families import License, by_name
from hubtools.hackathon import get_theme
from hubtools.hashing import sha256_file
from hubtools.hubenv import current_endpoint
from hubtools.resources import TEMPLATES_DIR
from hubtools.runfolder import (
    LORA_WEIGHTS_FILENAME, IdentifierRecord, RunFolder, SamplesRecord, TrainResult, published_files,
    read_concept_manifest, read_eval_result, read_jsonl,
)
from hubtools.runfolder import read_json
from hubtools.runfolder.layout import FILE_ROLES

DEFAULT_TEMPLATE = TEMPLATES_DIR / "model_card.md.j2"
BASE_TAGS = ["text-to-image", "diffusers", "stable-diffusion", "dreambooth", "hubtools"]

log = logging.getLogger("hubtools")


def render_model_card(run_dir: Path, *, template: Path | None = None, repo_id: str | None = None):
    """Render ``RUN/README.md`` (atomically) and return it as a ``huggingface_hub.ModelCard``.

    A ``template`` given here is kept in the run folder, so a later re-render (``hubtools push`` to another
    repo, a re-run) uses it again instead of falling back to the default.
    """
    from huggingface_hub import ModelCard, ModelCardData

    run = RunFolder(Path(run_dir))
    config = load_run_config(run.root)
    if template is not None:
        template = Path(template)
        if not template.is_file():
            raise InputError(f"card template not found: {template} (pass an existing .md.j2 file to --template)")
    elif run.card_template.is_file():
        template = run.card_template
    else:
        template = DEFAULT_TEMPLATE
    context = card_context(run.root, config, repo_id=repo_id)

    eval_results = None
    if context["evaluation"] is not None:
        eval_results = context["evaluation"]["hub_results"] or None
    theme = context["hackathon"]
    family_tags = [context["family"]["tag"] if tag == "stable-diffusion" else tag for tag in BASE_TAGS]
    licence_terms = context["license_terms"]
    data = ModelCardData(
        license=context["license"], **licence_terms,
        library_name="diffusers",
        base_model=context["base_model"]["id"] if context["base_model"]["on_hub"] else None,
        pipeline_tag="text-to-image",
        tags=_unique(family_tags + (["lora"] if context["lora"] else []) + (theme["tags"] if theme else [])),
        datasets=[context["concept"]["dataset_id"]] if context["concept"]["dataset_id"] else None,
        model_name=context["model_name"] if eval_results else None,
        eval_results=eval_results,
        instance_prompt=context["instance_prompt"],
        widget=_widgets(context),
    )
    import jinja2

    try:
        card = ModelCard.from_template(data, template_path=str(template), **context)
    except jinja2.TemplateError as error:
        where = f" line {error.lineno}" if getattr(error, "lineno", None) else ""
        raise InputError(f"card template {template}{where} does not render: {error}") from None
    if template != run.card_template and template != DEFAULT_TEMPLATE:
        write_text_atomic(run.card_template, template.read_text(encoding="utf-8"))
    write_text_atomic(run.card, str(card))
    return card


# -- what the template sees ----------------------------------------------------------------------------


def card_context(run_dir: Path, config: RunConfig, *, repo_id: str | None = None) -> dict[str, Any]:
    """Every value the template uses, computed once (plain dicts, lists and strings)."""
    run = RunFolder(Path(run_dir))
    train = TrainResult.read(run)
    repo_id = repo_id or config.publish.repo_id
    model_name = (repo_id or run.root.name).split("/")[-1]
    lora = run.is_lora
    record = record_of_run(run.root, config.model)  # the base model preflight resolved: family, commit, variant
    base_model = _base_model(record)
    family = by_name(record.family)
    denoiser_config = _denoiser_config(run, family, record)
    licence = _license(config, base_model, family, denoiser_config)
    identifier_report = IdentifierRecord.read(run)
    return {
        "repo_id": repo_id,
        "repo_placeholder": repo_id or f"YOUR_NAMESPACE/{model_name}",
        "model_name": model_name,
        "lora": lora,
        "method": "LoRA" if lora else "full fine-tune",
        "identifier": config.concept.identifier or "",
        "class_noun": config.concept.class_noun or "",
        "instance_prompt": config.instance_prompt,
        "class_prompt": config.class_prompt,
        "sample_prompts": config.sample_prompts,
        "base_model": base_model,
        "license": licence.id,
        "license_terms": {k: v for k, v in (("license_name", licence.name), ("license_link", licence.link)) if v},
        "license_note": licence.note,
        "family": {"name": family.name, "title": family.title, "tag": family.card_tag,
                   # the identifier is counted in the family's own tokenizers only: CLIP's line where it has one
                   "first_tokenizer_is_clip": family.first_tokenizer_is_clip},
        "snippet": family.card_snippet(denoiser_config, config.sampling.scheduler, config.training.main_resolution),
        "identifier_report": identifier_report,
        "identifier_warnings": _identifier_warnings(identifier_report, family),
        "training": _training(config, train, lora),
        "hyperparameters": _hyperparameters(config, lora, train),
        "weights": _weights(run, train, lora, family),
        "concept": _concept(run, config),
        "samples": _samples(run, family),
        "loss_curve": run.relative(run.loss_curve) if run.loss_curve.is_file() else None,
        "fidelity": [row for row in read_jsonl(run.fidelity) if row.get("dino") is not None],
        "validation_images": sorted(run.relative(p) for p in run.validation_images.glob("*.png")),
        "evaluation": _evaluation(run),
        "hackathon": _hackathon(config),
        "sampling": {"scheduler": family.sampling_scheduler_label(config.sampling.scheduler),
                     "scheduler_name": config.sampling.scheduler, "steps": config.sampling.num_inference_steps,
                     "guidance": _format_value(config.sampling.guidance_scales[0]), "seeds": config.sampling.seeds},
        "repo_files": _repo_files(run),
        "config_toml": config.shareable().to_toml().strip(),
        "hubtools_version": (train.hubtools_version if train else None) or _hubtools_version(),
    }


def _repo_files(run: RunFolder) -> list[dict[str, str]]:
    """What the push puts in the repo beside this card, one line per file or folder."""
    pushed = set()
    for path in published_files(run):
        folder = path.split("/", 1)[0] + "/"
        pushed.add(path if path in FILE_ROLES else folder)
    return [{"path": name, "what": what} for name, what in FILE_ROLES.items() if name in pushed]


def _identifier_warnings(report: IdentifierRecord | None, family) -> list[str]:
    """What is doubtful about the identifier to the family's own tokenizers: every warning of the check where the
    family's first tokenizer is CLIP's (the check's own); else only those of its tokenizers' splits (CLIP's
    split, rarity and prior mean nothing to a model without CLIP)."""
    if report is None:
        return []
    if family.first_tokenizer_is_clip:
        return list(report.warnings)
    from hubtools.families.tokenizers import TokenizerSplit, split_warning

    splits = [TokenizerSplit(**split) for split in report.other_tokenizers or []]
    return [split_warning(report.text, split) for split in splits if split.num_tokens != 1]


def _widgets(context: dict[str, Any]) -> list[dict[str, Any]]:
    """The instance prompt with its sample as the example output, then the hackathon theme's prompt."""
    widget: dict[str, Any] = {"text": context["instance_prompt"]}
    if context["samples"] and context["samples"]["widget"]:
        widget["output"] = {"url": context["samples"]["widget"]}
    widgets = [widget]
    theme = context["hackathon"]
    if theme and theme["widget_text"] not in (None, context["instance_prompt"]):
        widgets.append({"text": theme["widget_text"]})
    return widgets


def _base_model(record: BaseModelRecord) -> dict[str, Any]:
    model_id = record.repo_id
    local = is_local_path(model_id)
    return {
        "id": local_name(model_id) if local else model_id,  # the card never shows where a local copy lives
        "path": model_id if local else None,
        "on_hub": not local,
        "revision": record.load_revision,
        "url": None if local else f"{current_endpoint().rstrip('/')}/{model_id}",  # on the hub the run is pushed to
    }


def _denoiser_config(run: RunFolder, family, record: BaseModelRecord) -> dict[str, Any]:
    """What the family's variant depends on: the trained denoiser's config, else the base model's."""
    saved = read_json(run.root / family.denoiser / "config.json") if (run.root / family.denoiser).is_dir() else None
    return saved or record.denoiser_config


def _license(config: RunConfig, base_model: dict[str, Any], family, denoiser_config: dict[str, Any]) -> License:
    """The licence set in ``[publish]``, else the base model's (from its card, with its name and link when it
    is ``other``), else that of the family's official weights (SD 1.x's for SD, openrail++ for SDXL, the
    FLUX.1 [dev] non-commercial licence for dev)."""
    default = family.default_license(denoiser_config)
    if config.publish.license:
        return License(config.publish.license)
    found = None
    try:
        from huggingface_hub import ModelCard

        if base_model["on_hub"]:
            found = _hub_license(current_endpoint(), base_model["id"], base_model["revision"])
        elif (Path(base_model["path"]) / "README.md").is_file():
            data = ModelCard.load(Path(base_model["path"]) / "README.md").data
            found = (data.license, getattr(data, "license_name", None), getattr(data, "license_link", None))
    except Exception as error:  # offline, gated, no card: the licence falls back, the card still renders
        log.debug("could not read the base model's licence: %s", error)
    if found and isinstance(found[0], str) and found[0]:
        licence_id, name, link = found
        if licence_id == default.id and (name in (None, default.name)):
            return License(licence_id, name or default.name, link or default.link, default.note)
        return License(licence_id, name, link)
    return default


@lru_cache(maxsize=32)
def _hub_license(endpoint: str, model_id: str, revision: str | None) -> tuple[str | None, str | None, str | None] | None:
    # One answer per base model and commit for the life of the process: a card rendered twice (card, then
    # push to another repo) must not change because the Hub was slow to answer once.
    from huggingface_hub import HfApi

    info = HfApi(endpoint=endpoint).model_info(model_id, revision=revision, timeout=10)
    data = info.card_data
    if not data:
        return None
    return data.license, getattr(data, "license_name", None), getattr(data, "license_link", None)


def _training(config: RunConfig, train: TrainResult | None, lora: bool) -> dict[str, Any]:
    t = config.training
    known = {
        "present": train is not None,
        "steps_done": train.steps_done if train else None,
        "steps_total": (train.steps_total if train else None) or t.steps,
        "final_loss": _round(train.final_loss, 4) if train else None,
        "wall_time": _duration(train.wall_seconds) if train else None,
        "steps_per_second": _round(train.steps_per_second, 2) if train else None,
        "peak_memory": f"{train.peak_memory_bytes / 2**30:.2f} GiB" if train and train.peak_memory_bytes else None,
        "device": train.device if train else None,
        "mixed_precision": (train.mixed_precision if train else None) or t.mixed_precision,
        "precision": describe_precision(train.mixed_precision) if train and train.mixed_precision else None,
        "memory_profile": train.memory_profile if train else None,
        "num_instance_images": train.num_instance_images if train else None,
        "resumed_from": train.resumed_from if train else None,
        "class_images": train.class_images.count if train and train.class_images else None,
        "class_images_source": train.class_images.source if train and train.class_images else None,
    }
    return {
        **known,
        "prior": config.prior.enabled,
        "effective_batch": t.batch_size * t.gradient_accumulation_steps,
        "learning_rate": _format_value(config.learning_rate),
        "lora_rank": t.lora_rank if lora else None,
        "lora_alpha": _format_value(t.lora_alpha) if lora else None,
        "text_encoder": t.train_text_encoder,
    }


def _hyperparameters(config: RunConfig, lora: bool, train: TrainResult | None = None) -> list[dict[str, str]]:
    """Every setting of the sections that shape the weights (training, prior) and the grids (sampling), after
    how the photos became training images: the buckets, the images in each, and the caption template."""
    rows = [{"name": "concept.buckets", "value": config.concept.buckets}]
    per_bucket = _bucket_counts(train)
    if per_bucket:
        rows.append({"name": "images per bucket", "value": per_bucket})
    if config.concept.caption_template:
        rows.append({"name": "concept.caption_template", "value": config.concept.caption_template})
    if config.concept.prepend_identifier:
        rows.append({"name": "concept.prepend_identifier", "value": "true"})
    for section in ("training", "prior", "sampling"):
        for key, value in getattr(config, section).model_dump(mode="json").items():
            if key.startswith("lora_") and not lora:
                continue  # LoRA settings mean nothing for a full fine-tune
            if section == "prior" and key in ("class_prompt",):
                value = config.class_prompt
            if section == "sampling" and key == "prompts":
                continue  # listed with the grids
            rows.append({"name": f"{section}.{key}", "value": _format_value(value)})
    return rows


def _bucket_counts(train: TrainResult | None) -> str | None:
    """"832x1216: 3, 1024x1024: 2" from the training record, the most common bucket first; None: square crop."""
    counts = ((train.settings or {}).get("buckets") if train else None) or {}
    ordered = sorted(counts.items(), key=lambda item: -item[1])
    return ", ".join(f"{label}: {count}" for label, count in ordered) or None


def _weights(run: RunFolder, train: TrainResult | None, lora: bool, family) -> dict[str, Any]:
    recorded = {w.path: w for w in train.weight_files} if train else {}
    if lora:
        paths = [LORA_WEIGHTS_FILENAME] if run.is_lora else []
        # the kohya-layout copy for AUTOMATIC1111 / ComfyUI, when training wrote one
        paths += [w.path for w in (train.weight_files if train else []) if w.path != LORA_WEIGHTS_FILENAME
                  and (run.root / w.path).is_file()]
    else:
        paths = sorted(run.relative(p) for p in run.root.glob("*/*.safetensors"))
    files = []
    for path in paths:
        size = (run.root / path).stat().st_size
        known = recorded.get(path)
        # train_result's hash holds while the file is the one training wrote (same size); else hash it now.
        sha = known.sha256 if known and known.bytes == size and known.sha256 else sha256_file(run.root / path)
        # the second LoRA file: its key layout and the tools that read it
        what = (f"the same LoRA in {family.kohya_lora_layout}, for {family.kohya_lora_readers}"
                if lora and path != LORA_WEIGHTS_FILENAME else None)
        files.append({"path": path, "size": human_size(size), "sha256": sha, "what": what})
    return {
        "format": _lora_format(run.lora_weights, family.denoiser) if lora
        else f"diffusers {family.pipeline_class_name} folder (safetensors)",
        "step": train.steps_done if train else None,
        "files": files,
        "checkpoints": (train.checkpoints if train else None) or [],
    }


def _lora_format(path: Path, denoiser: str = "unet") -> str:
    parts = "UNet" if denoiser == "unet" else denoiser  # the trained component: the UNet, or the transformer
    if path.is_file():
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            if any(key.startswith("text_encoder") for key in handle.keys()):
                parts = f"{parts} and text encoder"
    return f"diffusers LoRA weights for the {parts} (safetensors), loaded over the base model"


def _concept(run: RunFolder, config: RunConfig) -> dict[str, Any]:
    try:
        prepared = read_concept_manifest(run)
    except InputError as error:  # a damaged concept folder: the card says what the config says
        log.debug("the card leaves out the concept set: %s", error)
        prepared = None
    source = (prepared.source if prepared else None) or config.concept.source
    if prepared is not None:
        dataset_id = (parse_hub_ref(source) or (source, None))[0] if prepared.source_is_hub else None
        revision = prepared.source_revision
    elif source and not is_local_path(source):
        dataset_id, revision = parse_hub_ref(source) or (source.split("@", 1)[0], None)
    else:
        dataset_id, revision = None, None
    counts = prepared.counts if prepared else {}
    return {
        "present": prepared is not None,
        "source": local_name(source) if dataset_id is None else dataset_id,
        "dataset_id": dataset_id,
        "dataset_url": f"{current_endpoint().rstrip('/')}/datasets/{dataset_id}" if dataset_id else None,
        "revision": revision,
        "resolution": (prepared.resolution if prepared else None) or config.training.main_resolution,
        "buckets": prepared.bucket_counts() if prepared and prepared.has_shapes else None,
        "caption_template": prepared.caption_template if prepared else None,
        "accepted": counts.get("accepted"),
        "rejected": sum(v for k, v in counts.items() if k not in ("accepted", "total") and isinstance(v, int)) or 0,
        "contact_sheet": run.relative(run.contact_sheet) if run.contact_sheet.is_file() else None,
    }


def _samples(run: RunFolder, family) -> dict[str, Any] | None:
    samples = SamplesRecord.read(run)
    if samples is None:
        return None
    grids = {kind: file for kind, file in samples.grids.items() if (run.root / file).is_file()}
    widget = samples.widget.file if samples.widget else None
    steps = sorted({c.step for c in samples.cells if c.grid == "checkpoints"})
    return {
        "grids": grids,
        "widget": widget if widget and (run.root / widget).is_file() else None,
        "prompts": samples.prompts,
        "seeds": samples.seeds,
        "guidance_scales": [_format_value(g) for g in samples.guidance_scales],
        "scheduler": family.sampling_scheduler_label(samples.scheduler),
        "num_inference_steps": samples.num_inference_steps,
        "checkpoint_steps": steps,
    }


def _evaluation(run: RunFolder) -> dict[str, Any] | None:
    result = read_eval_result(run)
    if result is None:
        return None
    rows = [{
        "metric": row.metric.name,
        "description": row.metric.description,
        "better": "higher" if row.metric.higher_is_better else "lower",
        "ours": _round(row.ours, 3), "baseline": _round(row.baseline, 3), "real": _round(row.real, 3),
        "paper": _round(row.paper, 3), "paper_label": row.paper_label,
    } for row in result.comparison_rows()]
    return {
        "rows": rows,
        "hub_results": result.to_hub_eval_results(),
        "prompt_source": result.prompt_source,
        "n_prompts": len(result.prompts),
        "n_per_prompt": result.n_per_prompt,
        "dino_model": result.dino_model,
        "clip_model": result.clip_model,
    }


def _hackathon(config: RunConfig) -> dict[str, Any] | None:
    name = config.publish.hackathon_theme
    if not name:
        return None
    theme = get_theme(name)
    widget_text = None
    if config.concept.identifier and config.concept.class_noun:
        widget_text = theme.widget_text(config.concept.identifier, config.concept.class_noun)
    return {"name": theme.name, "tags": list(theme.tags), "section": theme.card_section_markdown().strip(),
            "widget_text": widget_text}


# -- small formatting helpers ------------------------------------------------------------------------------


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _round(value, digits: int):
    return round(value, digits) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _format_value(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ", ".join(_format_value(v) for v in value)
    return str(value)


def _duration(seconds) -> str | None:
    if not isinstance(seconds, (int, float)):
        return None
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else (f"{minutes} min {secs:02d} s" if minutes else f"{seconds:.1f} s")


def _hubtools_version() -> str:
    from hubtools import __version__

    return __version__
