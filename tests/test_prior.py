"""Prior-preservation class images: generated once and cached, or taken from a folder or a Hub dataset."""

from __future__ import annotations

import pytest
from PIL import Image

from hubtools.config import RunConfig
from hubtools.errors import InputError
from hubtools.families import of_pipeline
from hubtools.pipelines import BaseModel
from hubtools.tinymodel import build_tiny_pipeline
from hubtools.prior import class_images_key, ensure_class_images

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def base():
    pipe = build_tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return BaseModel(model_id="hubtools/tiny-stable-diffusion", revision="a" * 40, pipeline=pipe, family=of_pipeline(pipe))


def _cfg(**prior) -> RunConfig:
    return RunConfig.model_validate({
        "concept": {"identifier": "pkblz", "class_noun": "dog"},
        "training": {"resolution": 64, "seed": 3},
        "prior": {"num_class_images": 3, "generation_steps": 2, "generation_batch_size": 2, **prior},
    })


def test_generated_once_then_a_cache_hit(base, tmp_path):
    first = ensure_class_images(_cfg(), base, cache_dir=tmp_path, progress=False)
    assert first.generated and first.source == "generated" and len(first.images) == 3
    assert first.dir == tmp_path / "class-images" / first.cache_key
    for path in first.images:
        with Image.open(path) as image:
            assert image.size == (64, 64)
    stamps = [p.stat().st_mtime_ns for p in first.images]

    second = ensure_class_images(_cfg(), base, cache_dir=tmp_path, progress=False)
    assert not second.generated and second.source == "cache"
    assert (second.cache_key, second.images) == (first.cache_key, first.images)
    assert [p.stat().st_mtime_ns for p in second.images] == stamps  # reused, not regenerated
    assert second.to_dict() == {"count": 3, "cache_key": first.cache_key, "source": "cache", "generated": False}


def test_cache_root_comes_from_hubtools_cache(base, tmp_path, monkeypatch):
    monkeypatch.setenv("HUBTOOLS_CACHE", str(tmp_path / "env-cache"))
    result = ensure_class_images(_cfg(num_class_images=1), base, progress=False)
    assert result.dir.parent == tmp_path / "env-cache" / "class-images"


def test_key_follows_what_decides_the_pixels(base):
    key = class_images_key(_cfg(), base)
    assert class_images_key(_cfg(generation_batch_size=1), base) == key  # per-image seeds: batching is irrelevant
    assert class_images_key(_cfg(class_prompt="a photo of a {class_noun} in a park"), base) != key
    assert class_images_key(_cfg(num_class_images=4), base) != key
    assert class_images_key(_cfg(guidance_scale=3.0), base) != key
    other_revision = BaseModel(base.model_id, "b" * 40, base.pipeline, base.family)
    assert class_images_key(_cfg(), other_revision) != key
    reseeded = _cfg()
    reseeded.training.seed = 4
    assert class_images_key(reseeded, base) != key


class _FailingPipeline:
    """Delegates to the tiny pipeline, and fails on the second batch (a crash mid-generation)."""

    def __init__(self, pipe):
        self.pipe, self.calls = pipe, 0

    def __getattr__(self, name):
        return getattr(self.pipe, name)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("interrupted")
        return self.pipe(*args, **kwargs)


def test_an_interrupted_generation_leaves_nothing_that_looks_cached(base, tmp_path):
    failing = BaseModel(base.model_id, base.revision, _FailingPipeline(base.pipeline), base.family)
    with pytest.raises(RuntimeError, match="interrupted"):
        ensure_class_images(_cfg(), failing, cache_dir=tmp_path, progress=False)
    assert not list((tmp_path / "class-images").glob("*"))  # rendered first, written whole after: nothing there
    again = ensure_class_images(_cfg(), base, cache_dir=tmp_path, progress=False)
    assert again.generated and len(again.images) == 3


def test_class_images_from_a_folder(base, tmp_path):
    folder = tmp_path / "dogs"
    folder.mkdir()
    for i in range(5):
        Image.new("RGB", (80, 96), (i * 40, 90, 90)).save(folder / f"{i}.jpg")
    (folder / "notes.txt").write_text("not an image")
    result = ensure_class_images(_cfg(source=str(folder)), base, progress=False)
    assert not result.generated and result.source == f"folder:{folder}"
    assert [p.name for p in result.images] == ["0.jpg", "1.jpg", "2.jpg"]

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="has no images"):
        ensure_class_images(_cfg(source=str(empty)), base, progress=False)


def test_class_images_from_a_hub_dataset(base, tmp_path, local_hub):
    import datasets

    datasets.config.USE_PARQUET_EXPORT = False
    images = [Image.new("RGB", (64, 64), (200, 20 * i, 20)) for i in range(4)]
    dataset = datasets.Dataset.from_dict({"image": images, "label": list(range(4))})
    dataset = dataset.cast_column("image", datasets.Image())
    dataset.push_to_hub("tester/dog-class-images", token=local_hub.token)

    result = ensure_class_images(_cfg(source="tester/dog-class-images"), base, cache_dir=tmp_path, progress=False)
    assert result.source == "hub:tester/dog-class-images" and not result.generated
    assert len(result.images) == 3 and result.dir.parent == tmp_path / "class-images"
    with Image.open(result.images[1]) as image:
        assert image.getpixel((0, 0)) == (200, 20, 20)

    with pytest.raises(InputError, match="prior.source: dataset tester/missing not found"):
        ensure_class_images(_cfg(source="tester/missing"), base, cache_dir=tmp_path, progress=False)
