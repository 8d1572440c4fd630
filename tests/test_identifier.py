"""Identifier analysis on the real CLIP vocabulary (built offline from the shipped BPE merges)."""

from __future__ import annotations

import json

import pytest

from hubtools.cli.app import main
from hubtools.errors import InputError
from hubtools.identifier import check_identifier, decode_byte_level, suggest_identifiers
from hubtools.tokenizer import build_clip_tokenizer

EMOJI = "\U0001F49F"  # 💟
EMOJI_BYTE_LEVEL = "ðŁĴŁ"  # how the vocabulary spells 💟 internally


@pytest.fixture(scope="module")
def tokenizer():
    return build_clip_tokenizer()


@pytest.fixture(scope="module")
def text_encoder():
    from hubtools.tinymodel import build_tiny_pipeline

    return build_tiny_pipeline().text_encoder


def test_built_tokenizer_matches_the_ids_in_the_bpe_readme(tokenizer):
    assert tokenizer("sks", add_special_tokens=False).input_ids == [48136]
    assert tokenizer(EMOJI, add_special_tokens=False).input_ids == [28828]
    assert len(tokenizer) == 49408


def test_pkblz_is_three_tokens(tokenizer):
    report = check_identifier("pkblz", tokenizer=tokenizer)
    assert report.num_tokens == 3 and not report.single_token
    assert report.tokens == ["pk", "bl", "z"]
    assert report.byte_level_of is None and not report.is_word
    assert any("3 tokens (pk + bl + z)" in w for w in report.warnings)
    # The suggestion it offers instead is itself a clean single token.
    assert check_identifier(report.suggestion, tokenizer=tokenizer).ok


def test_sks_is_one_token_but_a_known_bad_choice(tokenizer):
    report = check_identifier("sks", tokenizer=tokenizer)
    assert report.single_token and report.token_ids == [48136]
    assert report.known_bad and "rifle" in report.known_bad
    assert len(report.warnings) == 1 and "rifle" in report.warnings[0]
    assert report.rarity > 0.9


def test_byte_level_spelling_is_recognised_and_the_emoji_is_suggested(tokenizer):
    report = check_identifier(EMOJI_BYTE_LEVEL, tokenizer=tokenizer)
    assert report.byte_level_of == EMOJI
    assert report.num_tokens == 7
    assert report.suggestion == EMOJI
    assert any("byte-level spelling" in w and "1 token" in w for w in report.warnings)


def test_the_emoji_itself_is_one_clean_token(tokenizer):
    report = check_identifier(EMOJI, tokenizer=tokenizer)
    assert report.single_token and report.token_ids == [28828]
    assert report.tokens == [EMOJI] and report.vocab_tokens == [EMOJI_BYTE_LEVEL + "</w>"]
    assert report.byte_level_of is None
    assert report.ok and report.warnings == []


def test_ordinary_words_and_the_class_noun_are_flagged(tokenizer):
    report = check_identifier("dog", tokenizer=tokenizer, class_noun="dog")
    assert report.single_token and report.is_word
    assert any("ordinary word" in w for w in report.warnings)
    assert any("class noun" in w for w in report.warnings)
    assert check_identifier("rifle", tokenizer=tokenizer).is_word


@pytest.mark.parametrize("text", ["ohwx", "nlwx", "shld"])
def test_rare_tokens_that_read_like_no_word_pass(tokenizer, text):
    report = check_identifier(text, tokenizer=tokenizer)
    assert report.single_token and not report.is_word and report.ok


@pytest.mark.parametrize(
    ("text", "expected"),
    [(EMOJI_BYTE_LEVEL, EMOJI), ("Ã©", "é"), ("sks", None), ("é", None), ("Ã", None), ("a b", None)],
)
def test_decode_byte_level(text, expected):
    assert decode_byte_level(text) == expected


def test_empty_identifier_is_a_user_error(tokenizer):
    with pytest.raises(InputError, match="empty"):
        check_identifier("  ", tokenizer=tokenizer)


def test_suggestions_are_rare_single_tokens_that_decode_to_themselves(tokenizer):
    suggestions = suggest_identifiers(10, tokenizer=tokenizer)
    assert len(suggestions) == 10
    assert [s.token_id for s in suggestions] == sorted((s.token_id for s in suggestions), reverse=True)
    for suggestion in suggestions:
        ids = tokenizer(suggestion.text, add_special_tokens=False).input_ids
        assert ids == [suggestion.token_id]
        assert tokenizer.decode(ids) == suggestion.text
        assert suggestion.text.isascii() and suggestion.text.isalpha()  # no emoji, no byte-level symbols
        report = check_identifier(suggestion.text, tokenizer=tokenizer)
        assert report.ok, report.warnings
        assert suggestion.rarity > 0.9
    assert "sks" not in {s.text for s in suggest_identifiers(1000, tokenizer=tokenizer)}


def test_neighbours_and_prior_with_text_encoder_weights(tokenizer, text_encoder):
    report = check_identifier("sks", tokenizer=tokenizer, text_encoder=text_encoder, class_noun="dog", num_neighbours=5)
    neighbours = report.nearest_neighbours
    assert len(neighbours) == 5
    assert 48136 not in {n.token_id for n in neighbours}
    similarities = [n.similarity for n in neighbours]
    assert similarities == sorted(similarities, reverse=True) and all(-1 <= s <= 1 for s in similarities)
    # The best neighbour really is the closest row of the embedding matrix.
    import torch

    weights = text_encoder.get_input_embeddings().weight.detach()
    cosine = torch.nn.functional.cosine_similarity(weights, weights[48136:48137], dim=1)
    cosine[48136] = -2
    cosine[tokenizer.all_special_ids] = -2
    assert neighbours[0].token_id == int(cosine.argmax())
    assert report.prior_prompts == ("a photo of sks dog", "a photo of a dog")
    assert 0 < report.prior_strength <= 2
    as_json = json.loads(json.dumps(report.to_dict(), ensure_ascii=False))
    assert as_json["nearest_neighbours"][0]["token_id"] == neighbours[0].token_id


def test_suggestions_rank_by_weak_prior_with_weights(tokenizer, text_encoder):
    suggestions = suggest_identifiers(5, tokenizer=tokenizer, text_encoder=text_encoder, pool_size=40)
    strengths = [s.prior_strength for s in suggestions]
    assert None not in strengths and strengths == sorted(strengths)
    # They are the weakest-prior members of the 40 rarest candidates.
    rarest = suggest_identifiers(40, tokenizer=tokenizer)
    from hubtools.identifier import prior_strengths

    all_strengths = sorted(prior_strengths([s.text for s in rarest], tokenizer, text_encoder))
    assert strengths == all_strengths[:5]


def test_cli_check_json(capsys):
    assert main(["identifier", "check", EMOJI_BYTE_LEVEL, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["text"] == EMOJI_BYTE_LEVEL
    assert data["byte_level_of"] == EMOJI
    assert data["num_tokens"] == 7 and data["single_token"] is False
    assert len(data["tokens"]) == 7 and data["warnings"]


def test_cli_check_text_and_strict(capsys):
    assert main(["identifier", "check", "pkblz"]) == 0
    out = capsys.readouterr().out
    assert "3:" in out and "pk" in out and "warning" in out
    assert main(["identifier", "check", "sks", "--strict"]) == 1
    assert "rifle" in capsys.readouterr().out
    assert main(["identifier", "check", EMOJI, "--strict"]) == 0


def test_cli_a_base_model_that_is_no_folder_and_no_id_is_one_line(capsys):
    for command in (["check", "pkblz"], ["suggest"]):
        assert main(["identifier", *command, "--base-model", "./no/such/model"]) == 2
        err = capsys.readouterr().err
        assert err.strip() == ("error: base model ./no/such/model: no such folder, and not a Hub model id "
                               "(namespace/name): check the path, or give the id, e.g. "
                               "stable-diffusion-v1-5/stable-diffusion-v1-5")


def test_cli_suggest_json(capsys):
    assert main(["identifier", "suggest", "--n", "3", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data) == 3 and all(len(item["text"]) >= 3 for item in data)
    assert main(["identifier", "suggest", "--n", "0"]) == 2
    assert "at least 1" in capsys.readouterr().err


def test_base_model_tokenizer_and_weights_from_the_hub(tiny_model_repo, capsys):
    from hubtools.identifier import load_tokenizer_and_text_encoder

    tokenizer, text_encoder, notes = load_tokenizer_and_text_encoder(tiny_model_repo)
    assert notes == [] and text_encoder is not None
    assert tokenizer("sks", add_special_tokens=False).input_ids == [48136]
    assert main(["identifier", "check", "sks", "--base-model", tiny_model_repo, "--class-noun", "dog", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["token_ids"] == [48136] and len(data["nearest_neighbours"]) == 8
    assert data["prior_prompts"] == ["a photo of sks dog", "a photo of a dog"] and data["prior_strength"] > 0
    assert main(["identifier", "suggest", "--n", "3", "--base-model", tiny_model_repo]) == 0
    assert "prior strength" in capsys.readouterr().out


def test_unreachable_base_model_falls_back_to_the_built_tokenizer(local_hub, capsys):
    assert main(["identifier", "check", "pkblz", "--base-model", "nobody/missing-model", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["num_tokens"] == 3
    assert "built offline" in captured.err and "neighbours and prior skipped" in captured.err


def test_a_runs_identifier_report_is_computed_once_per_identifier_and_tokenizer_files(tmp_path, monkeypatch):
    """Issue 29: the check is cached in the user's cache under the identifier, class noun and the base model's
    tokenizer files; another identifier or changed tokenizer files compute it again."""
    import shutil

    from test_training_support import tiny_base

    from hubtools.config import RunConfig
    from hubtools.runner import check_identifier_for

    monkeypatch.setenv("HUBTOOLS_CACHE", str(tmp_path / "cache"))
    base = tmp_path / "base"
    shutil.copytree(tiny_base(tmp_path / "built"), base)

    def config(identifier: str) -> RunConfig:
        return RunConfig.model_validate({"model": {"base_model": str(base)},
                                         "concept": {"identifier": identifier, "class_noun": "dog"}})

    first = check_identifier_for(config("sks"))
    assert first.known_bad and first.warnings and first.suggestion
    cached = list((tmp_path / "cache" / "identifiers").glob("*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text())["text"] == "sks"
    # the second run reads it back: what the cache holds is what it returns
    cached[0].write_text(json.dumps({**json.loads(cached[0].read_text()), "warnings": ["from the cache"]}))
    assert check_identifier_for(config("sks")).warnings == ["from the cache"]
    assert check_identifier_for(config("pkblz")).text == "pkblz"  # another identifier: its own entry
    (base / "tokenizer" / "tokenizer_config.json").write_text(
        (base / "tokenizer" / "tokenizer_config.json").read_text() + "\n")  # other tokenizer files: computed again
    assert check_identifier_for(config("sks")).warnings == first.warnings
    assert len(list((tmp_path / "cache" / "identifiers").glob("*.json"))) == 3
