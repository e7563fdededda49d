"""The cold-start table: medians per phase, rendered into the chart README's block."""

from __future__ import annotations

import pytest

from bench.cold_start import END, START, ColdStart, markdown, median_of, update_doc


def run(pull: float, ready: float) -> ColdStart:
    return ColdStart("20 trees", 20, 40_960, pull, 0.3, 0.05, 0.4, ready)


def test_the_median_of_each_phase_and_the_total() -> None:
    row = median_of([run(9.0, 3.0), run(5.0, 2.0), run(7.0, 8.0)])
    assert (row.pull_s, row.ready_s) == (7.0, 3.0)
    assert row.total_s == 10.0


def test_the_table_goes_between_the_markers_and_nowhere_else() -> None:
    row = run(7.0, 3.0)
    result = {"arch": "amd64", "image_mib": 1414, "repeats": 3,
              "rows": [{**row.__dict__, "total_s": row.total_s}]}  # fmt: skip
    lines = markdown(result)
    row_line = "| 20 trees | 40 KiB | 7.0 s | 0.30 s | 0.05 s | 0.40 s | 2.25 s | 3.0 s | 10.0 s |"
    assert row_line in lines
    doc = f"intro\n{START}\nSTALE TABLE\n{END}\nrest\n"
    updated = update_doc(doc, lines)
    assert updated.startswith(f"intro\n{START}\n")
    assert updated.endswith(f"{END}\nrest\n")
    assert "STALE TABLE" not in updated
    with pytest.raises(ValueError, match="cold-start"):
        update_doc("no markers", lines)
