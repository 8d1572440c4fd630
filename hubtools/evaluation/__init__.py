"""Evaluation like the DreamBooth paper's: DINO, CLIP-I, CLIP-T, PRES and DIV for a run and its base model."""

from hubtools.config import DEFAULT_CLIP_MODEL, DEFAULT_DINO_MODEL, EvalConfig
from hubtools.evaluation.encoders import (
    ClipEncoder,
    DinoEncoder,
    Encoders,
    load_clip,
    load_dino,
    load_encoders,
)
from hubtools.evaluation.prompts import PromptSet, dreambench_prompts, load_prompts, parse_dreambench
from hubtools.evaluation.result import METRICS, PAPER_REFERENCE, ComparisonRow, EvalResult, MetricInfo, Scores
from hubtools.evaluation.evaluate import (
    Generations,
    ImageGenerator,
    evaluate_generator,
    evaluate_images,
    evaluate_run,
    generate_eval_images,
    pipeline_generator,
    score_generations,
)

__all__ = [
    "DEFAULT_CLIP_MODEL", "DEFAULT_DINO_MODEL", "METRICS", "PAPER_REFERENCE", "ClipEncoder", "ComparisonRow",
    "DinoEncoder", "Encoders", "EvalConfig", "EvalResult", "Generations", "ImageGenerator", "MetricInfo",
    "PromptSet", "Scores", "dreambench_prompts", "evaluate_generator", "evaluate_images", "evaluate_run", "generate_eval_images",
    "load_clip", "load_dino", "load_encoders", "load_prompts", "parse_dreambench", "pipeline_generator",
    "score_generations",
]
