"""The hackathon against the local hub seeded with entries: themes, the submission check, the leaderboard,
community concept sets, and the two showcase entry configs."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from hubtools.cli.app import main
from hubtools.basemodels import resolve_base_model
from hubtools.config import load_config
from hubtools.errors import ConfigError, HubError
from hubtools.hackathon import (
    HACKATHON_TAG,
    NO_THEME,
    check_submission,
    community_datasets,
    get_theme,
    leaderboard,
    load_themes,
)
from hubtools.resources import DEMO_CONCEPT_DIR, HACKATHON_DIR

# Repos of this module carry this prefix, so entries that other test modules push don't disturb the asserts.
PREFIX = f"hk{uuid.uuid4().hex[:6]}"
GOOD_META = {"license": "creativeml-openrail-m", "widget": "a photo of nlwx dog swimming"}
IMAGE_LINE = "![samples](images/samples_grid.png)"


def _card(tags: list[str] | None, *, license: str | None = "creativeml-openrail-m",
          widget: str | None = "a photo of nlwx dog swimming", body: str = IMAGE_LINE) -> str:
    lines = ["---"]
    if license:
        lines.append(f"license: {license}")
    if tags is not None:
        lines += ["tags:"] + [f"- {tag}" for tag in tags]
    if widget:
        lines += ["widget:", f"- text: {widget}"]
    lines.append("---")
    return "\n".join(lines) + f"\n\n# An entry\n\n{body}\n"


def _png_bytes() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def _lora_bytes(lora: bool = True) -> bytes:
    import torch
    from safetensors.torch import save

    key = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q." + ("lora_A.weight" if lora else "weight")
    return save({key: torch.zeros(4, 32)})


def _push(api, repo_id: str, files: dict[str, bytes | str | Path], *, private: bool = False,
          repo_type: str = "model") -> str:
    from huggingface_hub import CommitOperationAdd

    api.create_repo(repo_id, private=private, repo_type=repo_type, exist_ok=True)
    operations = []
    for path, content in files.items():
        if isinstance(content, str):
            content = content.encode("utf-8")
        operations.append(CommitOperationAdd(path_in_repo=path, path_or_fileobj=content))
    for folder in [v for v in files.values() if isinstance(v, Path)]:
        raise AssertionError(folder)  # folders go through upload_folder below
    api.create_commit(repo_id, operations=operations, commit_message="seed", repo_type=repo_type)
    return repo_id


@pytest.fixture(scope="module")
def tiny_pipeline_dir(tmp_path_factory) -> Path:
    from hubtools.tinymodel import build_tiny_pipeline

    folder = tmp_path_factory.mktemp("tiny-pipeline")
    build_tiny_pipeline().save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def entries(local_hub, tiny_pipeline_dir) -> dict[str, str]:
    """Seeded entries: name -> repo id. Likes are set server-side."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=local_hub.url, token=local_hub.token)
    user = local_hub.user
    image = {"images/samples_grid.png": _png_bytes()}
    lora = {"pytorch_lora_weights.safetensors": _lora_bytes()}
    repos = {
        # name: (files, private, likes)
        "clean-lora": ({"README.md": _card(["stable-diffusion", HACKATHON_TAG, "animal"]), **image, **lora}, False, 5),
        "aardvark": ({"README.md": _card([HACKATHON_TAG, "animal"]), **image, **lora}, False, 5),
        "two-themes": ({"README.md": _card([HACKATHON_TAG, "animal", "food"]), **image, **lora}, False, 3),
        "broken": ({"README.md": _card([HACKATHON_TAG, "science"], license=None, widget=None,
                                                 body="No pictures yet."),
                    "pytorch_lora_weights.safetensors": _lora_bytes(lora=False)}, False, 7),
        "private-entry": ({"README.md": _card([HACKATHON_TAG, "animal"]), **image, **lora}, True, 50),
        "untagged": ({"README.md": _card(["animal"]), **image, **lora}, False, 100),
        "no-theme": ({"README.md": _card([HACKATHON_TAG]), **image, **lora}, False, 2),
        "bad-index": ({"README.md": _card([HACKATHON_TAG, "landscape"]), **image,
                       "model_index.json": json.dumps({"_class_name": "StableDiffusionPipeline",
                                                       "unet": ["diffusers", "UNet2DConditionModel"]})}, False, 1),
        "no-model": ({"README.md": _card([HACKATHON_TAG, "wildcard"]), **image}, False, 0),
        "no-card": ({**image, **lora}, False, 0),
        "lost-image": ({"README.md": _card([HACKATHON_TAG, "food"]), **lora}, False, 0),
        "web-image": ({"README.md": _card([HACKATHON_TAG, "wildcard"], body="![x](https://example.org/x.png)"),
                       **lora}, False, 4),
    }
    ids = {}
    for name, (files, private, likes) in repos.items():
        repo_id = _push(api, f"{user}/{PREFIX}-{name}", files, private=private)
        local_hub.set_likes(repo_id, likes)
        ids[name] = repo_id
    # A clean full pipeline entry (the tiny model's files) in the food theme.
    pipeline_id = f"{user}/{PREFIX}-pipeline"
    api.create_repo(pipeline_id)
    api.upload_folder(repo_id=pipeline_id, folder_path=tiny_pipeline_dir)
    _push(api, pipeline_id, {"README.md": _card([HACKATHON_TAG, "food"]), **image})
    local_hub.set_likes(pipeline_id, 9)
    ids["pipeline"] = pipeline_id
    return ids


def _by_rule(results) -> dict:
    return {result.rule: result for result in results}


# -- themes -------------------------------------------------------------------------------------------


def test_themes_load_with_tags_and_card_section():
    themes = load_themes()
    assert [t.name for t in themes] == ["animal", "science", "food", "landscape", "wildcard"]
    animal = get_theme("Animal")
    assert animal.tags == [HACKATHON_TAG, "animal"]
    section = animal.card_section_markdown()
    assert section.startswith("## ") and "Animal" in section and f"`{HACKATHON_TAG}`" in section
    assert animal.widget_text("nlwx", "dog") == "a photo of nlwx dog swimming in a coral reef"


def test_unknown_theme_lists_the_valid_names(capsys):
    with pytest.raises(ConfigError, match="animal, science, food, landscape, wildcard"):
        get_theme("sports")
    assert main(["hackathon", "leaderboard", "--theme", "sports"]) == 2
    assert "unknown hackathon theme 'sports'" in capsys.readouterr().err


def test_a_malformed_repo_id_is_named_before_any_hub_call(capsys):
    assert main(["hackathon", "check", "bad"]) == 2
    assert capsys.readouterr().err.startswith("error: model id 'bad' must look like namespace/name")
    assert main(["concept", "push", ".", "no-namespace"]) == 2
    assert capsys.readouterr().err.startswith("error: dataset id 'no-namespace' must look like namespace/name")


def test_cli_themes_json(capsys):
    assert main(["hackathon", "themes", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {t["name"] for t in data} == {"animal", "science", "food", "landscape", "wildcard"}
    assert all(HACKATHON_TAG in t["tags"] and t["name"] in t["tags"] for t in data)


def test_moved_base_models_resolve_with_a_note():
    resolved, note = resolve_base_model("runwayml/stable-diffusion-v1-5")
    assert resolved == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert "moved" in note and "runwayml/stable-diffusion-v1-5" in note
    assert resolve_base_model("CompVis/stable-diffusion-v1-4") == ("CompVis/stable-diffusion-v1-4", None)


# -- the submission check -----------------------------------------------------------------------------


def test_clean_lora_entry_passes_every_rule(entries, capsys):
    results = check_submission(entries["clean-lora"])
    assert [r.rule for r in results] == ["public", "hackathon-tag", "theme-tag", "license", "widget",
                                         "example-image", "model-files"]
    assert all(r.passed for r in results), [r for r in results if not r.passed]
    assert _by_rule(results)["theme-tag"].detail == "theme animal"
    assert main(["hackathon", "check", entries["clean-lora"]]) == 0
    assert "all 7 rules pass" in capsys.readouterr().out


def test_clean_pipeline_entry_passes_and_loads(entries):
    results = check_submission(entries["pipeline"], load=True)
    assert all(r.passed for r in results), [r for r in results if not r.passed]
    assert "loads" in _by_rule(results)["model-files"].detail


def test_broken_entry_reports_each_failing_rule_with_a_fix(entries, capsys):
    rules = _by_rule(check_submission(entries["broken"]))
    failed = {name for name, result in rules.items() if not result.passed}
    assert failed == {"license", "widget", "example-image", "model-files"}
    assert "creativeml-openrail-m" in rules["license"].fix
    assert "widget" in rules["widget"].fix
    assert "no example image" in rules["example-image"].detail
    assert "no LoRA tensors" in rules["model-files"].detail
    assert all(rules[name].fix for name in failed)
    assert main(["hackathon", "check", entries["broken"], "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["passed"] is False
    assert {r["rule"] for r in data["rules"] if not r["passed"]} == failed


def test_tag_and_theme_rules(entries):
    untagged = _by_rule(check_submission(entries["untagged"]))
    assert not untagged["hackathon-tag"].passed and HACKATHON_TAG in untagged["hackathon-tag"].fix
    assert untagged["theme-tag"].passed
    no_theme = _by_rule(check_submission(entries["no-theme"]))
    assert not no_theme["theme-tag"].passed and "animal, science" in no_theme["theme-tag"].fix
    two = _by_rule(check_submission(entries["two-themes"]))
    assert not two["theme-tag"].passed and "animal, food" in two["theme-tag"].detail


def test_model_file_rules(entries):
    bad_index = _by_rule(check_submission(entries["bad-index"]))["model-files"]
    assert not bad_index.passed and "no unet/ folder" in bad_index.detail
    no_model = _by_rule(check_submission(entries["no-model"]))["model-files"]
    assert not no_model.passed and "neither model_index.json nor LoRA" in no_model.detail


def test_missing_card_fails_the_card_rules_and_says_to_push_one(entries):
    rules = _by_rule(check_submission(entries["no-card"]))
    for name in ("hackathon-tag", "license", "widget", "example-image"):
        assert not rules[name].passed and "README.md" in rules[name].fix
    assert rules["model-files"].passed and rules["public"].passed


def test_image_hosted_elsewhere_counts_and_missing_image_file_fails(entries):
    assert _by_rule(check_submission(entries["web-image"]))["example-image"].passed
    rule = _by_rule(check_submission(entries["lost-image"]))["example-image"]
    assert not rule.passed and "images/samples_grid.png is not in the repo" in rule.detail


def test_private_entry_fails_public_rule_for_its_owner(entries, local_hub, hf_token, capsys):
    rules = _by_rule(check_submission(entries["private-entry"], token=local_hub.token))
    assert not rules["public"].passed and "update_repo_settings" in rules["public"].fix
    assert [name for name, r in rules.items() if not r.passed] == ["public"]
    assert main(["hackathon", "check", entries["private-entry"]]) == 1  # the CLI reads HF_TOKEN
    assert local_hub.token not in capsys.readouterr().out


def test_unknown_or_hidden_repo_is_one_line_error(entries, capsys):
    with pytest.raises(HubError, match="not found"):
        check_submission(entries["private-entry"])  # anonymous: a private repo is not there
    assert main(["hackathon", "check", "tester/does-not-exist"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "not found" in err and "Traceback" not in err


# -- the leaderboard ----------------------------------------------------------------------------------


def _mine(boards) -> dict[str, list[tuple[str, int]]]:
    return {board.theme: [(e.repo_id.split(f"{PREFIX}-")[1], e.likes) for e in board.entries if PREFIX in e.repo_id]
            for board in boards}


def test_leaderboard_groups_by_theme_and_orders_by_likes(entries):
    boards = leaderboard()
    assert [b.theme for b in boards][:5] == ["animal", "science", "food", "landscape", "wildcard"]
    mine = _mine(boards)
    # Ties are broken by name; the private entry is invisible; the untagged one is no entry at all.
    assert mine["animal"] == [("aardvark", 5), ("clean-lora", 5), ("two-themes", 3)]
    assert mine["science"] == [("broken", 7)]
    assert mine["food"] == [("pipeline", 9), ("lost-image", 0)]
    assert mine["landscape"] == [("bad-index", 1)]
    assert mine["wildcard"] == [("web-image", 4), ("no-model", 0)]
    assert mine[NO_THEME] == [("no-theme", 2)]
    for board in boards:
        assert [e.rank for e in board.entries] == list(range(1, len(board.entries) + 1))
        likes = [e.likes for e in board.entries]
        assert likes == sorted(likes, reverse=True)


def test_leaderboard_theme_filter_and_top(entries):
    boards = leaderboard(theme="animal", top=1)
    assert [b.theme for b in boards] == ["animal"] and len(boards[0].entries) == 1
    assert boards[0].entries[0].likes >= 5
    with pytest.raises(ConfigError, match="--top"):
        leaderboard(top=0)


def test_cli_leaderboard_json_and_table(entries, capsys):
    assert main(["hackathon", "leaderboard", "--theme", "wildcard", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data[0]["theme"] == "wildcard"
    names = [e["repo_id"] for e in data[0]["entries"] if PREFIX in e["repo_id"]]
    assert names == [entries["web-image"], entries["no-model"]]
    assert main(["hackathon", "leaderboard"]) == 0
    out = capsys.readouterr().out
    assert "Animal" in out and "Food" in out and f"{PREFIX}-pipeline" in out


# -- community concept sets ---------------------------------------------------------------------------


def test_community_datasets_tagged_or_searched(local_hub, capsys):
    from huggingface_hub import HfApi

    api = HfApi(endpoint=local_hub.url, token=local_hub.token)
    card = f"---\ntags:\n- {HACKATHON_TAG}\n---\n# photos\n"
    tagged = _push(api, f"{local_hub.user}/{PREFIX}-corgi-photos", {"README.md": card, "0.png": _png_bytes()},
                   repo_type="dataset")
    popular = _push(api, f"{local_hub.user}/{PREFIX}-cat-photos", {"README.md": card, "0.png": _png_bytes()},
                    repo_type="dataset")
    plain = _push(api, f"{local_hub.user}/{PREFIX}-plain-photos", {"0.png": _png_bytes()}, repo_type="dataset")
    local_hub.set_likes(popular, 8, repo_type="dataset")
    local_hub.set_likes(tagged, 2, repo_type="dataset")
    found = [d.repo_id for d in community_datasets() if PREFIX in d.repo_id]
    assert found == [popular, tagged]
    searched = [d.repo_id for d in community_datasets(search=f"{PREFIX}-plain")]
    assert searched == [plain]
    assert main(["hackathon", "datasets", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert popular in {d["repo_id"] for d in data} and plain not in {d["repo_id"] for d in data}
    assert main(["hackathon", "datasets", "--search", f"{PREFIX}-corgi"]) == 0
    assert f"--concept {tagged}" in capsys.readouterr().out


# -- the showcase entries -----------------------------------------------------------------------------

SHOWCASE = {
    "pokeball-machine.toml": ("CompVis/stable-diffusion-v1-4", "pkblz", "ball", "wildcard"),
    "iridescent-jellyfish.toml": ("runwayml/stable-diffusion-v1-5", "ðŁĴŁ", "jellyfish", "animal"),
}


@pytest.mark.parametrize("filename", sorted(SHOWCASE))
def test_showcase_configs_validate(filename):
    base, identifier, class_noun, theme = SHOWCASE[filename]
    config = load_config(HACKATHON_DIR / filename)
    assert config.model.base_model == base
    assert (config.concept.identifier, config.concept.class_noun) == (identifier, class_noun)
    assert config.training.steps == 800 and config.learning_rate == 2e-6 and config.training.resolution == 512
    assert config.training.method == "full"
    assert len(config.sampling.prompts) == 3 and len(config.sampling.seeds) == 3  # 3x3 grids
    assert config.sampling.guidance_scales == [7.0, 11.0]
    assert get_theme(config.publish.hackathon_theme).name == theme
    assert config.concept.source is None  # the photos are the user's


def test_showcase_identifiers_are_flagged():
    from hubtools.identifier import check_identifier

    pokeball = check_identifier(load_config(HACKATHON_DIR / "pokeball-machine.toml").concept.identifier)
    assert pokeball.num_tokens == 3 and pokeball.warnings
    jellyfish = check_identifier(load_config(HACKATHON_DIR / "iridescent-jellyfish.toml").concept.identifier)
    assert jellyfish.byte_level_of == "\U0001F49F" and jellyfish.suggestion == "\U0001F49F"


@pytest.mark.parametrize("filename", sorted(SHOWCASE))
def test_showcase_configs_dry_run(filename, tmp_path, capsys):
    code = main(["train-and-push", "--config", str(HACKATHON_DIR / filename), "--concept", str(DEMO_CONCEPT_DIR),
                 "--repo", f"tester/{PREFIX}-showcase", "--out", str(tmp_path / "run"), "--dry-run"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())  # nothing trained
    if filename.startswith("iridescent"):
        assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in captured.out + captured.err


@pytest.mark.slow
def test_an_entry_made_by_train_and_push_passes_the_check(tmp_path, capsys, local_hub, tiny_model_repo, hf_token):
    """The whole loop: `train-and-push --hackathon` on the tiny model, then every rule passes and it ranks."""
    small = tmp_path / "small.toml"
    small.write_text("[prior]\ngeneration_steps = 2\n\n[sampling]\nnum_inference_steps = 2\nseeds = [0]\n"
                     'prompts = ["a photo of {identifier} {class_noun}"]\n', encoding="utf-8")
    repo_id = f"{local_hub.user}/{PREFIX}-made-by-hubtools"
    code = main(["train-and-push", "--config", str(small), "--base-model", tiny_model_repo,
                 "--concept", str(DEMO_CONCEPT_DIR), "--identifier", "nlwx", "--class-noun", "dog",
                 "--repo", repo_id, "--out", str(tmp_path / "run"), "--hackathon", "landscape",
                 "--resolution", "64", "--steps", "2", "--device", "cpu", "--num-class-images", "1", "--quiet"])
    assert code == 0, capsys.readouterr().err
    results = check_submission(repo_id, load=True)
    assert all(r.passed for r in results), [r for r in results if not r.passed]
    local_hub.set_likes(repo_id, 1000)
    assert leaderboard(theme="landscape", top=1)[0].entries[0].repo_id == repo_id
