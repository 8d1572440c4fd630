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
    MIXED_SHAPES, RESOLUTION, make_bucketed_run, tiny_family_base, write_mixed_photos,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


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


@pytest.mark.parametrize("family_name", ["sd", "sdxl", "flux", "sd3", "qwen-image"])
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


@pytest.mark.parametrize("family_name", ["sd", "sdxl", "flux"])
def test_sidecar_captions_reach_the_text_encoder(root, family_name):
    """Each sidecar's words (through the template) are cached as their own text-encoder rows, equal to encoding that
    caption directly, and the training draws hand exactly those rows to the denoiser."""
    from hubtools.config import ModelConfig
    from hubtools.families import by_name
    from hubtools.pipelines import load_base_model
    from hubtools.training.data import encode_training_data

    captions = {"portrait.jpg": "on a red sofa", "wide.jpg": "in the snow"}
    trained_on = {f"a photo of pkblz dog, {text}" for text in captions.values()}
    _, run = make_bucketed_run(root, f"captions-{family_name}", family=family_name, captions=captions,
                               training={"steps": 1}, template="a photo of {identifier} {class_noun}, {caption}")
    examples = load_instance_examples(run / "concept", "a photo of pkblz dog")
    assert trained_on < set(examples.captions)
    base = load_base_model(ModelConfig(base_model=str(tiny_family_base(root, family_name))))
    family, parts = by_name(family_name), base.pipeline.components
    encoders = {name: parts[name] for name in family.text_encoders}
    data = encode_training_data(examples, None, class_prompt="", family=family, parts=parts,
                                frozen_text_encoders=encoders, resolution=RESOLUTION, cache_latents=True,
                                device=torch.device("cpu"), dtype=torch.float32, caption_draws=CaptionDraws(0.5))
    cached_rows = {}
    for caption in [*trained_on, ""]:  # the sidecars' words, and the empty caption dropout trains on
        assert caption in data.prompts.row_of  # embedded once, when the encoders were frozen
        cached = data.prompts.embeddings([caption])
        with torch.no_grad():
            direct = family.encode_prompts(encoders, family.tokenize(parts, [caption], torch.device("cpu")))
        for name, tensor in direct.tensors.items():
            assert torch.allclose(cached[name], tensor, atol=1e-5), name
        cached_rows[caption] = cached.tensors[next(iter(cached.tensors))]
    first, second = (cached_rows[caption] for caption in sorted(trained_on))
    assert not torch.allclose(first, second)  # the words differ, so do the embeddings
    drawn = set()
    for micro in range(40):  # what the loop embeds: the sidecar captions, and the empty one under dropout
        drawn.update(data.draw(micro, torch.Generator().manual_seed(micro), seed=0, per_process=1, process_index=0,
                               num_processes=1)[1])
    assert trained_on | {""} <= drawn
    assert sorted(len(b.members) for b in data.buckets) == [1, 2, 2]
    if family_name == "sd":
        assert {tuple(b.latent_shape[1:]) for b in data.buckets} == {(9, 7), (6, 10), (8, 8)}  # latents per bucket


def _weights_digest(run) -> str:
    """Every weight file the run wrote (the full model's or the LoRA's), hashed together."""
    files = sorted(path for path in run.glob("*/*.safetensors") if "checkpoint" not in path.parts[-2])
    files += sorted(run.glob("*.safetensors"))
    assert files
    return hashlib.sha256(b"".join(path.read_bytes() for path in files)).hexdigest()


@pytest.mark.parametrize("family_name", ["sd", "sdxl", "flux"])
def test_an_all_square_set_trains_byte_for_byte_as_the_square_crop(root, family_name):
    """Buckets on an all-square set and ``--buckets off`` give the same weights (the square-crop path is
    today's code: checked against the code before buckets in benchmarks/README.md)."""
    method = "lora" if family_name == "flux" else "full"
    training = {"method": method, "steps": 3, "checkpoint_every": 0}
    digests = []
    for buckets in ["auto", "off"]:
        cfg, run = make_bucketed_run(root, f"square-{family_name}-{buckets}", family=family_name, training=training,
                                     prior={"enabled": family_name == "sd"}, buckets=buckets, only=["square.jpg"])
        train_dreambooth(cfg, run, progress=False)
        digests.append(_weights_digest(run))
    assert digests[0] == digests[1]


def test_several_resolutions_train_the_same_photos_in_buckets_at_each_area(root):
    """Multi-resolution (``--resolution 48,64``): every photo at both areas, each in its own bucket there, drawn in
    proportion; the SDXL geometry of a smaller copy is its photo's, the crop scaled with it."""
    from hubtools.concepts.buckets import auto_buckets
    from hubtools.training.data import at_resolutions

    training = {"method": "lora", "steps": 4, "batch_size": 1, "learning_rate": 1e-2, "checkpoint_every": 0,
                "resolution": [48, RESOLUTION]}
    cfg, run = make_bucketed_run(root, "multires", training=training, prior={"enabled": False})
    assert cfg.training.resolutions == [48, RESOLUTION] and cfg.training.main_resolution == RESOLUTION
    train_dreambooth(cfg, run, progress=False)
    buckets = json.loads((run / "train_result.json").read_text())["settings"]["buckets"]
    small = {bucket.label for bucket in auto_buckets(48, 8)}
    assert sum(count for label, count in buckets.items() if label in small) == len(MIXED_SHAPES)
    assert sum(count for label, count in buckets.items() if label not in small) == len(MIXED_SHAPES)
    assert len([label for label in buckets if label in small]) == 3  # portrait, landscape, square at 48 px too

    examples = load_instance_examples(run / "concept", "a photo of pkblz dog")
    both = at_resolutions(examples, [48, RESOLUTION], 8)
    count = len(examples)
    assert both.images == examples.images * 2 and both.sizes[:count] == examples.sizes
    entries = load_prepared_concept(run / "concept").accepted_entries
    for entry, big, smaller, size in zip(entries, both.geometry[:count], both.geometry[count:], both.sizes[count:]):
        assert smaller.original_size == big.original_size == tuple(entry.original_size)
        # the kept window lies inside the photo as resized for the smaller bucket
        left, _, right, _ = entry.crop_box
        scale = entry.bucket[0] / (right - left) * max(size[0] / entry.bucket[0], size[1] / entry.bucket[1])
        top, left = smaller.crop_top_left
        assert 0 <= top and top + size[1] <= entry.original_size[1] * scale + 1
        assert 0 <= left and left + size[0] <= entry.original_size[0] * scale + 1
        assert size[0] * size[1] <= 48 * 48 and size in {(40, 56), (48, 48), (56, 40)}
    assert at_resolutions(examples, [RESOLUTION], 8) is examples  # one resolution: as before


def test_several_resolutions_need_automatic_buckets():
    from hubtools.config import RunConfig

    config = RunConfig.model_validate({"training": {"resolution": "512, 1024,768"}})
    assert config.training.resolution == [512, 768, 1024] and config.training.main_resolution == 1024
    assert RunConfig.model_validate({"training": {"resolution": "768"}}).training.resolution == 768
    with pytest.raises(ValueError, match="use --buckets auto"):
        RunConfig.model_validate({"training": {"resolution": [512, 1024]}, "concept": {"buckets": "512x512"}})
    with pytest.raises(ValueError, match="multiple of 8"):
        RunConfig.model_validate({"training": {"resolution": "512,1020"}})


def test_train_command_takes_the_bucket_caption_and_resolution_flags(root, tmp_path):
    """``hubtools train`` as a user runs it, with every flag of issue 23; train-and-push has the same flags."""
    import subprocess
    import sys
    import tomllib

    from test_training_support import subprocess_env

    photos = write_mixed_photos(tmp_path / "photos", captions={"portrait.jpg": "on a sofa, red collar, evening"})
    run = tmp_path / "run"
    small = ["--set", "sampling.num_inference_steps=2", "--set", "sampling.seeds=[0]",
             "--set", "sampling.guidance_scales=[7.0]", "--set", 'sampling.prompts=["a photo of {identifier} {class_noun}"]']
    common = ["--base-model", str(tiny_family_base(root, "sd")), "--concept", str(photos), "--identifier", "pkblz",
              "--class-noun", "dog", "--steps", "2", "--lr", "1e-3", "--device", "cpu", "--no-prior",
              "--checkpoint-every", "0", *small]
    result = subprocess.run(
        [sys.executable, "-m", "hubtools", "train", *common, "--out", str(run), "--resolution", "48,64",
         "--buckets", "auto", "--caption-template", "a photo of {identifier} {class_noun}, {caption}",
         "--caption-dropout", "0.25", "--shuffle-caption-parts"],
        capture_output=True, text=True, timeout=300, env=subprocess_env())
    assert result.returncode == 0, result.stderr[-3000:]
    config = tomllib.loads((run / "hubtools.toml").read_text())
    assert config["training"]["resolution"] == [48, 64] and config["concept"]["buckets"] == "auto"
    assert (config["training"]["caption_dropout"], config["training"]["shuffle_caption_parts"]) == (0.25, True)
    assert config["concept"]["caption_template"] == "a photo of {identifier} {class_noun}, {caption}"
    rows = [json.loads(line) for line in (run / "concept" / "metadata.jsonl").read_text().splitlines()]
    assert "a photo of pkblz dog, on a sofa, red collar, evening" in [row["text"] for row in rows]
    settings = json.loads((run / "train_result.json").read_text())["settings"]
    assert len(settings["buckets"]) == 6 and sum(settings["buckets"].values()) == 2 * len(MIXED_SHAPES)

    # train-and-push declares the same flags; a bad combination is one line, no traceback
    bad = subprocess.run(
        [sys.executable, "-m", "hubtools", "train-and-push", *common, "--out", str(tmp_path / "bad"), "--dry-run",
         "--repo", "tester/x", "--resolution", "48,64", "--buckets", "64x64", "--prepend-identifier"],
        capture_output=True, text=True, timeout=120, env=subprocess_env())
    assert bad.returncode == 2 and "use --buckets auto" in bad.stderr and "Traceback" not in bad.stderr


def test_grids_draw_at_the_buckets_shapes_and_the_card_lists_the_buckets(root):
    """A set trained on portrait, landscape and square buckets: the samples grid holds one row per prompt and the
    seeds at each shape, the widget is drawn at the most common bucket, and the card lists buckets, images per
    bucket and the caption template."""
    import numpy as np

    from hubtools.card import render_model_card
    from hubtools.sample import render_samples

    training = {"method": "lora", "steps": 2, "learning_rate": 1e-2, "checkpoint_every": 0}
    cfg, run = make_bucketed_run(root, "grids", training=training, prior={"enabled": False},
                                 captions={"portrait.jpg": "on a sofa"})
    cfg.concept.caption_template = "a photo of {identifier} {class_noun}, {caption}"
    from hubtools.config import save_config
    save_config(cfg, run / "hubtools.toml")
    train_dreambooth(cfg, run, progress=False)
    result = render_samples(run, progress=False)

    samples = json.loads(result.samples_json.read_text())
    cells = [cell for cell in samples["cells"] if cell["grid"] == "samples"]
    assert len(cells) == len(cfg.sampling.prompts) * 3 * len(cfg.sampling.seeds)  # one row per prompt, 3 shapes
    assert {tuple(cell["size"]) for cell in cells} == {(56, 72), (64, 64), (80, 48)}
    assert {cell["row"] for cell in cells} == set(range(len(cfg.sampling.prompts)))
    grid = np.asarray(Image.open(result.samples_grid).convert("RGB")).astype(int)
    for cell in cells:  # each image keeps its shape: a portrait cell has white margins left and right
        x0, y0, x1, y1 = cell["box"]
        width, height = cell["size"]
        if width < height:
            assert (grid[y0 + 4:y1 - 4, x0:x0 + 4] == 255).all() and not (grid[y0 + 4:y1 - 4, (x0 + x1) // 2] == 255).all()
        if width > height:
            assert (grid[y0:y0 + 4, x0 + 4:x1 - 4] == 255).all()
    # the widget: the most common bucket (56x72 and 80x48 hold two each; the squarer one wins the tie)
    assert samples["widget"]["size"] == [56, 72]
    with Image.open(result.widget_image) as widget:
        assert widget.size == (56 * 3, 72 * 3)

    text = render_model_card(run, repo_id="tester/buckets").text
    assert "| `concept.buckets` | auto |" in text
    assert "| `images per bucket` | 56x72: 2, 80x48: 2, 64x64: 1 |" in text
    assert "| `concept.caption_template` | a photo of {identifier} {class_noun}, {caption} |" in text
    assert "in buckets of about 64² px" in text and "(56x72: 2, 80x48: 2, 64x64: 1)" in text
