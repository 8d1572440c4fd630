"""`hubtools train-and-push` on the tiny SDXL, FLUX.1 and SD3.5 models, as a user runs it (a subprocess, default
output), against the local hub; then the card's own code snippet runs in a
fresh process: plain diffusers loads the pushed repo and draws."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest
from PIL import Image

from hubtools.resources import DEMO_CONCEPT_DIR
from test_training_support import subprocess_env

CASES = {
    # family: (tiny repo, method, files the repo must hold)
    "sdxl": ("hubtools/tiny-stable-diffusion-xl", "lora",
             {"pytorch_lora_weights.safetensors", "nlwx-sdxl.safetensors"}),
    "flux": ("hubtools/tiny-flux", "full", {"model_index.json", "transformer/diffusion_pytorch_model.safetensors"}),
    # SD3.5: the diffusers LoRA and its ComfyUI copy (per-module alphas)
    "sd3": ("hubtools/tiny-sd3", "lora", {"pytorch_lora_weights.safetensors", "nlwx-sd3.safetensors"}),
    # Z-Image: the diffusers LoRA and its ComfyUI copy (diffusion_model.* keys, per-module alphas)
    "z-image": ("hubtools/tiny-z-image", "lora", {"pytorch_lora_weights.safetensors", "nlwx-z-image.safetensors"}),
    "qwen-image": ("hubtools/tiny-qwen-image", "lora", {"pytorch_lora_weights.safetensors", "nlwx-qwen-image.safetensors"}),
    # FLUX.2 [dev]: LoRA only, the diffusers file and its copy in BFL's names; [klein]: a full fine-tune
    "flux2": ("hubtools/tiny-flux2", "lora", {"pytorch_lora_weights.safetensors", "nlwx-flux2.safetensors"}),
    "flux2-klein": ("hubtools/tiny-flux2-klein", "full",
                    {"model_index.json", "transformer/diffusion_pytorch_model.safetensors"}),
}
PIPELINES = {"sdxl": "StableDiffusionXLPipeline", "flux": "FluxPipeline", "sd3": "StableDiffusion3Pipeline",
             "qwen-image": "QwenImagePipeline", "z-image": "ZImagePipeline", "flux2": "Flux2Pipeline",
             "flux2-klein": "Flux2KleinPipeline"}

SMALL = textwrap.dedent("""
    [prior]
    generation_steps = 2

    [sampling]
    num_inference_steps = 2
    seeds = [0]
    prompts = ["a photo of {identifier} {class_noun}", "a photo of {identifier} {class_noun} on the beach"]
""")

@pytest.fixture(scope="module")
def tiny_family_repos(local_hub):
    from hubtools.tinymodel import publish_tiny_model

    return {family: publish_tiny_model(local_hub.url, local_hub.hubtools_token, family=family) for family in CASES}


@pytest.mark.slow
@pytest.mark.parametrize("family", list(CASES))
def test_train_and_push_a_family_then_load_it_with_plain_diffusers(tmp_path, local_hub, tiny_family_repos, family):
    from huggingface_hub import HfApi, ModelCard

    base, method, expected_files = CASES[family]
    assert tiny_family_repos[family] == base
    config = tmp_path / "small.toml"
    config.write_text(SMALL, encoding="utf-8")
    repo_id = f"{local_hub.user}/nlwx-{family}"
    env = subprocess_env(HF_TOKEN=local_hub.token)
    command = [sys.executable, "-m", "hubtools", "train-and-push", "--config", str(config), "--base-model", base,
               "--concept", str(DEMO_CONCEPT_DIR), "--identifier", "nlwx", "--class-noun", "dog", "--repo", repo_id,
               "--out", str(tmp_path / f"nlwx-{family}"), "--resolution", "64", "--steps", "3",
               "--lr", "1e-3", "--device", "cpu", "--num-class-images", "2", "--checkpoint-every", "0",
               # SD3.5 without --method: the family's default (LoRA) must apply to a command-line config
               *(["--method", method] if family != "sd3" else [])]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "unexpected error" not in done.stderr and "Traceback" not in done.stderr
    assert done.stdout.strip().splitlines()[-1] == f"{local_hub.url}/{repo_id}"

    files = set(HfApi().list_repo_files(repo_id))
    assert expected_files <= files, files
    card = ModelCard.load(repo_id)
    assert card.data.base_model == base
    if family == "flux":
        assert "FluxPipeline" in card.content and "torch.bfloat16" in card.content
        # the card names the sampler the grids were drawn with, not SD's DDIM
        assert "with flow-matching Euler" in card.content and "DDIM" not in card.content
    if family == "sd3":
        assert card.data.license == "apache-2.0"  # the tiny base's own card says so (SD3.5's: test_training_families)
        assert "StableDiffusion3Pipeline" in card.content and "torch.bfloat16" in card.content
        assert "with flow-matching Euler" in card.content and "DDIM" not in card.content
        # the identifier's token count in each of its three tokenizers
        assert "1 CLIP token" in card.content
        assert re.search(r"`tokenizer_2` \(CLIPTokenizer\): 1 token", card.content), card.content
        assert re.search(r"`tokenizer_3` \(T5Tokenizer\w*\): \d+ tokens?", card.content), card.content

    if family == "qwen-image":
        assert "QwenImagePipeline" in card.content and "true_cfg_scale=" in card.content
        assert "negative_prompt=' '" in card.content and "with flow-matching Euler" in card.content
        # the identifier in the model's own tokenizer (Qwen's byte-level BPE), beside hubtools' CLIP check
        assert re.search(r"`tokenizer` \(Qwen2Tokenizer\w*\): \d+ tokens?", card.content), card.content

    if family == "z-image":
        assert card.data.license == "apache-2.0"  # Z-Image's licence, and the tiny base's own card's
        assert "ZImagePipeline" in card.content and "torch.bfloat16" in card.content
        assert "max_sequence_length=512" in card.content and "with flow-matching Euler" in card.content
        # the identifier in the model's own tokenizer (a byte-level Qwen tokenizer: one token a letter)
        assert re.search(r"`tokenizer` \(Qwen2Tokenizer\w*\): 4 tokens", card.content), card.content
        assert "CLIP token" not in card.content  # Z-Image has no CLIP tokenizer
        assert "`nlwx-z-image.safetensors` is the same LoRA in ComfyUI's layout" in card.content

    if family in ("flux2", "flux2-klein"):
        assert card.data.license == "apache-2.0"  # the tiny base's own card's (the real ones: test_family_flux2)
        assert f"{PIPELINES[family]}.from_pretrained" in card.content and "torch.bfloat16" in card.content
        assert "with flow-matching Euler" in card.content and "DDIM" not in card.content
        # the identifier in the model's own tokenizer (byte-level: one token a letter)
        assert re.search(r"`tokenizer` \(\w+\): 4 tokens", card.content), card.content
    if family == "flux2":
        assert "`nlwx-flux2.safetensors`" in card.content and "ComfyUI and ai-toolkit" in card.content

    # the card's snippet, as a reader copies it, in a fresh process: plain diffusers loads the pushed repo (base +
    # load_lora_weights, or from_pretrained after a full fine-tune) and draws
    snippet = re.search(r"```python\n(.*?)```", card.content, re.S).group(1)
    ran = subprocess.run([sys.executable, "-c", snippet + "\nprint(type(pipe).__name__)"], env=env,
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert ran.returncode == 0, snippet + ran.stderr[-3000:]
    assert ran.stdout.strip() == PIPELINES[family]
    with Image.open(tmp_path / "nlwx-dog.png") as drawn:
        assert drawn.size == (64, 64)
        assert len(set(drawn.convert("L").getdata())) > 1  # a drawing, not a blank
