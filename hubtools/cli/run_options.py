"""The flags of ``train`` and ``train-and-push``, and how they become a ``RunConfig``.

A run is described by ``RunConfig`` (``hubtools.config``). The settings people change most have their own
flag here; every other setting is reachable with ``--set section.key=value`` (repeatable), checked against
``RunConfig`` with a "did you mean" for a misspelt key. The order is: defaults, then ``--config FILE``,
then ``--set``, then the named flags. Help texts take their default from the config model, so they
cannot drift from it.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from pydantic import BaseModel

from hubtools.config import RunConfig, apply_overrides, load_config
from hubtools.errors import ConfigError, Interrupted

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


# -- the named flags: each declared once, with the setting it sets -----------------------------------------


@dataclass(frozen=True)
class Flag:
    """One command-line flag of the run commands: its parameter name, type annotation (typer's ``Annotated``),
    default, and the ``RunConfig`` key it sets (None: it steers the command, not the run)."""

    name: str
    annotation: Any
    default: Any = None
    key: str | None = None


def _setting(key: str, names: tuple[str, ...], kind: Any, help: str | None = None) -> Flag:
    """A flag that sets ``key``; its parameter name comes from its first flag name (``--lr``'s is ``--learning-rate``)."""
    name = names[0].split("/")[0].lstrip("-").replace("-", "_")
    is_switch = kind is bool and "/" not in names[0]  # --strict: off unless given
    annotation = Annotated[kind if is_switch else Optional[kind], setting_option(key, *names, help=help)]
    return Flag(name, annotation, default=False if is_switch else None, key=key)


RUN_FLAGS: tuple[Flag, ...] = (
    _setting("model.base_model", ("--base-model",), str, "Base model: Hub id or local diffusers folder"),
    _setting("model.vae", ("--vae",), str, "A VAE instead of the base model's: Hub id[@rev] or folder (SDXL in fp16: madebyollin/sdxl-vae-fp16-fix)"),
    _setting("concept.source", ("--concept",), str, "Photos of the subject: a folder, or a Hub dataset ns/name or ns/name@rev"),
    _setting("concept.identifier", ("--identifier",), str, "Rare token naming the subject (see `hubtools identifier suggest`)"),
    _setting("concept.class_noun", ("--class-noun",), str, "What the subject is: dog, ball, jellyfish..."),
    _setting("concept.image_column", ("--image-column",), str),
    _setting("concept.strict", ("--strict",), bool),
    _setting("training.method", ("--method",), str, "Training method: full (fine-tune the UNet) or lora"),
    _setting("training.steps", ("--steps",), int, "Training steps"),
    _setting("training.learning_rate", ("--learning-rate", "--lr"), float, "Learning rate, 2e-6 for full, 1e-4 for LoRA unless given"),
    _setting("training.resolution", ("--resolution",), str, "Training resolution in pixels; several, e.g. "
             "512,768,1024: the same photos in buckets at each area (multi-resolution)"),
    _setting("concept.buckets", ("--buckets",), str, "Aspect-ratio buckets: auto (about resolution² pixels each), "
             "off (centre square crop), or WIDTHxHEIGHT,... e.g. \"1024x1024,832x1216,1216x832\""),
    _setting("concept.caption_template", ("--caption-template",), str, "Each image's own caption (a .txt beside it, "
             "metadata.jsonl or a dataset's text column) through a template, e.g. "
             "\"a photo of {identifier} {class_noun}, {caption}\""),
    _setting("concept.prepend_identifier", ("--prepend-identifier",), bool, "Put the identifier (the trigger word) in "
             "front of captions that lack it"),
    _setting("training.caption_dropout", ("--caption-dropout",), float, "Share of steps trained on the empty caption "
             "(kohya's caption_dropout_rate)"),
    _setting("training.shuffle_caption_parts", ("--shuffle-caption-parts",), bool, "Shuffle each caption's "
             "comma-separated parts, the first kept (kohya's shuffle_caption, keep_tokens=1)"),
    _setting("training.device", ("--device",), str, "Device: auto, cpu or cuda"),
    _setting("training.memory", ("--memory",), str, "Memory profile: auto (from the free GPU memory), manual, low, medium or high"),
    _setting("training.mixed_precision", ("--mixed-precision",), str, "Mixed precision: auto, no (fp32), fp16 or bf16"),
    _setting("training.train_text_encoder", ("--train-text-encoder/--freeze-text-encoder",), bool, "Also train the text encoder"),
    _setting("training.distributed", ("--distributed",), str, "Under torchrun / accelerate launch: ddp (a whole model per GPU) or fsdp (shard the trained weights and optimizer states)"),
    _setting("training.checkpoint_every", ("--checkpoint-every",), int, "Resumable checkpoint every N steps, 0: only the final model"),
    _setting("prior.enabled", ("--prior/--no-prior",), bool, "Prior preservation with generated class images (on unless --no-prior)"),
    _setting("prior.num_class_images", ("--num-class-images",), int, "Class images for prior preservation"),
    _setting("eval.during_training", ("--fidelity-curve/--no-fidelity-curve",), bool, "Score each validation grid with DINO against the photos"),
)


def run_flag(name: str) -> Flag:
    """A run flag by its parameter name, for another command that takes the same setting (``concept prepare``'s
    ``--buckets``): declared once, so its help and its meaning cannot drift apart."""
    return next(flag for flag in RUN_FLAGS if flag.name == name)


PUSH_FLAGS: tuple[Flag, ...] = (
    _setting("publish.repo_id", ("--repo",), str, "Hub repo to push to: namespace/name"),
    _setting("publish.private", ("--private/--public",), bool, "Visibility of a new repo (public unless --private)"),
    _setting("publish.hackathon_theme", ("--hackathon",), str, "Enter the DreamBooth hackathon under this theme"),
    _setting("eval.enabled", ("--eval/--no-eval",), bool, "Evaluate (DINO, CLIP-I, CLIP-T) before pushing"),
)

# -- the flags that steer the command rather than the run ------------------------------------------------

BEFORE_FLAGS: tuple[Flag, ...] = (
    Flag("config_file", Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML config; the flags override it.", show_default=False)]),
    Flag("out", Annotated[Optional[Path], typer.Option("--out", "-o", help="Run folder (default: runs/<repo or identifier-class>).", show_default=False)]),
)
AFTER_FLAGS: tuple[Flag, ...] = (
    Flag("settings", Annotated[list[str], typer.Option(
        "--set", metavar="SECTION.KEY=VALUE", show_default=False,
        help="Any other setting of the config, e.g. --set training.snr_gamma=5 or --set sampling.seeds=[0,1] "
             "(repeatable; values are read as TOML, else as text).",
    )], default=[]),
    Flag("resume", Annotated[bool, typer.Option("--resume", help="Continue the run in the run folder from its last checkpoint.")], False),
    Flag("force", Annotated[bool, typer.Option("--force", help="With --resume: continue even though the config changed.")], False),
    Flag("dry_run", Annotated[bool, typer.Option("--dry-run", help="Validate and print the plan; load and train nothing.")], False),
    Flag("quiet", Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars (hubtools --quiet: results and errors only).")], False),
)


@dataclass
class RunFlags:
    """What a run command was given: ``values`` by parameter name, and the flags they came from."""

    values: dict[str, Any]
    flags: tuple[Flag, ...]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def given_settings(self) -> dict[str, Any]:
        """``RunConfig`` key -> value of each setting flag the user gave (a switch left off is not given)."""
        return {flag.key: self.values[flag.name] for flag in self.flags
                if flag.key is not None and self.values[flag.name] not in (None, flag.default)}

    def config(self, config_file: Path | None = None) -> RunConfig:
        """The run's config from ``--config`` (or ``config_file``), ``--set`` and the named flags."""
        return build_config(config_file or self.config_file, self.settings, self.given_settings())


def with_run_flags(*, push: bool):
    """Give a command the run flags (``push``: and those of the push), declared once here, after its own
    parameters; the command receives them as one ``flags: RunFlags`` argument."""
    shared = BEFORE_FLAGS + RUN_FLAGS + (PUSH_FLAGS if push else ()) + AFTER_FLAGS

    def decorate(command):
        own = [param for param in inspect.signature(command, eval_str=True).parameters.values() if param.name != "flags"]
        added = [inspect.Parameter(flag.name, inspect.Parameter.KEYWORD_ONLY, annotation=flag.annotation,
                                   default=flag.default) for flag in shared]

        @functools.wraps(command)
        def wrapper(**given: Any) -> Any:
            values = {flag.name: given.pop(flag.name) for flag in shared}
            return command(**given, flags=RunFlags(values, shared))

        del wrapper.__wrapped__  # typer reads the signature below, not the command's
        wrapper.__signature__ = inspect.Signature(own + added)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {param.name: param.annotation for param in own + added}
        return wrapper

    return decorate


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


@contextmanager
def resumable(run_dir: Path, resume_command: str) -> Iterator[None]:
    """Ctrl-C inside the block is one line saying where the run stopped and that ``resume_command`` goes on."""
    from hubtools import runner

    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted(runner.interrupted_message(run_dir, resume_command)) from None
