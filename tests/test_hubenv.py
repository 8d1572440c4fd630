"""Which upload protocol the clients use: plain LFS off huggingface.co (our hub speaks no Xet)."""

from __future__ import annotations

import os

import pytest

from hubtools.hubenv import is_connection_error, plain_lfs_unless_huggingface_co


@pytest.mark.parametrize("endpoint, expected", [
    ("http://127.0.0.1:8080", "1"),
    ("https://hub.my-lab.example", "1"),
    ("https://huggingface.co", None),
    ("https://eu.huggingface.co/", None),
    (None, None),
])
def test_xet_is_off_for_endpoints_other_than_the_hub(monkeypatch, endpoint, expected):
    monkeypatch.delenv("HF_HUB_DISABLE_XET", raising=False)
    if endpoint is None:
        monkeypatch.delenv("HF_ENDPOINT", raising=False)
    else:
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
    plain_lfs_unless_huggingface_co()
    assert os.environ.get("HF_HUB_DISABLE_XET") == expected


def test_a_users_own_choice_is_kept(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:8080")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "0")
    plain_lfs_unless_huggingface_co()
    assert os.environ["HF_HUB_DISABLE_XET"] == "0"


def test_connection_errors_are_told_from_other_errors():
    import httpx

    assert is_connection_error(httpx.ConnectError("refused"))
    assert is_connection_error(httpx.ReadTimeout("slow"))
    assert not is_connection_error(ValueError("bad value"))
