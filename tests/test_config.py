"""RunConfig: TOML round trip, overrides, resolution and the one-line messages users see."""

from __future__ import annotations

import pytest

from hubtools.config import (
    DEFAULT_BASE_MODEL,
    RunConfig,
    apply_overrides,
    config_from_dict,
    load_config,
    save_config,
)
from hubtools.errors import ConfigError


def test_defaults_follow_the_dreambooth_recipe():
    config = RunConfig().resolve()
    assert config.model.base_model == DEFAULT_BASE_MODEL
    assert config.training.resolution == 512
    assert config.training.batch_size == 1
    assert config.training.steps == 800
    assert config.training.learning_rate == 2e-6
    assert config.prior.enabled is True
    assert config.concept.instance_prompt == "a photo of {identifier} {class_noun}"


def test_lora_gets_its_own_learning_rate_and_alpha():
    config = apply_overrides(RunConfig(), {"training.method": "lora", "training.lora_rank": 8}).resolve()
    assert config.training.learning_rate == 1e-4
    assert config.training.lora_alpha == 8.0


def test_toml_round_trip_is_exact(tmp_path):
    config = apply_overrides(
        RunConfig(),
        {"concept.identifier": "pkblz", "concept.class_noun": "ball", "training.steps": 12,
         "sampling.guidance_scales": [7.0, 11.0], "publish.repo_id": "me/pokeball"},
    ).resolve()
    path = save_config(config, tmp_path / "run" / "hubtools.toml")
    assert load_config(path) == config
    assert config.instance_prompt == "a photo of pkblz ball"
    assert config.class_prompt == "a photo of a ball"


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[training]\nsteps = -3\n", "training.steps: Input should be greater than or equal to 1 (got -3)"),
        ("[trainign]\nsteps = 3\n", "unknown setting 'trainign' (did you mean 'training'?)"),
        ("[training]\nstpes = 3\n", "unknown setting 'training.stpes' (did you mean 'steps'?)"),
        ("[training]\nresolution = 500\n", "training.resolution: must be a multiple of 8"),
        ("[publish]\nrepo_id = \"nonamespace\"\n", "publish.repo_id: must look like namespace/name"),
        ("[concept]\ninstance_prompt = \"a photo of {id}\"\n", "only {identifier} and {class_noun} may appear"),
        ("[training\nsteps = 3\n", "is not valid TOML"),
    ],
)
def test_bad_config_files_give_one_clear_line(tmp_path, toml, expected):
    path = tmp_path / "bad.toml"
    path.write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message
    assert str(path) in message


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


def test_overrides_are_validated_and_none_means_not_given():
    config = apply_overrides(RunConfig(), {"training.steps": None, "training.seed": 7})
    assert config.training.steps == 800 and config.training.seed == 7
    with pytest.raises(ConfigError, match="the command line: training.steps"):
        apply_overrides(RunConfig(), {"training.steps": 0})


def test_require_subject_names_every_missing_flag():
    with pytest.raises(ConfigError, match="missing --concept, --identifier, --class-noun"):
        RunConfig().require_subject()
    config_from_dict({"concept": {"source": "x", "identifier": "sks", "class_noun": "dog"}}).require_subject()


def test_fidelity_curve_needs_validation_steps():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="set training.validation_every"):
        RunConfig.model_validate({"eval": {"during_training": True}})
    assert RunConfig.model_validate({"eval": {"during_training": True}, "training": {"validation_every": 50}})
