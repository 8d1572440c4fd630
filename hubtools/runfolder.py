"""The layout of a run folder: the one place every stage reads from and writes to.

A run folder holds everything needed to sample, card, push or resume a run, and most of it is exactly
what the Hub repo receives (the model in diffusers layout, the card, the images, the resolved config).

    RUN/hubtools.toml                    the resolved RunConfig (pushed from .hubtools/shared/: no local paths)
    RUN/concept/                         the prepared concept set (images/, metadata.jsonl, manifest.json, contact_sheet.png)
    RUN/identifier.json                  the identifier check of the run's identifier
    RUN/model_index.json, unet/, ...     full fine-tune: a diffusers pipeline folder (safetensors)
    RUN/pytorch_lora_weights.safetensors LoRA: diffusers-format LoRA weights
    RUN/train_result.json                what training did (steps, loss, timings, weight hashes, base revision)
    RUN/logs/metrics.jsonl               one JSON object per logged step; logs/tensorboard/ for TensorBoard
    RUN/logs/fidelity.jsonl              DINO fidelity at each validation step, with eval.during_training
    RUN/images/                          loss_curve.png, sample grids, validation/ grids, samples.json
    RUN/checkpoints/checkpoint-NNNNNN/   resumable training state (never pushed)
    RUN/eval.json                        evaluation results
    RUN/README.md                        the model card
    RUN/card_template.md.j2              your own card template, kept by `hubtools card --template` (never pushed)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubtools.atomic import write_text_atomic
from hubtools.config import RUN_CONFIG_FILENAME


@dataclass(frozen=True)
class RunFolder:
    root: Path

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
    def identifier_report(self) -> Path:
        return self.root / "identifier.json"

    @property
    def train_result(self) -> Path:
        return self.root / "train_result.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def metrics(self) -> Path:
        return self.logs / "metrics.jsonl"

    @property
    def fidelity(self) -> Path:
        """DINO fidelity of the validation images, one row per validation step (``eval.during_training``)."""
        return self.logs / "fidelity.jsonl"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def eval_result(self) -> Path:
        return self.root / "eval.json"

    @property
    def card(self) -> Path:
        return self.root / "README.md"

    @property
    def card_template(self) -> Path:
        return self.root / "card_template.md.j2"


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(Path(path), json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def read_json(path: Path) -> Any | None:
    """The JSON in ``path``, or None when the stage that writes it has not run."""
    path = Path(path)
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every complete row of a JSON-lines log (a line cut short by a crash is skipped); [] when absent."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
