"""The flow of a sharded run: a pod leaves its result, the merge publishes one report.

    rtbserve loadgen --shards 3 --shard-store s3://b/run-1/ ...            # pods 0 and 1
    rtbserve loadgen --shards 3 --shard-store s3://b/run-1/ --merge ...    # the last pod
    rtbserve loadgen merge --shards 3 --shard-store s3://b/run-1/ --report-json r.json

The merged report is the usual one (table, JSON, plots, S3, InferenceModel status), plus
`shards[{index, status: ok|failed|error|missing, exit_code, messages}]`; any pod that is not
"ok" makes the merge exit with SHARD_FAILED, with its measurements (if any) still merged.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from rich.console import Console

from loadgen import report
from loadgen.app import Outcome, conclude, judge, publish
from loadgen.engine import SendOptions
from loadgen.exit_codes import ExitCode, LoadgenError
from loadgen.options import (
    LoadgenConfig,
    OutputSpec,
    SourceSpec,
    _duration,
    _positive_int,
    add_report_arguments,
    output_of,
    parse_target,
)
from loadgen.shards import (
    merge_runs,
    result_from_doc,
    schedule_from_doc,
    shard_document,
    shard_statuses,
    wait_for_shards,
    write_document,
)


def settings_of(config: LoadgenConfig) -> dict[str, Any]:
    """What the merge needs to judge and describe the run as the pods were told to run it."""
    source = asdict(config.source)
    source["bidders"] = list(source["bidders"])
    source["part"] = [0, 1]
    return {
        "target": str(config.target),
        "options": asdict(config.options),
        "max_error_ratio": config.max_error_ratio,
        "slo_p99_ms": config.slo_p99_ms,
        "source": source,
    }


def config_from_settings(
    settings: dict[str, Any], schedule_doc: dict[str, Any], output: OutputSpec, workers: int
) -> LoadgenConfig:
    source = dict(settings["source"])
    source["bidders"] = tuple(source["bidders"])
    source["part"] = tuple(source["part"])
    return LoadgenConfig(
        target=parse_target(settings["target"]),
        schedule=schedule_from_doc(schedule_doc),
        options=SendOptions(**settings["options"]),
        workers=workers,
        source=SourceSpec(**source),
        saturation=None,
        slo_p99_ms=settings["slo_p99_ms"],
        max_error_ratio=settings["max_error_ratio"],
        output=output,
    )


def finish_pod(config: LoadgenConfig, outcome: Outcome, console: Console, errors: Console) -> int:
    """Write this pod's result; with --merge, wait for the others and publish the merge."""
    spec = config.shard
    assert spec is not None
    doc = shard_document(
        spec.shard,
        result=outcome.result,
        run_schedule=spec.run_schedule,
        exit_code=outcome.exit_code,
        messages=outcome.messages + outcome.warnings,
        settings=settings_of(config),
    )
    try:
        where = write_document(spec.shard.store, doc)
        console.print(f"pod {spec.shard.index} of {spec.shard.count}: {where}", highlight=False)
    except LoadgenError as exc:
        outcome.fail(exc.code, exc.message)
    own = conclude(outcome, errors)
    if not spec.merge:
        return own
    console.print(f"waiting up to {spec.merge_wait:g}s for the other pods", highlight=False)
    # this pod's own failure, if any, is in its document and so in the merge's verdict
    return merge(
        spec.shard.store,
        spec.shard.count,
        spec.merge_wait,
        config.output,
        console=console,
        errors=errors,
    )


def merge(
    store: str, count: int, wait_s: float, output: OutputSpec, *, console: Console, errors: Console
) -> int:
    """Merge every pod's result found in `store` into one published report; the exit code."""
    outcome = Outcome()
    try:
        docs = wait_for_shards(store, count, wait_s)
    except LoadgenError as exc:
        outcome.fail(exc.code, exc.message)
        return conclude(outcome, errors)
    outcome.shards = shard_statuses(docs)
    present = [d for d in docs.values() if d is not None]
    measured = [d for d in present if d["result"] is not None]
    for status in outcome.shards:
        pod = f"pod {status['index']} of {count}"
        if status["status"] == "missing":
            outcome.fail(
                ExitCode.SHARD_FAILED,
                f"{pod} left no result in {store} within {wait_s:g}s (it failed or is still "
                "running); the merge leaves it out",
            )
        elif status["status"] != "ok":
            detail = "; ".join(status["messages"]) or "no message"
            outcome.fail(ExitCode.SHARD_FAILED, f"{pod} exited {status['exit_code']}: {detail}")
    if not present:
        return conclude(outcome, errors)
    first = measured[0] if measured else present[0]
    workers = sum(d["result"]["workers"] for d in measured) or 1
    config = config_from_settings(first["settings"], first["run_schedule"], output, workers)
    if measured:
        outcome.result = merge_runs(
            [result_from_doc(d["result"]) for d in measured], config.schedule
        )
        source = first["settings"]["source"]
        outcome.source = report.SourceInfo(
            "replay" if source["replay"] else "synthetic",
            source["replay"],
            source["pool_size"],
            bool(source["loop"]),
        )
    judge(config, outcome)
    if outcome.result is not None:
        report.print_final(console, outcome.result, None)
        console.print(
            f"merged {len(measured)} of {count} pods: "
            + ", ".join(f"{s['index']} {s['status']}" for s in outcome.shards),
            highlight=False,
        )
    publish(config, outcome, console)
    return conclude(outcome, errors)


def build_merge_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rtbserve loadgen merge",
        description="Merge the results of a run of N load-generating pods into one report.",
    )
    p.add_argument("--shards", type=_positive_int, required=True, metavar="N")
    p.add_argument("--shard-store", required=True, metavar="DIR|s3://BUCKET/PREFIX/")
    p.add_argument(
        "--merge-wait",
        type=_duration,
        default=0.0,
        metavar="DURATION",
        help="wait this long for pods that have not written their result (default 0)",
    )
    add_report_arguments(p)
    return p


def merge_main(argv: Sequence[str]) -> int:
    parser = build_merge_parser()
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else int(ExitCode.USAGE)
    return merge(
        args.shard_store,
        args.shards,
        args.merge_wait,
        output_of(args, live=False),
        console=Console(),
        errors=Console(stderr=True),
    )
