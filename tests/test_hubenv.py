"""Pointing the clients at another endpoint, and telling an unreachable endpoint from a refusal."""

from __future__ import annotations

import os

import pytest

from hubtools.hubenv import current_endpoint, is_connection_error, point_clients_at


def test_pointing_the_clients_leaves_their_xet_choice_alone(monkeypatch):
    """The local hub speaks Xet: hubtools no longer switches it off (a user's own setting is kept)."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_DISABLE_XET", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)
    point_clients_at(current_endpoint())  # this session's endpoint: nothing else changes
    assert "HF_HUB_DISABLE_XET" not in os.environ and constants.HF_HUB_DISABLE_XET is False
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    point_clients_at(current_endpoint())
    assert os.environ["HF_HUB_DISABLE_XET"] == "1"


def test_connection_errors_are_told_from_other_errors():
    import httpx

    assert is_connection_error(httpx.ConnectError("refused"))
    assert is_connection_error(httpx.ReadTimeout("slow"))
    assert not is_connection_error(ValueError("bad value"))
