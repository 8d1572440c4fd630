"""The evaluation stage end to end with tiny random-weight DINO / CLIP encoders and the tiny SD pipeline.

Encoders are built from configs (no download) and loaded back through ``from_pretrained`` from a folder,
and, in the hub test, from the local hub by repo id.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image

from hubtools.config import ConceptConfig, ModelConfig, RunConfig, SamplingConfig, save_config
from hubtools.errors import ConfigError
from hubtools.evaluation import (
    PAPER_REFERENCE,
    EvalConfig,
    EvalResult,
    evaluate_generator,
    evaluate_images,
    evaluate_run,
    load_clip,
    load_dino,
    load_encoders,
)
from hubtools.families import by_name
from hubtools.resources import DEMO_CONCEPT_DIR
from hubtools.runfolder import RunFolder
from hubtools.runfolder.base_model import BaseModelRecord

IMAGE_SIZE = 32


def build_tiny_encoder_folders(root: Path) -> tuple[Path, Path]:
    """Random-weight ViT (DINO-shaped) and CLIP models with their processors, saved like Hub repos."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, ViTConfig, ViTImageProcessor, ViTModel

    from hubtools.tokenizer import build_clip_tokenizer

    dino_dir, clip_dir = root / "tiny-dino", root / "tiny-clip"
    with torch.random.fork_rng():
        torch.manual_seed(0)
        vit = ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                 image_size=IMAGE_SIZE, patch_size=8), add_pooling_layer=False)
        tokenizer = build_clip_tokenizer()
        clip = CLIPModel(CLIPConfig(
            text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id),
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                               image_size=IMAGE_SIZE, patch_size=8),
            projection_dim=16,
        ))
    vit.save_pretrained(dino_dir)
    ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(dino_dir)
    clip.save_pretrained(clip_dir)
    CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                       crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(clip_dir)
    tokenizer.save_pretrained(clip_dir)
    return dino_dir, clip_dir


@pytest.fixture(scope="module")
def encoder_dirs(tmp_path_factory) -> tuple[Path, Path]:
    return build_tiny_encoder_folders(tmp_path_factory.mktemp("encoders"))


@pytest.fixture(scope="module")
def encoders(encoder_dirs):
    return load_encoders(str(encoder_dirs[0]), str(encoder_dirs[1]), "cpu")


@pytest.fixture(scope="module")
def dog_photos() -> list[Image.Image]:
    """The shipped DreamBench dog, small."""
    photos = []
    for path in sorted(DEMO_CONCEPT_DIR.glob("*.jpg")):
        with Image.open(path) as image:
            photos.append(image.convert("RGB").resize((64, 64)))
    return photos


def flat_images(n: int) -> list[Image.Image]:
    return [Image.new("RGB", (64, 64), (20 + 70 * i, 200, 40)) for i in range(n)]


def noise_images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(n)]


# -- scoring images ------------------------------------------------------------------------------------


def test_encoders_are_loaded_once_and_embed_in_batches(encoder_dirs, encoders, dog_photos):
    assert load_dino(str(encoder_dirs[0]), "cpu") is encoders.dino
    assert load_clip(str(encoder_dirs[1]), "cpu") is encoders.clip
    one_by_one = torch.cat([encoders.dino.embed_images([photo]) for photo in dog_photos])
    batched = encoders.dino.embed_images(dog_photos)
    assert batched.shape == (5, 32)
    assert torch.allclose(one_by_one, batched, atol=1e-5)
    assert encoders.clip.embed_texts(["a dog", "a pkblz dog in the snow"]).shape == (2, 16)

    # DINO is the CLS token of the last layer; CLIP the projected (not pooled-only) embeddings.
    pixels = encoders.dino.processor(images=dog_photos[:1], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        cls = encoders.dino.model(pixel_values=pixels).last_hidden_state[:, 0]
    assert torch.allclose(encoders.dino.embed_images(dog_photos[:1]), cls, atol=1e-6)
    tokens = encoders.clip.tokenizer(["a dog"], return_tensors="pt")
    with torch.no_grad():
        projected = encoders.clip.model.text_projection(encoders.clip.model.text_model(**tokens).pooler_output)
    assert torch.allclose(encoders.clip.embed_texts(["a dog"]), projected, atol=1e-6)


def test_identical_images_give_dino_and_clip_i_of_one(encoders, dog_photos):
    photo = dog_photos[0]
    scores = evaluate_images([photo], {"a pkblz dog": [photo.copy(), photo.copy()]}, encoders=encoders,
                             class_images=[photo.copy()])
    assert scores.dino == pytest.approx(1.0, abs=1e-5)
    assert scores.clip_i == pytest.approx(1.0, abs=1e-5)
    assert scores.pres == pytest.approx(1.0, abs=1e-5)  # class images identical to the subject: total drift
    assert scores.div == pytest.approx(0.0, abs=1e-5)  # two identical images: no diversity


def test_unrelated_images_score_lower(encoders, dog_photos):
    same = evaluate_images(dog_photos, {"a pkblz dog": dog_photos}, encoders=encoders)
    unrelated = evaluate_images(dog_photos, {"a pkblz dog": flat_images(4)}, encoders=encoders)
    assert unrelated.dino < same.dino and unrelated.clip_i < same.clip_i
    assert unrelated.dino < 0.999 and unrelated.clip_i < 0.999
    assert unrelated.div > 0  # four different colours


def test_scores_are_the_papers_formulas_over_the_encoders_embeddings(encoders, dog_photos):
    generated = {"a pkblz dog": dog_photos[:2], "a pkblz dog in the snow": noise_images(2)}
    scores = evaluate_images(dog_photos[2:], generated, encoders=encoders, class_images=flat_images(3))

    gen = [image for group in generated.values() for image in group]
    real_dino = F.normalize(encoders.dino.embed_images(dog_photos[2:]).double(), dim=-1)
    gen_dino = F.normalize(encoders.dino.embed_images(gen).double(), dim=-1)
    gen_clip = F.normalize(encoders.clip.embed_images(gen).double(), dim=-1)
    real_clip = F.normalize(encoders.clip.embed_images(dog_photos[2:]).double(), dim=-1)
    text = F.normalize(encoders.clip.embed_texts(list(generated)).double(), dim=-1)
    class_dino = F.normalize(encoders.dino.embed_images(flat_images(3)).double(), dim=-1)

    assert scores.dino == pytest.approx(float((gen_dino @ real_dino.T).mean()), abs=1e-6)
    assert scores.clip_i == pytest.approx(float((gen_clip @ real_clip.T).mean()), abs=1e-6)
    clip_t = [float(gen_clip[i] @ text[i // 2]) for i in range(4)]
    assert scores.clip_t == pytest.approx(sum(clip_t) / 4, abs=1e-6)
    assert scores.per_prompt[1].clip_t == pytest.approx((clip_t[2] + clip_t[3]) / 2, abs=1e-6)
    assert scores.pres == pytest.approx(float((class_dino @ real_dino.T).mean()), abs=1e-6)
    div = [1 - float(gen_dino[0] @ gen_dino[1]), 1 - float(gen_dino[2] @ gen_dino[3])]
    assert scores.div == pytest.approx(sum(div) / 2, abs=1e-6)
    assert scores.n_images == 7


# -- the stage ---------------------------------------------------------------------------------------


def make_run(root: Path, photos: list[Image.Image], base_model: str = "hubtools/tiny-stable-diffusion") -> Path:
    run = root / "run"
    (run / "concept" / "images").mkdir(parents=True)
    for index, photo in enumerate(photos):
        photo.save(run / "concept" / "images" / f"{index:04d}.png")
    config = RunConfig(
        model=ModelConfig(base_model=base_model),
        concept=ConceptConfig(identifier="pkblz", class_noun="dog"),
        sampling=SamplingConfig(num_inference_steps=2),
    ).resolve()
    save_config(config, run / "hubtools.toml")
    family = by_name("sd")  # what preflight records for the tiny model
    BaseModelRecord(repo_id=base_model, family=family.name, pipeline_class=family.pipeline_class_name,
                    trained_component=family.denoiser).write(RunFolder(run))
    return run


class RecordingGenerator:
    """An ImageGenerator that hands back fixed images and remembers what it was asked for."""

    def __init__(self, images: list[Image.Image]) -> None:
        self.images, self.calls = images, []

    def __call__(self, prompts, seeds):
        self.calls.extend(zip(prompts, seeds))
        return [self.images[seed % len(self.images)] for seed in seeds]


def test_evaluate_run_scores_ours_above_an_unrelated_baseline_and_writes_eval_json(tmp_path, encoders, dog_photos):
    run = make_run(tmp_path, dog_photos)
    ours, base = RecordingGenerator(dog_photos), RecordingGenerator(noise_images(3))
    cfg = EvalConfig(max_prompts=3, n_per_prompt=2, n_class_images=2, batch_size=3, seed=10)

    reports = []
    result = evaluate_run(run, cfg, ours=ours, baseline=base, encoders=encoders,
                          progress=lambda what, done, total: reports.append((what, done, total)))

    prompts = ["a pkblz dog in the jungle", "a pkblz dog in the snow", "a pkblz dog on the beach"]
    assert ours.calls == [(p, s) for p in prompts for s in (10, 11)] + [("a photo of a dog", 10), ("a photo of a dog", 11)]
    assert base.calls == ours.calls  # the baseline sees exactly the same prompts and seeds
    assert result.prompts == prompts and result.seeds == [10, 11]
    assert [r for r in reports if r[0] == "generating (ours)"] == [("generating (ours)", 3, 8), ("generating (ours)", 6, 8),
                                                                  ("generating (ours)", 8, 8)]
    assert result.prompt_source == "dreambench (live subjects)"
    assert result.ours.dino > result.baseline.dino
    assert result.ours.clip_i > result.baseline.clip_i
    assert result.real.dino is not None and result.real.n_images == 5
    assert result.num_inference_steps == 2  # from the run's sampling settings

    on_disk = EvalResult.load(run / "eval.json")
    assert on_disk == result
    assert json.loads((run / "eval.json").read_text())["ours"]["dino"] == pytest.approx(result.ours.dino)
    assert not (run / "images" / "eval").exists()  # no images unless asked
    assert not list(run.glob(".eval.json.*"))  # the atomic write left no temp file


def test_evaluate_run_with_a_prompt_file_and_no_baseline(tmp_path, encoders, dog_photos):
    run = make_run(tmp_path, dog_photos)
    prompt_file = tmp_path / "mine.txt"
    prompt_file.write_text("{identifier} {class_noun} on the moon\n", encoding="utf-8")
    ours = RecordingGenerator(dog_photos)
    result = evaluate_run(run, EvalConfig(prompts=str(prompt_file), n_per_prompt=1, n_class_images=0, baseline=False),
                          ours=ours, encoders=encoders)
    assert ours.calls == [("pkblz dog on the moon", 0)]
    assert result.baseline is None and result.ours.pres is None and result.ours.div is None
    assert result.to_hub_eval_results()[0].dataset_type == "custom-prompts"


@pytest.fixture(scope="module")
def tiny_pipeline_dir(tmp_path_factory) -> Path:
    from hubtools.tinymodel import build_tiny_pipeline

    path = tmp_path_factory.mktemp("tiny-sd")
    build_tiny_pipeline().save_pretrained(path, safe_serialization=True)
    return path


def copy_pipeline(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, dirs_exist_ok=True)
    return target


def test_evaluate_run_loads_the_runs_and_base_pipelines_with_fixed_seeds(tmp_path, encoders, dog_photos,
                                                                       tiny_pipeline_dir):
    run = make_run(tmp_path, dog_photos, base_model=str(tiny_pipeline_dir))
    copy_pipeline(tiny_pipeline_dir, run)  # the "trained" model: here the same weights as the base
    cfg = EvalConfig(max_prompts=2, n_per_prompt=2, n_class_images=1, device="cpu", save_images=True)

    first = evaluate_run(run, cfg, encoders=encoders)
    # Same weights, same prompts, same seeds: the run and its base model must draw the same images.
    for key in ("dino", "clip_i", "clip_t", "pres", "div"):
        assert getattr(first.ours, key) == pytest.approx(getattr(first.baseline, key), abs=1e-6), key
    saved = sorted(p.name for p in (run / "images" / "eval" / "ours").glob("*.png"))
    assert saved == ["class-00.png", "prompt00-seed0.png", "prompt00-seed1.png", "prompt01-seed0.png", "prompt01-seed1.png"]
    assert Image.open(run / "images" / "eval" / "base" / "prompt00-seed0.png").size == (64, 64)

    again = evaluate_run(run, cfg.model_copy(update={"baseline": False, "save_images": False}), encoders=encoders)
    assert again.ours.dino == pytest.approx(first.ours.dino, abs=1e-6)  # reproducible


def test_evaluate_run_outside_a_run_folder_is_a_config_error(tmp_path, encoders):
    with pytest.raises(ConfigError, match="not a hubtools run folder"):
        evaluate_run(tmp_path, EvalConfig(), encoders=encoders)


# -- card metadata -----------------------------------------------------------------------------------


def sample_result(encoders, dog_photos, tmp_path) -> EvalResult:
    run = make_run(tmp_path, dog_photos)
    return evaluate_run(run, EvalConfig(max_prompts=1, n_per_prompt=2, n_class_images=1),
                        ours=RecordingGenerator(dog_photos), baseline=RecordingGenerator(flat_images(2)),
                        encoders=encoders)


def test_model_index_round_trips_through_a_model_card(tmp_path, encoders, dog_photos):
    from huggingface_hub import ModelCard, ModelCardData

    result = sample_result(encoders, dog_photos, tmp_path)
    data = ModelCardData(model_name="pkblz-dog", eval_results=result.to_hub_eval_results(), library_name="diffusers")
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n# pkblz dog\n")
    card.save(tmp_path / "README.md")

    loaded = ModelCard.load(tmp_path / "README.md")
    values = {r.metric_type: r.metric_value for r in loaded.data.eval_results}
    assert values == {"dino": round(result.ours.dino, 4), "clip-i": round(result.ours.clip_i, 4),
                      "clip-t": round(result.ours.clip_t, 4), "pres": round(result.ours.pres, 4),
                      "div": round(result.ours.div, 4)}
    assert {r.dataset_type for r in loaded.data.eval_results} == {"google/dreambooth"}
    model_index = result.to_model_index("pkblz-dog")
    assert model_index[0]["name"] == "pkblz-dog"
    assert loaded.data.to_dict()["model-index"] == model_index


def test_model_index_passes_the_hubs_yaml_validation(tmp_path, encoders, dog_photos, local_hub):
    from huggingface_hub import ModelCard, ModelCardData

    result = sample_result(encoders, dog_photos, tmp_path)
    data = ModelCardData(model_name="pkblz-dog", eval_results=result.to_hub_eval_results())
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n# pkblz dog\n")
    card.validate()  # the local hub's /api/validate-yaml: raises on a rejected card
    # The local hub checks the YAML only; the real Hub also requires these model-index fields (hub-docs modelcard.md).
    (entry,) = yaml.safe_load(str(card).split("---")[1])["model-index"]
    assert isinstance(entry["name"], str) and entry["results"]
    for item in entry["results"]:
        assert isinstance(item["task"]["type"], str)
        assert isinstance(item["dataset"]["type"], str) and isinstance(item["dataset"]["name"], str)
        for metric in item["metrics"]:
            assert isinstance(metric["type"], str) and isinstance(metric["value"], float)


def test_comparison_rows_put_the_papers_numbers_beside_ours(tmp_path, encoders, dog_photos):
    result = sample_result(encoders, dog_photos, tmp_path)
    rows = {row.metric.key: row for row in result.comparison_rows()}
    assert rows["dino"].paper == PAPER_REFERENCE["dreambooth_stable_diffusion"]["dino"] == 0.668
    assert rows["clip_i"].paper_real == 0.885
    assert rows["dino"].paper_label.startswith("paper:")
    assert rows["pres"].metric.higher_is_better is False and rows["pres"].paper == 0.493
    assert rows["dino"].ours == result.ours.dino and rows["dino"].baseline == result.baseline.dino


# -- encoders from the Hub -------------------------------------------------------------------------------


def test_encoders_load_by_repo_id_from_the_hub(local_hub, encoder_dirs, dog_photos):
    from huggingface_hub import HfApi

    api = HfApi(endpoint=local_hub.url, token=local_hub.token)
    for folder, name in zip(encoder_dirs, ("tiny-dino-eval", "tiny-clip-eval")):
        api.create_repo(f"{local_hub.user}/{name}", exist_ok=True)
        api.upload_folder(repo_id=f"{local_hub.user}/{name}", folder_path=folder)

    from_hub = load_encoders(f"{local_hub.user}/tiny-dino-eval", f"{local_hub.user}/tiny-clip-eval", "cpu")
    from_folder = load_encoders(str(encoder_dirs[0]), str(encoder_dirs[1]), "cpu")
    assert torch.allclose(from_hub.dino.embed_images(dog_photos[:2]), from_folder.dino.embed_images(dog_photos[:2]))
    assert torch.allclose(from_hub.clip.embed_texts(["a dog"]), from_folder.clip.embed_texts(["a dog"]))

    with pytest.raises(ConfigError, match="tester/no-such-dino not found") as caught:
        load_dino(f"{local_hub.user}/no-such-dino", "cpu")
    assert local_hub.token not in str(caught.value)


# -- CLI ------------------------------------------------------------------------------------------------


def test_cli_eval_prints_the_table_and_writes_eval_json(tmp_path, encoder_dirs, dog_photos, capsys, tiny_pipeline_dir):
    from hubtools.cli.app import main

    run = make_run(tmp_path, dog_photos, base_model=str(tiny_pipeline_dir))
    copy_pipeline(tiny_pipeline_dir, run)
    code = main(["eval", str(run), "--max-prompts", "1", "--n-per-prompt", "2", "--n-class-images", "1",
                 "--steps", "2", "--device", "cpu", "--dino-model", str(encoder_dirs[0]),
                 "--clip-model", str(encoder_dirs[1])])
    out = capsys.readouterr().out
    assert code == 0, out
    for text in ("DINO", "CLIP-I", "CLIP-T", "PRES", "DIV", "base", "paper SD*", "0.668", "0.774",
                 "not measurements of this model"):
        assert text in out
    result = EvalResult.load(run / "eval.json")
    assert f"{result.ours.dino:.3f}" in out
    assert result.num_inference_steps == 2 and len(result.prompts) == 1


def test_cli_eval_user_errors_are_one_line(tmp_path, dog_photos, capsys):
    from hubtools.cli.app import main

    assert main(["eval", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "not a hubtools run folder" in err and "Traceback" not in err

    run = make_run(tmp_path, dog_photos)
    assert main(["eval", str(run), "--prompts", str(tmp_path / "missing.txt")]) == 2
    assert "prompt file not found" in capsys.readouterr().err


def test_the_rendered_model_card_carries_the_evaluation(tmp_path, encoders, dog_photos):
    from huggingface_hub import ModelCard

    from hubtools.card import render_model_card

    result = sample_result(encoders, dog_photos, tmp_path)
    render_model_card(tmp_path / "run")
    card = ModelCard.load(tmp_path / "run" / "README.md")
    values = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert values["dino"] == round(result.ours.dino, 4) and values["clip-t"] == round(result.ours.clip_t, 4)
    assert "0.668" in card.text  # the paper's number beside ours


def test_evaluate_generator_is_the_light_validation_version(encoders, dog_photos):
    ours = RecordingGenerator(dog_photos)
    scores = evaluate_generator(ours, dog_photos, ["a pkblz dog"], encoders=encoders, seeds=[0, 1],
                                class_prompt="a dog", n_class_images=1)
    assert ours.calls == [("a pkblz dog", 0), ("a pkblz dog", 1), ("a dog", 0)]
    direct = evaluate_images(dog_photos, {"a pkblz dog": dog_photos[:2]}, encoders=encoders, class_images=dog_photos[:1])
    assert scores == direct


def test_cli_eval_takes_the_runs_eval_settings_and_flags_override_only_what_is_given(
        tmp_path, encoder_dirs, dog_photos, capsys, tiny_pipeline_dir):
    """Regression (issue 27): `hubtools eval RUN` once put its own option defaults (guidance 7.5, seed 0,
    16 class images, a baseline) over the run's [eval] section."""
    from hubtools.cli.app import main
    from hubtools.config import load_run_config

    run = make_run(tmp_path, dog_photos, base_model=str(tiny_pipeline_dir))
    copy_pipeline(tiny_pipeline_dir, run)
    config = load_run_config(run)
    config.eval = config.eval.model_copy(update={
        "guidance_scale": 3.0, "seed": 5, "n_per_prompt": 1, "n_class_images": 0, "baseline": False,
        "max_prompts": 1, "batch_size": 1, "device": "cpu", "num_inference_steps": 2,
        "dino_model": str(encoder_dirs[0]), "clip_model": str(encoder_dirs[1]),
    })
    save_config(config, run / "hubtools.toml")

    assert main(["eval", str(run)]) == 0, capsys.readouterr().err
    result = EvalResult.load(run / "eval.json")
    assert (result.guidance_scale, result.seeds, result.n_class_images) == (3.0, [5], 0)
    assert result.baseline is None

    assert main(["eval", str(run), "--guidance", "2"]) == 0, capsys.readouterr().err
    result = EvalResult.load(run / "eval.json")
    assert (result.guidance_scale, result.seeds, result.n_class_images) == (2.0, [5], 0)
    assert result.baseline is None


def test_the_batches_drawn_in_shares_assemble_into_what_one_drawer_draws():
    """What several processes do (each draws every N-th batch; the main one assembles them): the same images,
    in the same places, as drawing every batch at once, also when the shares are uneven."""
    from hubtools.evaluation.evaluate import (
        assemble_generations,
        draw_batches,
        eval_jobs,
        generate_eval_images,
    )

    def generate(prompts, seeds):
        return [Image.new("RGB", (8, 8), (len(prompt) * 7 % 256, seed * 40 % 256, 0))
                for prompt, seed in zip(prompts, seeds)]

    prompts, seeds = ["a nlwx dog", "a nlwx dog in the snow", "a nlwx dog on a beach"], [0, 1]
    whole = generate_eval_images(generate, prompts, seeds, "a dog", 3, batch_size=4)
    jobs = eval_jobs(prompts, seeds, "a dog", 3)
    assert len(jobs) == 9  # 3 batches of 4, 4 and 1
    shares = [draw_batches(generate, jobs, 4, [n for n in range(3) if n % 2 == rank]) for rank in (0, 1)]
    assert [sorted(share) for share in shares] == [[0, 2], [1]]
    split = assemble_generations(prompts, seeds, {n: images for share in shares for n, images in share.items()})
    assert split.prompts == whole.prompts
    assert [[image.tobytes() for image in group] for group in split.images] == \
        [[image.tobytes() for image in group] for group in whole.images]
    assert [image.tobytes() for image in split.class_images] == [image.tobytes() for image in whole.class_images]
    assert [image.getpixel((0, 0))[1] for image in whole.class_images] == [0, 40, 80]  # seeds 0, 1, 2
