"""Model families: detection from model_index.json, the tiny random models, and each family's math checked
against what its own diffusers pipeline computes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hubtools.errors import ConfigError
from hubtools.families import FAMILIES, Flux, StableDiffusion, StableDiffusionXL, by_name, detect, of_pipeline

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPT = "a photo of nlwx dog on the beach"


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory):
    """Each family's tiny model saved once as a pipeline folder."""
    root = tmp_path_factory.mktemp("families")
    folders = {}
    for family in FAMILIES:
        folders[family.name] = root / family.name
        family.build_tiny_pipeline().save_pretrained(folders[family.name], safe_serialization=True)
    return folders


@pytest.fixture(scope="module")
def pipelines(tiny_folders):
    from diffusers import DiffusionPipeline

    loaded = {}
    for name, folder in tiny_folders.items():
        pipe = DiffusionPipeline.from_pretrained(folder)
        pipe.set_progress_bar_config(disable=True)
        loaded[name] = pipe
    return loaded


@pytest.mark.parametrize(("class_name", "family"), [
    ("StableDiffusionPipeline", StableDiffusion), ("StableDiffusionXLPipeline", StableDiffusionXL),
    ("FluxPipeline", Flux),
])
def test_the_family_is_read_from_the_pipeline_class(class_name, family):
    assert isinstance(detect({"_class_name": class_name, "_diffusers_version": "0.30.0"}), family)


def test_an_unsupported_pipeline_class_names_the_supported_families():
    with pytest.raises(ConfigError) as error:
        detect({"_class_name": "AuraFlowPipeline"}, source="base model x/auraflow")
    message = str(error.value)
    assert "x/auraflow is a AuraFlowPipeline" in message
    for family in FAMILIES:
        assert family.pipeline_class_name in message
    with pytest.raises(ConfigError, match="unknown model family 'auraflow'"):
        by_name("auraflow")


def test_tiny_models_load_with_plain_diffusers_and_draw(tiny_folders, pipelines):
    """Each tiny model is what DiffusionPipeline.from_pretrained loads as its family's class, and draws."""
    for family in FAMILIES:
        index = json.loads((tiny_folders[family.name] / "model_index.json").read_text())
        pipe = pipelines[family.name]
        assert index["_class_name"] == family.pipeline_class_name and of_pipeline(pipe) is family
        config = dict(pipe.components[family.denoiser].config)
        defaults = family.sampling_defaults(config)
        image = pipe(prompt=PROMPT, num_inference_steps=2, guidance_scale=defaults.guidance_scale, height=64, width=64,
                     generator=torch.Generator().manual_seed(0), output_type="np", **defaults.extra).images[0]
        assert image.shape == (64, 64, 3) and np.isfinite(image).all() and image.std() > 0.01
        parameters = sum(p.numel() for p in pipe.components.values() if isinstance(p, torch.nn.Module)
                         for p in p.parameters())
        assert 1e6 < parameters < 6e6, (family.name, parameters)


def test_tiny_models_are_deterministic(tiny_folders):
    from safetensors.torch import load_file

    for family in [family for family in FAMILIES if family.name != "sd"]:
        again = family.build_tiny_pipeline().components[family.denoiser].state_dict()
        saved = load_file(tiny_folders[family.name] / family.denoiser / "diffusion_pytorch_model.safetensors")
        assert saved.keys() == again.keys() and all(torch.equal(saved[k], again[k]) for k in saved)


def test_the_offline_t5_tokenizer_round_trips(tmp_path):
    from transformers import AutoTokenizer

    from hubtools.tokenizer import build_t5_tokenizer

    tokenizer = build_t5_tokenizer()
    ids = tokenizer(PROMPT).input_ids
    assert ids[-1] == tokenizer.eos_token_id == 1 and tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == PROMPT
    tokenizer.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path)(PROMPT).input_ids == ids


def test_sdxl_prompt_conditioning_is_what_its_pipeline_computes(pipelines):
    pipe, family = pipelines["sdxl"], by_name("sdxl")
    ids = family.tokenize(pipe.components, [PROMPT], torch.device("cpu"))
    with torch.no_grad():
        conditioning = family.encode_prompts({n: pipe.components[n] for n in family.text_encoders}, ids)
        prompt_embeds, _, pooled, _ = pipe.encode_prompt(PROMPT, do_classifier_free_guidance=False)
    assert torch.equal(conditioning["prompt_embeds"], prompt_embeds)
    assert torch.equal(conditioning["pooled_prompt_embeds"], pooled)
    latents = torch.zeros(2, 4, 8, 8)
    assert family.time_ids(latents, torch.float32).tolist() == [[64, 64, 0, 0, 64, 64]] * 2


def test_flux_prompt_conditioning_is_what_its_pipeline_computes(pipelines):
    pipe, family = pipelines["flux"], by_name("flux")
    ids = family.tokenize(pipe.components, [PROMPT], torch.device("cpu"))
    assert ids["text_encoder_2"].shape == (1, 512)  # dev's max_sequence_length
    with torch.no_grad():
        conditioning = family.encode_prompts({n: pipe.components[n] for n in family.text_encoders}, ids)
        prompt_embeds, pooled, _ = pipe.encode_prompt(PROMPT, prompt_2=None, max_sequence_length=512)
    assert torch.equal(conditioning["prompt_embeds"], prompt_embeds)
    assert torch.equal(conditioning["pooled_prompt_embeds"], pooled)


def test_flux_flow_matching_noise_target_and_shift(pipelines):
    from types import SimpleNamespace

    pipe, family = pipelines["flux"], by_name("flux")
    scheduler = family.training_scheduler(pipe.scheduler.config)
    latents = torch.randn(3, 16, 8, 8, generator=torch.Generator().manual_seed(1))
    training = SimpleNamespace(offset_noise=0.0, snr_gamma=None)
    first = family.noisy_input_and_target(scheduler, latents, torch.Generator().manual_seed(5), training,
                                          torch.device("cpu"))
    again = family.noisy_input_and_target(scheduler, latents, torch.Generator().manual_seed(5), training,
                                          torch.device("cpu"))
    assert torch.equal(first.model_input, again.model_input) and torch.equal(first.timesteps, again.timesteps)
    sigmas = first.timesteps / 1000
    assert ((sigmas > 0) & (sigmas < 1)).all()
    noise = first.target + latents  # target = noise - latents
    expected = (1 - sigmas.view(-1, 1, 1, 1)) * latents + sigmas.view(-1, 1, 1, 1) * noise
    assert torch.allclose(first.model_input, expected, atol=1e-5)
    assert first.weights.shape == (3,)
    # the shift: dynamic (dev) moves mid-schedule times towards noise as images grow; fixed shift 1 is none
    u = torch.tensor([0.25, 0.5, 0.75])
    small = family.shift_sigmas(u, scheduler.config, image_tokens=256)
    large = family.shift_sigmas(u, scheduler.config, image_tokens=4096)
    assert (large > small).all() and (small >= u).all()
    assert torch.equal(family.shift_sigmas(u, {"use_dynamic_shifting": False, "shift": 1.0}, image_tokens=16), u)


def test_flux_prediction_round_trips_the_latent_layout(pipelines):
    pipe, family = pipelines["flux"], by_name("flux")
    ids = family.tokenize(pipe.components, [PROMPT, PROMPT], torch.device("cpu"))
    with torch.no_grad():
        conditioning = family.encode_prompts({n: pipe.components[n] for n in family.text_encoders}, ids)
        latents = torch.randn(2, 16, 8, 8)
        prediction = family.predict(pipe.transformer, latents, torch.tensor([500.0, 250.0]), conditioning)
    assert prediction.shape == latents.shape and torch.isfinite(prediction).all()


def test_sampling_defaults_and_licences_per_family():
    dev, schnell = {"guidance_embeds": True}, {"guidance_embeds": False}
    flux = by_name("flux")
    assert (flux.sampling_defaults(dev).guidance_scale, flux.sampling_defaults(dev).num_inference_steps) == (3.5, 28)
    assert (flux.sampling_defaults(schnell).guidance_scale,
            flux.sampling_defaults(schnell).num_inference_steps) == (0.0, 4)
    assert flux.default_license(dev).name == "flux-1-dev-non-commercial-license"
    assert "Non-Commercial" in flux.default_license(dev).note
    assert flux.default_license(schnell).id == "apache-2.0"
    assert by_name("sdxl").default_license({}).id == "openrail++"
    assert by_name("sd").default_license({}).id == "creativeml-openrail-m"


def test_a_full_flux_fine_tune_is_refused_where_memory_does_not_allow(pipelines, monkeypatch):
    from hubtools.families import flow_matching

    family, transformer = by_name("flux"), pipelines["flux"].transformer
    family.check_training("full", transformer, torch.device("cpu"))  # the tiny model trains fully anywhere
    family.check_training("lora", transformer, torch.device("cpu"))
    monkeypatch.setattr(flow_matching, "ALWAYS_FULL_BELOW", 0)  # as if it were the 12B model
    with pytest.raises(ConfigError, match=r"full fine-tune of FLUX.1 .*\(no GPU here\): sharded with FSDP it fits "
                                          r"on 2 GPUs of 80 GiB .*--distributed fsdp\), or train a LoRA instead"):
        family.check_training("full", transformer, torch.device("cpu"))


def test_the_flux_refusal_names_the_gpus_that_hold_it_under_fsdp():
    """FLUX.1 [dev]'s 11.9B parameters: ~177 GiB sharded, plus ~14 GiB each GPU holds whole: 3 GPUs of 80 GiB."""
    from hubtools.families.fits import check_full_fine_tune

    with pytest.raises(ConfigError, match=r"FLUX.1 \(11.9B parameters\) needs about 177 GiB .*\(no GPU here\): "
                                          r"sharded with FSDP it fits on 3 GPUs of 80 GiB \(torchrun --nproc-per-node 3"):
        check_full_fine_tune("FLUX.1", 11_900_000_000, torch.device("cpu"), shards=3)


def test_memory_profiles_are_the_families_own():
    from hubtools.config import RunConfig
    from hubtools.training.memory import MemoryChoice, choose_profile, next_smaller_profile, out_of_memory_error

    cfg = RunConfig.model_validate({"training": {"memory": "high"}})
    cpu = torch.device("cpu")
    assert choose_profile(cfg, cpu, "sd").method == "full"
    assert choose_profile(cfg, cpu, "flux").method == "lora"  # no profile fully fine-tunes FLUX.1
    low = choose_profile(RunConfig.model_validate({"training": {"memory": "low"}}), cpu, "sdxl")
    assert (low.method, low.gradient_checkpointing) == ("lora", True)
    assert next_smaller_profile(cfg, MemoryChoice("high", "", "lora", False, False), "flux") == "medium"
    message = str(out_of_memory_error(cfg, MemoryChoice("medium", "", "full", True, True), 3, "sdxl"))
    assert "retry with --memory low (LoRA, 8-bit Adam, gradient checkpointing)" in message


def test_a_vae_of_the_users_choice_replaces_the_base_models(tiny_folders, tmp_path):
    """``model.vae`` (``--vae``): e.g. an fp16-safe SDXL VAE, from a VAE folder or a pipeline's vae/."""
    from diffusers import AutoencoderKL

    from hubtools.config import ModelConfig
    from hubtools.pipelines import load_base_model

    vae_folder = tmp_path / "my-vae"
    AutoencoderKL.from_pretrained(tiny_folders["sdxl"], subfolder="vae", scaling_factor=0.5).save_pretrained(vae_folder)
    base = load_base_model(ModelConfig(base_model=str(tiny_folders["sdxl"]), vae=str(vae_folder)))
    assert base.family.name == "sdxl" and base.pipeline.vae.config.scaling_factor == 0.5
    with pytest.raises(ConfigError, match=r"--vae .*nowhere: no such folder, and not a Hub model id"):
        load_base_model(ModelConfig(base_model=str(tiny_folders["sdxl"]), vae=str(tmp_path / "nowhere")))
    (tmp_path / "no-vae-here").mkdir()
    with pytest.raises(ConfigError, match=r"--vae .*no-vae-here could not be loaded as a diffusers AutoencoderKL"):
        load_base_model(ModelConfig(base_model=str(tiny_folders["sdxl"]), vae=str(tmp_path / "no-vae-here")))


def test_the_identifier_is_counted_in_every_tokenizer_of_the_base_model(tiny_folders):
    """FLUX has CLIP and T5: both tokenizers come from the base model's own folders."""
    from hubtools.families.tokenizers import base_model_tokenizers, identifier_splits, split_warnings

    family, tokenizers = base_model_tokenizers(str(tiny_folders["flux"]))
    assert family.name == "flux" and list(tokenizers) == ["tokenizer", "tokenizer_2"]
    splits = {split.tokenizer: split for split in identifier_splits("nlwx", tokenizers)}
    assert splits["tokenizer"].num_tokens == 1 and splits["tokenizer"].tokenizer_class == "CLIPTokenizer"
    assert splits["tokenizer_2"].num_tokens > 1 and "T5" in splits["tokenizer_2"].tokenizer_class
    (warning,) = split_warnings("nlwx", list(splits.values()))
    assert warning.startswith("'nlwx' is 3 tokens to tokenizer_2") and "▁n + l + wx" in warning
    _, sd_tokenizers = base_model_tokenizers(str(tiny_folders["sd"]))
    assert list(sd_tokenizers) == ["tokenizer"]


def test_tokenizers_the_identifier_check_read_are_not_read_again_by_the_pipeline(tiny_folders):
    """Before the first step each tokenizer is read once (issue 29): the pipeline that training loads takes the
    ones the identifier check loaded (SDXL's second CLIP here), and only once."""
    from hubtools.config import ModelConfig
    from hubtools.families.tokenizers import further_tokenizers, take_loaded_tokenizers
    from hubtools.pipelines import load_base_model

    folder = tiny_folders["sdxl"]
    checked, problem = further_tokenizers(str(folder))
    assert problem is None and list(checked) == ["tokenizer_2"]
    pipe = load_base_model(ModelConfig(base_model=str(folder))).pipeline
    assert pipe.tokenizer_2 is checked["tokenizer_2"] and pipe.tokenizer_2.pad_token == "!"
    assert take_loaded_tokenizers(str(folder), None) == {}  # handed over once
    again = load_base_model(ModelConfig(base_model=str(folder))).pipeline  # nothing checked before: read from disk
    assert again.tokenizer_2 is not checked["tokenizer_2"]
    assert again.tokenizer_2("a photo").input_ids == pipe.tokenizer_2("a photo").input_ids


def test_family_defaults_fill_only_what_the_user_left_unset(tiny_folders):
    from hubtools.config import RunConfig
    from hubtools.families import apply_family_defaults
    from hubtools.pipelines import with_family_defaults

    flux, dev = by_name("flux"), {"guidance_embeds": True}
    cfg = RunConfig.model_validate({"model": {"base_model": str(tiny_folders["flux"])},
                                    "sampling": {"num_inference_steps": 3}})
    filled = apply_family_defaults(cfg, flux, dev)
    assert (filled.training.resolution, filled.training.method) == (1024, "lora")
    assert filled.sampling.guidance_scales == [2.5, 3.5, 4.5] and filled.sampling.num_inference_steps == 3
    assert filled.prior.guidance_scale == 3.5
    schnell = apply_family_defaults(cfg, flux, {"guidance_embeds": False})
    assert schnell.sampling.guidance_scales == [0.0] and schnell.prior.generation_steps == 4
    assert apply_family_defaults(cfg, by_name("sd"), {}).model_dump() == cfg.model_dump()
    family, detected = with_family_defaults(cfg)  # reads model_index.json and transformer/config.json
    assert family is flux and detected.model_dump() == filled.model_dump()
    # a config read back from a run folder has every value written out: nothing changes
    assert apply_family_defaults(RunConfig.model_validate_json(cfg.model_dump_json()), flux, dev) != filled


def test_identifier_check_counts_the_identifier_in_every_tokenizer_of_the_base_model(tiny_folders):
    """`hubtools identifier check --base-model <FLUX>`, as a user runs it: T5 splits what CLIP keeps whole."""
    import subprocess
    import sys

    from test_training_support import subprocess_env

    done = subprocess.run([sys.executable, "-m", "hubtools", "identifier", "check", "nlwx", "--base-model",
                           str(tiny_folders["flux"]), "--no-weights", "--json"], env=subprocess_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["num_tokens"] == 1
    (t5,) = report["other_tokenizers"]
    assert t5["tokenizer"] == "tokenizer_2" and t5["num_tokens"] == 3
    assert any("3 tokens to tokenizer_2" in warning for warning in report["warnings"])
