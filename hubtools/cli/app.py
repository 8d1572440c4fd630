"""The root typer app, the global ``--debug`` flag, and the one place user errors become exit codes.

Each command, or group of commands, is one module of ``hubtools.cli`` with a ``register(app)`` (the shape of
huggingface_hub's and accelerate's CLIs). A command parses its flags, calls one ``hubtools.runner``
function and prints what it returns through ``hubtools.cli.console``.
"""

from __future__ import annotations

import logging
import os
import sys

import typer

from hubtools.cli import console
from hubtools.errors import HubError, HubtoolsError, Interrupted
from hubtools.hubenv import current_endpoint, is_connection_error
from hubtools.usercache import is_in_user_cache, user_cache

app = typer.Typer(
    name="hubtools",
    help="A handful of photos in, a DreamBooth-tuned SD, SDXL or FLUX.1 model on the Hub out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: no stray type column, and brackets in help texts print as typed
)

_DEBUG_ENV = "HUBTOOLS_DEBUG"


def _prepare_environment() -> None:
    _quiet_libraries()


def _quiet_libraries() -> None:
    """Keep the terminal for what hubtools says: the libraries' import-time chatter is not for users."""
    if os.environ.get(_DEBUG_ENV) or "--debug" in sys.argv:
        return
    for variable in ("HF_HUB_VERBOSITY", "TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY", "DATASETS_VERBOSITY"):
        os.environ.setdefault(variable, "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # bitsandbytes warns through plain logging, at import, about optional CPU kernels, and the kernels package it
    # fetches them with about the Hub being offline.
    for library in ("bitsandbytes", "kernels"):
        logging.getLogger(library).setLevel(logging.ERROR)


_prepare_environment()


def debug_enabled() -> bool:
    return os.environ.get(_DEBUG_ENV, "") not in ("", "0")


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
    json_events: bool = typer.Option(False, "--json", help="One JSON object per event on stdout (for scripts "
                                     "and front ends): stage, note, warning, progress, metric, artifact, result, error."),
    quiet: bool = typer.Option(False, "--quiet", help="Print only results and errors."),
) -> None:
    if debug:
        os.environ[_DEBUG_ENV] = "1"
    if json_events and quiet:
        raise typer.BadParameter("give --json or --quiet, not both")
    if json_events or quiet:
        console.set_mode(console.JSON if json_events else console.QUIET)


def _register() -> None:
    from hubtools.cli import (
        card,
        concept,
        demo,
        evaluate,
        hackathon,
        hub,
        identifier,
        push,
        sample,
        studio,
        train,
        train_and_push,
    )

    # In the order `hubtools --help` lists them: the main job first, then its stages, then the groups.
    for module in (train_and_push, train, sample, evaluate, card, push, demo, studio, hub, concept, identifier,
                   hackathon):
        module.register(app)


_register()


def _global_options(args: list[str]) -> list[str]:
    """The options before the command's name (``hubtools --json train ...``)."""
    leading = []
    for arg in args:
        if not arg.startswith("-"):
            break
        leading.append(arg)
    return leading


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script. Returns the exit code."""
    args = list(argv if argv is not None else sys.argv[1:])
    if "--debug" in args:
        os.environ[_DEBUG_ENV] = "1"
    leading = _global_options(args)
    # Set before click parses anything, so that a usage error is an event too.
    if "--json" in leading and "--quiet" not in leading:
        console.set_mode(console.JSON)
    try:
        code = _run(args)
        if code:
            console.failed(code)
        return code
    finally:
        console.end_mode()


def _run(args: list[str]) -> int:
    try:
        returned = app(args=args, prog_name="hubtools", standalone_mode=False)
    except HubtoolsError as error:
        if getattr(error, "elsewhere", False):  # another process failed and says so itself
            return error.exit_code
        if debug_enabled():
            raise
        console.error(str(error), exit_code=error.exit_code)
        return error.exit_code
    except KeyboardInterrupt:
        return _interrupted()
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except Exception as error:  # usage errors are shown as click shows them; anything else is a bug
        if hasattr(error, "show") and hasattr(error, "exit_code"):
            if console.mode() == console.JSON:
                console.error(error.format_message(), exit_code=error.exit_code)
            else:
                error.show()
            return error.exit_code
        if type(error).__name__ == "Abort":
            if console.mode() == console.JSON:
                console.error("aborted", exit_code=1)
            else:
                console.warning("aborted")
            return 1
        if debug_enabled():
            raise
        if isinstance(error, OSError) and error.filename and is_in_user_cache(error.filename):
            console.error(f"the hubtools cache {user_cache()} cannot be used ({error.strerror}: {error.filename}): "
                          "set HUBTOOLS_CACHE to a folder you can write", exit_code=HubtoolsError.exit_code)
            return HubtoolsError.exit_code
        if is_connection_error(error):  # whichever stage met it: the Hub is down or HF_ENDPOINT is wrong
            console.error(f"could not reach the Hub at {current_endpoint()} ({type(error).__name__}): "
                          "check the connection or HF_ENDPOINT, then run again", exit_code=HubError.exit_code)
            return HubError.exit_code
        console.error(f"{type(error).__name__}: {error}\n"
                      "This is a bug in hubtools; rerun with --debug for the traceback and report it.",
                      prefix="unexpected error:")
        return 1
    # Without standalone mode, click hands back typer.Exit's code as the return value; typer turns a Ctrl-C
    # that no command caught into Exit(130).
    if returned == Interrupted.exit_code:
        return _interrupted()
    return returned if isinstance(returned, int) else 0


def _interrupted() -> int:
    if console.mode() == console.JSON:
        console.error("interrupted", exit_code=Interrupted.exit_code)
    else:
        console.warning("interrupted")
    return Interrupted.exit_code


def entry_point() -> None:
    """The ``hubtools`` console script (``python -m hubtools`` too)."""
    from hubtools.distributed import passive_waiting
    from hubtools.usercache import keep_torch_caches_here

    passive_waiting()  # before torch is imported: OpenMP reads it then
    keep_torch_caches_here()
    sys.exit(main())
