"""Progress bars for long work (rich, stderr, TTY only): rounds of a run, cells of a sweep, figures drawn;
and the log handler that prints above them.

Every bar and every log line go through one rich console on stderr (:data:`CONSOLE`). A plain
``logging.StreamHandler`` writes to the terminal behind the live bar's back and breaks it; rich's
``RichHandler`` on the same console prints each record above the bar, which then redraws below it.
"""

from __future__ import annotations

import logging
import sys

from rich.console import Console
from rich.highlighter import NullHighlighter
from rich.logging import RichHandler
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

CONSOLE = Console(stderr=True)
"""The one console of every bar and log line (stderr)."""


def setup_logging(level: int) -> None:
    """Log records at ``level`` and above through rich's handler on :data:`CONSOLE` when stderr is a
    terminal (where the bars are drawn), else as plain ``LEVEL name: message`` lines (no bar to break,
    no wrapping at a guessed width); replaces a handler this function installed before. matplotlib's own
    records from WARNING only. Like ``logging.basicConfig``, it leaves a root logger alone that already has
    other handlers (an embedding program's, or a test harness's)."""
    root = logging.getLogger()
    if any(not getattr(h, "_fedfleet", False) for h in root.handlers):
        return
    for h in list(root.handlers):
        root.removeHandler(h)
    handler: logging.Handler
    if CONSOLE.is_terminal:
        handler = RichHandler(console=CONSOLE, show_time=False, show_path=False, markup=False,
                              rich_tracebacks=False, keywords=[], highlighter=NullHighlighter())
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler._fedfleet = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("matplotlib").setLevel(logging.WARNING)


class RoundProgress:
    """Rounds done (with simulated hours and host time) and, for real learning, the local updates
    finished in the current round (:meth:`device_trained`), with an ETA for the round once one round
    has told how many updates a round has."""

    def __init__(self, total_rounds: int, enabled: bool = True):
        self.enabled = enabled
        self.total = total_rounds
        self._p: Progress | None = None
        self._task = None
        self._devices = None  # the in-round task, added on the first local update
        self._trained = 0  # local updates finished in this round
        self._last_round_trained: int | None = None

    def __enter__(self) -> "RoundProgress":
        if self.enabled:
            self._p = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[note]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                transient=False, console=CONSOLE,
            )
            self._p.__enter__()
            self._task = self._p.add_task("rounds", total=self.total, note="sim 0.00 h")
        return self

    def update(self, row: dict) -> None:
        """A round ended (the engine's ``on_round``): advance the rounds, restart the in-round count."""
        if self._trained:
            self._last_round_trained = self._trained
        self._trained = 0
        if self._p is not None:
            self._p.update(self._task, advance=1, note=f"sim {row['t_end_s'] / 3600.0:.2f} h")
            if self._devices is not None:
                self._p.reset(self._devices, total=self._last_round_trained)

    def device_trained(self) -> None:
        """One device's local update of this round finished (the learner's ``on_trained``)."""
        self._trained += 1
        if self._p is None:
            return
        if self._devices is None:
            self._devices = self._p.add_task("local updates this round", total=None, note="")
        self._p.update(self._devices, completed=self._trained)

    @property
    def trained_this_round(self) -> int:
        return self._trained

    def __exit__(self, *exc) -> None:
        if self._p is not None:
            self._p.__exit__(*exc)


class CellProgress:
    """Sweep cells done (including cells finished by an earlier invocation), failures, host time."""

    def __init__(self, total_cells: int, enabled: bool = True):
        self.enabled = enabled
        self.total = total_cells
        self._p: Progress | None = None
        self._task = None
        self._failed = 0

    def __enter__(self) -> "CellProgress":
        if self.enabled:
            self._p = Progress(TextColumn("[bold]cells"), BarColumn(), MofNCompleteColumn(),
                               TextColumn("failed {task.fields[failed]}"), TimeElapsedColumn(), console=CONSOLE)
            self._p.__enter__()
            self._task = self._p.add_task("sweep", total=self.total, failed=0)
        return self

    def update(self, row: dict, done: int, total: int) -> None:
        self._failed += row.get("status") == "failed"
        if self._p is not None:
            self._p.update(self._task, completed=done, failed=self._failed)

    def __exit__(self, *exc) -> None:
        if self._p is not None:
            self._p.__exit__(*exc)


class FigureProgress:
    """Figures drawn so far and the one being drawn (``fedfleet plot`` / ``report``); the total is not
    known in advance (it depends on the data), so a spinner and a count instead of a bar. Transient:
    the line disappears when the figures are done."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.done = 0
        self._p: Progress | None = None
        self._task = None

    def __enter__(self) -> "FigureProgress":
        if self.enabled:
            self._p = Progress(SpinnerColumn(), TextColumn("[bold]figures[/] {task.completed} drawn, now "
                                                           "{task.fields[name]}"), TimeElapsedColumn(),
                               console=CONSOLE, transient=True)
            self._p.__enter__()
            self._task = self._p.add_task("figures", total=None, name="-")
        return self

    def __call__(self, name: str) -> None:
        """Called before each figure: ``name`` is the figure being drawn."""
        if self._p is not None:
            self._p.update(self._task, completed=self.done, name=name)
        self.done += 1

    def __exit__(self, *exc) -> None:
        if self._p is not None:
            self._p.__exit__(*exc)
