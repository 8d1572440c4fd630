"""DreamBench prompt parsing from the shipped file, and user prompt files."""

from __future__ import annotations

import pytest

from hubtools.errors import InputError
from hubtools.evaluation.prompts import (
    dreambench_prompts,
    is_live_subject,
    load_prompts,
    parse_dreambench,
    shipped_dreambench,
)


def test_shipped_dreambench_has_the_papers_lists_and_classes():
    bench = shipped_dreambench()
    assert len(bench.object_prompts) == 25 and len(bench.live_prompts) == 25
    assert len(bench.classes) == 30
    assert bench.classes["bear_plushie"] == "stuffed animal"
    assert bench.live_prompts[10] == "a {identifier} {class_noun} wearing a red hat"
    assert bench.object_prompts[-1] == "a cube shaped {identifier} {class_noun}"


def test_live_subjects_get_the_live_list_and_objects_the_object_list():
    dog = dreambench_prompts("dog").fill("pkblz", "dog")
    assert dog[0] == "a pkblz dog in the jungle"
    assert "a pkblz dog in a chef outfit" in dog
    backpack = dreambench_prompts("backpack").fill("pkblz", "backpack")
    assert "a pkblz backpack floating on top of water" in backpack
    assert not any("outfit" in prompt for prompt in backpack)
    assert is_live_subject("black cats") and not is_live_subject("stuffed animal toy")


def test_parse_refuses_a_file_without_prompt_lists():
    with pytest.raises(InputError, match="no object or live-subject prompt list"):
        parse_dreambench("Classes\n\nsubject_name,class\ndog,dog\n")


def test_prompt_file_skips_comments_and_fills_placeholders(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("# mine\n\na {identifier} {class_noun} on the moon\n  a {class_noun} in a box  \n", encoding="utf-8")
    prompts = load_prompts(str(path), "dog")
    assert prompts.source == str(path)
    assert prompts.fill("pkblz", "dog") == ["a pkblz dog on the moon", "a dog in a box"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a {subject} on the moon\n", r"prompts.txt:1: only \{identifier\} and \{class_noun\}"),
        ("# nothing\n\n", "has no prompts"),
    ],
)
def test_bad_prompt_files_are_one_line_input_errors(tmp_path, content, message):
    path = tmp_path / "prompts.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=message) as caught:
        load_prompts(str(path), "dog")
    assert "\n" not in str(caught.value)


def test_missing_prompt_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="prompt file not found"):
        load_prompts(str(tmp_path / "nope.txt"), "dog")
