"""CPU accounting from /proc: how busy the server was, and how busy its core was with anything.

A run's server CPU is taken over its busiest stretch as long as the measured window, so the idle
moments of the load client's start-up and shutdown do not dilute it. The server core's total
busy time, minus the server's own (and minus the lowest-priority busy loop that keeps the core
awake, see `bench.warm_cores`), is what other processes took from it: noise to report.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# A sample whose reading took longer than this is not dated precisely enough to keep (a
# reading scans /proc: a few milliseconds here).
MAX_READING_SECONDS = 0.02


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU of every live process in the process group."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command name; pgrp is the 3rd, utime/stime the 12th/13th.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def core_busy_seconds(core: int, stat_text: str | None = None) -> float:
    """Seconds core `core` spent not idle (steal included: time the core was not ours either)."""
    text = Path("/proc/stat").read_text() if stat_text is None else stat_text
    prefix = f"cpu{core} "
    for line in text.splitlines():
        if line.startswith(prefix):
            # user nice system idle iowait irq softirq steal [guest guest_nice]
            values = [int(v) for v in line.split()[1:9]]
            idle = values[3] + values[4]
            return (sum(values) - idle) / CLOCK_TICKS
    raise ValueError(f"no cpu{core} line in /proc/stat")


def busiest_window(
    times: Sequence[float], values: Sequence[float], window: float
) -> tuple[int, int] | None:
    """Indexes (start, end) of the `window`-second stretch where the cumulative counter `values`
    grew fastest; None when the samples span less than `window`."""
    best: tuple[int, int] | None = None
    best_rate = -1.0
    j = 0
    for i in range(len(times)):
        while j < i and times[i] - times[j + 1] >= window:
            j += 1
        span = times[i] - times[j]
        if span > 0 and span >= window * 0.999:
            rate = (values[i] - values[j]) / span
            if rate > best_rate:
                best, best_rate = (j, i), rate
    return best


@dataclass(frozen=True)
class CpuUse:
    server_cores: float
    # Everything that ran on the server's core, the server included.
    core_busy_cores: float | None


class CpuSampler:
    """Samples the server's CPU seconds (and its core's busy seconds) while a client runs."""

    def __init__(
        self,
        server_cpu: Callable[[], float],
        core: int | None,
        interval: float = 0.2,
        filler_cpu: Callable[[int], float] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.server_cpu = server_cpu
        self.clock = clock
        self.core = core
        # CPU seconds of work that only fills idle time on a core (not noise): subtracted.
        self.filler_cpu = filler_cpu
        self.interval = interval
        self.times: list[float] = []
        self.server: list[float] = []
        self.busy: list[float] = []
        self.dropped = 0  # samples left out: their reading took too long to date
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cpu-sampler", daemon=True)

    def _sample(self) -> None:
        start = self.clock()
        server = self.server_cpu()
        busy = 0.0
        if self.core is not None:
            busy = core_busy_seconds(self.core)
            if self.filler_cpu is not None:
                busy -= self.filler_cpu(self.core)
        end = self.clock()
        # At the lowest priority the sampler waits whenever both cores are busy, and it can
        # be held up in the middle of a reading: the counters then belong to no one instant,
        # and a rate over such a sample is wrong (a one-core server seen using 1.3 cores).
        # Such samples are left out; the window is measured between the others.
        if end - start > MAX_READING_SECONDS:
            self.dropped += 1
            return
        self.times.append((start + end) / 2.0)
        self.server.append(server)
        self.busy.append(busy)

    def _loop(self) -> None:
        # Lowest priority (this thread only): a sample must never preempt the server or the
        # load generator, or its few milliseconds of /proc reading land in their p99.
        with contextlib.suppress(OSError, AttributeError):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        while True:
            self._sample()
            if self._stop.wait(self.interval):
                break
        self._sample()

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def use_over(self, window: float) -> CpuUse | None:
        found = busiest_window(self.times, self.server, window)
        if found is None:
            return None
        i, j = found
        span = self.times[j] - self.times[i]
        busy = (self.busy[j] - self.busy[i]) / span if self.core is not None else None
        return CpuUse((self.server[j] - self.server[i]) / span, busy)


def wait_idle(
    server_cpu: Callable[[], float],
    below_cores: float = 0.15,
    interval: float = 0.2,
    timeout: float = 15.0,
) -> float:
    """Wait until the server's CPU use drops below `below_cores` (its backlog from an overloaded
    run is worked off), so one measurement does not leak into the next. Returns seconds waited."""
    t0 = time.monotonic()
    last = server_cpu()
    while time.monotonic() - t0 < timeout:
        time.sleep(interval)
        now = server_cpu()
        if (now - last) / interval < below_cores:
            break
        last = now
    return time.monotonic() - t0
