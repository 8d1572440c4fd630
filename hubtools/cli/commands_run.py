"""The run commands: train-and-push, train, sample, card, push, demo."""

from __future__ import annotations

from hubtools.cli.app import app  # noqa: F401
