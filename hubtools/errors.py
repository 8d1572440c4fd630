"""Errors a user can cause and fix.

A ``HubtoolsError`` carries one line that says what is wrong and what to do. The CLI prints that line
and exits non-zero without a traceback (unless ``--debug``); anything else is a bug and is reported as one.
"""

from __future__ import annotations


class HubtoolsError(Exception):
    """A problem the user can fix. ``str(error)`` is the one line shown to them."""

    exit_code: int = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message} ({hint})" if hint else message)


class ConfigError(HubtoolsError):
    """A configuration value or file is invalid."""


class InputError(HubtoolsError):
    """An input path, image set or dataset cannot be used."""


class HubError(HubtoolsError):
    """The Hub (real or local) refused or could not serve a request."""


class Interrupted(HubtoolsError):
    """The user stopped a command (Ctrl-C); the line says where it stopped and how to go on."""

    exit_code = 130  # 128 + SIGINT, as shells report it


def first_line(error: BaseException | str) -> str:
    """The first line of an error's text (libraries add pages of context); its type name when it has none."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
