from typing import TypeVar

_V = TypeVar("_V")

def known_score_call(frame: bytes, known: dict[bytes, _V]) -> tuple[int, bytes, _V] | None: ...
