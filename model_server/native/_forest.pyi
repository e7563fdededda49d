from collections.abc import Callable, Sequence
from typing import Any

from numpy.typing import NDArray

TRANSFORM_IDENTITY: int
TRANSFORM_SIGMOID: int
PERFECT_MAX_DEPTH: int

def select_request(data: bytes | bytearray | memoryview, /) -> dict[str, Any] | None: ...

class Forest:
    def __init__(
        self,
        left: NDArray[Any],
        feature: NDArray[Any],
        default_left: NDArray[Any],
        cond: NDArray[Any],
        roots: NDArray[Any],
        depths: NDArray[Any],
        n_features: int,
        base_margin: float,
        transform: int,
        perfect_max_depth: int = ...,
    ) -> None: ...
    def predict(self, rows: NDArray[Any], out: NDArray[Any], /) -> None: ...
    @property
    def n_trees(self) -> int: ...
    @property
    def n_nodes(self) -> int: ...
    @property
    def n_features(self) -> int: ...
    @property
    def layout(self) -> str: ...

class RequestEncoder:
    def __init__(
        self,
        numeric_names: Sequence[str],
        key_names: Sequence[str],
        code_plan: Sequence[tuple[int, dict[str | None, Any], int, int, int]],
        cross_plan: Sequence[tuple[int, dict[str | None, Any], int, int, int]],
        bidder_cols: int,
        cache_limit: int,
        table: NDArray[Any],
    ) -> None: ...
    def encode(self, req: dict[str, Any], now: float, /) -> tuple[list[float], list[int]]: ...
    def rows(
        self, req: dict[str, Any], now: float, bidders: Sequence[int], out: NDArray[Any], /
    ) -> None: ...

def fill_rows(
    values: Sequence[float],
    columns: Sequence[int],
    bidders: Sequence[int],
    table: NDArray[Any],
    out: NDArray[Any],
    /,
) -> None: ...
def score_reply(
    head: bytes,
    tail: bytes,
    positions: Sequence[int],
    flag_offset: int,
    probabilities: NDArray[Any],
    thresholds: NDArray[Any],
    /,
) -> bytes: ...

class ScorePath:
    def __init__(
        self,
        encoder: RequestEncoder,
        forest: Forest,
        known: dict[bytes, Any],
        loads: Callable[[Any], Any],
        clock: Callable[[], float] | None,
        reply_head: bytes,
        max_frame: int,
        max_bidders: int,
        latency_bounds: Sequence[float],
        bidder_bounds: Sequence[float],
        select: bool = True,
    ) -> None: ...
    def call(self, data: bytes, write: Callable[[bytes], object], /) -> bool: ...
    def take_counts(self) -> tuple[int, list[int], float, list[int], float]: ...
