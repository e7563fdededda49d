"""Keep the benchmark's cores awake: the kernel's polling idle, or a lowest-priority busy loop.

On a virtual machine an idle vCPU halts, and waking it for the next packet goes through the
hypervisor's scheduler: on a shared host that can take milliseconds, which then shows up in
every p99 however fast the server is (on the 2-core development VM, a C client against the C
echo server saw p99 3-9 ms at 1,000-20,000 req/s with idle cores, 0.15 ms with warm ones).

Two ways to keep a core from halting, the first preferred:

- kernel-poll: a PM QoS request for a CPU wake-up latency of 0 µs (`/dev/cpu_dma_latency`, held
  open for the duration; needs root): cpuidle then only picks its POLL state, so an idle core
  spins inside the kernel's idle task. A wake-up is then a flag the polling core sees, with no
  inter-processor interrupt and no switch away from another process. This is the low-latency
  setting production hosts use (tuned's latency-performance profile does the same). It needs
  a cpuidle driver with a POLL state: without one (`/sys/devices/system/cpu/cpuidle/
  current_driver` reads "none", as on some VM kernels) the idle task halts whatever the
  request says, so the request is only made where every core has the state.
- idle-loop: where kernel-poll cannot be had, a SCHED_IDLE task pinned to each core runs the
  CPU's spin-wait hint (`idle_loop/idle_loop.c`). It only runs when nothing else wants the core
  and is preempted the moment the server or load generator wakes, but every wake-up is then an
  interrupt plus a switch between processes: measured side by side on the development VM, a
  worker spent ~90 µs of CPU per request at 8,000-12,000 req/s with the loops and ~60 µs with
  kernel-poll, and the C echo server ~40 µs against ~22 µs. Its CPU time is known, so
  `bench.cpu` subtracts it from the core's busy time.

    with keep_warm([0, 1], build_dir):
        ...                      # measurements
        with paused():           # the same, as an idle machine behaves (the "cold" echo limit)
            ...
"""

from __future__ import annotations

import contextlib
import signal
import struct
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from bench.cbuild import build_c_program
from bench.config import BENCH_DIR
from bench.cpu import CLOCK_TICKS

IDLE_LOOP_SOURCE = BENCH_DIR / "idle_loop" / "idle_loop.c"

QOS_DEVICE = Path("/dev/cpu_dma_latency")
CPU_SYSFS = Path("/sys/devices/system/cpu")
KERNEL_POLL = "kernel-poll"
IDLE_LOOP = "idle-loop"

_SPINNERS: dict[int, subprocess.Popen[bytes]] = {}
_QOS: list[BinaryIO] = []  # the open wake-up latency request (closing it releases it)
_METHOD: list[str] = []  # how the cores are kept warm now, while they are


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
    """The cores with a busy loop (idle-loop method)."""
    return sorted(_SPINNERS)


def method() -> str | None:
    """KERNEL_POLL or IDLE_LOOP inside keep_warm, None outside it (or when disabled)."""
    return _METHOD[-1] if _METHOD else None


def polling_idle_available(cores: Sequence[int], sysfs: Path = CPU_SYSFS) -> bool:
    """Every core's cpuidle has a POLL state: what a 0 µs wake-up latency request selects."""

    def has_poll(core: int) -> bool:
        states = sysfs / f"cpu{core}" / "cpuidle"
        for state in sorted(states.glob("state*")) if states.is_dir() else []:
            with contextlib.suppress(OSError):
                if (state / "name").read_text().strip() == "POLL":
                    return True
        return False

    return bool(cores) and all(has_poll(core) for core in cores)


def _request_zero_wakeup_latency(device: Path = QOS_DEVICE) -> BinaryIO | None:
    """The open PM QoS request for a 0 µs wake-up latency; None where it cannot be made."""
    try:
        request = device.open("wb", buffering=0)
    except OSError:
        return None
    try:
        request.write(struct.pack("=i", 0))
    except OSError:
        request.close()
        return None
    return request


def _release_qos() -> None:
    while _QOS:
        _QOS.pop().close()


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
def keep_warm(
    cores: Sequence[int], build_dir: Path, enabled: bool = True, prefer_kernel_poll: bool = True
) -> Iterator[list[int]]:
    """Keep `cores` from halting for the duration (see the module's doc); yields the cores.
    Kernel-poll where every core has cpuidle's POLL state, /dev/cpu_dma_latency can be
    written and `prefer_kernel_poll`, else a busy loop at SCHED_IDLE on each core, compiled
    into `build_dir` first (once)."""
    if not enabled:
        yield []
        return
    wanted = list(dict.fromkeys(cores))
    kernel_poll = prefer_kernel_poll and polling_idle_available(wanted)
    request = _request_zero_wakeup_latency() if kernel_poll else None
    if request is not None:
        _QOS.append(request)
        _METHOD.append(KERNEL_POLL)
        try:
            yield wanted
        finally:
            _METHOD.pop()
            _release_qos()
        return
    binary = build_idle_loop(build_dir)
    started: list[int] = []
    _METHOD.append(IDLE_LOOP)
    try:
        for core in wanted:
            _SPINNERS[core] = _start_spinner(binary, core)
            started.append(core)
        yield started
    finally:
        _METHOD.pop()
        for core in started:
            _stop(_SPINNERS.pop(core))


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """Let the cores idle again for a while: release the wake-up latency request, or SIGSTOP
    the busy loops (SIGCONT after); the body starts once every loop has actually stopped."""
    if method() == KERNEL_POLL:
        _release_qos()
        try:
            yield
        finally:
            request = _request_zero_wakeup_latency()
            if request is not None:
                _QOS.append(request)
        return
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
    """Safety net for the entry point: no busy loop or latency request outlives the run."""
    for core in list(_SPINNERS):
        _stop(_SPINNERS.pop(core))
    _release_qos()
