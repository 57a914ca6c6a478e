"""Progress bar for long runs: rounds done, simulated time, host time (rich, stderr, TTY only)."""

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
