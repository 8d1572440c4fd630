"""One set of Hub naming rules for the client side and the local hub (huggingface_hub's validate_repo_id agrees)."""

from __future__ import annotations

import pytest
from huggingface_hub.utils import HFValidationError, validate_repo_id

from hubtools.config import check_repo_id
from hubtools.errors import ConfigError
from hubtools.localhub.errors import BadRequest
from hubtools.localhub.naming import check_repo_id as check_local_repo_id

GOOD = ["tester/nlwx-dog", "acme/model_1.0", "a/b", f"{'n' * 96}/{'m' * 96}"]
BAD = ["nonamespace", "a/b/c", "a--b/c", "a/b..c", "-a/b", "a/b-", "a/.b", f"{'n' * 97}/b", "a/b.git", "a b/c", ""]


@pytest.mark.parametrize("repo_id", GOOD)
def test_a_good_repo_id_passes_everywhere(repo_id):
    assert check_repo_id(repo_id) == repo_id
    assert check_local_repo_id(*repo_id.split("/")) == repo_id
    validate_repo_id(repo_id)


@pytest.mark.parametrize("repo_id", BAD)
def test_a_bad_repo_id_is_refused_by_both_sides(repo_id):
    with pytest.raises(ConfigError, match="must look like namespace/name"):
        check_repo_id(repo_id)
    if repo_id.count("/") == 1:
        with pytest.raises(BadRequest):
            check_local_repo_id(*repo_id.split("/"))


def test_huggingface_hub_refuses_what_its_rules_refuse():
    for repo_id in ("a--b/c", "a/b..c", "-a/b", f"{'n' * 97}/b"):
        with pytest.raises(HFValidationError):
            validate_repo_id(repo_id)


def test_one_helper_each():
    from pathlib import Path

    import hubtools

    sources = {path: path.read_text(encoding="utf-8") for path in Path(hubtools.__file__).parent.rglob("*.py")}
    for definition in ("\ndef human_size(", "\ndef as_list(", "\ndef check_name_part(", "\ndef now_iso(", "\nDEFAULT_BRANCH ="):
        assert sum(text.count(definition) for text in sources.values()) == 1, definition
    assert not any("def _size(" in text or "def _as_list(" in text or "def _now_iso(" in text for text in sources.values())
