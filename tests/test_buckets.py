"""Aspect-ratio buckets and captions in ``concept prepare``: photos keep their shape, captions come from kohya
sidecars through the template, and a caption without the trigger word is flagged."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest
from PIL import Image

from hubtools.concepts import load_prepared_concept, prepare_concept
from hubtools.concepts.buckets import Bucket, auto_buckets, crop_loss, nearest_bucket, parse_buckets, resolve_buckets
from hubtools.concepts.captions import CaptionRules, shuffle_parts, training_caption
from hubtools.errors import ConfigError
from test_training_support import MIXED_SHAPES, write_mixed_photos

RES = 64


def test_automatic_buckets_hold_about_the_target_area_in_multiples_of_the_family_size():
    for resolution, multiple in [(64, 8), (64, 16), (512, 8), (1024, 16)]:
        buckets = auto_buckets(resolution, multiple)
        assert Bucket(resolution, resolution) in buckets
        for bucket in buckets:
            assert bucket.width % multiple == 0 and bucket.height % multiple == 0
            assert bucket.width * bucket.height <= resolution**2
            assert bucket.width * bucket.height >= 0.8 * resolution**2
            assert 0.5 <= bucket.aspect <= 2.0
            assert Bucket(bucket.height, bucket.width) in buckets  # every shape also turned on its side
    assert auto_buckets(64, 16) == [Bucket(48, 80), Bucket(64, 64), Bucket(80, 48)]
    assert Bucket(832, 1216) in auto_buckets(1024, 64) and Bucket(1216, 832) in auto_buckets(1024, 64)


def test_given_buckets_are_checked_against_the_size_multiple():
    assert parse_buckets("1024x1024, 832x1216,1216x832", 16) == [Bucket(832, 1216), Bucket(1024, 1024),
                                                                  Bucket(1216, 832)]
    assert resolve_buckets("off", 64, 8) is None
    with pytest.raises(ConfigError, match="1000x1000 must have sides that are multiples of 16"):
        parse_buckets("1000x1000", 16)
    with pytest.raises(ConfigError, match="'big' is not WIDTHxHEIGHT"):
        resolve_buckets("big", 64, 8)


def test_the_nearest_bucket_crops_least_where_the_square_cut_a_quarter_or_more():
    buckets = auto_buckets(1024, 64)
    assert crop_loss((4000, 3000), Bucket(1024, 1024)) == pytest.approx(0.25)  # today's centre square
    assert crop_loss((1920, 1080), Bucket(1024, 1024)) == pytest.approx(0.4375)
    for size in [(4000, 3000), (3000, 4000), (1920, 1080), (1080, 1920), (3000, 2000), (1000, 1000)]:
        assert crop_loss(size, nearest_bucket(size, buckets)) < 0.05


def test_mixed_photos_go_to_three_buckets_and_none_loses_more_than_15_percent(tmp_path):
    photos = write_mixed_photos(tmp_path / "photos")
    concept = prepare_concept(photos, tmp_path / "out", resolution=RES, progress=False, size_multiple=8)

    assert concept.bucket_counts() == {"56x72": 2, "80x48": 2, "64x64": 1}  # portrait, landscape, square
    assert json.loads(concept.manifest_path.read_text())["buckets"] == [[48, 80], [56, 72], [64, 64], [72, 56],
                                                                        [80, 48]]
    for entry, image in zip(concept.accepted_entries, concept.images):
        photo, box = MIXED_SHAPES[entry.path]
        assert entry.original_size == [box[2] - box[0], box[3] - box[1]]
        with Image.open(image) as prepared:
            assert list(prepared.size) == entry.bucket  # the photo at its bucket's size, not a square
        left, top, right, bottom = entry.crop_box
        kept = (right - left) * (bottom - top) / (entry.original_size[0] * entry.original_size[1])
        assert 1 - kept <= 0.15, (entry.path, entry.crop_box)
        assert abs((right - left) / (bottom - top) - entry.bucket[0] / entry.bucket[1]) < 0.02
    # read back as it was written, and the contact sheet shows the shapes
    again = load_prepared_concept(concept.dir)
    assert again.bucket_counts() == concept.bucket_counts() and again.accepted_entries[0].crop_box
    assert concept.contact_sheet_path.is_file()

    square = prepare_concept(photos, tmp_path / "square", resolution=RES, progress=False, buckets="off")
    assert square.buckets is None and square.bucket_counts() == {}
    for image in square.images:
        with Image.open(image) as prepared:
            assert prepared.size == (RES, RES)
    assert "bucket" not in json.loads(square.manifest_path.read_text())["entries"][0]


@pytest.mark.parametrize("family_name", ["sd", "sdxl", "flux"])
def test_at_a_real_resolution_no_photo_loses_more_than_15_percent_in_each_familys_buckets(tmp_path, family_name):
    """The mixed DreamBench photos at 512 px with the family's side multiple (8 for SD and SDXL, 16 for FLUX.1)."""
    from hubtools.families import by_name

    photos = write_mixed_photos(tmp_path / "photos")
    concept = prepare_concept(photos, tmp_path / "out", resolution=512, progress=False,
                              size_multiple=by_name(family_name).size_multiple)
    assert len(concept.bucket_counts()) >= 3
    for entry in concept.accepted_entries:
        left, top, right, bottom = entry.crop_box
        lost = 1 - (right - left) * (bottom - top) / (entry.original_size[0] * entry.original_size[1])
        assert lost <= 0.15, (entry.path, entry.bucket, lost)
        square_loss = 1 - min(entry.original_size) ** 2 / (entry.original_size[0] * entry.original_size[1])
        assert lost <= square_loss


def test_a_photo_smaller_than_its_bucket_is_not_upscaled_unless_asked(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (60, 100), (200, 30, 30)).save(photos / "small.png")  # 48x80 bucket: covered
    Image.new("RGB", (40, 70), (30, 200, 30)).save(photos / "tiny.png")  # not covered
    concept = prepare_concept(photos, tmp_path / "out", resolution=RES, progress=False, size_multiple=16)
    statuses = {entry.path: (entry.status, entry.reason) for entry in concept.entries}
    assert statuses["small.png"][0] == "accepted"
    assert statuses["tiny.png"] == ("rejected", "too small: 40x70 does not cover its bucket 48x80 "
                                                "(or pass --allow-upscale)")


def test_sidecar_captions_go_through_the_template_and_a_missing_trigger_word_is_flagged(tmp_path):
    photos = write_mixed_photos(tmp_path / "photos", captions={
        "portrait.jpg": "sitting on a sofa", "landscape.jpg": "pkblz dog, running on the beach"})
    (photos / "notes.txt").write_text("not a caption: no image of that name")
    rules = CaptionRules(template="a photo of {identifier} {class_noun}, {caption}", identifier="pkblz",
                         class_noun="dog")
    concept = prepare_concept(photos, tmp_path / "out", resolution=RES, progress=False, captions=rules,
                              caption="a photo of pkblz dog")
    by_path = {entry.path: entry for entry in concept.entries}
    assert by_path["portrait.jpg"].caption == "a photo of pkblz dog, sitting on a sofa"
    assert by_path["square.jpg"].caption == "a photo of pkblz dog"  # no sidecar: the instance prompt
    assert by_path["portrait.txt"].status == "ignored" and "caption of portrait.jpg" in by_path["portrait.txt"].reason
    assert by_path["notes.txt"].reason.startswith("not an image file")
    rows = [json.loads(line) for line in concept.metadata_path.read_text().splitlines()]
    assert "a photo of pkblz dog, sitting on a sofa" in [row["text"] for row in rows]
    assert json.loads(concept.manifest_path.read_text())["caption_template"] == rules.template

    plain = CaptionRules(identifier="pkblz")
    concept = prepare_concept(photos, tmp_path / "plain", resolution=RES, progress=False, captions=plain)
    flagged = {entry.path: entry.caption_warning for entry in concept.entries if entry.status == "accepted"}
    assert flagged["portrait.jpg"] == "caption lacks the identifier 'pkblz' (or pass --prepend-identifier)"
    assert flagged["landscape.jpg"] is None
    fixed = prepare_concept(photos, tmp_path / "fixed", resolution=RES, progress=False,
                            captions=CaptionRules(identifier="pkblz", prepend_identifier=True))
    assert {e.path: e.caption for e in fixed.entries}["portrait.jpg"] == "pkblz, sitting on a sofa"

    with pytest.raises(ConfigError, match="has no \\{caption\\}"):
        prepare_concept(photos, tmp_path / "bad", resolution=RES, progress=False,
                        captions=CaptionRules(template="a photo of {identifier}", identifier="pkblz", class_noun="dog"))
    with pytest.raises(ConfigError, match="names \\{subject\\}"):
        prepare_concept(photos, tmp_path / "bad", resolution=RES, progress=False,
                        captions=CaptionRules(template="{subject} {caption}"))


def test_caption_dropout_and_part_shuffling_are_kohyas():
    caption = "pkblz dog, on a sofa, red collar, evening light"
    shuffled = {shuffle_parts(caption, random.Random(seed)) for seed in range(20)}
    assert len(shuffled) > 1
    assert all(text.startswith("pkblz dog, ") and sorted(text.split(", ")) == sorted(caption.split(", "))
               for text in shuffled)
    draws = [training_caption(caption, random.Random(seed), dropout=0.3, shuffle=False) for seed in range(400)]
    assert 0.2 < draws.count("") / len(draws) < 0.4 and set(draws) == {"", caption}
    assert training_caption(caption, random.Random(0), dropout=0.0, shuffle=False) == caption


def test_concept_prepare_command_with_buckets_and_a_caption_template(tmp_path):
    photos = write_mixed_photos(tmp_path / "photos", captions={"portrait.jpg": "on a sofa"})
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "hubtools", "concept", "prepare", str(photos), "--out", str(out), "--resolution", "64",
         "--buckets", "64x64,56x72,80x48", "--size-multiple", "8", "--identifier", "pkblz", "--class-noun", "dog",
         "--caption-template", "a photo of {identifier} {class_noun}, {caption}"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stderr
    assert "5 accepted" in result.stdout and "in buckets 56x72 (2), 80x48 (2), 64x64 (1)" in result.stdout
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert "a photo of pkblz dog, on a sofa" in [row["text"] for row in rows]

    bad = subprocess.run(
        [sys.executable, "-m", "hubtools", "concept", "prepare", str(photos), "--out", str(tmp_path / "bad"),
         "--resolution", "64", "--buckets", "60x60"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "60x60 must have sides that are multiples of 16" in bad.stderr
    assert "Traceback" not in bad.stderr
