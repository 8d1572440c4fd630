"""datasets and diffusers against the local hub through HF_ENDPOINT (no endpoint argument anywhere)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid

import numpy as np
import pytest
from huggingface_hub import HfApi


def test_image_dataset_push_to_hub_and_load_dataset(local_hub):
    import datasets
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)) for _ in range(3)]
    dataset = datasets.Dataset.from_dict({"image": images, "caption": ["a dog", "a sks dog", "a cat"]})
    dataset = dataset.cast_column("image", datasets.Image())
    repo_id = f"{local_hub.user}/images-{uuid.uuid4().hex[:8]}"

    dataset.push_to_hub(repo_id, token=local_hub.token)
    files = HfApi(token=local_hub.token).list_repo_files(repo_id, repo_type="dataset")
    assert "README.md" in files and any(f.endswith(".parquet") for f in files)

    loaded = datasets.load_dataset(repo_id, split="train", token=local_hub.token)
    assert loaded["caption"] == ["a dog", "a sks dog", "a cat"]
    for original, back in zip(images, loaded["image"]):
        assert np.array_equal(np.asarray(original), np.asarray(back))


def test_diffusers_pipeline_save_upload_from_pretrained(local_hub, tmp_path):
    import torch
    from diffusers import DiffusionPipeline

    from hubtools.tinymodel import build_tiny_pipeline

    pipeline = build_tiny_pipeline()
    pipeline.save_pretrained(tmp_path / "pipe", safe_serialization=True)
    repo_id = f"{local_hub.user}/pipe-{uuid.uuid4().hex[:8]}"
    api = HfApi(token=local_hub.token)
    api.create_repo(repo_id)
    api.upload_folder(repo_id=repo_id, folder_path=tmp_path / "pipe")

    loaded = DiffusionPipeline.from_pretrained(repo_id, token=local_hub.token)
    assert type(loaded).__name__ == type(pipeline).__name__
    original, reloaded = pipeline.unet.state_dict(), loaded.unet.state_dict()
    assert original.keys() == reloaded.keys()
    assert all(torch.equal(original[key], reloaded[key]) for key in original)
    info = api.model_info(repo_id)
    assert "diffusers" in info.tags
    unet_weights = next(s for s in info.siblings if s.rfilename == "unet/diffusion_pytorch_model.safetensors")
    assert unet_weights.lfs is not None


_AFTER_IMPORT_SCRIPT = """
import json, os, sys, tempfile
from pathlib import Path
os.environ.pop("HF_ENDPOINT", None)
os.environ["HF_HOME"] = tempfile.mkdtemp()
import huggingface_hub, datasets, diffusers  # read HF_ENDPOINT now: the real Hub
from huggingface_hub import HfApi, hf_hub_download, model_info
from hubtools.hubenv import point_clients_at
from hubtools.localhub import serve_in_background

with serve_in_background(Path(tempfile.mkdtemp()), tokens={"tester": "tok-1"}) as hub:
    point_clients_at(hub.url)
    api = HfApi(token="tok-1")  # no endpoint argument
    api.create_repo("tester/late")
    api.upload_file(path_or_fileobj=b"late", path_in_repo="f.txt", repo_id="tester/late")
    downloaded = Path(hf_hub_download("tester/late", "f.txt", token="tok-1")).read_bytes().decode()
    sha = model_info("tester/late", token="tok-1").sha
    datasets.Dataset.from_dict({"x": [1, 2]}).push_to_hub("tester/late-ds", token="tok-1")
    rows = list(datasets.load_dataset("tester/late-ds", split="train", token="tok-1")["x"])
    print(json.dumps({"downloaded": downloaded, "sha": sha, "rows": rows, "endpoint": hub.url,
                      "parquet_export": datasets.config.USE_PARQUET_EXPORT,
                      "diffusers": diffusers.utils.constants.HUGGINGFACE_CO_RESOLVE_ENDPOINT}))
"""


@pytest.mark.slow
def test_point_clients_at_works_after_the_clients_were_imported(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_AFTER_IMPORT_SCRIPT)],
        capture_output=True, text=True, timeout=180, cwd=tmp_path,
        env={k: v for k, v in __import__("os").environ.items() if k != "HF_ENDPOINT"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["downloaded"] == "late"
    assert len(report["sha"]) == 40
    assert report["rows"] == [1, 2]
    assert report["parquet_export"] is False
    assert report["diffusers"] == report["endpoint"]
