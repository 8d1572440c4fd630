"""The model card: metadata through ModelCardData, the Jinja body, optional parts, custom templates."""

from __future__ import annotations

import ast
import re
import shutil
import sys
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from run_builders import build_run

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from hubtools.card import render_model_card
from hubtools.config import RUN_CONFIG_FILENAME, load_run_config, save_config
from hubtools.errors import InputError
from hubtools.sample import render_samples

IMAGE_LINK = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")


def _code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory) -> Path:
    run = build_run(tmp_path_factory.mktemp("lora"), lora=True)
    render_samples(run, progress=False)
    return run


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("full")
    run = build_run(root)
    render_samples(run, progress=False)
    return run


def test_lora_card_metadata(lora_run, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_never_in_the_card")
    card = render_model_card(lora_run, repo_id="tester/card-lora")
    loaded = ModelCard.load(lora_run / "README.md")
    assert str(loaded) == str(card)
    data = loaded.data
    assert data.license == "creativeml-openrail-m"  # the local base has no card: SD 1.x's licence
    assert data.library_name == "diffusers" and data.pipeline_tag == "text-to-image"
    assert {"dreambooth", "stable-diffusion", "text-to-image", "lora"} <= set(data.tags)
    assert data.instance_prompt == "a photo of pkblz dog"
    assert data.datasets == ["tester/pkblz-dog"]
    assert data.widget == [{"text": "a photo of pkblz dog", "output": {"url": "images/widget.png"}}]
    assert data.base_model is None  # a local folder is not a Hub id: named in the body instead
    assert "hf_secret_never_in_the_card" not in (lora_run / "README.md").read_text()


def test_lora_card_body(lora_run):
    text = render_model_card(lora_run, repo_id="tester/card-lora").text
    assert "**pkblz dog**" in text and "`pkblz`" in text and "`dog`" in text
    snippet = _code_blocks(text, "python")[0]
    ast.parse(snippet)
    assert 'pipe.load_lora_weights("tester/card-lora")' in snippet
    assert 'from_pretrained("base"' in snippet  # base model first, then the LoRA; a local base by its name only
    assert str(lora_run.parent) not in (lora_run / "README.md").read_text()
    assert "num_inference_steps=2" in snippet and "DDIMScheduler" in snippet
    # grids, loss curve and concept sheet, every one a file of the run folder
    images = IMAGE_LINK.findall(text)
    assert {"images/samples_grid.png", "images/guidance_sweep.png", "images/checkpoints_grid.png",
            "images/loss_curve.png", "concept/contact_sheet.png"} <= set(images)
    for image in images:
        assert (lora_run / image).is_file(), image
    # every training and prior setting in the table
    config = load_run_config(lora_run)
    for key in list(config.training.model_dump()) + list(config.prior.model_dump()):
        assert re.search(rf"\| `(training|prior)\.{key}` \|", text), key
    # the weights with their hash, the concept set with its revision
    import hashlib

    sha = hashlib.sha256((lora_run / "pytorch_lora_weights.safetensors").read_bytes()).hexdigest()
    assert "| `pytorch_lora_weights.safetensors` |" in text and sha in text
    assert "fedcba9876543210fedcba9876543210fedcba98" in text
    assert "after step 4" in text and "Intermediate checkpoints were saved at step 2" in text
    # the exact config, reproducible from the card alone
    toml = _code_blocks(text, "toml")[0]
    run_config = tomllib.loads((lora_run / RUN_CONFIG_FILENAME).read_text())
    run_config["model"]["base_model"] = "base"  # a local folder by its name only: the card never shows a disk path
    assert tomllib.loads(toml) == run_config
    assert "hubtools train --config card-lora/hubtools.toml" in text
    assert "None" not in text


def test_full_card_uses_the_pipeline_and_the_base_models_licence(full_run):
    (full_run.parent / "base" / "README.md").write_text("---\nlicense: mit\n---\n# base\n")
    card = render_model_card(full_run, repo_id="tester/card-full")
    assert card.data.license == "mit"
    assert "lora" not in card.data.tags
    snippet = _code_blocks(card.text, "python")[0]
    assert 'StableDiffusionPipeline.from_pretrained("tester/card-full"' in snippet
    assert "load_lora_weights" not in snippet
    for weights in ["unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
                    "text_encoder/model.safetensors"]:
        assert f"| `{weights}` |" in card.text
    # a licence set in [publish] wins over the base model's
    config = load_run_config(full_run)
    config.publish.license = "openrail++"
    save_config(config, full_run / RUN_CONFIG_FILENAME)
    try:
        assert render_model_card(full_run, repo_id="tester/card-full").data.license == "openrail++"
    finally:
        config.publish.license = None
        save_config(config, full_run / RUN_CONFIG_FILENAME)


def test_minimal_run_renders_without_optional_parts(tmp_path):
    run = build_run(tmp_path, checkpoints=False, extras=False)
    (run / "train_result.json").unlink()
    card = render_model_card(run)
    loaded = ModelCard.load(run / "README.md")
    assert loaded.data.widget == [{"text": "a photo of pkblz dog"}]
    text = card.text
    assert IMAGE_LINK.findall(text) == []  # no grid, no loss curve, no contact sheet: no broken images
    assert "## Samples" not in text and "## Evaluation" not in text
    assert "No `train_result.json`" in text
    assert "YOUR_NAMESPACE/run" in text  # no repo id known yet: a placeholder the reader replaces
    assert "None" not in text and "{{" not in text
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_evaluation_results_become_model_index(full_run, tmp_path):
    from hubtools.evaluation import EvalResult, Scores

    run = tmp_path / "run"
    shutil.copytree(full_run, run)
    EvalResult(
        ours=Scores(dino=0.61, clip_i=0.78, clip_t=0.29, pres=0.5, div=0.3, n_images=16),
        baseline=Scores(dino=0.3, clip_i=0.6, clip_t=0.31, n_images=16),
        real=Scores(dino=0.77, clip_i=0.88), identifier="pkblz", class_noun="dog", prompt_source="dreambench",
        prompts=["a pkblz dog in the jungle"] * 4, n_per_prompt=4, n_class_images=4, seeds=[0, 1, 2, 3],
        dino_model="tiny-dino", clip_model="tiny-clip",
    ).save(run / "eval.json")
    card = render_model_card(run, repo_id="tester/card-full")
    loaded = ModelCard.load(run / "README.md")
    results = {r.metric_type: r.metric_value for r in loaded.data.eval_results}
    assert results["dino"] == 0.61 and results["clip-t"] == 0.29
    assert loaded.data.model_name == "card-full"
    assert "model-index:" in str(card)
    assert "| DINO | 0.61 | 0.3 | 0.77 | 0.668 | higher |" in card.text


def test_custom_template_and_template_errors(full_run, tmp_path):
    full_run = Path(shutil.copytree(full_run, tmp_path / "run"))  # the run keeps the template it is given
    template = tmp_path / "mine.md.j2"
    template.write_text("---\n{{ card_data }}\n---\n\n# {{ model_name }} by me\n\nSay `{{ instance_prompt }}`.\n")
    card = render_model_card(full_run, template=template, repo_id="tester/mine")
    assert card.text.strip() == "# mine by me\n\nSay `a photo of pkblz dog`."
    assert card.data.library_name == "diffusers"
    template.unlink()
    assert render_model_card(full_run, repo_id="tester/mine").text == card.text  # rendered again from its copy

    with pytest.raises(InputError, match="card template not found"):
        render_model_card(full_run, template=tmp_path / "missing.md.j2")
    broken = tmp_path / "broken.md.j2"
    broken.write_text("---\n{{ card_data }}\n---\n{% for x in %}\n")
    with pytest.raises(InputError, match="does not render"):
        render_model_card(full_run, template=broken)


def test_card_validates_with_the_hub_and_reads_the_hub_base_models_licence(local_hub, tiny_model_repo, tmp_path):
    from huggingface_hub import HfApi

    sha = HfApi().model_info(tiny_model_repo).sha
    run = build_run(tmp_path, base_model=tiny_model_repo, checkpoints=False, base_revision=sha)
    card = render_model_card(run, repo_id=f"{local_hub.user}/card-validate")
    assert f'revision="{sha}"' not in card.text  # a full fine-tune loads from its own repo
    assert card.data.base_model == "hubtools/tiny-stable-diffusion"
    assert card.data.license == "apache-2.0"  # from the tiny model's own card on the hub
    card.validate()  # POST /api/validate-yaml on HF_ENDPOINT

    class RawCard(ModelCard):  # sends its text as is: ModelCard itself refuses to hold broken YAML
        def __init__(self, text: str) -> None:
            self.raw = text

        def __str__(self) -> str:
            return self.raw

    with pytest.raises(ValueError, match="YAML"):
        RawCard("---\nlicense: [unclosed\n---\n# x\n").validate()


def test_fidelity_curve_is_explained_under_the_loss_curve(full_run, tmp_path):
    run = Path(shutil.copytree(full_run, tmp_path / "run"))
    assert "subject fidelity" not in render_model_card(run, repo_id="tester/fid").text
    (run / "logs" / "fidelity.jsonl").write_text('{"step": 2, "dino": 0.41}\n{"step": 4, "dino": 0.5678}\n')
    text = render_model_card(run, repo_id="tester/fid").text
    assert "measured at\n2 validation steps (0.410 at step 2,\n0.568 at step 4)" in text
    assert "`logs/fidelity.jsonl`: subject fidelity (DINO)" in text
