"""Concept sets on the (local) Hub: push -> pull -> load_dataset, revisions, image-column detection."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hubtools.cli.app import main
from hubtools.concepts import load_prepared_concept, prepare_concept, push_concept
from hubtools.errors import InputError
from hubtools.resources import DEMO_CONCEPT_DIR

CAPTION = "a photo of pkblz dog"


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture(scope="module")
def prepared_dog(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dog") / "concept"
    prepare_concept(DEMO_CONCEPT_DIR, out, resolution=64, caption=CAPTION, progress=False)
    return out


@pytest.fixture(scope="module")
def pushed_dog(local_hub, prepared_dog) -> str:
    repo_id = f"{local_hub.user}/dog-concept"
    url = push_concept(prepared_dog, repo_id, token=local_hub.token, identifier="pkblz", class_noun="dog")
    assert url.rstrip("/").endswith(f"datasets/{repo_id}")
    return repo_id


def test_push_then_load_dataset_gives_the_same_images_and_captions(local_hub, prepared_dog, pushed_dog):
    import datasets

    local = load_prepared_concept(prepared_dog)
    remote = datasets.load_dataset(pushed_dog, split="train", token=local_hub.token)
    assert remote.column_names == ["image", "text"]
    assert len(remote) == 5
    assert remote["text"] == [CAPTION] * 5
    for row, image_path in zip(remote, local.images, strict=True):
        assert row["image"].size == (64, 64)
        assert np.array_equal(np.asarray(row["image"].convert("RGB")), _pixels(image_path))


def test_pushed_repo_has_card_contact_sheet_and_public_manifest(local_hub, pushed_dog):
    from huggingface_hub import DatasetCard, HfApi

    files = HfApi().list_repo_files(pushed_dog, repo_type="dataset", token=local_hub.token)
    assert {"README.md", "contact_sheet.png", "manifest.json"} <= set(files)
    card = DatasetCard.load(pushed_dog, repo_type="dataset", token=local_hub.token)
    assert card.data.license == "cc-by-4.0"
    assert "text-to-image" in card.data.task_categories
    assert card.data.get("dataset_info") is not None  # push_to_hub's schema survived our card
    assert "**pkblz**" in card.text and "**dog**" in card.text
    assert "![Contact sheet" in card.text and "contact_sheet.png" in card.text
    assert "| Images | 5 |" in card.text and "64 px" in card.text
    assert f"hubtools train-and-push --concept {pushed_dog} --identifier pkblz --class-noun dog" in card.text
    manifest_file = HfApi().hf_hub_download(pushed_dog, "manifest.json", repo_type="dataset", token=local_hub.token)
    manifest = json.loads(Path(manifest_file).read_text())
    assert manifest["source"] == "local folder dog/"  # no local absolute paths published
    assert local_hub.token not in card.content and local_hub.token not in json.dumps(manifest)


def test_pull_records_the_commit_and_reproduces_the_images(local_hub, prepared_dog, pushed_dog, tmp_path):
    from huggingface_hub import HfApi

    sha = HfApi().dataset_info(pushed_dog, token=local_hub.token).sha
    pulled = prepare_concept(pushed_dog, tmp_path / "pulled", resolution=64, token=local_hub.token, progress=False, hub_only=True)
    assert pulled.source == pushed_dog
    assert pulled.source_revision == sha and len(sha) == 40
    assert json.loads(pulled.manifest_path.read_text())["source_revision"] == sha
    assert pulled.captions == [CAPTION] * 5  # the dataset's text column wins over a missing --caption
    assert [entry.row for entry in pulled.entries] == [0, 1, 2, 3, 4]
    assert pulled.image_column == "image"
    for mine, theirs in zip(load_prepared_concept(prepared_dog).images, pulled.images, strict=True):
        assert np.array_equal(_pixels(mine), _pixels(theirs))
    reread = load_prepared_concept(tmp_path / "pulled")
    assert reread.source_revision == sha and reread.source == pushed_dog


def test_pull_at_an_older_revision_uses_that_commit(local_hub, tmp_path):
    import datasets
    from huggingface_hub import HfApi

    repo_id = f"{local_hub.user}/changing-concept"
    red = Image.new("RGB", (80, 80), (220, 20, 20))
    blue = Image.new("RGB", (80, 80), (20, 20, 220))
    datasets.Dataset.from_dict({"image": [red], "text": ["v1"]}).cast_column("image", datasets.Image()).push_to_hub(
        repo_id, token=local_hub.token
    )
    first = HfApi().dataset_info(repo_id, token=local_hub.token).sha
    datasets.Dataset.from_dict({"image": [blue], "text": ["v2"]}).cast_column("image", datasets.Image()).push_to_hub(
        repo_id, token=local_hub.token
    )
    assert HfApi().dataset_info(repo_id, token=local_hub.token).sha != first

    old = prepare_concept(f"{repo_id}@{first}", tmp_path / "old", resolution=64, token=local_hub.token, progress=False)
    assert old.source_revision == first
    assert old.captions == ["v1"]
    assert tuple(_pixels(old.images[0])[32, 32]) == (220, 20, 20)
    new = prepare_concept(repo_id, tmp_path / "new", resolution=64, token=local_hub.token, progress=False)
    assert new.source_revision != first and new.captions == ["v2"]


def test_hackathon_style_dataset_with_other_column_names(local_hub, tmp_path):
    import datasets

    repo_id = f"{local_hub.user}/hackathon-style"
    photos = [Image.new("RGB", (96, 72), colour) for colour in ((200, 0, 0), (0, 200, 0))]
    table = datasets.Dataset.from_dict({"id": [1, 2], "img": photos, "mask": photos}).cast_column(
        "img", datasets.Image()
    ).cast_column("mask", datasets.Image())
    table.push_to_hub(repo_id, token=local_hub.token)

    with pytest.raises(InputError, match="several image columns .*img, mask.*--image-column"):
        prepare_concept(repo_id, tmp_path / "a", resolution=64, token=local_hub.token, progress=False)
    with pytest.raises(InputError, match="no column 'photo'"):
        prepare_concept(repo_id, tmp_path / "b", resolution=64, image_column="photo", token=local_hub.token, progress=False)
    concept = prepare_concept(
        repo_id, tmp_path / "c", resolution=64, image_column="img", caption=CAPTION, token=local_hub.token, progress=False
    )
    assert concept.counts["accepted"] == 2 and concept.image_column == "img"
    assert concept.captions == [CAPTION, CAPTION]  # no text column: the instance prompt
    assert tuple(_pixels(concept.images[1])[32, 32]) == (0, 200, 0)


def test_missing_dataset_is_one_clear_line(local_hub, tmp_path):
    with pytest.raises(InputError, match=r"dataset tester/no-such-set not found"):
        prepare_concept("tester/no-such-set", tmp_path / "x", token=local_hub.token, progress=False)


def test_cli_push_and_pull(local_hub, hf_token, prepared_dog, tmp_path, capsys):
    repo_id = f"{local_hub.user}/dog-via-cli"
    assert main(["concept", "push", str(prepared_dog), repo_id, "--identifier", "pkblz", "--class-noun", "dog"]) == 0
    assert f"datasets/{repo_id}" in capsys.readouterr().out

    assert main(["concept", "pull", repo_id, "--out", str(tmp_path / "pulled"), "--resolution", "64"]) == 0
    out = capsys.readouterr().out
    assert "row 4" in out and "accepted" in out and "revision:" in out
    assert load_prepared_concept(tmp_path / "pulled").num_images == 5

    # pull never reads a local folder, even one that looks like a repo id
    assert main(["concept", "pull", str(prepared_dog), "--out", str(tmp_path / "nope")]) == 2
    assert "not a Hub dataset id" in capsys.readouterr().err


def test_raw_imagefolder_repo_of_jpegs_is_read_too(local_hub, tmp_path):
    """Many shared concept sets are plain folders of photos uploaded as-is, not parquet."""
    from huggingface_hub import HfApi

    repo_id = f"{local_hub.user}/raw-photos"
    upload = tmp_path / "upload"
    upload.mkdir()
    for path in sorted(DEMO_CONCEPT_DIR.glob("*.jpg"))[:3]:
        (upload / path.name).write_bytes(path.read_bytes())
    api = HfApi()
    api.create_repo(repo_id, repo_type="dataset", token=local_hub.token)
    api.upload_folder(repo_id=repo_id, folder_path=upload, repo_type="dataset", token=local_hub.token)

    concept = prepare_concept(repo_id, tmp_path / "out", resolution=64, caption=CAPTION, token=local_hub.token, progress=False)
    assert concept.counts["accepted"] == 3
    assert [entry.label for entry in concept.entries] == ["row 0 (00.jpg)", "row 1 (01.jpg)", "row 2 (02.jpg)"]
    assert [entry.original_size for entry in concept.entries] == [[780, 780], [781, 781], [780, 780]]


def test_push_with_a_bad_token_is_one_line_without_the_token(local_hub, prepared_dog):
    from hubtools.errors import HubError

    with pytest.raises(HubError) as caught:
        push_concept(prepared_dog, f"{local_hub.user}/refused", token="not-a-valid-token")
    message = str(caught.value)
    assert message.startswith(f"could not push dataset {local_hub.user}/refused: HTTP 401")
    assert "not-a-valid-token" not in message and "\n" not in message


def test_unreachable_hub_is_a_clear_error(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:  # a port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_HUB_ETAG_TIMEOUT="2", HF_HUB_DOWNLOAD_TIMEOUT="2")
    result = subprocess.run(
        [sys.executable, "-m", "hubtools", "concept", "pull", "someone/photos", "--out", str(tmp_path / "o")],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode == 2
    assert f"error: could not reach the Hub at http://127.0.0.1:{port} to read dataset someone/photos" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "o").exists()


def test_private_push_is_hidden_from_others(local_hub, prepared_dog):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    repo_id = f"{local_hub.user}/private-dog"
    push_concept(prepared_dog, repo_id, token=local_hub.token, private=True)
    assert HfApi().dataset_info(repo_id, token=local_hub.token).private is True
    with pytest.raises(RepositoryNotFoundError):
        HfApi().dataset_info(repo_id, token=local_hub.other_token)


def test_sidecar_captions_and_buckets_survive_push_and_pull(local_hub, tmp_path):
    """kohya ``.txt`` captions: prepare -> ``concept push`` (the dataset's text column, which the viewer shows)
    -> ``concept pull`` gives the same captions, bucket sizes and pixels; each command as a user runs it."""
    import os
    import subprocess
    import sys

    import datasets
    import httpx

    from test_training_support import write_mixed_photos

    sidecars = {"portrait.jpg": "pkblz dog, on a red sofa", "landscape.jpg": "pkblz dog, running on the beach"}
    photos = write_mixed_photos(tmp_path / "photos", captions=sidecars)
    env = {**os.environ, "HF_TOKEN": local_hub.token}
    repo_id = f"{local_hub.user}/captioned-dog"

    def hubtools(*args: str) -> None:
        result = subprocess.run([sys.executable, "-m", "hubtools", *args], capture_output=True, text=True, env=env,
                                timeout=300)
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]

    common = ["--resolution", "64", "--size-multiple", "8", "--caption", CAPTION]
    hubtools("concept", "prepare", str(photos), "--out", str(tmp_path / "prepared"), *common)
    prepared = load_prepared_concept(tmp_path / "prepared")
    assert set(sidecars.values()) < set(prepared.captions) and CAPTION in prepared.captions
    hubtools("concept", "push", str(prepared.dir), repo_id, "--identifier", "pkblz", "--class-noun", "dog")

    remote = datasets.load_dataset(repo_id, split="train", token=local_hub.token)
    assert remote["text"] == prepared.captions
    from huggingface_hub import DatasetCard

    card = DatasetCard.load(repo_id, repo_type="dataset", token=local_hub.token).text
    assert "| Buckets (images) | 56x72: 2, 80x48: 2, 64x64: 1 |" in card and "aspect-ratio buckets" in card
    page = httpx.get(f"{local_hub.url}/datasets/{repo_id}", timeout=30)
    assert page.status_code == 200 and all(caption in page.text for caption in sidecars.values())

    hubtools("concept", "pull", repo_id, "--out", str(tmp_path / "pulled"), *common)
    pulled = load_prepared_concept(tmp_path / "pulled")
    assert pulled.captions == prepared.captions
    assert pulled.bucket_counts() == prepared.bucket_counts() == {"56x72": 2, "80x48": 2, "64x64": 1}
    for ours, theirs in zip(prepared.images, pulled.images, strict=True):
        assert np.array_equal(_pixels(ours), _pixels(theirs))
