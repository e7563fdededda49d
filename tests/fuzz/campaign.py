"""Every fuzz target for a bounded time, one process each; a summary, and failures kept.

`python -m tests.fuzz.campaign --seconds 60` (hack/native-sanitize.sh runs it under the
sanitizers; `make fuzz FUZZ_SECONDS=3600` for longer). For each target it prints the runs,
the coverage libFuzzer reached (native edges with the sanitized build, plus the Python
lines atheris counts) and the findings. A finding (a crash, a sanitizer report, a leak, a
timeout or a disagreement with the reference) is copied into tests/fuzz/regressions/<target>/
so that the unit tests replay it from then on, and the campaign fails.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.fuzz import corpus, oracles

# Per-input leak checks (libFuzzer's -detect_leaks; PYTHONMALLOC=malloc) on the targets that
# cover the big C parsers, request_scan.h and request_encode.h. Not on `frame`: nearly every
# input there leaves the allocator unbalanced (thriftpy2's and CPython's caches), and each
# unbalanced input costs a scan of the whole heap (37 inputs/s instead of thousands). Not on
# `call`: under the fuzzer it is reported to leak one small numpy array an input (98 bytes,
# the stack ends in numpy's allocator), while the same inputs run 20,000 times without the
# fuzzer leave the RSS flat to the KiB; not yet attributed.
LEAK_CHECKED = frozenset({"scan", "encode"})

_DONE = re.compile(r"#(\d+)\s+DONE\s+cov: (\d+) ft: (\d+)")
_STAT = re.compile(r"stat::(\w+):\s+(\d+)")


@dataclass
class Outcome:
    target: str
    returncode: int
    runs: int
    coverage: int
    features: int
    findings: list[Path]
    log: Path


def fuzz_once(target: str, seconds: int, work: Path) -> Outcome:
    findings = work / "findings" / target
    findings.mkdir(parents=True, exist_ok=True)
    for stale in findings.iterdir():  # an earlier run's findings are kept already
        stale.unlink()
    log = work / f"{target}.log"
    argv = [
        sys.executable,
        "-m",
        "tests.fuzz.run",
        target,
        str(work / "corpus" / target),
        f"-max_total_time={seconds}",
        "-timeout=10",
        "-rss_limit_mb=4096",
        "-max_len=65536",
        f"-detect_leaks={int(target in LEAK_CHECKED)}",
        "-print_final_stats=1",
        f"-artifact_prefix={findings}/",
    ]
    with log.open("w") as out:
        done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False)
    text = log.read_text(errors="replace")
    stats = dict(_STAT.findall(text))
    last = _DONE.findall(text)
    runs = int(stats.get("number_of_executed_units", last[-1][0] if last else 0))
    coverage, features = (int(last[-1][1]), int(last[-1][2])) if last else (0, 0)
    return Outcome(
        target,
        done.returncode,
        runs,
        coverage,
        features,
        sorted(p for p in findings.iterdir() if p.is_file()),
        log,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60, help="per target")
    parser.add_argument("--work", type=Path, default=Path("build/fuzz"))
    parser.add_argument("--keep", type=Path, default=corpus.REGRESSIONS)
    parser.add_argument("targets", nargs="*", default=sorted(oracles.TARGETS))
    args = parser.parse_args(argv)
    failed = False
    print(f"{'target':8} {'runs':>10} {'cov':>6} {'ft':>6}  findings")
    for target in args.targets:
        outcome = fuzz_once(target, args.seconds, args.work)
        kept = []
        for path in outcome.findings:
            kept.append(corpus.keep_regression(target, path.read_bytes(), args.keep))
        bad = outcome.returncode != 0 or bool(kept)
        failed |= bad
        what = ", ".join(str(k) for k in kept) or ("none" if not bad else f"see {outcome.log}")
        print(
            f"{target:8} {outcome.runs:>10} {outcome.coverage:>6} {outcome.features:>6}  {what}",
            flush=True,
        )
        if bad:
            print(outcome.log.read_text(errors="replace")[-4000:], file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
