"""What an evaluation measured (``eval.json``), and how it is shown: terminal table, card, ``model-index``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field

from hubtools.errors import InputError

EVAL_SCHEMA_VERSION = 1

# The DreamBooth paper's own numbers (Ruiz et al. 2022, arXiv:2208.12242), averaged over DreamBench's 30
# subjects with the real DINO ViT-S/16 and CLIP ViT-B/32. Shown beside ours for orientation, always labelled
# as the paper's: they are not measurements of this model.
PAPER_REFERENCE = {
    "source": "DreamBooth paper (Ruiz et al. 2022, arXiv:2208.12242)",
    "real_images": {"label": "paper: real images (Table 1)", "dino": 0.774, "clip_i": 0.885},
    "dreambooth_stable_diffusion": {
        "label": "paper: DreamBooth, Stable Diffusion (Table 1)", "dino": 0.668, "clip_i": 0.803, "clip_t": 0.305,
    },
    "dreambooth_imagen": {
        "label": "paper: DreamBooth, Imagen (Table 1)", "dino": 0.696, "clip_i": 0.812, "clip_t": 0.306,
    },
    # Table 3 is measured on Imagen only; its DIV uses LPIPS, so only PRES is comparable with ours.
    "prior_preservation_imagen": {
        "label": "paper: DreamBooth, Imagen, with prior preservation (Table 3)", "pres": 0.493, "div": 0.391,
    },
    "no_prior_preservation_imagen": {
        "label": "paper: DreamBooth, Imagen, without prior preservation (Table 3)", "pres": 0.664, "div": 0.371,
    },
}


@dataclass(frozen=True)
class MetricInfo:
    key: str
    name: str
    description: str
    higher_is_better: bool


METRICS = [
    MetricInfo("dino", "DINO", "subject fidelity: DINO ViT-S/16 similarity of generated to real images", True),
    MetricInfo("clip_i", "CLIP-I", "subject fidelity: CLIP image similarity of generated to real images", True),
    MetricInfo("clip_t", "CLIP-T", "prompt fidelity: CLIP similarity of each image to its prompt", True),
    MetricInfo("pres", "PRES", "language drift: DINO similarity of class-prompt images to the real subject", False),
    MetricInfo("div", "DIV", "diversity: 1 - DINO similarity among same-prompt images (paper: LPIPS)", True),
]


class PromptScore(BaseModel):
    prompt: str
    dino: float
    clip_i: float
    clip_t: float
    div: float | None = None


class Scores(BaseModel):
    dino: float | None = None
    clip_i: float | None = None
    clip_t: float | None = None
    pres: float | None = None
    div: float | None = None
    n_images: int = 0
    per_prompt: list[PromptScore] = Field(default_factory=list)


class EvalResult(BaseModel):
    """``eval.json``: the scores of the run's model, of its base model, and of the real images themselves."""

    schema_version: int = EVAL_SCHEMA_VERSION
    ours: Scores
    baseline: Scores | None = None  # the base model, same prompts and seeds; None with --no-baseline
    real: Scores  # DINO / CLIP-I among the real photos: the ceiling a perfect copy would reach
    identifier: str
    class_noun: str
    base_model: str | None = None
    prompt_source: str
    prompts: list[str]
    class_prompt: str | None = None
    n_per_prompt: int
    n_class_images: int
    seeds: list[int]
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    dino_model: str
    clip_model: str
    device: str | None = None
    seconds: float | None = None
    created_at: str | None = None

    # -- files -----------------------------------------------------------------------------------

    def save(self, path: Path) -> Path:
        from hubtools.atomic import write_json_atomic

        write_json_atomic(Path(path), self.model_dump(mode="json"))
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> EvalResult:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"no evaluation in {path.parent}: run `hubtools eval {path.parent}` first")
        try:
            return cls.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as error:
            raise InputError(f"{path} is not a hubtools eval.json ({type(error).__name__}): rerun `hubtools eval`") from None

    # -- presentation ---------------------------------------------------------------------------

    def comparison_rows(self) -> list[ComparisonRow]:
        """One row per metric: ours, base model, real photos, and the paper's numbers (labelled)."""
        paper_sd = PAPER_REFERENCE["dreambooth_stable_diffusion"]
        paper_real = PAPER_REFERENCE["real_images"]
        paper_prior = PAPER_REFERENCE["prior_preservation_imagen"]
        rows = []
        for metric in METRICS:
            paper_value = paper_sd.get(metric.key)
            paper_label = paper_sd["label"]
            if metric.key == "pres":
                paper_value, paper_label = paper_prior["pres"], paper_prior["label"]
            rows.append(ComparisonRow(
                metric=metric,
                ours=getattr(self.ours, metric.key),
                baseline=getattr(self.baseline, metric.key) if self.baseline else None,
                real=getattr(self.real, metric.key),
                paper=paper_value,
                paper_label=paper_label if paper_value is not None else None,
                paper_real=paper_real.get(metric.key),
            ))
        return rows

    def to_hub_eval_results(self, dataset_name: str | None = None) -> list:
        """``huggingface_hub.EvalResult`` objects for ``ModelCardData(eval_results=..., model_name=...)``."""
        from huggingface_hub import EvalResult as HubEvalResult

        on_dreambench = self.prompt_source.startswith("dreambench")
        results = []
        for metric in METRICS:
            value = getattr(self.ours, metric.key)
            if value is None:
                continue
            results.append(HubEvalResult(
                task_type="text-to-image",
                task_name="Subject-driven generation",
                dataset_type="google/dreambooth" if on_dreambench else "custom-prompts",
                dataset_name=dataset_name or (f"DreamBench prompts ({self.class_noun})" if on_dreambench
                                              else f"Custom prompts ({self.class_noun})"),
                metric_type=metric.key.replace("_", "-"),
                metric_name=metric.name,
                metric_value=round(value, 4),
                metric_config=f"{self.n_per_prompt} images per prompt, {len(self.prompts)} prompts",
            ))
        return results

    def to_model_index(self, model_name: str) -> list[dict]:
        """The card's ``model-index`` metadata as the Hub reads it (a list with one entry for this model)."""
        from huggingface_hub.repocard_data import eval_results_to_model_index

        return eval_results_to_model_index(model_name, self.to_hub_eval_results())


@dataclass(frozen=True)
class ComparisonRow:
    metric: MetricInfo
    ours: float | None
    baseline: float | None
    real: float | None  # measured on this subject's photos
    paper: float | None
    paper_label: str | None
    paper_real: float | None  # the paper's real-image numbers
