"""The flags of ``train`` and ``train-and-push``, and how they become a ``RunConfig``.

A run is described by ``RunConfig`` (``hubtools.config``). The settings people change most have their own
flag here; every other setting is reachable with ``--set section.key=value`` (repeatable), checked against
``RunConfig`` with a "did you mean" for a misspelt key. The order is: defaults, then ``--config FILE``,
then ``--set``, then the named flags. Help texts take their default from the config model, so they
cannot drift from it.
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from pydantic import BaseModel

from hubtools.config import RunConfig, apply_overrides, load_config
from hubtools.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# "training.steps" -> "--steps": the flag a user typed for each setting, for error messages.
FLAG_OF_SETTING: dict[str, str] = {}


def _sections() -> dict[str, type[BaseModel]]:
    return {name: info.annotation for name, info in RunConfig.model_fields.items()}  # type: ignore[misc]


def setting_keys() -> list[str]:
    """Every ``section.key`` that ``--set`` accepts."""
    return [f"{section}.{key}" for section, model in _sections().items() for key in model.model_fields]


def default_of(key: str) -> Any:
    section, name = key.split(".")
    return _sections()[section].model_fields[name].get_default(call_default_factory=True)


def setting_option(key: str, *names: str, help: str | None = None) -> Any:
    """A typer option that sets one ``RunConfig`` key; None (not given) leaves the config's value.

    The help names the key (the same setting in a TOML file or ``--set``) and shows the model's default.
    """
    FLAG_OF_SETTING[key] = names[0].split("/")[0]
    section, name = key.split(".")
    text = help or (_sections()[section].model_fields[name].description or "")
    default = default_of(key)
    where = key if default is None or isinstance(default, bool) else f"{key}, default {default}"
    return typer.Option(*names, help=f"{text[:1].upper()}{text[1:]} ({where}).", show_default=False)


# -- the named flags --------------------------------------------------------------------------------------

BaseModelFlag = Annotated[Optional[str], setting_option("model.base_model", "--base-model", help="Base model: Hub id or local diffusers folder")]
Vae = Annotated[Optional[str], setting_option("model.vae", "--vae", help="A VAE instead of the base model's: Hub id[@rev] or folder (SDXL in fp16: madebyollin/sdxl-vae-fp16-fix)")]
Concept = Annotated[Optional[str], setting_option("concept.source", "--concept", help="Photos of the subject: a folder, or a Hub dataset ns/name or ns/name@rev")]
Identifier = Annotated[Optional[str], setting_option("concept.identifier", "--identifier", help="Rare token naming the subject (see `hubtools identifier suggest`)")]
ClassNoun = Annotated[Optional[str], setting_option("concept.class_noun", "--class-noun", help="What the subject is: dog, ball, jellyfish...")]
ImageColumn = Annotated[Optional[str], setting_option("concept.image_column", "--image-column")]
Strict = Annotated[bool, setting_option("concept.strict", "--strict")]
Method = Annotated[Optional[str], setting_option("training.method", "--method", help="Training method: full (fine-tune the UNet) or lora")]
Steps = Annotated[Optional[int], setting_option("training.steps", "--steps", help="Training steps")]
LearningRate = Annotated[Optional[float], setting_option("training.learning_rate", "--learning-rate", "--lr", help="Learning rate, 2e-6 for full, 1e-4 for LoRA unless given")]
Resolution = Annotated[Optional[int], setting_option("training.resolution", "--resolution", help="Training resolution in pixels")]
Device = Annotated[Optional[str], setting_option("training.device", "--device", help="Device: auto, cpu or cuda")]
Memory = Annotated[Optional[str], setting_option("training.memory", "--memory", help="Memory profile: auto (from the free GPU memory), manual, low, medium or high")]
MixedPrecision = Annotated[Optional[str], setting_option("training.mixed_precision", "--mixed-precision", help="Mixed precision: auto, no (fp32), fp16 or bf16")]
TrainTextEncoder = Annotated[Optional[bool], setting_option("training.train_text_encoder", "--train-text-encoder/--freeze-text-encoder", help="Also train the text encoder")]
CheckpointEvery = Annotated[Optional[int], setting_option("training.checkpoint_every", "--checkpoint-every", help="Resumable checkpoint every N steps, 0: only the final model")]
Prior = Annotated[Optional[bool], setting_option("prior.enabled", "--prior/--no-prior", help="Prior preservation with generated class images (on unless --no-prior)")]
NumClassImages = Annotated[Optional[int], setting_option("prior.num_class_images", "--num-class-images", help="Class images for prior preservation")]
FidelityCurve = Annotated[Optional[bool], setting_option("eval.during_training", "--fidelity-curve/--no-fidelity-curve", help="Score each validation grid with DINO against the photos")]
Repo = Annotated[Optional[str], setting_option("publish.repo_id", "--repo", help="Hub repo to push to: namespace/name")]
Private = Annotated[Optional[bool], setting_option("publish.private", "--private/--public", help="Visibility of a new repo (public unless --private)")]
Hackathon = Annotated[Optional[str], setting_option("publish.hackathon_theme", "--hackathon", help="Enter the DreamBooth hackathon under this theme")]
Evaluate = Annotated[Optional[bool], setting_option("eval.enabled", "--eval/--no-eval", help="Evaluate (DINO, CLIP-I, CLIP-T) before pushing")]

# -- the flags that steer the command rather than the run ------------------------------------------------

ConfigFile = Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML config; the flags override it.", show_default=False)]
Out = Annotated[Optional[Path], typer.Option("--out", "-o", help="Run folder (default: runs/<repo or identifier-class>).", show_default=False)]
Settings = Annotated[list[str], typer.Option(
    "--set", metavar="SECTION.KEY=VALUE", show_default=False,
    help="Any other setting of the config, e.g. --set training.snr_gamma=5 or --set sampling.seeds=[0,1] "
         "(repeatable; values are read as TOML, else as text).",
)]
Resume = Annotated[bool, typer.Option("--resume", help="Continue the run in the run folder from its last checkpoint.")]
Force = Annotated[bool, typer.Option("--force", help="With --resume: continue even though the config changed.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Validate and print the plan; load and train nothing.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars (hubtools --quiet: results and errors only).")]


# -- from flags to a RunConfig ------------------------------------------------------------------------------


def parse_settings(values: list[str]) -> dict[str, Any]:
    """``["training.steps=100"]`` -> ``{"training.steps": 100}``; an unknown key is a one-line error."""
    known = setting_keys()
    parsed: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item}: give section.key=value, e.g. --set training.snr_gamma=5")
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}?" if close else "the sections are " + ", ".join(_sections())
            raise ConfigError(f"--set {key}: unknown setting ({hint})")
        parsed[key] = _toml_value(raw.strip())
    return parsed


def _toml_value(raw: str) -> Any:
    """``5`` -> 5, ``true`` -> True, ``[0, 1]`` -> [0, 1]; anything that is not a TOML value stays text."""
    try:
        return tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        return raw


def build_config(config_file: Path | None, settings: list[str], flags: dict[str, Any]) -> RunConfig:
    """The run's config: the file (or the defaults), then ``--set``, then the named flags (None: not given)."""
    base = load_config(config_file) if config_file else RunConfig()
    labels = {key: "--set" for key in setting_keys()} | FLAG_OF_SETTING
    from_set = parse_settings(settings)
    overrides = from_set | {key: value for key, value in flags.items() if value is not None}
    labels |= {key: "--set" for key in from_set if flags.get(key) is None}
    return apply_overrides(base, overrides, flags=labels)


def default_run_dir(config: RunConfig) -> Path:
    name = (config.publish.repo_id or "").split("/")[-1] or f"{config.concept.identifier}-{config.concept.class_noun}"
    return Path("runs") / "".join(c if c.isalnum() or c in "-_." else "-" for c in name)
