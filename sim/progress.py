"""Progress bars for long work (rich, stderr, TTY only): rounds of a run, cells of a sweep."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class RoundProgress:
    def __init__(self, total_rounds: int, enabled: bool = True):
        self.enabled = enabled
        self.total = total_rounds
        self._p: Progress | None = None
        self._task = None

    def __enter__(self) -> "RoundProgress":
        if self.enabled:
            self._p = Progress(
                TextColumn("[bold]rounds"), BarColumn(), MofNCompleteColumn(),
                TextColumn("sim {task.fields[sim_h]:.2f} h"), TextColumn("host"), TimeElapsedColumn(),
                transient=False,
            )
            self._p.__enter__()
            self._task = self._p.add_task("run", total=self.total, sim_h=0.0)
        return self

    def update(self, row: dict) -> None:
        if self._p is not None:
            self._p.update(self._task, advance=1, sim_h=row["t_end_s"] / 3600.0)

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
                               TextColumn("failed {task.fields[failed]}"), TimeElapsedColumn())
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
