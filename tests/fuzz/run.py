"""One fuzz target under atheris (libFuzzer): `python -m tests.fuzz.run TARGET [libFuzzer flags]`.

The native extensions reach libFuzzer's coverage only when they were built with
`-fsanitize=fuzzer-no-link` and a libFuzzer runtime is preloaded: `hack/native-sanitize.sh`
does both. Without that, only the Python side is coverage-guided. Run every target for a
bounded time with `python -m tests.fuzz.campaign` (`make fuzz`).
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path


def _leak_checks(on: bool) -> None:
    """LeakSanitizer's own switch, where it runs: what is allocated while it is off (the
    imports, the model trained for the oracles, numpy's and XGBoost's caches) is never
    reported, so a leak it finds during fuzzing was made by an input."""
    process = ctypes.CDLL(None)
    name = "__lsan_enable" if on else "__lsan_disable"
    if hasattr(process, name):
        getattr(process, name)()


_leak_checks(False)

import atheris  # noqa: E402

with atheris.instrument_imports(include=["model_server", "tests.fuzz"]):
    from tests.fuzz import corpus, oracles


def _write_seeds(target: str, folder: Path) -> None:
    """Seed `folder` (the corpus libFuzzer grows) once, and add every kept regression."""
    folder.mkdir(parents=True, exist_ok=True)
    fresh = not any(folder.iterdir())
    inputs = list(corpus.seeds(target, oracles.subject().bidder_lists)) if fresh else []
    inputs += [p.read_bytes() for p in corpus.regressions(target)]
    for data in inputs:
        (folder / f"seed-{abs(hash(data)):x}").write_bytes(data)


def main(argv: list[str]) -> None:
    if len(argv) < 3 or argv[1] not in oracles.TARGETS:
        sys.exit(f"usage: {argv[0]} {{{','.join(oracles.TARGETS)}}} CORPUS_DIR [libFuzzer flags]")
    target, folder = argv[1], Path(argv[2])
    check = oracles.TARGETS[target]
    oracles.subject()  # train the model before the first input, not inside it
    _write_seeds(target, folder)
    flags = [a for a in argv[3:] if a.startswith("-")]
    libfuzzer_argv = [argv[0], str(folder), f"-dict={corpus.DICTIONARY}", *flags]
    atheris.Setup(libfuzzer_argv, check)
    for data in (p.read_bytes() for p in folder.iterdir()):
        check(data)  # the first call of each path fills caches that live as long as the process
    _leak_checks(True)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
