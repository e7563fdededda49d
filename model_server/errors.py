"""Request errors: each maps 1:1 to a Thrift exception in `rtbserve.thrift`.

RequestError               base class; `.thrift_name` is the Thrift exception's name
├── InvalidJsonError       -> InvalidJson      (not JSON, or not a JSON object)
├── MissingFieldError      -> MissingField     (.field: dotted path, e.g. "imp[0].id")
├── UnknownBidderError     -> UnknownBidder    (.bidders: the unknown names)
└── TooManyBiddersError    -> TooManyBidders   (.limit, .requested)
"""

from __future__ import annotations

from collections.abc import Sequence


class RequestError(Exception):
    """A bid request or call the server rejects; the message is safe to return to the caller."""

    thrift_name = "RequestError"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidJsonError(RequestError):
    thrift_name = "InvalidJson"


class MissingFieldError(RequestError):
    thrift_name = "MissingField"

    def __init__(self, field: str, message: str | None = None) -> None:
        super().__init__(message or f"required field {field!r} is missing or has the wrong type")
        self.field = field


class UnknownBidderError(RequestError):
    thrift_name = "UnknownBidder"

    def __init__(self, bidders: Sequence[str]) -> None:
        self.bidders = list(bidders)
        shown = ", ".join(repr(b) for b in self.bidders[:10])
        more = f" (+{len(self.bidders) - 10} more)" if len(self.bidders) > 10 else ""
        super().__init__(f"unknown bidder(s) not in the model: {shown}{more}")


class TooManyBiddersError(RequestError):
    thrift_name = "TooManyBidders"

    def __init__(self, limit: int, requested: int) -> None:
        super().__init__(f"{requested} candidate bidders requested; the limit is {limit}")
        self.limit = limit
        self.requested = requested
