"""Runs one load test: splits the schedule over workers, starts them together, merges results.

One worker runs in this process. Several run as separate processes (spawned, so each has its
own interpreter and GIL) that connect first, report ready, and then start at one agreed
wall-clock instant.
"""

from __future__ import annotations

import multiprocessing
import os
import queue as queue_module
import signal
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.synchronize import Event
from types import FrameType
from typing import Any, Protocol

from loadgen.aggregate import RunResult, SecondRow, SeriesBuilder, merge_results
from loadgen.connections import Target
from loadgen.engine import SendOptions, Worker, WorkerPlan
from loadgen.exit_codes import ExitCode, LoadgenError
from loadgen.pool import EncodedPool
from loadgen.records import SecondReport, Tick, WorkerResult
from loadgen.schedule import RateSchedule

_START_DELAY_S = 0.1  # after every worker is connected, so they all start on the same instant
_READY_TIMEOUT_S = 120.0


class Observer(Protocol):
    """The live view: gets raw ticks and finished seconds as they come."""

    def tick(self, tick: Tick) -> None: ...

    def second(self, row: SecondRow) -> None: ...


class NullObserver:
    def tick(self, tick: Tick) -> None:
        pass

    def second(self, row: SecondRow) -> None:
        pass


@dataclass(frozen=True)
class RunSpec:
    target: Target
    #: the measured schedule (the warm-up in `options` is added in front)
    schedule: RateSchedule
    options: SendOptions
    workers: int = 1
    #: keep each second's latencies as a histogram (`RunResult.second_histograms`)
    second_histograms: bool = False


def split_connections(total: int, workers: int) -> list[int]:
    """Connections per worker: as even as possible, at least one each."""
    base, extra = divmod(max(total, workers), workers)
    return [base + (1 if w < extra else 0) for w in range(workers)]


def build_plans(spec: RunSpec, pool: EncodedPool) -> list[WorkerPlan]:
    full, warmup_requests = spec.schedule.with_warmup(spec.options.warmup)
    plans = []
    for w, conns in enumerate(split_connections(spec.options.connections, spec.workers)):
        stride, frames, truth = pool.share(w, spec.workers)
        plans.append(
            WorkerPlan(
                worker=w,
                workers=spec.workers,
                target=spec.target,
                options=spec.options,
                schedule=full,
                warmup_requests=warmup_requests,
                measured_seconds=spec.schedule.duration,
                connections=conns,
                pool_size=len(pool),
                stride=stride,
                frames=frames,
                truth=truth,
            )
        )
    return plans


class _SeriesSink:
    """Feeds a worker's seconds into the series and the observer (single-process mode)."""

    def __init__(self, series: SeriesBuilder, observer: Observer) -> None:
        self.series = series
        self.observer = observer

    def tick(self, tick: Tick) -> None:
        self.observer.tick(tick)

    def second(self, report: SecondReport) -> None:
        row = self.series.add(report)
        if row is not None:
            self.observer.second(row)


def run_load(spec: RunSpec, pool: EncodedPool, observer: Observer | None = None) -> RunResult:
    """Run the schedule against the target; raises LoadgenError(UNREACHABLE) before any send."""
    observer = observer or NullObserver()
    plans = build_plans(spec, pool)
    series = SeriesBuilder(spec.workers, spec.schedule, spec.second_histograms)
    started_at = datetime.now(UTC)
    if spec.workers == 1:
        worker = Worker(plans[0], _SeriesSink(series, observer))
        worker.connect_all()
        results = [worker.run(time.time() + _START_DELAY_S)]
    else:
        results = _run_processes(plans, series, observer)
    merged = merge_results(
        results,
        target=str(spec.target),
        schedule=spec.schedule,
        connections=sum(p.connections for p in plans),
        started_at=started_at,
        series=series,
    )
    if any(r.interrupted for r in results):
        merged.aborted = "interrupted"
    return merged


# ---- worker processes ----------------------------------------------------------------------


class _QueueSink:
    def __init__(self, queue: Any) -> None:
        self.queue = queue

    def tick(self, tick: Tick) -> None:
        self.queue.put(("tick", tick))

    def second(self, report: SecondReport) -> None:
        self.queue.put(("second", report))


def _interrupt_once(signum: int, frame: FrameType | None) -> None:
    # the first SIGINT stops the run; later ones must not cut off sending the results
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def _process_main(plan: WorkerPlan, queue: Any, go: Event, start_at: Any) -> None:
    signal.signal(signal.SIGINT, _interrupt_once)
    try:
        worker = Worker(plan, _QueueSink(queue))
        worker.connect_all()
    except LoadgenError as exc:
        queue.put(("error", plan.worker, int(exc.code), exc.message))
        return
    except Exception:
        queue.put(("crash", plan.worker, traceback.format_exc()))
        return
    queue.put(("ready", plan.worker))
    try:
        if not go.wait(_READY_TIMEOUT_S):
            return
        queue.put(("result", worker.run(start_at.value)))
    except KeyboardInterrupt:
        return
    except Exception:
        queue.put(("crash", plan.worker, traceback.format_exc()))


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _set_handlers(handler: Any) -> dict[int, Any]:
    """Install `handler` for SIGINT/SIGTERM (main thread only); returns the old handlers."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, handler) for sig in _STOP_SIGNALS}


def _restore_handlers(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def _run_processes(
    plans: list[WorkerPlan], series: SeriesBuilder, observer: Observer
) -> list[WorkerResult]:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    go = ctx.Event()
    start_at = ctx.Value("d", 0.0)
    procs = [
        ctx.Process(target=_process_main, args=(plan, queue, go, start_at), daemon=True)
        for plan in plans
    ]
    for proc in procs:
        proc.start()
    results: dict[int, WorkerResult] = {}
    ready: set[int] = set()
    failure: LoadgenError | None = None
    # after the schedule ends, replies may take up to --timeout; allow that plus slack
    plan = plans[0]
    budget = plan.schedule.duration + plan.options.timeout + 30.0
    deadline = time.monotonic() + _READY_TIMEOUT_S
    stopping = False

    def stop_workers(signum: int, frame: FrameType | None) -> None:
        # SIGINT/SIGTERM: each worker stops sending and reports what it measured (a
        # terminal's Ctrl-C reaches them directly too; they act on the first only)
        nonlocal stopping
        if not stopping:
            stopping = True
            for proc in procs:
                if proc.pid is not None and proc.is_alive():
                    os.kill(proc.pid, signal.SIGINT)

    previous = _set_handlers(stop_workers)
    try:
        while len(results) < len(plans) and failure is None:
            try:
                message = queue.get(timeout=0.2)
            except queue_module.Empty:
                if time.monotonic() > deadline or not any(p.is_alive() for p in procs):
                    failure = LoadgenError(ExitCode.INTERNAL, "a worker process stopped early")
                continue
            kind = message[0]
            if kind == "tick":
                observer.tick(message[1])
            elif kind == "second":
                row = series.add(message[1])
                if row is not None:
                    observer.second(row)
            elif kind == "ready":
                ready.add(message[1])
                if len(ready) == len(plans):
                    start_at.value = time.time() + _START_DELAY_S
                    go.set()
                    deadline = time.monotonic() + budget
            elif kind == "result":
                results[message[1].worker] = message[1]
            elif kind == "error":
                failure = LoadgenError(ExitCode(message[2]), message[3])
            else:
                failure = LoadgenError(
                    ExitCode.INTERNAL, f"worker {message[1]} failed:\n{message[2]}"
                )
    finally:
        _restore_handlers(previous)
        if failure is not None or len(results) < len(plans):
            for proc in procs:
                proc.terminate()
        for proc in procs:
            proc.join(timeout=5)
        queue.close()
    if failure is not None:
        raise failure
    return [results[w] for w in sorted(results)]
