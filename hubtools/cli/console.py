"""The one place the command line writes to the terminal, in one of three voices.

- default: stdout carries results (URLs, tables, paths); stderr carries stages, notes, warnings, progress
  bars and errors.
- ``hubtools --quiet``: results and errors only.
- ``hubtools --json``: one JSON object per event on stdout and nothing else there (the protocol is in
  ``docs/architecture.md``); anything a library prints on stdout meanwhile goes to stderr.

Messages are data, not markup: both consoles have rich's markup off, so a path, a repo id, a file called
``[red].jpg`` or ``[concept]`` prints as itself, in tables too. Colour is added explicitly, with
``rich.text.Text`` and ``styled()``, never by writing ``[green]`` into a string. Under several processes
only the main one speaks (errors excepted).
"""

from __future__ import annotations

import json
import sys
import time
from typing import IO, Any

from rich.console import Console, RenderableType
from rich.text import Text

from hubtools.reporting import is_main_process

console = Console(markup=False, highlight=False, soft_wrap=True)
err_console = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)

DEFAULT, QUIET, JSON = "default", "quiet", "json"
_mode = DEFAULT
_json_out: IO[str] | None = None  # the real stdout while --json holds it
_errors = 0  # error events so far: a command that fails without one still ends with one


def set_mode(mode: str) -> None:
    """Called once by the root command (``--quiet``/``--json``); ``end_mode`` gives stdout back."""
    global _mode, _json_out
    end_mode()
    _mode = mode
    if mode in (QUIET, JSON):
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()  # the Hub client's download bars: not results
    if mode == JSON:
        # Only events on stdout: whatever else prints there (a library, a stray print) goes to stderr.
        _json_out, sys.stdout = sys.stdout, sys.stderr


def failed(exit_code: int) -> None:
    """The command ends with ``exit_code`` != 0: with ``--json``, make sure its last word is an error event
    (a check that fails, like ``hackathon check``, says why in its result)."""
    if _mode == JSON and not _errors:
        error(f"the command failed (exit code {exit_code}): its results say why", exit_code=exit_code)


def end_mode() -> None:
    global _mode, _json_out, _errors
    _errors = 0
    if _json_out is not None:
        sys.stdout, _json_out = _json_out, None
    _mode = DEFAULT


def mode() -> str:
    return _mode


def emit(event: str, **fields: Any) -> None:
    """One JSON event on stdout (``--json`` only)."""
    out = _json_out or sys.stdout
    out.write(json.dumps({"event": event, "time": time.time(), **fields}, ensure_ascii=False, default=str) + "\n")
    out.flush()


def _speaks(chatty: bool = True) -> bool:
    if not is_main_process():
        return False
    return not (chatty and _mode == QUIET)


def styled(text: object, style: str) -> Text:
    """``text`` in ``style`` (a table cell, a word in a line), never read as markup."""
    return Text(str(text), style=style)


def _line(prefix: str, style: str, message: str) -> Text:
    return Text.assemble((prefix, style), " ", str(message))


def result(message: RenderableType | None, data: dict[str, Any] | None = None) -> None:
    """A result on stdout: a URL, a path, a table. With ``--json``, ``data`` (or the message as data)."""
    if not _speaks(chatty=False):
        return
    if _mode == JSON:
        emit("result", data=data if data is not None else as_data(message))
    elif message is not None:
        console.print(message)


show = result


def as_data(message: RenderableType | None) -> dict[str, Any]:
    """A printed result as JSON data: a table's title, columns and rows as text, anything else as its text."""
    from rich.table import Table

    if isinstance(message, Table):
        columns = [str(column.header) for column in message.columns]
        cells = [[_plain(cell) for cell in column._cells] for column in message.columns]
        return {"title": _plain(message.title) if message.title else None, "columns": columns,
                "rows": [list(row) for row in zip(*cells)]}
    return {"text": _plain(message)}


def _plain(renderable: Any) -> str:
    if renderable is None or isinstance(renderable, str):
        return renderable or ""
    if isinstance(renderable, Text):
        return renderable.plain
    capture = Console(width=120, markup=False, highlight=False, soft_wrap=True, color_system=None)
    with capture.capture() as captured:
        capture.print(renderable)
    return captured.get().rstrip("\n")


def data_json(data: Any) -> None:
    """A command's own JSON answer (``identifier check --json``): pretty on stdout, or a result event."""
    if _mode == JSON:
        result(None, data=data if isinstance(data, dict) else {"items": data})
    elif _speaks(chatty=False):
        print(json.dumps(data, ensure_ascii=False, indent=2), flush=True)


def info(message: RenderableType) -> None:
    """A message on stderr, without a prefix."""
    if not _speaks():
        return
    if _mode == JSON:
        emit("note", message=_plain(message))
    else:
        err_console.print(message)


def stage(message: str) -> None:
    _say("stage", "==>", "bold cyan", message)


def note(message: str) -> None:
    _say("note", "note:", "yellow", message)


def warning(message: str) -> None:
    _say("warning", "warning:", "yellow", message)


def _say(event: str, prefix: str, style: str, message: str) -> None:
    if not _speaks():
        return
    if _mode == JSON:
        emit(event, message=str(message))
    else:
        err_console.print(_line(prefix, style, message))


def error(message: str, *, prefix: str = "error:", exit_code: int = 1) -> None:
    global _errors
    _errors += 1
    if _mode == JSON:
        emit("error", message=str(message), exit_code=exit_code)
    else:
        err_console.print(_line(prefix, "bold red", message))


class ConsoleReporter:
    """``hubtools.reporting.Reporter`` for the command line, in the voice the root command chose: stages and
    notes on stderr and a rich bar for progress (``progress=False``: no bar), results only, or JSON events."""

    def __init__(self, progress: bool = True) -> None:
        self._show_progress = progress
        self._bar = None
        self._task = None
        self._loss = ""

    def stage(self, message: str) -> None:
        self._close_bar()
        stage(message)

    def note(self, message: str) -> None:
        note(message)

    def warning(self, message: str) -> None:
        warning(message)

    def progress(self, what: str, done: int, total: int) -> None:
        if not _speaks():
            return
        if _mode == JSON:
            emit("progress", what=what, done=int(done), total=int(total))
            return
        if not self._show_progress:
            return
        if self._bar is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            # In a log (not a terminal) a bar is noise: rich leaves it out.
            self._bar = Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("{task.fields[info]}", markup=False),
                                 console=err_console, transient=True, disable=not err_console.is_terminal)
            self._bar.start()
            self._task = self._bar.add_task(what, total=total, info="")
        info = self._loss if what == "training" else ""
        self._bar.update(self._task, description=what, completed=done, total=total, info=info)

    def metric(self, step: int, values: dict[str, float]) -> None:
        if not _speaks():
            return
        if _mode == JSON:
            emit("metric", step=int(step), values=values)
        elif "loss" in values:
            self._loss = f"loss {values['loss']:.4f}"

    def artifact(self, kind: str, path: str, step: int | None = None) -> None:
        if _mode == JSON and _speaks():
            emit("artifact", kind=kind, path=str(path), **({} if step is None else {"step": int(step)}))

    def result(self, data: dict[str, Any]) -> None:
        result(None, data=data)

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar, self._task = None, None

    def close(self) -> None:
        self._close_bar()

    def __enter__(self) -> ConsoleReporter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
