"""The typed records stages leave in the run folder, each with one ``read`` and one ``write``.

A stage writes its record through these classes and every later stage reads it back through them, so no
module reads another stage's JSON by string key. Records the concept and evaluation stages own keep their
own types (``concepts.manifest.PreparedConcept``, ``evaluation.result.EvalResult``); their readers live here
so that the card reaches every record the same way.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import hubtools
from hubtools.runfolder.jsonio import read_json, write_json_atomic
from hubtools.runfolder.layout import RunFolder

_Record = TypeVar("_Record")


def _from_dict(cls: type[_Record], data: dict[str, Any]) -> _Record:
    """``cls`` from a record written by this or an older hubtools: unknown keys are ignored."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{key: value for key, value in data.items() if key in names})


@dataclass
class WeightFile:
    """One file of the trained weights, as training wrote it."""

    path: str  # relative to the run folder
    sha256: str
    bytes: int


@dataclass
class ClassImagesUsed:
    """The prior-preservation images a training used."""

    count: int
    cache_key: str
    source: str  # "generated" | "cache" | "folder:<path>" | "hub:<dataset id>"
    generated: bool  # True when that training generated them


@dataclass
class TrainResult:
    """``RUN/train_result.json``: what training did."""

    method: str
    steps_done: int
    steps_total: int
    final_loss: float | None
    losses_tail: list[float]
    wall_seconds: float
    steps_per_second: float | None
    peak_memory_bytes: int | None
    device: str
    mixed_precision: str
    memory_profile: str
    memory_profile_reason: str
    base_model: str
    base_revision: str | None
    weight_files: list[WeightFile]
    checkpoints: list[int]
    class_images: ClassImagesUsed | None
    num_instance_images: int
    resumed_from: int | None
    num_processes: int = 1
    hubtools_version: str = hubtools.__version__
    settings: dict[str, Any] = field(default_factory=dict)  # what actually ran: lr, batch, 8-bit, checkpointing

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainResult:
        data = dict(data)
        data["weight_files"] = [_from_dict(WeightFile, w) for w in data.get("weight_files") or []]
        if data.get("class_images") is not None:
            data["class_images"] = _from_dict(ClassImagesUsed, data["class_images"])
        return _from_dict(cls, data)

    def write(self, run: RunFolder) -> None:
        write_json_atomic(run.train_result, self.to_dict())

    @classmethod
    def read(cls, run: RunFolder) -> TrainResult | None:
        """None when the run has not finished training."""
        data = read_json(run.train_result)
        return None if data is None else cls.from_dict(data)


@dataclass
class SampleCell:
    """One image of a sample grid: what drew it and where it sits."""

    prompt: str
    seed: int
    guidance: float
    step: int
    grid: str = ""  # "samples" | "guidance_sweep" | "checkpoints"
    file: str = ""  # the grid's path relative to the run folder
    row: int = 0
    column: int = 0
    box: list[int] = field(default_factory=list)  # left, top, right, bottom in the grid's pixels
    size: list[int] | None = None  # [width, height] drawn at, where a training bucket's (else the model's square)


@dataclass
class WidgetSample:
    """The image the card's widget shows: the instance prompt at the first seed and guidance."""

    prompt: str
    seed: int
    guidance: float
    file: str
    size: list[int] | None = None  # [width, height]: the most common training bucket; None: the square


@dataclass
class SamplesRecord:
    """``RUN/images/samples.json``: the settings of the sample grids and every cell in them."""

    scheduler: str
    num_inference_steps: int
    prompts: list[str]
    seeds: list[int]
    guidance_scales: list[float]
    step: int
    grids: dict[str, str]  # kind -> file relative to the run folder
    widget: WidgetSample | None
    cells: list[SampleCell] = field(default_factory=list)

    def write(self, run: RunFolder) -> None:
        write_json_atomic(run.samples_json, asdict(self))

    @classmethod
    def read(cls, run: RunFolder) -> SamplesRecord | None:
        data = read_json(run.samples_json)
        if not data:
            return None
        data = dict(data)
        data["cells"] = [_from_dict(SampleCell, c) for c in data.get("cells") or []]
        data["widget"] = _from_dict(WidgetSample, data["widget"]) if data.get("widget") else None
        return _from_dict(cls, data)


@dataclass
class IdentifierRecord:
    """``RUN/identifier.json``: how the run's identifier tokenizes and what is doubtful about it.

    Written from ``identifier.IdentifierReport.to_dict()`` (keys it has beyond these are not kept).
    """

    text: str
    tokens: list[str]  # the pieces as they read (``pk``, ``bl``, ``z``)
    num_tokens: int
    single_token: bool
    warnings: list[str] = field(default_factory=list)
    vocab_tokens: list[str] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    byte_level_of: str | None = None
    suggestion: str | None = None
    is_word: bool = False
    known_bad: str | None = None
    rarity: float | None = None
    prior_strength: float | None = None
    other_tokenizers: list[dict[str, Any]] | None = None  # the split in the base model's further tokenizers

    @property
    def ok(self) -> bool:
        return not self.warnings

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IdentifierRecord:
        return _from_dict(cls, data)

    def write(self, run: RunFolder) -> None:
        write_json_atomic(run.identifier_report, {**asdict(self), "ok": self.ok})

    @classmethod
    def read(cls, run: RunFolder) -> IdentifierRecord | None:
        """None when the run has no identifier."""
        data = read_json(run.identifier_report)
        return None if data is None else cls.from_dict(data)


def read_concept_manifest(run: RunFolder):
    """The prepared concept set of the run (``PreparedConcept``), or None before ``prepare``."""
    from hubtools.concepts.manifest import load_prepared_concept

    if not run.concept_manifest.is_file():
        return None
    return load_prepared_concept(run.concept)


def read_eval_result(run: RunFolder):
    """``RUN/eval.json`` (``EvalResult``), or None before ``evaluate``."""
    from hubtools.evaluation.result import EvalResult

    return EvalResult.load(run.eval_result) if run.eval_result.is_file() else None
