"""The one place the command line writes to the terminal.

stdout carries results (URLs, tables, paths); stderr carries stages, notes, progress and errors.
Messages are data, not markup: both consoles have rich's markup off, so a path, a repo id, a file called
``[red].jpg`` or ``[concept]`` prints as itself, in tables too. Colour is added explicitly, with
``rich.text.Text`` and ``styled()``, never by writing ``[green]`` into a string.
"""

from __future__ import annotations

from rich.console import Console, RenderableType
from rich.text import Text

console = Console(markup=False, highlight=False, soft_wrap=True)
err_console = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)


def styled(text: object, style: str) -> Text:
    """``text`` in ``style`` (a table cell, a word in a line), never read as markup."""
    return Text(str(text), style=style)


def _line(prefix: str, style: str, message: str) -> Text:
    return Text.assemble((prefix, style), " ", str(message))


def result(message: RenderableType) -> None:
    """A result on stdout: a URL, a path, a table."""
    console.print(message)


show = result


def info(message: RenderableType) -> None:
    """A message on stderr, without a prefix."""
    err_console.print(message)


def stage(message: str) -> None:
    err_console.print(_line("==>", "bold cyan", message))


def note(message: str) -> None:
    err_console.print(_line("note:", "yellow", message))


def warning(message: str) -> None:
    err_console.print(_line("warning:", "yellow", message))


def error(message: str, *, prefix: str = "error:") -> None:
    err_console.print(_line(prefix, "bold red", message))


class ConsoleReporter:
    """``hubtools.runner.Reporter`` on the terminal: stages and notes on stderr, a rich bar for progress."""

    def __init__(self, progress: bool = True) -> None:
        self._show_progress = progress
        self._bar = None
        self._task = None

    def stage(self, message: str) -> None:
        self._close_bar()
        stage(message)

    def note(self, message: str) -> None:
        note(message)

    def progress(self, what: str, done: int, total: int) -> None:
        if not self._show_progress:
            return
        if self._bar is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            # In a log (not a terminal) a bar is noise: rich leaves it out.
            self._bar = Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=err_console, transient=True,
                                 disable=not err_console.is_terminal)
            self._bar.start()
            self._task = self._bar.add_task(what, total=total)
        self._bar.update(self._task, description=what, completed=done, total=total)

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
