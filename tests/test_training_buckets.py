"""Training on aspect-ratio buckets (tiny SD, SDXL and FLUX.1): every batch from one bucket, SDXL's time ids
carry each photo's size and crop, class images come at the bucket sizes, sidecar captions reach the text
encoder, and an all-square set trains exactly as the square crop did."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from PIL import Image

from hubtools.concepts import load_prepared_concept
from hubtools.training import train_dreambooth
from hubtools.training.bucket_order import bucket_step
from hubtools.training.data import CaptionDraws, load_instance_examples
from test_training_support import (
    MIXED_SHAPES, RESOLUTION, make_bucketed_run, single_thread_torch, tiny_family_base,
)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    yield from single_thread_torch()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("bucket-training")


def test_each_batch_comes_from_one_bucket_in_proportion_and_the_order_is_a_function_of_the_step():
    counts = [2, 5, 1]
    draws = [bucket_step(m, counts, 2, seed=3) for m in range(60)]
    assert draws == [bucket_step(m, counts, 2, seed=3) for m in range(60)]  # no running RNG: resume replays it
    per_bucket = [sum(1 for bucket, _ in draws if bucket == b) for b in range(3)]
    assert per_bucket == [12, 36, 12]  # ceil(n / batch) batches per round: 1, 3, 1 of every 5
    for bucket in range(3):  # each bucket's batches counted without gaps
        assert [k for b, k in draws if b == bucket] == list(range(per_bucket[bucket]))
    assert [bucket_step(m, [4], 2, seed=3) for m in range(5)] == [(0, m) for m in range(5)]  # one bucket: as before


@pytest.mark.parametrize("family_name", ["sd", "sdxl", "flux", "sd3"])
def test_a_mixed_set_trains_on_three_buckets(root, family_name):
    training = {"method": "lora", "steps": 4, "batch_size": 1, "learning_rate": 1e-2, "caption_dropout": 0.5,
                "checkpoint_every": 0}
    cfg, run = make_bucketed_run(root, f"mixed-{family_name}", family=family_name, training=training,
                                 prior={"enabled": family_name == "sd", "num_class_images": 5})
    result = train_dreambooth(cfg, run, progress=False)
    written = json.loads((run / "train_result.json").read_text())
    buckets = written["settings"]["buckets"]
    assert len(buckets) == 3 and sum(buckets.values()) == len(MIXED_SHAPES)
    assert all(torch.isfinite(torch.tensor(written["losses_tail"])))
    assert written["settings"]["caption_dropout"] == 0.5
    if family_name == "sd":  # class images generated at the bucket sizes, in the instance images' proportions
        from hubtools.prior import cache_root

        folder = cache_root() / result.class_images.cache_key
        recorded = json.loads((folder / "class_images.json").read_text())
        by_size = {}
        for name, size in zip(recorded["images"], recorded["sizes"]):
            with Image.open(folder / name) as image:
                assert list(image.size) == size
            by_size[f"{size[0]}x{size[1]}"] = by_size.get(f"{size[0]}x{size[1]}", 0) + 1
        assert by_size == {"56x72": 2, "80x48": 2, "64x64": 1}


def test_sdxl_time_ids_carry_each_photos_original_size_and_crop(root):
    from hubtools.families import by_name
    from hubtools.families.base import Conditioning

    _, run = make_bucketed_run(root, "sdxl-geometry", family="sdxl", training={"steps": 1})
    concept = load_prepared_concept(run / "concept")
    examples = load_instance_examples(run / "concept", "a photo of pkblz dog")
    family = by_name("sdxl")
    for index, entry in enumerate(concept.accepted_entries):
        photo_w, photo_h = entry.original_size
        left, top, right, _ = entry.crop_box
        width, height = entry.bucket
        scale = width / (right - left)
        geometry = examples.geometry[index]
        conditioning = family.with_image_conditioning(Conditioning({}), [geometry, None], (width, height))
        time_ids = conditioning["time_ids"].tolist()
        assert time_ids[0] == [photo_h, photo_w, round(top * scale), round(left * scale), height, width]
        assert time_ids[1] == [height, width, 0, 0, height, width]  # a class image: uncropped at the bucket size
        assert (photo_w, photo_h) == (MIXED_SHAPES[entry.path][1][2] - MIXED_SHAPES[entry.path][1][0],
                                      MIXED_SHAPES[entry.path][1][3] - MIXED_SHAPES[entry.path][1][1])
    assert any(g.crop_top_left != (0, 0) for g in examples.geometry)  # the test photos really were cropped


def test_sidecar_captions_reach_the_text_encoder(root):
    from hubtools.families import by_name
    from hubtools.pipelines import load_base_model
    from hubtools.config import ModelConfig
    from hubtools.training.data import encode_training_data

    captions = {"portrait.jpg": "pkblz dog, on a red sofa", "wide.jpg": "pkblz dog, in the snow"}
    _, run = make_bucketed_run(root, "captions", captions=captions, training={"steps": 1})
    examples = load_instance_examples(run / "concept", "a photo of pkblz dog")
    base = load_base_model(ModelConfig(base_model=str(tiny_family_base(root, "sd"))))
    family, parts = by_name("sd"), base.pipeline.components
    encoders = {"text_encoder": parts["text_encoder"]}
    data = encode_training_data(examples, None, class_prompt="", family=family, parts=parts,
                                frozen_text_encoders=encoders, resolution=RESOLUTION, cache_latents=True,
                                device=torch.device("cpu"), dtype=torch.float32, caption_draws=CaptionDraws(0.5))
    for caption in [*captions.values(), ""]:  # the sidecars' words, and the empty caption dropout trains on
        cached = data.prompts.embeddings([caption])["encoder_hidden_states"]
        with torch.no_grad():
            direct = family.encode_prompts(encoders, family.tokenize(parts, [caption], torch.device("cpu")))
        assert torch.allclose(cached, direct["encoder_hidden_states"], atol=1e-5)
    assert sorted(len(b.members) for b in data.buckets) == [1, 2, 2]
    assert {tuple(b.latent_shape[1:]) for b in data.buckets} == {(9, 7), (6, 10), (8, 8)}  # latents per bucket


def _weights_digest(run) -> str:
    return hashlib.sha256((run / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()).hexdigest()


def test_an_all_square_set_trains_byte_for_byte_as_the_square_crop(root):
    """Buckets on an all-square set and ``--buckets off`` give the same weights (the square-crop path is
    today's code; the demo's weights and grids are hashed before and after in benchmarks/README.md)."""
    training = {"method": "full", "steps": 3, "checkpoint_every": 0}
    digests = []
    for buckets in ["auto", "off"]:
        cfg, run = make_bucketed_run(root, f"square-{buckets}", training=training, prior={"enabled": False},
                                     buckets=buckets, only=["square.jpg"])
        train_dreambooth(cfg, run, progress=False)
        digests.append(_weights_digest(run))
    assert digests[0] == digests[1]
