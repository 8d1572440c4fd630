"""Preparing messy local folders: every bad-input case is built here, on the fly, and checked by status,
reason and output pixels."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hubtools.cli.app import main
from hubtools.concepts import ConceptNotUsableError, load_prepared_concept, prepare_concept
from hubtools.concepts.files import read_image
from hubtools.errors import ConfigError, InputError
from hubtools.resources import DEMO_CONCEPT_DIR

RES = 64
RED, BLUE, GREEN, WHITE = (255, 0, 0), (0, 0, 255), (0, 160, 0), (255, 255, 255)


def two_tone(size: tuple[int, int], first, second, *, split: str = "horizontal", mode: str = "RGB") -> Image.Image:
    """Left/right (horizontal) or top/bottom (vertical) halves in two colours."""
    width, height = size
    image = Image.new(mode, size, second)
    box = (0, 0, width // 2, height) if split == "horizontal" else (0, 0, width, height // 2)
    image.paste(Image.new(mode, (box[2], box[3]), first), box)
    return image


def prepare(src: Path, tmp_path: Path, **options):
    options.setdefault("resolution", RES)
    options.setdefault("progress", False)
    return prepare_concept(src, tmp_path / "out", **options)


def entry_for(concept, path: str):
    matches = [entry for entry in concept.entries if entry.path == path]
    assert matches, f"{path} not in manifest: {[entry.path for entry in concept.entries]}"
    return matches[0]


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "RGB" and image.size == (RES, RES)
        return np.asarray(image).astype(int)


def close(actual, expected, tolerance: int = 12) -> bool:
    return bool(np.all(np.abs(np.asarray(actual, dtype=int) - np.asarray(expected, dtype=int)) <= tolerance))


def tree_fingerprint(root: Path) -> dict[str, tuple[str, int]]:
    return {
        path.relative_to(root).as_posix(): (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


# --- what real folders contain ------------------------------------------------------------------


def test_exif_orientation_makes_a_phone_portrait_upright(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    # Stored landscape 300x200, red left / blue right, orientation 6 = "rotate 90° clockwise to view":
    # viewed, it is a 200x300 portrait with red on top.
    stored = two_tone((300, 200), RED, BLUE)
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(src / "portrait.jpg", quality=95, exif=exif)

    concept = prepare(src, tmp_path, buckets="off")
    entry = entry_for(concept, "portrait.jpg")
    assert entry.status == "accepted"
    assert entry.original_size == [200, 300]
    assert "EXIF orientation 6" in entry.reason
    out = pixels(concept.images[0])
    assert close(out[4, RES // 2], RED) and close(out[RES - 5, RES // 2], BLUE)


def test_transparency_is_flattened_on_white(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    image = two_tone((128, 128), (0, 0, 0, 0), (*GREEN, 255), mode="RGBA")  # transparent black | green
    image.save(src / "cutout.png")
    palette = two_tone((128, 128), 0, 1, mode="P")
    palette.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    palette.save(src / "palette.gif", transparency=0)  # colour 0 (black) is transparent

    concept = prepare(src, tmp_path)
    cutout, gif = entry_for(concept, "cutout.png"), entry_for(concept, "palette.gif")
    assert cutout.status == gif.status == "accepted"
    assert "transparency flattened onto white" in cutout.reason
    out = pixels(concept.dir / cutout.output)
    assert close(out[RES // 2, 4], WHITE, 0) and close(out[RES // 2, RES - 5], GREEN, 0)
    out = pixels(concept.dir / gif.output)
    assert close(out[RES // 2, 4], WHITE, 0) and close(out[RES // 2, RES - 5], BLUE, 0)


def test_cmyk_grayscale_16bit_and_other_modes_become_rgb(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    Image.new("CMYK", (96, 96), (0, 255, 255, 0)).save(src / "cmyk.jpg", quality=95)  # pure red in CMYK
    Image.new("CMYK", (96, 96), (255, 0, 255, 0)).save(src / "cmyk.tif")  # pure green in CMYK
    Image.fromarray(np.full((96, 96), 128 * 257, dtype=np.uint16)).save(src / "gray16.png")  # mid grey, 16-bit
    Image.new("L", (96, 96), 60).save(src / "gray.bmp")
    Image.new("1", (96, 96), 1).save(src / "bw.bmp")
    Image.new("RGB", (96, 96), BLUE).save(src / "photo.webp", lossless=True)
    Image.new("RGB", (96, 96), (10, 200, 30)).save(src / "scan.tiff")

    concept = prepare(src, tmp_path)
    expected = {
        "cmyk.jpg": RED,
        "cmyk.tif": (0, 255, 0),
        "gray16.png": (128, 128, 128),  # Pillow's own conversion would clip this to white
        "gray.bmp": (60, 60, 60),
        "bw.bmp": WHITE,
        "photo.webp": BLUE,
        "scan.tiff": (10, 200, 30),
    }
    for name, colour in expected.items():
        entry = entry_for(concept, name)
        assert entry.status == "accepted", (name, entry.reason)
        assert close(pixels(concept.dir / entry.output)[RES // 2, RES // 2], colour, 3), name
    assert "16-bit" in entry_for(concept, "gray16.png").reason
    assert "CMYK" in entry_for(concept, "cmyk.tif").reason


def test_animated_image_uses_first_frame_with_a_note(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    frames = [Image.new("RGB", (96, 96), colour) for colour in (RED, BLUE, GREEN)]
    frames[0].save(src / "wag.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    frames[1].save(src / "wag.webp", save_all=True, append_images=[frames[0]], duration=100, lossless=True)

    concept = prepare(src, tmp_path)
    gif, webp = entry_for(concept, "wag.gif"), entry_for(concept, "wag.webp")
    assert gif.status == webp.status == "accepted"
    assert "animated (3 frames): used the first frame" in gif.reason
    assert "animated (2 frames)" in webp.reason
    assert close(pixels(concept.dir / gif.output)[RES // 2, RES // 2], RED, 3)
    assert close(pixels(concept.dir / webp.output)[RES // 2, RES // 2], BLUE, 3)


def test_large_jpeg_is_decoded_at_reduced_scale(tmp_path):
    big = Image.new("RGB", (4000, 3000), (90, 120, 150))
    buffer = io.BytesIO()
    big.save(buffer, "JPEG", quality=80)
    read = read_image(buffer.getvalue(), name="big.jpg", min_side=RES)
    assert read.original_size == (4000, 3000)
    assert RES <= min(read.image.size) <= 3000 // 4  # libjpeg scaled it on decode: never 12 Mpx in memory
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.jpg").write_bytes(buffer.getvalue())
    concept = prepare(src, tmp_path, buckets="off")
    assert entry_for(concept, "big.jpg").original_size == [4000, 3000]
    assert close(pixels(concept.images[0])[RES // 2, RES // 2], (90, 120, 150), 3)


def test_broken_files_are_rejected_with_the_reason(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    good = io.BytesIO()
    two_tone((200, 200), RED, BLUE).save(good, "PNG")
    (src / "empty.jpg").write_bytes(b"")
    (src / "letter.jpg").write_text("Dear diary, this is not a photo.")
    (src / "cut.png").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    jpeg = io.BytesIO()
    Image.effect_noise((300, 300), 60).convert("RGB").save(jpeg, "JPEG")
    (src / "cut.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (src / "IMG_0001.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic")
    (src / "ok.png").write_bytes(good.getvalue())

    concept = prepare(src, tmp_path)
    reasons = {entry.path: (entry.status, entry.reason) for entry in concept.entries}
    assert reasons["empty.jpg"] == ("rejected", "empty file (0 bytes)")
    assert reasons["letter.jpg"][0] == "rejected" and "not a readable image" in reasons["letter.jpg"][1]
    assert reasons["cut.png"][0] == "rejected" and "truncated" in reasons["cut.png"][1]
    assert reasons["cut.jpg"][0] == "rejected" and "truncated" in reasons["cut.jpg"][1]
    assert reasons["IMG_0001.HEIC"][0] == "rejected" and "export the photo as JPEG or PNG" in reasons["IMG_0001.HEIC"][1]
    assert reasons["ok.png"] == ("accepted", "ok")
    assert concept.counts == {"accepted": 1, "rejected": 5, "duplicate": 0, "ignored": 0, "total": 6}


def test_junk_is_ignored_and_extensions_match_in_any_case(tmp_path):
    src = tmp_path / "src"
    (src / ".thumbnails").mkdir(parents=True)
    (src / "__MACOSX").mkdir()
    (src / "nested" / "deeper").mkdir(parents=True)
    for index, name in enumerate(["A.JPG", "b.Jpeg", "nested/c.PnG", "nested/deeper/d.jpg"]):
        # colours far enough apart that no two count as the same picture recoloured
        two_tone((100, 100), (index * 60, 0, 0), (0, 200 - index * 60, index * 60)).save(
            src / name, "PNG" if "PnG" in name else "JPEG")
    for junk in [".DS_Store", "Thumbs.db", "desktop.ini", "._A.JPG", ".secret.jpg", "notes.txt", "clip.mov", "__MACOSX/._x.jpg"]:
        (src / junk).write_bytes(b"junk")
    Image.new("RGB", (100, 100)).save(src / ".thumbnails" / "t.jpg")

    concept = prepare(src, tmp_path)
    accepted = [entry.path for entry in concept.entries if entry.status == "accepted"]
    assert accepted == ["A.JPG", "b.Jpeg", "nested/c.PnG", "nested/deeper/d.jpg"]
    ignored = {entry.path: entry.reason for entry in concept.entries if entry.status == "ignored"}
    assert ignored[".DS_Store"] == "operating-system file"
    assert ignored["._A.JPG"] == "operating-system file"
    assert ignored["Thumbs.db"] == "operating-system file"
    assert ignored[".secret.jpg"] == "hidden file"
    assert ignored["notes.txt"] == "not an image file (.txt)"
    assert ignored["clip.mov"] == "not an image file (.mov)"
    assert ignored[".thumbnails/"] == ignored["__MACOSX/"] == "hidden or system folder"
    assert concept.counts["rejected"] == 0


def test_too_small_is_rejected_unless_upscaling_is_allowed(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    two_tone((40, 30), RED, BLUE).save(src / "thumb.png")

    with pytest.raises(ConceptNotUsableError, match=r"only 0 usable images .* \(need 1\)"):
        prepare(src, tmp_path, buckets="off")
    entry = load_prepared_concept(tmp_path / "out").entries[0]
    assert entry.status == "rejected"
    assert entry.reason == "too small: 40x30, the shorter side must be at least 64 px (or pass --allow-upscale)"

    concept = prepare(src, tmp_path, allow_upscale=True, buckets="off")
    entry = concept.entries[0]
    assert entry.status == "accepted" and "warning: upscaled from 40x30" in entry.reason
    out = pixels(concept.images[0])
    assert close(out[RES // 2, 2], RED) and close(out[RES // 2, RES - 3], BLUE)


def test_exact_and_near_duplicates_keep_the_largest_copy(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for path in sorted(DEMO_CONCEPT_DIR.glob("*.jpg"))[:3]:
        shutil.copy(path, src / path.name)
    shutil.copy(src / "00.jpg", src / "zz copy.jpg")  # byte-identical
    with Image.open(src / "01.jpg") as photo:
        photo.resize((300, 300)).save(src / "0-small-first.webp", quality=60)  # smaller, sorts first

    concept = prepare(src, tmp_path)
    statuses = {entry.path: entry.status for entry in concept.entries}
    assert statuses == {
        "0-small-first.webp": "duplicate",
        "zz copy.jpg": "duplicate",
        "00.jpg": "accepted",
        "01.jpg": "accepted",
        "02.jpg": "accepted",
    }
    assert entry_for(concept, "zz copy.jpg").reason == "identical file to 00.jpg"
    small = entry_for(concept, "0-small-first.webp")
    assert small.duplicate_of == "01.jpg" and small.reason.startswith("near duplicate of the larger 01.jpg")
    assert [entry.output for entry in concept.entries if entry.status == "accepted"] == [
        "images/0000.png", "images/0001.png", "images/0002.png"
    ]
    assert sorted(p.name for p in (concept.dir / "images").iterdir()) == ["0000.png", "0001.png", "0002.png"]


def test_a_duplicate_names_the_copy_that_is_kept_when_a_larger_one_comes_later(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with Image.open(sorted(DEMO_CONCEPT_DIR.glob("*.jpg"))[0]) as photo:
        photo.resize((600, 600)).save(src / "a-medium.png")
        photo.resize((560, 560)).save(src / "b-smaller.jpg", quality=90)  # a duplicate of a-medium, at first
        photo.resize((1200, 1200)).save(src / "c-large.jpg", quality=90)  # then a-medium gives way to this one

    concept = prepare(src, tmp_path)
    assert {entry.path: entry.status for entry in concept.entries} == {
        "a-medium.png": "duplicate", "b-smaller.jpg": "duplicate", "c-large.jpg": "accepted"}
    for name in ("a-medium.png", "b-smaller.jpg"):
        entry = entry_for(concept, name)
        assert entry.duplicate_of == "c-large.jpg", (name, entry.reason)
        assert "near duplicate of" in entry.reason and "c-large.jpg" in entry.reason


def test_distinct_shots_of_the_same_dog_are_not_duplicates(tmp_path):
    concept = prepare(DEMO_CONCEPT_DIR, tmp_path)
    assert concept.counts == {"accepted": 5, "rejected": 0, "duplicate": 0, "ignored": 0, "total": 5}


def test_perceptual_hashes_are_the_published_phash_and_dhash():
    # values imagehash 4.3.2 (the package these hashes used to come from) gives for the demo photos: the
    # numpy-only hashes are bit for bit the same, so the near-duplicate thresholds keep their meaning
    from hubtools.concepts.dedupe import dhash, perceptual_hash, phash

    expected = {"00.jpg": (0xE8DD8B263F845929, 0x7333132F0F2F8D95), "01.jpg": (0xF994CCCF93306391, 0x3832969F1A339B99)}
    for name, (want_phash, want_dhash) in expected.items():
        with Image.open(DEMO_CONCEPT_DIR / name) as photo:
            assert (phash(photo), dhash(photo)) == (want_phash, want_dhash)
            small = photo.resize((200, 200))
            assert perceptual_hash(photo).distance(perceptual_hash(small)) <= 4
    with Image.open(DEMO_CONCEPT_DIR / "00.jpg") as a, Image.open(DEMO_CONCEPT_DIR / "01.jpg") as b:
        assert perceptual_hash(a).distance(perceptual_hash(b)) > 20


@pytest.mark.parametrize("resolution", [64, 512])
def test_demo_concept_prepares_at_64_and_512(tmp_path, resolution):
    concept = prepare(DEMO_CONCEPT_DIR, tmp_path, resolution=resolution, caption="a photo of pkblz dog")
    assert concept.num_images == 5
    for path in concept.images:
        with Image.open(path) as image:
            assert (image.format, image.mode, image.size) == ("PNG", "RGB", (resolution, resolution))
    manifest = json.loads(concept.manifest_path.read_text())
    assert manifest["resolution"] == resolution and manifest["source_revision"] is None
    assert manifest["source"] == str(DEMO_CONCEPT_DIR.resolve())
    first = manifest["entries"][0]
    assert first["path"] == "00.jpg" and first["status"] == "accepted" and first["output"] == "images/0000.png"
    assert first["original_size"] == [780, 780]
    assert first["sha256"] == hashlib.sha256((DEMO_CONCEPT_DIR / "00.jpg").read_bytes()).hexdigest()


# --- preprocessing, captions, determinism -------------------------------------------------------


def test_crop_choice_picks_the_square(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    two_tone((100, 300), RED, BLUE, split="vertical").save(src / "tall.png")  # red top half, blue bottom
    top = prepare(src, tmp_path, crop="top", buckets="off")
    assert close(pixels(top.images[0]), RED)
    bottom = prepare(src, tmp_path, crop="bottom", buckets="off")
    assert close(pixels(bottom.images[0]), BLUE)
    with pytest.raises(ConfigError, match="unknown crop 'middle'"):
        prepare(src, tmp_path, crop="middle")


def test_captions_from_metadata_files_else_the_instance_prompt(tmp_path):
    src = tmp_path / "src"
    (src / "more").mkdir(parents=True)
    for photo, name in zip(sorted(DEMO_CONCEPT_DIR.glob("*.jpg")), ["a.png", "b.png", "more/c.png", "more/d.png"]):
        with Image.open(photo) as image:
            image.resize((80, 80)).save(src / name)
    (src / "metadata.jsonl").write_text(json.dumps({"file_name": "a.png", "text": "pkblz dog on grass"}) + "\n")
    (src / "more" / "metadata.csv").write_text("file_name,text\nc.png,\"pkblz dog, asleep\"\n")

    concept = prepare(src, tmp_path, caption="a photo of pkblz dog")
    assert concept.captions == ["pkblz dog on grass", "a photo of pkblz dog", "pkblz dog, asleep", "a photo of pkblz dog"]
    assert entry_for(concept, "metadata.jsonl").status == "ignored"
    rows = [json.loads(line) for line in concept.metadata_path.read_text().splitlines()]
    assert rows[2] == {"file_name": "images/0002.png", "text": "pkblz dog, asleep"}

    (src / "metadata.jsonl").write_text("{not json\n")
    with pytest.raises(InputError, match="metadata.jsonl line 1 is not valid JSON"):
        prepare(src, tmp_path)


def test_output_is_an_imagefolder_that_load_dataset_reads(tmp_path):
    import datasets

    concept = prepare(DEMO_CONCEPT_DIR, tmp_path, caption="a photo of pkblz dog")
    loaded = datasets.load_dataset("imagefolder", data_dir=str(concept.dir), split="train")
    assert len(loaded) == 5  # the contact sheet is not in metadata.jsonl, so it is not a row
    assert loaded[0]["image"].size == (RES, RES) and loaded[0]["text"] == "a photo of pkblz dog"


def test_same_input_gives_byte_identical_outputs_and_src_is_untouched(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    src = tmp_path / "src"
    src.mkdir()
    for path in DEMO_CONCEPT_DIR.glob("*.jpg"):
        shutil.copy(path, src / path.name)
    exif = Image.Exif()
    exif[0x0112] = 8
    two_tone((120, 90), RED, BLUE).save(src / "rotated.jpg", exif=exif)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    before = tree_fingerprint(src)

    first = prepare_concept(src, tmp_path / "one", resolution=RES, progress=False)
    second = prepare_concept(src, tmp_path / "two", resolution=RES, progress=False)
    assert tree_fingerprint(src) == before
    one = {path: digest for path, (digest, _) in tree_fingerprint(first.dir).items()}
    two = {path: digest for path, (digest, _) in tree_fingerprint(second.dir).items()}
    assert one == two and "contact_sheet.png" in one and "images/0005.png" in one
    assert json.loads(first.manifest_path.read_text())["created_at"] == "2023-11-14T22:13:20Z"


def test_load_prepared_concept_reads_back_what_prepare_wrote(tmp_path):
    written = prepare(DEMO_CONCEPT_DIR, tmp_path, caption="a photo of pkblz dog")
    read = load_prepared_concept(written.dir)
    assert read.images == written.images and read.captions == written.captions
    assert read.entries == written.entries and read.counts == written.counts
    assert (read.resolution, read.source, read.source_revision) == (RES, written.source, None)
    with pytest.raises(InputError, match="not a prepared concept folder"):
        load_prepared_concept(tmp_path)


# --- failures the user must see -------------------------------------------------------------------


def test_strict_fails_on_any_rejection_after_writing_the_record(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(DEMO_CONCEPT_DIR, src)
    (src / "oops.jpg").write_bytes(b"")
    with pytest.raises(ConceptNotUsableError, match="1 file\\(s\\) rejected and --strict is set") as caught:
        prepare(src, tmp_path, strict=True)
    assert caught.value.concept.counts["accepted"] == 5
    assert (tmp_path / "out" / "manifest.json").is_file() and (tmp_path / "out" / "contact_sheet.png").is_file()
    with pytest.raises(ConceptNotUsableError, match=r"only 5 usable images .* \(need 6\)"):
        prepare(src, tmp_path, min_images=6)


def test_contact_sheet_is_a_real_png_showing_what_was_left_out(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(DEMO_CONCEPT_DIR, src)
    (src / "broken.jpg").write_text("nope")
    concept = prepare(src, tmp_path)
    with Image.open(concept.contact_sheet_path) as sheet:
        assert sheet.format == "PNG" and sheet.width >= 800 and sheet.height >= 300
        colours = {colour for _, colour in sheet.convert("RGB").getcolors(1 << 20)}
    assert (46, 139, 87) in colours  # accepted frames
    assert (200, 40, 40) in colours  # the rejected file is listed in red


def test_output_folder_must_not_be_the_source_or_a_user_folder(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(DEMO_CONCEPT_DIR, src)
    with pytest.raises(InputError, match="overlaps the source folder"):
        prepare_concept(src, src / "prepared", resolution=RES, progress=False)
    holiday = tmp_path / "holiday"
    holiday.mkdir()
    (holiday / "beach.jpg").write_bytes(b"precious")
    with pytest.raises(InputError, match="exists and is not a prepared concept folder"):
        prepare_concept(src, holiday, resolution=RES, progress=False)
    assert (holiday / "beach.jpg").read_bytes() == b"precious"
    with pytest.raises(InputError, match="neither an existing folder nor a Hub dataset id"):
        prepare_concept(tmp_path / "no such folder", tmp_path / "o", progress=False)
    # re-preparing into an earlier prepared folder replaces it whole
    prepare_concept(src, tmp_path / "out", resolution=RES, progress=False)
    (src / "00.jpg").unlink()
    again = prepare_concept(src, tmp_path / "out", resolution=RES, progress=False)
    assert again.num_images == 4 and not (tmp_path / "out" / "images" / "0004.png").exists()


# --- CLI ---------------------------------------------------------------------------------------------


def test_cli_prepare_prints_every_file_and_where_outputs_are(tmp_path, capsys):
    src = tmp_path / "src"
    shutil.copytree(DEMO_CONCEPT_DIR, src)
    (src / "notes.txt").write_text("hello")
    (src / "zero.png").write_bytes(b"")
    out = tmp_path / "prepared"
    code = main(["concept", "prepare", str(src), "--out", str(out), "--resolution", "64", "--caption", "a photo of pkblz dog"])
    printed = capsys.readouterr().out
    assert code == 0
    for text in ["00.jpg", "accepted", "images/0004.png", "notes.txt", "ignored", "zero.png", "rejected", "empty file"]:
        assert text in printed
    assert "5 accepted, 1 rejected, 0 duplicate, 1 ignored" in printed
    assert str(out / "contact_sheet.png") in printed.replace("\n", "")
    assert load_prepared_concept(out).captions == ["a photo of pkblz dog"] * 5


def test_cli_prepare_fails_with_one_line_and_still_shows_the_table(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.jpg").write_text("not a photo")
    code = main(["concept", "prepare", str(src), "--out", str(tmp_path / "o"), "--resolution", "64"])
    captured = capsys.readouterr()
    assert code == 2
    assert "a.jpg" in captured.out and "rejected" in captured.out
    error_lines = [line for line in captured.err.splitlines() if line.strip()]
    assert error_lines[0].startswith("error: only 0 usable images") and "Traceback" not in captured.err


def test_dangling_link_is_rejected_as_unreadable(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(DEMO_CONCEPT_DIR, src)
    (src / "gone.jpg").symlink_to(tmp_path / "deleted.jpg")
    concept = prepare(src, tmp_path)
    entry = entry_for(concept, "gone.jpg")
    assert entry.status == "rejected" and entry.reason.startswith("unreadable file (")


def test_cli_prints_odd_file_names_as_they_are(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(DEMO_CONCEPT_DIR / "00.jpg", src / "[bold]dog.jpg")
    assert main(["concept", "prepare", str(src), "--out", str(tmp_path / "o"), "--resolution", "64"]) == 0
    assert "[bold]dog.jpg" in capsys.readouterr().out


def test_only_photo_decoders_are_used(tmp_path):
    # An icon or bitmap renamed .jpg must not reach Pillow's exotic plugins (EPS would run Ghostscript).
    src = tmp_path / "src"
    shutil.copytree(DEMO_CONCEPT_DIR, src)
    Image.new("RGB", (128, 128), RED).save(src / "icon.jpg", format="ICO")
    Image.new("RGB", (128, 128), RED).save(src / "bitmap.png", format="PPM")
    concept = prepare(src, tmp_path)
    for name in ("icon.jpg", "bitmap.png"):
        entry = entry_for(concept, name)
        assert entry.status == "rejected" and "not a readable image" in entry.reason


def test_contact_sheet_names_a_local_folder_without_its_path(tmp_path):
    """The sheet is pushed with models and datasets: where the photos sit on this disk must not show."""
    sheets = []
    for parent in ("a", "somewhere/much/deeper"):
        src = tmp_path / parent / "dog"
        src.mkdir(parents=True)
        two_tone((100, 100), RED, BLUE).save(src / "one.png")
        concept = prepare_concept(src, tmp_path / parent / "out", resolution=RES, progress=False)
        sheets.append(concept.contact_sheet_path.read_bytes())
        assert concept.public_source == "local folder dog/"
    assert sheets[0] == sheets[1]
