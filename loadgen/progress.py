"""Live progress: a rich panel on a terminal, one plain line per finished second otherwise."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.live import Live
from rich.table import Table

from loadgen.aggregate import SecondRow
from loadgen.records import Tick


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"


def plain_line(row: SecondRow) -> str:
    return (
        f"[{row.second + 1:>4}s] target {row.target_rate:>8.0f}/s  sent {row.sent:>7}  "
        f"ok {row.ok:>7}  errors {row.errors:>5}  dropped {row.dropped:>5}  late {row.late:>5}  "
        f"p50 {_ms(row.p50_ms)}  p99 {_ms(row.p99_ms)}"
    )


class LiveView:
    """Shows a run as it goes. Use as a context manager around `run_load`."""

    def __init__(self, console: Console, title: str, duration: float, live: bool) -> None:
        self.console = console
        self.title = title
        self.duration = duration
        self.live = live
        self._ticks: dict[int, Tick] = {}
        self._last_row: SecondRow | None = None
        self._live: Live | None = None
        self._started = time.monotonic()

    def __enter__(self) -> LiveView:
        if self.live:
            # refreshed from tick(), never from a thread of its own: no GIL contention
            self._live = Live(self._render(), console=self.console, auto_refresh=False)
            self._live.__enter__()
        else:
            self.console.print(self.title, highlight=False)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.update(self._render(), refresh=True)
            self._live.__exit__(exc_type, exc, tb)
            self._live = None

    def tick(self, tick: Tick) -> None:
        self._ticks[tick.worker] = tick
        if self._live is not None:
            self._live.update(self._render(), refresh=True)

    def second(self, row: SecondRow) -> None:
        self._last_row = row
        if self._live is None:
            # Straight to the console's file: this runs inside the sending loop, and rich's
            # rendering of even one plain line costs a fraction of a millisecond there.
            self.console.file.write(plain_line(row) + "\n")
            self.console.file.flush()

    def _render(self) -> Table:
        ticks = list(self._ticks.values())
        elapsed = max((t.elapsed for t in ticks), default=0.0)
        sent = sum(t.sent for t in ticks)
        table = Table(title=self.title, show_header=True, expand=False)
        for column in ("elapsed", "sent", "ok", "errors", "dropped", "late", "in flight", "p99"):
            table.add_column(column, justify="right")
        recent = max((t.recent_p99_us for t in ticks), default=0)
        table.add_row(
            f"{max(0.0, elapsed):.0f}/{self.duration:.0f}s",
            f"{sent}",
            f"{sum(t.ok for t in ticks)}",
            f"{sum(t.errors for t in ticks)}",
            f"{sum(t.dropped for t in ticks)}",
            f"{sum(t.late for t in ticks)}",
            f"{sum(t.inflight for t in ticks)}",
            f"{recent / 1000:.2f} ms" if recent else "-",
        )
        return table
