"""The one typed description of a run (``RunConfig``), read from TOML and written back resolved.

Every field has a default that follows the published DreamBooth recipe, can be set in a TOML file
(sections ``[model]``, ``[concept]``, ``[training]``, ``[prior]``, ``[sampling]``, ``[publish]``) and
overridden by a CLI flag. ``resolve()`` fills the values that depend on others (learning rate by method,
LoRA alpha) so the copy written into the run folder reproduces the run on its own.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

import tomli_w

from hubtools.atomic import write_text_atomic
from hubtools.errors import ConfigError
from hubtools.families import titles_in_words
from hubtools.hubnames import NAME_RULES, is_valid_repo_id

DEFAULT_BASE_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
RUN_CONFIG_FILENAME = "hubtools.toml"


def check_repo_id(repo_id: str | None, kind: str = "repo") -> str:
    """``repo_id`` if the Hub would accept it (``hubtools.hubnames``), else a one-line ``ConfigError`` (before
    any Hub call)."""
    if not is_valid_repo_id(repo_id):
        raise ConfigError(f"{kind} id {repo_id!r} must look like namespace/name ({NAME_RULES})")
    return repo_id  # type: ignore[return-value]


# Learning rates from the DreamBooth write-ups: 2e-6 for a full fine-tune (5e-6 overfits objects fast),
# 1e-4 for LoRA, whose low-rank updates need a much larger step.
DEFAULT_LR = {"full": 2e-6, "lora": 1e-4}


def describe_precision(mixed_precision: str | None) -> str:
    """How a person reads accelerate's mixed-precision setting: ``no`` means plain fp32."""
    return "fp32" if mixed_precision in (None, "", "no") else f"{mixed_precision} mixed precision"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    base_model: str = Field(DEFAULT_BASE_MODEL, description="Hub id or local folder of a diffusers pipeline "
                            f"({titles_in_words()}; the family is read from its model_index.json)")
    revision: str | None = Field(None, description="branch, tag or commit of the base model")
    vae: str | None = Field(None, description="a VAE to use instead of the base model's, Hub id[@revision] or "
                            "local folder (SDXL in fp16: madebyollin/sdxl-vae-fp16-fix)")


class ConceptConfig(_Section):
    source: str | None = Field(None, description="local folder of photos, or a Hub dataset ns/name[@revision]")
    identifier: str | None = Field(None, description="the rare token that names the subject, e.g. pkblz")
    class_noun: str | None = Field(None, description="what the subject is, e.g. dog, ball")
    instance_prompt: str = Field("a photo of {identifier} {class_noun}", description="training prompt template")
    image_column: str | None = Field(None, description="image column of a Hub dataset (detected when unset)")
    min_images: int = Field(1, ge=1)
    allow_upscale: bool = False
    strict: bool = Field(False, description="fail on any rejected image or a doubtful identifier")
    buckets: str = Field("auto", description="aspect-ratio buckets: auto, off (centre square crop) or "
                         "WxH,WxH,... (sides multiples of the model's VAE factor times its patch size)")
    caption_template: str | None = Field(None, description="each image's own caption through a template, e.g. "
                                         "\"a photo of {identifier} {class_noun}, {caption}\"")
    prepend_identifier: bool = Field(False, description="put the identifier in front of captions that lack it")


class TrainingConfig(_Section):
    method: Literal["full", "lora"] = "full"
    steps: int = Field(800, ge=1)
    learning_rate: float | None = Field(None, gt=0, description="default: 2e-6 full, 1e-4 LoRA")
    batch_size: int = Field(1, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    resolution: int | list[int] = Field(
        512, description="training resolution in pixels; several (\"512,768,1024\"): the same photos in buckets "
        "at each area, drawn in proportion (multi-resolution)")
    seed: int = 0
    train_text_encoder: bool = False
    lora_rank: int = Field(4, ge=1)
    lora_alpha: float | None = Field(None, gt=0, description="default: equal to lora_rank")
    lr_scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine"] = "constant"
    lr_warmup_steps: int = Field(0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    gradient_checkpointing: bool = False
    use_8bit_adam: bool = False
    memory: Literal["auto", "manual", "low", "medium", "high"] = Field(
        "manual", description="auto picks a memory profile from the free GPU memory"
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    distributed: Literal["ddp", "fsdp"] = Field(
        "ddp", description="under several processes: ddp (each holds the whole model) or fsdp (FSDP2 shards the "
        "trained weights, gradients and optimizer states across them)")
    cache_latents: bool = True
    offset_noise: float = Field(0.0, ge=0)
    snr_gamma: float | None = Field(None, gt=0, description="min-SNR weighting gamma (5.0 is usual)")
    checkpoint_every: int = Field(400, ge=0, description="resumable checkpoint every N steps; 0: only the final model")
    keep_checkpoints: int = Field(2, ge=1)
    validation_every: int = Field(0, ge=0, description="0: no validation grids during training")
    caption_dropout: float = Field(0.0, ge=0, le=1, description="share of steps trained on the empty caption")
    shuffle_caption_parts: bool = Field(False, description="shuffle a caption's comma-separated parts, the first "
                                        "kept (kohya's shuffle_caption, keep_tokens=1)")

    @field_validator("resolution", mode="before")
    @classmethod
    def _resolution_list(cls, value: Any) -> Any:
        """``"512,768,1024"`` (the flag's text) as a list; one number as that number."""
        if isinstance(value, str):
            parts = [part.strip() for part in value.split(",") if part.strip()]
            try:
                numbers = [int(part) for part in parts]
            except ValueError:
                raise ValueError("give pixels, e.g. 512, or several: 512,768,1024") from None
            value = numbers if len(numbers) != 1 else numbers[0]
        return value

    @field_validator("resolution")
    @classmethod
    def _multiple_of_8(cls, value: int | list[int]) -> int | list[int]:
        values = value if isinstance(value, list) else [value]
        if not values:
            raise ValueError("needs at least one resolution")
        for one in values:
            if one < 8:
                raise ValueError("must be at least 8 px")
            if one % 8:
                raise ValueError("must be a multiple of 8 (the VAE downsamples by 8)")
        if isinstance(value, list):
            value = sorted(set(value))
            return value[0] if len(value) == 1 else value
        return value

    @property
    def resolutions(self) -> list[int]:
        """Every training resolution, smallest first (one, unless multi-resolution)."""
        return self.resolution if isinstance(self.resolution, list) else [self.resolution]

    @property
    def main_resolution(self) -> int:
        """The largest resolution: the concept set is prepared at it, and grids and class images are drawn at it."""
        return max(self.resolutions)


class PriorConfig(_Section):
    enabled: bool = True
    class_prompt: str = "a photo of a {class_noun}"
    num_class_images: int = Field(100, ge=1)
    loss_weight: float = Field(1.0, ge=0)
    source: str | None = Field(None, description="folder or Hub dataset of class images; unset: generate them")
    generation_steps: int = Field(30, ge=1)
    generation_batch_size: int = Field(4, ge=1)
    guidance_scale: float = Field(7.5, ge=0)


class SamplingConfig(_Section):
    prompts: list[str] = Field(
        default_factory=lambda: [
            "a photo of {identifier} {class_noun}",
            "a photo of {identifier} {class_noun} in the snow",
            "a photo of {identifier} {class_noun} on the beach",
            "a painting of {identifier} {class_noun} in the style of Van Gogh",
        ]
    )
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    guidance_scales: list[float] = Field(default_factory=lambda: [7.0, 11.0])
    num_inference_steps: int = Field(50, ge=1)
    scheduler: Literal["ddim", "pndm", "euler", "dpm"] = "ddim"

    @field_validator("prompts", "seeds", "guidance_scales")
    @classmethod
    def _not_empty(cls, value: list) -> list:
        if not value:
            raise ValueError("needs at least one entry")
        return value


class PublishConfig(_Section):
    repo_id: str | None = Field(None, description="namespace/name of the model repo to push to")
    private: bool = False
    hackathon_theme: str | None = None
    push_checkpoints: bool = False
    license: str | None = Field(None, description="default: the base model's licence")
    commit_message: str | None = None

    @field_validator("repo_id")
    @classmethod
    def _repo_id_shape(cls, value: str | None) -> str | None:
        if value is not None and not is_valid_repo_id(value):
            raise ValueError(f"must look like namespace/name ({NAME_RULES})")
        return value


DEFAULT_DINO_MODEL = "facebook/dino-vits16"
DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch32"


class EvalConfig(_Section):
    """``[eval]``: the one evaluation settings type, for ``train-and-push --eval`` and ``hubtools eval`` alike."""

    enabled: bool = Field(False, description="evaluate after training (train-and-push)")
    prompts: str = Field("dreambench", description="dreambench, or a file with one prompt per line")
    n_per_prompt: int = Field(4, ge=1, description="images per prompt, seeds seed..seed+n-1")
    during_training: bool = Field(
        False, description="DINO fidelity of the validation images at each validation step (logs/fidelity.jsonl)"
    )
    dino_model: str = DEFAULT_DINO_MODEL
    clip_model: str = DEFAULT_CLIP_MODEL
    n_class_images: int = Field(16, ge=0, description="class-prompt images for PRES; 0 skips PRES")
    max_prompts: int | None = Field(None, ge=1, description="use only the first N prompts (a quick look)")
    seed: int = 0
    num_inference_steps: int | None = Field(None, ge=1, description="default: the run's sampling steps")
    guidance_scale: float = Field(7.5, ge=0)
    batch_size: int = Field(4, ge=1)
    baseline: bool = Field(True, description="also measure the base model with the same prompts and seeds")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    save_images: bool = Field(False, description="write the generated images under images/eval/")

    @property
    def seeds(self) -> list[int]:
        return [self.seed + index for index in range(self.n_per_prompt)]


class RunConfig(_Section):
    model: ModelConfig = Field(default_factory=ModelConfig)
    concept: ConceptConfig = Field(default_factory=ConceptConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    prior: PriorConfig = Field(default_factory=PriorConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    publish: PublishConfig = Field(default_factory=PublishConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="after")
    def _fidelity_needs_validation(self) -> RunConfig:
        if self.eval.during_training and not self.training.validation_every:
            raise ValueError("eval.during_training scores the validation grids: set training.validation_every "
                             "(--validation-every N) too")
        return self

    @model_validator(mode="after")
    def _several_resolutions_need_automatic_buckets(self) -> RunConfig:
        buckets = self.concept.buckets.strip().lower()
        if len(self.training.resolutions) > 1 and buckets not in ("auto", "off"):
            raise ValueError("several training resolutions bucket each photo at every area: use --buckets auto "
                             "(or off), not a list of sizes")
        return self

    @model_validator(mode="after")
    def _prompt_fields_exist(self) -> RunConfig:
        for where, template in [("concept.instance_prompt", self.concept.instance_prompt),
                                ("prior.class_prompt", self.prior.class_prompt),
                                *[(f"sampling.prompts[{i}]", p) for i, p in enumerate(self.sampling.prompts)]]:
            try:
                template.format(identifier="x", class_noun="y")
            except (KeyError, IndexError, ValueError) as error:
                raise ValueError(
                    f"{where}: only {{identifier}} and {{class_noun}} may appear in braces ({error})"
                ) from None
        return self

    # -- derived values -------------------------------------------------------------------------

    def format_prompt(self, template: str) -> str:
        return template.format(identifier=self.concept.identifier or "", class_noun=self.concept.class_noun or "")

    @property
    def instance_prompt(self) -> str:
        return self.format_prompt(self.concept.instance_prompt)

    @property
    def class_prompt(self) -> str:
        return self.format_prompt(self.prior.class_prompt)

    @property
    def sample_prompts(self) -> list[str]:
        return [self.format_prompt(p) for p in self.sampling.prompts]

    @property
    def learning_rate(self) -> float:
        return self.training.learning_rate or DEFAULT_LR[self.training.method]

    def resolve(self) -> RunConfig:
        """A copy with every derived default written out, as stored in the run folder."""
        resolved = self.model_copy(deep=True)
        resolved.training.learning_rate = self.learning_rate
        if resolved.training.lora_alpha is None:
            resolved.training.lora_alpha = float(resolved.training.lora_rank)
        return resolved

    def require_subject(self) -> None:
        """Training needs to know what it learns: fail early, before anything is loaded."""
        missing = [flag for flag, value in [("--concept", self.concept.source),
                                             ("--identifier", self.concept.identifier),
                                             ("--class-noun", self.concept.class_noun)] if not value]
        if missing:
            raise ConfigError(
                f"missing {', '.join(missing)}: say which photos to learn from, the rare token that will "
                "name the subject and its class noun (or set them in the config's [concept] section)"
            )

    def to_toml(self) -> str:
        return tomli_w.dumps(self.model_dump(mode="json", exclude_none=True))

    def shareable(self) -> RunConfig:
        """A copy fit to publish: paths on this machine are cut to their last part (``/home/me/photos/dog`` ->
        ``dog``), so neither the pushed config nor the card tells the world how someone's disk is laid out.
        Hub ids are kept as they are."""
        shared = self.model_copy(deep=True)
        shared.model.base_model = local_name(shared.model.base_model)
        shared.concept.source = local_name(shared.concept.source)
        shared.prior.source = local_name(shared.prior.source)
        if shared.eval.prompts != "dreambench":
            shared.eval.prompts = local_name(shared.eval.prompts)
        return shared


def is_local_path(value: str) -> bool:
    """Whether ``value`` names something on this machine rather than a Hub repo (``namespace/name[@rev]``)."""
    bare = value.split("@", 1)[0]
    if bare.startswith(("/", "~", "./", "../", "\\")) or (len(bare) > 1 and bare[1] == ":"):
        return True
    return bare.count("/") != 1 or Path(bare).expanduser().exists()


_HUB_REF = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[^\s@]+))?$")


def parse_hub_ref(text: str) -> tuple[str, str | None] | None:
    """``ns/name@rev`` -> ("ns/name", "rev") (revision None without ``@``); None when ``text`` is no Hub id."""
    match = _HUB_REF.match(text.strip())
    if not match or ".." in text or text.strip().startswith((".", "/", "~")):
        return None
    return match["repo"], match["revision"]


def local_name(value: str | None) -> str | None:
    """``value`` reduced to its last path part when it is a local path; Hub ids and None pass through."""
    if value is None or not is_local_path(value):
        return value
    return Path(value.rstrip("/\\")).name or value


# -- reading, overriding and writing ----------------------------------------------------------------


def _describe_validation_error(error: ValidationError, origin: str, labels: dict[str, str] | None = None) -> str:
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"])
        if labels and where in labels:
            where = f"{labels[where]} ({where})"
        if item["type"] == "extra_forbidden":
            section_fields = _known_fields(item["loc"][:-1])
            close = difflib.get_close_matches(str(item["loc"][-1]), section_fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(section_fields)})"
            problems.append(f"unknown setting {where!r}{hint}")
        else:
            message = item["msg"].removeprefix("Value error, ")
            given = item.get("input")
            shown = "" if isinstance(given, dict) or given is None else f" (got {given!r})"
            problems.append(f"{where}: {message}{shown}" if where else message)
    return f"invalid config in {origin}: " + "; ".join(problems)


def _known_fields(location: tuple) -> list[str]:
    model: type[BaseModel] = RunConfig
    for part in location:
        annotation = model.model_fields[str(part)].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def config_from_dict(data: dict[str, Any], origin: str = "config", labels: dict[str, str] | None = None) -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_describe_validation_error(error, origin, labels)) from None


def load_config(path: str | os.PathLike) -> RunConfig:
    """Read a TOML config; a missing file or bad value is a one-line ``ConfigError``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path} (check the path, or omit --config to use the defaults)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None
    return config_from_dict(data, origin=str(path))


def apply_overrides(config: RunConfig, overrides: dict[str, Any], *, flags: dict[str, str] | None = None) -> RunConfig:
    """Set dotted keys (``"training.steps": 100``) on a copy; ``None`` values mean "not given".

    ``flags`` names the command-line flag of each dotted key (``"training.steps": "--steps"``), so a bad
    value is reported under the flag the user typed.
    """
    # only what was set (in a file, by a flag): the rest stays unset, so a model family's defaults can fill it
    data = config.model_dump(mode="json", exclude_unset=True)
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        data.setdefault(section, {})[key] = value
    return config_from_dict(data, origin="the command line", labels=flags)


def save_config(config: RunConfig, path: Path) -> Path:
    write_text_atomic(path, config.to_toml())
    return path


def load_run_config(run_dir: Path) -> RunConfig:
    """The resolved config stored in a run folder."""
    path = Path(run_dir) / RUN_CONFIG_FILENAME
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a hubtools run folder (no {RUN_CONFIG_FILENAME}); pass the --out folder of a run")
    return load_config(path)
