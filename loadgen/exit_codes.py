"""Exit codes of `rtbserve loadgen` and the error that carries one.

When several conditions hold, the code is the first that applies in `PRECEDENCE`.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    INTERNAL = 1  # a bug: unexpected exception
    USAGE = 2  # bad flags
    BAD_INPUT = 3  # replay file missing, unreadable or not JSON lines; bad S3 object
    UNREACHABLE = 4  # no connection to the target could be opened (DNS, refused, timeout)
    REQUEST_ERRORS = 5  # share of failed requests above --max-error-ratio
    SLO_MISSED = 6  # p99 above --slo-p99, or the saturation search found no rate under it
    GENERATOR_BEHIND = 7  # sends dropped because the generator could not keep its schedule
    PUBLISH_FAILED = 8  # report, plots, S3 upload or InferenceModel status could not be written
    INTERRUPTED = 9  # stopped by SIGINT/SIGTERM before the schedule ended; results are partial
    SHARD_FAILED = 10  # a pod of a sharded run failed or left no result; the merge is partial


DESCRIPTIONS = {
    ExitCode.OK: "ok",
    ExitCode.INTERNAL: "internal error",
    ExitCode.USAGE: "bad flags",
    ExitCode.BAD_INPUT: "bad traffic input (replay file missing, unreadable, not JSON lines)",
    ExitCode.UNREACHABLE: "target unreachable (name not resolved, refused, connect timeout)",
    ExitCode.REQUEST_ERRORS: "failed requests above --max-error-ratio",
    ExitCode.SLO_MISSED: "p99 above --slo-p99, or no probed rate met it",
    ExitCode.GENERATOR_BEHIND: "the generator fell behind its schedule (sends dropped)",
    ExitCode.PUBLISH_FAILED: "report, plots, S3 upload or InferenceModel status not written",
    ExitCode.INTERRUPTED: "stopped by SIGINT/SIGTERM; the results written are partial",
    ExitCode.SHARD_FAILED: "a pod of a sharded run failed or left no result (merge is partial)",
}

PRECEDENCE = (
    ExitCode.BAD_INPUT,
    ExitCode.UNREACHABLE,
    ExitCode.INTERRUPTED,
    ExitCode.SHARD_FAILED,
    ExitCode.REQUEST_ERRORS,
    ExitCode.GENERATOR_BEHIND,
    ExitCode.SLO_MISSED,
    ExitCode.PUBLISH_FAILED,
)


class LoadgenError(Exception):
    """An error the user can act on; the message is printed as is."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def first_applicable(codes: set[ExitCode]) -> ExitCode:
    for code in PRECEDENCE:
        if code in codes:
            return code
    return ExitCode.OK
