"""The run flags are declared once (``cli/run_options.py``) and shared by ``train`` and ``train-and-push``."""

from __future__ import annotations

from pathlib import Path

import typer

from hubtools.cli import run_options
from hubtools.cli.app import app


def _options(command_name: str) -> dict[str, tuple[str, ...]]:
    command = typer.main.get_command(app).commands[command_name]
    return {param.name: (tuple(param.opts), param.help) for param in command.params}


def test_train_and_train_and_push_share_each_run_flag_as_declared_once():
    train, train_and_push = _options("train"), _options("train-and-push")
    shared = run_options.BEFORE_FLAGS + run_options.RUN_FLAGS + run_options.AFTER_FLAGS
    for flag in shared:
        assert train[flag.name] == train_and_push[flag.name], flag.name
    for flag in run_options.PUSH_FLAGS:
        assert flag.name in train_and_push and flag.name not in train
    keys = [flag.key for flag in run_options.RUN_FLAGS + run_options.PUSH_FLAGS]
    assert len(keys) == len(set(keys)) and set(keys) <= set(run_options.setting_keys())


def test_the_commands_write_no_setting_name():
    """The flag-to-setting map lives with the flags: the commands name no ``section.key``."""
    cli = Path(run_options.__file__).parent
    for module in ("train.py", "train_and_push.py"):
        source = (cli / module).read_text(encoding="utf-8")
        assert not [key for key in run_options.setting_keys() if f'"{key}"' in source], module


def test_given_settings_leave_out_what_was_not_given():
    values = {flag.name: flag.default for flag in run_options.RUN_FLAGS}
    values |= {"steps": 7, "prior": False}
    flags = run_options.RunFlags(values, run_options.RUN_FLAGS)
    assert flags.given_settings() == {"training.steps": 7, "prior.enabled": False}
    values["strict"] = True
    assert run_options.RunFlags(values, run_options.RUN_FLAGS).given_settings()["concept.strict"] is True
