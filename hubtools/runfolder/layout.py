"""Every path of a run folder, and which of them a push publishes.

    RUN/hubtools.toml                    the resolved RunConfig (pushed from .hubtools/shared/: no local paths)
    RUN/concept/                         the prepared concept set (images/, metadata.jsonl, manifest.json, contact_sheet.png)
    RUN/identifier.json                  the identifier check of the run's identifier
    RUN/model_index.json, unet/, ...     full fine-tune: a diffusers pipeline folder (safetensors)
    RUN/pytorch_lora_weights.safetensors LoRA: diffusers-format LoRA weights
    RUN/train_result.json                what training did (steps, loss, timings, weight hashes, base revision)
    RUN/logs/metrics.jsonl               one JSON object per logged step; logs/tensorboard/ for TensorBoard
    RUN/logs/fidelity.jsonl              DINO fidelity at each validation step, with eval.during_training
    RUN/images/                          loss_curve.png, sample grids, widget.png, validation/ grids, samples.json
    RUN/checkpoints/checkpoint-NNNNNN/   resumable training state (never pushed; a step-N branch gets its weights)
    RUN/eval.json                        evaluation results
    RUN/README.md                        the model card
    RUN/card_template.md.j2              your own card template, kept by `hubtools card --template` (never pushed)
    RUN/.hubtools/shared/                the published copies of the config and JSON records (local paths cut)
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path

from hubtools.config import RUN_CONFIG_FILENAME
from hubtools.runfolder.jsonio import read_json

LORA_WEIGHTS_FILENAME = "pytorch_lora_weights.safetensors"
MODEL_INDEX_FILENAME = "model_index.json"
CHECKPOINT_STATE_FILENAME = "hubtools_state.json"  # written last: a checkpoint without it is incomplete
CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")

# Images a stage writes under RUN/images/ (paths relative to the run folder, as the card and the repo name them)
SAMPLES_GRID = "samples_grid.png"
GUIDANCE_SWEEP = "guidance_sweep.png"
CHECKPOINTS_GRID = "checkpoints_grid.png"
WIDGET_IMAGE = "widget.png"
SAMPLES_JSON = "samples.json"
LOSS_CURVE = "loss_curve.png"


BASE_MODEL_FILENAME = "base_model.json"


def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step:06d}"


@dataclass(frozen=True)
class RunFolder:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / RUN_CONFIG_FILENAME

    @property
    def shared(self) -> Path:
        """Where the published copies of the config and JSON records go: local paths cut to their last part."""
        return self.root / ".hubtools" / "shared"

    @property
    def concept(self) -> Path:
        return self.root / "concept"

    @property
    def concept_manifest(self) -> Path:
        return self.concept / "manifest.json"

    @property
    def contact_sheet(self) -> Path:
        return self.concept / "contact_sheet.png"

    @property
    def identifier_report(self) -> Path:
        return self.root / "identifier.json"

    @property
    def base_model(self) -> Path:
        """The base model resolved once, before training (``runfolder.base_model.BaseModelRecord``)."""
        return self.root / BASE_MODEL_FILENAME

    @property
    def train_result(self) -> Path:
        return self.root / "train_result.json"

    @property
    def model_index(self) -> Path:
        return self.root / MODEL_INDEX_FILENAME

    @property
    def lora_weights(self) -> Path:
        return self.root / LORA_WEIGHTS_FILENAME

    @property
    def is_lora(self) -> bool:
        """A LoRA run: its weights are one file over the base model (a full fine-tune has model_index.json)."""
        return self.lora_weights.is_file()

    @property
    def has_model(self) -> bool:
        return self.model_index.is_file() or self.is_lora

    def require_trained_model(self) -> None:
        """For the stages after training (card, push, sample, eval): a run set up but not trained (stopped before
        its weights were saved) is one line naming the command that trains it in this folder."""
        from hubtools.errors import ConfigError

        if self.config.is_file() and not self.has_model:
            raise ConfigError(f"run {self.root} has no trained model yet: `hubtools train {self.root} --resume` "
                              "trains it")

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def metrics(self) -> Path:
        return self.logs / "metrics.jsonl"

    @property
    def tensorboard(self) -> Path:
        return self.logs / "tensorboard"

    @property
    def fidelity(self) -> Path:
        """DINO fidelity of the validation images, one row per validation step (``eval.during_training``)."""
        return self.logs / "fidelity.jsonl"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def loss_curve(self) -> Path:
        return self.images / LOSS_CURVE

    @property
    def samples_json(self) -> Path:
        return self.images / SAMPLES_JSON

    @property
    def widget_image(self) -> Path:
        return self.images / WIDGET_IMAGE

    @property
    def validation_images(self) -> Path:
        return self.images / "validation"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / checkpoint_name(step)

    def list_checkpoints(self) -> list[tuple[int, Path]]:
        return list_checkpoints(self.checkpoints)

    @property
    def eval_result(self) -> Path:
        return self.root / "eval.json"

    @property
    def card(self) -> Path:
        return self.root / "README.md"

    @property
    def card_template(self) -> Path:
        return self.root / "card_template.md.j2"

    def relative(self, path: Path) -> str:
        """``path`` as the card and the repo name it: relative to the run folder, with forward slashes."""
        return Path(path).relative_to(self.root).as_posix()


def list_checkpoints(checkpoints_dir: Path) -> list[tuple[int, Path]]:
    """``(step, folder)`` of every complete checkpoint, oldest first (an interrupted save is not listed)."""
    checkpoints_dir = Path(checkpoints_dir)
    if not checkpoints_dir.is_dir():
        return []
    found = []
    for path in checkpoints_dir.iterdir():
        match = CHECKPOINT_DIR.match(path.name)
        if match and (path / CHECKPOINT_STATE_FILENAME).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


# -- what a push publishes ---------------------------------------------------------------------------------

# Run-folder files pushed beside the model (relative paths); RUN/images/ goes with its images and samples.json.
RUN_FILES = ["README.md", RUN_CONFIG_FILENAME, "train_result.json", "eval.json", "logs/metrics.jsonl",
             "logs/fidelity.jsonl", "concept/contact_sheet.png"]
PUBLISHED_FOLDERS = ["images"]
PUBLISHED_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}
# JSON records that can name local paths (base model folder, resumed checkpoint, class images): pushed scrubbed.
SCRUBBED_JSON = ["train_result.json", "eval.json", f"images/{SAMPLES_JSON}"]
# Remote paths this tool manages: a file there that the run no longer has is stale and is deleted.
# Anything else in the repo (a file a person added by hand) is left alone.
MANAGED_PATTERNS = ["README.md", RUN_CONFIG_FILENAME, "train_result.json", "eval.json", "logs/*", "images/*",
                    "concept/*", MODEL_INDEX_FILENAME, LORA_WEIGHTS_FILENAME, "unet/*", "vae/*", "text_encoder/*",
                    "tokenizer/*", "scheduler/*", "safety_checker/*", "feature_extractor/*"]
# What a pushed path is for, as the card lists it; folders end in "/".
FILE_ROLES = {
    MODEL_INDEX_FILENAME: "the pipeline's index; `unet/`, `vae/`, `text_encoder/`, `tokenizer/`, `scheduler/` hold its parts",
    LORA_WEIGHTS_FILENAME: "the LoRA weights",
    RUN_CONFIG_FILENAME: "the resolved config of the run",
    "train_result.json": "what training did: steps, loss, timings, weight hashes, base revision",
    "logs/metrics.jsonl": "loss and learning rate, step by step",
    "logs/fidelity.jsonl": "subject fidelity (DINO) of the validation images at each validation step",
    "images/": "sample grids (`samples.json` describes every cell), loss curve, validation grids",
    "eval.json": "evaluation scores",
    "concept/contact_sheet.png": "the training photos at a glance",
}


def is_managed(path_in_repo: str) -> bool:
    return any(fnmatch.fnmatch(path_in_repo, pattern) for pattern in MANAGED_PATTERNS)


def published_files(run: RunFolder) -> dict[str, Path]:
    """``path in repo -> local file`` for the run's main branch.

    ``hubtools.toml`` and the JSON records are pushed from their shareable copies under ``RUN/.hubtools/shared/``
    (local paths cut to their last part), which ``publish.write_shared_copies`` writes before a push.
    """
    files: dict[str, Path] = {}
    if run.model_index.is_file():
        files[MODEL_INDEX_FILENAME] = run.model_index
        index = read_json(run.model_index) or {}
        # Only the pipeline's components (unet/, vae/, ...), never whatever else sits in the run folder.
        for component, spec in index.items():
            if component.startswith("_") or not isinstance(spec, list) or spec[0] is None:
                continue
            files.update(folder_files(run.root, component))
    elif run.is_lora:
        files[LORA_WEIGHTS_FILENAME] = run.lora_weights
        # the same LoRA in the kohya layout (AUTOMATIC1111, ComfyUI), named after the model by training
        for kohya in sorted(run.root.glob("*.safetensors")):
            files.setdefault(kohya.name, kohya)
    for name in RUN_FILES:
        if (run.root / name).is_file():
            files[name] = run.root / name
    for folder in PUBLISHED_FOLDERS:
        files.update({path: local for path, local in folder_files(run.root, folder).items()
                      if local.suffix.lower() in PUBLISHED_IMAGE_SUFFIXES or local.name == SAMPLES_JSON})
    for name in [RUN_CONFIG_FILENAME, *SCRUBBED_JSON]:
        if name in files:
            files[name] = run.shared / name
    return dict(sorted(files.items()))


def checkpoint_files(run: RunFolder, checkpoint: Path) -> dict[str, Path]:
    """The weights of one checkpoint, at the paths the final model has in the repo (no optimizer state)."""
    if run.is_lora:
        weights = checkpoint / LORA_WEIGHTS_FILENAME
        return {LORA_WEIGHTS_FILENAME: weights} if weights.is_file() else {}
    files: dict[str, Path] = {}
    for component in ("unet", "text_encoder"):
        files.update({path: local for path, local in folder_files(checkpoint, component).items()
                      if local.suffix in (".safetensors", ".json")})
    return files


def folder_files(root: Path, name: str) -> dict[str, Path]:
    """Every file under ``root/name`` by its path relative to ``root``, hidden and ``.tmp`` files left out."""
    folder = root / name
    if not folder.is_dir():
        return {}
    return {p.relative_to(root).as_posix(): p for p in sorted(folder.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
            and not p.name.endswith(".tmp")}
