from typing import Any

import numpy as np
import numpy.typing as npt

HOUSEKEEPING: int
CHUNK_END: int
EVENT: int
CHANGED: int

class SendLoop:
    now: float
    nxt: float
    done: int
    max_lag_seen: float
    last_completion: float
    event_fd: int
    event_mask: int
    def __init__(
        self,
        *,
        worker: Any,
        epfd: int,
        t0: float,
        frames: list[bytes],
        sec_lat: list[Any],
        sec_sent: list[int],
        sec_late: list[int],
        sec_drop: list[int],
        completions: list[int],
        count_quality: Any,
        warm: float,
        late_threshold: float,
        max_lag: float,
        spin_below: float,
        max_inflight: int,
        quality_every: int,
        seq_offset: int,
        send_batch: int,
        state_up: int,
        state_connecting: int,
    ) -> None: ...
    def set_chunk(
        self,
        indices: npt.NDArray[np.int64],
        times: npt.NDArray[np.float64],
        frame_numbers: npt.NDArray[np.int64],
    ) -> None: ...
    def advance(self, until: float) -> int: ...
    def next_request(self) -> int | None: ...
    def drain(self) -> tuple[int, int, int, int, int, int]: ...

def set_timer_slack(ns: int) -> None: ...
