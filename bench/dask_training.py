"""Distributed training on 1, 2 and 4 local Dask workers: wall time and peak memory per worker.

    .venv/bin/python -m bench.dask_training --requests 60000 --files 24 --workers 1,2,4

One data set (synthetic JSONL files under bench/work/dask-data/) is trained on by a LocalCluster
of each size in turn, and once by `rtbserve train` in one process for reference. Peak memory is
each process's VmHWM (its own high-water mark, not its parent's). Writes
bench/results/dask-training-<date>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from model_server.dask_training import dask_client, train_distributed, worker_peak_memory
from model_server.data_sources import expand_sources
from model_server.training import TrainConfig, synthetic_examples, write_examples

WORK = Path(__file__).resolve().parent / "work" / "dask-data"
RESULTS = Path(__file__).resolve().parent / "results"
MIB = 2**20


def make_data(requests: int, files: int, bidders: int) -> list[str]:
    WORK.mkdir(parents=True, exist_ok=True)
    stamp = WORK / f"{requests}-{files}-{bidders}.done"
    if not stamp.exists():
        for old in WORK.glob("part-*.jsonl.gz"):
            old.unlink()
        examples = synthetic_examples(requests, seed=1, n_bidders=bidders)
        for f in range(files):
            write_examples(WORK / f"part-{f:03d}.jsonl.gz", examples[f::files])
        stamp.touch()
    return expand_sources([str(WORK / "part-*.jsonl.gz")])


def single_process(sources: list[str], trees: int) -> dict[str, Any]:
    """`rtbserve train` in a child process: its wall time and peak memory."""
    code = (
        "import sys, time\n"
        "from model_server.train_cli import main\n"
        "t = time.perf_counter()\n"
        f"rc = main(['--data', *{sources!r}, '--out', sys.argv[1], '--trees', '{trees}'])\n"
        "took = time.perf_counter() - t\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
        "print('RESULT', rc, took, int(hwm) * 1024)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(WORK / "model-single")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    _, rc, took, hwm = next(line for line in out.splitlines() if line.startswith("RESULT")).split()
    return {"seconds": round(float(took), 1), "peak_mib": round(int(hwm) / MIB), "exit": int(rc)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=60000)
    p.add_argument("--files", type=int, default=24)
    p.add_argument("--bidders", type=int, default=16)
    p.add_argument("--workers", default="1,2,4")
    p.add_argument("--trees", type=int, default=60)
    args = p.parse_args()
    sources = make_data(args.requests, args.files, args.bidders)
    data_mib = sum(Path(s).stat().st_size for s in sources) / MIB
    cfg = TrainConfig(trees=args.trees)
    runs = []
    for n in [int(w) for w in args.workers.split(",")]:
        with dask_client(f"local:{n}") as client:
            started = time.perf_counter()
            result = train_distributed(client, sources, cfg)
            took = time.perf_counter() - started
            peaks = worker_peak_memory(client)
        runs.append(
            {
                "workers": n,
                "seconds": round(took, 1),
                "fit_seconds": result.metrics["fit_seconds"],
                "auc": round(result.metrics["auc"], 4),
                "peak_mib_per_worker": sorted(round(b / MIB) for b in peaks.values()),
            }
        )
        print(runs[-1], flush=True)
    single = single_process(sources, args.trees)
    print("single process", single, flush=True)
    doc = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "requests": args.requests,
        "bidders": args.bidders,
        "files": len(sources),
        "data_mib_gz": round(data_mib, 1),
        "trees": args.trees,
        "dask": runs,
        "single_process": single,
    }
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"dask-training-{day}.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [
        f"# Distributed training, {doc['date']}",
        "",
        f"{args.requests:,} synthetic requests x {args.bidders} bidders in {len(sources)} "
        f".jsonl.gz files ({data_mib:.0f} MiB compressed), {args.trees} trees.",
        "",
        "| workers | wall time | of which xgboost | AUC | peak memory per worker |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in runs:
        mem = ", ".join(f"{m} MiB" for m in r["peak_mib_per_worker"])
        lines.append(
            f"| {r['workers']} | {r['seconds']} s | {r['fit_seconds']} s | {r['auc']} | {mem} |"
        )
    lines.append(
        f"| one process (`rtbserve train`) | {single['seconds']} s | | | {single['peak_mib']} MiB |"
    )
    (RESULTS / f"dask-training-{day}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
