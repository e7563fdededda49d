"""Keep the benchmark's cores awake: one lowest-priority busy loop pinned to each.

On a virtual machine an idle vCPU halts, and waking it for the next packet goes through the
hypervisor's scheduler: on a shared host that can take milliseconds, which then shows up in
every p99 however fast the server is (on the 2-core development VM, a C client against the C
echo server saw p99 3-9 ms at 1,000-20,000 req/s with idle cores, 0.15 ms with warm ones).
A SCHED_IDLE task only runs when nothing else wants the core and is preempted the moment the
server or load generator wakes, so the core never halts and the server loses nothing; the loop
body is the CPU's spin-wait hint (`idle_loop/idle_loop.c`), which leaves the caches alone. Its
CPU time is known, so `bench.cpu` subtracts it from the core's busy time.

    with keep_warm([0, 1], build_dir):
        ...                      # measurements
        with paused():           # the same, as an idle machine behaves (the "cold" echo limit)
            ...
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from bench.cbuild import build_c_program
from bench.config import BENCH_DIR
from bench.cpu import CLOCK_TICKS

IDLE_LOOP_SOURCE = BENCH_DIR / "idle_loop" / "idle_loop.c"

_SPINNERS: dict[int, subprocess.Popen[bytes]] = {}


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name: state first (None once the process is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()


def _process_cpu_seconds(pid: int) -> float:
    fields = _stat_fields(pid)
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _wait_until_stopped(pid: int, timeout_s: float = 2.0) -> None:
    # SIGSTOP takes effect when the target next enters the kernel, not when kill() returns:
    # a measurement started before that would still share the core with the loop.
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        fields = _stat_fields(pid)
        if fields is None or fields[0] in ("T", "t", "Z", "X"):
            return
        time.sleep(0.001)


def filler_cpu_seconds(core: int) -> float:
    """CPU seconds the busy loop on `core` has used (0 when the core is not kept warm)."""
    spinner = _SPINNERS.get(core)
    return 0.0 if spinner is None else _process_cpu_seconds(spinner.pid)


def warm_cores() -> list[int]:
    return sorted(_SPINNERS)


def build_idle_loop(out_dir: Path) -> Path:
    """Compile `idle_loop/idle_loop.c` (the busy loop) into `out_dir`."""
    return build_c_program(IDLE_LOOP_SOURCE, out_dir / "idle_loop", "keeping cores warm")


def _start_spinner(binary: Path, core: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(binary), str(core)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # Same session as the benchmark and everything it starts: with autogroup scheduling
        # (kernel.sched_autogroup_enabled) each session is its own CPU group, and SCHED_IDLE
        # only yields at once to tasks of the same group; across groups the loop would get a
        # fair share and delay the server's wake-ups by milliseconds.
        process_group=0,
    )


def _stop(spinner: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        spinner.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        spinner.wait(5.0)


@contextlib.contextmanager
def keep_warm(cores: Sequence[int], build_dir: Path, enabled: bool = True) -> Iterator[list[int]]:
    """Run a busy loop at SCHED_IDLE on each of `cores` for the duration; yields the cores.
    The loop is compiled into `build_dir` first (once)."""
    if not enabled:
        yield []
        return
    binary = build_idle_loop(build_dir)
    started: list[int] = []
    try:
        for core in dict.fromkeys(cores):
            _SPINNERS[core] = _start_spinner(binary, core)
            started.append(core)
        yield started
    finally:
        for core in started:
            _stop(_SPINNERS.pop(core))


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """Let the cores idle again for a while (SIGSTOP the busy loops, SIGCONT after); the
    body starts once every loop has actually stopped."""
    spinners = list(_SPINNERS.values())
    for spinner in spinners:
        with contextlib.suppress(ProcessLookupError):
            spinner.send_signal(signal.SIGSTOP)
    for spinner in spinners:
        _wait_until_stopped(spinner.pid)
    try:
        yield
    finally:
        for spinner in spinners:
            with contextlib.suppress(ProcessLookupError):
                spinner.send_signal(signal.SIGCONT)


def stop_all() -> None:
    """Safety net for the entry point: no busy loop outlives the run."""
    for core in list(_SPINNERS):
        _stop(_SPINNERS.pop(core))
